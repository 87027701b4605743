"""Baseline aligner: a textured plane z = 0 rendered into each camera must align back exactly."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from revavatar.core.alignment import HomographyAligner, build_aligners
from revavatar.core.calibration import CAMERA_NAMES, CameraCalibration, load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("generic", "quest_pro_like", "vive_focus_like")
LAYOUT = CanonicalLayout(256)


def _cam(profile: str, name: str) -> CameraCalibration:
    return load_calibration(ROOT / "calibration" / f"{profile}.yaml").cameras[name]


def _texture(size: int = 256) -> np.ndarray:
    """A smooth but non-trivial BGR texture of the canonical face (seeded)."""
    rng = np.random.default_rng(7)
    noise = rng.uniform(0, 255, (size // 8, size // 8, 3)).astype(np.float32)
    tex = cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    tex = cv2.GaussianBlur(tex, (0, 0), 3.0)
    yy, xx = np.mgrid[0:size, 0:size]
    tex += 40 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 13.0)[..., None]
    return np.clip(tex, 0, 255).astype(np.uint8)


def _render_plane(cam: CameraCalibration, texture: np.ndarray) -> np.ndarray:
    """Camera image of the texture lying on the head-frame plane z = 0 (the inverse mapping)."""
    jj, ii = np.mgrid[0 : cam.height, 0 : cam.width]
    uv = np.stack([ii.ravel(), jj.ravel()], axis=1).astype(np.float64)
    rays = cam.pixel_rays_head(uv)
    t = cam.translation_mm
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -t[2] / rays[:, 2]
    hit = t + s[:, None] * rays
    canon = LAYOUT.head_to_pixel(hit).astype(np.float32)
    canon[~(s > 0)] = -100
    mx = canon[:, 0].reshape(cam.height, cam.width)
    my = canon[:, 1].reshape(cam.height, cam.width)
    return cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    diff = a.astype(np.float64)[mask] - b.astype(np.float64)[mask]
    return float(10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12)))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", CAMERA_NAMES)
def test_planar_scene_aligns_back(profile: str, name: str) -> None:
    cam = _cam(profile, name)
    texture = _texture()
    image = _render_plane(cam, texture)
    aligner = HomographyAligner(cam, LAYOUT.region(name), LAYOUT)
    crop = aligner.align(image)
    expected = LAYOUT.crop_region(texture, name)
    assert crop.shape == expected.shape
    # compare where the camera sees the plane, away from the 1-px edge of the view
    mask = cv2.erode(aligner.valid_mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert mask.mean() > 0.85
    assert _psnr(crop, expected, mask) > 38.0  # measured 45.6-49.6 dB
    # a wrong calibration (camera 4 mm off) must not align as well
    moved = dataclasses.replace(cam, translation_mm=cam.translation_mm + np.array([4.0, 0.0, 0.0]))
    wrong = HomographyAligner(moved, LAYOUT.region(name), LAYOUT).align(image)
    both = mask & HomographyAligner(moved, LAYOUT.region(name), LAYOUT).valid_mask
    assert _psnr(wrong, expected, both) < _psnr(crop, expected, both) - 6.0


def test_gray_in_gray_out_and_border() -> None:
    cam = _cam("quest_pro_like", "left_eye")
    region = LAYOUT.region("left_eye")
    aligner = HomographyAligner(cam, region, LAYOUT, border_value=7)
    assert aligner.method == "homography"
    gray = np.full((cam.height, cam.width), 200, np.uint8)
    out = aligner.align(gray)
    assert out.shape == (region.crop_size[1], region.crop_size[0])
    assert out.dtype == np.uint8
    assert 0.85 < aligner.coverage < 1.0  # the oblique camera misses the cheek under it
    assert (out[aligner.valid_mask] == 200).all()
    assert (out[~aligner.valid_mask] == 7).all()
    bgr = aligner.align(np.full((cam.height, cam.width, 3), (10, 20, 30), np.uint8))
    assert bgr.shape == (*out.shape, 3)
    assert (bgr[aligner.valid_mask] == (10, 20, 30)).all()
    assert (bgr[~aligner.valid_mask] == 7).all()


def test_wrong_frame_size_raises() -> None:
    cam = _cam("generic", "lower_face")
    aligner = HomographyAligner(cam, LAYOUT.region("lower_face"), LAYOUT)
    with pytest.raises(
        InputError, match="lower_face frame is 640x480 but its calibration says 320x240"
    ):
        aligner.align(np.zeros((480, 640, 3), np.uint8))


@pytest.mark.parametrize("face_plane", [False, True])
@pytest.mark.parametrize("profile", PROFILES)
def test_rectification_homography_matches_pinhole_grid(profile: str, face_plane: bool) -> None:
    for name, cam in load_calibration(ROOT / "calibration" / f"{profile}.yaml").cameras.items():
        aligner = HomographyAligner(cam, LAYOUT.region(name), LAYOUT, face_plane=face_plane)
        hom = aligner.rectification_homography()
        assert hom.shape == (3, 3)
        assert np.isclose(hom[2, 2], 1.0)
        w, h = aligner.region.crop_size
        crop_px = np.array(
            [[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1], [w / 2, h / 3]], np.float64
        )
        mapped = cv2.perspectiveTransform(crop_px.reshape(-1, 1, 2), hom).reshape(-1, 2)
        head = aligner.crop_to_head(crop_px)
        # equals the undistorted pinhole projection of the same plane points ...
        pinhole = dataclasses.replace(cam, distortion_model="plumb_bob", distortion=(0.0,) * 5)
        assert np.allclose(mapped, pinhole.project(head)[0], atol=1e-6)
        # ... i.e. K applied to the undistorted rays of the real (distorted) pixels, where seen
        seen = cam.in_view(head)
        assert seen[-1]
        rays = cam.undistort_points(cam.project(head[seen])[0])
        assert np.allclose(mapped[seen], rays * [cam.fx, cam.fy] + [cam.cx, cam.cy], atol=1e-4)


def test_homography_warp_equals_remap_without_distortion() -> None:
    cam = dataclasses.replace(_cam("generic", "left_eye"), distortion=(0.0,) * 5)
    aligner = HomographyAligner(cam, LAYOUT.region("left_eye"), LAYOUT, fixed_point=False)
    image = _render_plane(cam, _texture())
    hom = aligner.rectification_homography()
    warped = cv2.warpPerspective(
        image, hom, aligner.region.crop_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    )
    assert _psnr(warped, aligner.align(image), aligner.valid_mask) > 45.0


def test_build_aligners_one_per_camera() -> None:
    cal = load_calibration(ROOT / "calibration" / "vive_focus_like.yaml")
    aligners = build_aligners(cal, LAYOUT)
    assert tuple(aligners) == CAMERA_NAMES
    for name, aligner in aligners.items():
        assert aligner.region.name == name
        assert aligner.camera is cal.cameras[name]
        assert aligner.coverage > 0.9
    assert aligners["lower_face"].coverage == 1.0


def test_face_plane_follows_the_region_surface() -> None:
    cam = _cam("generic", "lower_face")
    region = LAYOUT.region("lower_face")
    flat = HomographyAligner(cam, region, LAYOUT)
    tilted = HomographyAligner(cam, region, LAYOUT, face_plane=True)
    w, h = region.crop_size
    corners = np.array([[w / 2, 0.0], [w / 2, h - 1.0]])
    z_flat, z_face = flat.crop_to_head(corners)[:, 2], tilted.crop_to_head(corners)[:, 2]
    assert np.allclose(z_flat, 0.0)
    gx, gy, z0 = region.plane
    assert gy > 0 and z0 < 0  # the chin recedes, the mouth is in front of the eye plane
    assert z_face[1] - z_face[0] > 0  # deeper toward the chin
    assert np.isclose(z_face.mean(), z0, atol=0.5)


@pytest.fixture(scope="module")
def enrolled(face_image: np.ndarray):  # noqa: ANN201 - core.enrollment.Profile
    from revavatar.core.enrollment import QualityChecks, enroll_image
    from revavatar.core.landmarks import create_detector

    det = create_detector("mediapipe", static_image=True)
    try:  # the frame blinks; only the face's shape matters here
        return enroll_image(face_image, det, LAYOUT, QualityChecks(min_eye_aspect_ratio=0.0))
    finally:
        det.close()  # type: ignore[attr-defined]


def test_surface_alignment_stage_uses_the_enrolled_face(
    enrolled: Any, tmp_path: Path,
) -> None:
    """The graph's 'surface' aligner rectifies onto the enrolled face's mesh: the same crop grid
    as the plane homography where the face is flat, different where it is not (nose, sockets)."""
    from revavatar.graph.stages import STAGES, AlignmentStage

    cam = _cam("generic", "left_eye")
    stage = AlignmentStage(cam, LAYOUT, "surface", profile=enrolled)
    assert stage.method == "surface" and stage.aligner.coverage > 0.6
    plane = HomographyAligner(cam, LAYOUT.region("left_eye"), LAYOUT, face_plane=True)
    frame = cv2.cvtColor(_texture(320)[:240], cv2.COLOR_BGR2GRAY)
    a, b = stage.aligner.align(frame), plane.align(frame)
    assert a.shape == b.shape == (96, 128)
    assert 1.0 < np.abs(a.astype(float) - b)[stage.aligner.valid_mask].mean() < 60.0
    with pytest.raises(InputError, match="profile"):
        AlignmentStage(cam, LAYOUT, "surface")  # no profile: a clear error, not a flat face
    enrolled.save(tmp_path / "p")  # built from node parameters, as the launch file does
    params = {"camera": "left_eye", "calibration": str(ROOT / "calibration" / "generic.yaml"),
              "method": "surface", "profile": str(tmp_path / "p"), "layout_size": 256}
    built = STAGES["alignment"]("align_left_eye", params)
    assert built.method == "surface"
    np.testing.assert_array_equal(built.aligner.align(frame), a)


def test_enrollment_input_fills_the_unseen_part_from_the_dp_in_camera_tone() -> None:
    from revavatar.core.alignment import enrollment_input

    dp = _texture()
    ref_gray = cv2.cvtColor(LAYOUT.crop_region(dp, "left_eye"), cv2.COLOR_BGR2GRAY)
    seen = np.zeros((96, 128), bool)
    seen[:, 40:] = True
    # the camera shows the same face at half contrast plus an offset; unseen pixels are black
    rect = np.where(seen, np.clip(ref_gray * 0.5 + 60, 0, 255), 0).astype(np.uint8)
    rect[:8, 110:] = 0  # the housing in a corner of the view
    view, reference = enrollment_input(rect, seen, dp, LAYOUT, "left_eye")
    np.testing.assert_array_equal(reference, ref_gray)
    np.testing.assert_array_equal(view[20:, 50:100], rect[20:, 50:100])  # seen: as it was
    pupil = rect.copy()
    pupil[40:50, 70:80] = 0  # dark, but enclosed by the face: seen, kept
    assert (enrollment_input(pupil, seen, dp, LAYOUT, "left_eye")[0][40:50, 70:80] == 0).all()
    want = np.clip(ref_gray * 0.5 + 60, 0, 255)
    assert np.abs(view[:, :40].astype(float) - want[:, :40]).mean() < 2.0  # the DP, camera tone
    assert np.abs(view[:8, 110:].astype(float) - want[:8, 110:]).mean() < 2.0  # housing too
    colour_view, colour_ref = enrollment_input(np.dstack([rect] * 3), seen, dp, LAYOUT,
                                               "left_eye")
    assert colour_view.shape == (96, 128, 3) and colour_ref.shape == (96, 128, 3)


def test_housing_mask_takes_dark_areas_at_the_border_only() -> None:
    from revavatar.core.alignment import housing_mask

    crop = np.full((60, 80), 150, np.uint8)
    crop[:, :10] = 5  # housing along the left edge
    crop[25:35, 35:45] = 5  # pupil
    mask = housing_mask(crop, level=24, grow_px=3)
    assert mask[:, :10].all() and mask[:, 10:13].all() and not mask[:, 14:].any()
    assert not housing_mask(crop, grow_px=0)[25:35, 35:45].any()
    assert not housing_mask(np.full((60, 80), 150, np.uint8)).any()


def test_housing_mask_keeps_a_feature_joined_to_the_border_by_a_thin_stroke() -> None:
    """Eyeliner or a lash line running from a dark border into the pupil does not make the eye
    housing (it did: one VR-Face eye crop in ten lost its eye to the enrollment fill)."""
    from revavatar.core.alignment import housing_mask

    crop = np.full((60, 80), 150, np.uint8)
    crop[:, :10] = 5  # housing
    crop[28:31, 10:36] = 5  # a 3 px stroke from the housing ...
    crop[25:35, 35:45] = 5  # ... into the pupil, off the crop's centre
    mask = housing_mask(crop, grow_px=3)
    assert mask[:, :10].all()
    assert not mask[25:35, 35:45].any() and not mask[28:31, 20:36].any()


def test_housing_mask_never_takes_the_crop_centre() -> None:
    """A broad dark area reaching the centre of an eye crop (a dark IR view's lids) keeps the
    centre: that is where the canonical crop holds its eye. Lower-face crops opt out."""
    from revavatar.core.alignment import housing_mask

    crop = np.full((60, 80), 150, np.uint8)
    crop[20:40, :50] = 5  # broad dark band from the left edge through the centre
    mask = housing_mask(crop, grow_px=0)
    assert mask[20:40, :5].all()
    assert not mask[28:32, 36:44].any()
    assert housing_mask(crop, grow_px=0, protect_centre=False)[22:38, :46].all()
