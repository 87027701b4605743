"""``revavatar eval restore``: every restorer on the same test composites, one run (Tables 3/6).

Each test sample gives one composite (its ground-truth crops degraded like an aligner's output,
pasted onto the sample's reference as the DP; :mod:`revavatar.learning.restoration_data`), and
every method restores that same input: ``dp_only`` (show the DP), ``paste``, ``poisson``, and the
learned models ``cyclegan``, ``ours_no_ref``, ``ours_concat``, ``ours_no_lpips``, ``ours`` run
through onnxruntime from ``models/restore_<name>`` exactly as the restoration node runs them. A
learned method without an exported model is reported with ``"missing"`` and null figures.

Figures: SSIM/PSNR (:mod:`revavatar.core.metrics`) and LPIPS-alex on the full face and the eye
band; ``identity``: cosine similarity of dlib's 128-D face embeddings (ResNet of
face_recognition_models) of output and ground truth, null when dlib is not installed; ``ms``:
mean wall time of the method's restore per frame (composite included, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch

from revavatar.core.canonical import CanonicalLayout
from revavatar.core.metrics import region_metrics
from revavatar.core.onnx_restorer import OnnxRestorer
from revavatar.core.restoration import poisson_blend
from revavatar.learning.restoration_data import RestorationTriples, build_composite
from revavatar.learning.trainer import progress

__all__ = ["METHODS", "IdentityEmbedder", "add_arguments", "evaluate", "markdown_table",
           "run_from_args"]

#: every method of the table, in table order
METHODS: Final = ("dp_only", "paste", "poisson", "cyclegan", "ours_no_ref", "ours_concat",
                  "ours_no_lpips", "ours")
_LEARNED: Final = METHODS[3:]
_DLIB_NET: Final = "dlib_face_recognition_resnet_model_v1.dat"
_DLIB_SHAPE: Final = "shape_predictor_5_face_landmarks.dat"


class IdentityEmbedder:
    """dlib face embedding (128-D ResNet) of an aligned canonical face; unavailable -> None."""

    def __init__(self, layout: CanonicalLayout) -> None:
        import importlib.util  # noqa: PLC0415

        spec = importlib.util.find_spec("face_recognition_models")
        try:
            import dlib  # noqa: PLC0415
        except ImportError:
            spec = None
        # the package's own locator needs pkg_resources (setuptools); read its data dir directly
        root = Path(next(iter(spec.submodule_search_locations))) / "models" if spec else None
        self.ok = root is not None and (root / _DLIB_NET).is_file()
        if not self.ok:
            return
        self.net = dlib.face_recognition_model_v1(str(root / _DLIB_NET))
        self.shape = dlib.shape_predictor(str(root / _DLIB_SHAPE))
        s = layout.size  # the canonical face box: cheeks to chin, brows included
        self.rect = dlib.rectangle(round(0.14 * s), round(0.2 * s), round(0.86 * s), round(0.92 * s))

    def embed(self, bgr: np.ndarray) -> np.ndarray:
        """(128,) unit embedding."""
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        v = np.asarray(self.net.compute_face_descriptor(rgb, self.shape(rgb, self.rect)))
        return v / (np.linalg.norm(v) + 1e-12)


def _lpips_pair(lp: torch.nn.Module, a: np.ndarray, b: np.ndarray) -> float:
    t = [torch.from_numpy(np.ascontiguousarray(im[:, :, ::-1].transpose(2, 0, 1))).float()[None]
         / 127.5 - 1.0 for im in (a, b)]
    with torch.no_grad():
        return float(lp(t[0], t[1]).mean())


def _learned(models: Path, layout: CanonicalLayout, dp: np.ndarray) -> dict[str, OnnxRestorer]:
    dummy = type("P", (), {"dp": dp})()
    return {m: OnnxRestorer(dummy, layout, models / f"restore_{m}")
            for m in _LEARNED if (models / f"restore_{m}" / "model.onnx").is_file()}


def evaluate(data: Path, models: Path, limit: int | None = None, split: str = "test",
             keep: int = 0) -> tuple[dict[str, Any], list[dict[str, np.ndarray]]]:
    """Run every method on ``split``; returns (the JSON report, the first ``keep`` outputs)."""
    from revavatar.learning.lpips_weights import load_lpips  # noqa: PLC0415

    torch.set_num_threads(2)
    ds = RestorationTriples(data, split, train=False, limit=limit)
    layout, lp = ds.layout, load_lpips("alex", allow_fetch=False)
    ident = IdentityEmbedder(layout)
    box = layout.region("eye_band").box_px
    learned = _learned(models, layout, ds.images(0)["z"])
    sums: dict[str, dict[str, list[float]]] = {m: {} for m in METHODS}
    shown: list[dict[str, np.ndarray]] = []
    for i in progress(len(ds), desc="eval restore", unit="sample", iterable=range(len(ds))):
        im = ds.images(i)
        x, z, y = im["x"], im["z"], im["y"]
        emb_gt = ident.embed(y) if ident.ok else None
        outs: dict[str, np.ndarray] = {}
        for m in METHODS:
            t0 = time.perf_counter()
            if m == "dp_only":
                out = z
            elif m == "paste":
                out = build_composite(z, im["crops"], layout)
            elif m == "poisson":
                out = poisson_blend(z, build_composite(z, im["crops"], layout),
                                    _mask(im["crops"], layout))
            elif m in learned:
                learned[m].set_dp(z)
                out = learned[m].restore(im["crops"])
            else:
                continue
            ms = (time.perf_counter() - t0) * 1e3
            r = region_metrics(out, y, layout)
            x0, y0, x1, y1 = box
            vals = {"full.ssim": r["full"]["ssim"], "full.psnr": r["full"]["psnr"],
                    "eye.ssim": r["eye"]["ssim"], "eye.psnr": r["eye"]["psnr"],
                    "full.lpips": _lpips_pair(lp, out, y),
                    "eye.lpips": _lpips_pair(lp, out[y0:y1, x0:x1], y[y0:y1, x0:x1]), "ms": ms}
            if emb_gt is not None:
                vals["identity"] = float(ident.embed(out) @ emb_gt)
            for k, v in vals.items():
                sums[m].setdefault(k, []).append(v)
            outs[m] = out
        if i < keep:
            shown.append({"x": x, "z": z, "y": y, **outs})
    report: dict[str, Any] = {"n": len(ds), "methods": {}}
    for m in METHODS:
        s = {k: float(np.mean(v)) for k, v in sums[m].items()}
        if not s:
            report["methods"][m] = {"full": None, "eye": None, "identity": None, "ms": None,
                                    "missing": f"no trained model in {models}/restore_{m}"}
            continue
        report["methods"][m] = {
            "full": {k: s[f"full.{k}"] for k in ("ssim", "psnr", "lpips")},
            "eye": {k: s[f"eye.{k}"] for k in ("ssim", "psnr", "lpips")},
            "identity": s.get("identity"), "ms": s["ms"]}
    return report, shown


def markdown_table(report: dict[str, Any]) -> str:
    """The report as the Markdown table of reports/restoration.md (best figure per column bold)."""
    cols = [("full", "ssim", max), ("full", "psnr", max), ("full", "lpips", min),
            ("eye", "ssim", max), ("eye", "psnr", max), ("eye", "lpips", min)]
    ran = {m: r for m, r in report["methods"].items() if r.get("full")}
    best = {(g, k): pick(ran[m][g][k] for m in ran) for g, k, pick in cols} if ran else {}
    lines = ["| method | full SSIM | full PSNR | full LPIPS | eye SSIM | eye PSNR | eye LPIPS "
             "| identity | ms |", "|---" * 9 + "|"]
    for m, r in report["methods"].items():
        if m not in ran:
            lines.append(f"| {m} | {r.get('missing', 'not run')} |" + " |" * 7)
            continue
        cells = []
        for g, k, _ in cols:
            v = r[g][k]
            txt = f"{v:.2f}" if k == "psnr" else f"{v:.4f}"
            cells.append(f"**{txt}**" if v == best[(g, k)] else txt)
        ident = "-" if r.get("identity") is None else f"{r['identity']:.3f}"
        lines.append(f"| {m} | {' | '.join(cells)} | {ident} | {r['ms']:.1f} |")
    return "\n".join(lines) + "\n"


def _write_grid(path: Path, shown: list[dict[str, np.ndarray]]) -> None:
    """One row per sample: composite input, the methods that ran, ground truth (labelled)."""
    import cv2  # noqa: PLC0415

    cols = ["x"] + [m for m in METHODS if shown and m in shown[0]] + ["y"]
    names = {"x": "composite (input)", "y": "ground truth", "dp_only": "DP (reference)"}
    rows = [np.hstack([cv2.resize(s[c], (192, 192)) for c in cols]) for s in shown]
    bar = np.full((24, 192 * len(cols), 3), 255, np.uint8)
    for k, c in enumerate(cols):
        cv2.putText(bar, names.get(c, c), (k * 192 + 4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.vstack([bar, *rows]), [cv2.IMWRITE_JPEG_QUALITY, 88])


def _mask(crops: dict[str, np.ndarray], layout: CanonicalLayout) -> np.ndarray:
    mask = np.zeros((layout.size, layout.size), np.uint8)
    for name in crops:
        x0, y0, x1, y1 = layout.region(name).box_px
        mask[y0:y1, x0:x1] = 255
    return mask


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``revavatar eval restore``."""
    parser.add_argument("--data", required=True, type=Path, help="VR-Face build folder")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--limit", type=int, default=None, help="first N samples of the split")
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the table as Markdown here")
    parser.add_argument("--figure", type=Path, default=None,
                        help="qualitative grid (JPEG/PNG): composite, DP, methods, truth")


def run_from_args(args: argparse.Namespace) -> int:
    """CLI entry point: print (and optionally write) the JSON report."""
    report, shown = evaluate(args.data, args.models, args.limit, args.split,
                             keep=6 if args.figure else 0)
    if args.figure is not None:
        _write_grid(args.figure, shown)
    text = json.dumps(report, indent=1)
    if args.markdown is not None:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(markdown_table(report))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m revavatar.learning.eval_restore``."""
    parser = argparse.ArgumentParser(prog="revavatar eval restore")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
