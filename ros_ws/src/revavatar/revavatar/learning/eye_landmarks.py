"""A small differentiable eye-landmark regressor: the gaze critic of aligner training.

The evaluation reads gaze from the iris centre and the two eye corners that MediaPipe's Face Mesh
finds on a face (:mod:`revavatar.core.gaze`). That detector is not differentiable, so an aligner
cannot be trained against it directly, and pixel losses barely weigh a misplaced iris (a
1-degree turn moves it by about 0.4 px in a 128 x 96 eye crop). This network finds the same three
points on an eye crop with sub-pixel precision (heatmaps at half resolution read by a soft
argmax, which moves with the image), so ``train align --lambda-gaze`` can penalise the gap between
the aligned crop's and the truth's iris offset from the corner mid-point, the quantity the gaze
probe turns into an angle.

One network serves both eyes: a right-eye crop is mirrored into a left-eye crop on the way in
(its corners swapped so the image-left corner stays first) and the points are mirrored back.
Labels (:data:`LABELS`), mapped into the region's crop: what the evaluation's gaze probe reads on
each truth face (``probe``, the default of ``train eye-landmarks``: :func:`probe_labels`), or the
VR-Face sample's own Face Mesh points of its source frame (``build``, ``landmarks.npy``).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from revavatar.core.canonical import EYE_SIDES

__all__ = ["LABELS", "POINTS", "EyeLandmarkConfig", "EyeLandmarkNet", "EyeLandmarkSet",
           "augment", "eye_points", "gaze_offset", "load_eye_landmarks", "mirror_points",
           "probe_labels", "save_eye_landmarks", "soft_argmax"]

#: the points the network finds, in this order; corners image-left first (after mirroring a
#: right eye, the inner corner)
POINTS: Final = ("iris", "corner_a", "corner_b")


@dataclass(frozen=True)
class EyeLandmarkConfig:
    """Shape of the network (stored with its weights)."""

    crop_size: tuple[int, int] = (128, 96)  # (w, h) of the eye crops
    width: int = 32  # channels at half resolution (twice that at quarter resolution)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EyeLandmarkConfig:
        return cls(crop_size=tuple(d["crop_size"]), width=int(d["width"]))


def soft_argmax(heat: torch.Tensor, stride: int) -> torch.Tensor:
    """(N, K, h, w) logits -> (N, K, 2) expected (x, y) in input pixels (pixel centres).

    A heatmap cell i at ``stride`` covers input pixels stride*i .. stride*i + stride - 1, whose
    centre is stride*i + (stride - 1) / 2. The expectation moves continuously with the image,
    which a hard argmax would not.
    """
    n, k, h, w = heat.shape
    p = torch.softmax(heat.reshape(n, k, -1).float(), dim=-1).reshape(n, k, h, w)
    off = (stride - 1) / 2.0
    xs = torch.arange(w, dtype=p.dtype, device=p.device) * stride + off
    ys = torch.arange(h, dtype=p.dtype, device=p.device) * stride + off
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)


def _block(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation),
                         nn.GroupNorm(4, cout), nn.ReLU(inplace=True))


class EyeLandmarkNet(nn.Module):
    """Gray (N, 1, H, W) left-eye crops in [-1, 1] -> (N, 3, 2) points (x, y px) of :data:`POINTS`.

    Quarter-resolution body with dilations (its receptive field spans the whole eye opening, so
    each point sees the others) and a half-resolution head fed by a skip connection, where the
    heatmaps are read: about 0.15 GMAC per 128 x 96 crop.
    """

    stride: Final = 2

    def __init__(self, config: EyeLandmarkConfig | None = None) -> None:
        super().__init__()
        self.config = config or EyeLandmarkConfig()
        w = self.config.width
        self.stem = nn.Sequential(_block(1, w // 2), _block(w // 2, w, stride=2), _block(w, w))
        self.body = nn.Sequential(_block(w, 2 * w, stride=2), _block(2 * w, 2 * w),
                                  _block(2 * w, 2 * w, dilation=2),
                                  _block(2 * w, 2 * w, dilation=4))
        self.head = nn.Sequential(_block(3 * w, w), nn.Conv2d(w, len(POINTS), 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.stem(x)
        up = F.interpolate(self.body(half), size=half.shape[-2:], mode="bilinear",
                           align_corners=False)
        return soft_argmax(self.head(torch.cat([half, up], dim=1)), self.stride)

    def points(self, crops: torch.Tensor, region: str) -> torch.Tensor:
        """(N, 3, 2) points on ``region``'s crops (a right eye is mirrored in and out)."""
        if EYE_SIDES[region] == "left":
            return self(crops)
        return mirror_points(self(crops.flip(-1)), crops.shape[-1])


def mirror_points(points: Any, width: int) -> Any:
    """(..., 3, 2) :data:`POINTS` of a crop mirrored left-right (``width`` px wide): x flips and
    the corners swap, so the image-left corner stays first (numpy arrays or tensors)."""
    out = points[..., [0, 2, 1], :] * 1.0  # a copy, in either library
    out[..., 0] = width - 1 - out[..., 0]
    return out


def gaze_offset(points: torch.Tensor) -> torch.Tensor:
    """(N, 2) iris centre minus the corners' mid-point (px): what the gaze probe turns into an
    angle (:func:`revavatar.core.gaze.gaze_angles`, up to the eye width's scale)."""
    return points[:, 0] - 0.5 * (points[:, 1] + points[:, 2])


def eye_points(landmarks: np.ndarray, region: Any, name: str) -> np.ndarray | None:
    """The truth's (3, 2) :data:`POINTS` in crop px of region ``name`` (its stored order), or
    None for a toy build's all-zero landmarks."""
    from revavatar.core.landmarks import SCHEMES  # noqa: PLC0415

    pts = np.asarray(landmarks, dtype=np.float64)
    if len(pts) < 478 or not np.any(pts):
        return None
    eye = SCHEMES["mediapipe478"].eyes[EYE_SIDES[name]]
    return region.canonical_to_crop(pts[[eye.iris, *eye.corners]])


def augment(img: np.ndarray, pts: np.ndarray,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random similarity (shift up to 4 px, scale 0.9-1.1, roll up to 6 deg) and photometric
    change (gain, gamma, blur, noise) of a uint8 crop and its points.

    The aligners' outputs differ from the truth crops by small moves, blur and grain; the critic
    has to read those as faithfully as the truth, so it is trained on such copies.
    """
    h, w = img.shape[:2]
    a = math.radians(rng.uniform(-6, 6))
    s = rng.uniform(0.9, 1.1)
    c = np.array([(w - 1) / 2.0, (h - 1) / 2.0])
    rot = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    m = np.hstack([rot, (c - rot @ c + rng.uniform(-4, 4, 2))[:, None]])
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    x = out.astype(np.float32) / 255.0
    x = np.clip(x * rng.uniform(0.75, 1.25) + rng.uniform(-0.08, 0.08), 0.0, 1.0)
    x = x ** rng.uniform(0.75, 1.33)
    sigma = rng.uniform(0.0, 1.2)
    if sigma > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x = x + rng.normal(0.0, rng.uniform(0.0, 0.03), x.shape).astype(np.float32)
    return (np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8),
            pts @ m[:, :2].T + m[:, 2])


#: where the critic's labels come from (EyeLandmarkSet)
LABELS: Final = ("build", "probe")


#: the key of a label cache's build stamp (sample keys are digits)
_SOURCE: Final = "source"


def probe_labels(entries: list[dict[str, Any]], copies: int,
                 cache: Path | None = None, source: str = "") -> dict[int, np.ndarray]:
    """Sample index -> (478, 2) points the evaluation's gaze probe finds on the truth face.

    The build's own landmarks come from the source frame and disagree with what the probe reads
    on the rendered truth by a few degrees of gaze, a floor for a critic trained on them. The
    probe's own reading (``copies`` jittered copies, averaged) is the target the evaluation
    compares against. Detection costs ~10 ms per copy, so the labels are kept in ``cache``
    (npz) and only missing samples are detected. Sample indices name other faces in another
    build: a cache stamped with another ``source`` (the build's ``build_key``) is set aside.
    """
    from revavatar.learning.data import read_image  # noqa: PLC0415
    from revavatar.learning.eval_align import GazeProbe  # noqa: PLC0415
    from revavatar.learning.trainer import progress  # noqa: PLC0415

    found: dict[int, np.ndarray] = {}
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            made = str(z[_SOURCE]) if _SOURCE in z.files else None
            if made == source:
                found = {int(k): z[k] for k in z.files if k != _SOURCE}
            else:
                warnings.warn(f"{cache}: labels of build {made!r}, not {source!r}; detecting "
                              "them again", stacklevel=2)
    todo = [e for e in entries if int(e["index"]) not in found]
    if todo:
        probe = GazeProbe(copies)
        for e in progress(len(todo), desc="probe labels", unit="face", iterable=todo):
            pts = probe.points(read_image(e["gt"]))
            found[int(e["index"])] = pts if pts is not None else np.zeros((0, 2))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, **{str(k): v for k, v in found.items()}, **{_SOURCE: np.array(source)})
    return found


class EyeLandmarkSet:
    """Both eyes' truth crops of a VR-Face split as left-eye crops (right ones mirrored), with
    their points; decoded once into memory (12 KB per crop).

    ``labels``: ``"build"`` (each sample's ``landmarks.npy``) or ``"probe"`` (what the
    evaluation's gaze probe reads on the truth face, :func:`probe_labels`, ``copies`` copies,
    cached in ``cache``).
    """

    def __init__(self, root: str | Path, split: str, limit: int | None = None, *,
                 labels: str = "build", copies: int = 4, cache: Path | None = None) -> None:
        from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415
        from revavatar.learning.data import VRFaceIndex, read_image  # noqa: PLC0415

        if labels not in LABELS:
            msg = f"unknown labels {labels!r}; expected one of {', '.join(LABELS)}"
            raise ValueError(msg)
        index = VRFaceIndex(root)
        layout = CanonicalLayout(index.layout_size)
        entries = index.samples(split)[:limit]
        probed = (probe_labels(entries, copies, cache, str(index.meta.get("build_key", "")))
                  if labels == "probe" else {})
        imgs, pts = [], []
        for e in entries:
            lm = probed[int(e["index"])] if probed else np.load(e["landmarks"])
            for name in EYE_SIDES:
                p = eye_points(lm, layout.region(name), name)
                if p is None:
                    continue
                img = read_image(e[f"gt_{name}"], gray=True)
                if EYE_SIDES[name] == "right":
                    img = np.ascontiguousarray(img[:, ::-1])
                    p = mirror_points(p, img.shape[1])
                imgs.append(img)
                pts.append(p)
        if not imgs:
            msg = f"{index.root}: no {split} samples with landmarks"
            raise ValueError(msg)
        self.images = np.stack(imgs)
        self.points = np.stack(pts).astype(np.float32)

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, idx: np.ndarray, rng: np.random.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) crops in [-1, 1] and (N, 3, 2) points; augmented when ``rng`` is given."""
        imgs, pts = [], []
        for i in idx:
            img, p = self.images[i], self.points[i]
            if rng is not None:
                img, p = augment(img, p, rng)
            imgs.append(img)
            pts.append(p)
        x = torch.from_numpy(np.stack(imgs)).float().div_(127.5).sub_(1.0)[:, None]
        return x, torch.from_numpy(np.stack(pts).astype(np.float32))


def save_eye_landmarks(net: EyeLandmarkNet, out: str | Path, card: dict[str, Any]) -> Path:
    """Weights (safetensors), config and card into folder ``out``."""
    from safetensors.torch import save_file  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(out / "weights.safetensors"))
    card = {"config": asdict(net.config), "points": list(POINTS),
            "params": sum(p.numel() for p in net.parameters()), **card}
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / "README.md").write_text(_readme(card))
    return out


def _readme(card: dict[str, Any]) -> str:
    val = card.get("val") or {}
    figures = (f"on the val split's truth crops ({val['n']} crops, both eyes): iris "
               f"{val['iris_px']:.2f} px, corners {val['corners_px']:.2f} px, iris offset "
               f"{val['offset_px']:.2f} px, gaze from the points vs the labels "
               f"{val['gaze_deg']:.2f} deg mean (p95 {val['gaze_deg_p95']:.2f})" if val else "-")
    return "\n".join([
        "# Eye-landmark gaze critic (`learning.eye_landmarks`)", "",
        "- Task: gray eye crop (128x96, canonical layout 256) -> iris centre and both eye corners "
        "(px), heatmaps at half resolution read by a soft argmax; right eyes are mirrored in and "
        "out.",
        "- Use: the frozen yardstick of `revavatar train align --lambda-gaze` (the gap between "
        "the aligned and true crops' iris offsets). It runs only in training, so it has no ONNX "
        "export; the evaluation's gaze probe stays MediaPipe's Face Mesh.",
        f"- Network: width {card['config']['width']}, {card['params']:,} parameters; labels: "
        + ("what the evaluation's gaze probe (MediaPipe Face Mesh) reads on each truth face, "
           f"mean of {card.get('probe_copies')} jittered copies"
           if card.get("labels") == "probe" else
           "each VR-Face sample's Face Mesh points of the truth (`landmarks.npy`)")
        + ", mapped into the crop.",
        f"- Data: `{card.get('data')}`, train split, {card.get('train_crops')} crops; augmented "
        "by small similarities, gain, gamma, blur and noise.",
        f"- Training: {card.get('steps')} steps, batch {card.get('batch')}, Adam lr "
        f"{card.get('lr')} (cosine to 0), CPU {card.get('threads')} threads, fp32, wall time "
        f"{card.get('wall_s')} s.",
        f"- Figures: {figures}.",
        f"- Command: `{card.get('command')}`", ""])


def load_eye_landmarks(folder: str | Path) -> EyeLandmarkNet:
    """The trained critic in ``folder`` (eval mode, frozen).

    Raises:
        FileNotFoundError: the folder has no weights.
    """
    from safetensors.torch import load_file  # noqa: PLC0415

    folder = Path(folder)
    if not (folder / "weights.safetensors").is_file():
        msg = f"{folder}: no eye-landmark weights (train them: revavatar train eye-landmarks)"
        raise FileNotFoundError(msg)
    card = json.loads((folder / "card.json").read_text())
    net = EyeLandmarkNet(EyeLandmarkConfig.from_dict(card["config"]))
    net.load_state_dict(load_file(str(folder / "weights.safetensors")))
    net.eval().requires_grad_(False)
    return net
