"""Canonical layout: template fit, head-frame mapping, regions."""

import cv2
import numpy as np
import pytest

from revavatar.core.canonical import EYE_ELLIPSE_MM, INTEROCULAR_MM, CanonicalLayout


@pytest.mark.parametrize("size", [256, 512])
def test_similarity_recovers_a_known_transform(size: int) -> None:
    layout = CanonicalLayout(size)
    angle = np.deg2rad(17.0)
    rot = 0.6 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    src = layout.template_points() @ rot.T + np.array([31.0, -7.0])
    m = layout.estimate_similarity(src)
    mapped = np.c_[src, np.ones(5)] @ m.T
    np.testing.assert_allclose(mapped, layout.template_points(), atol=1e-9)


def test_mirror_is_not_fitted_as_rotation() -> None:
    layout = CanonicalLayout()
    src = layout.template_points().copy()
    src[:, 0] = layout.size - src[:, 0]  # mirrored: eyes swapped
    m = layout.estimate_similarity(src)
    assert np.linalg.det(m[:, :2]) > 0  # a proper similarity, never a reflection


def test_head_frame_scale_and_origin() -> None:
    layout = CanonicalLayout(256)
    eyes = layout.head_to_pixel(np.array([[-INTEROCULAR_MM / 2, 0, 0], [INTEROCULAR_MM / 2, 0, 5]]))
    np.testing.assert_allclose(eyes, layout.template_points()[:2], atol=1e-9)
    back = layout.pixel_to_head(eyes, z=3.0)
    np.testing.assert_allclose(back[:, :2], [[-31.5, 0], [31.5, 0]], atol=1e-9)
    assert (back[:, 2] == 3.0).all()


def test_regions_scale_with_size_and_reject_unknown() -> None:
    small, big = CanonicalLayout(256), CanonicalLayout(512)
    for name in ("left_eye", "right_eye", "lower_face", "eye_band"):
        a, b = small.region(name), big.region(name)
        assert b.crop_size == (2 * a.crop_size[0], 2 * a.crop_size[1])
        assert abs(b.box_px[0] - 2 * a.box_px[0]) <= 1
    # the wearer's left eye is on the image right
    assert small.region("left_eye").box_px[0] >= small.region("right_eye").box_px[2]
    with pytest.raises(ValueError, match="unknown region 'nose'"):
        small.region("nose")
    with pytest.raises(ValueError, match="canonical size"):
        CanonicalLayout(300)


def test_crop_region_has_crop_size() -> None:
    layout = CanonicalLayout()
    face = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    crop = layout.crop_region(face, "lower_face")
    assert crop.shape == (128, 192, 3)


def test_canonical_to_crop_follows_the_stored_crop() -> None:
    """A bright dot placed in the canonical face lands where the mapping says in the crop."""
    import cv2

    layout = CanonicalLayout()
    region = layout.region("left_eye")
    face = np.zeros((256, 256), np.float32)
    x0, y0, x1, y1 = region.box_px
    dot = np.array([[x0 + 0.37 * (x1 - x0), y0 + 0.61 * (y1 - y0)]])
    face[int(dot[0, 1]) - 1:int(dot[0, 1]) + 2, int(dot[0, 0]) - 1:int(dot[0, 0]) + 2] = 1.0
    centre = np.floor(dot)  # the 3x3 block's centre pixel
    crop = cv2.resize(face[y0:y1, x0:x1], region.crop_size, interpolation=cv2.INTER_LINEAR)
    ys, xs = np.nonzero(crop > 0)
    w = crop[ys, xs]
    seen = np.array([(xs * w).sum() / w.sum(), (ys * w).sum() / w.sum()])
    assert np.allclose(region.canonical_to_crop(centre)[0], seen, atol=0.05)


@pytest.mark.parametrize(("region", "side"), [("left_eye", 1), ("right_eye", 0)])
def test_eye_weight_covers_the_eye_and_nothing_far_from_it(region: str, side: int) -> None:
    layout = CanonicalLayout(256)
    reg = layout.region(region)
    w = layout.eye_weight(region)
    assert w.shape == reg.crop_size[::-1] and w.dtype == np.float32
    assert 0.0 <= w.min() and w.max() <= 1.0

    def at(dx_mm: float, dy_mm: float) -> float:
        """Weight at a head-frame offset from the template eye centre."""
        x0, y0, x1, y1 = reg.box_px
        cx, cy = layout.template_points()[side]
        u = (cx + dx_mm / layout.mm_per_px - x0) * reg.crop_size[0] / (x1 - x0)
        v = (cy + dy_mm / layout.mm_per_px - y0) * reg.crop_size[1] / (y1 - y0)
        return float(w[int(v), int(u)])

    a, b = EYE_ELLIPSE_MM
    # both corners (15 mm either side of a 30 mm eye), both lids: fully the crop's
    assert at(0, 0) == at(15, 0) == at(-15, 0) == at(0, 6) == at(0, -6) == 1.0
    assert at(a + 3, 0) == at(0, b + 3) == at(0, -b - 3) == 0.0  # brow, cheek, temple: the truth
    assert w[0, 0] == w[-1, -1] == 0.0




def test_eye_weight_is_for_eye_regions_only() -> None:
    with pytest.raises(ValueError, match="eye region"):
        CanonicalLayout(256).eye_weight("lower_face")


def test_eye_weight_scales_with_the_layout() -> None:
    small, big = CanonicalLayout(256).eye_weight("left_eye"), CanonicalLayout(512).eye_weight(
        "left_eye")
    assert big.shape == (192, 256)
    down = cv2.resize(big, small.shape[::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(down - small).max() < 0.1  # the same ellipse in mm
