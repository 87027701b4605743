"""VR-Face renderer: exactness on planes, near clipping, culling, views and all headset profiles."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from revavatar.core.alignment import HomographyAligner, SurfaceAligner
from revavatar.core.calibration import (
    CameraCalibration,
    HeadsetCalibration,
    load_calibration,
    rotation_head_from_cam,
)
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.landmarks import FaceLandmarks, create_detector
from revavatar.vrface.mesh import FaceMesh
from revavatar.vrface.renderer import (
    VIEWS,
    HeadsetRenderer,
    RenderConfig,
    clip_near,
    render_depth_orthographic,
    rotation_to_deg,
)

CALIB_DIR = Path(__file__).resolve().parents[1] / "calibration"
YAMLS = ("generic", "quest_pro_like", "vive_focus_like")
BG = RenderConfig().background


@pytest.fixture(scope="module")
def layout() -> CanonicalLayout:
    return CanonicalLayout(256)


@pytest.fixture(scope="module")
def face_mesh(face_lm: FaceLandmarks, layout: CanonicalLayout) -> FaceMesh:
    return FaceMesh.from_landmarks(face_lm, layout)


@pytest.fixture(scope="module")
def face_lm(face_image: np.ndarray) -> FaceLandmarks:
    det = create_detector("mediapipe", static_image=True)
    try:
        lm = det.detect(face_image)
    finally:
        det.close()  # type: ignore[attr-defined]
    assert lm is not None
    return lm


def _texture(size: int = 600, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (40, 40, 3)).astype(np.float32)
    big = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(cv2.GaussianBlur(big, (0, 0), 3.0), 0, 255).astype(np.uint8)


def _plane_mesh(
    half_mm: float = 60.0, step_mm: float = 4.0, px_per_mm: float = 5.0, z: float = 0.0
) -> FaceMesh:
    ticks = np.arange(-half_mm, half_mm + 1e-9, step_mm)
    n = len(ticks)
    xx, yy = np.meshgrid(ticks, ticks)  # row = y, col = x
    verts = np.stack([xx.ravel(), yy.ravel(), np.full(n * n, z)], 1)
    uv = (verts[:, :2] + half_mm) * px_per_mm
    tris = []
    for r in range(n - 1):
        for c in range(n - 1):
            v00, v10, v01, v11 = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            tris += [(v00, v10, v01), (v10, v11, v01)]  # clockwise on a y-down frontal image
    return FaceMesh(verts, np.array(tris), uv)


def _one_camera_rig(cam: CameraCalibration) -> HeadsetCalibration:
    base = load_calibration(CALIB_DIR / "generic.yaml")
    return dataclasses.replace(base, cameras={"left_eye": cam})


def _camera(
    distortion: tuple[float, ...] = (0.0,) * 5, focal: float = 300.0, **pose: object
) -> CameraCalibration:
    return CameraCalibration(
        name="left_eye",
        resolution=(320, 240),
        fps=30.0,
        fx=focal,
        fy=focal,
        cx=161.0,
        cy=118.5,
        distortion_model="plumb_bob",
        distortion=distortion,
        translation_mm=np.array(pose.get("t", (5.0, -3.0, -120.0))),
        rotation_deg=pose.get("r", (5.0, 10.0, -15.0)),  # type: ignore[arg-type]
        infrared=False,
    )


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def _render_single(cam: CameraCalibration, mesh: FaceMesh, tex: np.ndarray, layout: CanonicalLayout):  # noqa: ANN202
    rend = HeadsetRenderer(_one_camera_rig(cam), layout, views={"front": (0.0, 0.0, 0.0)})
    return rend.render_views(tex, mesh)["left_eye"]


def test_flat_plane_matches_the_analytic_homography(layout: CanonicalLayout) -> None:
    cam = _camera()
    tex = _texture()
    out = _render_single(cam, _plane_mesh(), tex, layout)
    rc = cam.R_head_from_cam().T
    h_plane = cam.K() @ np.column_stack([rc[:, 0], rc[:, 1], -rc @ cam.translation_mm])  # (X, Y, 1) -> px
    s = np.array([[5.0, 0.0, 300.0], [0.0, 5.0, 300.0], [0.0, 0.0, 1.0]])  # (X, Y, 1) -> texture px
    want = cv2.warpPerspective(tex, h_plane @ np.linalg.inv(s), (320, 240), flags=cv2.INTER_LINEAR)
    inner = cv2.erode(out.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    assert inner.mean() > 0.6
    assert _psnr(out.image[inner], want[inner]) > 50.0  # exact up to rounding (perspective-correct)
    assert (out.image[~out.mask] == BG).all()


def test_distorted_plane_matches_per_pixel_ray_casting(layout: CanonicalLayout) -> None:
    cam = _camera(distortion=(-0.25, 0.08, 0.001, -0.001, 0.0))
    tex = _texture(seed=5)
    out = _render_single(cam, _plane_mesh(), tex, layout)
    ys, xs = np.mgrid[0:240, 0:320]
    rays = cam.pixel_rays_head(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64))
    s = -cam.translation_mm[2] / rays[:, 2]
    hit = cam.translation_mm + s[:, None] * rays
    uv = ((hit[:, :2] + 60.0) * 5.0).astype(np.float32)
    want = cv2.remap(tex, uv[:, 0].reshape(240, 320), uv[:, 1].reshape(240, 320), cv2.INTER_LINEAR)
    inside = (np.abs(hit[:, :2]) < 60.0).all(1).reshape(240, 320)
    inner = cv2.erode(out.mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool) & inside
    assert inner.mean() > 0.5
    assert _psnr(out.image[inner], want[inner]) > 50.0
    # the covered area is the analytic one (edges may differ by the rasteriser's boundary pixels)
    assert np.mean(out.mask != inside) < 0.01


def test_near_plane_clipping_keeps_geometry_beside_the_camera(layout: CanonicalLayout) -> None:
    """A big plane running past the camera at a grazing angle: triangles straddle the camera plane.

    Dropping them would leave holes; clipping must reproduce the ray-cast coverage.
    """
    # a wide (110 deg) lens 8 mm from the plane, looking 55 deg off its normal: the image's left
    # edge looks straight at the plane through triangles whose far vertices are behind the camera
    cam = _camera(focal=110.0, t=(0.0, 0.0, -8.0), r=(0.0, 0.0, 55.0))
    mesh = _plane_mesh(half_mm=120.0, step_mm=12.0, px_per_mm=2.5)
    tex = _texture()
    out = _render_single(cam, mesh, tex, layout)
    ys, xs = np.mgrid[0:240, 0:320]
    rays = cam.pixel_rays_head(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64))
    s = -cam.translation_mm[2] / rays[:, 2]
    hit = cam.translation_mm + s[:, None] * rays
    want = ((s > 0) & (np.abs(hit[:, :2]) < 120.0).all(1)).reshape(240, 320)
    assert want.mean() > 0.3
    assert np.mean(out.mask != want) < 0.01


def test_clip_near_cases() -> None:
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-10, 10, (300, 3, 3))
    uv = rng.uniform(0, 100, (300, 3, 2))
    near = 1.0
    out_xyz, out_uv = clip_near(xyz, uv, near)
    assert out_xyz.shape[1:] == (3, 3) and out_uv.shape == out_xyz.shape[:2] + (2,)
    assert (out_xyz[:, :, 2] >= near - 1e-9).all()
    n_behind = (xyz[:, :, 2] < near).sum(1)
    expected = (n_behind == 0).sum() + 2 * (n_behind == 1).sum() + (n_behind == 2).sum()
    assert len(out_xyz) == expected
    # orientation is kept: each output normal points the same way as its parent's
    one = np.array([[[0.0, 0.0, -1.0], [4.0, 0.0, 5.0], [0.0, 4.0, 5.0]]])
    got, got_uv = clip_near(one, np.zeros((1, 3, 2)), near)
    n_in = np.cross(one[0, 1] - one[0, 0], one[0, 2] - one[0, 0])
    for tri in got:
        assert np.cross(tri[1] - tri[0], tri[2] - tri[0]) @ n_in > 0
    assert len(got) == 2 and np.allclose(got[:, :, 2].min(), near)


def test_back_faces_are_culled(layout: CanonicalLayout) -> None:
    cam = _camera()
    mesh = _plane_mesh()
    flipped = FaceMesh(mesh.vertices, mesh.triangles[:, ::-1], mesh.uv)
    out = _render_single(cam, flipped, _texture(), layout)
    assert not out.mask.any() and (out.image == BG).all()


@pytest.mark.parametrize("profile", YAMLS)
def test_every_profile_and_view_renders_at_camera_resolution(
    profile: str, face_image: np.ndarray, face_mesh: FaceMesh, layout: CanonicalLayout
) -> None:
    calib = load_calibration(CALIB_DIR / f"{profile}.yaml")
    rend = HeadsetRenderer(calib, layout)
    assert set(rend.views) == set(VIEWS)
    for view in VIEWS:
        out = rend.render_views(face_image, face_mesh, view)
        assert list(out) == list(calib.cameras)
        for name, rv in out.items():
            cam = calib.cameras[name]
            w, h = cam.resolution
            assert rv.image.dtype == np.uint8
            assert rv.image.shape == ((h, w) if cam.infrared else (h, w, 3)), (profile, view, name)
            assert rv.mask.shape == (h, w)
            assert rv.mask.mean() > 0.1, (profile, view, name)
            if view == "front" and name.endswith("_eye"):
                assert rv.mask.mean() > 0.5, (profile, name, rv.mask.mean())
                # the face pixels are textured (not a flat fill): the eye region has detail
                assert float(rv.image[rv.mask].std()) > 8.0
        plain = rend.render(face_image, face_mesh, view)
        assert all(np.array_equal(plain[k], out[k].image) for k in out)


def test_rendering_is_deterministic(
    face_image: np.ndarray, face_mesh: FaceMesh, layout: CanonicalLayout
) -> None:
    calib = load_calibration(CALIB_DIR / "generic.yaml")
    a = HeadsetRenderer(calib, layout).render(face_image, face_mesh, "left-60")
    b = HeadsetRenderer(calib, layout).render(face_image, face_mesh, "left-60")
    assert all(np.array_equal(a[k], b[k]) for k in a)
    front = HeadsetRenderer(calib, layout).render(face_image, face_mesh, "front")
    assert any(not np.array_equal(a[k], front[k]) for k in a)


def test_views_orbit_about_the_look_at_point_and_are_clamped(layout: CanonicalLayout) -> None:
    calib = load_calibration(CALIB_DIR / "quest_pro_like.yaml")
    rend = HeadsetRenderer(calib, layout, extra_views={"tilt": (10.0, 5.0, -20.0)})
    assert "tilt" in rend.views
    for view, wanted in rend.views.items():
        used = rend.view_angles(view)
        for name, angles in used.items():
            for a, w in zip(angles, wanted, strict=True):
                assert abs(a) <= abs(w) + 1e-9 and a * w >= 0, (view, name)
            base, posed = calib.cameras[name], rend.camera(view, name)
            # the look-at point stays put in the image and at the same distance
            axis = base.R_head_from_cam()[:, 2]
            centre = layout.pixel_to_head(
                np.array(
                    [[np.mean(layout.region(name).box_px[::2]), np.mean(layout.region(name).box_px[1::2])]]
                )
            )[0]
            pivot = base.translation_mm + max(float((centre - base.translation_mm) @ axis), 1.0) * axis
            uv0, d0 = base.project(pivot[None])
            uv1, d1 = posed.project(pivot[None])
            np.testing.assert_allclose(uv1, uv0, atol=1e-6)
            np.testing.assert_allclose(d1, d0, atol=1e-6)
    assert rend.view_angles("front") == {n: (0.0, 0.0, 0.0) for n in calib.cameras}
    assert rend.camera("front", "left_eye") is calib.cameras["left_eye"]
    # generic eye cameras 45 mm out cannot swing a full 60 deg toward the nose
    generic = HeadsetRenderer(load_calibration(CALIB_DIR / "generic.yaml"), layout)
    assert generic.view_angles("left-60")["left_eye"] == (0.0, 0.0, -60.0)
    assert -60.0 < generic.view_angles("left-60")["right_eye"][2] < 0.0


def test_bad_views_and_frames_are_rejected(face_mesh: FaceMesh, layout: CanonicalLayout) -> None:
    calib = load_calibration(CALIB_DIR / "generic.yaml")
    with pytest.raises(ValueError, match="duplicates"):
        HeadsetRenderer(calib, layout, extra_views={"front": (0, 0, 1)})
    with pytest.raises(ValueError, match="3 finite angles"):
        HeadsetRenderer(calib, layout, extra_views={"x": (0, 0, 400)})
    with pytest.raises(ValueError, match="droll"):
        HeadsetRenderer(calib, layout, extra_views={"x": "abc"})
    rend = HeadsetRenderer(calib, layout)
    with pytest.raises(ValueError, match="unknown view 'side'; expected one of front"):
        rend.render(np.zeros((10, 10, 3), np.uint8), face_mesh, "side")
    with pytest.raises(ValueError, match="uint8 BGR"):
        rend.render(np.zeros((10, 10), np.uint8), face_mesh)
    with pytest.raises(ValueError, match="background"):
        RenderConfig(background=300)


def test_rotation_to_deg_inverts_the_calibration_convention() -> None:
    for angles in [(0.0, 0.0, 0.0), (5.0, -20.0, 33.0), (-40.0, 60.0, -120.0)]:
        np.testing.assert_allclose(rotation_to_deg(rotation_head_from_cam(angles)), angles, atol=1e-9)


def test_depth_map_passes_through_the_vertices(face_mesh: FaceMesh, layout: CanonicalLayout) -> None:
    depth, mask = render_depth_orthographic(face_mesh, layout)
    assert depth.shape == (layout.size, layout.size) and depth.dtype == np.float32
    assert 0.5 < mask.mean() < 1.0 and np.all(depth[~mask] == 0.0)
    pix = face_mesh.frontal_pixels(layout)[:468]
    inside = (pix.min(1) > 2) & (pix.max(1) < layout.size - 3)
    ij = np.rint(pix[inside]).astype(int)
    got = depth[ij[:, 1], ij[:, 0]]
    want = face_mesh.vertices[:468][inside, 2]
    # rounding a vertex to its pixel moves at most 0.7 px along a surface of moderate slope
    assert np.median(np.abs(got - want)) < 0.5
    assert float(depth[mask].min()) < -10.0  # the nose stands out in front of the eye corners


@pytest.mark.parametrize("region", ["left_eye", "right_eye"])
def test_surface_aligner_inverts_a_render_of_the_same_mesh(
    face_image: np.ndarray, face_lm: FaceLandmarks, face_mesh: FaceMesh, layout: CanonicalLayout,
    region: str,
) -> None:
    """Rendering a face and rectifying it onto that face's own surface gives back the frontal
    crop; the face-plane homography (what the product's baseline does) gets it clearly worse."""
    calib = load_calibration(CALIB_DIR / "generic.yaml")
    view = HeadsetRenderer(calib, layout, views={"front": (0.0, 0.0, 0.0)}).render(face_image, face_mesh)
    gray = cv2.cvtColor(face_image, cv2.COLOR_BGR2GRAY)
    aligned, _ = layout.align_face(gray, face_lm)
    truth = layout.crop_region(aligned, region)
    depth, _ = render_depth_orthographic(face_mesh, layout)
    cam = calib.cameras[region]
    exact = SurfaceAligner(cam, layout.region(region), layout, depth)
    plane = HomographyAligner(cam, layout.region(region), layout, face_plane=True)
    assert exact.method == "surface" and 0.6 < exact.coverage <= 1.0
    assert exact.valid_mask[plane.valid_mask].all()  # never black where the baseline sees
    pure = SurfaceAligner(cam, layout.region(region), layout, depth, plane_fallback=False)
    assert pure.coverage < exact.coverage and not pure.valid_mask[~exact.valid_mask].any()
    both = exact.valid_mask & plane.valid_mask
    err_exact = np.abs(exact.align(view[region]).astype(float) - truth)[both]
    err_plane = np.abs(plane.align(view[region]).astype(float) - truth)[both]
    assert np.median(err_exact) <= 1.5  # gray levels: resampling twice (measured 1.0)
    assert np.median(err_exact) < 0.25 * np.median(err_plane)  # plane: parallax (measured 9)


def test_surface_aligner_on_a_flat_depth_is_the_plane_rectification(layout: CanonicalLayout) -> None:
    cam = load_calibration(CALIB_DIR / "generic.yaml").cameras["left_eye"]
    frame = _texture(320, seed=5)[:240]
    frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    depth = np.full((layout.size, layout.size), 4.0, np.float32)
    surf = SurfaceAligner(cam, layout.region("left_eye"), layout, depth, fixed_point=False)
    plane = HomographyAligner(cam, layout.region("left_eye"), layout, plane_z_mm=4.0, fixed_point=False)
    np.testing.assert_array_equal(surf.valid_mask, plane.valid_mask)
    np.testing.assert_array_equal(surf.align(frame), plane.align(frame))
    with pytest.raises(ValueError, match="depth_mm"):
        SurfaceAligner(cam, layout.region("left_eye"), layout, depth[:10])
