"""Benchmark the learned restorer per 256 px frame: onnxruntime (2 threads) vs torch eager.

Prints median latency of: onnxruntime fp32, onnxruntime int8 (dynamic and static QDQ
quantisation), torch eager fp32 and bf16 autocast, and the eager/onnxruntime ratio, all measured
in the same run, plus the load average (the machine is shared; a loaded CPU inflates every row
alike). Uses models/restore_<variant> when it exists, else a randomly initialised network of the
same architecture (latency does not depend on the weights).

    python benchmarks/bench_restore.py [--variant ours] [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from revavatar.learning.export import OnnxModel, export_onnx
from revavatar.learning.restoration_model import RestoreConfig, build_generator, load_generator
from revavatar.learning.restoration_model import uses_reference

ROOT = Path(__file__).resolve().parents[1]


def _time(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="ours")
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    torch.set_num_threads(2)
    mdir = ROOT / "models" / f"restore_{args.variant}"
    if (mdir / "generator.safetensors").is_file():
        g, cfg = load_generator(mdir)
        src = str(mdir)
    else:
        cfg = RestoreConfig(variant=args.variant)
        g, src = build_generator(cfg).eval(), "random init"
    s = cfg.size
    ins = [torch.rand(1, 3, s, s) * 2 - 1 for _ in range(2 if uses_reference(cfg) else 1)]
    names = ["x", "z"][: len(ins)]
    feed = {n: t.numpy() for n, t in zip(names, ins)}
    tmp = Path(tempfile.mkdtemp(prefix="bench_restore_"))
    export_onnx(g, ins, tmp / "fp32.onnx", names, ["y"], atol=2e-3)
    sess = OnnxModel(tmp / "fp32.onnx", threads=2)
    rows = {"onnxruntime fp32": _time(lambda: sess.run(**feed), args.runs)}
    from onnxruntime.quantization import (CalibrationDataReader, QuantType, quantize_dynamic,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = tmp / "pre.onnx"
    try:
        quant_pre_process(str(tmp / "fp32.onnx"), str(pre), skip_symbolic_shape=True)
    except Exception as err:  # noqa: BLE001 - report and quantise the plain graph
        print(f"  (quant_pre_process failed: {type(err).__name__}; quantising the plain graph)")
        pre = tmp / "fp32.onnx"
    try:
        quantize_dynamic(str(pre), str(tmp / "dyn.onnx"), weight_type=QuantType.QInt8)
        dyn = OnnxModel(tmp / "dyn.onnx", threads=2)
        rows["onnxruntime int8 dynamic"] = _time(lambda: dyn.run(**feed), args.runs)
    except Exception as err:  # noqa: BLE001 - a benchmark row, not a product path
        print(f"  int8 dynamic failed: {type(err).__name__}: {str(err)[:120]}")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{n: (np.random.default_rng(i).random((1, 3, s, s), np.float32) * 2 - 1)
                                for n in names} for i in range(4)])

        def get_next(self):
            return next(self.items, None)

    try:
        quantize_static(str(pre), str(tmp / "static.onnx"), Reader())
        sta = OnnxModel(tmp / "static.onnx", threads=2)
        rows["onnxruntime int8 static (QDQ)"] = _time(lambda: sta.run(**feed), args.runs)
    except Exception as err:  # noqa: BLE001
        print(f"  int8 static failed: {type(err).__name__}: {str(err)[:120]}")
    with torch.no_grad():
        rows["torch eager fp32"] = _time(lambda: g(*ins), max(5, args.runs // 3))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rows["torch eager bf16"] = _time(lambda: g(*ins), max(5, args.runs // 3))
    print(f"restorer {args.variant} ({src}), {s} px, batch 1, 2 threads, "
          f"load average {os.getloadavg()[0]:.1f}")
    for k, v in rows.items():
        print(f"  {k:32s} {v:8.1f} ms")
    print(f"  torch eager fp32 / onnxruntime fp32 = {rows['torch eager fp32'] / rows['onnxruntime fp32']:.1f}x")


if __name__ == "__main__":
    main()
