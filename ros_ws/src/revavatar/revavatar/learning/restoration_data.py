"""Training and evaluation triples (composite x, reference z, ground truth y) for the restorer.

The restorer sees at run time exactly ``composite(dp, crops, layout)``: the aligners' crops
(gray IR eye crops, the lower-face crop in the camera's colour) pasted onto the enrollment DP.
This module builds ``x`` the same way, with :func:`revavatar.core.composite.composite`, so the
network never meets a composite it was not trained on.

Which crops: the ground-truth frontal crops of the sample, **degraded like an aligner's
output** (:func:`aligner_like_crops`): a small random similarity misregistration per region
(shift <= 3 % of the crop, rotation <= 3 deg, scale <= 4 %, the residual of a good aligner), gray
for the infrared eye cameras (BT.601 luma, as the learned aligner's targets), an IR-like gain and
gamma, a blur of sigma <= 1.2 px (resampling of the rectification) and sensor noise. This does not
depend on which aligner (homography or learned) is deployed, trains and evaluates on one
definition, and keeps the restorer's job separable from the aligner's. Whether the eye crops are
gray follows the build's headset (its raw eye views are gray when the camera is infrared).

Reference ``z``: during training a random *other* aligned frame of the same identity (the build's
reference pool of that identity plus the ground-truth frames of its other samples), as the paper
does; at evaluation the sample's own ``reference`` (the DP of that sample). The composite is built
on ``z``, exactly as at run time where ``z`` is the DP.

Items are tensors in the convention of :mod:`revavatar.learning.data` ([-1, 1], BGR, (3, H, W)).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from revavatar.core.canonical import REGION_NAMES, CanonicalLayout
from revavatar.core.composite import composite
from revavatar.errors import InputError
from revavatar.learning.data import VRFaceIndex, read_image, to_tensor

__all__ = ["DegradeConfig", "RestorationTriples", "aligner_like_crops", "build_composite"]

_EYES: Final = ("left_eye", "right_eye")


@dataclass(frozen=True)
class DegradeConfig:
    """Ranges of the aligner-like degradation (see the module docstring)."""

    shift: float = 0.03  # of the crop size
    rot_deg: float = 3.0
    scale: float = 0.04
    gain: tuple[float, float] = (0.6, 1.2)
    gamma: tuple[float, float] = (0.8, 1.25)
    blur_sigma: float = 1.2
    noise_sigma: float = 6.0  # 8-bit units


def _jittered_crop(gt: np.ndarray, layout: CanonicalLayout, name: str,
                   rng: np.random.Generator, d: DegradeConfig) -> np.ndarray:
    """Crop ``name`` of ``gt`` after a small random similarity about the region centre."""
    x0, y0, x1, y1 = layout.region(name).box_px
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ang = rng.uniform(-d.rot_deg, d.rot_deg)
    sc = 1.0 + rng.uniform(-d.scale, d.scale)
    m = cv2.getRotationMatrix2D((cx, cy), ang, sc)
    m[0, 2] += rng.uniform(-d.shift, d.shift) * (x1 - x0)
    m[1, 2] += rng.uniform(-d.shift, d.shift) * (y1 - y0)
    warped = cv2.warpAffine(gt, m, (gt.shape[1], gt.shape[0]), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REFLECT)
    return layout.crop_region(warped, name)


def _photometric(crop: np.ndarray, rng: np.random.Generator, d: DegradeConfig,
                 ir: bool) -> np.ndarray:
    x = crop.astype(np.float32) / 255.0
    if ir:
        x = np.clip(x * rng.uniform(*d.gain), 0.0, 1.0) ** rng.uniform(*d.gamma)
    else:  # visible camera: mild exposure and white-balance error
        x = np.clip(x * rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, 3), 0.0, 1.0)
    sigma = rng.uniform(0.0, d.blur_sigma)
    if sigma > 0.3:
        x = cv2.GaussianBlur(x, (0, 0), sigma)
    x = x + rng.normal(0.0, rng.uniform(0.0, d.noise_sigma) / 255.0, x.shape).astype(np.float32)
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)


def aligner_like_crops(gt: np.ndarray, layout: CanonicalLayout, rng: np.random.Generator,
                       gray_eyes: bool = True, gray_lower: bool = False,
                       degrade: DegradeConfig | None = None) -> dict[str, np.ndarray]:
    """The three region crops of ``gt`` as an aligner would deliver them (module docstring).

    Returns:
        region -> uint8 crop at the region's crop size: gray (H, W) for IR cameras, else BGR.
    """
    d = degrade or DegradeConfig()
    out: dict[str, np.ndarray] = {}
    for name in REGION_NAMES:
        crop = _jittered_crop(gt, layout, name, rng, d)
        ir = gray_eyes if name in _EYES else gray_lower
        if ir:
            crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        out[name] = _photometric(crop, rng, d, ir)
    return out


def build_composite(z: np.ndarray, crops: dict[str, np.ndarray],
                    layout: CanonicalLayout) -> np.ndarray:
    """The run-time composite: ``composite(z, crops, layout)`` (hard paste, gray as luma)."""
    return composite(z, crops, layout)[0]


class RestorationTriples(Dataset):
    """(x, z, y) triples of one split of a VR-Face build (see the module docstring).

    Args:
        root: VR-Face build folder.
        split: ``train`` | ``val`` | ``test``.
        train: random other-frame references, random degradation per draw and horizontal flips;
            otherwise the sample's own reference and a degradation seeded by the sample index
            (identical across runs and methods).
        size: network resolution (the build's layout size, or a smaller power of two; images
            are area-resized).
        limit: keep the first ``limit`` samples of the split.
        seed: base seed of the random draws.

    Raises:
        InputError: missing/incomplete build, no samples in ``split``, undecodable file.
    """

    def __init__(self, root: str | Path, split: str, train: bool = False, size: int | None = None,
                 limit: int | None = None, seed: int = 0) -> None:
        self.index = VRFaceIndex(root)
        self.entries = self.index.samples(split)[:limit]
        if not self.entries:
            msg = f"{self.index.root}: no {split} samples"
            raise InputError(msg)
        self.layout = CanonicalLayout(self.index.layout_size)
        self.size = int(size or self.layout.size)
        self.train, self.seed, self._draw = bool(train), int(seed), 0
        probe = cv2.imread(self.entries[0]["left_eye"], cv2.IMREAD_UNCHANGED)
        self.gray_eyes = probe is None or probe.ndim == 2
        probe = cv2.imread(self.entries[0]["lower_face"], cv2.IMREAD_UNCHANGED)
        self.gray_lower = probe is not None and probe.ndim == 2
        pools: dict[str, set[str]] = defaultdict(set)
        for e in self.entries:
            pools[e["identity"]].update((e["reference"], e["gt"]))
        self.pools = {k: sorted(v) for k, v in pools.items()}
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _img(self, path: str) -> np.ndarray:
        img = self._cache.get(path)
        if img is None:
            img = read_image(path)
            if len(self._cache) < 4000:  # ~200 KB each at 256 px: bounded memory
                self._cache[path] = img
        return img

    def set_step(self, step: int) -> None:
        """Key the training draws to the optimisation step, so a resumed run draws the same
        references, flips and degradations as an uninterrupted one."""
        self._draw = int(step) * 1024

    def _rng(self, i: int) -> np.random.Generator:
        if self.train:
            self._draw += 1
            return np.random.default_rng([self.seed, int(self.entries[i]["index"]), self._draw])
        return np.random.default_rng([self.seed, int(self.entries[i]["index"]), 7])

    def images(self, i: int) -> dict[str, Any]:
        """uint8 images of item ``i`` at the layout size: x, z, y, crops (no resizing)."""
        e = self.entries[i]
        rng = self._rng(i)
        y = self._img(e["gt"])
        if self.train:
            pool = [p for p in self.pools[e["identity"]] if p != e["gt"]] or [e["reference"]]
            z = self._img(pool[int(rng.integers(len(pool)))])
            if rng.random() < 0.5:
                y, z = np.ascontiguousarray(y[:, ::-1]), np.ascontiguousarray(z[:, ::-1])
        else:
            z = self._img(e["reference"])
        crops = aligner_like_crops(y, self.layout, rng, self.gray_eyes, self.gray_lower)
        return {"x": build_composite(z, crops, self.layout), "z": z, "y": y, "crops": crops}

    def _t(self, img: np.ndarray) -> torch.Tensor:
        if img.shape[0] != self.size:
            img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA)
        return to_tensor(img)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        im = self.images(i)
        return {"x": self._t(im["x"]), "z": self._t(im["z"]), "y": self._t(im["y"])}

    def batch(self, indices: list[int] | np.ndarray) -> dict[str, torch.Tensor]:
        """Stack items into (N, 3, H, W) tensors x, z, y (single process, no DataLoader)."""
        items = [self[int(i)] for i in indices]
        return {k: torch.stack([it[k] for it in items]) for k in ("x", "z", "y")}
