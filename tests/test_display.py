"""Outward display warp: eyes appear where the viewing geometry says, black outside the region.

Hand-computed geometry used below (layout 256: 63 / 81.92 = 0.76904296875 mm per canonical px,
head origin at canonical (128, 107.52)); test panel 320 x 160 px over 160 x 80 mm (0.5 mm/px),
centre (0, 5) mm, 40 mm in front of the eyes, observer at 1000 mm. A face point X on z = 0 is seen
through the panel at X * (1000 - 40) / 1000 = 0.96 X, and panel point P shows at display pixel
i = (P.x - 0) / 0.5 + 160 - 0.5, j = (P.y - 5) / 0.5 + 80 - 0.5.

- eye centres X = (+-31.5, 0) -> P = (+-30.24, 0) -> i = 159.5 +- 60.48 = 219.98 / 99.02, j = 69.5.
- eye region (0.12, 0.25, 0.88, 0.55) * 256 = x 30.72..225.28, y 64..140.8 canonical px
  -> face x +-74.8125 mm, y -33.46875..25.59375 mm -> panel x +-71.82, y -32.13..24.57 mm
  -> i 15.86..303.14, j 5.24..118.64: columns 16..303 and rows 6..118 show the face.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from revavatar.core.calibration import DisplayCalibration, load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.composite import ShapeError
from revavatar.core.display import DisplayWarper, display_to_face_mm

LAYOUT = CanonicalLayout(256)
PANEL = DisplayCalibration(
    resolution=(320, 160),
    size_mm=(160.0, 80.0),
    center_mm=(0.0, 5.0),
    distance_mm=40.0,
    viewer_distance_mm=1000.0,
    eye_region=(0.12, 0.25, 0.88, 0.55),
)
EYES_DISPLAY = {"right": (99.02, 69.5), "left": (219.98, 69.5)}
GENERIC = Path(__file__).resolve().parents[1] / "calibration" / "generic.yaml"


def _blob_face(centres: list[tuple[float, float]]) -> np.ndarray:
    """Gray face with bright Gaussian markers (sigma 2.5 px) centred at canonical points."""
    yy, xx = np.mgrid[:256, :256].astype(np.float64)
    img = np.full((256, 256), 50.0)
    for u, v in centres:
        img += 200.0 * np.exp(-((xx - u) ** 2 + (yy - v) ** 2) / (2 * 2.5**2))
    gray = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.dstack([gray] * 3)


def _centroid(img: np.ndarray, centre: tuple[float, float], radius: int = 12) -> np.ndarray:
    cx, cy = round(centre[0]), round(centre[1])
    win = img[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1, 0].astype(float) - 50
    win = np.clip(win, 0, None)
    yy, xx = np.mgrid[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
    return np.array([(xx * win).sum() / win.sum(), (yy * win).sum() / win.sum()])


def test_eye_markers_appear_where_the_geometry_says() -> None:
    warper = DisplayWarper(PANEL, LAYOUT)
    face = _blob_face([(0.34 * 256, 0.42 * 256), (0.66 * 256, 0.42 * 256)])
    out = warper.render(face)
    assert out.shape == (160, 320, 3) and out.dtype == np.uint8
    for side, expected in EYES_DISPLAY.items():
        got = _centroid(out, expected)
        np.testing.assert_allclose(got, expected, atol=0.2, err_msg=side)
        assert out[round(expected[1]), round(expected[0]), 0] > 200  # the marker peak is there
    # the wearer's left eye (image right of the face) is on the display's right, too
    assert EYES_DISPLAY["left"][0] > EYES_DISPLAY["right"][0]


def test_head_to_display_matches_hand_computation() -> None:
    warper = DisplayWarper(PANEL, LAYOUT)
    got = warper.head_to_display(np.array([[-31.5, 0.0, 0.0], [31.5, 0.0, 7.0]]))
    np.testing.assert_allclose(got, [EYES_DISPLAY["right"], EYES_DISPLAY["left"]], atol=1e-9)


def test_pixels_outside_the_eye_region_are_black() -> None:
    warper = DisplayWarper(PANEL, LAYOUT)
    out = warper.render(np.full((256, 256, 3), 255, np.uint8))
    assert (out[:, :16] == 0).all() and (out[:, 304:] == 0).all()
    assert (out[:6] == 0).all() and (out[119:] == 0).all()
    assert (out[6:119, 16:304] == 255).all()
    assert warper.mask.sum() == (119 - 6) * (304 - 16)


def test_panel_points_agree_with_the_calibration_convention() -> None:
    # display_to_face_mm scaled back onto the panel = DisplayCalibration.pixel_to_head
    face = display_to_face_mm(PANEL)
    uv = np.array([[0, 0], [319, 159], [160, 80], [17, 130]])
    panel = PANEL.pixel_to_head(uv)
    np.testing.assert_allclose(face[uv[:, 1], uv[:, 0]] * 0.96, panel[:, :2], atol=1e-9)
    assert (panel[:, 2] == -40.0).all()


def test_gray_face_and_bad_inputs() -> None:
    warper = DisplayWarper(PANEL, LAYOUT)
    gray = np.full((256, 256), 128, np.uint8)
    out = warper.render(gray)
    assert out.shape == (160, 320, 3) and (out[80, 160] == 128).all()
    with pytest.raises(ShapeError, match=r"face: expected shape \(256, 256"):
        warper.render(np.zeros((128, 128, 3), np.uint8))
    bad = DisplayCalibration((320, 160), (160.0, 80.0), (0.0, 0.0), 1000.0, 1000.0, (0, 0, 1, 1))
    with pytest.raises(ValueError, match="distance_mm < viewer_distance_mm"):
        DisplayWarper(bad, LAYOUT)
    bad = DisplayCalibration((320, 160), (160.0, 80.0), (0.0, 0.0), 40.0, 1000.0, (0.5, 0, 0.4, 1))
    with pytest.raises(ValueError, match="eye_region"):
        DisplayWarper(bad, LAYOUT)


def test_generic_headset_shows_both_eyes() -> None:
    # generic.yaml: 640 x 280 px over 150 x 66 mm, centre (0, -2), 45 mm, viewer at 1000 mm:
    # left eye 31.5 * 0.955 = 30.0825 mm -> i = 30.0825 * 640 / 150 + 319.5 = 447.852,
    # j = (0 + 2) * 280 / 66 + 139.5 = 147.985; right eye i = 319.5 - 128.352 = 191.148.
    display = load_calibration(GENERIC).display
    warper = DisplayWarper(display, LAYOUT)
    eyes = warper.head_to_display(np.array([[-31.5, 0.0], [31.5, 0.0]]))
    np.testing.assert_allclose(eyes, [[191.148, 147.985], [447.852, 147.985]], atol=1e-3)
    w, h = display.resolution
    face = _blob_face([(0.34 * 256, 0.42 * 256), (0.66 * 256, 0.42 * 256)])
    out = warper.render(face)
    assert out.shape == (h, w, 3)
    for e in eyes:
        np.testing.assert_allclose(_centroid(out, tuple(e)), e, atol=0.2)


@pytest.mark.parametrize("name", ["quest_pro_like", "vive_focus_like"])
def test_other_headsets_build_a_warper(name: str) -> None:
    display = load_calibration(GENERIC.with_name(f"{name}.yaml")).display
    warper = DisplayWarper(display, LAYOUT)
    out = warper.render(np.full((256, 256, 3), 255, np.uint8))
    assert out.shape == (display.resolution[1], display.resolution[0], 3)
    assert warper.mask.sum() > 0
    assert (out[warper.mask] == 255).all() and (out[~warper.mask] == 0).all()
