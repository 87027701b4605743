"""``revavatar train deocclusion``: train the eye cameras' de-occluder (:mod:`.deocclusion`) on
a VR-Face build's replayed frames, resumable, and write it with its ONNX export and a card."""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from revavatar.learning.deocclusion import (
    APPLIES,
    DeoccluderConfig,
    DeoccluderNet,
    OcclusionPairs,
    clean_weighted,
    eye_weight_map,
    pair_loss,
    save_deoccluder,
)
from revavatar.learning.train_align import lr_schedule
from revavatar.learning.trainer import (
    Checkpointer,
    LossLog,
    add_run_arguments,
    progress,
    seed_everything,
    update_average,
)

__all__ = ["add_arguments", "evaluate", "eye_window", "run_from_args", "train"]

#: gray-level change from which a pixel of a stored frame counts as inside its occlusion
_FOOTPRINT_LEVELS = 4


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``revavatar train deocclusion``."""
    parser.add_argument("--data", required=True, type=Path, help="VR-Face build folder")
    parser.add_argument("--steps", type=int, default=3000, help="the schedule's length")
    parser.add_argument("--stop-at", type=int, default=None,
                        help="stop (and export) at this step of the --steps schedule, e.g. a "
                             "checkpoint that evaluated better than the end; with --resume from "
                             "a checkpoint at that step it only exports")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate")
    parser.add_argument("--width", type=int, default=DeoccluderConfig.width)
    parser.add_argument("--train-samples", type=int, default=1400,
                        help="train samples replayed (spread over the identities; each gives "
                             "both eye frames; default %(default)d)")
    parser.add_argument("--val-samples", type=int, default=300,
                        help="val samples scored at each checkpoint (default %(default)d)")
    parser.add_argument("--eye-weight", type=float, default=0.0,
                        help="extra loss weight around the eye (learning.deocclusion."
                             "eye_weight_map; 0 = every pixel alike, the default)")
    parser.add_argument("--apply", choices=APPLIES, default=DeoccluderConfig.apply,
                        help="what the exported model applies: the full correction it trains "
                             "(default) or the gain alone (learning.deocclusion)")
    parser.add_argument("--p-occlusion", type=float, default=0.75,
                        help="share of drawn pairs that get an occlusion (default %(default)g)")
    parser.add_argument("--mask-bias", type=float, default=0.0,
                        help="lower the exported model's mask logit by this much "
                             "(DeoccluderConfig.mask_bias; training is unaffected, so with "
                             "--resume at the last step it only re-exports)")
    parser.add_argument("--edge-weight", type=float, default=0.0,
                        help="weight of the output's gradient error in the loss "
                             "(learning.deocclusion.pair_loss edge; 0 = none, the default)")
    parser.add_argument("--field-weight", type=float, default=0.0,
                        help="weight of the log-gain and offset fields' error against the "
                             "drawn occlusion's exact inverse (learning.deocclusion.pair_loss "
                             "field; 0 = none, the default)")
    parser.add_argument("--clean-weight", type=float, default=1.0,
                        help="weight of the frames without an occlusion in the loss, against 1 "
                             "for the occluded ones (learning.deocclusion.clean_weighted; "
                             "default 1)")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="keep a moving average of the weights with this decay per step "
                             "(e.g. 0.999) and validate and export it instead of the last "
                             "weights: the eye figures of single checkpoints swing from one to "
                             "the next; 0 = off (default)")
    parser.add_argument("--log-input", action="store_true",
                        help="give the network the frame's log as a second input "
                             "(DeoccluderConfig.log_input)")
    parser.add_argument("--deep-context", action="store_true",
                        help="add the 1/8 and 1/16 resolution branch "
                             "(DeoccluderConfig.deep_context)")
    parser.add_argument("--reference", type=int, default=0, metavar="N",
                        help="give the network the wearer's reference beside each frame: the "
                             "median of that eye camera's frames in N other samples of the same "
                             "person (DeoccluderConfig.reference; 0 = none, the default)")
    parser.add_argument("--sharpen", action="store_true",
                        help="add the unsharp-mask field (DeoccluderConfig.sharpen)")
    parser.add_argument("--crop", type=int, default=None,
                        help="train on square windows this wide (a multiple of 4) around the "
                             "eye, jittered by a quarter of it: about 3x the pairs per second at "
                             "160, all of them near the eye; the val figures stay whole-frame")
    parser.add_argument("--init-from", type=Path, default=None,
                        help="start from the newest weights in this checkpoint folder (a "
                             "network without --sharpen, --log-input, --deep-context or "
                             "--reference grows into one with it, starting as the same "
                             "function), on a fresh schedule and optimizer")
    # the checkpoint folder also keeps the replayed frames (frames_<split>_<n>.npz)
    add_run_arguments(parser, Path("models/deocclusion"), Path("/tmp/revavatar_deocclusion"))


#: eye-weighted gray-level change from which an occlusion counts as touching the eye
_EYE_TOUCH_LEVELS = 2.0
#: share of its peak from which the eye Gaussian counts in the eye figures
_EYE_FLOOR = 0.3


def _eye_map(data: OcclusionPairs, gain: float) -> torch.Tensor:
    """:func:`eye_weight_map` of the build's left-eye camera (the pairs are all in its
    orientation)."""
    from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415

    return eye_weight_map(data.index.calibration().cameras["left_eye"],
                          CanonicalLayout(data.index.layout_size), gain)


def eye_window(data: OcclusionPairs) -> np.ndarray:
    """(H, W) weights of the eye figures: the eye Gaussian of :func:`eye_weight_map`, cut at
    :data:`_EYE_FLOOR` of its peak."""
    g = _eye_map(data, 1.0)[0, 0].numpy() - 1.0
    return np.where(g > _EYE_FLOOR, g, 0.0)


@torch.no_grad()
def evaluate(net: DeoccluderNet, data: OcclusionPairs,
             eye: np.ndarray | None = None) -> dict[str, Any]:
    """Mean absolute error (gray levels) of the stored frames and of the de-occluded ones
    against the same frames replayed without their occlusion: on occluded frames overall and
    inside the occlusion (pixels the occlusion moved by more than 4 levels), and how far clean
    frames move. With ``eye`` (:func:`eye_window`), the same around the eye, weighted by it:
    on clean frames, and on the occluded frames whose eye the occlusion touched (by more than
    2 levels there), of the gray levels and of their high-pass (``_edges``: the frame less its
    Gaussian blur, sigma 3 px). The frame-wide figures did not tell a checkpoint that moves the
    gaze from one that does not (reports/alignment.md); the eye's did for runs 4-6, though
    neither follows differences in val gaze of a few hundredths of a degree."""
    net.eval()
    rows: dict[bool, list[tuple[float, ...]]] = {True: [], False: []}
    w = None if eye is None else eye / eye.sum()
    for k in range(len(data)):
        stored, truth = data.stored(k)
        x = torch.from_numpy(stored.astype(np.float32) / 255.0)[None, None]
        ref = None
        if net.config.reference:
            ref = torch.from_numpy(data.reference(k).astype(np.float32) / 255.0)[None, None]
        out = (net(x, ref)[0, 0].numpy() * 255.0).round()
        d_in = np.abs(stored.astype(np.float32) - truth)
        d_out = np.abs(out - truth)
        inside = d_in > _FOOTPRINT_LEVELS
        row = [float(d_in.mean()), float(d_out.mean()),
               float(d_in[inside].mean()) if inside.any() else np.nan,
               float(d_out[inside].mean()) if inside.any() else np.nan] + [np.nan] * 4
        if w is not None:
            t = _high_pass(truth)
            row[4:] = [float((d_in * w).sum()), float((d_out * w).sum()),
                       float((np.abs(_high_pass(stored) - t) * w).sum()),
                       float((np.abs(_high_pass(out) - t) * w).sum())]
        rows[bool(data.occluded[k])].append(tuple(row))
    occ = np.array(rows[True]).reshape(-1, 8)
    clean = np.array(rows[False]).reshape(-1, 8)
    out_metrics: dict[str, Any] = {
        "occluded_in": float(np.mean(occ[:, 0])) if len(occ) else None,
        "occluded_out": float(np.mean(occ[:, 1])) if len(occ) else None,
        "footprint_in": float(np.nanmean(occ[:, 2])) if len(occ) else None,
        "footprint_out": float(np.nanmean(occ[:, 3])) if len(occ) else None,
        "clean_out": float(np.mean(clean[:, 1])) if len(clean) else None,
        "n_occluded": len(occ), "n_clean": len(clean)}
    if w is not None:
        touched = occ[occ[:, 4] > _EYE_TOUCH_LEVELS]
        out_metrics.update({
            "eye_touched_in": float(np.mean(touched[:, 4])) if len(touched) else None,
            "eye_touched_out": float(np.mean(touched[:, 5])) if len(touched) else None,
            "eye_clean_out": float(np.mean(clean[:, 5])) if len(clean) else None,
            "eye_touched_edges_in": float(np.mean(touched[:, 6])) if len(touched) else None,
            "eye_touched_edges_out": float(np.mean(touched[:, 7])) if len(touched) else None,
            "eye_clean_edges_out": float(np.mean(clean[:, 7])) if len(clean) else None,
            "n_eye_touched": len(touched)})
    return out_metrics


def _high_pass(frame: np.ndarray) -> np.ndarray:
    """The frame less its Gaussian blur (sigma 3 px): the edges the gaze probe reads."""
    import cv2  # noqa: PLC0415

    f = frame.astype(np.float32)
    return f - cv2.GaussianBlur(f, (0, 0), 3.0)


def eye_crop(tensors: tuple[torch.Tensor, ...], centre: tuple[int, int], size: int,
             rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
    """The same ``size`` square window of each (N, C, H, W) tensor (a (1, 1, H, W) weight map
    included), around ``centre`` (row, column) moved by up to a quarter of ``size`` and kept
    inside the frame."""
    h, w = tensors[0].shape[-2:]
    _check_crop(size, min(h, w))
    j = size // 4
    top, left = (int(np.clip(c - size // 2 + rng.integers(-j, j + 1), 0, n - size))
                 for c, n in zip(centre, (h, w), strict=True))
    return tuple(t[..., top:top + size, left:left + size] for t in tensors)


def _check_crop(size: int, limit: int | None = None) -> None:
    """Refuse a crop that is not a positive multiple of 4 (of at most ``limit``)."""
    if size <= 0 or size % 4 or (limit is not None and size > limit):
        bound = f", at most {limit}" if limit is not None else ""
        msg = f"--crop {size}: must be a positive multiple of 4{bound}"
        raise ValueError(msg)


def train(args: argparse.Namespace) -> Path:
    """Train (or resume) to ``args.steps``; returns the model folder."""
    if not 0.0 < args.p_occlusion <= 1.0:
        msg = f"--p-occlusion {args.p_occlusion} must lie in (0, 1]"
        raise ValueError(msg)
    if args.reference < 0:
        msg = f"--reference {args.reference} must be a number of frames (0 = none)"
        raise ValueError(msg)
    if args.clean_weight <= 0:
        msg = f"--clean-weight {args.clean_weight} must be positive"
        raise ValueError(msg)
    if not 0.0 <= args.ema < 1.0:
        msg = f"--ema {args.ema} must be a decay in [0, 1)"
        raise ValueError(msg)
    if args.crop is not None:
        _check_crop(args.crop)  # before the frames are replayed; the frame bounds it later
    stop = args.steps if args.stop_at is None else args.stop_at
    if not 0 < stop <= args.steps:
        msg = f"--stop-at {args.stop_at} must lie in [1, --steps {args.steps}]"
        raise ValueError(msg)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    data = OcclusionPairs(args.data, "train", args.train_samples,
                          cache=args.ckpt / f"frames_train_{args.train_samples}.npz",
                          progress=not args.no_progress)
    val = OcclusionPairs(args.data, "val", args.val_samples,
                         cache=args.ckpt / f"frames_val_{args.val_samples}.npz",
                         progress=not args.no_progress)
    if args.reference:
        for pairs in (data, val):
            pairs.load_references(args.reference, args.ckpt / f"references_{pairs.split}_"
                                  f"{len(pairs.samples)}_{args.reference}.npz",
                                  progress=not args.no_progress)
    h, w = data.frames.shape[1:3]
    weight = _eye_map(data, args.eye_weight) if args.eye_weight > 0 else None
    eye = eye_window(val)
    centre = np.unravel_index(int(np.argmax(eye)), eye.shape)
    everywhere = torch.ones(1, 1, h, w)  # the weights --crop cuts when there is no eye weight
    net = DeoccluderNet(DeoccluderConfig(frame_size=(w, h), width=args.width, apply=args.apply,
                                         sharpen=args.sharpen, mask_bias=args.mask_bias,
                                         log_input=args.log_input,
                                         deep_context=args.deep_context,
                                         reference=args.reference > 0))
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    average = copy.deepcopy(net).requires_grad_(False) if args.ema > 0 else None
    modules = {"net": net} | ({"ema": average} if average is not None else {})
    deployed = net if average is None else average  # what is validated and exported
    ckpt, log, vlog = Checkpointer(args.ckpt), LossLog(args.ckpt), LossLog(args.ckpt, "val.csv")
    step, wall = 0, 0.0
    if args.resume and ckpt.latest() is not None:
        state = ckpt.load(modules, {"opt": opt})
        step, wall = state["step"], float(state["extra"].get("wall_s", 0.0))
        log.truncate(step)
        vlog.truncate(step)
    elif args.init_from is not None:
        # new inputs and the deep branch start at zero: the grown network is the stored one
        Checkpointer(args.init_from).load_weights({"net": net}, new=("deep.",))
        if average is not None:
            average.load_state_dict(net.state_dict())
    bar = progress(stop, initial=step, desc="train deocclusion", disable=args.no_progress)
    metrics: dict[str, Any] | None = None  # val figures of the last checkpoint
    t0 = time.perf_counter()
    while step < stop:
        step += 1
        rng = np.random.default_rng([args.seed, step])  # batch = f(seed, step): exact resume
        for group in opt.param_groups:
            group["lr"] = args.lr * lr_schedule(step, args.steps)
        net.train()
        x, y, mask, *extra = data.batch(rng, args.batch, args.p_occlusion,
                                        fields=args.field_weight > 0,
                                        references=args.reference > 0)
        wmap = weight
        if args.crop:
            x, y, mask, wmap, *extra = eye_crop(
                (x, y, mask, everywhere if weight is None else weight, *extra), centre,
                args.crop, rng)
        targets = extra[:1] if args.field_weight > 0 else []
        ref = extra[-1] if args.reference else None
        if args.clean_weight != 1.0:
            wmap = clean_weighted(wmap, mask, args.clean_weight)
        loss, parts = pair_loss(net, x, y, mask, wmap, args.edge_weight,
                                targets[0] if targets else None, args.field_weight, ref)
        if not torch.isfinite(loss):
            last = ckpt.latest()
            msg = (f"the loss is not finite at step {step} ({parts}); nothing was saved past "
                   f"{last.name if last else 'the start'}: resume from it with a lower --lr")
            raise FloatingPointError(msg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if average is not None:
            update_average(average, net, args.ema)
        log.append(step, **parts)
        bar.update(1)
        if step % args.every == 0 or step == stop:
            metrics = evaluate(deployed, val, eye)
            shown = {k: v for k, v in metrics.items() if not k.startswith("n_") and v is not None}
            vlog.append(step, **shown)
            bar.set_postfix({k: f"{v:.2f}" for k, v in shown.items()
                             if k in ("eye_touched_edges_out", "eye_clean_edges_out")})
            spent = wall + time.perf_counter() - t0
            ckpt.save(step, modules, {"opt": opt}, extra={"wall_s": spent})
            log.plot(args.out / "losses.png")
            # the folder always holds a usable export of the last checkpoint
            save_deoccluder(deployed, args.out, _card(args, len(data), step, spent, metrics))
    bar.close()
    if metrics is None:  # resumed where it stops: nothing trained, the card still gets figures
        metrics = evaluate(deployed, val, eye)
    wall += time.perf_counter() - t0
    log.plot(args.out / "losses.png")
    out = save_deoccluder(deployed, args.out, _card(args, len(data), step, wall, metrics))
    print(json.dumps(metrics))
    return out


def _card(args: argparse.Namespace, frames: int, step: int, wall: float,
          metrics: dict[str, Any]) -> dict[str, Any]:
    return {"data": str(args.data.resolve()), "train_frames": frames,
            "p_occlusion": args.p_occlusion, "steps": step, "batch": args.batch, "lr": args.lr,
            "threads": args.threads, "seed": args.seed, "wall_s": round(wall, 1),
            "val": metrics, "crop": args.crop, "ema": args.ema,
            "reference_frames": args.reference,
            "init_from": str(args.init_from) if args.init_from is not None else None,
            "command": (f"revavatar train deocclusion --data {args.data} --steps {args.steps} "
                        f"--batch {args.batch} --lr {args.lr:g} --width {args.width} "
                        f"--train-samples {args.train_samples} --val-samples "
                        f"{args.val_samples} --p-occlusion {args.p_occlusion:g} "
                        f"--threads {args.threads} --apply {args.apply}"
                        + (f" --eye-weight {args.eye_weight:g}" if args.eye_weight > 0 else "")
                        + (f" --mask-bias {args.mask_bias:g}" if args.mask_bias else "")
                        + (f" --edge-weight {args.edge_weight:g}" if args.edge_weight > 0
                           else "")
                        + (f" --field-weight {args.field_weight:g}" if args.field_weight > 0
                           else "")
                        + (" --sharpen" if args.sharpen else "")
                        + (" --log-input" if args.log_input else "")
                        + (" --deep-context" if args.deep_context else "")
                        + (f" --reference {args.reference}" if args.reference else "")
                        + (f" --clean-weight {args.clean_weight:g}"
                           if args.clean_weight != 1.0 else "")
                        + (f" --ema {args.ema:g}" if args.ema > 0 else "")
                        + (f" --crop {args.crop}" if args.crop else "")
                        + (f" --init-from {args.init_from}" if args.init_from else "")
                        + (f" --stop-at {args.stop_at}" if args.stop_at is not None else ""))}


def run_from_args(args: argparse.Namespace) -> int:
    """CLI entry point."""
    train(args)
    return 0
