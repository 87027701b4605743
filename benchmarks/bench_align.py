"""Benchmark the learned aligners: per-crop latency, onnxruntime (2 threads) vs torch eager.

Usage: python benchmarks/bench_align.py [--models models] [--runs 50] [--threads 2]

For each trained aligner in ``--models`` (align_<region>, align_ae_<region>) it times the network
alone at batch 1 on its crop size, in the same process: onnxruntime fp32 (the deployed engine,
``--threads`` intra-op threads), torch eager fp32 and torch eager bf16 autocast (same thread
count), plus the full ``OnnxAligner.align`` (homography rectification + network + conversion) on
a camera-sized frame. Prints medians in ms, the torch/onnxruntime ratio, and the sum over the
three regions (the per-frame cost of the headset's three crops). The CPU is shared with other
jobs here, so figures are medians of ``--runs`` runs after 5 warm-up runs.

With a trained de-occluder in ``--models`` (``deocclusion``, read by the ``deocclusion+``
aligners in front of the eye cameras) it times that too on a camera frame, onnxruntime against
torch eager, and what it adds per headset frame (both eyes).

Models that read the enrolled wearer get a random DP face and, for ``surface`` input, a flat
enrolled depth: the remap grid is made once per enrollment, so per frame the surface path costs
what the plane path does, whatever the depth.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from revavatar.core.calibration import load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.deocclusion import DEOCCLUSION_DIR, OnnxDeoccluder
from revavatar.core.onnx_aligner import MODEL_PREFIXES, OnnxAligner
from revavatar.learning.alignment_model import load_generator
from revavatar.learning.export import OnnxModel

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn, runs: int) -> float:
    for _ in range(5):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=str(ROOT / "models"))
    p.add_argument("--runs", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--headset", default=str(ROOT / "calibration" / "generic.yaml"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    calib = load_calibration(Path(args.headset))
    layout = CanonicalLayout(256)
    rng = np.random.default_rng(0)
    print(f"{'model':24s} {'crop':>8s} {'ort ms':>8s} {'torch ms':>9s} {'bf16 ms':>8s} "
          f"{'torch/ort':>9s} {'align ms':>9s}")
    for method, prefix in MODEL_PREFIXES.items():
        total = {"ort": 0.0, "torch": 0.0, "align": 0.0}
        for region in ("left_eye", "right_eye", "lower_face"):
            d = Path(args.models) / f"{prefix}{region}"
            if not (d / "model.onnx").is_file():
                continue
            g, cfg = load_generator(d)
            w, h = cfg.crop_size
            x = torch.rand(1, cfg.channels, h, w) * 2 - 1
            sess = OnnxModel(d / "model.onnx", threads=args.threads)
            feeds = {"view": x.numpy()}
            if cfg.reference:  # G reads the view and the enrolled crop, stacked
                feeds["reference"] = (torch.rand_like(x) * 2 - 1).numpy()
                x = torch.cat([x, torch.from_numpy(feeds["reference"])], dim=1)
            ort_ms = _median_ms(lambda: sess.run(**feeds), args.runs)
            with torch.inference_mode():
                eager = _median_ms(lambda: g(x), args.runs)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    bf16 = _median_ms(lambda: g(x), args.runs)
            cam = calib.cameras[region]
            aligner = OnnxAligner(region, d, cam, layout, threads=args.threads,
                                  surface_depth=np.zeros((layout.size,) * 2, np.float32),
                                  dp=rng.integers(0, 256, (layout.size, layout.size, 3),
                                                  dtype=np.uint8))
            shape = (cam.height, cam.width) if cam.infrared else (cam.height, cam.width, 3)
            frame = rng.integers(0, 256, shape, dtype=np.uint8)
            align_ms = _median_ms(lambda: aligner.align(frame), args.runs)
            total["ort"] += ort_ms
            total["torch"] += eager
            total["align"] += align_ms
            print(f"{d.name:24s} {w:>4d}x{h:<3d} {ort_ms:8.2f} {eager:9.2f} {bf16:8.2f} "
                  f"{eager / ort_ms:9.2f} {align_ms:9.2f}")
        if total["ort"]:
            print(f"{method + ' (3 crops)':24s} {'':8s} {total['ort']:8.2f} {total['torch']:9.2f} "
                  f"{'':8s} {total['torch'] / total['ort']:9.2f} {total['align']:9.2f}")
    _bench_deoccluder(Path(args.models) / DEOCCLUSION_DIR, args.runs, args.threads, rng)


def _bench_deoccluder(d: Path, runs: int, threads: int, rng: np.random.Generator) -> None:
    """The de-occluder on one camera frame: onnxruntime, torch eager fp32 / bf16."""
    if not (d / "model.onnx").is_file():
        return
    import json  # noqa: PLC0415

    from safetensors.torch import load_file  # noqa: PLC0415

    from revavatar.learning.deocclusion import DeoccluderConfig, DeoccluderNet  # noqa: PLC0415

    net = DeoccluderNet(DeoccluderConfig.from_dict(
        json.loads((d / "card.json").read_text())["config"])).eval()
    net.load_state_dict(load_file(str(d / "weights.safetensors")))
    w, h = net.config.frame_size
    frame = rng.integers(0, 256, (h, w), dtype=np.uint8)
    x = torch.from_numpy(frame.astype(np.float32) / 255.0)[None, None]
    ref = x.clone() if net.config.reference else None  # a model that reads the wearer's eye
    deocc = OnnxDeoccluder(d, threads=threads)
    deocc.set_reference("left_eye", [frame])
    ort_ms = _median_ms(lambda: deocc(frame, "left_eye"), runs)
    with torch.inference_mode():
        eager = _median_ms(lambda: net(x, ref), runs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = _median_ms(lambda: net(x, ref), runs)
    print(f"{d.name:24s} {w:>4d}x{h:<3d} {ort_ms:8.2f} {eager:9.2f} {bf16:8.2f} "
          f"{eager / ort_ms:9.2f} {'':9s}   (both eyes: {2 * ort_ms:.2f} ms per headset frame)")


if __name__ == "__main__":
    main()
