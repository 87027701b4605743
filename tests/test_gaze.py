"""Gaze from iris and corners: synthetic eyes with known answers, then the demo clip."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from revavatar.core.gaze import (
    EYE_WIDTH_MM,
    EYEBALL_RADIUS_MM,
    angular_error_deg,
    gaze_angles,
    gaze_from_landmarks,
    gaze_vector,
)
from revavatar.core.landmarks import EyeLandmarks, FaceLandmarks, create_detector


def _eye(iris: tuple[float, float] | None, *, width: float = 60.0, roll_deg: float = 0.0,
         origin: tuple[float, float] = (100.0, 50.0)) -> EyeLandmarks:
    """Level eye ``width`` px wide centred at ``origin``; iris offset given in px, then rolled."""
    c, s = math.cos(math.radians(roll_deg)), math.sin(math.radians(roll_deg))
    rot = np.array([[c, -s], [s, c]])

    def place(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p, np.float64) @ rot.T + origin).astype(np.float32)

    half = width / 2
    corners = place(np.array([[-half, 0.0], [half, 0.0]]))
    upper = place(np.array([[-10.0, -8.0], [10.0, -8.0]]))
    lower = place(np.array([[-10.0, 8.0], [10.0, 8.0]]))
    return EyeLandmarks("right", corners, upper, lower,
                        None if iris is None else place(np.array(iris)))


def _px(mm: float, width: float = 60.0) -> float:
    return mm * width / EYE_WIDTH_MM


def test_centred_iris_looks_straight_ahead():
    yaw, pitch = gaze_angles(_eye((0.0, 0.0)))
    assert yaw == pytest.approx(0.0, abs=1e-9) and pitch == pytest.approx(0.0, abs=1e-9)


def test_horizontal_shift_gives_yaw_through_the_eyeball_model():
    # 6 mm along the corner line on a 12 mm eyeball -> asin(0.5) = 30 degrees toward image right
    yaw, pitch = gaze_angles(_eye((_px(6.0), 0.0)))
    assert yaw == pytest.approx(30.0, abs=1e-6) and pitch == pytest.approx(0.0, abs=1e-6)
    yaw_l, _ = gaze_angles(_eye((-_px(6.0), 0.0)))
    assert yaw_l == pytest.approx(-30.0, abs=1e-6)
    # the answer depends on the offset relative to eye width, not on image scale
    yaw_big, _ = gaze_angles(_eye((_px(6.0, 120.0), 0.0), width=120.0))
    assert yaw_big == pytest.approx(30.0, abs=1e-6)
    assert EYEBALL_RADIUS_MM == 12.0


def test_vertical_shift_gives_pitch_up_positive():
    _, up = gaze_angles(_eye((0.0, -_px(6.0))))  # image up
    _, down = gaze_angles(_eye((0.0, _px(3.0))))
    assert up == pytest.approx(30.0, abs=1e-6)
    assert down == pytest.approx(-math.degrees(math.asin(3.0 / 12.0)), abs=1e-6)


def test_head_roll_cancels():
    straight = gaze_angles(_eye((_px(4.0), -_px(2.0))))
    rolled = gaze_angles(_eye((_px(4.0), -_px(2.0)), roll_deg=25.0))
    assert rolled == pytest.approx(straight, abs=1e-4)


def test_offsets_beyond_the_eyeball_clamp_to_90_degrees():
    yaw, _ = gaze_angles(_eye((_px(20.0), 0.0)))
    assert yaw == pytest.approx(90.0, abs=1e-6)


def test_missing_iris_or_degenerate_eye_is_refused():
    with pytest.raises(ValueError, match="no iris"):
        gaze_angles(_eye(None))
    with pytest.raises(ValueError, match="coincide"):
        gaze_angles(_eye((0.0, 0.0), width=0.0))
    dlib_like = FaceLandmarks(np.zeros((68, 2)), None, "dlib68", (10, 10))
    with pytest.raises(ValueError, match="no iris"):
        gaze_from_landmarks(dlib_like)


def test_angular_error():
    assert angular_error_deg((0.0, 0.0), (0.0, 0.0)) == pytest.approx(0.0, abs=1e-9)
    assert angular_error_deg((0.0, 0.0), (10.0, 0.0)) == pytest.approx(10.0, abs=1e-9)
    assert angular_error_deg((0.0, 0.0), (0.0, -7.0)) == pytest.approx(7.0, abs=1e-9)
    assert angular_error_deg((0.0, 0.0), (0.0, 0.001)) == pytest.approx(0.001, rel=1e-6)
    a, b = (12.0, 5.0), (-3.0, 9.0)
    assert angular_error_deg(a, b) == pytest.approx(angular_error_deg(b, a))
    expect = math.degrees(math.acos(float(gaze_vector(*a) @ gaze_vector(*b))))
    assert angular_error_deg(a, b) == pytest.approx(expect, abs=1e-6)
    np.testing.assert_allclose(gaze_vector(0.0, 0.0), [0.0, 0.0, -1.0], atol=1e-12)


@pytest.fixture(scope="module")
def looking_up(demo_video: Path) -> np.ndarray:
    """Frame 175 of the demo clip: eyes open, looking up and toward the image left."""
    cap = cv2.VideoCapture(str(demo_video))
    frame = None
    for _ in range(176):
        ok, frame = cap.read()
        assert ok
    cap.release()
    return frame


def test_demo_clip_gaze_is_plausible(looking_up: np.ndarray, demo_frames: list[np.ndarray]):
    with create_detector("mediapipe") as det:
        lm = det.detect(looking_up)
        assert lm is not None
        g = gaze_from_landmarks(lm)
        assert set(g) == {"left", "right"}
        for yaw, pitch in g.values():
            assert math.isfinite(yaw) and math.isfinite(pitch)
            assert pitch > 8.0, g  # she looks up
            assert yaw < -8.0, g  # and toward the image left
        assert angular_error_deg(g["left"], g["right"]) < 20.0  # both eyes agree
        for frame in demo_frames[::20]:
            lm = det.detect(frame)
            assert lm is not None
            for yaw, pitch in gaze_from_landmarks(lm).values():
                assert abs(yaw) < 60 and abs(pitch) < 60
