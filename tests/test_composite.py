"""Composite: crops land at their canonical boxes, mask, gray as luminance, boundary checks."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from revavatar.core import composite as comp
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.composite import (
    ShapeError,
    composite,
    match_gamma,
    match_histogram,
    set_checks,
)

LAYOUT = CanonicalLayout(256)
DP_COLOUR = (40, 90, 160)  # BGR, a skin-like orange-brown


def _dp() -> np.ndarray:
    return np.full((256, 256, 3), DP_COLOUR, np.uint8)


def _crop(name: str, value: int | tuple[int, int, int], *, gray: bool) -> np.ndarray:
    w, h = LAYOUT.region(name).crop_size
    if gray:
        return np.full((h, w), value, np.uint8)
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture(autouse=True)
def _checks_on() -> None:
    set_checks(True)
    yield
    set_checks(True)


def test_colour_crops_land_exactly_in_their_boxes() -> None:
    colours = {"right_eye": (255, 0, 0), "left_eye": (0, 255, 0), "lower_face": (0, 0, 255)}
    crops = {n: _crop(n, c, gray=False) for n, c in colours.items()}
    out, mask = composite(_dp(), crops, LAYOUT)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    assert mask.shape == (256, 256) and mask.dtype == np.uint8
    expected = _dp()
    expected_mask = np.zeros((256, 256), np.uint8)
    for name, colour in colours.items():
        x0, y0, x1, y1 = LAYOUT.region(name).box_px
        expected[y0:y1, x0:x1] = colour
        expected_mask[y0:y1, x0:x1] = 255
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(mask, expected_mask)
    # right_eye box [0.18, 0.30, 0.50, 0.54] * 256 = (46, 77, 128, 138): check corners directly
    assert tuple(out[77, 46]) == (255, 0, 0) and tuple(out[137, 127]) == (255, 0, 0)
    assert tuple(out[76, 46]) == DP_COLOUR and tuple(out[77, 45]) == DP_COLOUR
    assert tuple(out[77, 128]) == (0, 255, 0)  # left eye starts where the right eye ends


def test_crop_is_resized_into_the_box_keeping_its_layout() -> None:
    w, h = LAYOUT.region("left_eye").crop_size
    crop = np.zeros((h, w), np.uint8)
    crop[:, w // 2 :] = 255  # left half black, right half white
    out, _ = composite(_dp(), {"left_eye": crop}, LAYOUT, gray_mode="gray")
    x0, y0, x1, y1 = LAYOUT.region("left_eye").box_px
    mid = (x0 + x1) // 2
    assert (out[y0:y1, x0 : mid - 1] == 0).all()
    assert (out[y0:y1, mid + 1 : x1] == 255).all()
    # a crop at a different size (half resolution) is accepted and resized too
    small = cv2.resize(crop, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
    out2, _ = composite(_dp(), {"left_eye": small}, LAYOUT, gray_mode="gray")
    assert (out2[y0:y1, x0 : mid - 2] == 0).all() and (out2[y0:y1, mid + 2 : x1] == 255).all()


def test_gray_crop_replaces_luminance_and_keeps_dp_colour() -> None:
    out, _ = composite(_dp(), {"right_eye": _crop("right_eye", 200, gray=True)}, LAYOUT)
    x0, y0, x1, y1 = LAYOUT.region("right_eye").box_px
    inside = out[y0:y1, x0:x1]
    ycc = cv2.cvtColor(inside, cv2.COLOR_BGR2YCrCb).reshape(-1, 3).astype(int)
    dp_ycc = cv2.cvtColor(_dp()[:1, :1], cv2.COLOR_BGR2YCrCb)[0, 0].astype(int)
    assert np.abs(ycc[:, 0] - 200).max() <= 2  # the camera's luminance
    assert np.abs(ycc[:, 1:] - dp_ycc[1:]).max() <= 3  # the DP's chroma
    b, g, r = (int(v) for v in inside[0, 0])
    assert r > g > b  # still the DP's warm colour, not gray
    outside = np.ones((256, 256), bool)
    outside[y0:y1, x0:x1] = False
    assert (out[outside] == DP_COLOUR).all()


def test_gray_mode_gray_pastes_plain_gray_and_colour_crop_ignores_mode() -> None:
    out, _ = composite(
        _dp(), {"right_eye": _crop("right_eye", 200, gray=True)}, LAYOUT, gray_mode="gray"
    )
    x0, y0, x1, y1 = LAYOUT.region("right_eye").box_px
    assert (out[y0:y1, x0:x1] == 200).all()
    gray3 = _crop("lower_face", (10, 20, 30), gray=False)
    out, _ = composite(_dp(), {"lower_face": gray3[:, :, :]}, LAYOUT)
    x0, y0, x1, y1 = LAYOUT.region("lower_face").box_px
    assert (out[y0:y1, x0:x1] == (10, 20, 30)).all()
    # (H, W, 1) gray works like (H, W)
    g1 = _crop("right_eye", 200, gray=True)[:, :, None]
    out1, _ = composite(_dp(), {"right_eye": g1}, LAYOUT)
    out2, _ = composite(_dp(), {"right_eye": g1[:, :, 0]}, LAYOUT)
    np.testing.assert_array_equal(out1, out2)


def test_feathered_mask_ramps_at_the_union_border_only() -> None:
    crops = {n: _crop(n, 255, gray=False) for n in ("right_eye", "left_eye")}
    out, mask = composite(_dp(), crops, LAYOUT, feather_px=6)
    x0, y0, x1, y1 = LAYOUT.region("right_eye").box_px
    ymid = (y0 + y1) // 2
    assert 0 < mask[ymid, x0] < 100  # outer edge: mostly DP
    assert mask[ymid, x0 + 10] == 255  # beyond the ramp: fully pasted
    assert mask[ymid, x0 - 1] == 0
    assert (np.diff(mask[ymid, x0 : x0 + 6].astype(int)) > 0).all()  # ramp over 6 px
    assert mask[ymid, x0 + 5] == 255
    # the eyes touch at x = 128: one pasted area, no dip at the shared edge
    assert mask[ymid, 127] == 255 and mask[ymid, 128] == 255
    # the image follows the mask: halfway value between DP and white on the ramp
    a = mask[ymid, x0 + 2] / 255.0
    expected = np.array(DP_COLOUR) * (1 - a) + 255 * a
    np.testing.assert_allclose(out[ymid, x0 + 2].astype(float), expected, atol=1.0)


@pytest.mark.parametrize(
    ("dp", "crops", "match"),
    [
        (np.zeros((128, 128, 3), np.uint8), {}, r"dp: expected shape \(256, 256, 3\)"),
        (np.zeros((256, 256), np.uint8), {}, r"dp: expected shape \(H, W, 3\), got shape"),
        (np.zeros((256, 256, 3), np.float32), {}, "dp: expected dtype uint8, got dtype float32"),
        (None, {"left_eye": np.zeros((96, 128, 4), np.uint8)}, r"got shape \(96, 128, 4\)"),
        (None, {"left_eye": np.zeros((96, 128), np.float64)}, "dtype float64"),
        (None, {"left_eye": np.zeros((0, 128), np.uint8)}, "non-empty"),
        (None, {"left_eye": [[1, 2], [3, 4]]}, "numpy uint8 array"),
    ],
)
def test_bad_shapes_are_rejected(dp: np.ndarray | None, crops: dict, match: str) -> None:
    with pytest.raises(ShapeError, match=match) as info:
        composite(_dp() if dp is None else dp, crops, LAYOUT)
    assert isinstance(info.value, ValueError)
    assert info.value.actual is not None and info.value.expected is not None


def test_unknown_region_and_mode_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown region 'nose'"):
        composite(_dp(), {"nose": _crop("left_eye", 0, gray=True)}, LAYOUT)
    with pytest.raises(ValueError, match="unknown gray_mode 'sepia'; expected one of luma, gray"):
        composite(_dp(), {}, LAYOUT, gray_mode="sepia")


def test_checks_can_be_switched_off() -> None:
    bad = np.full((96, 128, 3), 7.0, np.float64)  # wrong dtype, otherwise usable
    with pytest.raises(ShapeError):
        composite(_dp(), {"left_eye": bad}, LAYOUT)
    set_checks(False)
    assert not comp.checks_enabled()
    out, _ = composite(_dp(), {"left_eye": bad}, LAYOUT)
    x0, y0, _, _ = LAYOUT.region("left_eye").box_px
    assert tuple(out[y0, x0]) == (7, 7, 7)


def test_env_var_disables_checks_at_import() -> None:
    code = "from revavatar.core.composite import checks_enabled; print(checks_enabled())"
    env = {**os.environ, "REVAVATAR_NO_CHECKS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert res.stdout.strip() == "False"


def test_invalid_pixels_keep_the_dp() -> None:
    layout = CanonicalLayout()
    dp = np.full((256, 256, 3), 90, np.uint8)
    region = layout.region("left_eye")
    w, h = region.crop_size
    crop = np.full((h, w), 200, np.uint8)
    valid = np.ones((h, w), bool)
    valid[:, w // 2 :] = False  # the camera does not see the outer half
    out, mask = composite(dp, {"left_eye": crop}, layout, valid={"left_eye": valid})
    x0, y0, x1, y1 = region.box_px
    inner = out[y0:y1, x0 : x0 + (x1 - x0) // 2 - 1]
    outer = out[y0:y1, x0 + (x1 - x0) // 2 + 1 : x1]
    assert (np.abs(inner.astype(int) - 200) <= 2).all()
    assert (outer == 90).all()
    assert mask[y0:y1, x0 + (x1 - x0) // 2 + 1 : x1].max() == 0
    assert mask[y0:y1, x0 : x0 + (x1 - x0) // 2 - 1].min() == 255


def test_match_tone_fits_mean_and_spread_on_the_mask_only() -> None:
    rng = np.random.default_rng(0)
    src = rng.integers(60, 120, (20, 30), dtype=np.uint8)
    like = np.clip(src.astype(np.float64) * 1.5 + 20, 0, 255).astype(np.uint8)
    mask = np.zeros((20, 30), bool)
    mask[:, :15] = True
    like[~mask] = 0  # outside the mask: ignored by the fit
    out = comp.match_tone(src, like, mask)
    assert abs(out[mask].mean() - like[mask].mean()) < 0.6
    assert abs(out[mask].std() - like[mask].std()) < 0.6
    np.testing.assert_allclose(out[~mask], np.clip(src[~mask] * 1.5 + 20, 0, 255), atol=1.5)
    few = np.zeros_like(mask)
    few[0, :5] = True
    assert comp.match_tone(src, like, few) is src  # nothing to fit
    bgr = np.dstack([src, src // 2, src])
    assert comp.match_tone(bgr, np.dstack([like] * 3), mask).shape == bgr.shape


def test_fill_unseen_keeps_what_is_seen_and_fills_the_rest() -> None:
    crop = np.full((40, 60), 200, np.uint8)
    fill = np.full((40, 60), 50, np.uint8)
    seen = np.zeros((40, 60), bool)
    seen[:, 20:] = True
    out = comp.fill_unseen(crop, seen, fill, feather_px=4.0)
    assert (out[:, :20] == 50).all()
    assert (out[:, 25:] == 200).all()  # beyond the feather
    assert 50 < out[20, 21] < 200  # the seam is blended, inside the seen side
    colour = comp.fill_unseen(np.dstack([crop] * 3), seen, np.dstack([fill] * 3))
    np.testing.assert_array_equal(colour[:, :, 1], out)


def _eye_crop(w: int = 128, h: int = 96, iris_x: float = 64.0) -> np.ndarray:
    """A smooth synthetic eye: skin ramp, a bright sclera ellipse, a dark iris disc."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = 120.0 + 0.3 * xx
    img[((xx - 64) / 40) ** 2 + ((yy - 48) / 14) ** 2 < 1] = 200.0
    img[np.hypot(xx - iris_x, yy - 48) < 10] = 50.0
    return cv2.GaussianBlur(img, (0, 0), 1.5).round().astype(np.uint8)


def test_match_histogram_undoes_a_relighting_and_moves_no_pixel() -> None:
    from revavatar.vrface.effects import lighting

    layout = CanonicalLayout(256)
    w = layout.eye_weight("left_eye") > 0
    gt = _eye_crop(*layout.region("left_eye").crop_size)
    lit = lighting(gt, np.random.default_rng(0), gain=0.7, gamma=1.3)
    assert np.abs(lit.astype(int) - gt).max() > 40
    back = match_histogram(lit, gt, w)
    assert np.abs(back[w].astype(int) - gt[w]).mean() < 1.0
    assert np.array_equal(match_histogram(gt, gt, w), gt)  # the truth itself is left alone
    # monotone: a darker pixel never ends up brighter, so the iris stays where it was drawn
    moved = lighting(_eye_crop(iris_x=70.0), np.random.default_rng(0), gain=0.7, gamma=1.3)
    out = match_histogram(moved, gt, w)
    order = np.argsort(moved.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)
    iris = out < 100
    assert np.mean(np.nonzero(iris)[1]) == pytest.approx(70.0, abs=0.5)
    # the whole crop (no mask) and colour crops, channel by channel
    assert np.abs(match_histogram(lit, gt, None).astype(int) - gt).mean() < 1.0
    assert match_histogram(lit, gt, np.zeros_like(w)) is lit  # nothing to match over
    color = match_histogram(np.dstack([lit, moved, lit]), np.dstack([gt, gt, gt]), w)
    assert np.array_equal(color[..., 1], out) and np.array_equal(color[..., 0], back)


def test_match_gamma_undoes_an_exposure_fitted_on_the_skin_alone() -> None:
    from revavatar.vrface.effects import lighting

    layout = CanonicalLayout(256)
    eye = layout.eye_weight("left_eye") > 0
    like = _eye_crop(*layout.region("left_eye").crop_size)
    skin = ~eye
    # the image's eye looks elsewhere: a full histogram match over the crop would bend its tone
    # by that, the skin's gain and gamma do not
    image = lighting(_eye_crop(iris_x=74.0), np.random.default_rng(0), gain=0.75, gamma=1.25)
    back = match_gamma(image, like, skin)
    assert np.abs(back[skin].astype(int) - like[skin]).mean() < 2.0
    moved = _eye_crop(iris_x=74.0)
    assert np.abs(back[eye].astype(int) - moved[eye]).mean() < 3.0  # the eye as it was, untoned
    order = np.argsort(image.ravel(), kind="stable")
    assert np.all(np.diff(back.ravel()[order].astype(int)) >= 0)  # monotone: nothing moves
    assert back.min() < 60  # the pupil, darker than any skin pixel, stays dark
    few = np.zeros_like(skin)
    few[0, :10] = True
    assert match_gamma(image, like, few) is image  # too little to fit
    color = match_gamma(np.dstack([image] * 3), np.dstack([like] * 3), skin)
    assert np.array_equal(color[..., 2], back)
