"""A tiny, real, validated headset profile shared by the bag and capture tests."""

from __future__ import annotations

from revavatar.core.calibration import HeadsetCalibration, calibration_from_dict

SIZES = {"left_eye": (32, 24), "right_eye": (32, 24), "lower_face": (48, 32)}


def small_calibration(k1: float = 0.0) -> HeadsetCalibration:
    """A real, validated headset profile with tiny cameras (IR eyes, colour lower face)."""
    cams = {}
    for name, (w, h) in SIZES.items():
        cams[name] = {
            "resolution": [w, h],
            "fps": 30.0,
            "intrinsics": {"fx": 40.0, "fy": 40.0, "cx": w / 2, "cy": h / 2},
            "distortion": {"model": "plumb_bob", "coefficients": [k1, 0.0, 0.0, 0.0, 0.0]},
            "pose": {"translation_mm": [0.0, 0.0, -30.0], "rotation_deg": [0.0, 0.0, 0.0]},
            "infrared": name != "lower_face",
        }
    doc = {
        "name": "tiny",
        "description": "test profile",
        "cameras": cams,
        "display": {
            "resolution": [64, 32],
            "size_mm": [120.0, 60.0],
            "center_mm": [0.0, 0.0],
            "distance_mm": 40.0,
            "viewer_distance_mm": 1000.0,
            "eye_region": [0.12, 0.24, 0.88, 0.58],
        },
    }
    return calibration_from_dict(doc)
