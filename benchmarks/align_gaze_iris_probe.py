"""A second gaze probe: MediaPipe's iris landmark model run on the aligned crop itself.

Usage: python benchmarks/align_gaze_iris_probe.py [--data /tmp/vrface_hf8k] [--limit 80]
       [--models models] [--json OUT]

Needs ``pip install ai-edge-litert`` (the LiteRT interpreter; not a project dependency: only
this benchmark runs a ``.tflite`` file). The model itself ships in the mediapipe wheel
(``mediapipe/modules/iris_landmark/iris_landmark.tflite``).

``revavatar eval align`` reads gaze with Face Mesh (iris refinement) on the crop pasted back into
the true face, so the face around the eye steers the landmarks; this benchmark's Face Mesh column
is that probe as the eval runs it (the mean of 8 sub-pixel copies of each face, ``GazeProbe``),
while its iris-model column reads each patch once. The iris model instead reads a
64 x 64 eye patch only, the way MediaPipe's iris pipeline does: a square of 2.3 eye widths on
the eye corners, rotated level, the wearer's left eye mirrored (the model knows one eye). The
patch is placed from the *ground truth's* corners and is the same for every method of a sample,
so only the crop's content moves the landmarks. Gaze is then :func:`gaze_angles` on the model's
own iris centre and eye corners.

Both probes run on the same samples with the same perturbations of the ground truth (a 1-px
shift, sigma-2 noise, a sigma-1 blur): if the two disagree about what an aligner's error is,
the figure measures the probe; if they agree, and neither resolves much below a degree on
imperceptible changes, the 1-degree target is at the probes' own resolution.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np

from revavatar.core.alignment import enrollment_input
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.gaze import angular_error_deg, gaze_angles
from revavatar.core.landmarks import SCHEMES, EyeLandmarks
from revavatar.learning.data import ReferenceSurfaces, VRFaceIndex, read_image
from revavatar.learning.eval_align import (
    TRUTH_PERTURBATIONS,
    GazeProbe,
    follow_wearer,
    method_aligners,
    paste_into_face,
    perturbed_truth,
    spread_samples,
)
from revavatar.learning.trainer import progress

ROOT = Path(__file__).resolve().parents[1]
_SIDE = {"left_eye": "left", "right_eye": "right"}
#: MediaPipe's iris pipeline: input patch size (px) and patch side in eye widths
_PATCH, _SCALE = 64, 2.3
#: the model's eye-contour indices of the two corners (its first 16 points follow the lid)
_CORNERS = (0, 8)


class IrisModelProbe:
    """(yaw, pitch) of one eye crop from MediaPipe's iris landmark model (LiteRT)."""

    def __init__(self) -> None:
        import mediapipe  # noqa: PLC0415

        try:
            from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
        except ImportError as err:
            msg = "this benchmark needs the LiteRT interpreter: pip install ai-edge-litert"
            raise SystemExit(msg) from err
        path = Path(mediapipe.__file__).parent / "modules/iris_landmark/iris_landmark.tflite"
        self.net = Interpreter(model_path=str(path), num_threads=1)
        self.net.allocate_tensors()
        self.inp = self.net.get_input_details()[0]["index"]
        self.out = [o["index"] for o in self.net.get_output_details()]

    @staticmethod
    def patch_transform(corners: np.ndarray) -> np.ndarray:
        """2x3 affine from patch pixels to crop pixels: a level square on the eye corners."""
        d = corners[1] - corners[0]
        s = float(np.hypot(*d)) * _SCALE / _PATCH
        c, si = d / np.hypot(*d)
        m = np.array([[c * s, -si * s, 0.0], [si * s, c * s, 0.0]])
        m[:, 2] = corners.mean(axis=0) - m[:, :2] @ np.full(2, _PATCH / 2 - 0.5)
        return m

    def __call__(self, crop: np.ndarray, to_crop: np.ndarray, mirror: bool) -> tuple[float, float]:
        rgb = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB if crop.ndim == 2 else cv2.COLOR_BGR2RGB)
        patch = cv2.warpAffine(rgb, to_crop, (_PATCH, _PATCH),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)
        if mirror:
            patch = patch[:, ::-1]
        self.net.set_tensor(self.inp, np.ascontiguousarray(patch, np.float32)[None] / 255.0)
        self.net.invoke()
        lids = self.net.get_tensor(self.out[0]).reshape(-1, 3)[:16, :2].copy()
        iris = self.net.get_tensor(self.out[1]).reshape(-1, 3)[0, :2].copy()
        if mirror:
            lids[:, 0], iris[0] = _PATCH - lids[:, 0], _PATCH - iris[0]
        lids, iris = lids @ to_crop[:, :2].T + to_crop[:, 2], to_crop[:, :2] @ iris + to_crop[:, 2]
        corners = lids[list(_CORNERS)]
        corners = corners[np.argsort(corners[:, 0])]  # image-left corner first
        return gaze_angles(EyeLandmarks("probe", corners, lids[9:16], lids[1:8], iris))


def _perturbations(gt: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The eval's perturbations of the true crop, and a sigma-1 blur."""
    out = {kind: perturbed_truth(gt, kind, rng) for kind in TRUTH_PERTURBATIONS}
    return {**out, "gt_blur_1": cv2.GaussianBlur(gt, (0, 0), 1.0)}


def measure(data: Path, models: Path, limit: int) -> dict[str, dict[str, dict[str, list]]]:
    """{region: {row: {"face_mesh": [deg...], "iris_model": [deg...]}}} on the same samples."""
    index = VRFaceIndex(data)
    layout = CanonicalLayout(index.layout_size)
    entries = spread_samples(index, "test", ("front",), limit)
    calibration = index.calibration()
    mesh_probe, iris_probe, rng = GazeProbe(), IrisModelProbe(), np.random.default_rng(0)
    surfaces = ReferenceSurfaces(layout, mesh_probe.det)
    out: dict[str, dict[str, dict[str, list]]] = {}
    for region, side in _SIDE.items():
        reg = layout.region(region)
        aligners = method_aligners(region, calibration, models, layout)
        planes = {a: getattr(a, "rectifier", None) for a in aligners.values()}
        rows = out.setdefault(region, {})
        for e in progress(len(entries), desc=f"iris probe {region}", unit="sample",
                          iterable=entries):
            frame = cv2.imread(e[region], cv2.IMREAD_UNCHANGED)
            gt = read_image(e[f"gt_{region}"], gray=True)
            face, dp_face = read_image(e["gt"]), read_image(e["reference"])
            corners = np.load(e["landmarks"])[list(SCHEMES["mediapipe478"].eyes[side].corners)]
            to_crop = IrisModelProbe.patch_transform(reg.canonical_to_crop(corners))
            mirror = side == "left"  # the model knows the image-left (wearer's right) eye
            surface = surfaces(e["reference"], aligners["homography"].camera, region)
            follow_wearer(aligners, surface, dp_face, planes)
            crops = _perturbations(gt, rng)
            crops.update({m: a.align(frame) for m, a in {**aligners, "surface": surface}.items()
                          if a is not None})
            crops["dp"] = enrollment_input(crops["homography"], aligners["homography"].valid_mask,
                                           dp_face, layout, region)[1]
            truth_iris = iris_probe(gt, to_crop, mirror)
            truth_mesh = mesh_probe(paste_into_face(face, gt, reg.box_px), side)
            for name, crop in crops.items():
                row = rows.setdefault(name, {"face_mesh": [], "iris_model": []})
                row["iris_model"].append(angular_error_deg(iris_probe(crop, to_crop, mirror),
                                                           truth_iris))
                got = mesh_probe(paste_into_face(face, crop, reg.box_px), side)
                if got is not None and truth_mesh is not None:
                    row["face_mesh"].append(angular_error_deg(got, truth_mesh))
    return out


def main() -> None:
    """Measure and print one row per method: mean gaze error of each probe, both eyes."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("/tmp/vrface_hf8k"))
    ap.add_argument("--models", type=Path, default=ROOT / "models")
    ap.add_argument("--limit", type=int, default=80)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    res = measure(args.data, args.models, args.limit)
    print("| row | Face Mesh in the pasted face: mean / median (deg) "
          "| iris model on the crop: mean / median (deg) | n (both eyes) |")
    print("|---|---|---|---|")
    for name in res["left_eye"]:
        cells = []
        for probe in ("face_mesh", "iris_model"):
            v = np.array([x for r in res.values() for x in r[name][probe]])
            cells.append(f"{v.mean():.2f} / {np.median(v):.2f}")
        n = sum(len(r[name]["iris_model"]) for r in res.values())
        print(f"| {name} | {cells[0]} | {cells[1]} | {n} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
