"""Gaze direction from iris and eye-corner landmarks, through a spherical eyeball model.

Restoring the eyes is only convincing when the restored face looks where the wearer looks, so the
evaluation compares gaze on restored and true faces. Landmarks give the iris centre and the eye
corners; the corners are fixed to the skull, so the iris offset from their mid-point, scaled to
millimetres by the eye width, is the displacement of the iris on the eyeball.

Eyeball model:
    The iris centre sits on a sphere of radius :data:`EYEBALL_RADIUS_MM` (12 mm, the adult eyeball
    radius) whose front pole projects onto the corner mid-point when the eye looks straight ahead.
    The corner-to-corner width is :data:`EYE_WIDTH_MM` (30 mm, the adult palpebral fissure
    length, 28-30 mm), which converts pixels to mm independently of image scale. An iris offset
    (dx, dy) mm in the eye's own axes (x along the corner line toward image right, y perpendicular
    toward image down, so head roll cancels) gives the point (dx, dy, -sqrt(r^2 - dx^2 - dy^2))
    on the sphere (z into the head); the gaze is the ray from the eyeball centre through it.

Angles follow the head frame of docs/ARCHITECTURE.md: yaw > 0 when the gaze turns toward +x
(image right of a frontal view, the wearer's left), pitch > 0 when it turns up (toward -y).
The angles are relative to the face, not the camera: add head pose for a world gaze.

Head pose (:func:`estimate_head_pose`) lives here too: it is the other half of where a person
looks, and enrollment uses it to refuse turned selfies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

import cv2
import numpy as np

from revavatar.core.landmarks import SCHEMES

if TYPE_CHECKING:
    from revavatar.core.landmarks import EyeLandmarks, FaceLandmarks

__all__ = [
    "EYEBALL_RADIUS_MM",
    "EYE_WIDTH_MM",
    "OPEN_EYE_MIN_ASPECT",
    "HeadPose",
    "angular_error_deg",
    "estimate_head_pose",
    "gaze_angles",
    "gaze_from_landmarks",
    "gaze_vector",
]

#: adult eyeball radius (mm)
EYEBALL_RADIUS_MM: Final = 12.0
#: adult corner-to-corner eye width (mm), the pixel-to-mm scale of each eye
EYE_WIDTH_MM: Final = 30.0
#: eye aspect ratio (``EyeLandmarks.aspect_ratio``) below which an eye is shut: the lids cover
#: the iris, so it has no gaze to keep and a landmark model's iris there is a guess (open eyes
#: read 0.25-0.4; a tenth of the VR-Face face-video eyes fall below it: blinks and squints)
OPEN_EYE_MIN_ASPECT: Final = 0.15


def gaze_angles(eye: EyeLandmarks) -> tuple[float, float]:
    """(yaw_deg, pitch_deg) of one eye from its iris centre and corners.

    Raises:
        ValueError: the landmarks have no iris (a 68-point scheme) or the corners coincide.
    """
    if eye.iris is None:
        msg = f"{eye.side} eye has no iris landmark; use an iris scheme (mediapipe478) for gaze"
        raise ValueError(msg)
    corners = np.asarray(eye.corners, dtype=np.float64)
    axis = corners[1] - corners[0]
    width = float(np.linalg.norm(axis))
    if not np.isfinite(width) or width < 1e-6:
        msg = f"{eye.side} eye corners coincide; cannot normalise the iris offset"
        raise ValueError(msg)
    ex = axis / width
    ey = np.array([-ex[1], ex[0]])  # +90 degrees in image coordinates: "down" for a level eye
    off = np.asarray(eye.iris, dtype=np.float64) - corners.mean(axis=0)
    mm = EYE_WIDTH_MM / width
    dx, dy = float(off @ ex) * mm, float(off @ ey) * mm
    r = EYEBALL_RADIUS_MM
    lateral = np.hypot(dx, dy)
    if lateral > r:  # beyond the rim: clamp onto it (the eye cannot turn more than 90 degrees)
        dx, dy = dx * r / lateral, dy * r / lateral
    dz = -np.sqrt(max(r * r - dx * dx - dy * dy, 0.0))
    yaw = np.degrees(np.arctan2(dx, -dz))
    pitch = np.degrees(np.arctan2(-dy, np.hypot(dx, dz)))
    return float(yaw), float(pitch)


def gaze_from_landmarks(lm: FaceLandmarks) -> dict[str, tuple[float, float]]:
    """Both eyes' (yaw_deg, pitch_deg), keyed "left" and "right" (the wearer's sides).

    Raises:
        ValueError: the landmark scheme has no irises.
    """
    return {side: gaze_angles(lm.eye(side)) for side in ("left", "right")}


def gaze_vector(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    """Unit gaze direction in the head frame (x right, y down, z into the head; ahead is -z)."""
    y, p = np.radians(yaw_deg), np.radians(pitch_deg)
    return np.array([np.cos(p) * np.sin(y), -np.sin(p), -np.cos(p) * np.cos(y)])


def angular_error_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Angle (degrees) between two gaze directions given as (yaw_deg, pitch_deg)."""
    va, vb = gaze_vector(*a), gaze_vector(*b)
    # atan2 of |cross| and dot stays accurate for tiny angles, where arccos loses digits
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(va, vb)), float(va @ vb))))


class HeadPose(NamedTuple):
    """Head rotation relative to the camera (degrees).

    yaw > 0: the face turns toward image +x; pitch > 0: the face tilts up (toward image -y);
    roll > 0: the eye line rotates clockwise in the image (image-right eye lower).
    """

    yaw_deg: float
    pitch_deg: float
    roll_deg: float


#: Generic adult face (head frame mm: x toward the wearer's left, y down, z into the head), for
#: the six points right/left outer eye corner, nose tip, right/left mouth corner, chin. Proportions
#: follow the canonical template (nose 34 mm and mouth 60 mm below the eye line); depths are
#: typical anthropometric values. Only used to tell frontal from turned faces.
_POSE_MODEL_MM: Final = np.array(
    [[-45.0, 0.0, 0.0], [45.0, 0.0, 0.0], [0.0, 34.0, -28.0],
     [-25.0, 60.0, -6.0], [25.0, 60.0, -6.0], [0.0, 105.0, -8.0]],
)
#: iBUG point 30 sits higher on the nose than Face Mesh point 1; with the nose at 26 mm the two
#: backends agree on pitch within 1 degree on average over the demo clip (13 degrees apart else).
_POSE_MODEL_IBUG_MM: Final = _POSE_MODEL_MM + np.array([[0, 0, 0], [0, 0, 0], [0, -8.0, 2.0],
                                                         [0, 0, 0], [0, 0, 0], [0, 0, 0]])


def estimate_head_pose(lm: FaceLandmarks) -> HeadPose:
    """Head yaw, pitch and roll from six landmarks and a generic 3D face (``cv2.solvePnP``).

    Yaw and pitch are measured against the line of sight from the face to the camera, not the
    optical axis: a face off the image centre that looks into the lens is frontal for enrollment
    (its selfie shows both cheeks equally). The camera is assumed pinhole with focal length =
    image width and the principal point at the image centre, which is close enough for selfies and
    webcams to tell frontal from turned faces (a few degrees, plus the bias of one person's
    proportions against the generic face; backends also place the nose tip differently, which
    shifts pitch by up to ~15 degrees).
    """
    s = SCHEMES[lm.scheme]
    right, left = s.eyes["right"], s.eyes["left"]
    idx = [right.corners[0], left.corners[1], s.nose_tip, *s.mouth_corners, s.chin]
    img = lm.points[idx].astype(np.float64)
    w, h = lm.image_size
    k = np.array([[w, 0.0, w / 2.0], [0.0, w, h / 2.0], [0.0, 0.0, 1.0]])
    model = _POSE_MODEL_MM if lm.scheme.startswith("mediapipe") else _POSE_MODEL_IBUG_MM
    ok, rvec, tvec = cv2.solvePnP(model, img, k, np.zeros(5), flags=cv2.SOLVEPNP_SQPNP)
    if not ok:  # pragma: no cover - SQPnP on six finite points does not fail in practice
        return HeadPose(float("nan"), float("nan"), float("nan"))
    rot, _ = cv2.Rodrigues(rvec)
    fwd = rot @ np.array([0.0, 0.0, -1.0])  # out of the face, camera coordinates
    ray = -tvec.ravel() / max(float(np.linalg.norm(tvec)), 1e-9)  # face -> camera

    def _angles(v: np.ndarray) -> tuple[float, float]:
        return float(np.arctan2(v[0], -v[2])), float(np.arctan2(-v[1], np.hypot(v[0], v[2])))

    (fy, fp), (ry, rp) = _angles(fwd), _angles(ray)
    roll = np.degrees(np.arctan2(rot[1, 0], rot[0, 0]))
    return HeadPose(float(np.degrees(fy - ry)), float(np.degrees(fp - rp)), float(roll))
