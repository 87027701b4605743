"""Benchmark the VR-Face builder: samples/s, bytes/sample, projected time and disk for 200k.

Usage: python benchmarks/bench_vrface.py [SRC] [--samples 300] [--workers 2] [--out DIR]

SRC defaults to /work/shared/data/faces when it exists, else a small folder cut from the demo
clip. The landmark pass is timed separately (it runs once per source and is then cached in
OUT/cache, so a second run of this script measures the sample stage only).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2

from revavatar.vrface.builder import BuildConfig, build

SHARED = Path("/work/shared/data/faces")
HEADSET = Path(__file__).resolve().parents[1] / "calibration" / "generic.yaml"
TARGET = 200_000


def _demo_source(root: Path) -> Path:
    from revavatar.assets import fetch_demo_video

    root.mkdir(parents=True, exist_ok=True)
    cap = cv2.VideoCapture(str(fetch_demo_video()))
    frames = []
    while len(frames) < 120:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    for k in range(3):  # three pseudo identities from consecutive segments
        path = root / f"demo_{k}.mp4"
        if not path.is_file():
            h, w = frames[0].shape[:2]
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
            for f in frames[k * 40:(k + 1) * 40]:
                writer.write(f)
            writer.release()
    return root


def main() -> None:
    """Run one build and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default=None)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="/tmp/bench_vrface")
    parser.add_argument("--image-format", default="png", choices=("png", "jpg"))
    parser.add_argument("--png-compression", type=int, default=1)
    args = parser.parse_args()
    out = Path(args.out)
    src = Path(args.src) if args.src else (SHARED if SHARED.is_dir() else _demo_source(out / "src"))
    cache = out / "cache"
    run = out / f"run-{time.strftime('%H%M%S')}"  # fresh samples each time, shared cache
    t0 = time.perf_counter()
    summary = build(BuildConfig(src=src, headset=HEADSET, samples=args.samples, out=run,
                                workers=args.workers, cache_dir=cache,
                                image_format=args.image_format,
                                png_compression=args.png_compression), progress=True)
    wall = time.perf_counter() - t0
    rate = summary.samples_per_s
    hours = TARGET / rate / 3600 if rate else float("inf")
    figures = {
        "src": str(src), "samples": summary.samples, "workers": args.workers,
        "wall_s": round(wall, 1), "frames_detected": summary.frames_detected,
        "samples_per_s": rate, "bytes_per_sample": summary.bytes_per_sample,
        "projected_200k_hours": round(hours, 2),
        "projected_200k_GB": round(summary.bytes_per_sample * TARGET / 1e9, 1),
        "splits": summary.splits, "excluded": summary.excluded_identities,
        "failed": len(summary.failed),
    }
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
