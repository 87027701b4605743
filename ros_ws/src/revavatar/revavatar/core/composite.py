"""Paste aligned headset crops onto the enrollment DP (the paper's "composite" input).

The aligners deliver each headset camera as a crop of one canonical region (gray for the IR eye
cameras, gray or colour for the lower face), stored at the region's ``crop_size``, which is larger
than the region's box in the canonical face. The composite puts every crop back at its box of the
aligned DP so the restorer (classical or learned) sees one canonical face: the DP outside the
regions, the live headset view inside.

Gray crops are pasted as *luminance*: inside the box the DP is converted to YCrCb, its Y channel
is replaced by the crop and the result is converted back. The paper pastes grayscale eye crops
onto the colour DP; keeping the DP's chroma under the live luminance avoids a gray hole in a colour
face while still showing exactly what the camera saw (``gray_mode="gray"`` pastes the plain gray
crop instead, for comparisons).

Shape checks run at the boundary and raise :class:`ShapeError` (a ``ValueError`` carrying the
actual and expected shapes). The real-time path may switch them off with the environment variable
``REVAVATAR_NO_CHECKS=1`` (read at import) or :func:`set_checks` at run time; the other stage cores
(restoration, display, metrics) share the same switch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

if TYPE_CHECKING:
    from revavatar.core.canonical import CanonicalLayout

__all__ = [
    "GRAY_MODES",
    "ShapeError",
    "check_image",
    "checks_enabled",
    "composite",
    "eye_over",
    "feathered_alpha",
    "fill_unseen",
    "match_gamma",
    "match_histogram",
    "match_tone",
    "paste_region",
    "set_checks",
]

#: How a gray crop is put into the colour DP: "luma" replaces Y of YCrCb, "gray" pastes gray.
GRAY_MODES: Final = ("luma", "gray")

_checks: bool = os.environ.get("REVAVATAR_NO_CHECKS", "") != "1"


class ShapeError(ValueError):
    """An image whose shape or dtype does not match what a stage core expects.

    Attributes:
        actual: the shape (and dtype) that was given.
        expected: a human-readable description of what was expected.
    """

    def __init__(self, what: str, actual: object, expected: object) -> None:
        self.actual = actual
        self.expected = expected
        super().__init__(f"{what}: expected {expected}, got {actual}")


def checks_enabled() -> bool:
    """Whether boundary shape checks run (off with ``REVAVATAR_NO_CHECKS=1``)."""
    return _checks


def set_checks(enabled: bool) -> None:  # noqa: FBT001 - a switch is the point of this function
    """Switch boundary shape checks on or off for all stage cores at run time."""
    global _checks  # noqa: PLW0603 - one process-wide switch, like kornia's
    _checks = bool(enabled)


def check_image(
    image: object,
    what: str,
    *,
    size: tuple[int, int] | None = None,
    channels: tuple[int, ...] = (1, 3),
) -> np.ndarray:
    """Validate a uint8 image (gray (H, W), (H, W, 1) or BGR (H, W, 3)).

    Args:
        image: the array to check.
        what: name used in the error message ("dp", "crop 'left_eye'", ...).
        size: required ``(width, height)``, or None for any non-empty size.
        channels: accepted channel counts (1 covers both (H, W) and (H, W, 1)).

    Returns:
        ``image`` unchanged (as an ndarray), so calls can be chained.

    Raises:
        ShapeError: wrong type, dtype, rank, channel count or size.
    """
    if not isinstance(image, np.ndarray):
        raise ShapeError(what, type(image).__name__, "a numpy uint8 array")
    if image.dtype != np.uint8:
        raise ShapeError(what, f"dtype {image.dtype}", "dtype uint8")
    nch = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else -1)
    if nch not in channels:
        shapes = " or ".join("(H, W)" if c == 1 else f"(H, W, {c})" for c in channels)
        raise ShapeError(what, f"shape {image.shape}", f"shape {shapes}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ShapeError(what, f"shape {image.shape}", "a non-empty image")
    if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
        exp = (size[1], size[0], *image.shape[2:])
        raise ShapeError(what, f"shape {image.shape}", f"shape {exp} (width x height {size})")
    return image


def _resize_to(image: np.ndarray, wh: tuple[int, int]) -> np.ndarray:
    """Resize to (w, h): area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if (image.shape[1], image.shape[0]) == wh:
        return image
    shrink = wh[0] < image.shape[1] or wh[1] < image.shape[0]
    interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    out = cv2.resize(image, wh, interpolation=interp)
    return out


def paste_region(
    canvas: np.ndarray,
    crop: np.ndarray,
    box: tuple[int, int, int, int],
    *,
    gray_mode: str = "luma",
) -> None:
    """Paste one crop into ``canvas`` (BGR, modified in place) at ``box`` (x0, y0, x1, y1).

    The crop is resized to the box; a gray crop goes in as luminance (``"luma"``) or as plain
    gray (``"gray"``), a BGR crop is copied as is. Boxes are clipped to the canvas.

    Raises:
        ValueError: unknown ``gray_mode`` (the message lists the valid ones).
    """
    if gray_mode not in GRAY_MODES:
        msg = f"unknown gray_mode {gray_mode!r}; expected one of {', '.join(GRAY_MODES)}"
        raise ValueError(msg)
    h, w = canvas.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if cx1 <= cx0 or cy1 <= cy0:
        return
    patch = _resize_to(crop, (x1 - x0, y1 - y0))
    patch = patch[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
    if patch.ndim == 3 and patch.shape[2] == 1:
        patch = patch[:, :, 0]
    dst = canvas[cy0:cy1, cx0:cx1]
    if patch.ndim == 3:
        dst[...] = patch
    elif gray_mode == "luma":
        ycc = cv2.cvtColor(np.ascontiguousarray(dst), cv2.COLOR_BGR2YCrCb)
        ycc[:, :, 0] = patch
        dst[...] = cv2.cvtColor(ycc, cv2.COLOR_YCrCb2BGR)
    else:
        dst[...] = patch[:, :, None]


def feathered_alpha(binary: np.ndarray, feather_px: float) -> np.ndarray:
    """Soft alpha in [0, 1] from a binary mask: ramps up over ``feather_px`` inside its border.

    The ramp is the Euclidean distance to the nearest outside pixel, so adjacent boxes (the two
    eyes share an edge) feather as one area with no dip at their seam, and an edge on the image
    border stays hard (there is nothing to blend with there).
    """
    inside = (binary > 0).astype(np.uint8)
    if feather_px <= 0:
        return inside.astype(np.float32)
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(dist / float(feather_px), 0.0, 1.0).astype(np.float32)


def match_tone(image: np.ndarray, like: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` with each channel's mean and standard deviation over ``mask`` made those of
    ``like`` over the same pixels (a global gain and offset per channel).

    The DP is a visible-light photo and an eye camera is infrared: before DP pixels fill what the
    camera cannot see, their tone must be the camera's, or the seam is a step in brightness. One
    affine per channel is what an IR gain/gamma change mostly is; fewer than 16 pixels in common
    leave ``image`` unchanged (nothing to fit).
    """
    sel = np.asarray(mask, bool)
    if int(sel.sum()) < 16:
        return image
    src = image.astype(np.float32).reshape(*image.shape[:2], -1)
    ref = like.astype(np.float32).reshape(*like.shape[:2], -1)
    out = np.empty_like(src)
    for c in range(src.shape[2]):
        s, r = src[:, :, c][sel], ref[:, :, c][sel]
        gain = (float(r.std()) + 1e-3) / (float(s.std()) + 1e-3)
        out[:, :, c] = (src[:, :, c] - float(s.mean())) * gain + float(r.mean())
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out.reshape(image.shape)


def match_histogram(image: np.ndarray, like: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """``image`` through the monotone gray-level map that gives it ``like``'s histogram over
    ``mask`` (the whole image for None); each channel on its own. An empty mask leaves ``image``
    unchanged.

    Where :func:`match_tone` fits a gain and offset, this also undoes a gamma: any tone curve
    that keeps dark darker. It moves no pixel, so a shape (an iris, a lid) stays where it is and
    only its gray levels change. The gaze probe of ``eval align`` reads crops through it: Face
    Mesh reads a tone change of the eye alone as a turn (the truth crop relit by VR-Face's
    lighting effect reads 1.26 deg on 72 open test eyes, matched back 0.54), while a real iris
    turn reads with the same gain either way (0.65).
    """
    if image.ndim == 3:
        return np.dstack([match_histogram(image[..., c], like[..., c], mask)
                          for c in range(image.shape[2])])
    sel = np.ones(image.shape, bool) if mask is None else np.asarray(mask, bool)
    if not sel.any():
        return image

    def quantiles(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        levels, counts = np.unique(x, return_counts=True)
        return levels, (np.cumsum(counts) - 0.5 * counts) / counts.sum()

    levels, q = quantiles(image[sel])
    like_levels, like_q = quantiles(like[sel])
    mapped = np.interp(q, like_q, like_levels)
    # levels the mask does not hold (a pupil darker than any skin pixel) keep their order and
    # contrast: linear between the map's ends and black / white, not clamped to the ends
    if levels[0] > 0:
        levels, mapped = np.r_[0, levels], np.r_[0.0, mapped]
    if levels[-1] < 255:
        levels, mapped = np.r_[levels, 255], np.r_[mapped, 255.0]
    lut = np.interp(np.arange(256), levels, mapped)
    return np.rint(lut[image]).astype(np.uint8)


def match_gamma(image: np.ndarray, like: np.ndarray, mask: np.ndarray,
                quantiles: tuple[float, float] = (25.0, 75.0)) -> np.ndarray:
    """``image`` through the power law ``y = a x^g`` that takes its ``quantiles`` of gray over
    ``mask`` to ``like``'s (gray or each channel).

    An exposure change is a gain and a gamma; two quantiles fix both. Unlike a full histogram
    match, two mid quantiles of one kind of surface (skin) hardly depend on what else the two
    images show, so an iris, a lash or a shadow that only one of them has does not bend the map,
    and levels outside the fitted range (a pupil) keep their contrast. Fewer than 16 pixels, or
    a degenerate spread, leave ``image`` unchanged.
    """
    if image.ndim == 3:
        return np.dstack([match_gamma(image[..., c], like[..., c], mask, quantiles)
                          for c in range(image.shape[2])])
    sel = np.asarray(mask, bool)
    if int(sel.sum()) < 16:
        return image
    src, dst = (np.log(np.maximum(np.percentile(x[sel].astype(np.float64), quantiles), 1.0))
                for x in (image, like))
    if src[1] - src[0] < 1e-3 or dst[1] - dst[0] < 1e-3:
        return image
    g = (dst[1] - dst[0]) / (src[1] - src[0])
    log_a = dst.mean() - g * src.mean()
    x = np.maximum(np.arange(256, dtype=np.float64), 0.5)
    lut = np.clip(np.exp(log_a + g * np.log(x)), 0.0, 255.0)
    return np.rint(lut[image]).astype(np.uint8)


def eye_over(eye: np.ndarray, around: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``eye``'s pixels where ``weight`` (``CanonicalLayout.eye_weight``) is 1, ``around``'s
    where it is 0, mixed on the feathered rim (uint8)."""
    wgt = weight[..., None] if eye.ndim == 3 else weight
    return np.rint(wgt * eye + (1.0 - wgt) * around).astype(np.uint8)


def fill_unseen(crop: np.ndarray, seen: np.ndarray, fill: np.ndarray,
                feather_px: float = 4.0) -> np.ndarray:
    """``crop`` where its camera sees (``seen``), ``fill`` elsewhere, blended over ``feather_px``
    inside the seen border; all three at the crop's size, ``fill`` already tone-matched
    (:func:`match_tone`). The crop-level form of what :func:`composite` does with the DP."""
    alpha = feathered_alpha(np.asarray(seen, np.uint8), feather_px)
    if crop.ndim == 3:
        alpha = alpha[:, :, None]
    out = fill.astype(np.float32) + alpha * (crop.astype(np.float32) - fill.astype(np.float32))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def composite(
    dp_bgr: np.ndarray,
    crops: Mapping[str, np.ndarray],
    layout: CanonicalLayout,
    *,
    feather_px: float = 0.0,
    gray_mode: str = "luma",
    valid: Mapping[str, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Paste aligned crops onto the aligned DP at their canonical region boxes.

    Crops are pasted in the mapping's order (a later crop wins where boxes overlap; the standard
    regions do not overlap). With ``feather_px > 0`` the pasted layer is blended into the DP with
    an alpha that rises from 0 at the outer border of the union of boxes to 1 at ``feather_px``
    inside it, hiding the hard seam at the cost of a little DP showing through near the edge.

    Args:
        dp_bgr: aligned DP, uint8 BGR (size, size, 3) of ``layout``.
        crops: region name (``layout.region`` names, e.g. "left_eye") -> uint8 crop, gray
            (H, W) / (H, W, 1) or BGR (H, W, 3), normally at the region's ``crop_size``; any other
            size is resized to the box.
        layout: the canonical layout the DP is aligned to.
        feather_px: width of the soft border in canonical pixels (0 = hard paste).
        gray_mode: "luma" (crop replaces Y of YCrCb, DP chroma kept) or "gray".
        valid: optional region name -> bool mask at the crop's size of the pixels its camera
            actually sees (``HomographyAligner.valid_mask``); elsewhere the DP is kept, so the
            black border of an oblique camera is never pasted onto the face.

    Returns:
        ``(bgr, mask)``: the composite uint8 (size, size, 3) and the uint8 (size, size) mask of
        pasted pixels (255 inside the union of boxes, the feather ramp at its border, 0 outside).

    Raises:
        ShapeError: DP or crop of the wrong shape/dtype (when checks are enabled).
        ValueError: unknown region name or ``gray_mode``.
    """
    size = int(layout.size)
    if _checks:
        check_image(dp_bgr, "dp", size=(size, size), channels=(3,))
        for name, crop in crops.items():
            check_image(crop, f"crop {name!r}")
    if gray_mode not in GRAY_MODES:
        msg = f"unknown gray_mode {gray_mode!r}; expected one of {', '.join(GRAY_MODES)}"
        raise ValueError(msg)
    layer = dp_bgr.copy()
    binary = np.zeros((size, size), np.uint8)
    for name, crop in crops.items():
        box = layout.region(name).box_px
        x0, y0, x1, y1 = (max(v, 0) for v in box)
        if valid is not None and name in valid:
            seen = _resize_to(valid[name].astype(np.uint8), (x1 - x0, y1 - y0)) > 0
            before = layer[y0:y1, x0:x1].copy()
            paste_region(layer, crop, box, gray_mode=gray_mode)
            layer[y0:y1, x0:x1][~seen] = before[~seen]
            binary[y0:y1, x0:x1] |= seen.astype(np.uint8)
            continue
        paste_region(layer, crop, box, gray_mode=gray_mode)
        binary[y0:y1, x0:x1] = 1
    if feather_px <= 0:
        return layer, binary * np.uint8(255)
    alpha = feathered_alpha(binary, feather_px)
    blend = dp_bgr.astype(np.float32) + alpha[:, :, None] * (
        layer.astype(np.float32) - dp_bgr.astype(np.float32)
    )
    out = np.clip(np.rint(blend), 0, 255).astype(np.uint8)
    mask = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    return out, mask
