"""Figure-2-like contact sheet of the VR-Face simulator: one frame through every effect and view.

Why: a builder run produces hundreds of thousands of small images nobody will look through; one
sheet per build that shows the same frame with each effect alone and from each view, all three
cameras side by side, is how a person checks that the headset simulation looks right (IR eyes,
lens distortion, the effects' strength) before training on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

if TYPE_CHECKING:
    from revavatar.core.calibration import HeadsetCalibration
    from revavatar.core.landmarks import FaceLandmarks
    from revavatar.vrface.sources import SamplePlan, SourceFile, SourceLandmarks

__all__ = ["COLUMNS", "make_contact_sheet", "openness", "write_build_sheet", "write_contact_sheet"]

#: camera columns, wearer's right eye first (it is on the image left of a frontal face)
COLUMNS: Final = ("right_eye", "left_eye", "lower_face")
_LABEL_W: Final = 150
_BG: Final = 255


def _bgr(img: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if img.ndim == 2 else img


def _fit(img: np.ndarray, height: int) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.resize(_bgr(img), (max(1, round(w * height / h)), height),
                      interpolation=cv2.INTER_AREA)


def _label(width: int, height: int, lines: Sequence[str], clip: int = 24) -> np.ndarray:
    tile = np.full((height, width, 3), _BG, np.uint8)
    for i, text in enumerate(lines):
        scale = 0.5 if i == 0 else 0.38
        y = 22 + 18 * i
        if y < height - 4:
            cv2.putText(tile, text[:clip], (6, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (20, 20, 20),
                        1 if i else 2 - (len(text) > 14), cv2.LINE_AA)
    return tile


def _row(label: Sequence[str], images: Sequence[np.ndarray], height: int, gap: int) -> np.ndarray:
    tiles = [_label(_LABEL_W, height, label)]
    for img in images:
        tiles.append(np.full((height, gap, 3), _BG, np.uint8))
        tiles.append(_fit(img, height))
    return np.hstack(tiles)


def _params_text(applied: list[dict]) -> list[str]:
    """Short 'key=value' strings of the first applied effect's parameters."""
    if not applied:
        return []
    out = []
    for k, v in applied[0].get("params", {}).items():
        if isinstance(v, float):
            out.append(f"{k}={v:.3g}")
        elif isinstance(v, (int, str, bool)):
            out.append(f"{k}={v}")
    return out[:3]


def make_contact_sheet(
    frame_bgr: np.ndarray,
    landmarks: FaceLandmarks,
    headset: Path | HeadsetCalibration,
    *,
    layout_size: int = 256,
    views: Sequence[str] = ("front", "left-60", "right-60", "top-30"),
    effects: Sequence[str] | None = None,
    seed: int = 0,
    row_height: int = 120,
    head_fixed: bool = True,
) -> np.ndarray:
    """Render the sheet for one source frame; returns a BGR image.

    Rows: the plain front view, then one row per effect (front view with only that effect, its
    parameters drawn from ``default_rng((seed, row))`` and printed under its name), then one row
    per view without effects. Columns: the three headset cameras; a header row shows the aligned
    ground-truth face and its three frontal crops.

    Args:
        frame_bgr: the source frame.
        landmarks: its landmarks (image pixels, mediapipe 478/468 with 3D).
        headset: calibration YAML path or a loaded calibration.
        layout_size: canonical face size.
        views: view rows to draw (renderer view names).
        effects: effect rows (default: every registered effect, in registry order); each is
            shown only on the cameras it applies to (see ``builder.camera_effects``).
        seed: seed of the effect parameters.
        row_height: pixel height of each row.
        head_fixed: the build's head-fixed setting (:func:`revavatar.vrface.builder.frame_truth`).
    """
    from revavatar.core.calibration import load_calibration
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.vrface.builder import camera_effects, frame_truth
    from revavatar.vrface.effects import EFFECTS, apply_effects
    from revavatar.vrface.renderer import HeadsetRenderer

    calib = load_calibration(Path(headset)) if isinstance(headset, (str, Path)) else headset
    layout = CanonicalLayout(layout_size)
    renderer = HeadsetRenderer(calib, layout)
    truth = frame_truth(frame_bgr, landmarks, layout, head_fixed)
    gt, mesh = truth.gt, truth.mesh
    gap = 4
    header_imgs = [gt] + [layout.crop_region(gt, c) for c in COLUMNS]
    rows = [_row(["ground truth", "aligned + crops"], header_imgs, row_height, gap)]
    front = renderer.render(frame_bgr, mesh, view="front")
    rows.append(_row(["no effect", "view: front"], [front[c] for c in COLUMNS], row_height, gap))
    names = list(EFFECTS) if effects is None else list(effects)
    for r, name in enumerate(names):
        rng = np.random.default_rng([seed, 7919, r])
        imgs, applied = [], []
        for cam in COLUMNS:
            use, params = camera_effects(renderer, "front", cam, [name], rng)
            img, app = apply_effects(front[cam], use, rng, params)
            imgs.append(img)
            applied = applied or app
        rows.append(_row([name, *_params_text(applied)], imgs, row_height, gap))
    for view in views:
        if view == "front":
            continue
        rendered = renderer.render(frame_bgr, mesh, view=view)
        rows.append(_row(["view", view], [rendered[c] for c in COLUMNS], row_height, gap))
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, gap), (0, width - r.shape[1]), (0, 0)), constant_values=_BG)
              for r in rows]
    title = _label(width, 34, ["VR-Face contact sheet: one frame, each effect alone, each view"],
                   clip=200)
    return np.vstack([title, *padded])


def openness(landmarks: FaceLandmarks) -> float:
    """Eye aspect ratio of the less open eye; the builder shows its most open-eyed frame."""
    return min(landmarks.eye("left").aspect_ratio, landmarks.eye("right").aspect_ratio)


def write_contact_sheet(path: Path, frame_bgr: np.ndarray, landmarks: FaceLandmarks,
                        headset: Path | HeadsetCalibration, **kwargs: object) -> Path:
    """:func:`make_contact_sheet` written as PNG atomically (temp + rename); returns ``path``.

    Raises:
        OSError: the PNG cannot be written.
    """
    sheet = make_contact_sheet(frame_bgr, landmarks, headset, **kwargs)  # type: ignore[arg-type]
    ok, buf = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        msg = f"could not encode the contact sheet for {path}"
        raise OSError(msg)
    from revavatar.vrface.sources import atomic_write

    atomic_write(Path(path), buf.tobytes())
    return Path(path)


def write_build_sheet(path: Path, files: Sequence[SourceFile], dets: Sequence[SourceLandmarks],
                      plans: Sequence[SamplePlan], headset: Path, **kwargs: object) -> Path:
    """The sheet of a build: the frame of its first 64 samples with the widest-open eyes."""
    from revavatar.vrface.sources import iter_frames

    plan = max(plans[:64], key=lambda p: openness(dets[p.file].landmarks(p.det)))
    frame = next(img for _, img in iter_frames(files[plan.file], [plan.frame]))
    return write_contact_sheet(path, frame, dets[plan.file].landmarks(plan.det), headset, **kwargs)
