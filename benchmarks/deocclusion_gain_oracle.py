"""How much of the eye cameras' occlusion can be undone at all: the de-occluder against the true gain.

Usage: python benchmarks/deocclusion_gain_oracle.py [--data /tmp/vrface_hf8k] [--split val]
       [--samples 300] [--every 1] [--model models/deocclusion] [--cache FRAMES.npz] [--seed 1]

A VR-Face blob multiplies the eye frame by a gain before the camera's later effects (blur,
vignetting, sensor noise, JPEG), which could bury what is under a dark one. For every eye frame of
``--samples`` samples of ``--split`` (every ``--every``-th frame), it draws one fresh set of blobs
(the smudge left out), finishes both frames as the build did, and scores around the eye, as the
trainer's eye figures do (``train_deocclusion.eye_window``: eye-weighted mean absolute gray
levels, on the frames whose eye the draw touched):

- the occluded frame as the camera gives it;
- the trained de-occluder's output (``--model``, onnxruntime);
- the occluded frame divided by the draw's true gain (``vrface.effects.occlusion_fields``): what
  a perfect estimate of the gain would give, the floor set by noise and JPEG under the blob.

Rows split by the darkest gain on the eye. The gap between the last two columns is what a better
gain estimate could still win (reports/alignment.md, ninth session).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from revavatar.core.onnx_runtime import create_session
from revavatar.learning.deocclusion import OcclusionPairs, mirror_for
from revavatar.learning.train_deocclusion import eye_window
from revavatar.vrface.effects import OcclusionParams, apply_occlusion, occlusion_fields

ROOT = Path(__file__).resolve().parents[1]
#: eye-weighted change from which a draw counts as touching the eye (the trainer's threshold)
TOUCH_LEVELS = 2.0
#: rows by the darkest gain on the eye
GAIN_BANDS = ((0.0, 0.3), (0.3, 0.6), (0.6, 1.01))


def measure(pairs: OcclusionPairs, model: Path, every: int, seed: int) -> np.ndarray:
    """(n, 4) rows for the touched eyes: occluded, de-occluded, divided by the true gain (eye
    figures, gray levels), and the darkest gain on the eye."""
    w = eye_window(pairs)
    w = w / w.sum()
    session = create_session(model / "model.onnx", 2, ("CPUExecutionProvider",))
    name = session.get_inputs()[0].name
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(0, len(pairs), every):
        params = asdict(replace(OcclusionParams.draw(rng), smudge=0.0))
        clean = pairs.frames[k]
        occ = occlusion_fields(clean.shape, np.random.default_rng(int(rng.integers(2**63 - 1))),
                               **params)
        hit = apply_occlusion(clean, occ)
        gain = mirror_for(pairs.regions[k], occ.gain)
        truth, seen = (mirror_for(pairs.regions[k], pairs._finish(k, f)).astype(np.float32)
                       for f in (clean, hit))
        occluded = float((np.abs(seen - truth) * w).sum())
        if occluded < TOUCH_LEVELS:
            continue
        out = session.run(None, {name: seen[None, None] / 255.0})[0][0, 0] * 255.0
        divided = np.clip(np.rint(seen / np.maximum(gain, 1e-3)), 0, 255)
        rows.append((occluded, float((np.abs(out - truth) * w).sum()),
                     float((np.abs(divided - truth) * w).sum()), float(gain[w > 0].min())))
    return np.array(rows).reshape(-1, 4)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/vrface_hf8k"))
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--every", type=int, default=1, help="score every n-th eye frame")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "deocclusion")
    ap.add_argument("--cache", type=Path, default=None,
                    help="replayed frames (.npz, as `train deocclusion` keeps them)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    pairs = OcclusionPairs(args.data, args.split, args.samples, cache=args.cache)
    r = measure(pairs, args.model, args.every, args.seed)
    print(f"{args.split}: {len(r)} eyes the blobs touched (of {len(range(0, len(pairs), args.every))})")
    print("| darkest gain on the eye | eyes | occluded | de-occluder | divided by the true gain |")
    print("|---|---|---|---|---|")
    print("| all | %d | %.2f | %.2f | %.2f |" % (len(r), *r[:, :3].mean(0)))
    for lo, hi in GAIN_BANDS:
        m = (r[:, 3] >= lo) & (r[:, 3] < hi)
        if m.any():
            print("| %.1f-%.1f | %d | %.2f | %.2f | %.2f |" % (lo, min(hi, 1.0), m.sum(),
                                                           *r[m, :3].mean(0)))


if __name__ == "__main__":
    main()
