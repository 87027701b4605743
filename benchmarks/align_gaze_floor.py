"""What limits the aligners' gaze error: an exact-geometry oracle on the same test samples.

Usage: python benchmarks/align_gaze_floor.py [--data /tmp/vrface_front8k] [--limit 60]
       [--models models] [--json OUT]

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
- ``plane_view_fill``: the face-plane homography with the unseen pixels filled the same way;
- ``plane_view_dpfill``: the same with what the camera cannot see (its housing included) filled
  from the enrollment crop instead of the truth (``eval align``'s ``homography+dp``);
- ``homography``, ``cyclegan``, ``autoencoder``: the aligners, as evaluated (aligners conditioned
  on the wearer get the sample's DP reference and its surface, as in ``eval align``).

The gap between ``exact_clean_fill`` and ``exact_view_fill`` is what the simulated camera effects
cost a perfect-geometry aligner that does nothing else; a learned aligner has to undo them
(and fill what is unseen) to go below. Needs the build's source folder and landmark cache
(``vrface build`` keeps both); front-view samples only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from revavatar.core.alignment import SurfaceAligner, enrollment_input
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.gaze import angular_error_deg
from revavatar.learning.data import ReferenceSurfaces, VRFaceIndex, read_image
from revavatar.learning.eval_align import (
    GazeProbe,
    follow_wearer,
    method_aligners,
    paste_into_face,
)
from revavatar.learning.trainer import progress
from revavatar.vrface.mesh import FaceMesh
from revavatar.vrface.renderer import HeadsetRenderer, render_depth_orthographic
from revavatar.vrface.sources import LandmarkCache, SourceFile, iter_frames, scan_sources

ROOT = Path(__file__).resolve().parents[1]
_SIDE = {"left_eye": "left", "right_eye": "right"}


def _source_folder(index: VRFaceIndex) -> Path:
    src = Path(index.meta["config"]["src"])
    for cand in (src, ROOT / src, index.root / src):
        if (cand / "MANIFEST.csv").is_file() or cand.is_dir():
            return cand.resolve()
    msg = f"source folder {src} of {index.root} not found"
    raise SystemExit(msg)


def _landmarks(cache: LandmarkCache, src: SourceFile, frame: int):  # noqa: ANN202
    """The build's own detection of ``frame`` (cache keyed by file stat; else by file stem)."""
    dets = cache.load(src)
    if dets is None:  # the source was touched since the build: same name, same detections
        hits = sorted(cache.dir.glob(f"{src.path.stem}-*.npz"))
        if len(hits) != 1:
            return None
        dets = cache.load(src, hits[0])
    k = np.nonzero(dets.frames == frame)[0] if dets is not None else []
    return dets.landmarks(int(k[0])) if len(k) else None


def _fill(crop: np.ndarray, valid: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.where(valid, crop, gt).astype(np.uint8)


def measure(data: Path, models: Path, limit: int) -> dict[str, dict[str, list[float]]]:
    """Per region and row, the gaze errors (deg) of every sample the probe could read."""
    index = VRFaceIndex(data)
    layout = CanonicalLayout(index.layout_size)
    files = {s.rel: s for s in scan_sources(_source_folder(index))}
    cache = LandmarkCache(index.root / "cache", index.meta["config"].get("backend", "mediapipe"))
    entries = [e for e in index.samples("test") if e.get("view") == "front"]
    entries = [entries[int(i)] for i in np.linspace(0, len(entries) - 1, min(limit, len(entries)))]
    calibration = index.calibration()
    aligners = {r: method_aligners(r, calibration, models, layout) for r in _SIDE}
    planes = {a: getattr(a, "rectifier", None) for r in _SIDE for a in aligners[r].values()}
    renderer = HeadsetRenderer(calibration, layout)
    probe, rng = GazeProbe(), np.random.default_rng(0)
    surfaces = ReferenceSurfaces(layout, probe.det)  # the enrollment faces, as eval align
    out: dict[str, dict[str, list[float]]] = {r: {} for r in _SIDE}
    for e in progress(len(entries), desc="gaze floor", unit="sample", iterable=entries):
        src = files[e["source"]["file"]]
        lm = _landmarks(cache, src, int(e["source"]["frame"]))
        if lm is None:
            continue
        frame = next(iter_frames(src, [int(e["source"]["frame"])]))[1]
        mesh = FaceMesh.from_landmarks(lm, layout)
        depth, _ = render_depth_orthographic(mesh, layout)
        clean = renderer.render(frame, mesh, view="front")
        face, dp_face = read_image(e["gt"]), read_image(e["reference"])
        dp_depth = surfaces.depth(e["reference"])
        for region, side in _SIDE.items():
            box = layout.region(region).box_px
            gt = read_image(e[f"gt_{region}"], gray=True)
            ref = probe(paste_into_face(face, gt, box), side)
            if ref is None:
                continue
            view = cv2.imread(e[region], cv2.IMREAD_UNCHANGED)
            exact = SurfaceAligner(renderer.camera("front", region), layout.region(region), layout,
                                   depth, plane_fallback=False)
            noisy = np.clip(gt + rng.normal(0, 2, gt.shape), 0, 255).astype(np.uint8)
            crops = {"gt_noise_2": noisy}
            for name, img in (("clean", clean[region]), ("view", view)):
                c = exact.align(img)
                crops[f"exact_{name}"] = c
                crops[f"exact_{name}_fill"] = _fill(c, exact.valid_mask, gt)
            if dp_depth is not None:
                crops["dp_surface_view"] = surfaces(e["reference"], exact.camera,
                                                    region).align(view)  # as the aligner runs
                pure = SurfaceAligner(exact.camera, exact.region, layout, dp_depth,
                                      plane_fallback=False)
                crops["dp_surface_view_fill"] = _fill(pure.align(view), pure.valid_mask, gt)
            follow_wearer(aligners[region], surfaces(e["reference"], exact.camera, region),
                          dp_face, planes)
            crops.update({m: a.align(view) for m, a in aligners[region].items()})
            plane = aligners[region]["homography"]
            crops["plane_view_fill"] = _fill(crops["homography"], plane.valid_mask, gt)
            crops["plane_view_dpfill"] = enrollment_input(crops["homography"], plane.valid_mask,
                                                          dp_face, layout, region)[0]
            for name, crop in crops.items():
                got = probe(paste_into_face(face, crop, box), side)
                if got is not None:
                    out[region].setdefault(name, []).append(angular_error_deg(got, ref))
    return out


def main() -> None:
    """Measure and print one table row per method (mean, median, p95 over both eyes)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/vrface_front8k"))
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res = measure(args.data, args.models, args.limit)
    print("| row | gaze err mean (deg) | median | p95 | n (both eyes) |")
    print("|---|---|---|---|---|")
    for name in res["left_eye"]:
        vals = np.array([v for r in res.values() for v in r.get(name, [])])
        print(f"| {name} | {vals.mean():.2f} | {np.median(vals):.2f} | "
              f"{np.percentile(vals, 95):.2f} | {len(vals)} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
