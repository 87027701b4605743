"""Record sessions from headset cameras (V4L2 / OpenCV devices) or from video files.

A recorded session is a rosbag2 bag (see :mod:`revavatar.bag`) with, per headset camera, an
``image_raw`` (mono8 for infrared cameras, else bgr8, at the calibrated resolution) and a
``camera_info`` from the calibration, stamped identically so the graph's synchroniser can pair them.
Video files get deterministic stamps from their frame index and fps (the same file always records
the same bag); live devices are stamped from the monotonic clock when the frame arrives, which
cannot jump when NTP adjusts the wall clock mid-session.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from revavatar.bag import SessionWriter, camera_info_topic, image_topic
from revavatar.core.messages import array_to_image
from revavatar.errors import InputError

if TYPE_CHECKING:
    from revavatar.core.calibration import CameraCalibration, HeadsetCalibration

__all__ = ["prepare_frame", "record_session", "video_frames"]

log = logging.getLogger(__name__)

_NS_PER_S = 1_000_000_000


def _open_video(path: str | Path) -> cv2.VideoCapture:
    """Open a video file and make sure it decodes (a missing codec otherwise yields 0 frames)."""
    path = Path(path)
    if not path.is_file():
        msg = f"video file {path} does not exist"
        raise InputError(msg)
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        msg = f"video file {path} cannot be opened (not a video, or no decoder for its codec)"
        raise InputError(msg)
    ok, _ = cap.read()
    if not ok:
        cap.release()
        msg = f"video file {path} does not decode (no frame could be read)"
        raise InputError(msg)
    cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
    return cap


def video_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Iterate the BGR frames (H, W, 3) of a video file.

    The file is opened and its first frame decoded *before* this returns, so a bad file fails at
    the call site rather than at the first ``next()``.

    Raises:
        InputError: the file is missing or does not decode.
    """
    cap = _open_video(path)

    def _frames() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, frame = cap.read()
                if not ok:
                    return
                yield frame
        finally:
            cap.release()

    return _frames()


def prepare_frame(frame: np.ndarray, camera: CameraCalibration) -> np.ndarray:
    """Resize a captured frame to the calibrated resolution and convert it to the camera's format.

    Returns:
        uint8 gray (H, W) for infrared cameras (published as mono8), else uint8 BGR (H, W, 3).
    """
    width, height = camera.resolution
    if frame.dtype != np.uint8:
        frame = cv2.convertScaleAbs(frame, alpha=255.0 / max(float(frame.max()), 1.0))
    if frame.shape[1] != width or frame.shape[0] != height:
        shrink = frame.shape[1] > width or frame.shape[0] > height
        interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        frame = cv2.resize(frame, (width, height), interpolation=interp)
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if camera.infrared:
        return frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame


@dataclass
class _Source:
    """One opened input: a capture plus how its frames are stamped."""

    camera: str
    spec: str | int | Path
    cap: Any
    live: bool
    fps: float
    frame_count: int
    index: int = 0
    first_ns: int | None = None
    warned_resize: bool = False

    def read(self) -> tuple[np.ndarray, int] | None:
        """Next frame and its stamp (ns), or None at the end of a file / a failed device read."""
        ok, frame = self.cap.read()
        if not ok:
            return None
        stamp = time.monotonic_ns() if self.live else round(self.index * _NS_PER_S / self.fps)
        if self.first_ns is None:
            self.first_ns = stamp if self.live else 0
        self.index += 1
        return frame, stamp

    def elapsed_ns(self, stamp: int) -> int:
        """Time since the start of this source: video time for files, clock time for devices."""
        return stamp - (self.first_ns or 0)


def _device_of(spec: str | int | Path) -> int | str | None:
    """The V4L2 device a source names (an int index, ``"3"`` or ``/dev/videoN``), else None."""
    if isinstance(spec, bool):
        return None
    if isinstance(spec, int):
        return spec
    text = str(spec)
    if text.isdigit():
        return int(text)
    if text.startswith("/dev/video"):
        return text
    return None


def _open_source(camera: str, spec: str | int | Path, calib_fps: float) -> _Source:
    device = _device_of(spec)
    if device is not None:
        cap = cv2.VideoCapture(device)
        if not cap.isOpened():
            cap.release()
            msg = f"camera device {device!r} for {camera} cannot be opened (unplugged or busy?)"
            raise InputError(msg)
        ok, _ = cap.read()  # a warm-up frame: fail here rather than leave an empty bag behind
        if not ok:
            cap.release()
            msg = f"camera device {device!r} for {camera} opens but delivers no frames"
            raise InputError(msg)
        return _Source(camera, spec, cap, live=True, fps=calib_fps, frame_count=0)
    try:
        cap = _open_video(spec)
    except InputError as err:
        msg = f"{camera}: {err}"
        raise InputError(msg) from err
    fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
    if not np.isfinite(fps) or fps <= 0.0:
        log.warning("%s: %s has no frame rate; stamping at the calibrated %.1f fps", camera, spec, calib_fps)
        fps = calib_fps
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return _Source(camera, spec, cap, live=False, fps=fps, frame_count=max(count, 0))


def _bag_path(out_dir: Path) -> Path:
    """``out_dir`` itself if it does not exist yet, else a fresh ``session_<time>`` inside it."""
    if not out_dir.exists():
        return out_dir
    if (out_dir / "metadata.yaml").exists():
        msg = f"{out_dir} is already a bag; choose a new output path"
        raise InputError(msg)
    if not out_dir.is_dir():
        msg = f"output path {out_dir} exists and is not a directory"
        raise InputError(msg)
    stem = datetime.now().strftime("session_%Y%m%d_%H%M%S")  # noqa: DTZ005 - local time in a name
    path, n = out_dir / stem, 1
    while path.exists():
        path, n = out_dir / f"{stem}_{n}", n + 1
    return path


def _expected_frames(
    sources: list[_Source], duration_s: float | None, max_frames: int | None
) -> int | None:
    """Frames per camera the recording will produce, for the progress bar (None = unknown)."""
    limits: list[int] = []
    if max_frames is not None:
        limits.append(max_frames)
    for src in sources:
        if duration_s is not None:
            limits.append(int(np.ceil(duration_s * src.fps)))
        if not src.live and src.frame_count > 0:
            limits.append(src.frame_count)
    return min(limits) if limits else None


def record_session(
    calibration: HeadsetCalibration,
    out_dir: str | Path,
    sources: Mapping[str, str | int | Path],
    duration_s: float | None = None,
    max_frames: int | None = None,
    storage: str = "mcap",
    progress: bool = True,
) -> Path:
    """Record a session bag from live cameras and/or video files.

    Frames are read round-robin, one per camera per step, so the cameras stay in step; the
    recording stops at the first of: a video file ending, ``max_frames`` steps, ``duration_s``
    seconds (video time for files, wall time for devices), or Ctrl-C (the bag is still finalised).

    Args:
        calibration: the headset calibration (resolution, infrared flag, CameraInfo per camera).
        out_dir: the bag directory to create; if it exists (and is not a bag) a fresh
            ``session_<YYYYmmdd_HHMMSS>`` bag is created inside it.
        sources: camera name -> V4L2/OpenCV device index (int, ``"2"`` or ``/dev/video2``) or a
            video file path. Cameras without a source are not recorded.
        duration_s: stop after this many seconds.
        max_frames: stop after this many frames per camera.
        storage: ``"mcap"`` or ``"sqlite3"``.
        progress: show a tqdm progress bar.

    Returns:
        Path of the written bag.

    Raises:
        ValueError: no sources, a camera the calibration does not define, or bad limits.
        InputError: a video does not decode, a device does not open, or the output path is taken.
    """
    if not sources:
        msg = "no sources given; map at least one camera to a device index or a video file"
        raise ValueError(msg)
    unknown = sorted(set(sources) - set(calibration.cameras))
    if unknown:
        msg = (
            f"unknown camera(s) {', '.join(unknown)}; "
            f"calibration {calibration.name!r} has {', '.join(calibration.cameras)}"
        )
        raise ValueError(msg)
    if max_frames is not None and max_frames < 1:
        msg = f"max_frames must be >= 1, got {max_frames}"
        raise ValueError(msg)
    if duration_s is not None and duration_s <= 0:
        msg = f"duration_s must be > 0, got {duration_s}"
        raise ValueError(msg)
    absent = [c for c in calibration.cameras if c not in sources]
    if absent:
        log.warning("recording without %s (no source given)", ", ".join(absent))
    bag_path = _bag_path(Path(out_dir))

    opened: list[_Source] = []
    try:
        for camera, spec in sources.items():
            opened.append(_open_source(camera, spec, float(calibration.cameras[camera].fps)))
        custom = {"revavatar.calibration": str(calibration.name)}
        with SessionWriter(bag_path, storage=storage, custom_data=custom) as writer:
            steps = _record_loop(calibration, opened, writer, duration_s, max_frames, progress)
    finally:
        for src in opened:
            src.cap.release()
    log.info("recorded %d frame(s) per camera from %d source(s) into %s", steps, len(opened), bag_path)
    return bag_path


def _record_loop(
    calibration: HeadsetCalibration,
    sources: list[_Source],
    writer: SessionWriter,
    duration_s: float | None,
    max_frames: int | None,
    progress: bool,
) -> int:
    """Read, convert and write frames until a stop condition; returns the steps recorded."""
    from tqdm import tqdm  # noqa: PLC0415 - only the recorder needs it

    total = _expected_frames(sources, duration_s, max_frames)
    limit_ns = None if duration_s is None else round(duration_s * _NS_PER_S)
    steps = 0
    bar = tqdm(total=total, unit="frame", desc="recording", disable=not progress)
    try:
        while max_frames is None or steps < max_frames:
            batch: list[tuple[_Source, np.ndarray, int]] = []
            for src in sources:
                got = src.read()
                if got is None:
                    if src.live:
                        log.warning("%s: device %r stopped delivering frames", src.camera, src.spec)
                    return steps
                batch.append((src, *got))
            if limit_ns is not None and any(s.elapsed_ns(t) >= limit_ns for s, _, t in batch):
                return steps
            for src, frame, stamp in batch:
                _write_frame(calibration.cameras[src.camera], src, frame, stamp, writer)
            steps += 1
            bar.update(1)
    except KeyboardInterrupt:
        log.info("recording interrupted after %d frame(s); finalising the bag", steps)
    finally:
        bar.close()
    return steps


def _write_frame(
    camera: CameraCalibration, src: _Source, frame: np.ndarray, stamp: int, writer: SessionWriter
) -> None:
    """Convert one frame and write it with its CameraInfo (same stamp, same frame id)."""
    if (frame.shape[1], frame.shape[0]) != tuple(camera.resolution) and not src.warned_resize:
        log.info(
            "%s: resizing %dx%d frames of %s to the calibrated %dx%d",
            src.camera, frame.shape[1], frame.shape[0], str(src.spec), *camera.resolution,
        )
        src.warned_resize = True
    arr = prepare_frame(frame, camera)
    info = camera.camera_info(stamp)
    encoding = "mono8" if arr.ndim == 2 else "bgr8"
    image = array_to_image(arr, encoding, stamp, info.header.frame_id)
    writer.write(camera_info_topic(src.camera), info)
    writer.write(image_topic(src.camera), image)
