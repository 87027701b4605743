"""What limits the aligners' gaze error: an exact-geometry oracle on the same test samples.

Usage: python benchmarks/align_gaze_floor.py [--data /tmp/vrface_hf8k] [--split test] [--limit 60]
       [--models models] [--json OUT] [--figure PNG] [--gaze-jitter N] [--gaze-paste eye|crop]
       [--gaze-min-aspect A] [--gaze-tone match|raw] [--enroll-frames N] [--deocclusion]
       [--residual-scales 0.25,0.5,0.75] [--residual-figure PNG]

A VR-Face sample is a render of the source frame's own face mesh, so the exact inverse of its
camera geometry is known: :class:`revavatar.core.alignment.SurfaceAligner` on that mesh's
canonical depth. This script measures ``revavatar eval align``'s gaze error (same probe, same
paste into the true face) for:

- ``gt_noise_2``: the ground-truth crop plus sigma-2 noise (the probe's own jitter);
- ``exact_clean`` / ``exact_clean_fill``: the exact inverse (pure surface mapping, no plane
  fallback) of an effect-free render of the sample (no IR look, blur, noise, occlusion, ...),
  with the pixels the camera cannot see left black or filled from the ground truth;
- ``exact_view`` / ``exact_view_fill``: the same inverse of the headset view actually stored
  (with its effects);
- ``dp_surface_view`` / ``_fill``: rectification onto the surface of the sample's enrollment
  image (its DP reference, another frame of the same person: the mesh a product can know), as
  the ``surface`` aligner runs it / the pure surface mapping with the unseen pixels filled;
- ``exact_unoccluded_fill``, ``dp_surface_unoccluded``, ``cyclegan_unoccluded``,
  ``cyclegan+camera_eye_unoccluded``: the oracle de-occluder, each row on the stored view
  replayed without its occlusion effect (:mod:`revavatar.vrface.replay`; views without one as
  stored): what taking the occlusion off perfectly would give;
- ``cyclegan+camera_eye_residual_<a>`` (``--deocclusion --residual-scales``): the camera eye on
  the oracle's view plus ``a`` times the de-occluder's residual against it: the gaze a
  de-occluder that left that share of the present one's residual would give;
- ``plane_view_fill``: the face-plane homography with the unseen pixels filled the same way;
- ``plane_view_dpfill``: the same with what the camera cannot see (its housing included) filled
  from the enrollment crop instead of the truth (``eval align``'s ``homography+dp``);
- ``homography``, ``cyclegan``, ``autoencoder``: the aligners, as evaluated (aligners conditioned
  on the wearer get the sample's DP reference and its surface, as in ``eval align``);
- ``truth_eye_cyclegan_around``: the truth's own eye (``CanonicalLayout.eye_weight``) inside
  CycleGAN's crop: no eye moved, so under ``--gaze-paste crop`` it reads what the probe takes
  from the surroundings alone (under ``eye`` it is the truth up to the feathered rim);
- ``iris_shift_1px``: the truth with its iris disc moved one crop pixel toward image right and
  nothing else; the record's ``expected`` is the angle that move is on the eyeball model (from
  the truth's own landmarks), so measured / expected is the probe's gain for a real eye turn.

The gap between ``exact_clean_fill`` and ``exact_view_fill`` is what the simulated camera effects
cost a perfect-geometry aligner that does nothing else; a learned aligner has to undo them
(and fill what is unseen) to go below. Needs the build's source folder and landmark cache
(``vrface build`` keeps both); front-view samples only.

Where the error comes from (two more tables, and ``--figure``): every sample records the
effects VR-Face applied to that camera and the source frame's head pose, so each row's error is
split by effect present / absent (effects are drawn independently, so the difference is that
effect's cost) and by the head's yaw. Builds made with ``--no-head-fixed`` (and all builds before
2026-12) render each frame's own head turn in front of a fixed headset, which a real headset,
turning with the head, does not see; a row whose error grows with yaw pays for that. On a
head-fixed build the yaw split shows what is left of it.

As in ``eval align``, the tables and the breakdown are over the samples whose true eye is open
(``--gaze-min-aspect``, default :data:`revavatar.core.gaze.OPEN_EYE_MIN_ASPECT`): a shut eye has
no gaze. Every record keeps its ``eye_aspect``, and the shut eyes get a table of their own.
The probe sees each crop in the truth's tone (``--gaze-tone``, as ``eval align``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from revavatar.core.alignment import SurfaceAligner, enrollment_input
from revavatar.core.canonical import EYE_SIDES
from revavatar.core.composite import eye_over
from revavatar.core.deocclusion import DEOCCLUSION_DIR, OnnxDeoccluder
from revavatar.core.gaze import OPEN_EYE_MIN_ASPECT, angular_error_deg
from revavatar.learning.data import ReferenceSurfaces, VRFaceIndex, enrollment_frames, read_image
from revavatar.learning.eval_align import (
    GAZE_JITTER,
    GAZE_PASTES,
    GAZE_TONES,
    GazeProbe,
    eye_aspect,
    eye_is_open,
    follow_wearer,
    gaze_face,
    iris_turn,
    method_aligners,
    paste_into_face,
    perturbed_truth,
    spread_samples,
    wearer_reference,
)
from revavatar.learning.trainer import progress
from revavatar.vrface.renderer import render_depth_orthographic
from revavatar.vrface.replay import SampleReplay, apply_records, jpeg_round_trip

ROOT = Path(__file__).resolve().parents[1]
#: |head yaw| bins (deg) of the breakdown
_YAW_BINS = ((0, 2), (2, 4), (4, 7), (7, 12), (12, 90))
#: rows of the de-occluder's residual scaled (``measure(residual_scales=...)``)
_RESIDUAL = "cyclegan+camera_eye_residual_"
#: rows split by effect and head pose: the oracle without and with effects, the two aligners
_BREAKDOWN_ROWS = ("exact_clean_fill", "exact_view_fill", "homography", "cyclegan")


def _without_occlusion(replay: SampleReplay, entry: dict, region: str, clean: np.ndarray,
                       view: np.ndarray) -> np.ndarray:
    """``view`` replayed from the effect-free render with every recorded effect but the
    occlusion (what a perfect de-occluder would give); a view without one is returned as is."""
    records = replay.records(entry, region)
    if not any(r["effect"] == "occlusion" for r in records):
        return view
    rest = [r for r in records if r["effect"] != "occlusion"]
    return jpeg_round_trip(apply_records(clean, rest), replay.jpeg_quality)


def _fill(crop: np.ndarray, valid: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.where(valid, crop, gt).astype(np.uint8)


def measure(data: Path, models: Path, limit: int, gaze_jitter: int = GAZE_JITTER,
            gaze_paste: str = "eye", gaze_tone: str = "match",
            enroll_frames: int = 1, deocclusion: bool = False, split: str = "test",
            residual_scales: tuple[float, ...] = ()) -> list[dict]:
    """One record per sample and eye the probe could read: its camera's effects, the head pose
    and each row's gaze error (deg); the probe averages ``gaze_jitter`` copies (GazeProbe) and
    sees each crop's ``gaze_paste`` in ``gaze_tone`` (eval align's ``--gaze-paste``,
    ``--gaze-tone``); the enrolled surface is the mean shape of ``enroll_frames`` frames (eval
    align's ``--enroll-frames``); with ``deocclusion`` every row but the clean render reads the
    eye frames through the de-occluder in ``models/deocclusion`` (eval align's
    ``--deocclusion``); ``split`` is the build's split it reads (candidates are compared on
    val, the test split is read once); ``residual_scales``: with ``deocclusion``, rows
    ``cyclegan+camera_eye_residual_<a>`` of the de-occluded view's residual against the view
    replayed without its occlusion scaled by each ``a`` (0 is the oracle row, 1 the de-occluder):
    how far a better de-occluder would take the gaze."""
    deoccluder = OnnxDeoccluder(models / DEOCCLUSION_DIR) if deocclusion else None
    index = VRFaceIndex(data)
    replay = SampleReplay(index)
    layout = replay.layout
    entries = spread_samples(index, split, ("front",), limit)
    enrolled = enrollment_frames(index, split, enroll_frames)
    in_headset = wearer_reference(deoccluder, index, split)
    calibration = index.calibration()
    aligners = {r: method_aligners(r, calibration, models, layout) for r in EYE_SIDES}
    planes = {a: getattr(a, "rectifier", None) for r in EYE_SIDES for a in aligners[r].values()}
    renderer = replay.renderer
    probe, rng = GazeProbe(gaze_jitter), np.random.default_rng(0)
    surfaces = ReferenceSurfaces(layout, probe.det)  # the enrollment faces, as eval align
    eyes = {r: layout.eye_weight(r) for r in EYE_SIDES}
    weights = {r: eyes[r] if gaze_paste == "eye" else None for r in EYE_SIDES}
    out: list[dict] = []
    for e in progress(len(entries), desc="gaze floor", unit="sample", iterable=entries):
        got = replay.truth(e)
        if got is None:
            continue
        frame, mesh = got[0], got[1].mesh  # the mesh the build rendered
        depth, _ = render_depth_orthographic(mesh, layout)
        clean = renderer.render(frame, mesh, view="front")
        face, dp_face = read_image(e["gt"]), read_image(e["reference"])
        dp_depth = surfaces.depth(enrolled(e))
        for region, side in EYE_SIDES.items():
            box = layout.region(region).box_px
            gt = read_image(e[f"gt_{region}"], gray=True)
            ref = probe(paste_into_face(face, gt, box), side)
            if ref is None:
                continue
            stored = view = cv2.imread(e[region], cv2.IMREAD_UNCHANGED)
            if deoccluder is not None:
                in_headset(e, region)
                view = deoccluder(view, region)
            exact = SurfaceAligner(renderer.camera("front", region), layout.region(region), layout,
                                   depth, plane_fallback=False)
            crops = {"gt_noise_2": perturbed_truth(gt, "gt_noise_2", rng)}
            for name, img in (("clean", clean[region]), ("view", view)):
                c = exact.align(img)
                crops[f"exact_{name}"] = c
                crops[f"exact_{name}_fill"] = _fill(c, exact.valid_mask, gt)
            if dp_depth is not None:
                crops["dp_surface_view"] = surfaces(enrolled(e), exact.camera,
                                                    region).align(view)  # as the aligner runs
                pure = SurfaceAligner(exact.camera, exact.region, layout, dp_depth,
                                      plane_fallback=False)
                crops["dp_surface_view_fill"] = _fill(pure.align(view), pure.valid_mask, gt)
            follow_wearer(aligners[region], surfaces(enrolled(e), exact.camera, region),
                          dp_face, planes)
            crops.update({m: a.align(view) for m, a in aligners[region].items()})
            # the oracle de-occluder: the same view replayed without its occlusion
            bare = _without_occlusion(replay, e, region, clean[region], stored)
            crops["exact_unoccluded_fill"] = _fill(exact.align(bare), exact.valid_mask, gt)
            crops.update({f"{m}_unoccluded": aligners[region][m].align(bare)
                          for m in ("cyclegan", "cyclegan+camera_eye") if m in aligners[region]})
            if dp_depth is not None:
                crops["dp_surface_unoccluded"] = surfaces(enrolled(e), exact.camera,
                                                          region).align(bare)
            camera_eye = aligners[region].get("cyclegan+camera_eye")
            for a in residual_scales if deoccluder is not None and camera_eye else ():
                mixed = bare.astype(np.float32) + a * (view.astype(np.float32) - bare)
                crops[f"{_RESIDUAL}{a:g}"] = camera_eye.align(
                    np.clip(np.rint(mixed), 0, 255).astype(np.uint8))
            plane = aligners[region]["homography"]
            crops["plane_view_fill"] = _fill(crops["homography"], plane.valid_mask, gt)
            if "cyclegan" in crops:
                crops["truth_eye_cyclegan_around"] = eye_over(gt, crops["cyclegan"], eyes[region])
            turn = iris_turn(probe, face, gt, layout, region)
            if turn is not None:
                crops["iris_shift_1px"] = turn[0]
            crops["plane_view_dpfill"] = enrollment_input(crops["homography"], plane.valid_mask,
                                                          dp_face, layout, region)[0]
            errors = {}
            for name, crop in crops.items():
                got = probe(gaze_face(face, crop, gt, box, weights[region], gaze_tone), side)
                if got is not None:
                    errors[name] = angular_error_deg(got, ref)
            out.append({"region": region, "index": e["index"], "head_pose": e["head_pose"],
                        "eye_aspect": eye_aspect(e, region, layout.size),
                        "effects": sorted(x["effect"] for x in e["effects"]
                                          if x["camera"] == region),
                        "errors": errors,
                        "expected": {} if turn is None else {"iris_shift_1px": turn[1]}})
    return out


def _median(samples: list[dict], row: str) -> tuple[float, int]:
    vals = [s["errors"][row] for s in samples if row in s["errors"]]
    return (float(np.median(vals)) if vals else float("nan")), len(vals)


def breakdown(samples: list[dict], rows: tuple[str, ...]) -> dict[str, dict[str, list]]:
    """Median error (a few failures of tens of degrees would swamp a mean) of each row on the
    samples with / without each effect, and per |yaw| bin: {"rows": rows, "effects": {effect:
    [[with, n], [without, n]] per row}, "yaw": {bin: [[median, n] per row]}}."""
    names = sorted({n for s in samples for n in s["effects"]})
    effects = {n: [[_median([s for s in samples if (n in s["effects"]) == has], r)
                    for has in (True, False)] for r in rows] for n in names}
    yaw = {}
    for lo, hi in _YAW_BINS:
        sel = [s for s in samples if lo <= abs(s["head_pose"][0]) < hi]
        yaw[f"{lo:g}-{hi:g}"] = [list(_median(sel, r)) for r in rows]
    return {"rows": list(rows), "effects": effects, "yaw": yaw}


def _print_breakdown(b: dict) -> None:
    head = " / ".join(b["rows"])
    print(f"\n| effect on the camera (median deg) | with: {head} | without: {head} "
          "| n with / without |")
    print("|---|---|---|---|")
    for name, per_row in b["effects"].items():
        w = " / ".join(f"{m[0][0]:.2f}" for m in per_row)
        wo = " / ".join(f"{m[1][0]:.2f}" for m in per_row)
        print(f"| {name} | {w} | {wo} | {per_row[0][0][1]} / {per_row[0][1][1]} |")
    print(f"\n| head yaw (deg) | median deg: {head} | n |")
    print("|---|---|---|")
    for span, per_row in b["yaw"].items():
        print(f"| {span} | {' / '.join(f'{m[0]:.2f}' for m in per_row)} | {per_row[0][1]} |")


def residual_curve(samples: list[dict]) -> list[tuple[float, float, float, float]]:
    """(scale, mean gaze error on all, unoccluded and occluded eyes) per residual scale: the
    de-occluded row at 1, the oracle at 0, the scaled rows between."""
    rows = {1.0: "cyclegan+camera_eye", 0.0: "cyclegan+camera_eye_unoccluded"}
    rows |= {float(k.removeprefix(_RESIDUAL)): k for s in samples for k in s["errors"]
             if k.startswith(_RESIDUAL)}
    curve = []
    for a, row in sorted(rows.items(), reverse=True):
        got = [(s["errors"][row], "occlusion" in s["effects"]) for s in samples
               if row in s["errors"]]
        if not got:
            continue
        err, occ = (np.array(c) for c in zip(*got, strict=True))
        curve.append((a, float(err.mean()), float(err[~occ].mean()) if (~occ).any() else np.nan,
                      float(err[occ].mean()) if occ.any() else np.nan))
    return curve


def plot_residual_curve(curve: list[tuple[float, float, float, float]], n: tuple[int, int],
                        out: Path, title: str) -> None:
    """Gaze error against the share of the de-occluder's residual left."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    c = np.array(curve)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for j, (label, style) in enumerate((
            (f"all open eyes ({sum(n)})", "k-o"), (f"unoccluded ({n[0]})", "b--s"),
            (f"occluded ({n[1]})", "r--^")), 1):
        ax.plot(c[:, 0], c[:, j], style, label=label)
    ax.axhline(1.0, color="gray", lw=0.8, ls=":")
    ax.set(xlabel="share of the de-occluder's residual left", ylabel="gaze error, camera eye (deg)",
           title=title)
    ax.title.set_fontsize(10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_breakdown(samples: list[dict], b: dict, out: Path) -> None:
    """Error against |head yaw| per row, and each effect's cost (with minus without)."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in b["rows"]:
        pts = np.array([(abs(s["head_pose"][0]), s["errors"][r]) for s in samples
                        if r in s["errors"]])
        ax0.scatter(pts[:, 0], pts[:, 1], s=9, alpha=0.6, label=r)
    top = 35.0
    beyond = sum(s["errors"].get(r, 0.0) > top for s in samples for r in b["rows"])
    ax0.set_ylim(0, top)
    ax0.set(xlabel="|head yaw| of the source frame (deg)", ylabel="gaze error (deg)",
            title=f"gaze error vs head turn ({len(samples)} open eyes; {beyond} above {top:g} "
                  "not shown)")
    ax0.legend(fontsize=8)
    names = list(b["effects"])
    width = 0.8 / len(b["rows"])
    for k, r in enumerate(b["rows"]):
        cost = [b["effects"][n][k][0][0] - b["effects"][n][k][1][0] for n in names]
        ax1.bar(np.arange(len(names)) + k * width, cost, width, label=r)
    ax1.axhline(0, color="k", lw=0.6)
    ax1.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=30, ha="right")
    ax1.set(ylabel="median error with - without (deg)", title="cost of each VR-Face effect")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _print_rows(samples: list[dict]) -> None:
    print("| row | gaze err mean (deg) | median | p95 | n (both eyes) |")
    print("|---|---|---|---|---|")
    for name in dict.fromkeys(r for s in samples for r in s["errors"]):
        vals = np.array([s["errors"][name] for s in samples if name in s["errors"]])
        print(f"| {name} | {vals.mean():.2f} | {np.median(vals):.2f} | "
              f"{np.percentile(vals, 95):.2f} | {len(vals)} |")


def is_open(sample: dict, min_aspect: float) -> bool:
    """Whether a record's true eye is open (``eval_align.eye_is_open`` of its aspect ratio)."""
    return eye_is_open(sample.get("eye_aspect"), min_aspect)


def main() -> None:
    """Measure and print one table row per method (mean, median, p95 over both eyes)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/vrface_hf8k"))
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--figure", type=Path, default=None, help="breakdown plot (PNG)")
    ap.add_argument("--gaze-jitter", type=int, default=GAZE_JITTER,
                    help="copies the gaze probe averages over (eval align --gaze-jitter)")
    ap.add_argument("--gaze-paste", default="eye", choices=GAZE_PASTES,
                    help="what of each crop the probe sees (eval align --gaze-paste)")
    ap.add_argument("--gaze-min-aspect", type=float, default=OPEN_EYE_MIN_ASPECT,
                    help="true-eye aspect ratio from which an eye is open (eval align "
                         "--gaze-min-aspect; 0 = every eye)")
    ap.add_argument("--gaze-tone", default="match", choices=GAZE_TONES,
                    help="the crop's tone as the probe sees it (eval align --gaze-tone)")
    ap.add_argument("--enroll-frames", type=int, default=1,
                    help="the enrolled surface's frames (eval align --enroll-frames)")
    ap.add_argument("--deocclusion", action="store_true",
                    help="read the eye frames through the de-occluder (eval align "
                         "--deocclusion)")
    ap.add_argument("--residual-scales", default="",
                    help="with --deocclusion, comma-separated shares (e.g. 0.25,0.5,0.75) of the "
                         "de-occluder's residual to measure the camera eye at")
    ap.add_argument("--residual-figure", type=Path, default=None,
                    help="plot of the camera eye's gaze error against that share (PNG)")
    args = ap.parse_args()
    scales = tuple(float(a) for a in args.residual_scales.split(",") if a.strip())
    if scales and not args.deocclusion:
        ap.error("--residual-scales scales the de-occluder's residual: it needs --deocclusion")
    measured = measure(args.data, args.models, args.limit, args.gaze_jitter, args.gaze_paste,
                       args.gaze_tone, args.enroll_frames, args.deocclusion, args.split, scales)
    samples = [s for s in measured if is_open(s, args.gaze_min_aspect)]
    shut = [s for s in measured if not is_open(s, args.gaze_min_aspect)]
    print(f"open true eyes (aspect >= {args.gaze_min_aspect:g}): {len(samples)}, shut: {len(shut)}")
    _print_rows(samples)
    if shut:
        print("\nshut true eyes (no gaze to keep; what the probe reads there):")
        _print_rows(shut)
    pairs = [(s["errors"]["iris_shift_1px"], s["expected"]["iris_shift_1px"]) for s in samples
             if "iris_shift_1px" in s["errors"] and "iris_shift_1px" in s["expected"]]
    if pairs:
        got, want = np.mean(pairs, axis=0)
        print(f"\nprobe gain for a real eye turn (iris_shift_1px): {got:.2f} deg measured / "
              f"{want:.2f} deg on the eyeball model = {got / want:.2f} (n {len(pairs)})")
    rows = tuple(r for r in _BREAKDOWN_ROWS if any(r in s["errors"] for s in samples))
    split = breakdown(samples, rows)
    _print_breakdown(split)
    if args.figure:
        plot_breakdown(samples, split, args.figure)
    curve = residual_curve(samples) if scales else []
    if curve:
        print("\ncamera eye against the share of the de-occluder's residual left "
              "(mean deg: all / unoccluded / occluded):")
        for a, *means in curve:
            print(f"  {a:4g}: " + " / ".join(f"{m:.2f}" for m in means))
        if args.residual_figure:
            occ = sum("occlusion" in s["effects"] for s in samples)
            plot_residual_curve(curve, (len(samples) - occ, occ), args.residual_figure,
                                f"gaze vs de-occlusion residual ({args.split})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {"gaze_paste": args.gaze_paste, "gaze_min_aspect": args.gaze_min_aspect,
                  "gaze_tone": args.gaze_tone, "enroll_frames": args.enroll_frames,
                  "deocclusion": args.deocclusion, "split": args.split,
                  "residual_scales": list(scales),
                  "samples": measured, "breakdown": split}
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
