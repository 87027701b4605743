"""Outward display warp: show the restored eyes where the wearer's eyes really are.

The outward panel sits ``distance_mm`` in front of the eyes, so an observer who looks at it sees
the panel, not the face plane. For the eyes on the panel to line up with the wearer's real eyes
(and with the rest of the visible face), each panel pixel must show the face point that lies
behind it on the observer's line of sight. For an observer straight ahead at
``viewer_distance_mm`` the lines of sight through the panel meet the face plane z = 0 slightly
magnified (factor ``D / (D - d)``), which is what :class:`DisplayWarper` renders.

Geometry (head frame, mm; see docs/ARCHITECTURE.md): display pixel (i, j) of a W x H panel of
physical size (Sw, Sh) centred at (cx, cy) has its centre at
``P = (cx + ((i + 0.5) / W - 0.5) * Sw,  cy + ((j + 0.5) / H - 0.5) * Sh,  -d)``.
The display image is the view *as the observer sees it* (its column axis is head +x, rows are
head +y), like the frontal canonical face; a panel that scans out mirrored is a driver flip, not
a geometry change. The ray from the viewer ``V = (0, 0, -D)`` through P meets z = 0 at
``(P.x, P.y) * D / (D - d)``, which ``layout.head_to_pixel`` turns into a canonical pixel. The
whole map is computed once and applied per frame with one ``cv2.remap``. Display pixels whose
face point falls outside ``display.eye_region`` (canonical fractions: the part of the face the
panel may show) are black.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import cv2
import numpy as np

from revavatar.core.composite import check_image, checks_enabled

if TYPE_CHECKING:
    from revavatar.core.canonical import CanonicalLayout

__all__ = ["DisplayLike", "DisplayWarper", "display_to_face_mm"]


class DisplayLike(Protocol):
    """The fields of ``core.calibration.DisplayCalibration`` the warp uses."""

    resolution: tuple[int, int]
    size_mm: tuple[float, float]
    center_mm: tuple[float, float]
    distance_mm: float
    viewer_distance_mm: float
    eye_region: tuple[float, float, float, float]


def _validate(display: DisplayLike) -> None:
    """Reject geometry that has no observer-side solution (ValueError naming the field)."""
    w, h = (int(v) for v in display.resolution)
    if w <= 0 or h <= 0:
        msg = f"display.resolution: expected positive (width, height), got {display.resolution}"
        raise ValueError(msg)
    if min(float(v) for v in display.size_mm) <= 0:
        msg = f"display.size_mm: expected positive (width, height), got {display.size_mm}"
        raise ValueError(msg)
    d, dv = float(display.distance_mm), float(display.viewer_distance_mm)
    if not 0 <= d < dv:
        msg = (
            "display: expected 0 <= distance_mm < viewer_distance_mm (the observer stands in "
            f"front of the panel), got distance_mm={d}, viewer_distance_mm={dv}"
        )
        raise ValueError(msg)
    x0, y0, x1, y1 = (float(v) for v in display.eye_region)
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        msg = f"display.eye_region: expected fractions 0 <= x0 < x1 <= 1, got {display.eye_region}"
        raise ValueError(msg)


def display_to_face_mm(display: DisplayLike) -> np.ndarray:
    """Face-plane point (x, y) mm seen through each display pixel centre: (H, W, 2) float64."""
    w, h = (int(v) for v in display.resolution)
    sw, sh = (float(v) for v in display.size_mm)
    cx, cy = (float(v) for v in display.center_mm)
    d, dv = float(display.distance_mm), float(display.viewer_distance_mm)
    px = cx + ((np.arange(w) + 0.5) / w - 0.5) * sw
    py = cy + ((np.arange(h) + 0.5) / h - 0.5) * sh
    gx, gy = np.meshgrid(px, py)
    # Ray V + t (P - V) with V = (0, 0, -D), P.z = -d reaches z = 0 at t = D / (D - d).
    t = dv / (dv - d)
    return np.stack([gx * t, gy * t], axis=-1)


class DisplayWarper:
    """Canonical face -> outward display image (display resolution, BGR)."""

    def __init__(self, display: DisplayLike, layout: CanonicalLayout) -> None:
        """Precompute the remap grid for one panel and layout.

        Args:
            display: the headset's display calibration (``DisplayCalibration``).
            layout: canonical layout of the faces that will be rendered.

        Raises:
            ValueError: impossible display geometry (the message names the field).
        """
        _validate(display)
        self.display = display
        self.layout = layout
        self.resolution = (int(display.resolution[0]), int(display.resolution[1]))
        face_mm = display_to_face_mm(display)
        w, h = self.resolution
        uv = layout.head_to_pixel(face_mm.reshape(-1, 2)).reshape(h, w, 2)
        s = float(layout.size)
        x0, y0, x1, y1 = (float(v) * s for v in display.eye_region)
        inside = (uv[..., 0] >= x0) & (uv[..., 0] < x1) & (uv[..., 1] >= y0) & (uv[..., 1] < y1)
        #: bool (H, W): display pixels that show the face (the rest stays black)
        self.mask = inside
        #: float (H, W, 2): canonical pixel sampled by each display pixel
        self.face_uv = uv
        map_x = np.where(inside, uv[..., 0], -16.0).astype(np.float32)
        map_y = np.where(inside, uv[..., 1], -16.0).astype(np.float32)
        self._map1, self._map2 = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)

    def head_to_display(self, xyz_mm: np.ndarray) -> np.ndarray:
        """Display pixel (N, 2) where face points (N, 2|3 mm, z ignored: on the face plane) show.

        The inverse of the render map, for overlays and tests.
        """
        pts = np.asarray(xyz_mm, dtype=np.float64)[..., :2]
        disp = self.display
        w, h = self.resolution
        sw, sh = (float(v) for v in disp.size_mm)
        cx, cy = (float(v) for v in disp.center_mm)
        d, dv = float(disp.distance_mm), float(disp.viewer_distance_mm)
        panel = pts * (dv - d) / dv
        i = (panel[..., 0] - cx) / sw * w + w / 2 - 0.5
        j = (panel[..., 1] - cy) / sh * h + h / 2 - 0.5
        return np.stack([i, j], axis=-1)

    def render(self, face_bgr: np.ndarray) -> np.ndarray:
        """Warp a canonical face (uint8 (size, size, 3) BGR, or gray) to the display image.

        Returns:
            uint8 BGR (H, W, 3) at the display resolution; black outside the eye region.

        Raises:
            ShapeError: the face is not a uint8 image of the layout's size (checks enabled).
        """
        if checks_enabled():
            check_image(face_bgr, "face", size=(self.layout.size, self.layout.size))
        if face_bgr.ndim == 2 or face_bgr.shape[2] == 1:
            face_bgr = cv2.cvtColor(face_bgr, cv2.COLOR_GRAY2BGR)
        return cv2.remap(
            face_bgr,
            self._map1,
            self._map2,
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(0, 0, 0),
        )
