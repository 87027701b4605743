"""Landmark dataclass, backends and head pose, on the demo clip and on points made here."""

from __future__ import annotations

import itertools
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from revavatar.core import landmarks as lmk
from revavatar.core.gaze import estimate_head_pose
from revavatar.core.landmarks import (
    BACKENDS,
    SCHEMES,
    FaceLandmarks,
    LandmarkDetector,
    create_detector,
)
from revavatar.errors import BackendUnavailableError


def _clip_frames(path: Path, indices: set[int]) -> dict[int, np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out: dict[int, np.ndarray] = {}
    i = 0
    while len(out) < len(indices):
        ok, frame = cap.read()
        assert ok, f"demo clip ended before frame {max(indices)}"
        if i in indices:
            out[i] = frame
        i += 1
    cap.release()
    return out


@pytest.fixture(scope="module")
def mp_detector() -> Iterator[LandmarkDetector]:
    with create_detector("mediapipe") as det:
        yield det


@pytest.fixture(scope="module")
def mp_face(mp_detector: LandmarkDetector, face_image: np.ndarray) -> FaceLandmarks:
    lm = mp_detector.detect(face_image)
    assert lm is not None
    return lm


@pytest.fixture(scope="module")
def turned_frame(demo_video: Path) -> np.ndarray:
    """Frame 160: head turned toward the image left (about -23 degrees yaw)."""
    return _clip_frames(demo_video, {160})[160]


def _check_frontal_layout(lm: FaceLandmarks) -> None:
    kp = lm.key_points()
    r_eye, l_eye, nose, r_mouth, l_mouth = kp
    assert r_eye[0] < l_eye[0], "wearer's right eye must be on the image left"
    assert r_mouth[0] < l_mouth[0]
    assert max(r_eye[1], l_eye[1]) < nose[1] < min(r_mouth[1], l_mouth[1])
    for side in ("right", "left"):
        e = lm.eye(side)
        assert e.corners[0, 0] < e.corners[1, 0], "corners run along image +x"
        assert np.all(e.upper[:, 1] <= e.lower[:, 1] + 1.0), "upper lid above lower lid"


def test_mediapipe_detects_478_points_with_sides(mp_face: FaceLandmarks, face_image: np.ndarray):
    h, w = face_image.shape[:2]
    assert mp_face.scheme == "mediapipe478"
    assert mp_face.points.shape == (478, 2) and mp_face.points.dtype == np.float32
    assert mp_face.points3d is not None and mp_face.points3d.shape == (478, 3)
    np.testing.assert_allclose(mp_face.points3d[:, :2], mp_face.points)
    assert mp_face.image_size == (w, h)
    assert mp_face.has_iris
    inside = (mp_face.points[:, 0] > 0) & (mp_face.points[:, 0] < w) & (mp_face.points[:, 1] < h)
    assert inside.mean() > 0.95
    _check_frontal_layout(mp_face)
    # the iris of each eye lies between that eye's corners (468 is the image-left, right eye)
    for side in ("right", "left"):
        e = mp_face.eye(side)
        assert e.iris is not None
        assert e.corners[0, 0] < e.iris[0] < e.corners[1, 0]
    # the demo face is ~100 px between the eyes
    assert 70 < mp_face.interocular_px() < 140


def test_no_face_gives_none(mp_detector: LandmarkDetector):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    assert mp_detector.detect(noise) is None
    assert mp_detector.detect(np.full((240, 320, 3), 128, np.uint8)) is None


def test_detector_rejects_bad_images(mp_detector: LandmarkDetector):
    with pytest.raises(ValueError, match="uint8"):
        mp_detector.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="channels"):
        mp_detector.detect(np.zeros((10, 10, 2), np.uint8))


def test_gray_input_is_accepted(mp_detector: LandmarkDetector, face_image: np.ndarray):
    lm = mp_detector.detect(cv2.cvtColor(face_image, cv2.COLOR_BGR2GRAY))
    assert lm is not None
    _check_frontal_layout(lm)


def test_video_mode_reuse_and_close(demo_frames: list[np.ndarray]):
    det = create_detector("mediapipe", static_image=False)
    results = [det.detect(f) for f in demo_frames[:6]]
    assert all(r is not None for r in results)
    # tracking keeps the face steady: eye centres move little between consecutive frames
    steps = [np.abs(a.key_points() - b.key_points()).max() for a, b in itertools.pairwise(results)]
    assert max(steps) < 10.0
    det.close()
    det.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        det.detect(demo_frames[0])


def test_transformed_maps_points_and_depth(mp_face: FaceLandmarks):
    ident = np.hstack([np.eye(2), np.zeros((2, 1))])
    same = mp_face.transformed(ident)
    np.testing.assert_allclose(same.points, mp_face.points, atol=1e-4)
    # scale 2, rotate 90 degrees, shift (10, -5)
    m = np.array([[0.0, -2.0, 10.0], [2.0, 0.0, -5.0]])
    t = mp_face.transformed(m, (512, 512))
    p = mp_face.points.astype(np.float64)
    expect = np.column_stack([-2.0 * p[:, 1] + 10.0, 2.0 * p[:, 0] - 5.0])
    np.testing.assert_allclose(t.points, expect, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(t.points3d[:, :2], expect, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(t.points3d[:, 2], 2.0 * mp_face.points3d[:, 2], rtol=1e-5, atol=1e-4)
    assert t.image_size == (512, 512) and t.scheme == mp_face.scheme
    with pytest.raises(ValueError, match="2x3"):
        mp_face.transformed(np.eye(3))


def test_landmarks_validation():
    with pytest.raises(ValueError, match="unknown landmark scheme"):
        FaceLandmarks(np.zeros((68, 2)), None, "bogus", (10, 10))
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        FaceLandmarks(np.zeros((60, 2)), None, "dlib68", (10, 10))
    lm = FaceLandmarks(np.zeros((68, 2)), None, "dlib68", (10, 10))
    assert not lm.has_iris and lm.eye("left").iris is None
    with pytest.raises(ValueError, match="right, left"):
        lm.eye("middle")


def test_eye_aspect_ratio_on_synthetic_eye():
    pts = np.zeros((68, 2), np.float32)
    # right eye (36..41): corners 30 px apart, lids 9 px apart -> EAR 0.3
    pts[36], pts[39] = (0, 0), (30, 0)
    pts[37], pts[38], pts[41], pts[40] = (10, -4.5), (20, -4.5), (10, 4.5), (20, 4.5)
    lm = FaceLandmarks(pts, None, "dlib68", (64, 64))
    eye = lm.eye("right")
    assert eye.width == pytest.approx(30.0)
    assert eye.aspect_ratio == pytest.approx(0.3)
    pts[[37, 38, 41, 40]] = (10, -0.5), (20, -0.5), (10, 0.5), (20, 0.5)  # lids nearly shut
    shut = FaceLandmarks(pts, None, "dlib68", (64, 64)).eye("right")
    assert shut.aspect_ratio < 0.05


def test_registry_and_unknown_backend():
    assert set(BACKENDS) == {"mediapipe", "dlib", "face_alignment"}
    assert {"mediapipe478", "mediapipe468", "dlib68", "fan68"} <= set(SCHEMES)
    with pytest.raises(ValueError, match="mediapipe, dlib, face_alignment"):
        create_detector("openface")


def test_head_pose_frontal_turned_and_mirrored(mp_detector, mp_face, turned_frame):
    front = estimate_head_pose(mp_face)
    assert abs(front.yaw_deg) < 20 and abs(front.pitch_deg) < 20 and abs(front.roll_deg) < 15
    turned = mp_detector.detect(turned_frame)
    assert turned is not None
    pose = estimate_head_pose(turned)
    assert pose.yaw_deg < -15, pose  # turned toward the image left
    mirrored = mp_detector.detect(np.ascontiguousarray(turned_frame[:, ::-1]))
    assert mirrored is not None
    mpose = estimate_head_pose(mirrored)
    assert mpose.yaw_deg > 15, mpose
    assert mpose.yaw_deg == pytest.approx(-pose.yaw_deg, abs=6.0)


def test_dlib_backend_detects_demo_face(face_image: np.ndarray, mp_face: FaceLandmarks):
    try:
        det = create_detector("dlib")
    except BackendUnavailableError as err:  # pragma: no cover - depends on the machine
        pytest.skip(f"dlib not installed: {err}")
    with det:
        lm = det.detect(face_image)
        assert lm is not None and lm.scheme == "dlib68" and lm.points.shape == (68, 2)
        assert lm.points3d is None and lm.score > 0
        _check_frontal_layout(lm)
        # eyes and mouth corners agree with mediapipe to a small share of the interocular
        scale = mp_face.interocular_px()
        diff = np.abs(lm.key_points()[[0, 1, 3, 4]] - mp_face.key_points()[[0, 1, 3, 4]])
        assert diff.max() < 0.12 * scale
        assert det.detect(np.zeros((200, 200, 3), np.uint8)) is None


def test_face_alignment_not_installed():
    if "face_alignment" in sys.modules or lmk.importlib.util.find_spec("face_alignment"):
        pytest.skip("face-alignment is installed here; the fake-package tests cover it")
    with pytest.raises(BackendUnavailableError, match="pip install face-alignment"):
        create_detector("face_alignment")


_FAKE_API = '''
default_model_urls = {"2DFAN-4": "https://example.invalid/python-fan/2DFAN4-cd938726ad.zip"}
models_urls = {"1.5": {"2DFAN-4": "https://example.invalid/python-fan/2DFAN4_1.5-a6.zip"}}
'''
_FAKE_SFD = 'models_urls = {"s3fd": "https://example.invalid/python-fan/s3fd-619a316812.pth"}\n'
_FAKE_INIT = '''
import enum
import numpy as np

class LandmarksType(enum.IntEnum):
    TWO_D = 1

class FaceAlignment:
    def __init__(self, kind, device="cpu", face_detector="sfd"):
        self.kind = kind

    def get_landmarks_from_image(self, rgb):
        small = np.stack([np.linspace(0, 10, 68), np.linspace(0, 10, 68)], 1)
        big = np.stack([np.linspace(20, 120, 68), np.linspace(30, 150, 68)], 1)
        return [small, big]
'''


@pytest.fixture
def fake_face_alignment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A stand-in face_alignment package on sys.path and an empty torch hub cache."""
    pkg = tmp_path / "site" / "face_alignment"
    (pkg / "detection" / "sfd").mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(_FAKE_INIT))
    (pkg / "api.py").write_text(textwrap.dedent(_FAKE_API))
    (pkg / "detection" / "__init__.py").write_text("")
    (pkg / "detection" / "sfd" / "__init__.py").write_text("")
    (pkg / "detection" / "sfd" / "sfd_detector.py").write_text(_FAKE_SFD)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    yield tmp_path / "hub" / "checkpoints"
    for name in [m for m in sys.modules if m.split(".")[0] == "face_alignment"]:
        del sys.modules[name]


def test_face_alignment_missing_weights_is_refused(fake_face_alignment: Path):
    with pytest.raises(BackendUnavailableError) as info:
        create_detector("face_alignment")
    msg = str(info.value)
    assert "2DFAN4-cd938726ad.zip" in msg and "s3fd-619a316812.pth" in msg
    assert str(fake_face_alignment) in msg and "never downloads" in msg
    # one of the two present: only the other is named
    fake_face_alignment.mkdir(parents=True)
    (fake_face_alignment / "s3fd-619a316812.pth").write_bytes(b"x")
    assert lmk.missing_face_alignment_weights() == ["2DFAN4-cd938726ad.zip"]


def test_face_alignment_with_cached_weights_detects(fake_face_alignment: Path):
    fake_face_alignment.mkdir(parents=True)
    for name in ("2DFAN4-cd938726ad.zip", "s3fd-619a316812.pth"):
        (fake_face_alignment / name).write_bytes(b"x")
    det = create_detector("face_alignment")
    lm = det.detect(np.zeros((200, 160, 3), np.uint8))
    assert lm is not None and lm.scheme == "fan68" and lm.image_size == (160, 200)
    assert lm.points[:, 0].max() == pytest.approx(120.0)  # the larger of the two faces


def test_mediapipe_start_up_is_quiet(face_image: np.ndarray, capfd: pytest.CaptureFixture[str]):
    with create_detector("mediapipe") as det:
        assert det.detect(face_image) is not None
        assert det.detect(face_image) is not None
    err = capfd.readouterr().err
    assert "XNNPACK" not in err and "W0000" not in err, err
