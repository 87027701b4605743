"""The rclpy shell: one generic node that wraps any pure stage of :mod:`revavatar.graph.stages`.

Everything ROS-specific lives here and rclpy is imported inside functions, so the package imports
on machines without ROS 2. The node follows image_pipeline's habits: parameters are declared
first, with descriptors built from :mod:`revavatar.graph.description` (meaning, range, read-only),
then the stage is built from their values, then publishers and subscriptions are created under the
stage's relative topic names (launch remaps them). Cameras use sensor-data QoS. A frame that does
not convert is logged (throttled), dropped and counted; it never takes the node down.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, Final

from revavatar.core.messages import CameraInfo, Image
from revavatar.errors import InputError, RevAvatarError
from revavatar.graph.description import STAGE_KINDS, ParamSpec, StageKind
from revavatar.graph.stages import CameraSource, ThrottledLog, build_stage
from revavatar.ros.convert import from_ros_image, make_bridge, to_ros_camera_info, to_ros_image

__all__ = ["RosStageNode", "parameter_descriptor", "run_stage_node"]

log = logging.getLogger(__name__)

_DEFAULT_NAMES: Final = {
    "ingestion": "left_eye_camera",
    "alignment": "align_left_eye",
    "restoration": "restoration",
    "display": "display",
}
#: playback timer period (s) of camera nodes
_TICK_S: Final = 0.005


def parameter_descriptor(spec: ParamSpec) -> Any:
    """``rcl_interfaces/msg/ParameterDescriptor`` for a ParamSpec (type, meaning, range)."""
    from rcl_interfaces.msg import (  # noqa: PLC0415
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    types = {
        "string": ParameterType.PARAMETER_STRING,
        "integer": ParameterType.PARAMETER_INTEGER,
        "double": ParameterType.PARAMETER_DOUBLE,
        "bool": ParameterType.PARAMETER_BOOL,
    }
    desc = ParameterDescriptor(name=spec.name, type=types[spec.type],
                               description=spec.description, read_only=spec.read_only)
    if spec.range is not None and spec.type == "double":
        desc.floating_point_range = [FloatingPointRange(
            from_value=float(spec.range[0]), to_value=float(spec.range[1]), step=0.0)]
    elif spec.range is not None and spec.type == "integer":
        desc.integer_range = [IntegerRange(
            from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    if spec.choices is not None:
        desc.additional_constraints = "one of: " + ", ".join(map(str, spec.choices))
    return desc


class RosStageNode:
    """An rclpy node running one stage (composition: :attr:`node` is the rclpy Node).

    Args:
        stage: key of :data:`STAGE_KINDS` (``ingestion | alignment | restoration | display``).
        node_name: default node name (launch overrides it with ``name=``).

    Raises:
        InputError: a parameter value of the wrong type or out of range, or a missing file.
        CalibrationError, BagError: a bad calibration or session bag.
    """

    def __init__(self, stage: str, node_name: str | None = None) -> None:
        from rclpy.node import Node  # noqa: PLC0415
        from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: PLC0415
        from sensor_msgs.msg import CameraInfo as RosCameraInfo  # noqa: PLC0415
        from sensor_msgs.msg import Image as RosImage  # noqa: PLC0415

        self.kind: StageKind = STAGE_KINDS[stage]
        self.node = Node(node_name or _DEFAULT_NAMES[stage])
        self.name = self.node.get_name()
        # 1. parameters, before any topic
        self.params: dict[str, Any] = {}
        for spec in self.kind.parameters:
            value = self.node.declare_parameter(spec.name, spec.default,
                                                parameter_descriptor(spec)).value
            problem = spec.validate(value)
            if problem is not None:
                msg = f"{self.name}: parameter {problem}"
                raise InputError(msg)
            self.params[spec.name] = value
        self.node.add_on_set_parameters_callback(self._on_set_parameters)
        # 2. the pure stage
        self.stage = build_stage(stage, self.name, self.params)
        self.bridge = make_bridge()
        self.bad_conversions = 0
        self._log = ThrottledLog(logging.getLogger(f"revavatar.node.{self.name}"))
        # 3. publishers and subscriptions under relative names
        depth = int(self.params["queue_depth"])
        camera_qos = qos_profile_sensor_data
        self.publishers: dict[str, Any] = {}
        for port, ps in self.kind.outputs.items():
            msg_type = RosCameraInfo if ps.msg_type.endswith("CameraInfo") else RosImage
            qos = camera_qos if stage == "ingestion" else QoSProfile(depth=depth)
            self.publishers[port] = self.node.create_publisher(msg_type, port, qos)
        self.subscriptions = [
            self.node.create_subscription(
                RosImage, port, partial(self._on_message, port),
                camera_qos if port == "image_raw" else QoSProfile(depth=depth))
            for port in self.kind.inputs
        ]
        # 4. camera nodes publish their session bag
        self._frames: Iterator[Image] | None = None
        self._reader: Any = None
        if isinstance(self.stage, CameraSource):
            self._start_playback(self.stage)

    # -- messages -----------------------------------------------------------------------------
    def _on_message(self, port: str, ros_msg: Any) -> None:
        try:
            msg = from_ros_image(ros_msg, self.bridge)
        except RevAvatarError as err:
            self.bad_conversions += 1
            self._log.warning("convert", f"{self.name}: dropped {port} message: {err}")
            return
        self._publish(self.stage.process(port, msg))

    def _publish(self, outputs: Sequence[tuple[str, Any]]) -> None:
        for port, msg in outputs:
            ros_msg = to_ros_camera_info(msg) if isinstance(msg, CameraInfo) else to_ros_image(
                msg, self.bridge)
            self.publishers[port].publish(ros_msg)

    # -- camera playback ----------------------------------------------------------------------
    def _start_playback(self, camera: CameraSource) -> None:
        from revavatar.bag import SessionReader  # noqa: PLC0415

        source = self.params["source"]
        if not source:
            msg = (f"{self.name}: parameter 'source' is empty; pass source:=<session bag> "
                   "(record one with `revavatar record`)")
            raise InputError(msg)
        self._reader = SessionReader(source)
        self._reader.open()
        self._frames = iter(camera.frames(self._reader.messages([camera.topic])))
        self._rate = float(self.params["rate"])
        self._t0: float | None = None
        self._s0 = 0
        self._pending: Image | None = None
        self.timer = self.node.create_timer(_TICK_S, self._tick)

    def _tick(self) -> None:
        """Publish every frame that is due (rate > 0) or the next frame (rate 0)."""
        while True:
            if self._pending is None:
                self._pending = next(self._frames, None) if self._frames is not None else None
                if self._pending is None:
                    self._finish()
                    return
            stamp = self._pending.header.stamp.to_ns()
            if self._rate > 0:
                now = time.monotonic()
                if self._t0 is None:
                    self._t0, self._s0 = now, stamp
                if self._t0 + (stamp - self._s0) / 1e9 / self._rate > now:
                    return
            frame, self._pending = self._pending, None
            self._publish(self.stage.process("frame", frame))
            if self._rate == 0:
                return

    def _finish(self) -> None:
        if self._frames is not None:
            self.node.get_logger().info(f"{self.name}: end of session bag")
            self._frames = None
            self.timer.cancel()
            self._reader.close()

    # -- live parameter changes ---------------------------------------------------------------
    def _on_set_parameters(self, parameters: Sequence[Any]) -> Any:
        from rcl_interfaces.msg import SetParametersResult  # noqa: PLC0415

        for param in parameters:
            if param.name not in self.kind.names():
                continue  # use_sim_time and other ROS parameters
            spec = self.kind.param(param.name)
            problem = (f"{param.name} is read-only" if spec.read_only
                       else spec.validate(param.value))
            if problem is not None:
                return SetParametersResult(successful=False, reason=problem)
        for param in parameters:
            if param.name == "slop_ms" and hasattr(self.stage, "sync"):
                self.stage.sync.set_slop(round(float(param.value) * 1e6))
            if param.name in self.params:
                self.params[param.name] = param.value
        return SetParametersResult(successful=True, reason="")

    def destroy(self) -> None:
        """Release the bag reader and the rclpy node."""
        self._finish()
        self.node.destroy_node()


def run_stage_node(stage: str, args: Sequence[str] | None = None) -> int:
    """``main()`` of a node executable: init rclpy, build the node, spin, shut down.

    Returns:
        0, or 2 after a user error (printed on one line, like the CLI).
    """
    import rclpy  # noqa: PLC0415

    rclpy.init(args=list(args) if args is not None else None)
    node: RosStageNode | None = None
    try:
        node = RosStageNode(stage)
        rclpy.spin(node.node)
    except RevAvatarError as err:
        print(f"{STAGE_KINDS[stage].executable}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    except Exception as err:
        if type(err).__name__ != "ExternalShutdownException":  # rclpy.executors, on Ctrl-C
            raise
    finally:
        if node is not None:
            node.destroy()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
