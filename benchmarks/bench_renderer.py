"""Benchmark the VR-Face headset renderer: ms per camera per view, for each headset profile.

Builds one face mesh per demo-clip frame (mediapipe landmarks, detected once before timing), then
renders every frame from every camera of every view and prints the median and p90 time per camera
render, the face coverage of each camera and the mesh build time. Also times the effects chain on
one eye view. Numbers only; nothing is asserted.

    python benchmarks/bench_renderer.py [--frames 20] [--headset calibration/generic.yaml ...]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import cv2
import numpy as np

from revavatar.assets import fetch_demo_video
from revavatar.capture import video_frames
from revavatar.core.calibration import load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.landmarks import create_detector
from revavatar.vrface import effects as fx
from revavatar.vrface.mesh import FaceMesh
from revavatar.vrface.renderer import VIEWS, HeadsetRenderer, _render_camera

ROOT = Path(__file__).resolve().parents[1]


def _frames(n: int) -> list[np.ndarray]:
    return list(itertools.islice(video_frames(fetch_demo_video()), n))


def main() -> None:
    """Print the timing table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--headset", type=Path, nargs="*", default=sorted((ROOT / "calibration").glob("*.yaml")))
    args = ap.parse_args()
    layout = CanonicalLayout(256)
    det = create_detector("mediapipe", static_image=False)
    data = []
    for frame in _frames(args.frames):
        lm = det.detect(frame)
        if lm is not None:
            data.append((frame, lm))
    t0 = time.perf_counter()
    meshes = [(frame, FaceMesh.from_landmarks(lm, layout)) for frame, lm in data]
    mesh_ms = (time.perf_counter() - t0) * 1000 / max(len(meshes), 1)
    print(f"{len(meshes)} frames; FaceMesh.from_landmarks {mesh_ms:.2f} ms/frame")
    print(f"{'profile':<18}{'view':<10}{'camera':<12}{'res':>9}{'p50 ms':>9}{'p90 ms':>9}{'face %':>8}")
    for path in args.headset:
        calib = load_calibration(path)
        t0 = time.perf_counter()
        rend = HeadsetRenderer(calib, layout)
        init_ms = (time.perf_counter() - t0) * 1000
        for view in VIEWS:
            for name in calib.cameras:
                cam = rend.camera(view, name)
                grid = rend._grids[name]  # noqa: SLF001 - time the per-camera core alone
                times, cover = [], []
                for frame, mesh in meshes:
                    src = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if cam.infrared else frame
                    t = time.perf_counter()
                    _, mask = _render_camera(src, mesh, cam, grid, rend.config)
                    times.append((time.perf_counter() - t) * 1000)
                    cover.append(mask.mean())
                w, h = cam.resolution
                print(
                    f"{calib.name:<18}{view:<10}{name:<12}{f'{w}x{h}':>9}{np.median(times):>9.2f}"
                    f"{np.percentile(times, 90):>9.2f}{100 * np.mean(cover):>8.1f}"
                )
        print(f"{calib.name:<18}renderer init (4 views, lens grids) {init_ms:.0f} ms")
    frame, mesh = meshes[0]
    eye = HeadsetRenderer(load_calibration(args.headset[0]), layout).render(frame, mesh)["left_eye"]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(20):
        fx.apply_effects(eye, list(fx.EFFECTS), rng)
    print(
        f"all {len(fx.EFFECTS)} effects on one {eye.shape[1]}x{eye.shape[0]} eye view: "
        f"{(time.perf_counter() - t0) * 1000 / 20:.2f} ms"
    )


if __name__ == "__main__":
    main()
