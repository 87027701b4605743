"""``revavatar train align``: train aligners (CycleGAN / auto-encoder) on a VR-Face build.

``--region all`` and/or ``--kind all`` train several models in ONE process, round-robin one step
each, so on a shared CPU every model progresses together and ``models/`` always holds a usable
export of each (refreshed at every checkpoint).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from revavatar.core.alignment import VIEW_TONES
from revavatar.core.canonical import EYE_SIDES
from revavatar.core.canonical import REGION_NAMES as REGIONS
from revavatar.learning.alignment_model import AlignModelConfig, make_job, save_job
from revavatar.learning.data import INPUT_MODES, AlignmentPairs, MirroredEyes
from revavatar.learning.trainer import progress, seed_everything

__all__ = ["REGIONS", "add_arguments", "lr_schedule", "parse_regions", "run_from_args"]
_KINDS = ("cyclegan", "autoencoder")


def parse_regions(text: str) -> tuple[str, ...]:
    """``--region``: one region, a comma list, or ``all`` -> the regions in canonical order."""
    if text == "all":
        return REGIONS
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in REGIONS]
    if bad or not names:
        msg = (f"unknown region(s) {', '.join(bad) or repr(text)}; expected "
               f"{', '.join(REGIONS)} or all")
        raise argparse.ArgumentTypeError(msg)
    return tuple(r for r in REGIONS if r in names)


def lr_schedule(step: int, steps: int, origin: int = 0) -> float:
    """Learning-rate factor at ``step`` (1-based): CycleGAN's schedule, constant for the first
    half of ``origin..steps`` and then linear to 0. ``origin`` restarts it for a fine-tune of a
    finished run, whose own schedule had already reached 0."""
    return min(1.0, 2.0 * (1.0 - (step - 1 - origin) / (steps - origin)))


def train_pairs(args: argparse.Namespace, region: str) -> AlignmentPairs | MirroredEyes:
    """A region's training pairs as the flags ask (with ``--mirror-eyes``, the other eye's
    mirrored after its own)."""
    def pairs(name: str) -> AlignmentPairs:
        return AlignmentPairs(args.data, name, "train", augment=True, cache=True,
                              input_mode=args.input_mode, seed=args.seed,
                              reference=args.reference,
                              view_tone=getattr(args, "view_tone", "camera"),
                              enroll_frames=getattr(args, "enroll_frames", 1))

    if not getattr(args, "mirror_eyes", False):
        return pairs(region)
    other = next(r for r in EYE_SIDES if r != region)
    return MirroredEyes(pairs(region), pairs(other))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``revavatar train align``."""
    parser.add_argument("--region", required=True, type=parse_regions,
                        help=f"{', '.join(REGIONS)}, a comma list of them, or all")
    parser.add_argument("--data", required=True, help="VR-Face build folder")
    parser.add_argument("--kind", default="cyclegan", choices=(*_KINDS, "all"))
    parser.add_argument("--steps", type=int, default=3000, help="total steps per model")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--out", default="models", help="parent of the align[_ae]_R folders")
    parser.add_argument("--ckpt-root", default="/tmp/revavatar_align", help="checkpoint parent")
    parser.add_argument("--ckpt-every", type=int, default=250)
    parser.add_argument("--input-mode", default="rectified", choices=INPUT_MODES,
                        help="model input: plane rectification, enrolled-face surface, or resize")
    parser.add_argument("--no-bf16", action="store_true", help="train in fp32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: see card)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--tone", action="store_true",
                        help="CycleGAN generators get the global gain/offset head")
    parser.add_argument("--lambda-focus", type=float, default=0.0,
                        help="weight of an extra L1 on the eye opening (landmark mask); "
                             "0 = off")
    parser.add_argument("--lambda-iris", type=float, default=0.0,
                        help="weight of the distance (px) between the aligned and true iris "
                             "centres (dark-mass centre on the eye opening); 0 = off")
    parser.add_argument("--lambda-cycle", type=float, default=AlignModelConfig.lambda_cycle,
                        help="CycleGAN cycle-consistency weight (default %(default)g, as in "
                             "CycleGAN; identity is half of it)")
    parser.add_argument("--lambda-gan", type=float, default=AlignModelConfig.lambda_gan,
                        help="CycleGAN adversarial weight (default %(default)g)")
    parser.add_argument("--lambda-ssim", type=float, default=0.0,
                        help="weight of 1 - SSIM (luma, the eval's SSIM) on G's output; 0 = off")
    parser.add_argument("--lambda-gaze", type=float, default=0.0,
                        help="eyes: weight of the gap (px) between the aligned and true crops' "
                             "iris offsets from the corner mid-point, read by --gaze-critic; "
                             "0 = off")
    parser.add_argument("--gaze-critic", default="models/eye_landmarks",
                        help="folder of the eye-landmark critic (revavatar train eye-landmarks)")
    parser.add_argument("--lr", type=float, default=AlignModelConfig.lr,
                        help="peak Adam learning rate (default %(default)g)")
    parser.add_argument("--lr-origin", type=int, default=0,
                        help="step the learning-rate schedule starts from (constant for the "
                             "first half of --lr-origin..--steps, then linear decay to 0); a "
                             "fine-tune from a finished run sets it to the run's step")
    parser.add_argument("--reference", action="store_true",
                        help="the generators also see the enrolled wearer's crop (the sample's "
                             "DP reference), which fills what the camera cannot see")
    parser.add_argument("--ref-blend", action="store_true",
                        help="with --reference: CycleGAN's G mixes the reference into its skip "
                             "path with a learned per-pixel weight (starts at 0)")
    parser.add_argument("--no-blend-eye", action="store_true",
                        help="with --ref-blend on an eye: the blend stays out of the eye ellipse "
                             "(canonical eye_weight), so the eye comes from the camera")
    parser.add_argument("--mirror-eyes", action="store_true",
                        help="an eye also trains on the other eye's pairs mirrored left to right "
                             "(a symmetric headset; learning.data.MirroredEyes)")
    parser.add_argument("--enroll-frames", type=int, default=1,
                        help="surface input: the wearer's enrolled shape is the mean of this many "
                             "frames (the sample's reference and others of the same person; "
                             "default 1)")
    parser.add_argument("--view-tone", default="camera", choices=VIEW_TONES,
                        help="with --reference: the tone the generators read the camera view in: "
                             "the camera's (default) or the enrollment crop's (enrollment: a "
                             "histogram match over the crop; enrollment-skin: a gain and gamma "
                             "fitted on the skin outside the eye; core.alignment.toned_view)")
    parser.add_argument("--ngf", type=int, default=AlignModelConfig.ngf,
                        help="CycleGAN generators' first-layer width, doubled per downsampling "
                             "(default %(default)d)")
    parser.add_argument("--max-ch", type=int, default=AlignModelConfig.max_ch,
                        help="CycleGAN generators' channel cap (default %(default)d); with "
                             "--init-from, a wider --ngf / --max-ch grows the stored model")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="keep a moving average of the generator's weights with this decay "
                             "per step (e.g. 0.998) and validate and export it instead of the "
                             "last weights; 0 = off (default)")
    parser.add_argument("--init-from", default=None,
                        help="checkpoint root of an earlier run: start each model from its "
                             "weights and step (new parameters fresh) when --resume finds none")


def run_from_args(args: argparse.Namespace) -> list[Path]:
    """Train (or resume) the selected models; checkpoint, plot and export each to --out."""
    if args.ref_blend and not args.reference:
        msg = "--ref-blend mixes in the reference crop: it needs --reference"
        raise ValueError(msg)
    if getattr(args, "no_blend_eye", False) and (not args.ref_blend
                                                 or "lower_face" in args.region):
        msg = "--no-blend-eye keeps the reference blend off the eyes: use it with --ref-blend " \
              "on the eye regions only"
        raise ValueError(msg)
    if getattr(args, "enroll_frames", 1) != 1 and (args.enroll_frames < 1
                                                   or args.input_mode != "surface"):
        msg = (f"--enroll-frames {args.enroll_frames}: the mean shape of 1 or more frames is "
               "the enrolled surface of --input-mode surface")
        raise ValueError(msg)
    if getattr(args, "mirror_eyes", False) and "lower_face" in args.region:
        msg = "--mirror-eyes mirrors one eye into the other: use it with the eye regions only"
        raise ValueError(msg)
    if args.lambda_gaze > 0 and "lower_face" in args.region:
        msg = "--lambda-gaze reads eye landmarks: use it with the eye regions only"
        raise ValueError(msg)
    if args.lambda_gaze > 0 and not (Path(args.gaze_critic) / "weights.safetensors").is_file():
        msg = (f"--gaze-critic {args.gaze_critic}: no critic there (revavatar train "
               "eye-landmarks)")
        raise ValueError(msg)
    if not 0.0 <= args.ema < 1.0:
        msg = f"--ema {args.ema} must be a decay in [0, 1)"
        raise ValueError(msg)
    if not 0 <= args.lr_origin < args.steps:
        msg = f"--lr-origin {args.lr_origin} must lie in [0, --steps {args.steps})"
        raise ValueError(msg)
    torch.set_num_threads(args.threads)
    seed_everything(args.seed)
    from revavatar.learning.lpips_weights import load_lpips  # noqa: PLC0415

    lpips = load_lpips("alex", allow_fetch=False)
    jobs = []
    for region in args.region:
        data = train_pairs(args, region)
        for kind in _KINDS if args.kind == "all" else (args.kind,):
            jobs.append(make_job(args, region, kind, data, lpips))
    start = min(j["start"] for j in jobs)
    bar = progress(args.steps, initial=start, desc="train align", disable=args.no_progress)
    for step in range(start + 1, args.steps + 1):
        lr_scale = lr_schedule(step, args.steps, args.lr_origin)
        for k, job in enumerate(jobs):
            if job["start"] >= step:
                continue
            rng = np.random.default_rng([args.seed, step, k])  # batch = f(seed, step): exact resume
            t0 = time.perf_counter()
            data, model = job["data"], job["model"]
            model.set_lr(model.config.lr * lr_scale)
            data.set_epoch(step)
            batch = data.batch(rng.choice(len(data), args.batch, replace=len(data) < args.batch))
            losses = model.train_step(batch["view"], batch["target"], batch["focus"],
                                      batch.get("reference"))
            job["wall"] += time.perf_counter() - t0
            job["log"].append(step, **losses)
            if step % args.ckpt_every == 0 or step == args.steps:
                save_job(args, job, step)
        bar.update(1)
    bar.close()
    return [Path(args.out) / j["name"] for j in jobs]


if __name__ == "__main__":
    _p = argparse.ArgumentParser(prog="revavatar train align")
    add_arguments(_p)
    run_from_args(_p.parse_args())
