"""Face landmarks: one dataclass every stage reads, and interchangeable detector backends.

Enrollment, the VR-Face mesh, gaze and alignment all need the same few facts about a face (where
the eyes, nose and mouth corners are, whether the eyes are open), but the detectors that find them
use different point schemes. :class:`FaceLandmarks` hides the scheme behind named accessors so the
rest of the code never indexes a raw point array, and :data:`BACKENDS` lets a user swap detectors
by name without code changes.

Backends:
    ``mediapipe`` (default): MediaPipe Face Mesh with iris refinement (478 points). Its models ship
    inside the wheel, so it runs offline; it also gives a relative depth per point.
    ``dlib``: dlib's HOG face detector plus the iBUG 68-point shape predictor from the
    ``face-recognition-models`` package (``pip install dlib-bin face-recognition-models``).
    ``face_alignment``: the FAN network of the ``face-alignment`` package. Its weights are not in
    the package; they must already sit in the torch hub cache. This module never downloads them.

Side convention: "right" is the wearer's right, which is the image LEFT of a frontal view.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

import cv2
import numpy as np

from revavatar.errors import BackendUnavailableError

if TYPE_CHECKING:
    from types import TracebackType

__all__ = [
    "BACKENDS",
    "SCHEMES",
    "DlibDetector",
    "EyeLandmarks",
    "FaceAlignmentDetector",
    "FaceLandmarks",
    "LandmarkDetector",
    "MediapipeDetector",
    "create_detector",
    "missing_face_alignment_weights",
]

EYE_SIDES: Final = ("right", "left")


@dataclass(frozen=True)
class _EyeIndex:
    corners: tuple[int, int]  # image-left corner, image-right corner
    upper: tuple[int, ...]  # upper lid, image-left to image-right
    lower: tuple[int, ...]  # lower lid, paired with ``upper``
    iris: int | None  # iris centre, when the scheme has one


@dataclass(frozen=True)
class _Scheme:
    n_points: int
    eyes: dict[str, _EyeIndex]
    nose_tip: int
    mouth_corners: tuple[int, int]  # right (image-left), left (image-right)
    inner_lips: tuple[int, int]  # upper and lower inner lip centre
    chin: int


_MP_EYES: Final = {
    # Face Mesh contours: right eye 33 (outer) .. 133 (inner), left eye 362 (inner) .. 263 (outer).
    # 468 is the iris centre on the image-left eye (wearer's right), checked on the demo clip.
    "right": _EyeIndex((33, 133), (160, 159, 158), (144, 145, 153), 468),
    "left": _EyeIndex((362, 263), (385, 386, 387), (380, 374, 373), 473),
}
_IBUG_EYES: Final = {
    "right": _EyeIndex((36, 39), (37, 38), (41, 40), None),
    "left": _EyeIndex((42, 45), (43, 44), (47, 46), None),
}
_IBUG: Final = _Scheme(68, _IBUG_EYES, 30, (48, 54), (62, 66), 8)

#: point scheme -> index tables; FaceLandmarks.scheme must be one of these keys.
SCHEMES: Final[dict[str, _Scheme]] = {
    "mediapipe478": _Scheme(478, _MP_EYES, 1, (61, 291), (13, 14), 152),
    "mediapipe468": _Scheme(
        468, {s: _EyeIndex(e.corners, e.upper, e.lower, None) for s, e in _MP_EYES.items()},
        1, (61, 291), (13, 14), 152,
    ),
    "dlib68": _IBUG,
    "fan68": _IBUG,
}


@dataclass(frozen=True)
class EyeLandmarks:
    """One eye's landmarks in the pixels of the face they came from.

    Attributes:
        side: "right" (wearer's right, image left) or "left".
        corners: (2, 2) eye corners, image-left corner first (outer corner first for the right
            eye, inner corner first for the left eye), so the pair always runs along image +x.
        upper: (K, 2) upper-lid points, image-left to image-right.
        lower: (K, 2) lower-lid points paired one-to-one with ``upper``.
        iris: (2,) iris centre, or None when the scheme has no iris points.
    """

    side: str
    corners: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    iris: np.ndarray | None

    @property
    def width(self) -> float:
        """Corner-to-corner distance (px); the scale gaze and EAR normalise by."""
        return float(np.linalg.norm(self.corners[1] - self.corners[0]))

    @property
    def corner_midpoint(self) -> np.ndarray:
        """(2,) mid-point of the corners: where the iris sits when looking straight ahead."""
        return self.corners.mean(axis=0)

    @property
    def center(self) -> np.ndarray:
        """(2,) mean of corners and lid points: the eye centre used for alignment.

        The mean of the outline rather than the iris keeps the alignment still when the eye looks
        around, and it is the usual definition for 68-point schemes, so every backend agrees.
        """
        return np.vstack([self.corners, self.upper, self.lower]).mean(axis=0)

    @property
    def aspect_ratio(self) -> float:
        """Eye aspect ratio (Soukupova and Cech 2016): mean lid gap / eye width.

        About 0.25-0.4 for an open eye, below 0.15 for a shut one.
        """
        gaps = np.linalg.norm(self.upper - self.lower, axis=1)
        return float(gaps.mean() / max(self.width, 1e-6))


@dataclass(frozen=True)
class FaceLandmarks:
    """Landmarks of one face in one image.

    Attributes:
        points: (N, 2) float32 image pixels.
        points3d: (N, 3) float32 x, y pixels and relative depth z in the same pixel scale (smaller =
            closer to the camera), or None for 2D-only backends.
        scheme: a key of :data:`SCHEMES` ("mediapipe478", "mediapipe468", "dlib68", "fan68").
        image_size: (width, height) of the image the pixels refer to.
        score: detector confidence, or 1.0 when the backend gives none.
    """

    points: np.ndarray
    points3d: np.ndarray | None
    scheme: str
    image_size: tuple[int, int]
    score: float = 1.0

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            msg = f"unknown landmark scheme {self.scheme!r}; expected one of {', '.join(SCHEMES)}"
            raise ValueError(msg)
        pts = np.asarray(self.points, dtype=np.float32)
        n = SCHEMES[self.scheme].n_points
        if pts.shape != (n, 2):
            msg = f"scheme {self.scheme} needs points of shape ({n}, 2), got {pts.shape}"
            raise ValueError(msg)
        object.__setattr__(self, "points", pts)
        if self.points3d is not None:
            p3 = np.asarray(self.points3d, dtype=np.float32)
            if p3.shape != (n, 3):
                msg = f"scheme {self.scheme} needs points3d of shape ({n}, 3), got {p3.shape}"
                raise ValueError(msg)
            object.__setattr__(self, "points3d", p3)
        object.__setattr__(self, "image_size", (int(self.image_size[0]), int(self.image_size[1])))
        object.__setattr__(self, "score", float(self.score))

    @property
    def has_iris(self) -> bool:
        """Whether the scheme locates the irises (needed for gaze)."""
        return SCHEMES[self.scheme].eyes["right"].iris is not None

    def eye(self, side: str) -> EyeLandmarks:
        """Landmarks of the wearer's ``side`` ("right" = image left, or "left") eye.

        Raises:
            ValueError: ``side`` is neither "right" nor "left".
        """
        if side not in EYE_SIDES:
            msg = f"unknown eye side {side!r}; expected one of {', '.join(EYE_SIDES)}"
            raise ValueError(msg)
        idx = SCHEMES[self.scheme].eyes[side]
        p = self.points
        iris = None if idx.iris is None else p[idx.iris].copy()
        corners, upper, lower = p[list(idx.corners)], p[list(idx.upper)], p[list(idx.lower)]
        return EyeLandmarks(side, corners, upper, lower, iris)

    def key_points(self) -> np.ndarray:
        """(5, 2) float64: right eye centre, left eye centre, nose tip, right and left mouth corner.

        The order matches :meth:`CanonicalLayout.template_points`, which is what alignment fits.
        """
        s = SCHEMES[self.scheme]
        p = self.points.astype(np.float64)
        return np.stack(
            [
                self.eye("right").center.astype(np.float64),
                self.eye("left").center.astype(np.float64),
                p[s.nose_tip],
                p[s.mouth_corners[0]],
                p[s.mouth_corners[1]],
            ]
        )

    def interocular_px(self) -> float:
        """Distance between the two eye centres (px): the face's scale in the image."""
        return float(np.linalg.norm(self.eye("left").center - self.eye("right").center))

    def mouth_opening(self) -> float:
        """Inner-lip gap / mouth width: ~0 for a closed mouth, > 0.2 for an open one."""
        s = SCHEMES[self.scheme]
        p = self.points
        gap = float(np.linalg.norm(p[s.inner_lips[0]] - p[s.inner_lips[1]]))
        width = float(np.linalg.norm(p[s.mouth_corners[1]] - p[s.mouth_corners[0]]))
        return gap / max(width, 1e-6)

    def transformed(
        self, m: np.ndarray, image_size: tuple[int, int] | None = None
    ) -> FaceLandmarks:
        """The same landmarks after the 2x3 affine ``m`` (e.g. into the canonical crop).

        x, y of ``points`` and ``points3d`` are mapped by ``m``; depth z is multiplied by the
        affine's scale (sqrt |det|) so it stays in the new pixel units.

        Args:
            m: (2, 3) affine matrix, source pixels -> destination pixels.
            image_size: (width, height) of the destination image; unchanged when None.
        """
        mat = np.asarray(m, dtype=np.float64)
        if mat.shape != (2, 3):
            msg = f"expected a 2x3 affine matrix, got shape {mat.shape}"
            raise ValueError(msg)
        a, t = mat[:, :2], mat[:, 2]
        pts = self.points.astype(np.float64) @ a.T + t
        p3 = None
        if self.points3d is not None:
            scale = float(np.sqrt(abs(np.linalg.det(a))))
            src3 = self.points3d.astype(np.float64)
            p3 = np.column_stack([src3[:, :2] @ a.T + t, src3[:, 2] * scale])
        size = self.image_size if image_size is None else image_size
        return FaceLandmarks(pts, p3, self.scheme, size, self.score)


# --- detectors -------------------------------------------------------------------------------


@runtime_checkable
class LandmarkDetector(Protocol):
    """Anything that finds the largest face's landmarks in a BGR image."""

    name: str

    def detect(self, image_bgr: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the largest face, or None when there is no face."""
        ...


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Validate a uint8 gray/BGR/BGRA image and return contiguous BGR."""
    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or img.size == 0:
        msg = f"expected a uint8 (H, W) or (H, W, 3) image, got {img.dtype} {img.shape}"
        raise ValueError(msg)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if img.shape[2] == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    if img.shape[2] != 3:
        msg = f"expected 1, 3 or 4 channels, got {img.shape[2]}"
        raise ValueError(msg)
    return np.ascontiguousarray(img)


class _Closable:
    """Context-manager plumbing shared by the backends."""

    def close(self) -> None:
        """Release the backend's native resources (idempotent)."""

    def __enter__(self) -> _Closable:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _quiet_native_logs() -> None:
    """Silence glog/TFLite start-up chatter; must run before mediapipe is first imported."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@contextlib.contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send file descriptor 2 to /dev/null for the duration (C++ logs bypass Python's sys.stderr).

    MediaPipe 0.10 logs through absl before any log initialisation, so the environment variables
    above do not reach its "Created TensorFlow Lite XNNPACK delegate" and feedback-manager warnings
    on the first frame. Only the graph's start-up and the frames up to the first face run under
    this; Python exceptions still propagate. Set REVAVATAR_MEDIAPIPE_LOGS=1 to see the native logs.
    """
    if os.environ.get("REVAVATAR_MEDIAPIPE_LOGS") == "1":
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr descriptor at all
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class MediapipeDetector(_Closable):
    """MediaPipe Face Mesh, 478 points with irises; reusable across frames, thread-safe.

    Args:
        static_image: True runs face detection on every call (independent photos); False tracks
            the face from frame to frame, which is faster and steadier on video.
        min_detection_confidence: face detector threshold in [0, 1].
        min_tracking_confidence: tracking threshold in [0, 1] (video mode).
    """

    name = "mediapipe"

    def __init__(
        self, *, static_image: bool = True, min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
    ) -> None:
        _quiet_native_logs()
        try:
            from mediapipe.python.solutions import face_mesh  # noqa: PLC0415 - heavy, optional
        except ImportError as err:
            msg = f"mediapipe backend unavailable ({err}); install it with `pip install mediapipe`"
            raise BackendUnavailableError(msg) from err
        self.static_image = static_image
        with _native_stderr_silenced():  # the graph loads its TFLite models here
            self._mesh: Any = face_mesh.FaceMesh(
                static_image_mode=static_image, max_num_faces=1, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence,
            )
            # One blank frame waits until every calculator has opened (models loaded), so their
            # start-up logs fall inside this block rather than on another thread later.
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        self._lock = threading.Lock()
        self._warm = False

    def detect(self, image_bgr: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the (single, most prominent) face, or None."""
        bgr = _as_bgr(image_bgr)
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        with self._lock:
            if self._mesh is None:
                msg = "detector is closed"
                raise RuntimeError(msg)
            if self._warm:
                result = self._mesh.process(rgb)
            else:  # the first face starts the landmark subgraph and its native warnings
                with _native_stderr_silenced():
                    result = self._mesh.process(rgb)
                self._warm = bool(result.multi_face_landmarks)
        if not result.multi_face_landmarks:
            return None
        h, w = bgr.shape[:2]
        lms = result.multi_face_landmarks[0].landmark
        raw = np.array([(p.x, p.y, p.z) for p in lms], dtype=np.float64)
        p3 = raw * np.array([w, h, w])
        scheme = "mediapipe478" if len(raw) == 478 else "mediapipe468"
        return FaceLandmarks(p3[:, :2], p3, scheme, (w, h), 1.0)

    def close(self) -> None:
        """Free the MediaPipe graph (idempotent)."""
        with self._lock:  # never free the graph under a running detect()
            mesh, self._mesh = self._mesh, None
        if mesh is not None:
            mesh.close()

    def __del__(self) -> None:
        # at interpreter shutdown mediapipe may already be torn down; nothing is left to report
        with contextlib.suppress(Exception):
            self.close()


def _package_dir(package: str) -> Path | None:
    """Folder of an installed package without importing it (some run broken top-level code)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


class DlibDetector(_Closable):
    """dlib HOG face detector + iBUG 68-point predictor (``face-recognition-models``).

    Args:
        static_image: accepted for interface parity; dlib detects every frame anew.
        upsample: image pyramid up-sampling for the detector (1 finds faces down to ~40 px).
        predictor_path: a ``shape_predictor_68_face_landmarks.dat``; found in the
            ``face_recognition_models`` package when None.
    """

    name = "dlib"
    _INSTALL: Final = "pip install dlib-bin face-recognition-models"

    def __init__(
        self, *, static_image: bool = True, upsample: int = 1, predictor_path: Path | None = None
    ) -> None:
        self.static_image = static_image
        try:
            import dlib  # noqa: PLC0415 - optional backend
        except ImportError as err:
            msg = f"dlib backend needs the dlib package ({err}); install it with `{self._INSTALL}`"
            raise BackendUnavailableError(msg) from err
        if predictor_path is None:
            pkg = _package_dir("face_recognition_models")
            if pkg is None:
                msg = f"dlib backend needs its 68-point predictor; run `{self._INSTALL}`"
                raise BackendUnavailableError(msg)
            predictor_path = pkg / "models" / "shape_predictor_68_face_landmarks.dat"
        if not Path(predictor_path).is_file():
            msg = f"dlib shape predictor not found at {predictor_path}"
            raise BackendUnavailableError(msg)
        self.upsample = upsample
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(str(predictor_path))
        self._lock = threading.Lock()

    def detect(self, image_bgr: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the largest detected face, or None."""
        bgr = _as_bgr(image_bgr)
        gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        with self._lock:
            rects, scores, _kinds = self._detector.run(gray, self.upsample, 0.0)
            if len(rects) == 0:
                return None
            best = max(range(len(rects)), key=lambda i: rects[i].area())
            shape = self._predictor(gray, rects[best])
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float32)
        h, w = gray.shape
        return FaceLandmarks(pts, None, "dlib68", (w, h), float(scores[best]))


class FaceAlignmentDetector(_Closable):
    """FAN 68-point landmarks of the ``face-alignment`` package, from locally cached weights only.

    ``face-alignment`` fetches its weights into the torch hub cache on first use; on an offline
    machine that hangs or fails deep inside torch. This wrapper checks the package and the exact
    weight files it would fetch first and raises :class:`BackendUnavailableError` naming what is
    missing and where to put it, so it never starts a download.

    Args:
        static_image: accepted for interface parity; FAN detects every frame anew.
        device: torch device string.
    """

    name = "face_alignment"

    def __init__(self, *, static_image: bool = True, device: str = "cpu") -> None:
        self.static_image = static_image
        if importlib.util.find_spec("face_alignment") is None:
            msg = (
                "face_alignment backend needs the face-alignment package, which is not installed; "
                "install it with `pip install face-alignment` and place its weights in the torch "
                "hub cache, or use --landmarks mediapipe"
            )
            raise BackendUnavailableError(msg)
        missing = missing_face_alignment_weights()
        if missing:
            ckpt = _torch_checkpoint_dir()
            msg = (
                f"face_alignment weights not in the torch hub cache {ckpt}: missing "
                f"{', '.join(missing)}; copy them there from a machine with internet (they are "
                "fetched by face-alignment on first use) or set TORCH_HOME; this product never "
                "downloads at run time"
            )
            raise BackendUnavailableError(msg)
        fa = importlib.import_module("face_alignment")
        kind = getattr(fa.LandmarksType, "TWO_D", None) or fa.LandmarksType._2D
        self._fa = fa.FaceAlignment(kind, device=device, face_detector="sfd")
        self._lock = threading.Lock()

    def detect(self, image_bgr: np.ndarray) -> FaceLandmarks | None:
        """Landmarks of the largest detected face, or None."""
        bgr = _as_bgr(image_bgr)
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        with self._lock:
            faces = self._fa.get_landmarks_from_image(rgb)
        if not faces:
            return None
        pts = max(faces, key=lambda f: float(np.ptp(f[:, 0]) * np.ptp(f[:, 1])))
        h, w = bgr.shape[:2]
        return FaceLandmarks(np.asarray(pts)[:, :2], None, "fan68", (w, h), 1.0)


def _torch_checkpoint_dir() -> Path:
    """Where torch.hub (and so face-alignment) caches downloaded weights."""
    import torch  # noqa: PLC0415 - only this backend needs torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def missing_face_alignment_weights() -> list[str]:
    """File names of the face-alignment weights (2D FAN + S3FD detector) not in the hub cache.

    The names come from the installed package's own URL tables, so they match what it would fetch
    for this torch version. An unknown package layout counts every weight as missing: better to
    refuse than to let the package start a download.
    """
    import torch  # noqa: PLC0415

    try:
        api = importlib.import_module("face_alignment.api")
        sfd = importlib.import_module("face_alignment.detection.sfd.sfd_detector")
    except ImportError as err:
        return [f"(face_alignment layout not recognised: {err})"]
    ver = torch.__version__.split("+")[0]
    ver = ver.rsplit(".", 2)[0] if "dev" in ver else ver.rsplit(".", 1)[0]
    table = getattr(api, "models_urls", {})
    urls = table.get(ver) if isinstance(table.get(ver), dict) else None
    urls = urls or getattr(api, "default_model_urls", None) or table
    needed = [urls.get("2DFAN-4"), getattr(sfd, "models_urls", {}).get("s3fd")]
    if not all(isinstance(u, str) for u in needed):
        return ["(face_alignment weight URLs not found in the installed package)"]
    ckpt = _torch_checkpoint_dir()
    names = [str(u).rsplit("/", 1)[-1] for u in needed]
    return [n for n in names if not (ckpt / n).is_file()]


#: backend name -> constructor; every constructor takes ``static_image`` as a keyword.
BACKENDS: Final[dict[str, Callable[..., LandmarkDetector]]] = {
    "mediapipe": MediapipeDetector,
    "dlib": DlibDetector,
    "face_alignment": FaceAlignmentDetector,
}


def create_detector(name: str = "mediapipe", *, static_image: bool = True) -> LandmarkDetector:
    """Build the landmark backend ``name``.

    Args:
        name: a key of :data:`BACKENDS`.
        static_image: True for independent photos; False lets a tracking backend follow a video.

    Raises:
        ValueError: unknown backend name (the message lists the valid ones).
        BackendUnavailableError: the backend's package or weights are not installed.
    """
    try:
        factory = BACKENDS[name]
    except KeyError:
        msg = f"unknown landmark backend {name!r}; expected one of {', '.join(BACKENDS)}"
        raise ValueError(msg) from None
    return factory(static_image=static_image)
