"""Image metrics for restored faces: SSIM, PSNR, full face and eye band, temporal flicker.

Definitions (fixed here so every table in the project means the same thing):

- **SSIM** is Wang et al. 2004 with an 11-tap Gaussian window (sigma 1.5), population covariance,
  K1 = 0.01, K2 = 0.03, data range 255, averaged over the image minus a 5 px border -- exactly
  ``skimage.metrics.structural_similarity(a, b, gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=255)`` (a test checks it), computed with OpenCV
  filters because it runs per frame. By default it is computed on **luminance** (BT.601 Y,
  ``cv2.COLOR_BGR2GRAY``): the eye region is restored from infrared crops whose colour comes from
  the DP, so structure is what SSIM should judge. ``on="bgr"`` gives skimage's per-channel mean.
- **PSNR** uses peak 255 and the MSE over all pixels and channels (``on="bgr"``, default) or over
  luminance (``on="luma"``). Identical images (MSE 0, infinite PSNR) are reported as
  :data:`PSNR_CAP_DB` = 100 dB, and no value exceeds it, so averages stay finite and JSON-safe.
- **eye** metrics use the layout's ``eye_band`` box, the part a headset hides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from revavatar.core.composite import ShapeError, check_image, checks_enabled

if TYPE_CHECKING:
    from revavatar.core.canonical import CanonicalLayout

__all__ = [
    "CHANNEL_MODES",
    "PSNR_CAP_DB",
    "FlickerMeter",
    "MetricAccumulator",
    "psnr",
    "region_metrics",
    "ssim",
    "temporal_flicker",
]

#: PSNR reported for identical images and upper bound of every PSNR value (dB).
PSNR_CAP_DB: Final = 100.0
#: What the metrics are computed on: "luma" (BT.601 Y) or "bgr" (all channels).
CHANNEL_MODES: Final = ("luma", "bgr")

_SIGMA: Final = 1.5
_RADIUS: Final = int(3.5 * _SIGMA + 0.5)  # skimage/ndimage truncate=3.5 -> 11-tap window
_WIN: Final = 2 * _RADIUS + 1
_C1: Final = (0.01 * 255.0) ** 2
_C2: Final = (0.03 * 255.0) ** 2
_KERNEL: Final = cv2.getGaussianKernel(_WIN, _SIGMA, cv2.CV_64F)


def _pair(a: np.ndarray, b: np.ndarray) -> None:
    """Check two images are uint8 and of the same shape."""
    check_image(a, "a")
    check_image(b, "b")
    if a.shape != b.shape:
        raise ShapeError("b", f"shape {b.shape}", f"the shape of a {a.shape}")


def _planes(img: np.ndarray, on: str) -> list[np.ndarray]:
    """float64 planes to measure: luminance or each channel."""
    if on not in CHANNEL_MODES:
        msg = f"unknown channel mode {on!r}; expected one of {', '.join(CHANNEL_MODES)}"
        raise ValueError(msg)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 2:
        return [img.astype(np.float64)]
    if on == "luma":
        return [cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float64)]
    return [img[:, :, c].astype(np.float64) for c in range(img.shape[2])]


def _blur(x: np.ndarray) -> np.ndarray:
    """Separable Gaussian window (border values are cropped away afterwards)."""
    return cv2.sepFilter2D(x, cv2.CV_64F, _KERNEL, _KERNEL, borderType=cv2.BORDER_REFLECT)


def _ssim_plane(x: np.ndarray, y: np.ndarray) -> float:
    ux, uy = _blur(x), _blur(y)
    vx = _blur(x * x) - ux * ux
    vy = _blur(y * y) - uy * uy
    vxy = _blur(x * y) - ux * uy
    s = ((2 * ux * uy + _C1) * (2 * vxy + _C2)) / ((ux * ux + uy * uy + _C1) * (vx + vy + _C2))
    p = _RADIUS
    return float(s[p:-p, p:-p].mean(dtype=np.float64))


def ssim(a: np.ndarray, b: np.ndarray, *, on: str = "luma") -> float:
    """Gaussian-window SSIM of two uint8 images (see the module docstring for the definition).

    Args:
        a: uint8 gray or BGR image.
        b: same shape as ``a``.
        on: "luma" (default) or "bgr" (mean of per-channel SSIM).

    Returns:
        SSIM in [-1, 1]; 1 for identical images.

    Raises:
        ShapeError: not uint8 images of one shape (checks enabled).
        ValueError: image smaller than the 11 x 11 window, or unknown ``on``.
    """
    if checks_enabled():
        _pair(a, b)
    if min(a.shape[:2]) < _WIN:
        msg = f"SSIM needs images of at least {_WIN}x{_WIN} px, got shape {a.shape}"
        raise ValueError(msg)
    pa, pb = _planes(a, on), _planes(b, on)
    return float(np.mean([_ssim_plane(x, y) for x, y in zip(pa, pb, strict=True)]))


def psnr(a: np.ndarray, b: np.ndarray, *, on: str = "bgr") -> float:
    """PSNR (dB) of two uint8 images, peak 255, capped at :data:`PSNR_CAP_DB` (identical -> cap).

    Args:
        a: uint8 gray or BGR image.
        b: same shape as ``a``.
        on: "bgr" (default, MSE over all channels) or "luma".

    Raises:
        ShapeError: not uint8 images of one shape (checks enabled).
        ValueError: unknown ``on``.
    """
    if checks_enabled():
        _pair(a, b)
    pa, pb = _planes(a, on), _planes(b, on)
    mse = float(np.mean([np.mean((x - y) ** 2) for x, y in zip(pa, pb, strict=True)]))
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def region_metrics(
    pred: np.ndarray, gt: np.ndarray, layout: CanonicalLayout
) -> dict[str, dict[str, float]]:
    """SSIM and PSNR of a restored face against the true face, full and in the eye band.

    Args:
        pred: restored uint8 BGR (size, size, 3) canonical face.
        gt: ground-truth aligned face of the same shape.
        layout: the canonical layout (its ``eye_band`` region is the eye box).

    Returns:
        ``{"full": {"ssim": .., "psnr": ..}, "eye": {"ssim": .., "psnr": ..}}`` (Python floats).

    Raises:
        ShapeError: images not uint8 of the layout's size or of different shapes (checks enabled).
    """
    if checks_enabled():
        check_image(pred, "pred", size=(layout.size, layout.size))
        _pair(pred, gt)
    x0, y0, x1, y1 = layout.region("eye_band").box_px
    pe, ge = pred[y0:y1, x0:x1], gt[y0:y1, x0:x1]
    return {
        "full": {"ssim": ssim(pred, gt), "psnr": psnr(pred, gt)},
        "eye": {"ssim": ssim(pe, ge), "psnr": psnr(pe, ge)},
    }


def temporal_flicker(
    outputs: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    box: tuple[int, int, int, int] | None = None,
) -> float:
    """Excess temporal change of the outputs over the ground truth inside ``box``.

    ``mean_t mean_px |out_t - out_{t-1}|  -  mean_t mean_px |gt_t - gt_{t-1}|`` in 8-bit
    intensity units over all channels: 0 when the output changes as much as the real face does,
    positive when it flickers more (negative when it is steadier than the truth, e.g. frozen).

    Args:
        outputs: restored frames in time order (uint8, one shape).
        truths: the ground-truth frames, same count and shape.
        box: (x0, y0, x1, y1) pixels to measure in, or None for the whole frame.

    Raises:
        ValueError: fewer than two frames or different frame counts.
        ShapeError: frames of different shapes (checks enabled).
    """
    if len(outputs) != len(truths):
        msg = f"temporal_flicker: {len(outputs)} outputs but {len(truths)} ground-truth frames"
        raise ValueError(msg)
    if len(outputs) < 2:
        msg = f"temporal_flicker needs at least 2 frames, got {len(outputs)}"
        raise ValueError(msg)
    meter = FlickerMeter({"box": box})
    for o, t in zip(outputs, truths, strict=True):
        meter.add(o, t)
    return meter.summary()["box"]


class FlickerMeter:
    """Streaming :func:`temporal_flicker` over named regions of a video (one pass, O(1) frames).

    A live run cannot keep its whole output in memory, so the meter keeps only the previous
    output/truth pair and running sums of their frame-to-frame changes.

    Args:
        regions: name -> (x0, y0, x1, y1) box, or None for the whole frame.
    """

    def __init__(self, regions: Mapping[str, tuple[int, int, int, int] | None]) -> None:
        self.regions = dict(regions)
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self._sums = {name: [0.0, 0.0] for name in self.regions}  # output, truth
        self.pairs = 0

    def add(self, output: np.ndarray, truth: np.ndarray) -> None:
        """Add the next frame (output and its ground truth, uint8, one shape)."""
        if checks_enabled():
            _pair(output, truth)
            if self._prev is not None and output.shape != self._prev[0].shape:
                raise ShapeError("output", f"shape {output.shape}",
                                 f"the shape of the previous frame {self._prev[0].shape}")
        cur = (output.astype(np.int16), truth.astype(np.int16))
        if self._prev is not None:
            for name, box in self.regions.items():
                for k in (0, 1):
                    a, b = cur[k], self._prev[k]
                    if box is not None:
                        x0, y0, x1, y1 = box
                        a, b = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
                    self._sums[name][k] += float(np.mean(np.abs(a - b)))
            self.pairs += 1
        self._prev = cur

    def summary(self) -> dict[str, float]:
        """name -> excess change (8-bit units, see :func:`temporal_flicker`); {} before 2 frames."""
        if self.pairs == 0:
            return {}
        return {name: (o - t) / self.pairs for name, (o, t) in self._sums.items()}

    def truth_change(self) -> dict[str, float]:
        """name -> the truth's own mean frame-to-frame change (the scale of :meth:`summary`)."""
        if self.pairs == 0:
            return {}
        return {name: t / self.pairs for name, (_, t) in self._sums.items()}


class MetricAccumulator:
    """Average :func:`region_metrics` over frames into a JSON-ready summary.

    Example:
        >>> acc = MetricAccumulator(layout)             # doctest: +SKIP
        >>> for pred, gt in pairs:                      # doctest: +SKIP
        ...     acc.update(pred, gt)
        >>> json.dumps(acc.summary())                   # doctest: +SKIP
    """

    def __init__(self, layout: CanonicalLayout | None = None) -> None:
        """Args: layout: needed by :meth:`update`; :meth:`add` takes ready metric dicts."""
        self.layout = layout
        self._values: dict[str, dict[str, list[float]]] = {}
        self.frames = 0

    def add(self, metrics: Mapping[str, Mapping[str, float]]) -> None:
        """Add one frame's ``{"full": {...}, "eye": {...}}`` (any region/metric names)."""
        for region, values in metrics.items():
            slot = self._values.setdefault(str(region), {})
            for name, value in values.items():
                slot.setdefault(str(name), []).append(float(value))
        self.frames += 1

    def update(self, pred: np.ndarray, gt: np.ndarray) -> dict[str, dict[str, float]]:
        """Compute :func:`region_metrics` for one frame, add it and return it.

        Raises:
            ValueError: the accumulator was built without a layout.
        """
        if self.layout is None:
            msg = "MetricAccumulator.update needs a layout; build it as MetricAccumulator(layout)"
            raise ValueError(msg)
        metrics = region_metrics(pred, gt, self.layout)
        self.add(metrics)
        return metrics

    def summary(self) -> dict[str, object]:
        """``{"frames": n, "full": {"ssim": mean, "psnr": mean}, "eye": {...}, "std": {...}}``.

        Means over the frames added (PSNR of identical frames counts as the 100 dB cap);
        ``"std"`` holds the population standard deviations in the same layout. With no frames
        only ``{"frames": 0}`` is returned. All values are plain Python floats/ints.
        """
        out: dict[str, object] = {"frames": self.frames}
        if self.frames == 0:
            return out
        std: dict[str, dict[str, float]] = {}
        for region, values in self._values.items():
            out[region] = {k: float(np.mean(v)) for k, v in values.items()}
            std[region] = {k: float(np.std(v)) for k, v in values.items()}
        out["std"] = std
        return out
