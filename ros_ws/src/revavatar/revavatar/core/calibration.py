"""Headset calibration: the YAML schema, its strict loader and the camera models.

Every other stage (the VR-Face renderer, the aligner, the display warp, the camera nodes) works in
the head frame of ``docs/ARCHITECTURE.md`` and learns where the headset's cameras and outward
panel sit only from one of these files, so a silently wrong value (a typo'd key that falls back to
a default, degrees read as radians, a focal length of 0) would corrupt everything downstream
without an error. The loader therefore rejects anything it does not understand and names the
file, the dotted key path and the expectation in one line.

Head frame: origin between the eye centres, x toward the wearer's LEFT (image right of a frontal
view), y down, z into the head, mm. A camera pose is its centre ``t`` (head frame) and
``R_head_from_cam = Ry(yaw) @ Rx(pitch) @ Rz(roll)``; ``X_cam = R.T @ (X_head - t)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import yaml

from revavatar.core.messages import CameraInfo, Header, Time
from revavatar.errors import CalibrationError

__all__ = [
    "CAMERA_NAMES",
    "DISTORTION_MODELS",
    "CameraCalibration",
    "DisplayCalibration",
    "HeadsetCalibration",
    "calibration_from_dict",
    "load_calibration",
    "rotation_head_from_cam",
    "save_calibration",
]

#: The three headset cameras every profile must define, in topic order.
CAMERA_NAMES: Final[tuple[str, ...]] = ("left_eye", "right_eye", "lower_face")

#: distortion model (ROS ``distortion_model`` string) -> number of coefficients.
#: plumb_bob = OpenCV [k1, k2, p1, p2, k3]; equidistant = OpenCV fisheye [k1, k2, k3, k4].
DISTORTION_MODELS: Final[dict[str, int]] = {"plumb_bob": 5, "equidistant": 4}

_TOP_KEYS = ("name", "description", "cameras", "display")
_CAMERA_KEYS = ("resolution", "fps", "intrinsics", "distortion", "pose", "infrared")
_INTRINSIC_KEYS = ("fx", "fy", "cx", "cy")
_DISTORTION_KEYS = ("model", "coefficients")
_POSE_KEYS = ("translation_mm", "rotation_deg")
_DISPLAY_KEYS = (
    "resolution",
    "size_mm",
    "center_mm",
    "distance_mm",
    "viewer_distance_mm",
    "eye_region",
)


def rotation_head_from_cam(rotation_deg: tuple[float, float, float]) -> np.ndarray:
    """``Ry(yaw) @ Rx(pitch) @ Rz(roll)`` from ``[roll, pitch, yaw]`` in degrees.

    Positive pitch looks up (toward -y), positive yaw turns the optical axis toward +x.
    """
    roll, pitch, yaw = (math.radians(a) for a in rotation_deg)
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    ry = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    rz = np.array([[cr, -sr, 0.0], [sr, cr, 0.0], [0.0, 0.0, 1.0]])
    return ry @ rx @ rz


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """One headset camera: pinhole intrinsics, lens distortion and pose in the head frame.

    Attributes:
        name: one of :data:`CAMERA_NAMES`.
        resolution: (width, height) px.
        fps: nominal frame rate (Hz).
        fx, fy, cx, cy: pinhole intrinsics (px).
        distortion_model: ``plumb_bob`` or ``equidistant`` (ROS names).
        distortion: the model's coefficients in OpenCV order.
        translation_mm: camera centre in the head frame (3,), read-only.
        rotation_deg: (roll, pitch, yaw) in degrees.
        infrared: grayscale IR camera (published as mono8).
    """

    name: str
    resolution: tuple[int, int]
    fps: float
    fx: float
    fy: float
    cx: float
    cy: float
    distortion_model: str
    distortion: tuple[float, ...]
    translation_mm: np.ndarray
    rotation_deg: tuple[float, float, float]
    infrared: bool
    _R: np.ndarray = field(init=False, repr=False)
    _theta_max: float = field(init=False, repr=False)

    def __post_init__(self) -> None:
        t = np.array(self.translation_mm, dtype=np.float64).reshape(3)
        t.setflags(write=False)
        object.__setattr__(self, "translation_mm", t)
        object.__setattr__(self, "resolution", tuple(int(v) for v in self.resolution))
        object.__setattr__(self, "distortion", tuple(float(v) for v in self.distortion))
        object.__setattr__(self, "rotation_deg", tuple(float(v) for v in self.rotation_deg))
        n_coeffs = DISTORTION_MODELS.get(self.distortion_model)
        if n_coeffs is None or len(self.distortion) != n_coeffs:
            msg = (
                f"distortion {self.distortion_model!r} with {len(self.distortion)} coefficients; "
                f"expected one of {DISTORTION_MODELS} (model: count)"
            )
            raise ValueError(msg)
        rot = rotation_head_from_cam(self.rotation_deg)  # type: ignore[arg-type]
        rot.setflags(write=False)
        object.__setattr__(self, "_R", rot)
        object.__setattr__(
            self, "_theta_max", _monotonic_field_angle(self.distortion_model, self.distortion)
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CameraCalibration):
            return NotImplemented
        return self.name == other.name and self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    @property
    def width(self) -> int:
        """Image width (px)."""
        return self.resolution[0]

    @property
    def height(self) -> int:
        """Image height (px)."""
        return self.resolution[1]

    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name of the camera matrix
        """3x3 camera matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]`` (float64)."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def D(self) -> np.ndarray:  # noqa: N802 - the conventional name of the distortion vector
        """Distortion coefficients as a float64 vector in OpenCV order."""
        return np.array(self.distortion, dtype=np.float64)

    def R_head_from_cam(self) -> np.ndarray:  # noqa: N802 - matches the contract
        """3x3 rotation taking camera-frame vectors to the head frame (a copy)."""
        return self._R.copy()

    def to_camera(self, points_head_mm: np.ndarray) -> np.ndarray:
        """Head-frame points (N, 3) mm -> camera-frame points (N, 3) mm (z = depth)."""
        pts = np.asarray(points_head_mm, dtype=np.float64).reshape(-1, 3)
        return (pts - self.translation_mm) @ self._R

    def rays_to_head(self, rays_cam: np.ndarray) -> np.ndarray:
        """Camera-frame directions (N, 3) -> head-frame directions (N, 3), same length."""
        return np.asarray(rays_cam, dtype=np.float64).reshape(-1, 3) @ self._R.T

    def project(self, points_head_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project head-frame points through the lens into image pixels.

        Args:
            points_head_mm: (N, 3) or (3,) points in the head frame, mm.

        Returns:
            ``uv`` (N, 2) float64 distorted pixel coordinates (pixel centres at integers) and
            ``depth`` (N,) camera-frame z in mm. Points with ``depth <= 0`` are behind the camera;
            their ``uv`` is meaningless and callers must mask them.
        """
        pts_cam = self.to_camera(points_head_mm)
        depth = pts_cam[:, 2].copy()
        if len(pts_cam) == 0:
            return np.zeros((0, 2)), depth
        obj = np.ascontiguousarray(pts_cam.reshape(-1, 1, 3))
        zero = np.zeros(3)
        if self.distortion_model == "equidistant":
            uv, _ = cv2.fisheye.projectPoints(obj, zero, zero, self.K(), self.D())
        else:
            uv, _ = cv2.projectPoints(obj, zero, zero, self.K(), self.D())
        return uv.reshape(-1, 2).astype(np.float64), depth

    def max_field_angle_deg(self) -> float:
        """Largest off-axis angle (deg) up to which the lens model is one-to-one.

        Polynomial distortion models fold back beyond some radius (a point far outside the field
        of view "projects" into the image again), so anything that trusts :meth:`project` for
        visibility must also stay inside this angle; :meth:`in_view` does.
        """
        return math.degrees(self._theta_max)

    def in_view(self, points_head_mm: np.ndarray, *, margin_px: float = 0.0) -> np.ndarray:
        """Which head-frame points (N, 3) the camera really images (occlusion aside).

        True when the point is in front of the camera, inside the lens model's one-to-one range
        and projects inside the image shrunk by ``margin_px`` (pixel edges at -0.5 and W - 0.5).
        """
        pts_cam = self.to_camera(points_head_mm)
        angle = np.arctan2(np.hypot(pts_cam[:, 0], pts_cam[:, 1]), pts_cam[:, 2])
        uv, depth = self.project(points_head_mm)
        lo = -0.5 + margin_px
        inside = (
            (uv[:, 0] >= lo)
            & (uv[:, 0] <= self.width - 0.5 - margin_px)
            & (uv[:, 1] >= lo)
            & (uv[:, 1] <= self.height - 0.5 - margin_px)
        )
        return (depth > 0) & (angle < self._theta_max) & inside & np.isfinite(uv).all(axis=1)

    def undistort_points(self, uv: np.ndarray) -> np.ndarray:
        """Distorted pixels (N, 2) -> normalised image coordinates (N, 2).

        ``(x, y)`` is the ray ``(x, y, 1)`` in the camera frame (undo the lens, then ``K^-1``).
        Solved iteratively to 1e-10, so it inverts :meth:`project` to well below a pixel even for
        strong distortion, inside the lens' monotonic range.
        """
        src = np.ascontiguousarray(np.asarray(uv, dtype=np.float64).reshape(-1, 1, 2))
        if len(src) == 0:
            return np.zeros((0, 2))
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
        if self.distortion_model == "equidistant":
            out = cv2.fisheye.undistortPoints(src, self.K(), self.D(), criteria=criteria)
        else:
            out = cv2.undistortPointsIter(src, self.K(), self.D(), None, None, criteria)
        return out.reshape(-1, 2).astype(np.float64)

    def pixel_rays_head(self, uv: np.ndarray) -> np.ndarray:
        """Unit viewing rays in the head frame (N, 3) for distorted pixels (N, 2)."""
        xy = self.undistort_points(uv)
        rays = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
        rays /= np.linalg.norm(rays, axis=1, keepdims=True)
        return self.rays_to_head(rays)

    def camera_info(self, stamp_ns: int = 0, frame_id: str | None = None) -> CameraInfo:
        """The ROS ``CameraInfo`` of this camera (raw, unrectified image).

        ``d`` = coefficients, ``k`` = K row-major, ``r`` = identity (monocular),
        ``p`` = ``[K | 0]``.

        Args:
            stamp_ns: header stamp (ns).
            frame_id: header frame id; defaults to ``revavatar/<name>``.
        """
        k = tuple(float(v) for v in self.K().ravel())
        p = tuple(float(v) for v in np.hstack([self.K(), np.zeros((3, 1))]).ravel())
        return CameraInfo(
            header=Header(
                stamp=Time.from_ns(stamp_ns), frame_id=frame_id or f"revavatar/{self.name}"
            ),
            height=self.height,
            width=self.width,
            distortion_model=self.distortion_model,
            d=self.distortion,
            k=k,
            r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
            p=p,
        )

    def to_dict(self) -> dict[str, Any]:
        """The camera's YAML mapping (plain Python types), as :func:`load_calibration` reads it."""
        return {
            "resolution": [int(v) for v in self.resolution],
            "fps": float(self.fps),
            "intrinsics": {
                "fx": float(self.fx),
                "fy": float(self.fy),
                "cx": float(self.cx),
                "cy": float(self.cy),
            },
            "distortion": {"model": self.distortion_model, "coefficients": list(self.distortion)},
            "pose": {
                "translation_mm": [float(v) for v in self.translation_mm],
                "rotation_deg": list(self.rotation_deg),
            },
            "infrared": bool(self.infrared),
        }


@dataclass(frozen=True)
class DisplayCalibration:
    """The outward-facing panel that shows the restored face to an observer.

    Attributes:
        resolution: (width, height) px.
        size_mm: physical (width, height) mm.
        center_mm: panel centre (x, y) in the head frame, mm.
        distance_mm: the panel lies in the plane ``z = -distance_mm``.
        viewer_distance_mm: the observer stands straight ahead at ``z = -viewer_distance_mm``.
        eye_region: canonical fractions ``[x0, y0, x1, y1]`` of the face the panel may show.
    """

    resolution: tuple[int, int]
    size_mm: tuple[float, float]
    center_mm: tuple[float, float]
    distance_mm: float
    viewer_distance_mm: float
    eye_region: tuple[float, float, float, float]

    def mm_per_px(self) -> tuple[float, float]:
        """Physical pixel pitch (x, y) in mm."""
        return self.size_mm[0] / self.resolution[0], self.size_mm[1] / self.resolution[1]

    def pixel_to_head(self, uv: np.ndarray) -> np.ndarray:
        """Panel pixels (N, 2) -> head-frame points (N, 3) on the panel plane.

        Pixel centres sit at integers; the panel spans ``[-0.5, W - 0.5]``. Panel x grows with
        head x, because the observer faces the wearer and sees the panel like a frontal image.
        """
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        sx, sy = self.mm_per_px()
        x = self.center_mm[0] + (uv[:, 0] + 0.5 - self.resolution[0] / 2) * sx
        y = self.center_mm[1] + (uv[:, 1] + 0.5 - self.resolution[1] / 2) * sy
        return np.stack([x, y, np.full_like(x, -self.distance_mm)], axis=1)

    def to_dict(self) -> dict[str, Any]:
        """The display's YAML mapping (plain Python types)."""
        return {
            "resolution": [int(v) for v in self.resolution],
            "size_mm": [float(v) for v in self.size_mm],
            "center_mm": [float(v) for v in self.center_mm],
            "distance_mm": float(self.distance_mm),
            "viewer_distance_mm": float(self.viewer_distance_mm),
            "eye_region": [float(v) for v in self.eye_region],
        }


@dataclass(frozen=True)
class HeadsetCalibration:
    """A whole headset profile: three cameras and the outward display.

    Attributes:
        name: profile name.
        description: the assumptions behind the numbers.
        cameras: camera name -> calibration, in :data:`CAMERA_NAMES` order.
        display: the outward panel.
        source: the YAML it was read from (or a label for in-memory profiles).
    """

    name: str
    description: str
    cameras: dict[str, CameraCalibration]
    display: DisplayCalibration
    source: Path = Path("<memory>")

    def camera(self, name: str) -> CameraCalibration:
        """The named camera.

        Raises:
            ValueError: an unknown camera name (the message lists the valid ones).
        """
        try:
            return self.cameras[name]
        except KeyError:
            msg = f"unknown camera {name!r}; expected one of {', '.join(self.cameras)}"
            raise ValueError(msg) from None

    def to_dict(self) -> dict[str, Any]:
        """The profile as the YAML mapping :func:`load_calibration` accepts (round-trips)."""
        return {
            "name": self.name,
            "description": self.description,
            "cameras": {name: cam.to_dict() for name, cam in self.cameras.items()},
            "display": self.display.to_dict(),
        }


# ----------------------------------------------------------------------------------- validation


def _monotonic_field_angle(model: str, coeffs: tuple[float, ...]) -> float:
    """Field angle (rad) where the radial distortion stops increasing (or ~90 deg if never)."""
    theta = np.linspace(0.0, math.radians(89.5), 4000)
    if model == "equidistant":
        k1, k2, k3, k4 = coeffs
        t2 = theta**2
        mapped = theta * (1 + k1 * t2 + k2 * t2**2 + k3 * t2**3 + k4 * t2**4)
    else:
        k1, k2, _, _, k3 = coeffs
        r = np.tan(theta)
        r2 = r**2
        mapped = r * (1 + k1 * r2 + k2 * r2**2 + k3 * r2**3)
    rising = np.diff(mapped) > 0
    if rising.all():
        return float(theta[-1])
    return float(theta[int(np.argmin(rising))])


class _Checker:
    """Validates one parsed YAML document; every failure is one CalibrationError line."""

    def __init__(self, source: Path | str) -> None:
        self.source = source

    def fail(self, key: str, expected: str, got: object) -> CalibrationError:
        got_text = got if isinstance(got, _Raw) else repr(got)
        return CalibrationError(f"{self.source}: {key}: expected {expected}, got {got_text}")

    def mapping(self, value: object, key: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        label = key or "<document>"
        if not isinstance(value, dict):
            raise self.fail(label, f"a mapping with keys {', '.join(allowed)}", _type_name(value))
        for k in value:
            if k not in allowed:
                path = f"{key}.{k}" if key else str(k)
                raise self.fail(
                    path, f"one of the keys {', '.join(allowed)}", _Raw("an unknown key")
                )
        for k in allowed:
            if k not in value:
                path = f"{key}.{k}" if key else k
                raise self.fail(path, "this key to be present", _Raw("nothing (missing key)"))
        return value

    def string(self, value: object, key: str) -> str:
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "a non-empty string", value)
        return value

    def boolean(self, value: object, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(key, "true or false", value)
        return value

    def number(self, value: object, key: str, lo: float, hi: float, **kw: bool) -> float:
        """One number in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``; ``integer`` for ints)."""
        lo_open, integer = kw.get("lo_open", False), kw.get("integer", False)
        kind = "an integer" if integer else "a number"
        expected = f"{kind} in {'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type:
            raise self.fail(key, expected, value)
        v = float(value)  # type: ignore[arg-type]
        if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
            raise self.fail(key, expected, value)
        return v

    def numbers(
        self, value: object, key: str, n: int, lo: float, hi: float, **kw: bool
    ) -> tuple[float, ...]:
        """A list of exactly ``n`` numbers, each checked like :meth:`number`."""
        if not isinstance(value, list) or len(value) != n:
            kind = "integers" if kw.get("integer") else "numbers"
            raise self.fail(key, f"a list of {n} {kind}", value)
        return tuple(self.number(v, f"{key}[{i}]", lo, hi, **kw) for i, v in enumerate(value))


class _Raw(str):
    """A 'got' text printed verbatim instead of repr'd."""


def _type_name(value: object) -> _Raw:
    return _Raw(f"{type(value).__name__} {value!r}" if value is not None else "nothing (empty)")


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _camera(chk: _Checker, raw: object, name: str) -> CameraCalibration:
    key = f"cameras.{name}"
    cam = chk.mapping(raw, key, _CAMERA_KEYS)
    w, h = (
        int(v)
        for v in chk.numbers(cam["resolution"], f"{key}.resolution", 2, 16, 4096, integer=True)
    )
    fps = chk.number(cam["fps"], f"{key}.fps", 0, 240, lo_open=True)
    intr = chk.mapping(cam["intrinsics"], f"{key}.intrinsics", _INTRINSIC_KEYS)
    fx = chk.number(intr["fx"], f"{key}.intrinsics.fx", 0, 100_000, lo_open=True)
    fy = chk.number(intr["fy"], f"{key}.intrinsics.fy", 0, 100_000, lo_open=True)
    cx = chk.number(intr["cx"], f"{key}.intrinsics.cx", 0, w)
    cy = chk.number(intr["cy"], f"{key}.intrinsics.cy", 0, h)
    dist = chk.mapping(cam["distortion"], f"{key}.distortion", _DISTORTION_KEYS)
    model = dist["model"]
    if model not in DISTORTION_MODELS:
        raise chk.fail(f"{key}.distortion.model", f"one of {', '.join(DISTORTION_MODELS)}", model)
    n = DISTORTION_MODELS[model]
    coeffs = chk.numbers(dist["coefficients"], f"{key}.distortion.coefficients", n, -100, 100)
    pose = chk.mapping(cam["pose"], f"{key}.pose", _POSE_KEYS)
    t = chk.numbers(pose["translation_mm"], f"{key}.pose.translation_mm", 3, -1000, 1000)
    rot = chk.numbers(pose["rotation_deg"], f"{key}.pose.rotation_deg", 3, -180, 180)
    infrared = chk.boolean(cam["infrared"], f"{key}.infrared")
    rotation = (rot[0], rot[1], rot[2])
    return CameraCalibration(
        name, (w, h), fps, fx, fy, cx, cy, model, coeffs, np.array(t), rotation, infrared
    )


def _display(chk: _Checker, raw: object) -> DisplayCalibration:
    disp = chk.mapping(raw, "display", _DISPLAY_KEYS)
    res = chk.numbers(disp["resolution"], "display.resolution", 2, 16, 8192, integer=True)
    size = chk.numbers(disp["size_mm"], "display.size_mm", 2, 0, 1000, lo_open=True)
    center = chk.numbers(disp["center_mm"], "display.center_mm", 2, -500, 500)
    dist = chk.number(disp["distance_mm"], "display.distance_mm", 0, 500, lo_open=True)
    viewer = chk.number(
        disp["viewer_distance_mm"], "display.viewer_distance_mm", 0, 100_000, lo_open=True
    )
    if viewer <= dist:
        raise chk.fail(
            "display.viewer_distance_mm",
            f"a number > distance_mm ({_fmt(dist)})",
            disp["viewer_distance_mm"],
        )
    region = chk.numbers(disp["eye_region"], "display.eye_region", 4, 0, 1)
    if not (region[0] < region[2] and region[1] < region[3]):
        raise chk.fail(
            "display.eye_region", "[x0, y0, x1, y1] with x0 < x1 and y0 < y1", disp["eye_region"]
        )
    box = (region[0], region[1], region[2], region[3])
    resolution = (int(res[0]), int(res[1]))
    return DisplayCalibration(
        resolution, (size[0], size[1]), (center[0], center[1]), dist, viewer, box
    )


def calibration_from_dict(data: object, source: Path | str = "<memory>") -> HeadsetCalibration:
    """Validate a parsed YAML document and build the profile.

    Args:
        data: the document (as ``yaml.safe_load`` returns it).
        source: the file (or label) named in error messages and kept as ``.source``.

    Raises:
        CalibrationError: the first unknown key, missing key, wrong type or out-of-range value,
            as ``"<source>: <key.path>: expected <what>, got <value>"``.
    """
    chk = _Checker(source)
    doc = chk.mapping(data, "", _TOP_KEYS)
    name = chk.string(doc["name"], "name")
    if not isinstance(doc["description"], str):
        raise chk.fail("description", "a string", doc["description"])
    cams_raw = chk.mapping(doc["cameras"], "cameras", CAMERA_NAMES)
    cameras = {n: _camera(chk, cams_raw[n], n) for n in CAMERA_NAMES}
    display = _display(chk, doc["display"])
    return HeadsetCalibration(name, doc["description"], cameras, display, Path(source))


def load_calibration(path: Path | str) -> HeadsetCalibration:
    """Read and strictly validate a headset calibration YAML.

    Raises:
        CalibrationError: the file is missing or unreadable, is not valid YAML, or does not match
            the schema; the message names the file (and the key path and expectation).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        msg = f"{path}: cannot read calibration file: {getattr(err, 'strerror', None) or err}"
        raise CalibrationError(msg) from err
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        msg = f"{path}: invalid YAML{line}: {problem}"
        raise CalibrationError(msg) from err
    return calibration_from_dict(data, path)


def save_calibration(calibration: HeadsetCalibration, path: Path | str) -> Path:
    """Write a profile as YAML (no comments) that :func:`load_calibration` reads back equal."""
    path = Path(path)
    path.write_text(yaml.safe_dump(calibration.to_dict(), sort_keys=False), encoding="utf-8")
    return path
