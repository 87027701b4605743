"""``revavatar demo``: the whole product on one real face clip, offline.

Enroll the DP from a neutral frame late in the clip, simulate a headset session from the earlier
frames (the VR-Face renderer through the headset calibration), write it as a real rosbag2 bag,
replay it through the node graph exactly as ``revavatar run`` would, and compare the restored
faces with the true ones. The DP is taken from frames the session does not contain, so the
metrics are not flattered by restoring a frame from itself.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from revavatar.assets import demo_video_path
from revavatar.bag import SessionWriter
from revavatar.capture import video_frames
from revavatar.core.calibration import CAMERA_NAMES, HeadsetCalibration, load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.enrollment import SHAPE_FRAMES, pick_enrollment_frame
from revavatar.core.landmarks import FaceLandmarks, create_detector
from revavatar.core.messages import array_to_image
from revavatar.errors import InputError

__all__ = ["DemoConfig", "run_demo", "simulate_session"]

GROUND_TRUTH_TOPIC = "/revavatar/ground_truth/face"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs on and where it writes."""

    out: Path = Path("out/demo")
    headset: Path = Path("calibration/generic.yaml")
    frames: int = 300  # session length; the DP is picked from the frames after these
    rate: float = 1.0
    video: Path | None = None
    layout_size: int = 256


def _detect_all(frames: list[np.ndarray]) -> list[FaceLandmarks | None]:
    with create_detector("mediapipe", static_image=False) as detector:
        return [detector.detect(f) for f in tqdm(frames, desc="landmarks", unit="frame")]


def simulate_session(
    frames: list[np.ndarray],
    landmarks: list[FaceLandmarks | None],
    calibration: HeadsetCalibration,
    layout: CanonicalLayout,
    bag_dir: Path,
    fps: float,
) -> int:
    """Render each frame through the headset cameras into a bag; returns frames written.

    Frames without a detected face are skipped (a real camera would still stream, but there is
    no truth to compare against). The headset turns with the head, as in a VR-Face build
    (:func:`revavatar.vrface.builder.frame_truth`); the true face goes on GROUND_TRUTH_TOPIC.
    """
    from revavatar.vrface.builder import frame_truth
    from revavatar.vrface.renderer import HeadsetRenderer

    renderer = HeadsetRenderer(calibration, layout)
    written = 0
    with SessionWriter(bag_dir) as writer:
        for index, (frame, lm) in enumerate(
            tqdm(list(zip(frames, landmarks)), desc="headset views", unit="frame")
        ):
            if lm is None:
                continue
            stamp = round(index * 1e9 / fps)
            truth = frame_truth(frame, lm, layout)
            views = renderer.render(frame, truth.mesh, view="front")
            for cam in CAMERA_NAMES:
                cal = calibration.cameras[cam]
                view = views[cam]
                encoding = "mono8" if view.ndim == 2 else "bgr8"
                writer.write(
                    f"/revavatar/{cam}/image_raw",
                    array_to_image(view, encoding, stamp, f"{cam}_optical_frame"),
                )
                writer.write(
                    f"/revavatar/{cam}/camera_info", cal.camera_info(stamp, f"{cam}_optical_frame")
                )
            writer.write(GROUND_TRUTH_TOPIC, array_to_image(truth.gt, "bgr8", stamp, "face"))
            written += 1
    return written


def _preview(out: Path, bag_dir: Path) -> Path:
    """A picture of a few frames: truth, the three camera views, restored, display."""
    from revavatar.bag import SessionReader

    restored = _read_video(out / "restored.mp4")
    display = _read_video(out / "display.mp4")
    truths: list[np.ndarray] = []
    cams: dict[str, list[np.ndarray]] = {c: [] for c in CAMERA_NAMES}
    from revavatar.core.messages import image_to_bgr

    with SessionReader(bag_dir) as reader:
        topics = [GROUND_TRUTH_TOPIC] + [f"/revavatar/{c}/image_raw" for c in CAMERA_NAMES]
        for topic, _, msg in reader.messages(topics):
            img = image_to_bgr(msg)
            if topic == GROUND_TRUTH_TOPIC:
                truths.append(img)
            else:
                cams[topic.split("/")[2]].append(img)
    n = min(len(truths), len(restored), len(display))
    if n == 0:
        msg = "nothing was restored; no preview"
        raise InputError(msg)
    rows = []
    tile = 160
    for i in np.linspace(0, n - 1, num=min(4, n)).astype(int):
        cells = [truths[i]] + [cams[c][i] for c in CAMERA_NAMES] + [restored[i], display[i]]
        rows.append(np.hstack([_fit(c, tile) for c in cells]))
    grid = np.vstack(rows)
    labels = ["truth", "left eye cam", "right eye cam", "lower face cam", "restored", "display"]
    bar = np.full((22, grid.shape[1], 3), 255, np.uint8)
    for k, text in enumerate(labels):
        cv2.putText(bar, text, (k * tile + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
    path = out / "preview.png"
    cv2.imwrite(str(path), np.vstack([bar, grid]))
    return path


def _fit(image: np.ndarray, tile: int) -> np.ndarray:
    h, w = image.shape[:2]
    scale = tile / max(h, w)
    small = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))))
    canvas = np.zeros((tile, tile, 3), np.uint8)
    y, x = (tile - small.shape[0]) // 2, (tile - small.shape[1]) // 2
    canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
    return canvas


def _read_video(path: Path) -> list[np.ndarray]:
    return list(video_frames(path)) if path.is_file() else []


def run_demo(config: DemoConfig) -> dict:
    """Run the demo end to end; returns the report that was written to out/report.json."""
    from revavatar.graph.runner import run_session

    started = time.perf_counter()
    video = config.video or demo_video_path()
    calibration = load_calibration(config.headset)
    layout = CanonicalLayout(config.layout_size)
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    frames = list(video_frames(video))
    if len(frames) < 20:
        msg = f"{video} has only {len(frames)} frames; the demo needs at least 20"
        raise InputError(msg)
    n_session = min(config.frames, int(len(frames) * 0.7))
    landmarks = _detect_all(frames)

    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    profile_dir = out / "profile"
    enroll_frames = frames[n_session:]
    with create_detector("mediapipe", static_image=True) as detector:
        dp_index, profile = pick_enrollment_frame(enroll_frames, detector, layout,
                                                  shape_frames=SHAPE_FRAMES)
    profile.save(profile_dir)

    staging = out / ".session_in"
    if staging.exists():
        _remove_tree(staging)
    n = simulate_session(
        frames[:n_session], landmarks[:n_session], calibration, layout, staging, fps
    )
    if n == 0:
        msg = f"no face found in any frame of {video}"
        raise InputError(msg)
    report = run_session(config.headset, staging, profile_dir, out, rate=config.rate)
    _remove_tree(staging)
    report.setdefault("baselines", {})["dp_only"] = _dp_only_metrics(profile.dp, out / "session", layout)
    preview = _preview(out, out / "session")
    report["demo"] = {
        "video": str(video),
        "session_frames": n,
        "dp_frame": n_session + dp_index,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1))
    _summary(out, report, preview)
    return report


def _dp_only_metrics(dp: np.ndarray, bag_dir: Path, layout: CanonicalLayout) -> dict:
    """Metrics of showing the enrollment image itself: the floor any restorer must beat."""
    from revavatar.bag import SessionReader
    from revavatar.core.messages import image_to_bgr
    from revavatar.core.metrics import MetricAccumulator

    acc = MetricAccumulator(layout)
    with SessionReader(bag_dir) as reader:
        for _, _, msg in reader.messages([GROUND_TRUTH_TOPIC]):
            acc.update(dp, image_to_bgr(msg))
    return acc.summary()


def _remove_tree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _summary(out: Path, report: dict, preview: Path) -> None:
    print(f"\nRevAvatar demo: {report['demo']['session_frames']} frames in "
          f"{report['demo']['seconds']} s")
    for stage, method in report["methods"].items():
        print(f"  {stage:12s} {method}")
    print(f"  {'node':18s} {'p50 ms':>8s} {'p99 ms':>8s} {'frames':>7s} {'drops':>6s}")
    for name, fig in report["nodes"].items():
        print(f"  {name:18s} {fig['p50_ms']:8.2f} {fig['p99_ms']:8.2f} {fig['frames']:7d} "
              f"{fig['drops']:6d}")
    rows = {"restored": report.get("metrics", {}), "DP only": report["baselines"]["dp_only"]}
    for label, metrics in rows.items():
        for key in ("full", "eye"):
            if key in metrics:
                m = metrics[key]
                print(f"  {label:9s} vs truth ({key:4s}): SSIM {m['ssim']:.4f}  "
                      f"PSNR {m['psnr']:.2f} dB")
    flicker = report.get("metrics", {}).get("flicker")
    if flicker:
        print(f"  flicker (output minus truth frame-to-frame change, 8-bit): full "
              f"{flicker['full']:+.2f}  eye {flicker['eye']:+.2f}")
    print(f"outputs: {out}/session/ {out}/restored.mp4 {out}/display.mp4 {out}/report.json "
          f"{preview}")
