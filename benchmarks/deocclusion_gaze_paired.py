"""Two de-occluders compared on the gaze they leave, eye by eye (the camera's eye in CycleGAN's crop).

Usage: python benchmarks/deocclusion_gaze_paired.py --candidate DIR [--baseline models/deocclusion]
       [--data /tmp/vrface_hf8k] [--split val] [--limit 300] [--enroll-frames 8] [--models models]
       [--json OUT]

Why a benchmark of its own: ``revavatar eval align --deocclusion`` scores every method of every
region with one de-occluder and keeps means, and on the 80 samples of the issue's protocol a
difference of a few hundredths of a degree between two de-occluders is noise (reports/alignment.md,
ninth and tenth sessions). This reads only the row the de-occluder is chosen for,
``cyclegan+camera_eye`` (and ``surface``), with the same samples, probe, enrollment and wearer
reference as eval align (its figures are eval align's on the same samples), once through each
de-occluder, and prints the paired difference candidate - baseline per eye, with its standard
error over eyes and over identities, on all open eyes and split by whether VR-Face occluded
that eye. Candidates are chosen on ``--split val``; the test split is read once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from revavatar.core.canonical import EYE_SIDES
from revavatar.core.deocclusion import DEOCCLUSION_DIR, OnnxDeoccluder
from revavatar.core.gaze import OPEN_EYE_MIN_ASPECT, angular_error_deg
from revavatar.learning.data import ReferenceSurfaces, VRFaceIndex, enrollment_frames, read_image
from revavatar.learning.eval_align import (
    GazeProbe,
    eye_aspect,
    eye_is_open,
    follow_wearer,
    gaze_face,
    method_aligners,
    paired_difference,
    paste_into_face,
    spread_samples,
    wearer_reference,
)
from revavatar.learning.trainer import progress

ROOT = Path(__file__).resolve().parents[1]
#: the rows read through each de-occluder
ROWS = ("cyclegan+camera_eye", "surface")


def measure(data: Path, models: Path, deoccluders: dict[str, Path], split: str, limit: int,
            enroll_frames: int) -> list[dict]:
    """One record per open eye: sample, region, identity, whether it was occluded, and per
    de-occluder name and row the gaze error (deg)."""
    from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415

    index = VRFaceIndex(data)
    entries = spread_samples(index, split, ("front",), limit)
    enrolled = enrollment_frames(index, split, enroll_frames)
    layout = CanonicalLayout(index.layout_size)
    probe = GazeProbe()
    surfaces = ReferenceSurfaces(layout, probe.det)
    models_by = {name: OnnxDeoccluder(d) for name, d in deoccluders.items()}
    wearers = {name: wearer_reference(m, index, split) for name, m in models_by.items()}
    calibration = index.calibration()
    out = []
    for region, side in EYE_SIDES.items():
        aligners = method_aligners(region, calibration, models, layout)
        if "cyclegan+camera_eye" not in aligners:
            msg = f"{models}: no eye CycleGAN for {region} (the camera eye needs one)"
            raise SystemExit(msg)
        planes = {a: getattr(a, "rectifier", None) for a in aligners.values()}
        box, weight = layout.region(region).box_px, layout.eye_weight(region)
        for e in progress(len(entries), desc=f"gaze {region}", unit="sample", iterable=entries):
            if not eye_is_open(eye_aspect(e, region, layout.size), OPEN_EYE_MIN_ASPECT):
                continue
            gt = read_image(e[f"gt_{region}"], gray=True)
            face = read_image(e["gt"])
            ref = probe(paste_into_face(face, gt, box), side)
            if ref is None:
                continue
            surface = surfaces(enrolled(e), aligners["homography"].camera, region)
            follow_wearer(aligners, surface, read_image(e["reference"]), planes)
            rows = {"cyclegan+camera_eye": aligners["cyclegan+camera_eye"], "surface": surface}
            frame = cv2.imread(e[region], cv2.IMREAD_UNCHANGED)
            errors: dict[str, dict[str, float]] = {}
            for name, model in models_by.items():
                wearers[name](e, region)
                view = model(frame, region)
                errors[name] = {}
                for row, aligner in rows.items():
                    if aligner is None:
                        continue
                    got = probe(gaze_face(face, aligner.align(view), gt, box, weight), side)
                    if got is not None:
                        errors[name][row] = angular_error_deg(got, ref)
            out.append({"region": region, "index": int(e["index"]),
                        "identity": str(e.get("identity", "")),
                        "occluded": any(x["effect"] == "occlusion" and x["camera"] == region
                                        for x in e["effects"]),
                        "errors": errors})
    return out


def compare(records: list[dict], row: str, baseline: str, candidate: str) -> dict:
    """Means per de-occluder and the paired difference candidate - baseline, on all eyes and
    on the occluded / unoccluded ones."""
    res: dict = {}
    for part, keep in (("all", lambda r: True), ("occluded", lambda r: r["occluded"]),
                       ("unoccluded", lambda r: not r["occluded"])):
        both = [r for r in records if keep(r) and all(row in r["errors"][n]
                                                       for n in (baseline, candidate))]
        if len(both) < 2:
            continue
        ours = {k: r["errors"][candidate][row] for k, r in enumerate(both)}
        theirs = {k: r["errors"][baseline][row] for k, r in enumerate(both)}
        res[part] = {"n": len(both), baseline: float(np.mean(list(theirs.values()))),
                     candidate: float(np.mean(list(ours.values()))),
                     "paired": paired_difference(ours, theirs, -1,
                                                 {k: r["identity"] for k, r in enumerate(both)})}
        for side in EYE_SIDES:
            sel = [k for k, r in enumerate(both) if r["region"] == side]
            res[part][f"{side}_means"] = [float(np.mean([theirs[k] for k in sel])),
                                          float(np.mean([ours[k] for k in sel]))] if sel else None
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--candidate", type=Path, required=True, help="a de-occluder folder")
    ap.add_argument("--baseline", type=Path, default=ROOT / "models" / DEOCCLUSION_DIR)
    ap.add_argument("--data", type=Path, default=Path("/tmp/vrface_hf8k"))
    ap.add_argument("--split", default="val", choices=("train", "val", "test"))
    ap.add_argument("--limit", type=int, default=300, help="samples, evenly spread")
    ap.add_argument("--enroll-frames", type=int, default=8)
    ap.add_argument("--models", type=Path, default=ROOT / "models", help="the aligners' folder")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    names = {"baseline": args.baseline, "candidate": args.candidate}
    records = measure(args.data, args.models, names, args.split, args.limit, args.enroll_frames)
    result = {"split": args.split, "limit": args.limit, "enroll_frames": args.enroll_frames,
              "baseline": str(args.baseline), "candidate": str(args.candidate),
              "rows": {row: compare(records, row, "baseline", "candidate") for row in ROWS},
              "records": records}
    print(f"{args.split}, {args.limit} samples: baseline {args.baseline}, candidate "
          f"{args.candidate}")
    for row, parts in result["rows"].items():
        print(f"\n{row}: mean gaze error (deg) baseline -> candidate; paired candidate - baseline "
              "+- s.e. over eyes (over identities)")
        for part, r in parts.items():
            p = r["paired"]
            sides = " ".join(f"{s[0].upper()} {r[f'{s}_means'][0]:.2f} -> {r[f'{s}_means'][1]:.2f}"
                             for s in EYE_SIDES if r.get(f"{s}_means"))
            print(f"  {part:10s} n {r['n']:4d}  {r['baseline']:.2f} -> {r['candidate']:.2f}  "
                  f"({sides})  paired {p['mean']:+.3f} +- {p['se']:.3f} "
                  f"({p['se_identity'] if p['se_identity'] is None else round(p['se_identity'], 3)}"
                  f", {p['identities']} identities)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
