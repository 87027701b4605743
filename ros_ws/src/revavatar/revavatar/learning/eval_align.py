"""``revavatar eval align``: homography vs auto-encoder vs CycleGAN aligners on held-out faces.

For every test-split sample and region, each method aligns the headset frame; the crop is
compared with the ground-truth frontal crop (gray for the IR eye cameras, like the training
target): SSIM (luma), PSNR, LPIPS (alex). ``homography`` is the product's baseline (calibrated
rectification onto the region's mean face plane, as the graph builds it); ``surface`` is the
classical rectification onto the wearer's enrolled face (the graph's ``surface`` aligner), with
the sample's DP reference standing in for the enrollment selfie. ``dp`` is no aligner: it is
that reference's own crop of the region, the score of knowing the wearer and not looking through
the camera at all; ``homography+dp`` is the baseline's crop with what its camera cannot see
(outside the calibrated view, the headset's housing) filled from that crop, in camera tone
(:func:`revavatar.core.alignment.enrollment_input`), which is also the first input of learned
aligners conditioned on the enrolled wearer (``reference`` models), who get the same reference.
``cyclegan+camera_eye`` is the eye CycleGAN with its eye opening taken from the rectified camera
view in the network's tone (:func:`revavatar.core.alignment.camera_eye`; the graph's aligner of
that name). ``enroll_frames`` > 1 enrolls the wearer's shape from that many frames (the mean
shape the ``surface`` row and the learned aligners' surface input rectify onto); the DP crop is
the sample's reference either way.

``opening_psnr`` (eye regions) is the PSNR over the eye opening only (the sample's lid landmarks,
:func:`revavatar.learning.data.focus_mask`): the few hundred pixels that show where the eye looks,
which crop-wide figures barely weigh (the enrollment crop alone scores well on those).

Gaze (eye regions) measures what the paper means, "does the aligned eye look where the true eye
looks": the crop's eye is pasted back into the sample's true aligned face (the crop resized to its
canonical box, gray replicated to BGR), MediaPipe Face Mesh with iris refinement runs on that
face, and the eye's (yaw, pitch) from :func:`revavatar.core.gaze.gaze_angles` is compared with
the same measurement on the face with the *ground-truth* crop pasted the same way. Only the eye is
pasted (``gaze_paste="eye"``, the default since 2026-12-07): the ellipse of
``canonical.EYE_ELLIPSE_MM`` about the template eye centre, feathered, over the truth's own crop
(``CanonicalLayout.eye_weight``). Face Mesh places the eye corners (and so the iris crop) from
the whole face, so brow, temple and cheek pixels that differ from the truth turn its eye reading
although no eye moved: on the test split the exact inverse of an effect-free VR-Face render,
whose eye matches the truth, reads 1.36 deg pasted whole and 0.25 deg pasted eye-only, and the
truth's own eye inside CycleGAN's crop reads 2.87 deg pasted whole
(``benchmarks/align_gaze_floor.py``). ``gaze_paste="crop"`` pastes the whole crop (the figure of
earlier reports). Samples where MediaPipe finds no face in either image are left out of the gaze
figures. Each face is read as the mean of :data:`GAZE_JITTER` copies moved by sub-pixel amounts
(:class:`GazeProbe`), which averages out the landmark model's pixel-grid jitter.

A shut eye has no gaze: the lids cover the iris, and Face Mesh's iris there is a guess that
jumps with any change of the lids. ``gaze_error_deg`` is therefore over the samples whose true
eye is open (eye aspect ratio of the sample's landmarks at least
:data:`revavatar.core.gaze.OPEN_EYE_MIN_ASPECT`, ``gaze_min_aspect``; 0 scores every eye, the
figure of reports before the third session of 2026-12-07); the shut ones (about a tenth of
VR-Face's eyes, blinks and squints) are scored apart as ``gaze_error_shut_deg``, so an aligner
that opens a closed eye is still visible (on 80 test samples, 8 shut eyes a side, CycleGAN reads
3.6 / 5.8 deg there against 2.4 / 1.8 on the open ones).

The probe sees each crop's eye in the truth's tone (``gaze_tone="match"``, the default since the
fourth session of 2026-12-07; :func:`revavatar.core.composite.match_histogram`): a monotone
gray-level map that gives the crop's eye the truth's histogram and moves no pixel. Face Mesh
reads a change of the eye's tone alone as a turn of the eye (the relit truth: 1.26 deg), so a raw
reading charges an aligner's tone twice, once in the pixel figures and once as gaze.
``gaze_tone="raw"`` reads the crops as aligned (the figure of earlier reports).

What the gaze figure can resolve is reported beside it (``gaze_reference``): the same error for
the ground-truth crop itself shifted by one crop pixel (what 1 px of misregistration costs) and
with imperceptible sensor noise added (sigma 2 gray levels: the landmark model's own jitter, the
floor under which no aligner can be shown to be better), and for a real eye turn: the truth with
its iris moved one crop pixel (:data:`IRIS_TURN`), whose angle on the eyeball model is given as
``expected``. Its reading over ``expected`` is the probe's gain: Face Mesh reads a pure iris turn
at about 0.6 of its angle, so a gaze error is about 1.6 times that many degrees of iris turn.

``paired`` compares CycleGAN with every other method on the same samples: per figure (SSIM, PSNR,
LPIPS and, on the eyes, the gaze error), the mean of the per-sample difference (CycleGAN minus
the other), its standard error over samples and over the identities' means, and the share of
samples where CycleGAN is better. Faces differ far more from each other than two methods differ
on one face, so "ahead" is judged on paired differences, not on the distance between two means;
with a handful of held-out people, on the identities' standard error (samples of one person rise
and fall together).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np

from revavatar.core.canonical import EYE_SIDES, REGION_NAMES
from revavatar.errors import InputError

__all__ = ["GAZE_JITTER", "GAZE_PASTES", "GAZE_TONES", "IRIS_TURN", "METHODS", "PAIRED_FIGURES",
           "TRUTH_PERTURBATIONS", "GazeProbe", "add_arguments", "evaluate",
           "eye_aspect", "eye_is_open", "follow_wearer", "gaze_face", "iris_shifted",
           "iris_turn", "markdown_table", "method_aligners", "paired_difference",
           "paste_into_face", "perturbed_truth", "resolve_data", "run_from_args",
           "spread_samples", "update_cards", "wearer_reference"]

METHODS: Final = ("homography", "surface", "dp", "homography+dp", "autoencoder", "cyclegan",
                  "cyclegan+camera_eye")
#: the rows that need no trained model
_CLASSICAL: Final = METHODS[:4]


def resolve_data(data: Path, cache: Path | None = None, samples: int = 1500, seed: int = 0,
                 headset: Path | None = None) -> Path:
    """A VR-Face build folder as is; a source folder (MANIFEST.csv) is built once with ``seed``
    into ``cache`` (default ``~/.cache/revavatar/eval_align/<hash>``) and reused."""
    if (data / "index.json").is_file():
        return data
    if not (data / "MANIFEST.csv").is_file():
        msg = f"{data} is neither a VR-Face build (index.json) nor a source folder (MANIFEST.csv)"
        raise InputError(msg)
    from revavatar.vrface.builder import BuildConfig, build  # noqa: PLC0415

    headset = headset or Path(__file__).resolve().parents[2] / "calibration" / "generic.yaml"
    tag = hashlib.sha1(f"{data.resolve()}|{samples}|{seed}|{headset}".encode()).hexdigest()[:12]
    out = cache or Path.home() / ".cache" / "revavatar" / "eval_align" / tag
    build(BuildConfig(src=data, headset=headset, samples=samples, out=out, seed=seed),
          progress=False)
    return out


def paste_into_face(face: np.ndarray, crop: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The aligned face with ``crop`` resized into ``box`` (gray crops replicated to BGR)."""
    x0, y0, x1, y1 = box
    img = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) if crop.ndim == 2 else crop
    out = face.copy()
    out[y0:y1, x0:x1] = cv2.resize(img, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


#: what of an aligned crop the gaze probe sees: "eye" (``CanonicalLayout.eye_weight``) or the
#: whole "crop"
GAZE_PASTES: Final = ("eye", "crop")


#: how the gaze probe sees a crop's tone: "match" (the truth's: ``composite.match_histogram``)
#: or "raw"
GAZE_TONES: Final = ("match", "raw")


def gaze_face(face: np.ndarray, crop: np.ndarray, gt: np.ndarray, box: tuple[int, int, int, int],
              weight: np.ndarray | None, tone: str = "match") -> np.ndarray:
    """The true face with ``crop`` pasted into ``box`` for the gaze probe: only its eye
    (``weight`` from ``CanonicalLayout.eye_weight``, over the truth crop ``gt``), or all of it
    (None); its tone first matched to the truth's there (``tone``, one of :data:`GAZE_TONES`)."""
    from revavatar.core.composite import eye_over, match_histogram  # noqa: PLC0415

    if tone == "match":  # the eye's histogram, or the whole crop's
        crop = match_histogram(crop, gt, None if weight is None else weight > 0.0)
    return paste_into_face(face, crop if weight is None else eye_over(crop, gt, weight), box)


#: copies of a face the gaze probe averages over (GazeProbe): on the test split 8 copies take
#: the probe's reading of invisible sensor noise from 0.6-0.65 to 0.25-0.35 deg
GAZE_JITTER: Final = 8


class GazeProbe:
    """Per-eye gaze of pasted faces with one static MediaPipe detector.

    ``jitter`` > 1 averages the gaze over that many copies of the face moved by fixed sub-pixel
    shifts and scale changes of a few percent (the first copy is the face itself). The landmark
    model's answer jumps with where the eye falls on its pixel grid (a ground-truth crop shifted
    by one pixel reads over a degree); the eyeball model's angles are invariant to a similarity
    of the image, so the copies' angles differ only by that jitter, and their mean is a finer
    probe than any one of them.
    """

    def __init__(self, jitter: int = GAZE_JITTER) -> None:
        from revavatar.core.landmarks import create_detector  # noqa: PLC0415

        if jitter < 1:
            msg = f"gaze jitter must be >= 1 copies, got {jitter}"
            raise ValueError(msg)
        self.det = create_detector("mediapipe", static_image=True)
        self.moves = _jitter_moves(jitter)

    def __call__(self, face: np.ndarray, side: str) -> tuple[float, float] | None:
        from revavatar.core.gaze import gaze_angles  # noqa: PLC0415

        found = [gaze_angles(lm.eye(side)) for lm, _ in self._copies(face)]
        if not found:
            return None
        yaw, pitch = np.mean(np.asarray(found), axis=0)
        return float(yaw), float(pitch)

    def points(self, face: np.ndarray) -> np.ndarray | None:
        """(478, 2) Face Mesh points of ``face``: the copies' points moved back onto the face
        and averaged (the labels of the gaze critic, :mod:`.eye_landmarks`), or None."""
        found = [(lm.points[:, :2] - m[:, 2]) / m[0, 0] for lm, m in self._copies(face)]
        return np.mean(found, axis=0) if found else None

    def _copies(self, face: np.ndarray) -> list[tuple[Any, np.ndarray]]:
        """The detections on each copy of ``face`` with the copy's similarity (2 x 3)."""
        out = []
        h, w = face.shape[:2]
        for dx, dy, s in self.moves:  # scale about the centre, then shift
            m = np.float32([[s, 0, dx + (1 - s) * w / 2], [0, s, dy + (1 - s) * h / 2]])
            img = face if (dx, dy, s) == (0.0, 0.0, 1.0) else cv2.warpAffine(
                face, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            lm = self.det.detect(img)
            if lm is not None:
                out.append((lm, m))
        return out


def _jitter_moves(n: int) -> list[tuple[float, float, float]]:
    """``n`` (dx px, dy px, scale) moves: the identity, then a Halton spread of shifts in
    [-0.5, 0.5) px and scales in [0.96, 1.04) (deterministic, so runs repeat exactly)."""

    def halton(i: int, base: int) -> float:
        f, r = 1.0, 0.0
        while i:
            f /= base
            r += f * (i % base)
            i //= base
        return r

    return [(0.0, 0.0, 1.0)] + [(halton(i, 2) - 0.5, halton(i, 3) - 0.5,
                                 0.96 + 0.08 * halton(i, 5)) for i in range(1, n)]


#: perturbations of the ground-truth crop whose gaze error tells what the metric resolves
TRUTH_PERTURBATIONS: Final = ("gt_shift_1px", "gt_noise_2")
#: the truth with its iris turned by one crop pixel (:func:`iris_turn`): what a real turn reads
IRIS_TURN: Final = "gt_iris_1px"


#: iris disc moved rigidly out to this radius (mm; the iris is ~6 mm), faded out by the next
_IRIS_DISC_MM: Final = (6.5, 11.0)


def iris_shifted(gt: np.ndarray, centre: np.ndarray, shift_px: float, mm_per_px: float,
                 ) -> np.ndarray:
    """``gt`` with the disc about ``centre`` (crop px) moved ``shift_px`` to the right: the iris
    turns, corners and lids (15 mm off) stay."""
    h, w = gt.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    r = np.hypot(xx - centre[0], yy - centre[1]) * mm_per_px
    r0, r1 = _IRIS_DISC_MM
    t = np.clip((r - r0) / (r1 - r0), 0.0, 1.0)
    move = (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32) * shift_px
    return cv2.remap(gt, xx - move, yy, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def iris_turn(probe: GazeProbe, face: np.ndarray, gt: np.ndarray, layout: Any,
              region: str) -> tuple[np.ndarray, float] | None:
    """The truth crop with its iris turned by one crop pixel, and that turn in degrees on the
    eyeball model (from the truth's own landmarks), or None (no face found).

    The probe's reading of this crop against the truth's, over the expected angle, is its gain
    for a real eye turn: a landmark model can under-read an iris that moves between fixed corners.
    """
    from revavatar.core.gaze import EYE_WIDTH_MM, EYEBALL_RADIUS_MM  # noqa: PLC0415
    from revavatar.learning.eye_landmarks import eye_points  # noqa: PLC0415

    reg = layout.region(region)
    pts = probe.points(paste_into_face(face, gt, reg.box_px))
    crop_pts = None if pts is None else eye_points(pts, reg, region)
    if crop_pts is None:
        return None
    iris, corner_a, corner_b = crop_pts
    moved_mm = EYE_WIDTH_MM / float(np.linalg.norm(corner_b - corner_a))  # 1 crop px, eyeball
    expected = float(np.degrees(np.arcsin(min(moved_mm / EYEBALL_RADIUS_MM, 1.0))))
    mm_per_crop_px = layout.mm_per_px * reg.box_size[0] / reg.crop_size[0]
    return iris_shifted(gt, iris, 1.0, mm_per_crop_px), expected


def perturbed_truth(gt: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """The ground-truth crop shifted right by one pixel (edge replicated) or with noise."""
    if kind == "gt_shift_1px":
        m = np.float32([[1, 0, 1], [0, 1, 0]])
        return cv2.warpAffine(gt, m, gt.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)
    noise = rng.normal(0.0, 2.0, gt.shape)
    return np.clip(gt.astype(np.float64) + noise, 0, 255).astype(np.uint8)


def spread_samples(index: Any, split: str, views: tuple[str, ...] | None,
                   limit: int | None) -> list[dict[str, Any]]:
    """``index``'s samples of ``split`` (and ``views``), at most ``limit`` of them evenly spread:
    the samples are in identity order, so every held-out person is in the evaluation."""
    entries = [e for e in index.samples(split) if views is None or e.get("view") in views]
    if limit is not None and limit < len(entries):
        entries = [entries[int(i)] for i in np.linspace(0, len(entries) - 1, limit)]
    return entries


def method_aligners(region: str, calibration: Any, models: Path, layout: Any) -> dict[str, Any]:
    """The compared aligners of ``region`` (homography baseline + each trained model found, and
    for an eye CycleGAN that reads a rectified view the same with the camera's eye,
    ``cyclegan+camera_eye``: :func:`revavatar.core.alignment.camera_eye`); ``calibration``: the
    build's headset (:meth:`VRFaceIndex.calibration`)."""
    from revavatar.core.alignment import HomographyAligner  # noqa: PLC0415
    from revavatar.core.onnx_aligner import MODEL_PREFIXES, OnnxAligner  # noqa: PLC0415

    cam = calibration.cameras[region]
    # the product's baseline: rectification onto the region's mean face plane (graph/stages.py)
    out: dict[str, Any] = {"homography": HomographyAligner(cam, layout.region(region), layout,
                                                           face_plane=True)}
    for method, prefix in MODEL_PREFIXES.items():
        d = models / f"{prefix}{region}"
        if (d / "model.onnx").is_file():
            out[method] = OnnxAligner(region, d, cam, layout)
    learned = out.get("cyclegan")
    if region in EYE_SIDES and learned is not None and learned.rectifier is not None:
        out["cyclegan+camera_eye"] = OnnxAligner(region, learned.model_dir, cam, layout,
                                                 eye_from="camera")
    return out


def _opening(entry: dict[str, Any], layout: Any, region: str) -> np.ndarray | None:
    """Bool mask of the eye opening in ``region``'s crop, or None (no eye, no landmarks)."""
    from revavatar.learning.data import focus_mask  # noqa: PLC0415

    path = entry.get("landmarks")
    if region not in EYE_SIDES or not path or not Path(path).is_file():
        return None
    mask = focus_mask(np.load(path), layout.region(region), EYE_SIDES[region]) > 127
    return mask if mask.any() else None


def eye_aspect(entry: dict[str, Any], region: str, size: int) -> float | None:
    """The true eye's aspect ratio in ``region`` from the sample's landmarks (canonical face of
    ``size`` px), or None (no eye, no landmarks)."""
    from revavatar.core.landmarks import FaceLandmarks  # noqa: PLC0415

    path = entry.get("landmarks")
    if region not in EYE_SIDES or not path or not Path(path).is_file():
        return None
    pts = np.load(path)[:, :2].astype(np.float32)
    if len(pts) < 478 or not np.any(pts):
        return None
    lm = FaceLandmarks(pts, None, "mediapipe478", (size, size))
    return lm.eye(EYE_SIDES[region]).aspect_ratio


def eye_is_open(aspect: float | None, min_aspect: float) -> bool:
    """Whether a true eye of aspect ratio ``aspect`` (:func:`eye_aspect`) counts as open; an
    eye without landmarks (None) does, as every eye did before shut ones were scored apart."""
    return aspect is None or aspect >= min_aspect


def _masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """:func:`revavatar.core.metrics.psnr` over ``mask``'s pixels (as a one-row image)."""
    from revavatar.core.metrics import psnr  # noqa: PLC0415

    return psnr(a[mask][None], b[mask][None])


def follow_wearer(aligners: dict[str, Any], surface: Any, dp_face: np.ndarray,
                  planes: dict[Any, Any]) -> None:
    """Point the learned aligners that read the wearer at one sample's enrollment: surface-input
    models rectify onto ``surface`` (the reference's :class:`SurfaceAligner`, or their own plane
    from ``planes`` when the reference has no face), reference models take ``dp_face``."""
    for a in aligners.values():
        if getattr(a, "input_mode", None) == "surface":
            a.rectifier = surface or planes[a]
        if getattr(a, "reference", False):
            a.set_enrollment(dp_face)


def wearer_reference(deoccluder: Any, index: Any, split: str
                     ) -> Callable[[dict[str, Any], str], None]:
    """Per sample and eye camera, enroll ``deoccluder``'s wearer reference
    (:meth:`revavatar.core.deocclusion.OnnxDeoccluder.set_reference`) from that camera's stored
    frames in the other samples of the same identity in ``split``
    (:func:`revavatar.learning.data.wearer_frames`, as many as the model was trained with):
    what an in-headset enrollment would have seen of the wearer. A model without a reference
    input needs none, and the callable does nothing."""
    from revavatar.learning.data import wearer_frames  # noqa: PLC0415

    if deoccluder is None or not deoccluder.reference_frames:
        return lambda entry, region: None
    others = wearer_frames(index, split, deoccluder.reference_frames)

    def enroll(entry: dict[str, Any], region: str) -> None:
        if region in deoccluder.REGIONS:
            deoccluder.set_reference(region, [cv2.imread(o[region], cv2.IMREAD_UNCHANGED)
                                              for o in others(entry)])

    return enroll


def _stats(errors: list[float]) -> dict[str, float] | None:
    return ({"mean": float(np.mean(errors)), "p95": float(np.percentile(errors, 95)),
             "n": len(errors)} if errors else None)


#: figures compared sample by sample, +1 where higher is better (gaze: the eye regions only)
PAIRED_FIGURES: Final = {"ssim": 1, "psnr": 1, "lpips": -1, "gaze": -1}
_PIXEL_FIGURES: Final = tuple(k for k in PAIRED_FIGURES if k != "gaze")


def paired_difference(ours: dict[int, float], theirs: dict[int, float], sign: int = 1,
                      groups: dict[int, str] | None = None) -> dict[str, Any] | None:
    """Ours minus theirs on the samples both were scored on (keys: sample numbers).

    ``better`` is the share of samples where ours is better (``sign`` -1: lower is better);
    ``se`` the standard error of the mean difference over samples. Samples of one person are
    not independent (a face the model suits lifts all of them), so with ``groups`` (sample ->
    identity) ``se_identity`` is also given: the standard error over the identities' mean
    differences, the honest one when a split holds few people. None below two shared samples.
    """
    keys = sorted(ours.keys() & theirs.keys())
    if len(keys) < 2:
        return None
    d = np.array([ours[k] - theirs[k] for k in keys])
    out: dict[str, Any] = {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
                           "better": float(np.mean(sign * d > 0)), "n": len(d)}
    if groups is not None:
        per: dict[str, list[float]] = {}
        for k, x in zip(keys, d, strict=True):
            per.setdefault(groups[k], []).append(float(x))
        means = np.array([np.mean(v) for v in per.values()])
        out["identities"] = len(means)
        out["se_identity"] = (float(means.std(ddof=1) / np.sqrt(len(means)))
                              if len(means) > 1 else None)
    return out


def _paired(scores: dict[str, dict[str, dict[int, float]]],
            groups: dict[int, str]) -> dict[str, Any]:
    """CycleGAN against each other method, per figure of :data:`PAIRED_FIGURES`."""
    ours = scores.get("cyclegan")
    if ours is None:
        return {}
    return {m: {k: paired_difference(ours[k], theirs[k], sign, groups)
                for k, sign in PAIRED_FIGURES.items()}
            for m, theirs in scores.items() if m != "cyclegan"}


def _summary(vals: dict[str, list[float]], gaze: list[float], region: str,
             bias: list[tuple[float, float]], shut: list[float]) -> dict[str, Any]:
    """Mean figures; gaze over open true eyes (``gaze``, ``bias``), shut ones (``shut``) apart."""
    res: dict[str, Any] = {k: float(np.mean(v)) for k, v in vals.items()}
    stats = _stats(gaze) if region in EYE_SIDES else None
    res["gaze_error_deg"] = None if stats is None else {"mean": stats["mean"], "p95": stats["p95"],
                                                        "n": stats["n"]}
    if stats is not None:  # signed mean: a systematic turn of the aligned eye, not scatter
        yaw, pitch = np.mean(np.asarray(bias), axis=0)
        res["gaze_bias_deg"] = {"yaw": float(yaw), "pitch": float(pitch)}
    if region in EYE_SIDES:
        res["gaze_error_shut_deg"] = _stats(shut)
    res["n"] = len(vals["ssim"])
    if region in EYE_SIDES and len(gaze) + len(shut) < res["n"]:
        print(f"eval align: {region}: gaze measured on {len(gaze) + len(shut)} of {res['n']} "
              "samples (MediaPipe found no face in the others)", file=sys.stderr)
    return res


def evaluate(data: Path, models: Path = Path("models"), limit: int | None = None,
             split: str = "test", figure: Path | None = None,
             views: tuple[str, ...] | None = None, gaze_jitter: int = GAZE_JITTER,
             regions: tuple[str, ...] = REGION_NAMES, gaze_paste: str = "eye",
             gaze_min_aspect: float | None = None, gaze_tone: str = "match",
             enroll_frames: int = 1, deocclusion: bool = False) -> dict[str, Any]:
    """Metrics per region and method (see the module docstring); optionally a qualitative PNG.

    ``views`` keeps only samples rendered from those VR-Face views (e.g. ``("front",)``);
    ``gaze_jitter``: copies the gaze probe averages over (:class:`GazeProbe`); ``regions``: the
    regions to evaluate (canonical order); ``gaze_paste``: one of :data:`GAZE_PASTES`;
    ``gaze_min_aspect``: the true eye's aspect ratio from which it counts as open (default
    :data:`revavatar.core.gaze.OPEN_EYE_MIN_ASPECT`; 0 counts every eye as open);
    ``gaze_tone``: one of :data:`GAZE_TONES`; ``enroll_frames``: the enrolled shape (the
    ``surface`` row, and the surface input of learned aligners) is the mean of that many frames
    of the wearer (:func:`revavatar.learning.data.enrollment_frames`), the DP crop stays the
    sample's reference; ``deocclusion``: every method reads the eye cameras' frames through
    the trained de-occluder in ``models/deocclusion`` (:mod:`revavatar.core.deocclusion`).
    """
    import torch  # noqa: PLC0415

    from revavatar.core.alignment import enrollment_input  # noqa: PLC0415
    from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415
    from revavatar.core.gaze import OPEN_EYE_MIN_ASPECT, angular_error_deg  # noqa: PLC0415
    from revavatar.core.metrics import psnr, ssim  # noqa: PLC0415
    from revavatar.learning.data import (  # noqa: PLC0415
        ReferenceSurfaces,
        VRFaceIndex,
        enrollment_frames,
        read_image,
    )
    from revavatar.learning.lpips import image_to_tensor  # noqa: PLC0415
    from revavatar.learning.lpips_weights import load_lpips  # noqa: PLC0415
    from revavatar.learning.trainer import progress  # noqa: PLC0415

    if gaze_paste not in GAZE_PASTES:
        msg = f"gaze_paste must be one of {', '.join(GAZE_PASTES)}, got {gaze_paste!r}"
        raise ValueError(msg)
    if gaze_tone not in GAZE_TONES:
        msg = f"gaze_tone must be one of {', '.join(GAZE_TONES)}, got {gaze_tone!r}"
        raise ValueError(msg)
    min_aspect = OPEN_EYE_MIN_ASPECT if gaze_min_aspect is None else float(gaze_min_aspect)
    if not 0.0 <= min_aspect < 1.0:
        msg = f"gaze_min_aspect must be in [0, 1), got {min_aspect}"
        raise ValueError(msg)
    torch.set_num_threads(2)
    deoccluder = None
    if deocclusion:
        from revavatar.core.deocclusion import DEOCCLUSION_DIR, OnnxDeoccluder  # noqa: PLC0415

        deoccluder = OnnxDeoccluder(models / DEOCCLUSION_DIR)
    index = VRFaceIndex(data)
    entries = spread_samples(index, split, views, limit)
    enrolled = enrollment_frames(index, split, enroll_frames)
    in_headset = wearer_reference(deoccluder, index, split)
    layout = CanonicalLayout(index.layout_size)
    lp = load_lpips("alex", allow_fetch=False)
    gazer = GazeProbe(gaze_jitter)
    surfaces = ReferenceSurfaces(layout, gazer.det)
    rng = np.random.default_rng(0)
    result: dict[str, Any] = {"regions": {}, "gaze_reference": {}, "paired": {},
                              "gaze_probe_copies": len(gazer.moves), "gaze_paste": gaze_paste,
                              "gaze_min_aspect": min_aspect, "gaze_tone": gaze_tone,
                              "enroll_frames": enroll_frames,
                              "deocclusion": str(deoccluder.model_dir) if deoccluder else None,
                              "deocclusion_reference_frames":
                                  deoccluder.reference_frames if deoccluder else None}
    rows: dict[str, list[list[np.ndarray]]] = {}
    calibration = index.calibration()
    identity = {k: str(e.get("identity", "")) for k, e in enumerate(entries)}  # for `paired`
    for region in (r for r in REGION_NAMES if r in regions):
        aligners = method_aligners(region, calibration, models, layout)
        methods = [m for m in METHODS if m in _CLASSICAL or m in aligners]
        plane = {a: getattr(a, "rectifier", None) for a in aligners.values()}  # the fallback
        gray = True
        vals: dict[str, dict[str, list[float]]] = {m: {f: [] for f in _PIXEL_FIGURES}
                                                   for m in methods}
        scored: dict[str, list[int]] = {m: [] for m in methods}  # the samples of vals[m]
        gaze: dict[str, dict[int, float]] = {m: {} for m in methods}  # sample -> deg, open eyes
        shut: dict[str, list[float]] = {m: [] for m in methods}  # deg, shut true eyes
        bias: dict[str, list[tuple[float, float]]] = {m: [] for m in methods}
        floor: dict[str, list[float]] = {r: [] for r in (*TRUTH_PERTURBATIONS, IRIS_TURN)}
        turned: list[float] = []  # the iris turns' angles on the eyeball model (deg)
        box = layout.region(region).box_px
        weight = (layout.eye_weight(region) if gaze_paste == "eye" and region in EYE_SIDES
                  else None)
        for k, e in enumerate(progress(len(entries), desc=f"eval align {region}", unit="sample",
                                       iterable=entries)):
            frame = cv2.imread(e[region], cv2.IMREAD_UNCHANGED)
            if frame is None:
                msg = f"cannot read image {e[region]}"
                raise InputError(msg)
            if deoccluder is not None and region in deoccluder.REGIONS:
                in_headset(e, region)
                frame = deoccluder(frame, region)
            gray = frame.ndim == 2
            gt = read_image(e[f"gt_{region}"], gray=gray)
            face = read_image(e["gt"])
            side = EYE_SIDES.get(region)
            ref = gazer(paste_into_face(face, gt, box), side) if side else None
            is_open = eye_is_open(eye_aspect(e, region, layout.size), min_aspect)
            # the probe's resolution is a property of gazes: measured on open eyes only
            for kind in TRUTH_PERTURBATIONS if ref is not None and is_open else ():
                got = gazer(gaze_face(face, perturbed_truth(gt, kind, rng), gt, box, weight,
                                       gaze_tone), side)
                if got is not None:
                    floor[kind].append(angular_error_deg(got, ref))
            turn = iris_turn(gazer, face, gt, layout, region) if ref is not None and is_open \
                else None
            got = None if turn is None else gazer(
                gaze_face(face, turn[0], gt, box, weight, gaze_tone), side)
            if got is not None:
                floor[IRIS_TURN].append(angular_error_deg(got, ref))
                turned.append(turn[1])
            surface = surfaces(enrolled(e), aligners["homography"].camera, region)
            dp_face = read_image(e["reference"])
            follow_wearer(aligners, surface, dp_face, plane)
            per_sample = {**aligners, "surface": surface}
            crops = {m: per_sample[m].align(frame) for m in methods
                     if per_sample.get(m) is not None}
            plane_crop, dp_crop = enrollment_input(crops["homography"],
                                                   aligners["homography"].valid_mask, dp_face,
                                                   layout, region)
            crops.update({"dp": dp_crop, "homography+dp": plane_crop})
            with torch.no_grad():
                d = lp(torch.cat([image_to_tensor(c) for c in crops.values()]),
                       image_to_tensor(gt).repeat(len(crops), 1, 1, 1))
            opening = _opening(e, layout, region)
            for (m, crop), dist in zip(crops.items(), d.tolist(), strict=True):
                vals[m]["ssim"].append(ssim(crop, gt))
                vals[m]["psnr"].append(psnr(crop, gt))
                vals[m]["lpips"].append(float(dist))
                scored[m].append(k)
                if opening is not None:
                    vals[m].setdefault("opening_psnr", []).append(_masked_psnr(crop, gt, opening))
                if ref is not None:
                    got = gazer(gaze_face(face, crop, gt, box, weight, gaze_tone), side)
                    if got is not None and is_open:
                        gaze[m][k] = angular_error_deg(got, ref)
                        bias[m].append((got[0] - ref[0], got[1] - ref[1]))
                    elif got is not None:
                        shut[m].append(angular_error_deg(got, ref))
            if figure is not None and k < 4:
                blank = np.zeros_like(gt)  # a method without a crop here keeps its column
                rows.setdefault(region, []).append(
                    [cv2.resize(frame, gt.shape[1::-1]), *(crops.get(m, blank) for m in METHODS),
                     gt])
        result["regions"][region] = {m: _summary(vals[m], list(gaze[m].values()), region,
                                                 bias[m], shut[m])
                                     for m in methods if vals[m]["ssim"]}
        result["paired"][region] = _paired(
            {m: {**{f: dict(zip(scored[m], vals[m][f], strict=True)) for f in _PIXEL_FIGURES},
                 "gaze": gaze[m]} for m in methods if scored[m]}, identity)
        if region in EYE_SIDES:
            result["gaze_reference"][region] = {k: _stats(v) for k, v in floor.items()}
            if turned:
                result["gaze_reference"][region][IRIS_TURN]["expected"] = float(np.mean(turned))
    if figure is not None:
        _figure(rows, figure, list(METHODS))
    return result


def markdown_table(result: dict[str, Any]) -> str:
    """The result as the Markdown tables of reports/alignment.md (best per region bold)."""
    lines = ["| region | method | SSIM | PSNR (dB) | LPIPS | eye-opening PSNR (dB) "
             "| gaze err mean (deg) | gaze err p95 (deg) | gaze bias yaw / pitch (deg) "
             "| gaze err shut eyes (deg, n) | n |",
             "|---" * 11 + "|"]
    for region, methods in result["regions"].items():
        best = {}
        for k, pick in (("ssim", max), ("psnr", max), ("lpips", min), ("opening_psnr", max)):
            have = [f[k] for f in methods.values() if f.get(k) is not None]
            best[k] = pick(have) if have else None
        gazes = [f["gaze_error_deg"]["mean"] for f in methods.values() if f["gaze_error_deg"]]
        for m, f in methods.items():
            cells = []
            for k in best:
                v = f.get(k)
                c = "-" if v is None else f"{v:.{2 if k.endswith('psnr') else 3}f}"
                cells.append(f"**{c}**" if v is not None and v == best[k] else c)
            g = f["gaze_error_deg"]
            if g is None:
                cells += ["-", "-"]
            else:
                mean = f"{g['mean']:.2f}"
                cells += [f"**{mean}**" if g["mean"] == min(gazes) else mean, f"{g['p95']:.2f}"]
            b = f.get("gaze_bias_deg")
            cells.append("-" if b is None else f"{b['yaw']:+.2f} / {b['pitch']:+.2f}")
            sh = f.get("gaze_error_shut_deg")
            cells.append("-" if sh is None else f"{sh['mean']:.2f} ({sh['n']})")
            lines.append(f"| {region} | {m} | {' | '.join(cells)} | {f['n']} |")
    refs = result.get("gaze_reference") or {}
    if refs:
        lines += ["", "| region | ground truth perturbed by | gaze err mean (deg) | p95 (deg) | n |",
                  "|---" * 5 + "|"]
        for region, kinds in refs.items():
            for kind, st in kinds.items():
                if st is not None:
                    what = (f"{kind} (a {st['expected']:.2f}-deg turn)" if "expected" in st
                            else kind)
                    lines.append(f"| {region} | {what} | {st['mean']:.2f} | {st['p95']:.2f} "
                                 f"| {st['n']} |")
    if "gaze_paste" in result:
        lines += ["", f"Gaze: the probe saw each crop's {result['gaze_paste']} in the true face "
                      f"(--gaze-paste), the mean of {result.get('gaze_probe_copies', 1)} copies"
                      + (", its tone matched to the truth's (--gaze-tone)."
                         if result.get("gaze_tone") == "match" else ".")]
    if "gaze_min_aspect" in result:
        lines += ["", f"Gaze figures are over the samples whose true eye is open (eye aspect ratio "
                      f">= {result['gaze_min_aspect']:g}, --gaze-min-aspect); shut eyes have no "
                      "gaze and are scored apart."]
    if int(result.get("enroll_frames") or 1) > 1:
        lines += ["", f"The wearer's shape was enrolled from {result['enroll_frames']} frames "
                      "(--enroll-frames); the DP crop is the sample's reference."]
    if result.get("deocclusion"):
        lines += ["", "Every method read the eye cameras through the de-occluder "
                      f"`{result['deocclusion']}` (--deocclusion)."]
    return "\n".join(lines + _paired_table(result.get("paired") or {})) + "\n"


def _paired_table(paired: dict[str, Any]) -> list[str]:
    """CycleGAN minus each method: mean +- s.e. over samples / over identities (share of
    samples where CycleGAN is better)."""
    rows = [(region, m, figs) for region, others in paired.items() for m, figs in others.items()]
    if not rows:
        return []
    lines = ["", "| region | cyclegan minus (mean +- s.e. samples / identities, share better) "
             "| SSIM | PSNR (dB) | LPIPS | gaze (deg) | n (identities) |", "|---" * 7 + "|"]
    for region, m, figs in rows:
        cells = [_paired_cell(figs.get(k), 3 if k in ("ssim", "lpips") else 2)
                 for k in PAIRED_FIGURES]
        first = next((d for d in figs.values() if d is not None), None)
        n = "-" if first is None else f"{first['n']} ({first.get('identities', '-')})"
        lines.append(f"| {region} | {m} | {' | '.join(cells)} | {n} |")
    return lines


def _paired_cell(d: dict[str, Any] | None, digits: int) -> str:
    if d is None:
        return "-"
    ident = d.get("se_identity")
    spread = f"{d['se']:.{digits}f}" + ("" if ident is None else f" / {ident:.{digits}f}")
    return f"{d['mean']:+.{digits}f} +- {spread} ({d['better']:.0%})"


def _figure(rows: dict[str, list[list[np.ndarray]]], path: Path, methods: list[str]) -> None:
    """Grid per region: view | methods... | ground truth, 4 test samples each."""
    blocks = []
    for tiles in rows.values():
        for r in tiles:
            bgr = [cv2.cvtColor(t, cv2.COLOR_GRAY2BGR) if t.ndim == 2 else t for t in r]
            bgr = [cv2.resize(t, (192, int(192 * t.shape[0] / t.shape[1]))) for t in bgr]
            blocks.append(np.hstack(bgr))
    head = np.full((24, blocks[0].shape[1], 3), 255, np.uint8)
    for i, name in enumerate(["headset view", *methods, "ground truth"]):
        cv2.putText(head, name, (i * 192 + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([head, *blocks]))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``revavatar eval align``."""
    from revavatar.cli import positive_int  # noqa: PLC0415
    from revavatar.learning.train_align import parse_regions  # noqa: PLC0415

    parser.add_argument("--data", required=True, help="VR-Face build, or source folder (MANIFEST)")
    parser.add_argument("--region", default=REGION_NAMES, type=parse_regions,
                        help="left_eye, right_eye, lower_face, a comma list of them, or all "
                             "(default)")
    parser.add_argument("--limit", type=int, default=None, help="samples (evenly spread)")
    parser.add_argument("--json", default=None, help="write the metrics JSON here")
    parser.add_argument("--models", default="models", help="folder with align_* models")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--figure", default=None, help="qualitative PNG (4 samples per region)")
    parser.add_argument("--markdown", default=None, help="also write the tables as Markdown here")
    parser.add_argument("--cache", default=None, help="where a source folder is built")
    parser.add_argument("--views", default=None, help="only these views, e.g. front,top-30")
    parser.add_argument("--gaze-jitter", type=int, default=GAZE_JITTER,
                        help="copies of each face (sub-pixel shifts, small scalings) the gaze "
                             "probe averages over; 1 = the face alone (default %(default)d)")
    parser.add_argument("--gaze-paste", default="eye", choices=GAZE_PASTES,
                        help="what of each aligned crop the gaze probe sees in the true face: "
                             "its eye (default) or the whole crop")
    parser.add_argument("--gaze-min-aspect", type=float, default=None,
                        help="eye aspect ratio of the true eye from which it counts as open "
                             "(gaze is scored on open eyes, shut ones apart; default "
                             "revavatar.core.gaze.OPEN_EYE_MIN_ASPECT, 0 = every eye)")
    parser.add_argument("--gaze-tone", default="match", choices=GAZE_TONES,
                        help="match: the probe sees each crop's eye in the truth's tone (a "
                             "monotone gray-level map, no pixel moved; default); raw: as aligned")
    parser.add_argument("--enroll-frames", type=positive_int, default=1,
                        help="the wearer's enrolled shape is the mean of this many frames (the "
                             "sample's reference and others of the same person; default 1)")
    parser.add_argument("--deocclusion", action="store_true",
                        help="every method reads the eye cameras' frames through the trained "
                             "de-occluder (MODELS/deocclusion) first")
    parser.add_argument("--update-cards", action="store_true",
                        help="write each trained model's figures into its card (card.json, "
                             "README.md)")


def run_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Evaluate, print the JSON (and write it with --json)."""
    data = resolve_data(Path(args.data), Path(args.cache) if args.cache else None)
    views = tuple(v.strip() for v in args.views.split(",")) if args.views else None
    res = evaluate(data, Path(args.models), args.limit, args.split,
                   Path(args.figure) if args.figure else None, views,
                   gaze_jitter=getattr(args, "gaze_jitter", GAZE_JITTER),
                   regions=getattr(args, "region", REGION_NAMES),
                   gaze_paste=getattr(args, "gaze_paste", "eye"),
                   gaze_min_aspect=getattr(args, "gaze_min_aspect", None),
                   gaze_tone=getattr(args, "gaze_tone", "match"),
                   enroll_frames=getattr(args, "enroll_frames", 1),
                   deocclusion=getattr(args, "deocclusion", False))
    text = json.dumps(res, indent=1)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    if getattr(args, "update_cards", False):
        update_cards(res, Path(args.models), _command(args))
    print(text)
    return res


def _command(args: argparse.Namespace) -> str:
    flags = [f"--data {args.data}"] + [f"--{k} {getattr(args, k)}" for k in ("limit", "views")
                                       if getattr(args, k, None)]
    jitter = getattr(args, "gaze_jitter", GAZE_JITTER)
    flags += [f"--gaze-jitter {jitter}"] if jitter != GAZE_JITTER else []
    paste = getattr(args, "gaze_paste", "eye")
    flags += [f"--gaze-paste {paste}"] if paste != "eye" else []
    aspect = getattr(args, "gaze_min_aspect", None)
    flags += [f"--gaze-min-aspect {aspect:g}"] if aspect is not None else []
    tone = getattr(args, "gaze_tone", "match")
    flags += [f"--gaze-tone {tone}"] if tone != "match" else []
    frames = getattr(args, "enroll_frames", 1)
    flags += [f"--enroll-frames {frames}"] if frames != 1 else []
    flags += ["--deocclusion"] if getattr(args, "deocclusion", False) else []
    regions = tuple(getattr(args, "region", REGION_NAMES))
    flags += [f"--region {','.join(regions)}"] if regions != REGION_NAMES else []
    return f"revavatar eval align {' '.join(flags)} ({args.split} split)"


def update_cards(result: dict[str, Any], models: Path, command: str) -> list[Path]:
    """Write each evaluated trained model's figures into its card, with the model's step."""
    from revavatar.core.onnx_aligner import MODEL_PREFIXES  # noqa: PLC0415
    from revavatar.learning.alignment_model import write_card  # noqa: PLC0415

    written = []
    for region, methods in result["regions"].items():
        for method, prefix in MODEL_PREFIXES.items():
            d = models / f"{prefix}{region}"
            if method not in methods or not (d / "card.json").is_file():
                continue
            card = json.loads((d / "card.json").read_text())
            card["metrics"] = {"eval": command, "step": card.get("steps"), **methods[method]}
            if methods[method].get("gaze_error_deg"):
                card["metrics"].update({k: result[k] for k in ("gaze_probe_copies", "gaze_paste",
                                                               "gaze_min_aspect", "gaze_tone",
                                                               "enroll_frames",
                                                               "deocclusion")
                                       if k in result})
            (d / "card.json").write_text(json.dumps(card, indent=1))
            written.append(write_card(d))
    return written


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="revavatar eval align")
    add_arguments(_p)
    run_from_args(_p.parse_args())
