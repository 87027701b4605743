"""Clip writing for tests that make their own VR-Face source folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    """Write BGR ``frames`` (all one size) as an mp4v clip at 24 fps."""
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
