"""``revavatar train restore``: train one restorer variant, resumable, then export it to models/."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from revavatar.learning.restoration_data import RestorationTriples
from revavatar.learning.restoration_model import (
    VARIANTS,
    RestoreConfig,
    RestoreTrainer,
    export_generator,
    write_card,
)
from revavatar.learning.trainer import Checkpointer, LossLog, progress, seed_everything, use_bf16

__all__ = ["add_arguments", "run_from_args", "train"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``revavatar train restore``."""
    parser.add_argument("--data", required=True, type=Path, help="VR-Face build folder")
    parser.add_argument("--variant", default="ours", choices=list(VARIANTS))
    parser.add_argument("--steps", type=int, default=3000, help="total steps (resume continues)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256, help="network resolution (px)")
    parser.add_argument("--runs", type=Path, default=Path("/tmp/revavatar_runs"),
                        help="checkpoints go to RUNS/restore_<variant>")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="the trained model is exported to MODELS/restore_<variant>")
    parser.add_argument("--every", type=int, default=50, help="checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch threads (1 when another training shares the 2 cores)")


def train(args: argparse.Namespace) -> Path:
    """Train (or resume) ``args.variant`` to ``args.steps`` and export it; returns the model dir."""
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    run = args.runs / f"restore_{args.variant}"
    cfg = RestoreConfig(variant=args.variant, size=args.size, bf16=use_bf16(True))
    lp = None
    if cfg.use_lpips:
        from revavatar.learning.lpips_weights import load_lpips  # noqa: PLC0415

        lp = load_lpips("alex", allow_fetch=False)
    trainer = RestoreTrainer(cfg, lp)
    data = RestorationTriples(args.data, "train", train=True, size=args.size, seed=args.seed)
    ckpt, log = Checkpointer(run), LossLog(run)
    step, wall = 0, 0.0
    if args.resume and ckpt.latest() is not None:
        state = ckpt.load(trainer.modules, trainer.optimizers)
        step, wall = state["step"], float(state["extra"].get("wall_s", 0.0))
        log.truncate(step)
    rng = np.random.default_rng([args.seed, step])
    bar = progress(args.steps, initial=step, desc=f"restore {args.variant}")
    t0 = time.perf_counter()
    while step < args.steps:
        data.set_step(step)
        losses = trainer.step(data.batch(rng.integers(len(data), size=args.batch)))
        step += 1
        log.append(step, **losses)
        bar.update(1)
        bar.set_postfix(l1=f"{losses['l1']:.3f}")
        if step % args.every == 0 or step == args.steps:
            el = wall + time.perf_counter() - t0
            ckpt.save(step, trainer.modules, trainer.optimizers,
                      extra={"wall_s": el, "config": cfg.to_dict(), "data": str(args.data)})
            log.plot(run / "losses.png")
            rng = np.random.default_rng([args.seed, step])  # resumable draw order
    bar.close()
    wall += time.perf_counter() - t0
    card = {"variant": args.variant, "data": str(args.data), "resolution": args.size,
            "steps": step, "batch": args.batch, "wall_time_s": round(wall, 1),
            "threads": args.threads,
            "command": f"revavatar train restore --data {args.data} --variant {args.variant} "
                       f"--steps {args.steps} --batch {args.batch} --size {args.size} --resume"}
    out = export_generator(trainer.G, cfg, args.models / f"restore_{args.variant}", card)
    log.plot(out / "losses.png")
    write_card(out)
    print(json.dumps(card))
    return out


def run_from_args(args: argparse.Namespace) -> int:
    """CLI entry point."""
    train(args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m revavatar.learning.train_restore``."""
    parser = argparse.ArgumentParser(prog="revavatar train restore")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
