"""Classical restorers: paste vs paste+Poisson, registry, regions at the image border."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from revavatar.core.canonical import CanonicalLayout, Region
from revavatar.core.composite import ShapeError
from revavatar.core.restoration import (
    RESTORERS,
    PasteRestorer,
    PoissonRestorer,
    create_restorer,
    poisson_blend,
)

LAYOUT = CanonicalLayout(256)
NAMES = ("right_eye", "left_eye", "lower_face")


@dataclass
class _Profile:
    """Stand-in for core.enrollment.Profile: restorers only read ``dp``."""

    dp: np.ndarray


def _smooth_face(size: int = 256) -> np.ndarray:
    """A smooth colour image with some texture (gradients everywhere, no flat areas)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64) / size
    b = 60 + 40 * xx + 10 * np.sin(9 * yy)
    g = 90 + 30 * yy + 10 * np.sin(7 * xx)
    r = 150 + 30 * xx * yy + 10 * np.cos(8 * xx + 3 * yy)
    return np.clip(np.dstack([b, g, r]), 0, 255).astype(np.uint8)


def _brighter_crops(dp: np.ndarray, offset: int, *, gray: bool) -> dict[str, np.ndarray]:
    """Crops of the DP itself with a brightness offset: what an IR camera with gain looks like."""
    crops = {}
    for name in NAMES:
        crop = LAYOUT.crop_region(dp, name).astype(np.int16) + offset
        crop = np.clip(crop, 0, 255).astype(np.uint8)
        crops[name] = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY) if gray else crop
    return crops


def _edge_jump(img: np.ndarray, dp: np.ndarray) -> float:
    """Mean excess step across the left/right/top/bottom box edges, relative to the DP's own."""
    img, dp = img.astype(np.float64), dp.astype(np.float64)
    steps = []
    for name in NAMES:
        x0, y0, x1, y1 = LAYOUT.region(name).box_px
        for a, b in (
            ((slice(y0, y1), x0), (slice(y0, y1), x0 - 1)),
            ((slice(y0, y1), x1 - 1), (slice(y0, y1), x1)),
            ((y0, slice(x0, x1)), (y0 - 1, slice(x0, x1))),
            ((y1 - 1, slice(x0, x1)), (y1, slice(x0, x1))),
        ):
            jump = np.abs(img[a] - img[b]) - np.abs(dp[a] - dp[b])
            steps.append(jump.mean())
    return float(np.mean(steps))


def test_registry_and_methods() -> None:
    from revavatar.core.onnx_restorer import OnnxRestorer

    assert RESTORERS == {
        "paste": PasteRestorer, "paste+poisson": PoissonRestorer, "ours": OnnxRestorer
    }
    dp = _smooth_face()
    assert create_restorer("paste", _Profile(dp), LAYOUT).method == "paste"
    assert create_restorer("paste+poisson", _Profile(dp), LAYOUT).method == "paste+poisson"
    with pytest.raises(ValueError, match="unknown restorer 'gan'; expected one of paste, paste"):
        create_restorer("gan", _Profile(dp), LAYOUT)


@pytest.mark.parametrize("name", ["paste", "paste+poisson"])
@pytest.mark.parametrize("gray", [True, False])
def test_output_is_canonical_uint8_bgr(name: str, gray: bool) -> None:  # noqa: FBT001
    dp = _smooth_face()
    out = create_restorer(name, _Profile(dp), LAYOUT).restore(_brighter_crops(dp, 30, gray=gray))
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    # far from every region the DP is untouched
    np.testing.assert_array_equal(out[:40, :40], dp[:40, :40])


def test_rejects_profile_dp_of_wrong_size() -> None:
    with pytest.raises(ShapeError, match=r"profile.dp: expected shape \(256, 256, 3\)"):
        PoissonRestorer(_Profile(np.zeros((128, 128, 3), np.uint8)), LAYOUT)


@pytest.mark.parametrize("gray", [True, False])
def test_poisson_removes_the_border_step_that_paste_leaves(gray: bool) -> None:  # noqa: FBT001
    dp = _smooth_face()
    crops = _brighter_crops(dp, 40, gray=gray)
    paste = PasteRestorer(_Profile(dp), LAYOUT).restore(crops)
    poisson = PoissonRestorer(_Profile(dp), LAYOUT).restore(crops)
    jump_paste, jump_poisson = _edge_jump(paste, dp), _edge_jump(poisson, dp)
    assert jump_paste > 20  # the +40 offset shows as a hard seam (less on gray: luma only)
    assert jump_poisson < 0.15 * jump_paste
    assert jump_poisson < 3.0
    # with the crop being the DP plus a constant, the Poisson solution is the DP itself
    err = np.abs(poisson.astype(int) - dp.astype(int))
    assert err.mean() < 2.0


def test_poisson_keeps_the_crops_detail() -> None:
    dp = _smooth_face()
    crops = _brighter_crops(dp, 0, gray=False)
    w, h = LAYOUT.region("left_eye").crop_size
    cv2.circle(crops["left_eye"], (w // 2, h // 2), 12, (20, 20, 20), -1)  # a dark pupil
    out = PoissonRestorer(_Profile(dp), LAYOUT).restore(crops)
    x0, y0, x1, y1 = LAYOUT.region("left_eye").box_px
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    pupil = out[cy - 2 : cy + 3, cx - 2 : cx + 3].astype(float).mean()
    around = out[cy - 2 : cy + 3, cx + 14 : cx + 19].astype(float).mean()
    dp_around = dp[cy - 2 : cy + 3, cx + 14 : cx + 19].astype(float).mean()
    assert around - pupil > 0.8 * (dp_around - 20)  # contrast of the pasted detail survives


class _EdgeLayout:
    """Stand-in layout whose regions touch the image border (corner and bottom-right edge)."""

    size = 64
    _boxes = {"a": (0, 0, 30, 24), "b": (34, 40, 64, 64)}

    def region(self, name: str) -> Region:
        return Region(name, self._boxes[name], (30, 24))


def test_regions_touching_the_border_blend_without_error() -> None:
    layout = _EdgeLayout()
    dp = _smooth_face(64)
    crops = {
        "a": np.full((24, 30, 3), 200, np.uint8),
        "b": np.full((24, 30), 30, np.uint8),
    }
    restorer = PoissonRestorer(_Profile(dp), layout)  # type: ignore[arg-type]
    out = restorer.restore(crops)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    # the Poisson solution meets the DP at the inner edges of the corner box
    step = np.abs(out[10, 30].astype(int) - out[10, 29].astype(int)).max()
    paste = PasteRestorer(_Profile(dp), layout).restore(crops)  # type: ignore[arg-type]
    assert step < np.abs(paste[10, 30].astype(int) - paste[10, 29].astype(int)).max()


def test_poisson_blend_empty_mask_returns_destination() -> None:
    dp = _smooth_face(32)
    out = poisson_blend(dp, np.zeros_like(dp), np.zeros((32, 32), np.uint8))
    np.testing.assert_array_equal(out, dp)
    assert out is not dp
