"""DP enrollment: quality refusals with figures, best-frame choice, private profile round trip."""

from __future__ import annotations

import importlib.util
import json
import re
import stat
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.enrollment import (
    PROFILE_FILES,
    Profile,
    QualityChecks,
    assess_image,
    enroll_image,
    enroll_video,
    pick_enrollment_frame,
)
from revavatar.core.landmarks import FaceLandmarks, LandmarkDetector, create_detector
from revavatar.errors import EnrollmentError, InputError, NoFaceError

LAYOUT = CanonicalLayout(256)
#: demo clip frames with open eyes: 240 (near frontal, mouth closed), 336 (smiling)
OPEN_FRAMES = (240, 336)
TURNED_FRAME = 160  # head turned about -23 degrees


@pytest.fixture(scope="module")
def det() -> Iterator[LandmarkDetector]:
    with create_detector("mediapipe") as d:
        yield d


@pytest.fixture(scope="module")
def clip(demo_video: Path) -> dict[int, np.ndarray]:
    wanted = {*OPEN_FRAMES, TURNED_FRAME}
    cap = cv2.VideoCapture(str(demo_video))
    out: dict[int, np.ndarray] = {}
    i = 0
    while len(out) < len(wanted):
        ok, frame = cap.read()
        assert ok
        if i in wanted:
            out[i] = frame
        i += 1
    cap.release()
    return out


@pytest.fixture(scope="module")
def open_face(clip: dict[int, np.ndarray]) -> np.ndarray:
    return clip[240]


def _noise(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)


def close_eyes(image: np.ndarray, lm: FaceLandmarks) -> np.ndarray:
    """Pull each upper lid (with its lashes) down onto the lower lid, as in a blink.

    Columns across each eye are remapped so the skin above the upper lid stretches down by the
    lid gap: the lash line lands on the lower lid and the eye opening disappears.
    """
    h, w = image.shape[:2]
    mapx, mapy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    for side in ("right", "left"):
        e = lm.eye(side)
        x0, x1 = float(e.corners[:, 0].min()), float(e.corners[:, 0].max())
        pad = 0.15 * e.width
        ux = np.concatenate([[x0 - pad], e.upper[:, 0], [x1 + pad]])
        uy = np.concatenate([[e.corners[0, 1]], e.upper[:, 1], [e.corners[1, 1]]])
        lx = np.concatenate([[x0 - pad], e.lower[:, 0], [x1 + pad]])
        ly = np.concatenate([[e.corners[0, 1]], e.lower[:, 1], [e.corners[1, 1]]])
        for x in range(int(x0 - pad), int(x1 + pad) + 1):
            up, low = np.interp(x, ux, uy), np.interp(x, lx, ly)
            gap = max(low - up, 0.0) + 1.0
            top = up - 0.6 * e.width
            ys = np.arange(int(top), int(low) + 3)
            t = np.clip((ys - top) / max(up - top, 1.0), 0.0, 1.0)
            mapy[ys, x] = ys - gap * t
    return cv2.remap(image, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def test_open_frontal_face_enrolls(det, open_face):
    prof = enroll_image(open_face, det, LAYOUT, source="frame240.png")
    assert prof.dp.shape == (256, 256, 3) and prof.dp.dtype == np.uint8
    assert prof.layout_size == 256
    assert prof.landmarks.image_size == (256, 256)
    # landmarks are in canonical pixels: the key points sit on the template
    err = np.abs(prof.landmarks.key_points() - LAYOUT.template_points()).max()
    assert err < 0.06 * LAYOUT.size
    meta = prof.meta
    assert meta["source"] == "frame240.png" and meta["backend"] == "mediapipe"
    assert meta["layout_size"] == 256 and meta["image_size"] == [640, 360]
    q = meta["quality"]
    assert min(q["eye_aspect_ratio"].values()) >= 0.18
    assert q["sharpness"] > 40 and q["brightness"] > 50
    assert re.match(r"\d{4}-\d\d-\d\dT", meta["created"])
    json.dumps(meta)  # serialisable as is
    if importlib.util.find_spec("revavatar.vrface.mesh") is not None:
        assert prof.mesh is not None and prof.mesh.ndim == 2 and prof.mesh.shape[1] == 3
        assert len(prof.mesh) >= 468 and prof.mesh.dtype == np.float32
    else:
        assert prof.mesh is None


def test_no_face_is_refused_with_the_name(det):
    assert det.detect(_noise()) is None
    with pytest.raises(NoFaceError, match=r"^no face found in noise\.png$"):
        enroll_image(_noise(), det, LAYOUT, source="noise.png")
    with pytest.raises(NoFaceError, match="no face found in"):
        enroll_image(np.zeros((200, 200, 3), np.uint8), det, LAYOUT)


def test_naturally_closed_eyes_are_refused(det, face_image):
    # frame 10 of the clip: eyes cast down, lids almost shut
    with pytest.raises(EnrollmentError, match=r"eyes closed \(eye aspect ratio 0\.\d\d < 0\.18\)"):
        enroll_image(face_image, det, LAYOUT, source="frame10.png")


def test_painted_closed_eyes_lower_the_ear_and_are_refused(det, open_face):
    lm = det.detect(open_face)
    shut = close_eyes(open_face, lm)
    _, rep = assess_image(shut, det, LAYOUT)
    before = min(lm.eye(s).aspect_ratio for s in ("left", "right"))
    after = min(rep.eye_aspect_ratio.values())
    assert before >= 0.2 and after < 0.15, (before, after)
    with pytest.raises(EnrollmentError) as info:
        enroll_image(shut, det, LAYOUT, source="blink.png")
    m = re.search(r"eyes closed \(eye aspect ratio (\d\.\d\d) < 0\.18\)", str(info.value))
    assert m is not None, str(info.value)
    assert float(m.group(1)) == pytest.approx(after, abs=0.006)
    assert str(info.value).startswith("blink.png is unfit for enrollment")
    assert not isinstance(info.value, NoFaceError)


def test_dark_image_is_refused(det, open_face):
    dark = (open_face.astype(np.float32) * 0.25).astype(np.uint8)
    with pytest.raises(EnrollmentError, match=r"too dark \(mean brightness \d+\.\d < 50\.0\)"):
        enroll_image(dark, det, LAYOUT)
    # a stricter dark-pixel limit also names its figure
    checks = QualityChecks(min_brightness=0.0, max_dark_fraction=0.05)
    with pytest.raises(EnrollmentError, match=r"too dark \(dark pixel fraction 0\.\d\d > 0\.05\)"):
        enroll_image(open_face, det, LAYOUT, checks)


def test_blurry_image_is_refused(det, open_face):
    blurry = cv2.GaussianBlur(open_face, (0, 0), 3.0)
    with pytest.raises(EnrollmentError, match=r"too blurry \(sharpness \d+\.\d < 40\.0"):
        enroll_image(blurry, det, LAYOUT)


def test_turned_head_is_refused(det, clip, open_face):
    turned = clip[TURNED_FRAME]
    _, rep = assess_image(turned, det, LAYOUT)
    assert rep.yaw_deg < -15
    strict = QualityChecks(max_yaw_deg=12.0)
    expect = r"not frontal \(head yaw -\d+\.\d deg, limit 12\.0\)"
    with pytest.raises(EnrollmentError, match=expect):
        enroll_image(turned, det, LAYOUT, strict)
    enroll_image(open_face, det, LAYOUT, strict)  # the near-frontal frame passes the same limit


def test_profile_round_trip_is_private(det, open_face, tmp_path):
    prof = enroll_image(open_face, det, LAYOUT, source="frame240.png")
    target = tmp_path / "profiles" / "alice"
    target.parent.mkdir()
    target.mkdir(mode=0o755)
    (target / "dp.png").write_bytes(b"old")
    (target / "dp.png").chmod(0o644)
    assert prof.save(target) == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    for name in PROFILE_FILES:
        assert stat.S_IMODE((target / name).stat().st_mode) == 0o600, name
    back = Profile.load(target)
    np.testing.assert_array_equal(back.dp, prof.dp)  # PNG is lossless
    np.testing.assert_array_equal(back.landmarks.points, prof.landmarks.points)
    np.testing.assert_array_equal(back.landmarks.points3d, prof.landmarks.points3d)
    assert back.landmarks.scheme == prof.landmarks.scheme
    assert back.landmarks.image_size == prof.landmarks.image_size
    assert back.layout_size == 256 and back.meta == prof.meta
    if prof.mesh is None:
        assert back.mesh is None
    else:
        np.testing.assert_array_equal(back.mesh, prof.mesh)


def test_profile_without_mesh_round_trips(tmp_path):
    pts = np.random.default_rng(1).uniform(0, 256, (68, 2)).astype(np.float32)
    prof = Profile(np.full((128, 128, 3), 90, np.uint8),
                   FaceLandmarks(pts, None, "dlib68", (128, 128), 0.7), None, 128, {"k": 1})
    back = Profile.load(prof.save(tmp_path / "p"))
    assert back.mesh is None and back.landmarks.points3d is None
    assert back.landmarks.score == pytest.approx(0.7) and back.meta == {"k": 1}


def test_profile_load_names_what_is_missing(tmp_path):
    with pytest.raises(InputError, match="not found"):
        Profile.load(tmp_path / "nope")
    prof = Profile(np.zeros((128, 128, 3), np.uint8),
                   FaceLandmarks(np.zeros((68, 2)), None, "dlib68", (128, 128)), None, 128, {})
    d = prof.save(tmp_path / "p")
    (d / "landmarks.npz").unlink()
    (d / "mesh.npy").unlink()
    with pytest.raises(InputError, match=r"missing landmarks\.npz, mesh\.npy$"):
        Profile.load(d)
    d2 = prof.save(tmp_path / "q")
    (d2 / "dp.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match=r"dp\.png"):
        Profile.load(d2)


def test_pick_enrollment_frame_prefers_open_frontal(det, clip, face_image):
    frames = [_noise(), face_image, clip[336], clip[240], clip[TURNED_FRAME]]
    index, prof = pick_enrollment_frame(frames, det, LAYOUT, source="selfie.mp4")
    # 240 is frontal with a closed mouth; 336 is smiling and turned a little more
    assert index == 3
    assert prof.meta["frame_index"] == 3 and prof.meta["frames_seen"] == 5
    assert prof.meta["source"] == "selfie.mp4"
    np.testing.assert_array_equal(prof.dp, enroll_image(clip[240], det, LAYOUT).dp)


def test_pick_enrollment_frame_takes_the_shape_from_the_best_frames(det, clip, face_image):
    """The DP stays the best frame; the mesh is the mean shape of the best passing frames (the
    failing ones never count), and a single frame's mesh is that frame's."""
    from revavatar.vrface.mesh import FaceMesh, mean_shape

    frames = [_noise(), face_image, clip[336], clip[240], clip[TURNED_FRAME]]
    index, one = pick_enrollment_frame(frames, det, LAYOUT)
    _, three = pick_enrollment_frame(frames, det, LAYOUT, shape_frames=3)
    assert "shape_frames" not in one.meta
    picked = three.meta["shape_frames"]
    assert picked[0] == index == 3 and 3 not in picked[1:] and len(picked) >= 2
    assert 0 not in picked  # noise has no face
    np.testing.assert_array_equal(three.dp, one.dp)
    meshes = [FaceMesh.from_landmarks(det.detect(frames[k]), LAYOUT) for k in picked]
    np.testing.assert_allclose(three.mesh, mean_shape(meshes).vertices, atol=1e-4)
    assert not np.allclose(three.mesh, one.mesh, atol=0.1)
    assert "mean_shape" in three.meta["mesh"]
    with pytest.raises(ValueError, match="shape_frames"):
        pick_enrollment_frame(frames, det, LAYOUT, shape_frames=0)


def test_pick_enrollment_frame_failures(det, face_image, demo_frames):
    with pytest.raises(EnrollmentError, match=r"best was frame \d: eyes closed"):
        pick_enrollment_frame([face_image, demo_frames[0]], det, LAYOUT, source="c.mp4")
    with pytest.raises(NoFaceError, match=r"no face found in any of the 2 frames of c\.mp4"):
        pick_enrollment_frame([_noise(1), _noise(2)], det, LAYOUT, source="c.mp4")
    with pytest.raises(ValueError, match="stride"):
        pick_enrollment_frame([], det, LAYOUT, stride=0)


def test_enroll_video(det, clip, face_image, tmp_path):
    path = tmp_path / "selfie.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 360))
    assert writer.isOpened()
    for frame in (face_image, clip[240], face_image):
        writer.write(frame)
    writer.release()
    prof = enroll_video(path, det, LAYOUT)
    assert prof.meta["frame_index"] == 1 and prof.meta["source"] == "selfie.avi"
    with pytest.raises(InputError, match="cannot open video"):
        enroll_video(tmp_path / "missing.mp4", det, LAYOUT)
