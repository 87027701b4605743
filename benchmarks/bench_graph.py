"""Benchmark the embedded node graph: a 10 s, 30 Hz, three-camera session at rate 1 and rate 0.

The session is made from the demo clip with simple crops (eye boxes and the lower face, resized to
each camera's calibrated resolution, gray for IR cameras), so the benchmark needs no renderer
and measures the graph (threads, queues, sync, the baseline cores), not the simulator. Prints
per-node p50/p99 processing time, frames and drops, end-to-end latency and the flat-out frame rate.

    python benchmarks/bench_graph.py [--seconds 10] [--fps 30] [--headset calibration/generic.yaml]

Generated data goes to /tmp/revavatar_bench (removed and rewritten on every run).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import cv2
import numpy as np

from revavatar.assets import fetch_demo_video
from revavatar.bag import SessionWriter
from revavatar.capture import video_frames
from revavatar.core.calibration import CAMERA_NAMES, load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.messages import array_to_image
from revavatar.graph.runner import run_session

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/revavatar_bench")
#: crop boxes of a 640x360 frame, fractions (x0, y0, x1, y1): roughly where the clip's face is
CROPS = {"right_eye": (0.38, 0.22, 0.50, 0.40), "left_eye": (0.50, 0.22, 0.62, 0.40),
         "lower_face": (0.38, 0.40, 0.62, 0.70)}


def _frames(video: Path) -> list[np.ndarray]:
    return list(video_frames(video))


def _crop(frame: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box
    return frame[int(y0 * h):int(y1 * h), int(x0 * w):int(x1 * w)]


def make_session(path: Path, headset: Path, seconds: float, fps: float) -> int:
    """Write the session bag; returns the number of frames per camera."""
    calibration = load_calibration(headset)
    frames = _frames(fetch_demo_video())
    n = int(seconds * fps)
    layout = CanonicalLayout(256)
    with SessionWriter(path, custom_data={"source": "bench_graph crops"}) as writer:
        for k in range(n):
            frame = frames[k % len(frames)]
            stamp = 1_000_000_000 + round(k * 1e9 / fps)
            for cam in CAMERA_NAMES:
                c = calibration.camera(cam)
                img = cv2.resize(_crop(frame, CROPS[cam]), tuple(c.resolution))
                if c.infrared:
                    img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                enc = "mono8" if img.ndim == 2 else "bgr8"
                writer.write(f"/revavatar/{cam}/image_raw", array_to_image(img, enc, stamp))
            truth = cv2.resize(_crop(frame, (0.30, 0.05, 0.70, 0.75)), (layout.size,) * 2)
            writer.write("/revavatar/ground_truth/face", array_to_image(truth, "bgr8", stamp))
    return n


def make_profile(path: Path) -> None:
    """Enroll the clip's first usable frame (mediapipe), else a plain resized crop."""
    from revavatar.core.enrollment import Profile, pick_enrollment_frame
    from revavatar.core.landmarks import FaceLandmarks, create_detector

    layout = CanonicalLayout(256)
    frames = _frames(fetch_demo_video())[::20][:8]
    try:
        with create_detector("mediapipe", static_image=True) as detector:
            _, profile = pick_enrollment_frame(frames, detector, layout)
    except Exception as err:  # noqa: BLE001 - a benchmark falls back rather than stops
        print(f"enrollment failed ({err}); using a plain crop as the DP")
        pts = np.resize(layout.template_points().astype(np.float32), (68, 2))
        lm = FaceLandmarks(points=pts, points3d=None, scheme="dlib68",
                           image_size=(layout.size,) * 2, score=1.0)
        dp = cv2.resize(_crop(frames[0], (0.30, 0.05, 0.70, 0.75)), (layout.size,) * 2)
        profile = Profile(dp=dp, landmarks=lm, mesh=None, layout_size=layout.size, meta={})
    profile.save(path)


def _print(label: str, report: dict) -> None:
    print(f"\n== {label}: {report['frames_in']} camera frames in {report['wall_s']:.2f} s, "
          f"{report['end_to_end']['frames']} restored faces ({report['output_fps']:.1f} fps)")
    print(f"  {'node':18s} {'p50 ms':>8s} {'p99 ms':>8s} {'frames':>7s} {'drops':>6s}")
    for name, fig in report["nodes"].items():
        print(f"  {name:18s} {fig['p50_ms']:8.2f} {fig['p99_ms']:8.2f} {fig['frames']:7d} "
              f"{fig['drops']:6d}")
    e2e = report["end_to_end"]
    print(f"  end to end (camera -> restored): p50 {e2e['p50_ms']:.1f} ms, "
          f"p99 {e2e['p99_ms']:.1f} ms")
    m = report.get("metrics") or {}
    if "full" in m:
        print(f"  vs crop 'ground truth' (not meaningful as quality): SSIM {m['full']['ssim']:.3f}")


def main() -> None:
    """Build the session, replay it at rate 1 and rate 0, print the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--headset", type=Path, default=ROOT / "calibration" / "generic.yaml")
    args = ap.parse_args()
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    n = make_session(WORK / "session", args.headset, args.seconds, args.fps)
    make_profile(WORK / "profile")
    print(f"session: {n} frames x 3 cameras at {args.fps:g} Hz ({args.seconds:g} s), "
          f"headset {args.headset.name}")
    for rate in (1.0, 0.0):
        report = run_session(args.headset, WORK / "session", WORK / "profile",
                             WORK / f"out_rate{rate:g}", rate=rate, progress=False)
        _print(f"rate {rate:g}" + (" (real time)" if rate == 1 else " (as fast as possible)"),
               report)
        if rate == 0:
            print(f"  flat-out: {report['output_fps']:.1f} restored faces/s "
                  f"({report['output_fps'] / args.fps:.2f}x real time)")


if __name__ == "__main__":
    main()
