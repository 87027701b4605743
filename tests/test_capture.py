"""revavatar.capture: recording sessions from video files into real bags."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from revavatar.bag import SessionReader, camera_info_topic, image_topic, validate_session
from revavatar.capture import prepare_frame, record_session, video_frames
from revavatar.core.calibration import CAMERA_NAMES
from revavatar.core.messages import CameraInfo, Image, image_to_array
from revavatar.errors import InputError
from tiny_headset import SIZES, small_calibration



def _write_video(path: Path, size: tuple[int, int], fps: float, frames: int, shade: int) -> Path:
    """A small MJPG AVI whose frame i is a flat grey of value shade+4*i (decodable everywhere)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), shade + 4 * i, np.uint8)
        frame[:, : size[0] // 4] = (255, 0, 0)  # a blue band: colour survives for bgr8 cameras
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture
def videos(tmp_path: Path) -> dict[str, Path]:
    return {
        "left_eye": _write_video(tmp_path / "l.avi", (32, 24), 30.0, 12, 40),  # native size
        "right_eye": _write_video(tmp_path / "r.avi", (64, 48), 30.0, 10, 80),  # 2x, resized
        "lower_face": _write_video(tmp_path / "m.avi", (96, 64), 15.0, 14, 120),  # other fps
    }


def _read(path: Path) -> list[tuple[str, int, Image | CameraInfo]]:
    with SessionReader(path) as r:
        return list(r.messages())


def test_record_three_videos(tmp_path: Path, videos: dict[str, Path]) -> None:
    calib = small_calibration()
    out = record_session(calib, tmp_path / "session", {k: str(v) for k, v in videos.items()}, progress=False)
    assert out == tmp_path / "session"
    with SessionReader(out) as r:
        validate_session(r, calib, full=True)
        counts = r.message_counts
        assert r.custom_data["revavatar.calibration"] == "tiny"
    # stops with the shortest video (10 frames); every camera gets an image and a camera_info per frame
    for cam in CAMERA_NAMES:
        assert counts[image_topic(cam)] == 10
        assert counts[camera_info_topic(cam)] == 10
    msgs = _read(out)
    stamps = {cam: [s for t, s, _ in msgs if t == image_topic(cam)] for cam in CAMERA_NAMES}
    assert stamps["left_eye"] == [round(i * 1e9 / 30) for i in range(10)]
    assert stamps["lower_face"] == [round(i * 1e9 / 15) for i in range(10)]  # the file's own fps
    for topic, stamp, msg in msgs:
        assert msg.header.stamp.to_ns() == stamp
        cam = topic.split("/")[2]
        w, h = SIZES[cam]
        assert (msg.width, msg.height) == (w, h)
        if isinstance(msg, Image):
            assert msg.encoding == ("bgr8" if cam == "lower_face" else "mono8")
            assert msg.header.frame_id == f"revavatar/{cam}"
        else:
            assert msg.header.frame_id == f"revavatar/{cam}"
            assert msg.k == calib.cameras[cam].camera_info(0).k
    # pixels: the flat grey of frame i survives (MJPG is lossy, so within a few levels)
    right = [m for t, _, m in msgs if t == image_topic("right_eye")]
    assert isinstance(right[3], Image)
    arr = image_to_array(right[3])
    assert abs(float(np.median(arr[:, 16:])) - (80 + 12)) <= 4
    lower = [m for t, _, m in msgs if t == image_topic("lower_face")]
    band = image_to_array(lower[0])[:, :8].reshape(-1, 3).mean(axis=0)  # type: ignore[arg-type]
    assert band[0] > 200 and band[2] < 60  # still blue: colour kept, BGR order kept


def test_limits_and_sqlite(tmp_path: Path, videos: dict[str, Path]) -> None:
    calib = small_calibration()
    out = record_session(calib, tmp_path / "a", videos, max_frames=4, storage="sqlite3", progress=False)
    assert any(out.glob("*.db3"))
    with SessionReader(out) as r:
        assert r.message_counts[image_topic("left_eye")] == 4
    # 0.2 s of video: 30 fps cameras give 6 frames, the 15 fps one stops the loop after 3
    out = record_session(calib, tmp_path / "b", videos, duration_s=0.2, progress=False)
    with SessionReader(out) as r:
        assert r.message_counts[image_topic("left_eye")] == 3
        assert r.duration_ns == round(2 * 1e9 / 15)


def test_existing_output_dir_gets_a_fresh_session(tmp_path: Path, videos: dict[str, Path]) -> None:
    calib = small_calibration()
    parent = tmp_path / "sessions"
    parent.mkdir()
    first = record_session(calib, parent, {"left_eye": videos["left_eye"]}, max_frames=2, progress=False)
    second = record_session(calib, parent, {"left_eye": videos["left_eye"]}, max_frames=2, progress=False)
    assert first.parent == parent == second.parent
    assert first != second
    assert first.name.startswith("session_")
    with pytest.raises(InputError, match="already a bag"):
        record_session(calib, first, {"left_eye": videos["left_eye"]}, progress=False)


def test_record_demo_clip(tmp_path: Path, demo_video: Path) -> None:
    calib = small_calibration()
    sources = dict.fromkeys(CAMERA_NAMES, demo_video)
    out = record_session(calib, tmp_path / "demo", sources, max_frames=5, progress=False)
    msgs = _read(out)
    assert len(msgs) == 5 * 2 * len(CAMERA_NAMES)
    cap = cv2.VideoCapture(str(demo_video))
    fps = cap.get(cv2.CAP_PROP_FPS)
    ok, first = cap.read()
    cap.release()
    assert ok
    stamps = sorted({s for _, s, _ in msgs})
    assert stamps == [round(i * 1e9 / fps) for i in range(5)]
    lower = next(m for t, _, m in msgs if t == image_topic("lower_face"))
    assert isinstance(lower, Image)
    expected = cv2.resize(first, SIZES["lower_face"], interpolation=cv2.INTER_AREA)
    np.testing.assert_array_equal(image_to_array(lower), expected)


def test_undecodable_and_missing_inputs(tmp_path: Path, videos: dict[str, Path]) -> None:
    calib = small_calibration()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00not a video" * 100)
    with pytest.raises(InputError, match=r"right_eye: video file .*junk\.mp4"):
        sources = {"left_eye": videos["left_eye"], "right_eye": junk}
        record_session(calib, tmp_path / "s", sources, progress=False)
    assert not (tmp_path / "s").exists()  # nothing half-written
    with pytest.raises(InputError, match="does not exist"):
        record_session(calib, tmp_path / "s", {"left_eye": tmp_path / "missing.avi"}, progress=False)
    with pytest.raises(InputError, match="junk.mp4"):
        video_frames(junk)
    with pytest.raises(InputError, match="does not exist"):
        video_frames(tmp_path / "missing.avi")
    with pytest.raises(ValueError, match="unknown camera"):
        record_session(calib, tmp_path / "s", {"nose": videos["left_eye"]}, progress=False)
    with pytest.raises(ValueError, match="no sources"):
        record_session(calib, tmp_path / "s", {}, progress=False)


def test_unopenable_device(tmp_path: Path) -> None:
    calib = small_calibration()
    with pytest.raises(InputError, match="camera device 97 for left_eye"):
        record_session(calib, tmp_path / "s", {"left_eye": 97}, progress=False)


def test_video_frames(videos: dict[str, Path]) -> None:
    frames = list(video_frames(videos["lower_face"]))
    assert len(frames) == 14
    assert frames[0].shape == (64, 96, 3)
    assert frames[0].dtype == np.uint8


def test_prepare_frame() -> None:
    calib = small_calibration()
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[..., 2] = 200  # red
    ir = prepare_frame(frame, calib.cameras["left_eye"])
    assert ir.shape == (24, 32)
    assert int(ir[0, 0]) == round(0.299 * 200)
    colour = prepare_frame(frame, calib.cameras["lower_face"])
    assert colour.shape == (32, 48, 3)
    assert tuple(colour[0, 0]) == (0, 0, 200)
    gray_in = prepare_frame(np.full((32, 48), 9, np.uint8), calib.cameras["lower_face"])
    assert gray_in.shape == (32, 48, 3)
    assert int(gray_in.min()) == int(gray_in.max()) == 9


class _FakeDevice:
    """Stands in for cv2.VideoCapture(<int>): 40x30 frames, KeyboardInterrupt after ``stop_after``."""

    stop_after = 1_000

    def __init__(self, index: int) -> None:
        self.index = index
        self.reads = 0

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.index == 0

    def read(self) -> tuple[bool, np.ndarray]:
        if self.reads >= self.stop_after:
            raise KeyboardInterrupt
        self.reads += 1
        return True, np.full((30, 40, 3), self.reads, np.uint8)

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


def test_live_device_is_stamped_from_the_monotonic_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import revavatar.capture as capture

    real = cv2.VideoCapture
    fake = lambda s: _FakeDevice(s) if isinstance(s, int) else real(s)  # noqa: E731
    monkeypatch.setattr(capture.cv2, "VideoCapture", fake)
    calib = small_calibration()
    caplog.set_level("INFO", logger="revavatar.capture")
    sources = {"left_eye": 0, "lower_face": "0"}
    out = record_session(calib, tmp_path / "live", sources, max_frames=6, progress=False)
    assert "resizing 40x30" in caplog.text
    msgs = _read(out)
    left = [(s, m) for t, s, m in msgs if t == image_topic("left_eye")]
    assert len(left) == 6
    stamps = [s for s, _ in left]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False))
    assert stamps[0] > 0  # monotonic ns, not a frame index
    for _, m in left:
        assert isinstance(m, Image)
        assert (m.encoding, m.width, m.height) == ("mono8", 32, 24)
    with pytest.raises(InputError, match="camera device 1 for right_eye"):
        record_session(calib, tmp_path / "x", {"right_eye": 1}, progress=False)


def test_ctrl_c_finalises_the_bag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import revavatar.capture as capture

    monkeypatch.setattr(_FakeDevice, "stop_after", 3)
    monkeypatch.setattr(capture.cv2, "VideoCapture", _FakeDevice)
    out = record_session(small_calibration(), tmp_path / "live", {"left_eye": 0}, progress=False)
    with SessionReader(out) as r:  # readable: metadata.yaml was written despite the interrupt
        assert r.message_counts[image_topic("left_eye")] == 2  # 3 reads minus the warm-up frame


def test_device_without_frames(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import revavatar.capture as capture

    monkeypatch.setattr(_FakeDevice, "read", lambda self: (False, None))
    monkeypatch.setattr(capture.cv2, "VideoCapture", _FakeDevice)
    with pytest.raises(InputError, match="device 0 for left_eye opens but delivers no frames"):
        record_session(small_calibration(), tmp_path / "live", {"left_eye": 0}, progress=False)
    assert not (tmp_path / "live").exists()
