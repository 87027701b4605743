"""Enrollment: turn one selfie (the DP) into the wearer's Profile, refusing unfit ones.

Everything downstream pastes headset crops onto the DP, so a DP with shut eyes, a turned head, blur
or darkness spoils every restored frame for the whole session. The checks here measure those
faults and name the figure and the limit when they refuse, so the user knows what to fix.

A profile is biometric data: it is written owner-only (directory 0700, files 0600).
"""

from __future__ import annotations

import heapq
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from revavatar.core.canonical import CanonicalLayout
from revavatar.core.gaze import estimate_head_pose
from revavatar.core.landmarks import FaceLandmarks, LandmarkDetector
from revavatar.errors import EnrollmentError, InputError, NoFaceError, RevAvatarError

__all__ = [
    "PROFILE_FILES",
    "SHAPE_FRAMES",
    "Profile",
    "QualityChecks",
    "QualityReport",
    "assess_image",
    "enroll_image",
    "enroll_video",
    "pick_enrollment_frame",
]

#: frames a clip's enrollment takes the face's 3D shape from (:func:`pick_enrollment_frame`)
SHAPE_FRAMES: Final = 8
PROFILE_FILES: Final = ("dp.png", "landmarks.npz", "mesh.npy", "profile.json")
_FORMAT: Final = "revavatar-profile"
_VERSION: Final = 1
#: inner face box of the aligned crop (fractions of size): skin and features, little background
_FACE_BOX: Final = (0.20, 0.24, 0.80, 0.92)
_DEFAULT_LAYOUT: Final = CanonicalLayout()


@dataclass(frozen=True)
class QualityChecks:
    """Limits a DP must meet. Defaults suit a phone or webcam selfie at arm's length.

    Attributes:
        max_yaw_deg: head turn allowed either way, against the line of sight to the camera.
        max_pitch_deg: head tilt allowed up or down.
        min_eye_aspect_ratio: the smaller eye's EAR must reach this (open ~0.25-0.4, shut < 0.15).
        min_sharpness: variance of the Laplacian of the aligned face's gray inner box.
        min_brightness: mean gray level (0-255) of the aligned inner face box.
        max_dark_fraction: share of inner-box pixels darker than ``dark_level`` allowed.
        dark_level: gray level below which a pixel counts as dark.
        max_bright_fraction: share of inner-box pixels at 250 or more (blown out) allowed.
        min_interocular_px: eye-centre distance in the source image; smaller faces lack detail.
    """

    max_yaw_deg: float = 20.0
    max_pitch_deg: float = 25.0
    min_eye_aspect_ratio: float = 0.18
    min_sharpness: float = 40.0
    min_brightness: float = 50.0
    max_dark_fraction: float = 0.5
    dark_level: int = 40
    max_bright_fraction: float = 0.25
    min_interocular_px: float = 30.0


@dataclass(frozen=True)
class QualityReport:
    """What one image measured, in the units of :class:`QualityChecks`."""

    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    eye_aspect_ratio: dict[str, float]
    sharpness: float
    brightness: float
    dark_fraction: float
    bright_fraction: float
    interocular_px: float
    mouth_opening: float

    def problems(self, checks: QualityChecks) -> list[str]:
        """Every failed check as "<fault> (<measured> <relation> <limit>)", worst-first order.

        Lighting comes first because darkness also degrades the landmarks the other checks use.
        """
        c = checks
        out: list[str] = []
        if self.interocular_px < c.min_interocular_px:
            out.append(
                f"face too small (interocular {self.interocular_px:.1f} px "
                f"< {c.min_interocular_px:.1f} px)"
            )
        if self.brightness < c.min_brightness:
            out.append(f"too dark (mean brightness {self.brightness:.1f} < {c.min_brightness:.1f})")
        elif self.dark_fraction > c.max_dark_fraction:
            out.append(
                f"too dark (dark pixel fraction {self.dark_fraction:.2f} "
                f"> {c.max_dark_fraction:.2f})"
            )
        if self.bright_fraction > c.max_bright_fraction:
            out.append(
                f"overexposed (saturated pixel fraction {self.bright_fraction:.2f} "
                f"> {c.max_bright_fraction:.2f})"
            )
        if self.sharpness < c.min_sharpness:
            out.append(
                f"too blurry (sharpness {self.sharpness:.1f} < {c.min_sharpness:.1f}, "
                "variance of Laplacian)"
            )
        if abs(self.yaw_deg) > c.max_yaw_deg:
            out.append(f"not frontal (head yaw {self.yaw_deg:+.1f} deg, limit {c.max_yaw_deg:.1f})")
        if abs(self.pitch_deg) > c.max_pitch_deg:
            out.append(
                f"not frontal (head pitch {self.pitch_deg:+.1f} deg, limit {c.max_pitch_deg:.1f})"
            )
        ear = min(self.eye_aspect_ratio.values())
        if ear < c.min_eye_aspect_ratio:
            out.append(f"eyes closed (eye aspect ratio {ear:.2f} < {c.min_eye_aspect_ratio:.2f})")
        return out

    def score(self, checks: QualityChecks) -> float:
        """Higher = better DP among frames that pass: open, frontal, sharp eyes, closed mouth.

        Weights: eye openness 1 (saturating at EAR 0.3), frontality 1 (linear in the larger
        angle's share of its limit), sharpness 0.5 (log scale, saturating at 4x the minimum),
        closed mouth 0.5 (zero at opening 0.3). Neutral expression matters because the DP's mouth
        is replaced by the lower-face camera only inside its region.
        """
        ear = min(self.eye_aspect_ratio.values())
        eyes = float(np.clip(ear / 0.3, 0.0, 1.0))
        pose = 1.0 - max(
            abs(self.yaw_deg) / checks.max_yaw_deg, abs(self.pitch_deg) / checks.max_pitch_deg
        )
        ratio = max(self.sharpness, 1e-6) / max(checks.min_sharpness, 1e-6)
        sharp = float(np.clip(math.log(ratio) / math.log(4.0), 0.0, 1.0))
        mouth = 1.0 - float(np.clip(self.mouth_opening / 0.3, 0.0, 1.0))
        return eyes + pose + 0.5 * sharp + 0.5 * mouth

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (rounded)."""
        d = asdict(self)
        return {
            k: ({s: round(float(x), 4) for s, x in v.items()} if isinstance(v, dict)
                else round(float(v), 4))
            for k, v in d.items()
        }


def _measure(
    lm: FaceLandmarks, aligned: np.ndarray, layout: CanonicalLayout, checks: QualityChecks
) -> QualityReport:
    s = layout.size
    x0, y0, x1, y1 = (round(f * s) for f in _FACE_BOX)
    gray = cv2.cvtColor(aligned, cv2.COLOR_BGR2GRAY)[y0:y1, x0:x1]
    # Sharpness is measured at 256 px whatever the layout, so one threshold serves all sizes.
    if s != 256:
        gray = cv2.resize(gray, (round(gray.shape[1] * 256 / s), round(gray.shape[0] * 256 / s)),
                          interpolation=cv2.INTER_AREA)
    sharp = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    pose = estimate_head_pose(lm)
    return QualityReport(
        yaw_deg=pose.yaw_deg,
        pitch_deg=pose.pitch_deg,
        roll_deg=pose.roll_deg,
        eye_aspect_ratio={side: lm.eye(side).aspect_ratio for side in ("left", "right")},
        sharpness=sharp,
        brightness=float(gray.mean()),
        dark_fraction=float((gray < checks.dark_level).mean()),
        bright_fraction=float((gray >= 250).mean()),
        interocular_px=lm.interocular_px(),
        mouth_opening=lm.mouth_opening(),
    )


@dataclass
class Profile:
    """The enrolled wearer: aligned DP, its landmarks and mesh, and how it was made.

    Attributes:
        dp: aligned BGR face (layout_size, layout_size, 3) uint8.
        landmarks: the DP's landmarks in canonical pixels.
        mesh: (V, 3) float32 head-frame mm vertices of the DP's 3D face, or None when no mesh
            builder is available.
        layout_size: canonical layout size (px) the DP is aligned to.
        meta: JSON-serialisable facts: source, backend, quality figures, date, ...
    """

    dp: np.ndarray
    landmarks: FaceLandmarks
    mesh: np.ndarray | None
    layout_size: int
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, directory: str | Path) -> Path:
        """Write the profile owner-only (dir 0700, files 0600); returns the directory.

        Raises:
            InputError: the directory cannot be created or written.
        """
        out = Path(directory)
        try:
            out.mkdir(parents=True, exist_ok=True)
            out.chmod(0o700)
            ok, png = cv2.imencode(".png", self.dp)
            if not ok:  # pragma: no cover - encoding a valid uint8 image does not fail
                msg = "PNG encoding of the DP failed"
                raise InputError(msg)
            lm = self.landmarks
            buf = io.BytesIO()
            np.savez(
                buf, points=lm.points,
                points3d=lm.points3d if lm.points3d is not None else np.zeros((0, 3), np.float32),
                scheme=np.array(lm.scheme), image_size=np.array(lm.image_size, np.int64),
                score=np.array(lm.score, np.float64),
            )
            mesh = self.mesh if self.mesh is not None else np.zeros((0, 3), np.float32)
            mbuf = io.BytesIO()
            np.save(mbuf, np.asarray(mesh, dtype=np.float32))
            doc = {
                "format": _FORMAT, "version": _VERSION, "layout_size": int(self.layout_size),
                "has_mesh": self.mesh is not None, "meta": self.meta,
            }
            text = json.dumps(doc, indent=2, sort_keys=True, default=_json_default)
            blobs = {
                "dp.png": png.tobytes(), "landmarks.npz": buf.getvalue(),
                "mesh.npy": mbuf.getvalue(), "profile.json": text.encode(),
            }
            for name, data in blobs.items():
                _write_private(out / name, data)
        except OSError as err:
            msg = f"cannot write profile to {out}: {err}"
            raise InputError(msg) from err
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Profile:
        """Read a profile written by :meth:`save`.

        Raises:
            InputError: the directory or one of its files is missing, unreadable or malformed
                (the message names which).
        """
        src = Path(directory)
        if not src.is_dir():
            msg = f"profile directory {src} not found"
            raise InputError(msg)
        missing = [n for n in PROFILE_FILES if not (src / n).is_file()]
        if missing:
            msg = f"profile {src} is missing {', '.join(missing)}"
            raise InputError(msg)
        name = "profile.json"
        try:
            doc = json.loads((src / name).read_text())
            if doc.get("format") != _FORMAT:
                msg = f"profile {src / name}: not a RevAvatar profile"
                raise InputError(msg)
            size = int(doc["layout_size"])
            name = "dp.png"
            dp = cv2.imread(str(src / name), cv2.IMREAD_COLOR)
            if dp is None or dp.shape != (size, size, 3):
                got = None if dp is None else dp.shape
                msg = f"profile {src / name}: expected a {size}x{size} BGR image, got {got}"
                raise InputError(msg)
            name = "landmarks.npz"
            with np.load(src / name, allow_pickle=False) as z:
                p3 = z["points3d"]
                lm = FaceLandmarks(
                    z["points"], p3 if len(p3) else None, str(z["scheme"]),
                    (int(z["image_size"][0]), int(z["image_size"][1])), float(z["score"]),
                )
            name = "mesh.npy"
            mesh = np.load(src / name, allow_pickle=False)
        except InputError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as err:
            msg = f"profile {src / name} is unreadable: {err}"
            raise InputError(msg) from err
        has_mesh = bool(doc.get("has_mesh", len(mesh) > 0))
        return cls(dp, lm, mesh.astype(np.float32) if has_mesh else None, size,
                   dict(doc.get("meta", {})))


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` created 0600 (and forced to 0600 if it already existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    path.chmod(0o600)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    msg = f"not JSON-serialisable in profile meta: {type(obj).__name__}"
    raise TypeError(msg)


def _build_mesh(lms: Sequence[FaceLandmarks],
                layout: CanonicalLayout) -> tuple[np.ndarray | None, str]:
    """The enrolled face's head-frame mesh via revavatar.vrface.mesh, when that module is there:
    one frame's, or the mean shape of several frames' (``vrface.mesh.mean_shape``)."""
    try:
        from revavatar.vrface.mesh import FaceMesh, mean_shape  # noqa: PLC0415 - optional module
    except ImportError as err:
        return None, f"unavailable ({err})"
    try:
        meshes = [FaceMesh.from_landmarks(lm, layout) for lm in lms]
    except (ValueError, RevAvatarError) as err:
        return None, f"not built ({err})"
    if len(meshes) == 1:
        return np.asarray(meshes[0].vertices, dtype=np.float32), "vrface.mesh.FaceMesh"
    return (np.asarray(mean_shape(meshes).vertices, dtype=np.float32),
            f"vrface.mesh.mean_shape of {len(meshes)} frames")


@dataclass(frozen=True)
class _Assessment:
    landmarks: FaceLandmarks
    aligned: np.ndarray
    matrix: np.ndarray
    report: QualityReport


def assess_image(
    image_bgr: np.ndarray, detector: LandmarkDetector, layout: CanonicalLayout,
    checks: QualityChecks = QualityChecks(),
) -> tuple[FaceLandmarks, QualityReport] | None:
    """Landmarks and quality figures of one image, or None without a face.

    Never raises on quality: callers that rank frames (or report figures) decide themselves.
    """
    a = _assess(image_bgr, detector, layout, checks)
    return None if a is None else (a.landmarks, a.report)


def _assess(
    image: np.ndarray, detector: LandmarkDetector, layout: CanonicalLayout, checks: QualityChecks
) -> _Assessment | None:
    lm = detector.detect(image)
    if lm is None:
        return None
    aligned, m = layout.align_face(image, lm)
    return _Assessment(lm, aligned, m, _measure(lm, aligned, layout, checks))


def _profile(
    a: _Assessment, detector: LandmarkDetector, layout: CanonicalLayout, source: str,
    extra: dict[str, Any] | None = None, shape_from: Sequence[FaceLandmarks] = (),
) -> Profile:
    mesh, mesh_note = _build_mesh(shape_from or [a.landmarks], layout)
    meta: dict[str, Any] = {
        "source": source,
        "backend": getattr(detector, "name", type(detector).__name__),
        "scheme": a.landmarks.scheme,
        "image_size": list(a.landmarks.image_size),
        "layout_size": layout.size,
        "alignment_matrix": np.round(a.matrix, 6).tolist(),
        "quality": a.report.as_dict(),
        "mesh": mesh_note,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    meta.update(extra or {})
    canon = a.landmarks.transformed(a.matrix, (layout.size, layout.size))
    return Profile(a.aligned, canon, mesh, layout.size, meta)


def enroll_image(
    image_bgr: np.ndarray, detector: LandmarkDetector,
    layout: CanonicalLayout = _DEFAULT_LAYOUT,
    checks: QualityChecks = QualityChecks(),
    *, source: str = "image",
) -> Profile:
    """Check one DP image and build the Profile from it.

    Args:
        image_bgr: uint8 BGR selfie.
        detector: landmark backend (see :func:`revavatar.core.landmarks.create_detector`).
        layout: canonical layout to align to.
        checks: quality limits.
        source: name of the image for messages and meta (e.g. its file name).

    Raises:
        NoFaceError: no face in the image.
        EnrollmentError: the face fails a check; the message lists each failure with the measured
            value and the limit, e.g. "eyes closed (eye aspect ratio 0.12 < 0.18)".
    """
    a = _assess(image_bgr, detector, layout, checks)
    if a is None:
        msg = f"no face found in {source}"
        raise NoFaceError(msg)
    problems = a.report.problems(checks)
    if problems:
        msg = f"{source} is unfit for enrollment: {'; '.join(problems)}"
        raise EnrollmentError(msg)
    return _profile(a, detector, layout, source)


def pick_enrollment_frame(
    frames: Iterable[np.ndarray], detector: LandmarkDetector,
    layout: CanonicalLayout = _DEFAULT_LAYOUT,
    checks: QualityChecks = QualityChecks(),
    *, source: str = "clip", stride: int = 1, shape_frames: int = 1,
) -> tuple[int, Profile]:
    """The best DP among ``frames``: the highest :meth:`QualityReport.score` of those that pass.

    The DP image is one frame, but its 3D shape can come from several: Face Mesh guesses depth
    anew in every frame, and with ``shape_frames`` > 1 the profile's mesh is the mean shape of
    the ``shape_frames`` best passing frames (``vrface.mesh.mean_shape``), which the ``surface``
    rectification and the learned aligners reading through it follow more closely (on VR-Face's
    test eyes the ``surface`` gaze error falls from 1.59 / 1.75 to 1.35 / 1.67 deg with 8 frames,
    reports/alignment.md).

    Args:
        frames: BGR frames (any iterable, consumed once).
        detector: landmark backend; a static-image one judges each frame on its own.
        layout: canonical layout to align to.
        checks: quality limits every candidate must pass.
        source: clip name for messages and meta.
        stride: assess every ``stride``-th frame only (the index returned counts all frames).
        shape_frames: how many of the best passing frames the mesh is the mean of (fewer if
            fewer pass; the frames' indices go into the profile's meta as ``shape_frames``).

    Returns:
        (index of the chosen frame in ``frames``, its Profile).

    Raises:
        NoFaceError: no assessed frame has a face.
        EnrollmentError: faces were found but none passes; names the best frame's failures.
    """
    if stride < 1 or shape_frames < 1:
        msg = f"stride and shape_frames must be >= 1, got {stride} and {shape_frames}"
        raise ValueError(msg)
    best: tuple[float, int, _Assessment] | None = None
    shapes: list[tuple[float, int, FaceLandmarks]] = []  # min-heap of the best passing frames
    best_failed: tuple[float, int, list[str]] | None = None
    n = 0
    for i, frame in enumerate(frames):
        n = i + 1
        if i % stride:
            continue
        a = _assess(frame, detector, layout, checks)
        if a is None:
            continue
        score = a.report.score(checks)
        problems = a.report.problems(checks)
        if problems:
            if best_failed is None or score > best_failed[0]:
                best_failed = (score, i, problems)
        else:
            heapq.heappush(shapes, (score, -i, a.landmarks))  # ties: the earlier frame stays
            if len(shapes) > shape_frames:
                heapq.heappop(shapes)
            if best is None or score > best[0]:
                best = (score, i, a)
    if best is None:
        if best_failed is None:
            msg = f"no face found in any of the {n} frames of {source}"
            raise NoFaceError(msg)
        _, i, problems = best_failed
        msg = (f"no frame of {source} is fit for enrollment; best was frame {i}: "
               f"{'; '.join(problems)}")
        raise EnrollmentError(msg)
    score, index, a = best
    extra: dict[str, Any] = {"frame_index": index, "frames_seen": n,
                             "frame_score": round(score, 4)}
    shape_from: list[FaceLandmarks] = []
    if shape_frames > 1:
        ranked = sorted(shapes, reverse=True)
        extra["shape_frames"] = [-k for _, k, _ in ranked]
        shape_from = [lm for _, _, lm in ranked]
    return index, _profile(a, detector, layout, source, extra, shape_from)


def enroll_video(
    path: str | Path, detector: LandmarkDetector,
    layout: CanonicalLayout = _DEFAULT_LAYOUT,
    checks: QualityChecks = QualityChecks(),
    *, stride: int = 1, max_frames: int | None = None, shape_frames: int = 1,
) -> Profile:
    """Enroll from a video file by picking its best frame (see :func:`pick_enrollment_frame`,
    also for ``shape_frames``).

    Raises:
        InputError: the file cannot be opened or decoded.
        NoFaceError, EnrollmentError: as :func:`pick_enrollment_frame`.
    """
    video = Path(path)
    cap = cv2.VideoCapture(str(video))
    if not video.is_file() or not cap.isOpened():
        cap.release()
        msg = f"cannot open video {video}"
        raise InputError(msg)

    def _frames() -> Iterable[np.ndarray]:
        count = 0
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok:
                return
            count += 1
            yield frame

    try:
        frames = _frames()
        first = next(iter(frames), None)
        if first is None:
            msg = f"video {video} has no decodable frame"
            raise InputError(msg)
        _, profile = pick_enrollment_frame(
            _chain(first, frames), detector, layout, checks, source=video.name, stride=stride,
            shape_frames=shape_frames,
        )
    finally:
        cap.release()
    return profile


def _chain(first: np.ndarray, rest: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    yield first
    yield from rest
