"""Benchmark the VR-Face builder: steady-state samples/s, bytes/sample, projections for 200k.

Usage: python benchmarks/bench_vrface.py [SRC] [--samples 3000] [--workers 2] [--out DIR]
       [--cache-dir DIR] [--mode like-200k|plain] [--image-format mixed|png|jpg] [--fidelity 40]

SRC defaults to /work/shared/data/faces when it exists, else a small folder cut from the demo
clip. The landmark pass runs once per source file and is cached (``--cache-dir``, default
OUT/cache), so it is timed apart and never counted in samples/s.

Why ``--mode like-200k`` (default): a 200k build draws ~10 samples per source frame and ~2.7 per
(frame, view), and the builder shares the per-frame work (decode, alignment, mesh, ground-truth
PNGs) and per-(frame, view) renders between them. A few thousand samples over the full source
folder would share almost nothing and so under-state the 200k rate. This mode builds from a
subset of identities sized so that the subset's usable frames per sample match the full folder's
at 200k; ``plain`` builds from all of SRC (a conservative lower bound). Disk is projected from
the measured per-sample files plus the per-frame files times the frames a 200k plan uses.

``--fidelity N`` also builds N samples losslessly (PNG) and reports the PSNR and size of JPEG
q90/q95 against those PNGs per field: the evidence for the ``mixed`` format's choice.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from revavatar.vrface.builder import FILE_FIELDS, BuildConfig, build
from revavatar.vrface.sources import LandmarkCache, scan_sources

SHARED = Path("/work/shared/data/faces")
HEADSET = Path(__file__).resolve().parents[1] / "calibration" / "generic.yaml"
TARGET = 200_000
VIEW_FIELDS = ("left_eye", "right_eye", "lower_face")


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


def _landmark_pass(src: Path, out: Path, cache: Path, workers: int) -> float:
    """Fill the landmark cache (a 1-sample build); seconds spent (~0 when already cached)."""
    t0 = time.perf_counter()
    build(BuildConfig(src=src, headset=HEADSET, samples=1, out=out / "landmark-pass",
                      workers=workers, cache_dir=cache, contact_sheet=False), progress=False)
    return time.perf_counter() - t0


def _usable(src: Path, cache: Path) -> tuple[list[Any], dict[str, list[int]], list[int]]:
    files = scan_sources(src)
    lc = LandmarkCache(cache)
    frames = [len(lc.load(f).frames) for f in files]  # type: ignore[union-attr]
    by_id: dict[str, list[int]] = {}
    for i, f in enumerate(files):
        by_id.setdefault(f.identity, []).append(i)
    return files, by_id, frames


def _subset_source(src: Path, cache: Path, samples: int, out: Path) -> tuple[Path, dict[str, Any]]:
    """A manifest over whole identities whose usable frames ~ samples * (frames / 200k)."""
    files, by_id, frames = _usable(src, cache)
    ids = {i: m for i, m in by_id.items() if sum(frames[k] for k in m) >= 2}
    total = sum(frames[k] for m in ids.values() for k in m)
    target = max(2, round(samples * total / TARGET))
    # a fixed pseudo-random order (hash of the name): a representative mix of source sizes
    order = sorted(ids, key=lambda i: hashlib.sha1(i.encode()).hexdigest())
    chosen, have = [], 0
    for ident in order:  # whole identities, skipping those that would overshoot the target
        n = sum(frames[k] for k in ids[ident])
        if have + n <= 1.25 * target or not chosen:
            chosen.append(ident)
            have += n
        if have >= 0.8 * target:
            break
    root = out / "src-like-200k"
    root.mkdir(parents=True, exist_ok=True)
    rows = [files[k] for ident in chosen for k in ids[ident]]
    with (root / "MANIFEST.csv").open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "identity", "split"])
        for f in rows:
            w.writerow([str(f.path), f.identity, f.split])
    info = {"identities": len(chosen), "files": len(rows), "usable_frames": have,
            "frames_per_sample": round(have / samples, 4),
            "full_folder_frames_per_sample_at_200k": round(total / TARGET, 4)}
    return root, info


def _disk_split(out: Path) -> dict[str, float]:
    """Bytes per sample of the camera views, per frame of the shared files, per reference."""
    rows = json.loads((out / "index.json").read_text())
    seen: dict[tuple[int, int], tuple[str, int]] = {}
    for r in rows:
        for n in FILE_FIELDS:
            st = (out / r[n]).stat()
            kind = "view" if n in VIEW_FIELDS else "ref" if n == "reference" else "frame"
            seen[(st.st_dev, st.st_ino)] = (kind, st.st_size)
    total = {"view": 0, "frame": 0, "ref": 0}
    for kind, size in seen.values():
        total[kind] += size
    frames = len({(r["source"]["file"], r["source"]["frame"]) for r in rows})
    refs = len({(r["reference_source"]["file"], r["reference_source"]["frame"]) for r in rows})
    return {"views_per_sample": total["view"] / len(rows), "frame_files_per_frame": total["frame"] / frames,
            "ref_bytes": total["ref"] / max(refs, 1), "refs": refs,
            "index_per_sample": (out / "index.json").stat().st_size / len(rows), "frames": frames}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _fidelity(src: Path, cache: Path, out: Path, n: int, workers: int) -> dict[str, Any]:
    """PSNR and bytes of JPEG q90/q95 vs the lossless PNG, per field, on an n-sample PNG build."""
    run = out / "fidelity-png"
    build(BuildConfig(src=src, headset=HEADSET, samples=n, out=run, workers=workers,
                      cache_dir=cache, image_format="png", contact_sheet=False), progress=False)
    rows = json.loads((run / "index.json").read_text())
    report: dict[str, Any] = {}
    for name in (*VIEW_FIELDS, "gt", "reference"):
        acc: dict[str, list[float]] = {}
        for r in rows:
            png = (run / r[name]).read_bytes()
            img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_UNCHANGED)
            acc.setdefault("png_bytes", []).append(len(png))
            for q in (90, 95):
                ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
                dec = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
                acc.setdefault(f"q{q}_psnr_db", []).append(_psnr(img, dec))
                acc.setdefault(f"q{q}_bytes", []).append(len(buf))
        report[name] = {k: round(float(np.mean(v)), 1) for k, v in acc.items()}
        report[name]["q95_psnr_min_db"] = round(float(np.min(acc["q95_psnr_db"])), 1)
    return report


def main() -> None:
    """Run the landmark pass (cached), one timed build, optionally the fidelity check; print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default=None)
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="/tmp/bench_vrface")
    parser.add_argument("--cache-dir", default=None, help="landmark cache (default OUT/cache)")
    parser.add_argument("--mode", choices=("like-200k", "plain"), default="like-200k")
    parser.add_argument("--image-format", default="mixed", choices=("mixed", "png", "jpg"))
    parser.add_argument("--png-compression", type=int, default=1)
    parser.add_argument("--jpeg-quality", type=int, default=95)
    parser.add_argument("--fidelity", type=int, default=0, help="samples for the JPEG PSNR check")
    args = parser.parse_args()
    out = Path(args.out)
    src = Path(args.src) if args.src else (SHARED if SHARED.is_dir() else _demo_source(out / "src"))
    cache = Path(args.cache_dir) if args.cache_dir else out / "cache"
    load_before = os.getloadavg()
    t_lm = _landmark_pass(src, out, cache, args.workers)
    build_src, subset = (src, None)
    if args.mode == "like-200k":
        build_src, subset = _subset_source(src, cache, args.samples, out)
    run = out / f"run-{time.strftime('%H%M%S')}"  # fresh samples each time, shared cache
    t0 = time.perf_counter()
    summary = build(BuildConfig(src=build_src, headset=HEADSET, samples=args.samples, out=run,
                                workers=args.workers, cache_dir=cache,
                                image_format=args.image_format, jpeg_quality=args.jpeg_quality,
                                png_compression=args.png_compression), progress=True)
    wall = time.perf_counter() - t0
    load_after = os.getloadavg()
    rate = summary.samples_per_s
    disk = _disk_split(run)
    _, by_id, frames = _usable(src, cache)
    frames_200k = min(sum(frames), TARGET)  # a 200k plan uses (nearly) every usable frame
    refs_200k = 8 * len(by_id)  # reference_pool frames per identity, at most
    bytes_200k = (TARGET * (disk["views_per_sample"] + disk["index_per_sample"])
                  + frames_200k * disk["frame_files_per_frame"] + refs_200k * disk["ref_bytes"])
    figures = {
        "src": str(src), "mode": args.mode, "subset": subset, "samples": summary.samples,
        "workers": args.workers, "image_format": args.image_format,
        "landmark_pass_s": round(t_lm, 1), "build_wall_s": round(wall, 1),
        "samples_per_s": rate, "bytes_per_sample": summary.bytes_per_sample,
        "disk_split": {k: round(v, 1) for k, v in disk.items()},
        "projected_200k_hours": round(TARGET / rate / 3600, 2) if rate else None,
        "projected_200k_GB": round(bytes_200k / 1e9, 1),
        "projected_200k_bytes_per_sample": round(bytes_200k / TARGET),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in load_after],
        "failed": len(summary.failed),
    }
    if args.fidelity:
        figures["fidelity_jpeg_vs_png"] = _fidelity(build_src, cache, out, args.fidelity, args.workers)
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
