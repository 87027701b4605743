"""Classical restorers: paste the headset crops onto the DP, optionally Poisson-blended.

These are the baselines the learned restorer is measured against. ``PasteRestorer`` is the plain
composite (hard seams, IR luminance next to visible-light skin); ``PoissonRestorer`` keeps the
crops' gradients but solves for intensities that meet the DP at each region's border
(``cv2.seamlessClone``, NORMAL_CLONE), which removes the brightness/colour step an IR crop leaves
without any training.

The enrollment DP is aligned to the same canonical template as the crops, so its landmarks sit at
the layout's key points (up to the similarity fit's residual) and pasting at the region boxes is
pasting at the DP's own eyes and mouth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, Protocol

import cv2
import numpy as np

from revavatar.core.composite import check_image, checks_enabled, composite
from revavatar.core.onnx_restorer import OnnxRestorer

if TYPE_CHECKING:
    from revavatar.core.canonical import CanonicalLayout

__all__ = [
    "RESTORERS",
    "PasteRestorer",
    "PoissonRestorer",
    "Restorer",
    "create_restorer",
    "poisson_blend",
]

#: Padding (px) added around the canvas before cloning: seamlessClone zeroes the mask's outer
#: pixel ring and needs the clone rectangle inside the image, so regions touching the canvas edge
#: would otherwise be shrunk or rejected.
_PAD: Final = 8


class _HasDP(Protocol):
    """What a restorer needs from an enrollment Profile (``core.enrollment.Profile``)."""

    dp: np.ndarray


class Restorer(Protocol):
    """Anything that turns aligned headset crops into a canonical face image."""

    method: str

    def restore(self, crops: Mapping[str, np.ndarray]) -> np.ndarray:
        """Crops by region name -> restored uint8 BGR (size, size, 3)."""
        ...


def poisson_blend(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson-blend ``src`` into ``dst`` inside ``mask`` (all the same (H, W)), per component.

    Each connected component of the mask is cloned separately (NORMAL_CLONE), with the source
    taken from the same position as in the destination, so touching regions (the two eyes) are
    solved as one area with source gradients across their shared edge, and distant regions do not
    share one large clone rectangle. The canvas is reflect-padded so components touching the
    image edge can be cloned.

    Args:
        dst: uint8 BGR background (the DP).
        src: uint8 BGR foreground, already at its final position (the hard composite).
        mask: uint8 (H, W), non-zero where ``src`` is to be blended in.

    Returns:
        The blended uint8 BGR image (H, W, 3); ``dst`` where ``mask`` is empty.
    """
    binary = (mask > 0).astype(np.uint8)
    if not binary.any():
        return dst.copy()
    p = _PAD
    out = cv2.copyMakeBorder(dst, p, p, p, p, cv2.BORDER_REFLECT)
    src_p = cv2.copyMakeBorder(src, p, p, p, p, cv2.BORDER_REFLECT)
    bin_p = cv2.copyMakeBorder(binary, p, p, p, p, cv2.BORDER_CONSTANT, value=0)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(bin_p, connectivity=8)
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if w < 3 or h < 3 or area < 9:
            # Too thin to have an interior: the Poisson solution is the border itself.
            continue
        comp = np.where(labels == label, np.uint8(255), np.uint8(0))
        # seamlessClone places the mask's bounding rect at center - (w//2, h//2) in dst.
        center = (x + w // 2, y + h // 2)
        out = cv2.seamlessClone(src_p, out, comp, center, cv2.NORMAL_CLONE)
    return out[p:-p, p:-p].copy()


class PasteRestorer:
    """Paste-only baseline: the composite itself is the output (method ``"paste"``)."""

    method: str = "paste"

    def __init__(
        self,
        profile: _HasDP,
        layout: CanonicalLayout,
        *,
        feather_px: float = 0.0,
        gray_mode: str = "luma",
        valid: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Bind a restorer to one enrolled wearer.

        Args:
            profile: enrollment Profile; only its aligned ``dp`` (size, size, 3) is used.
            layout: the canonical layout the DP and crops share.
            feather_px: soft paste border (canonical px), see :func:`composite.composite`.
            gray_mode: how gray crops enter the colour DP, see :func:`composite.composite`.
            valid: per-region masks of the crop pixels the cameras see (None: all).

        Raises:
            ShapeError: the profile's DP is not uint8 (size, size, 3) of ``layout``.
        """
        check_image(profile.dp, "profile.dp", size=(layout.size, layout.size), channels=(3,))
        self.profile = profile
        self.layout = layout
        self.feather_px = float(feather_px)
        self.gray_mode = gray_mode
        self.valid = dict(valid) if valid is not None else None

    def composite(self, crops: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Hard (or feathered) composite of ``crops`` on the DP: ``(bgr, mask)``."""
        return composite(
            self.profile.dp,
            crops,
            self.layout,
            feather_px=self.feather_px,
            gray_mode=self.gray_mode,
            valid=self.valid,
        )

    def restore(self, crops: Mapping[str, np.ndarray]) -> np.ndarray:
        """Crops by region name -> the composite, uint8 BGR (size, size, 3)."""
        return self.composite(crops)[0]


class PoissonRestorer(PasteRestorer):
    """Paste, then Poisson-blend each pasted area into the DP (method ``"paste+poisson"``)."""

    method: str = "paste+poisson"

    def __init__(
        self,
        profile: _HasDP,
        layout: CanonicalLayout,
        *,
        gray_mode: str = "luma",
        valid: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Bind a restorer to one enrolled wearer (see :class:`PasteRestorer`).

        No feather option: the Poisson solve already makes the border continuous, and a feathered
        source would only blur the crop's own gradients near the edge.
        """
        super().__init__(profile, layout, feather_px=0.0, gray_mode=gray_mode, valid=valid)

    def restore(self, crops: Mapping[str, np.ndarray]) -> np.ndarray:
        """Crops by region name -> the Poisson-blended face, uint8 BGR (size, size, 3)."""
        layer, mask = self.composite(crops)
        out = poisson_blend(self.profile.dp, layer, mask)
        if checks_enabled():
            check_image(out, "restored", size=(self.layout.size, self.layout.size), channels=(3,))
        return out


#: Restorers by method name: the classical ones and the learned one ("ours": the exported
#: reference-guided network run by onnxruntime, models/restore_ours by default).
RESTORERS: Final[dict[str, type[PasteRestorer] | type[OnnxRestorer]]] = {
    "paste": PasteRestorer,
    "paste+poisson": PoissonRestorer,
    "ours": OnnxRestorer,
}


def create_restorer(name: str, profile: _HasDP, layout: CanonicalLayout) -> Restorer:
    """Build the restorer registered as ``name``.

    Raises:
        ValueError: unknown name (the message lists the registered ones).
    """
    try:
        cls = RESTORERS[name]
    except KeyError:
        msg = f"unknown restorer {name!r}; expected one of {', '.join(RESTORERS)}"
        raise ValueError(msg) from None
    return cls(profile, layout)
