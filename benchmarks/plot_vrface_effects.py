"""Picture of every VR-Face headset effect: one row per effect, before | after, on an eye view.

The eye view is a render of frame 10 of the demo clip through the headset profile's left-eye
camera (front view). It is rendered in colour (the camera's infrared flag cleared) so the
``ir_look`` row shows the colour -> IR conversion; the other rows start from the IR-looking view,
as in a data set. Parameters are fixed, mid-range values (printed on each row) rather than random
draws, so the picture shows what each knob does; the eyebrow band comes from the camera geometry
(``effects.eyebrow_band``).

    python benchmarks/plot_vrface_effects.py [--headset calibration/generic.yaml]
        [--out reports/vrface/effects.png]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import cv2
import numpy as np

from revavatar.assets import fetch_demo_video
from revavatar.core.calibration import load_calibration
from revavatar.core.canonical import CanonicalLayout
from revavatar.core.landmarks import create_detector
from revavatar.vrface import effects as fx
from revavatar.vrface.mesh import FaceMesh
from revavatar.vrface.renderer import HeadsetRenderer

ROOT = Path(__file__).resolve().parents[1]
TILE = (200, 150)  # (w, h) of each tile in the picture
LABEL_W = 230
MAX_BYTES = 400_000


def _frame(index: int = 10) -> np.ndarray:
    cap = cv2.VideoCapture(str(fetch_demo_video()))
    frame = None
    for _ in range(index + 1):
        ok, frame = cap.read()
        if not ok:
            break
    cap.release()
    if frame is None:
        msg = "demo clip did not decode"
        raise SystemExit(msg)
    return frame


def _eye_view(headset: Path) -> tuple[np.ndarray, tuple[float, float]]:
    frame = _frame()
    det = create_detector("mediapipe")
    lm = det.detect(frame)
    if lm is None:
        msg = "no face in the demo frame"
        raise SystemExit(msg)
    layout = CanonicalLayout(256)
    calib = load_calibration(headset)
    cam = dataclasses.replace(calib.cameras["left_eye"], infrared=False)
    calib = dataclasses.replace(calib, cameras={"left_eye": cam})
    mesh = FaceMesh.from_landmarks(lm, layout)
    view = HeadsetRenderer(calib, layout, views={"front": (0.0, 0.0, 0.0)}).render(frame, mesh)["left_eye"]
    band = fx.eyebrow_band(cam, layout, "left_eye") or (0.0, 0.3)
    return view, band


def _params(band: tuple[float, float]) -> dict[str, fx._Params]:
    return {
        "lens_distortion": fx.LensDistortionParams(k1=0.25, k2=0.02),
        "ir_look": fx.IRLookParams(red_weight=0.7, saturation=0.0, brightness=1.0, contrast=1.25),
        "lighting": fx.LightingParams(gain=1.1, gamma=1.2, gradient=0.4, angle=30.0),
        "eyebrow_reduction": fx.EyebrowParams(y0=band[0], y1=band[1], strength=0.8, darken=0.3, feather=0.05),
        "occlusion": fx.OcclusionParams(n_blobs=2, size=0.12, darkness=0.8, smudge=0.6),
        "blur": fx.BlurParams(kind="motion", radius=4.0, angle=20.0),
        "vignetting": fx.VignetteParams(strength=0.7, radius=0.3, power=2.0),
        "headset_mask": fx.HeadsetMaskParams(margin=0.05, corner_radius=0.35, softness=6.0, level=6.0),
        "sensor_noise": fx.NoiseParams(full_well=250.0, read_sigma=3.0),
    }


def _label(text_lines: list[str], width: int = LABEL_W) -> np.ndarray:
    tile = np.full((TILE[1], width, 3), 255, np.uint8)
    for i, line in enumerate(text_lines):
        scale, thick = (0.6, 2) if i == 0 else (0.4, 1)
        cv2.putText(
            tile, line, (6, 24 + 19 * i), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA
        )
    return tile


def _bgr(img: np.ndarray) -> np.ndarray:
    img = cv2.resize(img, TILE, interpolation=cv2.INTER_AREA)
    return img if img.ndim == 3 else cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)


def build_sheet(headset: Path) -> np.ndarray:
    """The before/after sheet as one BGR image."""
    colour, band = _eye_view(headset)
    ir = fx.ir_look(colour, np.random.default_rng(0), **dataclasses.asdict(_params(band)["ir_look"]))
    rows = [
        np.hstack([_label(["effect, parameters"]), _label(["before"], TILE[0]), _label(["after"], TILE[0])])[
            :40
        ]
    ]
    for k, (name, p) in enumerate(_params(band).items()):
        before = colour if name == "ir_look" else ir
        after = fx.EFFECTS[name][0](before, np.random.default_rng(k), **dataclasses.asdict(p))
        lines = [name] + [
            f"{f}={v:.3g}" if isinstance(v, float) else f"{f}={v}" for f, v in dataclasses.asdict(p).items()
        ]
        rows.append(np.hstack([_label(lines), _bgr(before), _bgr(after)]))
    return np.vstack(rows)


def main() -> None:
    """Write the picture and report its size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--headset", type=Path, default=ROOT / "calibration" / "generic.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "vrface" / "effects.png")
    args = ap.parse_args()
    sheet = build_sheet(args.headset)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok or len(buf) > MAX_BYTES:
        # colour rows are gray anyway except the ir_look input; a gray sheet halves the size
        ok, buf = cv2.imencode(
            ".png", cv2.cvtColor(sheet, cv2.COLOR_BGR2GRAY), [cv2.IMWRITE_PNG_COMPRESSION, 9]
        )
    args.out.write_bytes(buf.tobytes())
    print(f"wrote {args.out} ({len(buf) / 1000:.0f} KB, {sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
