"""Pure node classes: one per stage of the graph, message in -> messages out, no rclpy.

The embedded runner and the rclpy shell drive the same objects: each stage takes
``process(port, msg)`` with a :class:`revavatar.core.messages.Image` arriving on one of its ports
(relative topic names of :mod:`revavatar.graph.description`) and returns the ``(port, message)``
pairs to publish. Decoding and encoding happen here, so the cores only ever see numpy arrays.

A bad frame (wrong encoding, wrong size, a core rejecting it) is logged at most once every few
seconds, dropped and counted in :attr:`StageStats.bad_frames`; it never raises, because one
corrupt frame from a camera must not take the headset's face off the display.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from revavatar.core.messages import CameraInfo, Image, array_to_image, image_to_array
from revavatar.errors import InputError, RevAvatarError
from revavatar.graph.description import CAMERA_NAMES
from revavatar.graph.sync import ApproximateTimeSynchronizer, header_stamp_ns

if TYPE_CHECKING:
    from revavatar.core.calibration import CameraCalibration, HeadsetCalibration
    from revavatar.core.canonical import CanonicalLayout, Region

__all__ = [
    "ALIGNERS",
    "RESTORERS",
    "STAGES",
    "AlignmentStage",
    "CameraSource",
    "DisplayStage",
    "Output",
    "RestorationStage",
    "Stage",
    "StageStats",
    "ThrottledLog",
    "aligner_for",
    "build_stage",
    "sync_queue_size",
]

log = logging.getLogger(__name__)

#: a message to publish: (output port, message)
Output = tuple[str, Image | CameraInfo]

_COLOR: Final = ("bgr8", "rgb8", "bgra8", "rgba8")
_GRAY: Final = ("mono8", "mono16")


class Stage(Protocol):
    """What the runner and the rclpy shell need from a stage."""

    method: str
    stats: StageStats

    def process(self, port: str, msg: Any) -> list[Output]:
        """Handle one message on ``port``; return what to publish."""
        ...


@dataclass
class StageStats:
    """Counters of one stage: frames handled and bad frames dropped (by reason)."""

    frames: int = 0
    bad_frames: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


class ThrottledLog:
    """Log a warning at most once per ``period_s`` per key, with the count of suppressed ones."""

    def __init__(self, logger: logging.Logger, period_s: float = 5.0) -> None:
        self._logger = logger
        self._period = period_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, text: str) -> None:
        """Warn about ``text`` unless ``key`` was logged less than ``period_s`` ago."""
        now = time.monotonic()
        if now - self._last.get(key, -1e18) < self._period:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        extra = self._suppressed.pop(key, 0)
        suffix = f" ({extra} similar suppressed)" if extra else ""
        self._logger.warning("%s%s", text, suffix)
        self._last[key] = now


class _BadFrame(Exception):
    """Internal: a frame to drop (turned into a count and a throttled warning)."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class _Base:
    """Shared bad-frame handling."""

    method: str = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stats = StageStats()
        self._log = ThrottledLog(logging.getLogger(f"revavatar.node.{name}"))

    def _bad(self, reason: str, detail: str) -> list[Output]:
        self.stats.bad_frames += 1
        self.stats.reasons[reason] = self.stats.reasons.get(reason, 0) + 1
        self._log.warning(reason, f"{self.name}: dropped frame: {detail}")
        return []

    def process(self, port: str, msg: Any) -> list[Output]:
        """Handle one message; bad frames are dropped and counted, never raised."""
        try:
            out = self._process(port, msg)
        except _BadFrame as err:
            return self._bad(err.reason, str(err))
        except (RevAvatarError, ValueError) as err:  # a core refusing this input
            return self._bad(type(err).__name__, str(err))
        self.stats.frames += 1
        return out

    def _process(self, port: str, msg: Any) -> list[Output]:  # pragma: no cover - abstract
        raise NotImplementedError


def _decode(msg: Any, size: tuple[int, int] | None, what: str) -> np.ndarray:
    """Image -> uint8 gray (H, W) or BGR (H, W, 3), checking the size (w, h) when given."""
    import cv2  # noqa: PLC0415 - keeps importing the description cheap

    if not isinstance(msg, Image):
        msg_ = f"{what} expects an Image, got {type(msg).__name__}"
        raise _BadFrame("type", msg_)
    if size is not None and (msg.width, msg.height) != tuple(size):
        msg_ = f"{what} expects {size[0]}x{size[1]}, got {msg.width}x{msg.height}"
        raise _BadFrame("size", msg_)
    try:
        arr = image_to_array(msg)
    except RevAvatarError as err:
        msg_ = f"{err}"
        raise _BadFrame("encoding", msg_) from err
    conv = {"rgb8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGBA2BGR, "bgra8": cv2.COLOR_BGRA2BGR}
    if msg.encoding == "mono16":
        return (arr >> 8).astype(np.uint8)
    if msg.encoding in conv:
        return cv2.cvtColor(arr, conv[msg.encoding])
    return arr


def _encode(arr: np.ndarray, stamp_ns: int, frame_id: str) -> Image:
    enc = "mono8" if arr.ndim == 2 else "bgr8"
    return array_to_image(np.ascontiguousarray(arr), enc, stamp_ns, frame_id)


class CameraSource(_Base):
    """Ingestion: check a camera's frames against the calibration, publish them with CameraInfo.

    Frames arrive on port ``"frame"`` (the runner's playback, or the ROS node's bag reader);
    :meth:`frames` picks this camera's frames from any ``(topic, ts_ns, msg)`` iterator such as
    ``SessionReader.messages()``.
    """

    method = "bag"

    def __init__(self, camera: CameraCalibration, name: str | None = None) -> None:
        super().__init__(name or f"{camera.name}_camera")
        self.camera = camera
        self.topic = f"/revavatar/{camera.name}/image_raw"
        self._encodings = _GRAY if camera.infrared else _COLOR

    def frames(self, source: Any) -> Any:
        """Yield this camera's image messages from ``(topic, ts_ns, msg)`` items."""
        for topic, _, msg in source:
            if topic == self.topic:
                yield msg

    def _process(self, port: str, msg: Any) -> list[Output]:
        if not isinstance(msg, Image):
            msg_ = f"expected an Image, got {type(msg).__name__}"
            raise _BadFrame("type", msg_)
        if msg.encoding not in self._encodings:
            kind = "infrared" if self.camera.infrared else "colour"
            msg_ = f"{msg.encoding!r} on the {kind} camera {self.camera.name}"
            raise _BadFrame("encoding", msg_)
        if (msg.width, msg.height) != tuple(self.camera.resolution):
            w, h = self.camera.resolution
            msg_ = f"{msg.width}x{msg.height}, calibration says {w}x{h}"
            raise _BadFrame("size", msg_)
        info = self.camera.camera_info(header_stamp_ns(msg), msg.header.frame_id or None)
        return [("image_raw", msg), ("camera_info", info)]


def _homography(camera: CameraCalibration, region: Region, layout: CanonicalLayout,
                profile: Any = None) -> Any:
    from revavatar.core.alignment import HomographyAligner  # noqa: PLC0415 - lazy registry

    return HomographyAligner(camera, region, layout, face_plane=True)


def _enrolled_depth(profile: Any, layout: CanonicalLayout) -> np.ndarray:
    """Canonical depth map (mm) of the enrolled face (the profile's mesh, its turn taken out).

    Raises:
        InputError: no profile, a profile without a mesh, or one at another layout size.
    """
    from revavatar.vrface.mesh import FaceMesh, mesh_topology  # noqa: PLC0415
    from revavatar.vrface.renderer import enrolled_depth  # noqa: PLC0415

    topo = mesh_topology()
    if profile is None or profile.mesh is None or len(profile.mesh) != topo.n_vertices:
        msg = ("the 'surface' aligner needs an enrollment profile with a face mesh "
               "(parameter 'profile'; `revavatar enroll` writes one)")
        raise InputError(msg)
    if int(profile.layout_size) != layout.size:
        msg = (f"profile is aligned at layout {profile.layout_size}, the graph runs at "
               f"{layout.size}")
        raise InputError(msg)
    mesh = FaceMesh(profile.mesh, topo.triangles, np.zeros((topo.n_vertices, 2), np.float32))
    return enrolled_depth(mesh, layout)


def _surface(camera: CameraCalibration, region: Region, layout: CanonicalLayout,
             profile: Any = None) -> Any:
    """Rectification onto the enrolled wearer's own face surface (the profile's mesh)."""
    from revavatar.core.alignment import SurfaceAligner  # noqa: PLC0415 - lazy registry

    return SurfaceAligner(camera, region, layout, _enrolled_depth(profile, layout))


def _learned(method: str, eye_from: str = "network") -> Callable[..., Any]:
    """Factory of a trained ONNX aligner (models/align[_ae]_<region>/, onnxruntime, no torch);
    ``eye_from``: where the eyes' opening comes from (core.onnx_aligner.OnnxAligner)."""

    def make(camera: CameraCalibration, region: Region, layout: CanonicalLayout,
             profile: Any = None) -> Any:
        from revavatar.core.onnx_aligner import aligner_factory  # noqa: PLC0415 - lazy registry

        # only surface-input and reference models read the wearer; the factory says so when
        # they lack it
        has_face = profile is not None and getattr(profile, "mesh", None) is not None
        depth = _enrolled_depth(profile, layout) if has_face else None
        dp = profile.dp if profile is not None else None  # checked by models that read it
        return aligner_factory(method, eye_from)(camera, region, layout, surface_depth=depth,
                                                 dp=dp)

    return make


#: aligner name -> factory(camera, region, layout, profile=None); a trained aligner registers
#: here. ``profile`` is the enrolled wearer (core.enrollment.Profile) for aligners that use it.
ALIGNERS: Final[dict[str, Callable[..., Any]]] = {
    "homography": _homography,
    "surface": _surface,
    "cyclegan": _learned("cyclegan"),
    # the CycleGAN with each eye's opening from the rectified camera (core.alignment.camera_eye)
    "cyclegan+camera_eye": _learned("cyclegan", "camera"),
    "autoencoder": _learned("autoencoder"),
}


def _restorer(name: str) -> Callable[..., Any]:
    def make(profile: Any, layout: CanonicalLayout, valid: Any = None) -> Any:
        from revavatar.core.restoration import RESTORERS as CORE  # noqa: PLC0415, N811

        return CORE[name](profile, layout, valid=valid)

    return make


#: restorer name -> factory(profile, layout, valid); a learned restorer registers here.
RESTORERS: Final[dict[str, Callable[..., Any]]] = {
    "paste+poisson": _restorer("paste+poisson"),
    "paste": _restorer("paste"),
    "ours": _restorer("ours"),
}


def camera_visibility(
    calibration: HeadsetCalibration, layout: CanonicalLayout
) -> dict[str, np.ndarray]:
    """Per region, the crop pixels its camera can see at all (a property of the headset).

    Pixels a camera cannot image carry no information whatever aligner ran, so the restorer keeps
    the DP there instead of pasting a black border onto the face.
    """
    from revavatar.core.alignment import HomographyAligner  # noqa: PLC0415

    return {
        cam: HomographyAligner(calibration.camera(cam), layout.region(cam), layout,
                               face_plane=True).valid_mask
        for cam in CAMERA_NAMES
    }


def aligner_for(method: str) -> Callable[..., Any]:
    """The factory of ``method``: a key of ``ALIGNERS``, or ``deocclusion+<key>``, that aligner
    reading the eye cameras through the trained de-occluder (models/deocclusion, core.deocclusion;
    the lower-face camera's aligner is left as it is).

    Raises:
        ValueError: an unknown aligner.
    """
    from revavatar.core.deocclusion import DEOCCLUSION_PREFIX  # noqa: PLC0415

    if not method.startswith(DEOCCLUSION_PREFIX):
        return _lookup(ALIGNERS, method, "aligner")
    inner = _lookup(ALIGNERS, method.removeprefix(DEOCCLUSION_PREFIX), "aligner")

    def make(camera: CameraCalibration, region: Region, layout: CanonicalLayout,
             profile: Any = None) -> Any:
        from revavatar.core.deocclusion import DeoccludedAligner, OnnxDeoccluder  # noqa: PLC0415

        aligner = inner(camera, region, layout, profile=profile)
        if region.name not in OnnxDeoccluder.REGIONS:
            return aligner
        return DeoccludedAligner(aligner, OnnxDeoccluder(), region.name)

    return make


def _lookup(registry: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return registry[key]
    except KeyError:
        msg = f"unknown {what} {key!r}; expected one of {', '.join(registry)}"
        raise ValueError(msg) from None


class AlignmentStage(_Base):
    """Alignment: raw camera frame -> canonical crop of the camera's region (port ``aligned``)."""

    def __init__(
        self, camera: CameraCalibration, layout: CanonicalLayout, method: str = "homography",
        name: str | None = None, profile: Any = None,
    ) -> None:
        super().__init__(name or f"align_{camera.name}")
        self.camera = camera
        self.region = layout.region(camera.name)
        self.aligner = aligner_for(method)(camera, self.region, layout, profile=profile)
        self.method = str(getattr(self.aligner, "method", method))

    def _process(self, port: str, msg: Any) -> list[Output]:
        image = _decode(msg, self.camera.resolution, self.name)
        crop = self.aligner.align(image)
        return [("aligned", _encode(crop, header_stamp_ns(msg), f"canonical/{self.region.name}"))]


class RestorationStage(_Base):
    """Restoration: synchronize the three aligned crops, restore the face on the DP.

    Ports ``<camera>/aligned`` in; ``composite`` and ``restored`` out, stamped with the newest stamp
    of the matched set.
    """

    def __init__(
        self, profile: Any, layout: CanonicalLayout, method: str = "paste+poisson", *,
        slop_ns: int = 20_000_000, queue_size: int = 5, name: str = "restoration",
        calibration: HeadsetCalibration | None = None,
    ) -> None:
        super().__init__(name)
        self.layout = layout
        valid = camera_visibility(calibration, layout) if calibration is not None else None
        self.restorer = _lookup(RESTORERS, method, "restorer")(profile, layout, valid)
        self.method = str(getattr(self.restorer, "method", method))
        self.ports = tuple(f"{cam}/aligned" for cam in CAMERA_NAMES)
        self.sync = ApproximateTimeSynchronizer(len(self.ports), queue_size, slop_ns)
        self._sizes = {cam: layout.region(cam).crop_size for cam in CAMERA_NAMES}
        self._warm_up()

    def _warm_up(self) -> None:
        """Restore one blank set before the first frame arrives.

        The first call pays one-off costs (lazy imports, OpenCV and onnxruntime allocations,
        100+ ms); paid on a live stream it overflows the keep-last queues and drops real frames.
        """
        blank = {cam: np.zeros((h, w), np.uint8) for cam, (w, h) in self._sizes.items()}
        self.restorer.restore(blank)

    def _process(self, port: str, msg: Any) -> list[Output]:
        if port not in self.ports:
            msg_ = f"unknown input port {port!r}; expected one of {', '.join(self.ports)}"
            raise _BadFrame("port", msg_)
        cam = port.split("/", maxsplit=1)[0]
        _decode(msg, self._sizes[cam], f"{self.name}[{port}]")  # reject bad crops before sync
        matched = self.sync.add(self.ports.index(port), msg)
        if matched is None:
            return []
        crops = {cam: _decode(m, None, port) for cam, m in zip(CAMERA_NAMES, matched, strict=True)}
        stamp = max(header_stamp_ns(m) for m in matched)
        composite = getattr(self.restorer, "composite", None)
        out: list[Output] = []
        if composite is not None:
            out.append(("composite", _encode(composite(crops)[0], stamp, "canonical")))
        out.append(("restored", _encode(self.restorer.restore(crops), stamp, "canonical")))
        return out


class DisplayStage(_Base):
    """Display: restored canonical face -> outward display image (port ``image``)."""

    def __init__(self, calibration: HeadsetCalibration, layout: CanonicalLayout,
                 name: str = "display") -> None:
        from revavatar.core.display import DisplayWarper  # noqa: PLC0415

        super().__init__(name)
        self.layout = layout
        self.warper = DisplayWarper(calibration.display, layout)
        self.method = str(getattr(self.warper, "method", "planar-warp"))

    def _process(self, port: str, msg: Any) -> list[Output]:
        face = _decode(msg, (self.layout.size, self.layout.size), self.name)
        return [("image", _encode(self.warper.render(face), header_stamp_ns(msg), "display"))]


def _calibration(params: Mapping[str, Any]) -> HeadsetCalibration:
    from revavatar.core.calibration import load_calibration  # noqa: PLC0415

    if not params.get("calibration"):
        msg = "parameter 'calibration' is empty; pass the headset calibration YAML"
        raise InputError(msg)
    return load_calibration(params["calibration"])


def _layout(params: Mapping[str, Any]) -> CanonicalLayout:
    from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415

    return CanonicalLayout(int(params["layout_size"]))


def _build_ingestion(name: str, p: Mapping[str, Any]) -> CameraSource:
    return CameraSource(_calibration(p).camera(p["camera"]), name)


def _build_alignment(name: str, p: Mapping[str, Any]) -> AlignmentStage:
    profile = None
    if p.get("profile") and p["method"] != "homography":  # the plane needs no wearer
        from revavatar.core.enrollment import Profile  # noqa: PLC0415

        profile = Profile.load(Path(p["profile"]))
    return AlignmentStage(_calibration(p).camera(p["camera"]), _layout(p), p["method"], name,
                          profile=profile)


def _build_restoration(name: str, p: Mapping[str, Any]) -> RestorationStage:
    from revavatar.core.enrollment import Profile  # noqa: PLC0415

    if not p.get("profile"):
        msg = "restoration needs an enrollment profile directory (parameter 'profile' is empty)"
        raise InputError(msg)
    profile = Profile.load(Path(p["profile"]))
    calibration = _calibration(p) if p.get("calibration") else None
    return RestorationStage(
        profile, _layout(p), p["method"], slop_ns=round(float(p["slop_ms"]) * 1e6),
        queue_size=sync_queue_size(int(p["queue_depth"])), name=name, calibration=calibration,
    )


def sync_queue_size(queue_depth: int) -> int:
    """Per-input synchronizer queue for subscriptions of ``queue_depth``.

    One camera's crops can run ahead of another's by at most what fits in the lagging chain
    (camera queue + camera + aligner queue + aligner + restoration queue + the frame being
    played: 3 * depth + 3), so this size never evicts a crop whose partners are still on their way,
    which keeps a rate-0 replay lossless.
    """
    return 3 * queue_depth + 4


def _build_display(name: str, p: Mapping[str, Any]) -> DisplayStage:
    return DisplayStage(_calibration(p), _layout(p), name)


#: stage kind -> factory(node name, parameters); the runner and the rclpy shell build through it.
STAGES: Final[dict[str, Callable[[str, Mapping[str, Any]], Stage]]] = {
    "ingestion": _build_ingestion,
    "alignment": _build_alignment,
    "restoration": _build_restoration,
    "display": _build_display,
}


def build_stage(stage: str, name: str, parameters: Mapping[str, Any]) -> Stage:
    """Build the pure stage of kind ``stage`` for node ``name`` from its parameter values.

    Raises:
        ValueError: unknown stage kind or registry key.
        InputError, CalibrationError: a missing profile or a bad calibration file.
    """
    return _lookup(STAGES, stage, "stage")(name, parameters)
