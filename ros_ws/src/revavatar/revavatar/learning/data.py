"""VR-Face data for the learned stages: the build index, image I/O, tensors, alignment pairs.

A VR-Face build (``revavatar vrface build``) is a folder with ``index.json`` (one entry per
sample, paths relative to the build) and ``meta.json`` (config and summary). The learned aligners
and restorers read the same build, so the pieces that turn it into tensors live here once:
:class:`VRFaceIndex` validates a build and resolves paths, :func:`to_tensor` / :func:`to_image`
fix one tensor convention, and :class:`AlignmentPairs` yields (headset view, frontal crop) pairs
for one region.

Tensor convention: float32 (C, H, W) in [-1, 1], channels in **BGR** order (the order of every
image inside the cores; :mod:`revavatar.learning.lpips` wants RGB, so flip with
``x.flip(-3)`` before it) or one channel for gray images.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from revavatar.core.canonical import EYE_SIDES
from revavatar.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = [
    "INPUT_MODES",
    "PATH_FIELDS",
    "SPLITS",
    "AlignmentPairs",
    "MirroredEyes",
    "ReferenceSurfaces",
    "VRFaceIndex",
    "enrollment_frames",
    "focus_mask",
    "read_image",
    "to_image",
    "to_tensor",
    "write_toy_build",
]

#: identity-disjoint splits of a build
SPLITS: Final = ("train", "val", "test")
#: index-entry fields holding a path relative to the build root
PATH_FIELDS: Final = ("gt", "reference", "left_eye", "right_eye", "lower_face", "gt_left_eye",
                      "gt_right_eye", "gt_lower_face", "landmarks")
#: how AlignmentPairs turns a raw headset frame into the model input (see AlignmentPairs)
INPUT_MODES: Final = ("resize", "rectified", "surface")
#: how far (crop px) the focus mask reaches beyond the lid landmarks: lashes and lid edges
_FOCUS_MARGIN_PX: Final = 6


def focus_mask(landmarks: np.ndarray, region: Any, side: str | None) -> np.ndarray:
    """uint8 (h, w) mask at ``region.crop_size``: 255 on the eye opening of ``side``, soft edge.

    Gaze is read from a few hundred pixels (iris, lids, corners) of a crop of thousands, so a
    reconstruction loss averaged over the crop barely sees a misplaced iris; this mask lets the
    aligner's loss weight those pixels more. ``landmarks`` are the sample's canonical Face Mesh
    points (478, 2); ``side`` None (a region without an eye) or all-zero landmarks (a toy build)
    give an empty mask.
    """
    from revavatar.core.landmarks import SCHEMES  # noqa: PLC0415

    w, h = region.crop_size
    mask = np.zeros((h, w), np.uint8)
    pts = np.asarray(landmarks, dtype=np.float64)
    if side is None or len(pts) < 478 or not np.any(pts):
        return mask
    eye = SCHEMES["mediapipe478"].eyes[side]
    crop = region.canonical_to_crop(pts[[*eye.corners, *eye.upper, *eye.lower]])
    cv2.fillConvexPoly(mask, cv2.convexHull(np.rint(crop).astype(np.int32)), 255)
    k = 2 * _FOCUS_MARGIN_PX + 1
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return cv2.GaussianBlur(mask, (0, 0), _FOCUS_MARGIN_PX / 2)


class VRFaceIndex:
    """A validated VR-Face build: its samples with absolute paths, per split.

    Args:
        root: the build folder (``out`` of ``vrface build``).

    Raises:
        InputError: ``index.json`` or ``meta.json`` missing or unreadable, or the build is
            incomplete (``meta.json`` summary says so, or the index has fewer samples than
            planned), so training never silently runs on half a data set.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        try:
            self.meta: dict[str, Any] = json.loads((self.root / "meta.json").read_text())
            entries = json.loads((self.root / "index.json").read_text())
        except FileNotFoundError as err:
            msg = f"{self.root} is not a VR-Face build: {Path(err.filename).name} is missing"
            raise InputError(msg) from err
        except (OSError, ValueError) as err:
            msg = f"{self.root}: unreadable VR-Face index ({err})"
            raise InputError(msg) from err
        summary = self.meta.get("summary", {})
        planned = int(self.meta.get("config", {}).get("samples", len(entries)))
        if not summary.get("complete", False) or len(entries) < planned:
            msg = (f"{self.root}: incomplete VR-Face build ({len(entries)} of {planned} samples); "
                   "run `revavatar vrface build` again with the same --out to finish it")
            raise InputError(msg)
        self.entries: list[dict[str, Any]] = [self._absolute(e) for e in entries]

    def _absolute(self, entry: dict[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        for name in PATH_FIELDS:
            if name in out:
                out[name] = str(self.root / out[name])
        return out

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def headset(self) -> Path:
        """The headset calibration YAML the build was rendered with (as recorded in meta.json)."""
        return Path(self.meta["config"]["headset"])

    def calibration(self) -> Any:
        """The loaded :attr:`headset` calibration. A relative path is tried as given, then from
        the build, the project root and the package (builds record the path they were given).

        Raises:
            CalibrationError: the file is missing or invalid.
        """
        from revavatar.core.calibration import load_calibration  # noqa: PLC0415

        path = self.headset
        here = Path(__file__).resolve()
        cands = [path, self.root / path, here.parents[5] / path, here.parents[2] / path]
        return load_calibration(next((c for c in cands if c.is_file()), path))

    @property
    def layout_size(self) -> int:
        """Canonical layout size (px) of the build's ground truth."""
        return int(self.meta["config"].get("layout_size", 256))

    def samples(self, split: str | None = None) -> list[dict[str, Any]]:
        """Index entries (copies, absolute paths) of ``split``, or of all splits when None.

        Raises:
            ValueError: ``split`` is not one of :data:`SPLITS`.
        """
        if split is None:
            return [dict(e) for e in self.entries]
        if split not in SPLITS:
            msg = f"unknown split {split!r}; expected one of {', '.join(SPLITS)}"
            raise ValueError(msg)
        return [dict(e) for e in self.entries if e["split"] == split]


def read_image(path: str | Path, gray: bool = False) -> np.ndarray:
    """Read a PNG/JPEG as uint8 BGR (H, W, 3), or gray (H, W) when ``gray`` is True.

    A gray file read without ``gray`` comes back as 3 equal channels (cv2's default), so callers
    always get the layout they asked for.

    Raises:
        InputError: the file is missing or does not decode.
    """
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    img = cv2.imread(str(path), flag)
    if img is None:
        msg = f"cannot read image {path}"
        raise InputError(msg)
    return img


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 gray (H, W) or BGR (H, W, C) image -> float32 (C, H, W) tensor in [-1, 1].

    Raises:
        ValueError: not a uint8 2D or 3D array.
    """
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        msg = f"to_tensor expects a uint8 (H, W) or (H, W, C) image, got {arr.dtype} {arr.shape}"
        raise ValueError(msg)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).float()
    return t / 127.5 - 1.0


def to_image(tensor: torch.Tensor | np.ndarray) -> np.ndarray:
    """(C, H, W) or (1, C, H, W) tensor in [-1, 1] -> uint8 (H, W, C), or (H, W) when C == 1.

    Values are clipped to [-1, 1] and rounded, the inverse of :func:`to_tensor` on uint8 input.

    Raises:
        ValueError: not a 3D tensor (or a batch of one).
    """
    x = tensor.detach().float().cpu().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(
        tensor, dtype=np.float32)
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3:
        msg = f"to_image expects (C, H, W) or (1, C, H, W), got shape {x.shape}"
        raise ValueError(msg)
    img = np.clip(np.rint((np.clip(x, -1.0, 1.0) + 1.0) * 127.5), 0, 255).astype(np.uint8)
    img = img.transpose(1, 2, 0)
    return img[:, :, 0] if img.shape[2] == 1 else np.ascontiguousarray(img)


def enrollment_frames(index: Any, split: str,
                      frames: int) -> Callable[[dict[str, Any]], list[str]]:
    """Per sample, the reference images an enrollment of ``frames`` frames would have: the
    sample's own reference first, then other reference frames of the same identity in ``split``
    (never the sample's own source frame, whose mesh the truth was rendered from), in a fixed
    order. The product enrolls the shape from several frames of a selfie clip
    (:func:`revavatar.core.enrollment.enroll_video`, ``shape_frames``)."""
    if frames < 1:
        msg = f"an enrollment has at least 1 frame, got {frames}"
        raise ValueError(msg)
    if frames == 1:  # the sample's reference alone: no need to index the split
        return lambda entry: [entry["reference"]]
    pool: dict[str, dict[str, tuple[str, int]]] = {}
    for e in index.samples(split):
        src = e.get("reference_source") or {}
        pool.setdefault(str(e.get("identity", "")), {})[e["reference"]] = (
            str(src.get("file")), int(src.get("frame", -1)))
    most = max((len(v) for v in pool.values()), default=0)
    if most < frames:  # e.g. VR-Face builds draw 8 reference frames per wearer
        warnings.warn(f"the {split} split has at most {most} reference frames per wearer: "
                      f"enrollments of {frames} frames use what there is", stacklevel=2)

    def refs(entry: dict[str, Any]) -> list[str]:
        src = entry.get("source") or {}
        own = (str(src.get("file")), int(src.get("frame", -1)))
        others = [r for r, s in sorted(pool.get(str(entry.get("identity", "")), {}).items())
                  if s != own and r != entry["reference"]]
        return [entry["reference"], *others[:frames - 1]]

    return refs


def wearer_frames(index: Any, split: str, frames: int
                  ) -> Callable[[dict[str, Any]], list[dict[str, Any]]]:
    """Per sample, ``frames`` other samples of the same identity in ``split`` (never the sample
    itself), evenly spread over that identity's samples in index order: the headset frames an
    in-headset enrollment of that many frames would have seen of the wearer (their eye cameras'
    median is the de-occluder's reference, :func:`revavatar.core.deocclusion.eye_reference`).
    A wearer with fewer other samples gives what there is."""
    if frames < 1:
        msg = f"an in-headset enrollment has at least 1 frame, got {frames}"
        raise ValueError(msg)
    pool: dict[str, list[dict[str, Any]]] = {}
    for e in index.samples(split):
        pool.setdefault(str(e.get("identity", "")), []).append(e)

    def others(entry: dict[str, Any]) -> list[dict[str, Any]]:
        rest = [e for e in pool.get(str(entry.get("identity", "")), [])
                if e["index"] != entry["index"]]
        if len(rest) <= frames:
            return rest
        return [rest[int(i)] for i in np.linspace(0, len(rest) - 1, frames)]

    return others


class ReferenceSurfaces:
    """Per sample, rectification onto the sample's enrollment face (``input_mode="surface"``).

    A VR-Face sample's ``reference`` is an aligned frame of the same person, the DP the product
    would enroll; its Face Mesh lifted to a mesh, as enrollment does, gives the face surface
    (:class:`revavatar.core.alignment.SurfaceAligner`), with the selfie's head turn taken out
    (:func:`revavatar.vrface.renderer.enrolled_depth`). Several references (a sequence of paths)
    give the mean shape of their meshes (:func:`revavatar.vrface.mesh.mean_shape`), as an
    enrollment from several frames does. One detection per reference image, one remap grid per
    (references, region).

    Args:
        layout: canonical layout of the build.
        detector: a static-image Face Mesh detector (made here when None).
    """

    def __init__(self, layout: Any, detector: Any = None) -> None:
        self.layout, self._det = layout, detector
        self._mesh: dict[str, Any] = {}
        self._depth: dict[tuple[str, ...], np.ndarray | None] = {}
        self._grids: dict[tuple[tuple[str, ...], str], Any] = {}

    def _face(self, reference: str) -> Any:
        """The reference's mesh (:class:`revavatar.vrface.mesh.FaceMesh`), None without a face."""
        if reference not in self._mesh:
            from revavatar.vrface.mesh import FaceMesh  # noqa: PLC0415

            if self._det is None:
                from revavatar.core.landmarks import create_detector  # noqa: PLC0415

                self._det = create_detector("mediapipe", static_image=True)
            lm = self._det.detect(read_image(reference))
            self._mesh[reference] = None if lm is None else FaceMesh.from_landmarks(lm,
                                                                                    self.layout)
        return self._mesh[reference]

    def depth(self, reference: str | Sequence[str]) -> np.ndarray | None:
        """Canonical depth map (mm) of the reference's face (of the mean shape of the references'
        faces that have one), or None when none has a face."""
        refs = _refs_key(reference)
        if refs not in self._depth:
            from revavatar.vrface.mesh import mean_shape  # noqa: PLC0415
            from revavatar.vrface.renderer import enrolled_depth  # noqa: PLC0415

            faces = [m for m in (self._face(r) for r in refs) if m is not None]
            shape = faces[0] if len(faces) == 1 else mean_shape(faces) if faces else None
            self._depth[refs] = None if shape is None else enrolled_depth(shape, self.layout)
        return self._depth[refs]

    def __call__(self, reference: str | Sequence[str], camera: Any, region: str) -> Any:
        """The SurfaceAligner of ``reference`` (one path, or several for their mean shape) for
        ``region``'s camera, or None (no face)."""
        from revavatar.core.alignment import SurfaceAligner  # noqa: PLC0415

        depth = self.depth(reference)
        if depth is None:
            return None
        key = (_refs_key(reference), region)
        if key not in self._grids:
            self._grids[key] = SurfaceAligner(camera, self.layout.region(region), self.layout,
                                              depth)
        return self._grids[key]


def _refs_key(reference: str | Sequence[str]) -> tuple[str, ...]:
    """Cache key of one reference or several (a mean shape does not depend on their order, so
    the samples of one person that share their frames share one depth map and grid)."""
    return (reference,) if isinstance(reference, str) else tuple(sorted(reference))


def _stack(items: list[dict[str, Any]], reference: bool) -> dict[str, torch.Tensor]:
    """A batch of alignment items: their tensors stacked (N, ...) key by key."""
    keys = ("view", "target", "focus", "gaze", *(("reference",) if reference else ()))
    return {k: torch.stack([it[k] for it in items]) for k in keys}


class AlignmentPairs(Dataset):
    """(headset view, frontal ground-truth crop) pairs of one region, for the learned aligners.

    ``view``: the region's headset camera frame, brought to the region's crop size (w, h) as the
    model input. ``input_mode="resize"`` (default) just resizes the raw frame (INTER_AREA);
    ``"rectified"`` applies the calibrated homography rectification of
    :class:`revavatar.core.alignment.HomographyAligner` (the build's headset YAML), so a model
    only has to learn what the plane approximation gets wrong (parallax, lens effects, IR);
    ``"surface"`` rectifies onto the sample's enrollment face instead of a plane
    (:class:`ReferenceSurfaces`), as the product can once the wearer is enrolled; a sample whose
    reference shows no face falls back to the plane.
    ``target``: the ground-truth crop of the aligned true face. The eye cameras are infrared, so
    for those regions (gray views) the target is converted to gray too (BT.601 luma): there is no
    colour to recover from an IR frame, and the restorer takes colour from the DP. Both tensors
    follow :func:`to_tensor` ([-1, 1], (1|3, H, W), BGR).

    ``reference=True`` (for aligners conditioned on the enrolled wearer) adds the sample's DP
    crop of the region as item ``reference`` and fills the view's unseen pixels from it
    (:func:`revavatar.core.alignment.enrollment_input`); it needs a rectifying input mode, whose
    valid mask says which pixels the camera sees.

    Items: ``dict(view, target, focus, gaze, identity, index[, reference])``: ``focus`` is the
    (1, H, W) float32 eye-opening weight in [0, 1] of :func:`focus_mask` (zeros for
    ``lower_face``); ``gaze`` is the (2,) float32 (yaw, pitch) degrees of this eye (mean of both
    eyes for ``lower_face``) from the build's landmarks; ``identity`` a str; ``index`` the
    build's sample index; ``reference`` the DP crop (reference pairs only).

    Args:
        root: VR-Face build folder.
        region: ``left_eye`` | ``right_eye`` | ``lower_face``.
        split: ``train`` | ``val`` | ``test``.
        augment: photometric jitter of the view only (gain, gamma, noise), drawn from a generator
            seeded by (seed, index, epoch counter) so runs stay reproducible; geometry is never
            changed because the camera-to-face mapping is what the model learns.
        input_mode: one of :data:`INPUT_MODES`.
        cache: decode every pair once into memory (uint8, ~25 KB per eye sample) instead of per
            access; worth it for training, where each sample is read many times.
        limit: keep only the first ``limit`` samples of the split (None = all).
        seed: seed of the augmentation.
        reference: also yield the enrolled wearer's crop (see above).
        view_tone: the tone of ``view`` (:func:`revavatar.core.alignment.toned_view`; reference
            pairs), after the augmentation, as the product reads it.
        enroll_frames: ``"surface"`` input: the enrolled shape is the mean of this many frames of
            the wearer (:func:`enrollment_frames`), as an enrollment from a selfie clip gives.

    Raises:
        InputError: the build is missing or incomplete, or a file does not decode.
        ValueError: unknown region, split, input mode or view tone, ``reference`` with
            ``"resize"``, or a view tone other than the camera's without ``reference``.
    """

    def __init__(self, root: str | Path, region: str, split: str, augment: bool = False, *,
                 input_mode: str = "resize", cache: bool = False, limit: int | None = None,
                 seed: int = 0, reference: bool = False, view_tone: str = "camera",
                 enroll_frames: int = 1) -> None:
        from revavatar.core.alignment import VIEW_TONES  # noqa: PLC0415
        from revavatar.core.canonical import REGION_NAMES, CanonicalLayout  # noqa: PLC0415

        if region not in REGION_NAMES:
            msg = f"unknown region {region!r}; expected one of {', '.join(REGION_NAMES)}"
            raise ValueError(msg)
        if input_mode not in INPUT_MODES:
            msg = f"unknown input mode {input_mode!r}; expected one of {', '.join(INPUT_MODES)}"
            raise ValueError(msg)
        if reference and input_mode == "resize":
            msg = ("reference inputs fill what the camera cannot see: they need a rectifying "
                   "input mode")
            raise ValueError(msg)
        if view_tone not in VIEW_TONES or (view_tone != "camera" and not reference) or (
                view_tone == "enrollment-skin" and region not in EYE_SIDES):
            msg = (f"view tone {view_tone!r}: expected one of {', '.join(VIEW_TONES)}; a tone "
                   "other than the camera's needs the reference, the skin's an eye region")
            raise ValueError(msg)
        self.reference, self.view_tone = bool(reference), view_tone
        self.index = VRFaceIndex(root)
        self.region, self.split, self.augment = region, split, bool(augment)
        self.input_mode, self.seed = input_mode, int(seed)
        self.entries = self.index.samples(split)[:limit]
        if not self.entries:
            msg = f"{self.index.root}: no {split} samples"
            raise InputError(msg)
        self.enroll_frames = int(enroll_frames)
        self._enrolled = enrollment_frames(self.index, split, self.enroll_frames)
        self.layout = CanonicalLayout(self.index.layout_size)
        self.crop_size = self.layout.region(region).crop_size
        self._eye = self.layout.eye_weight(region) if region in EYE_SIDES else None
        probe = cv2.imread(self.entries[0][region], cv2.IMREAD_UNCHANGED)
        if probe is None:
            msg = f"cannot read image {self.entries[0][region]}"
            raise InputError(msg)
        #: whether the camera is infrared (gray view and gray target)
        self.gray = probe.ndim == 2
        self.channels = 1 if self.gray else 3
        self._aligner = self._make_aligner() if input_mode != "resize" else None
        self._surfaces = ReferenceSurfaces(self.layout) if input_mode == "surface" else None
        self._epoch = 0
        self._cache: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] | None = None
        self._focus: dict[int, np.ndarray] = {}
        if cache:
            self._cache = [self._load(i) for i in range(len(self.entries))]

    def _make_aligner(self) -> Any:
        from revavatar.core.alignment import HomographyAligner  # noqa: PLC0415

        return HomographyAligner(self.index.calibration().cameras[self.region],
                                 self.layout.region(self.region), self.layout)

    def _rectifier(self, entry: dict[str, Any]) -> Any:
        """The input's rectification for a sample (None: plain resize)."""
        if self._surfaces is not None and entry.get("reference") is not None:
            surface = self._surfaces(self._enrolled(entry), self._aligner.camera, self.region)
            if surface is not None:
                return surface
        return self._aligner

    def prepare_view(self, frame: np.ndarray, entry: dict[str, Any] | None = None) -> np.ndarray:
        """Raw camera frame -> model input image at the crop size (per :attr:`input_mode`;
        ``entry``: the sample, whose enrollment ``"surface"`` rectifies onto)."""
        rect = self._rectifier(entry or {})
        if rect is not None:
            return rect.align(frame)
        return cv2.resize(frame, self.crop_size, interpolation=cv2.INTER_AREA)

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        e = self.entries[i]
        view = self.prepare_view(read_image(e[self.region], gray=self.gray), e)
        target = read_image(e[f"gt_{self.region}"], gray=self.gray)
        if target.shape[1::-1] != self.crop_size:
            target = cv2.resize(target, self.crop_size, interpolation=cv2.INTER_AREA)
        ref = None
        if self.reference:
            from revavatar.core.alignment import enrollment_input  # noqa: PLC0415

            seen = self._rectifier(e).valid_mask
            view, ref = enrollment_input(view, seen, read_image(e["reference"]), self.layout,
                                         self.region)
        return view, target, ref

    def focus(self, i: int) -> np.ndarray:
        """The :func:`focus_mask` of item ``i`` (uint8, computed once per item)."""
        if i not in self._focus:
            path = self.entries[i].get("landmarks")
            lm = np.load(path) if path and Path(path).is_file() else np.zeros((0, 2))
            self._focus[i] = focus_mask(lm, self.layout.region(self.region),
                                        EYE_SIDES.get(self.region))
        return self._focus[i]

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draw (call once per pass for fresh jitter)."""
        self._epoch = int(epoch)

    def _jitter(self, view: np.ndarray, index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, index, self._epoch])
        x = view.astype(np.float32) / 255.0
        x = np.clip(x * rng.uniform(0.8, 1.2) + rng.uniform(-0.06, 0.06), 0.0, 1.0)
        x = x ** rng.uniform(0.8, 1.25)
        x = x + rng.normal(0.0, rng.uniform(0.0, 0.02), x.shape).astype(np.float32)
        return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)

    def __len__(self) -> int:
        return len(self.entries)

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """The (view, target) uint8 images of item ``i`` (no augmentation)."""
        return self._item(i)[:2]

    def _item(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        return self._cache[i] if self._cache is not None else self._load(i)

    def __getitem__(self, i: int) -> dict[str, Any]:
        view, target, ref = self._item(i)
        e = self.entries[i]
        if self.augment:
            view = self._jitter(view, int(e["index"]))
        if ref is not None:
            from revavatar.core.alignment import toned_view  # noqa: PLC0415

            view = toned_view(view, ref, self.view_tone, self._eye)
        side = EYE_SIDES.get(self.region)
        gaze = e["gaze"][side] if side else e.get("gaze_deg", [0.0, 0.0])
        focus = torch.from_numpy(self.focus(i)).float().div_(255.0)[None]
        item = {"view": to_tensor(view), "target": to_tensor(target), "focus": focus,
                "gaze": torch.tensor(gaze, dtype=torch.float32), "identity": str(e["identity"]),
                "index": int(e["index"])}
        if ref is not None:
            item["reference"] = to_tensor(ref)
        return item

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Stack items ``indices`` into a batch (views and targets (N, C, H, W)); no DataLoader
        needed, which keeps the training loop single-process on a 2-core machine."""
        return _stack([self[int(i)] for i in indices], self.reference)


class MirroredEyes(Dataset):
    """One eye's training pairs followed by the other eye's, mirrored left to right.

    The canonical eye boxes and a symmetric headset's eye cameras mirror each other about the
    face's midline, so a right eye read through its camera and flipped is a left eye read
    through the left camera: the other eye's pairs double the faces an eye aligner learns from.
    With 30 training identities the aligners' gaze does not carry over from val to test
    (reports/alignment.md); more faces are what a learned aligner lacks most. The other eye's
    items keep their own augmentation draw; the ``gaze`` yaw changes sign with the flip.

    Args:
        own: the region's pairs (an eye region's :class:`AlignmentPairs`).
        other: the other eye's pairs, built with the same settings.

    Raises:
        ValueError: the two are not the two eyes, or differ in crop size, channels or inputs.
    """

    def __init__(self, own: AlignmentPairs, other: AlignmentPairs) -> None:
        if {own.region, other.region} != set(EYE_SIDES) or (
                own.crop_size, own.channels, own.reference, own.input_mode, own.view_tone,
                own.enroll_frames) != (other.crop_size, other.channels, other.reference,
                                       other.input_mode, other.view_tone, other.enroll_frames):
            msg = ("MirroredEyes takes the two eyes' pairs built alike, got "
                   f"{own.region} and {other.region}")
            raise ValueError(msg)
        self.own, self.other = own, other
        self.region, self.reference = own.region, own.reference
        self.crop_size, self.channels = own.crop_size, own.channels

    def __len__(self) -> int:
        return len(self.own) + len(self.other)

    def set_epoch(self, epoch: int) -> None:
        """Change both halves' augmentation draw (:meth:`AlignmentPairs.set_epoch`)."""
        self.own.set_epoch(epoch)
        self.other.set_epoch(epoch)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i < len(self.own):
            return self.own[i]
        item = dict(self.other[i - len(self.own)])
        for k in ("view", "target", "focus", "reference"):
            if k in item:
                item[k] = item[k].flip(-1)
        item["gaze"] = item["gaze"] * torch.tensor([-1.0, 1.0])
        return item

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """As :meth:`AlignmentPairs.batch`."""
        return _stack([self[int(i)] for i in indices], self.reference)


def write_toy_build(root: str | Path, samples: int = 12, *, seed: int = 0,
                    camera_size: tuple[int, int] = (320, 240), layout_size: int = 256) -> Path:
    """Write a tiny but valid VR-Face build of synthetic images (tests and smoke runs).

    Each sample is a bright disc (an "iris") on a textured background: the ground-truth crops
    show it frontally, the headset views show the same scene through a fixed shear and scale
    (a stand-in for the camera's oblique view) plus noise, so a model can learn the mapping in a
    few steps. Identities ``toy0..toy5`` split 4/1/1 into train/val/test; the eye views are
    gray (infrared) and the lower-face view colour, as in a real build.

    Returns:
        ``root``.
    """
    from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415

    out = Path(root)
    (out / "shards" / "00000").mkdir(parents=True, exist_ok=True)
    (out / "refs").mkdir(exist_ok=True)
    layout = CanonicalLayout(layout_size)
    rng = np.random.default_rng(seed)
    cw, ch = camera_size
    split_of = {f"toy{i}": s for i, s in enumerate(("train",) * 4 + ("val", "test"))}
    rows = []
    for i in range(samples):
        ident = f"toy{i % 6}"
        face = np.full((layout_size, layout_size, 3), 90, np.uint8)
        face[::8] = 120
        cx, cy = rng.uniform(0.3, 0.7) * layout_size, rng.uniform(0.35, 0.85) * layout_size
        cv2.circle(face, (int(cx), int(cy)), layout_size // 12, (230, 200, 170), -1)
        for x in (0.34, 0.66):
            cv2.circle(face, (int(x * layout_size + rng.uniform(-6, 6)), int(0.42 * layout_size)),
                       layout_size // 40, (20, 30, 40), -1)
        base = f"shards/00000/{i:07d}_"
        row: dict[str, Any] = {"index": i, "identity": ident, "split": split_of[ident],
                               "view": "front", "gt": f"{base}gt.png",
                               "reference": f"refs/{ident}.png", "landmarks": f"{base}lm.npy"}
        cv2.imwrite(str(out / row["gt"]), face)
        cv2.imwrite(str(out / row["reference"]), face)
        np.save(out / row["landmarks"], np.zeros((478, 2), np.float32))
        shear = np.array([[1.0, 0.15, 0.0], [0.05, 0.9, 0.0]])
        for region in ("left_eye", "right_eye", "lower_face"):
            crop = layout.crop_region(face, region)
            row[f"gt_{region}"] = f"{base}gt_{region}.png"
            cv2.imwrite(str(out / row[f"gt_{region}"]), crop)
            view = cv2.resize(cv2.warpAffine(crop, shear, crop.shape[1::-1],
                                             borderMode=cv2.BORDER_REFLECT), (cw, ch))
            view = np.clip(view + rng.normal(0, 3, view.shape), 0, 255).astype(np.uint8)
            if region != "lower_face":
                view = cv2.cvtColor(view, cv2.COLOR_BGR2GRAY)
            row[region] = f"{base}{region}.png"
            cv2.imwrite(str(out / row[region]), view)
        row["gaze"] = {"left": [0.0, 0.0], "right": [0.0, 0.0]}
        row["gaze_deg"] = [0.0, 0.0]
        rows.append(row)
    (out / "index.json").write_text(json.dumps(rows))
    headset = Path(__file__).resolve().parents[2] / "calibration" / "generic.yaml"
    meta = {"config": {"samples": samples, "layout_size": layout_size, "seed": seed,
                       "headset": str(headset)},
            "summary": {"complete": True, "samples": samples}}
    (out / "meta.json").write_text(json.dumps(meta))
    return out
