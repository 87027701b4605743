"""Replay a VR-Face sample from its source frame.

A build stores each headset view after its effects, but also what made it: the source file and
frame, and every effect's parameters and seed. Rendering the frame's mesh again and running the
recorded effects reproduces the stored JPEG to a few gray levels, so a view can be remade with
one effect left out or drawn afresh. That gives exact (with, without) pairs for learning to take
an effect off, and an oracle for what an effect costs a downstream stage.

Needs the build's source folder and landmark cache (``vrface build`` keeps both).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from revavatar.core.landmarks import FaceLandmarks
    from revavatar.learning.data import VRFaceIndex
    from revavatar.vrface.sources import LandmarkCache, SourceFile

__all__ = ["SampleReplay", "apply_records", "jpeg_round_trip", "sample_landmarks",
           "source_folder", "split_records"]


def source_folder(index: VRFaceIndex) -> Path:
    """The build's ``--src`` folder, as given (relative: to the working directory, else to the
    build).

    Raises:
        FileNotFoundError: neither exists.
    """
    src = Path(index.meta["config"]["src"])
    for cand in (src, index.root / src):
        if cand.is_dir():
            return cand.resolve()
    msg = f"source folder {src} of the build {index.root} not found"
    raise FileNotFoundError(msg)


def sample_landmarks(cache: LandmarkCache, src: SourceFile, frame: int) -> FaceLandmarks | None:
    """The build's own detection of ``frame``.

    The cache is keyed by the file's stat; a source touched since the build (same name, new
    mtime) is found by its stem among the cached files that hold the frame, a still and a
    video of the same stem told apart by their frame counts.
    """
    dets = cache.load(src)
    if dets is None:
        found = [d for d in (cache.load(src, h) for h in sorted(cache.dir.glob(
            f"{src.path.stem}-*.npz"))) if d is not None and frame in d.frames]
        if len(found) > 1:
            found = [d for d in found if (d.n_frames == 1) == (src.kind == "image")]
        if len(found) != 1:
            return None
        dets = found[0]
    k = np.nonzero(dets.frames == frame)[0]
    return dets.landmarks(int(k[0])) if len(k) else None


def apply_records(image: np.ndarray, records: Sequence[dict[str, Any]]) -> np.ndarray:
    """Run effect records (``apply_effects``' output) on ``image`` in their order."""
    from revavatar.vrface.effects import EFFECTS  # noqa: PLC0415

    for r in records:
        image = EFFECTS[r["effect"]][0](image, np.random.default_rng(r["seed"]), **r["params"])
    return image


def split_records(records: Sequence[dict[str, Any]], effect: str
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The records that run before and after ``effect`` in the default effect order (the
    effect's own record is in neither), so a fresh draw of it can go between them.

    Raises:
        ValueError: unknown effect name.
    """
    from revavatar.vrface.effects import EFFECTS  # noqa: PLC0415

    order = list(EFFECTS)
    if effect not in order:
        msg = f"unknown effect {effect!r}; expected one of {', '.join(order)}"
        raise ValueError(msg)
    cut = order.index(effect)
    return ([r for r in records if order.index(r["effect"]) < cut],
            [r for r in records if order.index(r["effect"]) > cut])


def jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` as a build stores it: JPEG encoded at ``quality`` and decoded."""
    import cv2  # noqa: PLC0415

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        msg = f"JPEG encoding of a {image.shape} {image.dtype} image failed"
        raise ValueError(msg)
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)


class SampleReplay:
    """Re-renders a build's samples from their source frames (the build's headset and
    canonical layout), before any effect."""

    def __init__(self, index: VRFaceIndex) -> None:
        from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415
        from revavatar.vrface.renderer import HeadsetRenderer  # noqa: PLC0415
        from revavatar.vrface.sources import LandmarkCache, scan_sources  # noqa: PLC0415

        config = index.meta["config"]
        self.index = index
        self.layout = CanonicalLayout(index.layout_size)
        self.files = {s.rel: s for s in scan_sources(source_folder(index))}
        self.cache = LandmarkCache(Path(config.get("cache_dir") or index.root / "cache"),
                                   config.get("backend", "mediapipe"))
        self.renderer = HeadsetRenderer(index.calibration(), self.layout)
        self.head_fixed = bool(config.get("head_fixed", False))  # builds before 2026-12: False
        self.jpeg_quality = int(config.get("jpeg_quality", 95))

    def truth(self, entry: dict[str, Any]) -> tuple[np.ndarray, Any] | None:
        """(source frame BGR, :class:`revavatar.vrface.builder.FrameTruth`) of a sample, or None
        when the build's landmarks of that frame are gone."""
        from revavatar.vrface.builder import frame_truth  # noqa: PLC0415
        from revavatar.vrface.sources import iter_frames  # noqa: PLC0415

        src = self.files.get(entry["source"]["file"])
        if src is None:
            return None
        n = int(entry["source"]["frame"])
        lm = sample_landmarks(self.cache, src, n)
        if lm is None:
            return None
        frame = next(iter_frames(src, [n]))[1]
        return frame, frame_truth(frame, lm, self.layout, self.head_fixed)

    def clean_views(self, entry: dict[str, Any]) -> dict[str, np.ndarray] | None:
        """Camera name -> the sample's headset view before any effect (None: no landmarks)."""
        got = self.truth(entry)
        if got is None:
            return None
        frame, truth = got
        return self.renderer.render(frame, truth.mesh, view=entry.get("view", "front"))

    @staticmethod
    def records(entry: dict[str, Any], camera: str) -> list[dict[str, Any]]:
        """The effect records the build applied to ``camera``'s view of the sample."""
        return [r for r in entry["effects"] if r["camera"] == camera]
