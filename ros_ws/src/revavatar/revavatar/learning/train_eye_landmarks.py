"""``revavatar train eye-landmarks``: train the gaze critic (:mod:`.eye_landmarks`) on the truth
eye crops of a VR-Face build, resumable, and write it with a card to ``--out``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from revavatar.learning.eye_landmarks import (
    LABELS,
    EyeLandmarkConfig,
    EyeLandmarkNet,
    EyeLandmarkSet,
    gaze_offset,
    save_eye_landmarks,
)
from revavatar.learning.trainer import (
    Checkpointer,
    LossLog,
    add_run_arguments,
    progress,
    seed_everything,
)

__all__ = ["add_arguments", "evaluate", "run_from_args", "train"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``revavatar train eye-landmarks``."""
    parser.add_argument("--data", required=True, type=Path, help="VR-Face build folder")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate")
    parser.add_argument("--width", type=int, default=EyeLandmarkConfig.width)
    parser.add_argument("--labels", default="probe", choices=LABELS,
                        help="build: the build's landmarks.npy; probe (default): what the "
                             "evaluation's gaze probe reads on the truth face (cached in --ckpt)")
    parser.add_argument("--probe-copies", type=int, default=4,
                        help="jittered copies the probe labels average (default %(default)d)")
    add_run_arguments(parser, Path("models/eye_landmarks"), Path("/tmp/revavatar_eye_landmarks"))


def _loss(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Point distance (px) plus the iris offset's error, which is what gaze reads."""
    return ((pred - truth).norm(dim=-1).mean()
            + (gaze_offset(pred) - gaze_offset(truth)).norm(dim=-1).mean())


@torch.no_grad()
def evaluate(net: EyeLandmarkNet, data: EyeLandmarkSet, batch: int = 256) -> dict[str, float]:
    """Mean point error (px), iris-offset error (px) and the gaze angle between the points found
    and the labels (deg, eyeball model of :mod:`revavatar.core.gaze`) on unaugmented crops."""
    from revavatar.core.gaze import angular_error_deg, gaze_angles  # noqa: PLC0415
    from revavatar.core.landmarks import EyeLandmarks  # noqa: PLC0415

    net.eval()
    preds = []
    for s in range(0, len(data), batch):
        x, _ = data.batch(np.arange(s, min(s + batch, len(data))))
        preds.append(net(x))
    pred = torch.cat(preds).double()
    truth = torch.from_numpy(data.points).double()

    def angles(p: np.ndarray) -> tuple[float, float]:
        e = EyeLandmarks("left", corners=p[1:3], upper=p[1:3], lower=p[1:3], iris=p[0])
        return gaze_angles(e)

    gaze = [angular_error_deg(angles(a), angles(b)) for a, b in zip(pred.numpy(), truth.numpy())]
    err = (pred - truth).norm(dim=-1)
    return {"iris_px": float(err[:, 0].mean()), "corners_px": float(err[:, 1:].mean()),
            "offset_px": float((gaze_offset(pred) - gaze_offset(truth)).norm(dim=-1).mean()),
            "gaze_deg": float(np.mean(gaze)), "gaze_deg_p95": float(np.percentile(gaze, 95)),
            "n": len(data)}


def train(args: argparse.Namespace) -> Path:
    """Train (or resume) to ``args.steps``; returns the model folder."""
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    data, val = (EyeLandmarkSet(args.data, split, labels=args.labels, copies=args.probe_copies,
                                cache=args.ckpt / f"probe_labels_{split}_x{args.probe_copies}.npz")
                 for split in ("train", "val"))
    net = EyeLandmarkNet(EyeLandmarkConfig(crop_size=data.images.shape[2:0:-1],
                                           width=args.width))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    ckpt, log, vlog = Checkpointer(args.ckpt), LossLog(args.ckpt), LossLog(args.ckpt, "val.csv")
    step, wall = 0, 0.0
    if args.resume and ckpt.latest() is not None:
        state = ckpt.load({"net": net}, {"opt": opt})
        step, wall = state["step"], float(state["extra"].get("wall_s", 0.0))
        log.truncate(step)
        vlog.truncate(step)
    bar = progress(args.steps, initial=step, desc="train eye-landmarks",
                   disable=args.no_progress)
    metrics: dict[str, float] | None = None  # val figures of the last checkpoint
    t0 = time.perf_counter()
    while step < args.steps:
        step += 1
        rng = np.random.default_rng([args.seed, step])  # batch = f(seed, step): exact resume
        for group in opt.param_groups:  # cosine decay to 0
            group["lr"] = 0.5 * args.lr * (1.0 + np.cos(np.pi * (step - 1) / args.steps))
        net.train()
        x, y = data.batch(rng.integers(len(data), size=args.batch), rng)
        loss = _loss(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        log.append(step, loss=float(loss.detach()))
        bar.update(1)
        if step % args.every == 0 or step == args.steps:
            metrics = evaluate(net, val)
            vlog.append(step, **{k: v for k, v in metrics.items() if k != "n"})
            bar.set_postfix(val_gaze=f"{metrics['gaze_deg']:.2f}")
            ckpt.save(step, {"net": net}, {"opt": opt},
                      extra={"wall_s": wall + time.perf_counter() - t0})
            log.plot(args.out / "losses.png")
    bar.close()
    wall += time.perf_counter() - t0
    card = {"data": str(args.data.resolve()), "labels": args.labels,
            "probe_copies": args.probe_copies if args.labels == "probe" else None,
            "train_crops": len(data), "steps": step,
            "batch": args.batch, "lr": args.lr, "threads": args.threads, "seed": args.seed,
            "wall_s": round(wall, 1), "val": metrics or evaluate(net, val),
            "command": (f"revavatar train eye-landmarks --data {args.data} --steps {args.steps} "
                        f"--batch {args.batch} --lr {args.lr:g} --width {args.width} "
                        f"--labels {args.labels} --probe-copies {args.probe_copies} "
                        f"--threads {args.threads}")}
    out = save_eye_landmarks(net, args.out, card)
    print(json.dumps(card["val"]))
    return out


def run_from_args(args: argparse.Namespace) -> int:
    """CLI entry point."""
    train(args)
    return 0
