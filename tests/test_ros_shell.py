"""The rclpy shell, against small fake rclpy / cv_bridge / message modules (no ROS 2 here).

The fakes record what the shell does (declare, create_publisher, create_subscription, publish), so
the API use is exercised: parameters declared first with descriptors, sensor-data QoS for cameras,
relative topic names, cv_bridge conversion, bad frames dropped, live parameter checks, main().
A last test runs against the real rclpy and is skipped when ROS 2 is not installed.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np
import pytest

from revavatar.core.messages import array_to_image
from revavatar.errors import InputError
from revavatar.graph.description import STAGE_KINDS

ROOT = Path(__file__).resolve().parents[1]
CALIB = ROOT / "calibration" / "generic.yaml"
SENSOR_DATA = "sensor_data_qos"


class Msg:
    """Attribute bag standing in for generated ROS message classes."""

    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class QoSProfile:
    def __init__(self, depth: int) -> None:
        self.depth = depth


class ParameterType:
    PARAMETER_BOOL, PARAMETER_INTEGER, PARAMETER_DOUBLE, PARAMETER_STRING = 1, 2, 3, 4


class ParameterDescriptor(Msg):
    def __init__(self, **kw: Any) -> None:
        super().__init__(floating_point_range=[], integer_range=[], additional_constraints="", **kw)


class Publisher:
    def __init__(self, msg_type: type, topic: str, qos: Any) -> None:
        self.msg_type, self.topic, self.qos, self.sent = msg_type, topic, qos, []

    def publish(self, msg: Any) -> None:
        self.sent.append(msg)


class Timer:
    def __init__(self, period: float, callback: Any) -> None:
        self.period, self.callback, self.cancelled = period, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Logger:
    def info(self, text: str) -> None:
        pass

    warning = error = info


class FakeNode:
    overrides: ClassVar[dict[str, Any]] = {}
    instances: ClassVar[list[FakeNode]] = []

    def __init__(self, name: str) -> None:
        self._name = name
        self.calls: list[tuple[str, str]] = []
        self.descriptors: dict[str, Any] = {}
        self.publishers: dict[str, Publisher] = {}
        self.subscriptions: dict[str, tuple[Any, Any]] = {}
        self.timers: list[Timer] = []
        self.param_callbacks: list[Any] = []
        self.destroyed = False
        FakeNode.instances.append(self)

    def get_name(self) -> str:
        return self._name

    def declare_parameter(self, name: str, value: Any, descriptor: Any) -> Any:
        self.calls.append(("declare", name))
        self.descriptors[name] = descriptor
        return Msg(name=name, value=self.overrides.get(name, value))

    def add_on_set_parameters_callback(self, cb: Any) -> None:
        self.param_callbacks.append(cb)

    def create_publisher(self, msg_type: type, topic: str, qos: Any) -> Publisher:
        self.calls.append(("publisher", topic))
        self.publishers[topic] = Publisher(msg_type, topic, qos)
        return self.publishers[topic]

    def create_subscription(self, msg_type: type, topic: str, cb: Any, qos: Any) -> Any:
        self.calls.append(("subscription", topic))
        self.subscriptions[topic] = (cb, qos)
        return object()

    def create_timer(self, period: float, cb: Any) -> Timer:
        self.timers.append(Timer(period, cb))
        return self.timers[-1]

    def get_logger(self) -> Logger:
        return Logger()

    def destroy_node(self) -> None:
        self.destroyed = True


class CvBridge:
    """numpy version of cv_bridge for the encodings used here."""

    calls = 0

    def imgmsg_to_cv2(self, msg: Any, desired_encoding: str = "passthrough") -> np.ndarray:
        CvBridge.calls += 1
        ch = {"mono8": 1, "bgr8": 3}[msg.encoding]
        arr = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
        arr = arr[:, : msg.width * ch].reshape(msg.height, msg.width, ch)
        return arr[..., 0] if ch == 1 else arr

    def cv2_to_imgmsg(self, arr: np.ndarray, encoding: str) -> Any:
        CvBridge.calls += 1
        h, w = arr.shape[:2]
        return Msg(height=h, width=w, encoding=encoding, is_bigendian=0,
                   step=arr.strides[0], data=arr.tobytes())


@pytest.fixture
def fake_ros(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """Inject fake rclpy, rcl_interfaces, sensor_msgs, std_msgs, builtin_interfaces, cv_bridge."""
    state = types.SimpleNamespace(inited=False, shutdown=False, spun=[])

    def spin(node: FakeNode) -> None:
        state.spun.append(node)
        for _ in range(10_000):  # drive timers like an executor until they are cancelled
            live = [t for t in node.timers if not t.cancelled]
            if not live:
                return
            for t in live:
                t.callback()

    mods = {
        "rclpy": {"init": lambda args=None: setattr(state, "inited", True),
                  "ok": lambda: state.inited and not state.shutdown,
                  "shutdown": lambda: setattr(state, "shutdown", True), "spin": spin},
        "rclpy.node": {"Node": FakeNode},
        "rclpy.qos": {"QoSProfile": QoSProfile, "qos_profile_sensor_data": SENSOR_DATA},
        "rcl_interfaces": {},
        "rcl_interfaces.msg": {"ParameterDescriptor": ParameterDescriptor,
                               "ParameterType": ParameterType, "FloatingPointRange": Msg,
                               "IntegerRange": Msg, "SetParametersResult": Msg},
        "sensor_msgs": {},
        "sensor_msgs.msg": {"Image": type("Image", (Msg,), {}),
                            "CameraInfo": type("CameraInfo", (Msg,), {}),
                            "RegionOfInterest": Msg},
        "std_msgs": {}, "std_msgs.msg": {"Header": Msg},
        "builtin_interfaces": {}, "builtin_interfaces.msg": {"Time": Msg},
        "cv_bridge": {"CvBridge": CvBridge},
    }
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
    FakeNode.instances = []
    FakeNode.overrides = {}
    CvBridge.calls = 0
    monkeypatch.setattr(FakeNode, "overrides", {})
    return state


def _ros_image(arr: np.ndarray, enc: str, stamp: int) -> Any:
    from revavatar.ros.convert import to_ros_image

    return to_ros_image(array_to_image(arr, enc, stamp, "cam"), None)


def _camera_array(cam: Any) -> np.ndarray:
    w, h = cam.resolution
    arr = (np.indices((h, w)).sum(0) % 256).astype(np.uint8)
    return arr if cam.infrared else cv2.cvtColor(arr, cv2.COLOR_GRAY2BGR)


def test_alignment_node_declares_first_then_converts_and_publishes(fake_ros: Any) -> None:
    from revavatar.core.calibration import load_calibration
    from revavatar.ros.node import RosStageNode

    FakeNode.overrides.update(calibration=str(CALIB), camera="left_eye", queue_depth=4)
    node = RosStageNode("alignment", "align_left_eye")
    fake = node.node
    kinds = [c[0] for c in fake.calls]
    n = len(STAGE_KINDS["alignment"].parameters)  # camera, calibration, method, profile, ...
    assert kinds[:n] == ["declare"] * n and "declare" not in kinds[n:]
    assert [c[1] for c in fake.calls[n:]] == ["aligned", "image_raw"]  # relative names
    qd = fake.descriptors["queue_depth"]
    assert qd.type == ParameterType.PARAMETER_INTEGER and qd.read_only
    assert (qd.integer_range[0].from_value, qd.integer_range[0].to_value) == (1, 100)
    assert "one of" in fake.descriptors["camera"].additional_constraints
    cb, qos = fake.subscriptions["image_raw"]
    assert qos == SENSOR_DATA
    assert fake.publishers["aligned"].qos.depth == 4

    cam = load_calibration(CALIB).camera("left_eye")
    cb(_ros_image(_camera_array(cam), "mono8" if cam.infrared else "bgr8", 1_234_000_567))
    (out,) = fake.publishers["aligned"].sent
    assert (out.width, out.height) == (128, 96)
    assert (out.header.stamp.sec, out.header.stamp.nanosec) == (1, 234_000_567)
    assert CvBridge.calls == 2  # imgmsg_to_cv2 in, cv2_to_imgmsg out

    cb(_ros_image(np.zeros((8, 8), np.uint8), "mono8", 5))  # wrong size: stage drops it
    bad = _ros_image(np.zeros((8, 8), np.uint8), "mono8", 6)
    bad.encoding = "32FC1"  # not an encoding RevAvatar takes: shell drops it
    cb(bad)
    short = _ros_image(np.zeros((8, 8), np.uint8), "mono8", 7)
    short.data = short.data[:10]  # truncated buffer: cv_bridge fails, shell drops it
    cb(short)
    assert len(fake.publishers["aligned"].sent) == 1
    assert node.stage.stats.bad_frames == 1
    assert node.bad_conversions == 2


def test_without_cv_bridge_fields_are_copied(fake_ros: Any, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from revavatar.ros.convert import from_ros_image, make_bridge, to_ros_image

    monkeypatch.setitem(sys.modules, "cv_bridge", None)  # import cv_bridge -> ImportError
    assert make_bridge() is None
    img = array_to_image(np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "bgr8", 42, "f")
    back = from_ros_image(to_ros_image(img, None), None)
    assert back == img


def test_bad_parameter_value_is_a_user_error(fake_ros: Any) -> None:
    from revavatar.ros.node import RosStageNode

    FakeNode.overrides.update(calibration=str(CALIB), camera="nose")
    with pytest.raises(InputError, match="camera"):
        RosStageNode("alignment")


def test_live_parameter_changes_are_validated(fake_ros: Any, tmp_path: Path,
                                              face_image: np.ndarray) -> None:
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.core.enrollment import Profile
    from revavatar.core.landmarks import FaceLandmarks
    from revavatar.ros.node import RosStageNode

    layout = CanonicalLayout(256)
    pts = np.resize(layout.template_points().astype(np.float32), (68, 2))
    lm = FaceLandmarks(points=pts, points3d=None, scheme="dlib68", image_size=(256, 256),
                       score=1.0)
    Profile(dp=cv2.resize(face_image, (256, 256)), landmarks=lm, mesh=None, layout_size=256,
            meta={}).save(tmp_path / "p")
    FakeNode.overrides.update(profile=str(tmp_path / "p"))
    node = RosStageNode("restoration")
    assert sorted(node.node.subscriptions) == ["left_eye/aligned", "lower_face/aligned",
                                               "right_eye/aligned"]
    (cb,) = node.node.param_callbacks
    ok = cb([Msg(name="slop_ms", value=50.0)])
    assert ok.successful and node.stage.sync.slop_ns == 50_000_000
    assert not cb([Msg(name="slop_ms", value=5000.0)]).successful  # out of range
    refused = cb([Msg(name="profile", value="/elsewhere")])
    assert not refused.successful and "read-only" in refused.reason
    assert cb([Msg(name="use_sim_time", value=True)]).successful


def test_camera_node_publishes_the_session_bag(fake_ros: Any, tmp_path: Path) -> None:
    from revavatar.bag import SessionWriter
    from revavatar.core.calibration import load_calibration
    from revavatar.ros.node import RosStageNode

    cam = load_calibration(CALIB).camera("right_eye")
    with SessionWriter(tmp_path / "bag") as w:
        for k in range(3):
            enc = "mono8" if cam.infrared else "bgr8"
            w.write("/revavatar/right_eye/image_raw",
                    array_to_image(_camera_array(cam), enc, 10 + k * 33_000_000))
    FakeNode.overrides.update(calibration=str(CALIB), camera="right_eye",
                              source=str(tmp_path / "bag"), rate=0.0)
    node = RosStageNode("ingestion", "right_eye_camera")
    pubs = node.node.publishers
    assert {p.qos for p in pubs.values()} == {SENSOR_DATA}
    importlib.import_module("rclpy").spin(node.node)
    assert len(pubs["image_raw"].sent) == 3
    infos = pubs["camera_info"].sent
    assert len(infos) == 3 and len(infos[0].k) == 9 and infos[2].header.stamp.nanosec == 66_000_010
    node.destroy()
    assert node.node.destroyed


def test_node_mains_spin_and_report_user_errors(fake_ros: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from revavatar.nodes import alignment_node, camera_node, display_node, restoration_node

    FakeNode.overrides.update(calibration=str(CALIB), camera="lower_face")
    assert alignment_node.main([]) == 0
    assert fake_ros.inited and fake_ros.shutdown and len(fake_ros.spun) == 1
    assert FakeNode.instances[-1].destroyed
    fake_ros.shutdown = False
    assert display_node.main([]) == 0
    FakeNode.overrides.clear()
    assert camera_node.main([]) == 2  # no calibration
    assert "calibration" in capsys.readouterr().err
    assert restoration_node.main([]) == 2  # no profile
    assert "profile" in capsys.readouterr().err


def test_real_rclpy_node() -> None:
    pytest.importorskip("rclpy", reason="ROS 2 (rclpy) is not installed on this machine")
    import rclpy

    from revavatar.ros.node import RosStageNode

    rclpy.init(args=["--ros-args", "-p", f"calibration:={CALIB}"])
    try:
        node = RosStageNode("display")
        names = {p.name for p in node.node._parameters.values()}  # noqa: SLF001
        assert {"calibration", "layout_size", "queue_depth"} <= names
        node.destroy()
    finally:
        rclpy.shutdown()
