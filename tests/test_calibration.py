"""Headset calibration: strict loader, camera models, ROS CameraInfo, shipped profiles."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from revavatar.core.calibration import (
    CAMERA_NAMES,
    CameraCalibration,
    HeadsetCalibration,
    calibration_from_dict,
    load_calibration,
    rotation_head_from_cam,
    save_calibration,
)
from revavatar.core.canonical import CanonicalLayout
from revavatar.errors import CalibrationError

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ("generic", "quest_pro_like", "vive_focus_like")


def _profile(name: str) -> Path:
    return ROOT / "calibration" / f"{name}.yaml"


def _camera(**kw: Any) -> CameraCalibration:
    base: dict[str, Any] = {
        "name": "left_eye",
        "resolution": (320, 240),
        "fps": 30.0,
        "fx": 500.0,
        "fy": 480.0,
        "cx": 160.0,
        "cy": 120.0,
        "distortion_model": "plumb_bob",
        "distortion": (0.0, 0.0, 0.0, 0.0, 0.0),
        "translation_mm": np.array([0.0, 0.0, -600.0]),
        "rotation_deg": (0.0, 0.0, 0.0),
        "infrared": True,
    }
    base.update(kw)
    return CameraCalibration(**base)


@pytest.fixture
def generic_dict() -> dict[str, Any]:
    return load_calibration(_profile("generic")).to_dict()


# ------------------------------------------------------------------------------------- profiles


@pytest.mark.parametrize("name", PROFILES)
def test_profiles_load(name: str) -> None:
    cal = load_calibration(_profile(name))
    assert cal.name == name
    assert tuple(cal.cameras) == CAMERA_NAMES
    assert cal.source == _profile(name)
    assert cal.description.strip()
    for cam_name, cam in cal.cameras.items():
        assert cam.name == cam_name
        assert cam.fx > 0
        assert 0 <= cam.cx <= cam.width
    assert cal.cameras["left_eye"].infrared
    assert cal.cameras["right_eye"].infrared
    # left eye camera on the wearer's left (x > 0), right eye camera mirrored
    assert (
        cal.cameras["left_eye"].translation_mm[0] > 0 > cal.cameras["right_eye"].translation_mm[0]
    )
    assert cal.display.distance_mm < cal.display.viewer_distance_mm


def test_profiles_differ_in_lens_models() -> None:
    vive = load_calibration(_profile("vive_focus_like"))
    assert vive.cameras["lower_face"].distortion_model == "equidistant"
    assert len(vive.cameras["lower_face"].distortion) == 4
    assert (
        load_calibration(_profile("generic")).cameras["left_eye"].distortion_model == "plumb_bob"
    )
    assert load_calibration(_profile("quest_pro_like")).cameras["left_eye"].resolution == (
        400,
        400,
    )


def _region_points(camera: str) -> np.ndarray:
    """The face points a camera must see (contract numbers), at several depths."""
    if camera == "lower_face":
        xs, ys, zs = np.linspace(-40, 40, 5), np.linspace(25, 75, 5), (-15.0, 0.0, 10.0)
    else:
        sign = 1.0 if camera == "left_eye" else -1.0
        xs, ys, zs = sign * np.linspace(15, 47, 5), np.array([-8.0, 0.0, 8.0]), (0.0, 5.0, 10.0)
    return np.array([[x, y, z] for x in xs for y in ys for z in zs])


def _box_corners(layout: CanonicalLayout, region: str) -> np.ndarray:
    x0, y0, x1, y1 = layout.region(region).box_px
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64) - 0.5
    return layout.pixel_to_head(corners, z=0.0)


@pytest.mark.parametrize("name", PROFILES)
@pytest.mark.parametrize("camera", CAMERA_NAMES)
def test_each_camera_sees_its_region(name: str, camera: str) -> None:
    cam = load_calibration(_profile(name)).cameras[camera]
    pts = _region_points(camera)
    uv, depth = cam.project(pts)
    assert (depth > 10).all()
    assert (uv[:, 0] > 5).all()
    assert (uv[:, 0] < cam.width - 5).all()
    assert (uv[:, 1] > 5).all()
    assert (uv[:, 1] < cam.height - 5).all()
    assert cam.in_view(pts, margin_px=5).all()
    # head +x (the wearer's left) stays image right: a mirrored pose would swap the eye corners
    left_of, right_of = cam.project(
        np.array(
            [[pts[:, 0].min(), pts[:, 1].mean(), 0.0], [pts[:, 0].max(), pts[:, 1].mean(), 0.0]]
        )
    )[0]
    assert right_of[0] > left_of[0]
    layout = CanonicalLayout()
    corners = _box_corners(layout, camera)
    corner_in_view = cam.in_view(corners)
    if name == "generic" or camera == "lower_face":
        assert corner_in_view.all(), (
            f"{name}/{camera} misses canonical crop corners {corners[~corner_in_view]}"
        )
    else:  # oblique eye cameras: the corner right under the camera is out of view, the rest in
        assert corner_in_view.sum() >= 3


# ------------------------------------------------------------------------------- round trip, io


def test_round_trip(tmp_path: Path) -> None:
    cal = load_calibration(_profile("vive_focus_like"))
    out = save_calibration(cal, tmp_path / "copy.yaml")
    back = load_calibration(out)
    assert back.to_dict() == cal.to_dict()
    assert back.cameras == cal.cameras
    assert back.display == cal.display
    assert back.source == out


def test_frozen() -> None:
    cam = load_calibration(_profile("generic")).cameras["left_eye"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.fx = 1.0  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        cam.translation_mm[0] = 0.0


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(CalibrationError, match="nope.yaml"):
        load_calibration(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ncameras: [1, 2\n")
    with pytest.raises(CalibrationError, match=r"bad\.yaml: invalid YAML \(line"):
        load_calibration(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(CalibrationError, match="empty.yaml"):
        load_calibration(empty)


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    keys = path.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value


def _delete(doc: dict[str, Any], path: str) -> None:
    keys = path.split(".")
    node = doc
    for k in keys[:-1]:
        node = node[k]
    del node[keys[-1]]


# (mutation, key path in the message, words of the expectation)
_BAD: list[tuple[str, Any, str, str]] = [
    ("set", ("cameras.left_eye.fsp", 30.0), "cameras.left_eye.fsp", "one of the keys"),
    ("set", ("colour", "red"), "colour", "one of the keys"),
    (
        "set",
        ("cameras.left_eye.intrinsics.skew", 0.0),
        "cameras.left_eye.intrinsics.skew",
        "one of the keys",
    ),
    (
        "set",
        ("cameras.nose_cam", {}),
        "cameras.nose_cam",
        "one of the keys left_eye, right_eye, lower_face",
    ),
    ("del", "cameras.left_eye.fps", "cameras.left_eye.fps", "this key to be present"),
    ("del", "cameras.lower_face", "cameras.lower_face", "this key to be present"),
    ("del", "display.eye_region", "display.eye_region", "this key to be present"),
    ("set", ("cameras.left_eye.fps", -3), "cameras.left_eye.fps", "a number in (0, 240], got -3"),
    ("set", ("cameras.left_eye.fps", 0), "cameras.left_eye.fps", "a number in (0, 240], got 0"),
    (
        "set",
        ("cameras.left_eye.fps", "fast"),
        "cameras.left_eye.fps",
        "a number in (0, 240], got 'fast'",
    ),
    ("set", ("cameras.left_eye.fps", True), "cameras.left_eye.fps", "a number"),
    (
        "set",
        ("cameras.right_eye.resolution", [320]),
        "cameras.right_eye.resolution",
        "a list of 2 integers",
    ),
    (
        "set",
        ("cameras.right_eye.resolution", [320.5, 240]),
        "cameras.right_eye.resolution[0]",
        "an integer",
    ),
    (
        "set",
        ("cameras.right_eye.resolution", [8, 240]),
        "cameras.right_eye.resolution[0]",
        "[16, 4096], got 8",
    ),
    (
        "set",
        ("cameras.right_eye.intrinsics.cx", 400.0),
        "cameras.right_eye.intrinsics.cx",
        "[0, 320]",
    ),
    (
        "set",
        ("cameras.right_eye.intrinsics.fx", 0.0),
        "cameras.right_eye.intrinsics.fx",
        "(0, 100000]",
    ),
    (
        "set",
        ("cameras.lower_face.infrared", "yes"),
        "cameras.lower_face.infrared",
        "true or false",
    ),
    (
        "set",
        ("cameras.lower_face.distortion.model", "fisheye"),
        "cameras.lower_face.distortion.model",
        "plumb_bob",
    ),
    (
        "set",
        ("cameras.lower_face.distortion.coefficients", [0.1, 0.0, 0.0, 0.0]),
        "cameras.lower_face.distortion.coefficients",
        "a list of 5 numbers",
    ),
    (
        "set",
        ("cameras.lower_face.pose.rotation_deg", [0, 200, 0]),
        "cameras.lower_face.pose.rotation_deg[1]",
        "[-180, 180], got 200",
    ),
    ("set", ("cameras.lower_face.pose", [0, 0, 0]), "cameras.lower_face.pose", "a mapping"),
    ("set", ("display.viewer_distance_mm", 10.0), "display.viewer_distance_mm", "> distance_mm"),
    ("set", ("display.eye_region", [0.8, 0.2, 0.1, 0.5]), "display.eye_region", "x0 < x1"),
    ("set", ("display.size_mm", [150.0, -1.0]), "display.size_mm[1]", "(0, 1000]"),
    ("set", ("name", ""), "name", "a non-empty string"),
    ("set", ("description", 5), "description", "a string"),
]


@pytest.mark.parametrize(
    ("op", "arg", "key", "expected"), _BAD, ids=[b[2] + ":" + b[3][:12] for b in _BAD]
)
def test_validation_names_file_key_and_expectation(
    tmp_path: Path, generic_dict: dict[str, Any], op: str, arg: Any, key: str, expected: str
) -> None:
    doc = copy.deepcopy(generic_dict)
    if op == "set":
        _set(doc, arg[0], arg[1])
    else:
        _delete(doc, arg)
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    with pytest.raises(CalibrationError) as info:
        load_calibration(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(f"{path}: {key}: expected ")
    assert expected in text


def test_unmutated_copy_loads(tmp_path: Path, generic_dict: dict[str, Any]) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump(generic_dict))  # key order shuffled: order must not matter
    assert load_calibration(path).to_dict() == generic_dict


def test_from_dict_rejects_non_mapping() -> None:
    with pytest.raises(CalibrationError, match="mem: <document>: expected a mapping"):
        calibration_from_dict([1, 2], "mem")


# --------------------------------------------------------------------------------- camera model


def test_rotation_convention() -> None:
    assert np.allclose(rotation_head_from_cam((0, 0, 0)), np.eye(3))
    # positive pitch looks up (-y), positive yaw turns toward +x
    assert np.allclose(rotation_head_from_cam((0, 30, 0))[:, 2], [0, -0.5, math.sqrt(3) / 2])
    assert np.allclose(rotation_head_from_cam((0, 0, 90))[:, 2], [1, 0, 0])
    r = rotation_head_from_cam((10, 20, 30))
    c, s = math.cos, math.sin
    a, b, g = (math.radians(v) for v in (10, 20, 30))  # roll, pitch, yaw
    rx = np.array([[1, 0, 0], [0, c(b), -s(b)], [0, s(b), c(b)]])
    ry = np.array([[c(g), 0, s(g)], [0, 1, 0], [-s(g), 0, c(g)]])
    rz = np.array([[c(a), -s(a), 0], [s(a), c(a), 0], [0, 0, 1]])
    assert np.allclose(r, ry @ rx @ rz)  # the contract's order: yaw after pitch after roll
    assert np.allclose(r @ r.T, np.eye(3))
    assert np.isclose(np.linalg.det(r), 1.0)


def test_projection_matches_hand_computation() -> None:
    cam = _camera()
    uv, depth = cam.project(np.array([[10.0, 20.0, 0.0], [-30.0, 0.0, 600.0]]))
    assert np.allclose(depth, [600.0, 1200.0])
    assert np.allclose(uv[0], [160 + 500 * 10 / 600, 120 + 480 * 20 / 600])
    assert np.allclose(uv[1], [160 - 500 * 30 / 1200, 120])
    # camera at x = -100 turned 90 deg toward +x: X_cam = R.T @ (X - t) = (-z, y, x + 100)
    side = _camera(translation_mm=np.array([-100.0, 0.0, 0.0]), rotation_deg=(0.0, 0.0, 90.0))
    uv, depth = side.project(np.array([0.0, 10.0, 5.0]))
    assert np.allclose(depth, [100.0])
    assert np.allclose(uv[0], [160 + 500 * -5 / 100, 120 + 480 * 10 / 100])
    # a pitched-up camera images a point on its optical axis at the principal point
    up = _camera(translation_mm=np.array([0.0, 20.0, -40.0]), rotation_deg=(5.0, 30.0, -20.0))
    axis_point = up.translation_mm + 37.0 * up.R_head_from_cam()[:, 2]
    uv, depth = up.project(axis_point)
    assert np.allclose(uv[0], [160.0, 120.0])
    assert np.isclose(depth[0], 37.0)


def test_plumb_bob_distortion_matches_formula() -> None:
    k1, k2, p1, p2, k3 = -0.2, 0.05, 0.001, -0.002, 0.01
    cam = _camera(distortion=(k1, k2, p1, p2, k3))
    point = np.array([[120.0, -90.0, 0.0]])
    x, y = 120.0 / 600, -90.0 / 600
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2**2 + k3 * r2**3
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    uv, _ = cam.project(point)
    assert np.allclose(uv[0], [500 * xd + 160, 480 * yd + 120], atol=1e-9)


def test_equidistant_vs_plumb_bob() -> None:
    point = np.array([[600.0, 0.0, 0.0]])  # 45 deg off-axis for the camera at z = -600
    pin = _camera()
    fish = _camera(distortion_model="equidistant", distortion=(0.0, 0.0, 0.0, 0.0))
    assert np.allclose(pin.project(point)[0][0], [160 + 500 * 1.0, 120])
    assert np.allclose(fish.project(point)[0][0], [160 + 500 * math.pi / 4, 120])
    k = (0.1, -0.02, 0.003, -0.0004)
    fish_k = _camera(distortion_model="equidistant", distortion=k)
    th = math.pi / 4
    th_d = th * (1 + k[0] * th**2 + k[1] * th**4 + k[2] * th**6 + k[3] * th**8)
    assert np.allclose(fish_k.project(point)[0][0], [160 + 500 * th_d, 120])


@pytest.mark.parametrize("name", PROFILES)
def test_undistort_inverts_project(name: str) -> None:
    for cam in load_calibration(_profile(name)).cameras.values():
        rng = np.random.default_rng(0)
        rays = np.column_stack([rng.uniform(-0.6, 0.6, (50, 2)), np.ones(50)])
        pts_head = cam.translation_mm + 80.0 * rays @ cam.R_head_from_cam().T
        uv, _ = cam.project(pts_head)
        assert np.allclose(cam.undistort_points(uv), rays[:, :2], atol=1e-6)
        dirs = cam.pixel_rays_head(uv)
        expected = pts_head - cam.translation_mm
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        assert np.allclose(dirs, expected, atol=1e-6)


def test_in_view_rejects_behind_and_folded_points() -> None:
    cam = _camera()
    assert not cam.in_view(np.array([[0.0, 0.0, -700.0]]))[0]  # behind the camera
    assert cam.in_view(np.array([[0.0, 0.0, 0.0]]))[0]
    strong = _camera(distortion=(-0.5, 0.0, 0.0, 0.0, 0.0))
    limit = strong.max_field_angle_deg()
    assert 35 < limit < 40  # r(1 - 0.5 r^2) peaks at r = sqrt(2/3), 39.2 deg
    far = np.array([[600.0 * 1.3, 0.0, 0.0]])  # r = 1.3 (52 deg): r - 0.5 r^3 = 0.2
    uv, depth = strong.project(far)
    assert depth[0] > 0
    assert 0 <= uv[0, 0] < 320
    assert not strong.in_view(far)[0]  # ... but not really seen


def test_camera_info_fields() -> None:
    cam = load_calibration(_profile("quest_pro_like")).cameras["left_eye"]
    info = cam.camera_info(1_500_000_123, "le_optical")
    assert info.header.stamp.sec == 1
    assert info.header.stamp.nanosec == 500_000_123
    assert info.header.frame_id == "le_optical"
    assert (info.width, info.height) == (400, 400)
    assert info.distortion_model == "plumb_bob"
    assert info.d == cam.distortion
    assert len(info.d) == 5
    assert np.allclose(np.reshape(info.k, (3, 3)), cam.K())
    assert info.k[2] == cam.cx
    assert info.k[5] == cam.cy
    assert info.k[8] == 1.0
    assert np.allclose(np.reshape(info.r, (3, 3)), np.eye(3))
    p = np.reshape(info.p, (3, 4))
    assert np.allclose(p[:, :3], cam.K())
    assert np.allclose(p[:, 3], 0)
    fish = load_calibration(_profile("vive_focus_like")).cameras["lower_face"].camera_info()
    assert fish.distortion_model == "equidistant"
    assert len(fish.d) == 4
    assert fish.header.frame_id == "revavatar/lower_face"


def test_display_pixel_to_head() -> None:
    disp = load_calibration(_profile("generic")).display
    w, h = disp.resolution
    centre = disp.pixel_to_head(np.array([[(w - 1) / 2, (h - 1) / 2]]))[0]
    assert np.allclose(centre, [disp.center_mm[0], disp.center_mm[1], -disp.distance_mm])
    corner = disp.pixel_to_head(np.array([[-0.5, -0.5]]))[0]
    assert np.allclose(corner[:2], np.array(disp.center_mm) - np.array(disp.size_mm) / 2)


def test_headset_camera_lookup() -> None:
    cal: HeadsetCalibration = load_calibration(_profile("generic"))
    assert cal.camera("lower_face") is cal.cameras["lower_face"]
    with pytest.raises(ValueError, match="left_eye, right_eye, lower_face"):
        cal.camera("nose")
