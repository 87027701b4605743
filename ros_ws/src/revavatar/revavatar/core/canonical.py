"""The canonical face: one fixed layout that every stage agrees on.

Enrollment aligns the DP into it, the aligners produce crops of its regions, the composite pastes
them back at the same boxes, and the display and the VR-Face simulator map head-frame millimetres
to its pixels. Defining it once (in fractions of the crop size) is what lets 256 px and 512 px
pipelines share code and lets a region box mean the same thing in training and at run time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

if TYPE_CHECKING:
    from revavatar.core.landmarks import FaceLandmarks

__all__ = [
    "EYE_ELLIPSE_MM",
    "EYE_FEATHER_MM",
    "EYE_SIDES",
    "INTEROCULAR_MM",
    "REGION_NAMES",
    "CanonicalLayout",
    "Region",
    "crop_box",
]

#: Mean adult interpupillary distance; sets the metric scale of the canonical face.
INTEROCULAR_MM: Final = 63.0

#: 5-point template (fractions of size): right eye, left eye, nose tip, right/left mouth corner.
#: "right" is the wearer's right, which is the image left of a frontal view.
_TEMPLATE: Final = np.array(
    [[0.34, 0.42], [0.66, 0.42], [0.50, 0.59], [0.37, 0.72], [0.63, 0.72]], dtype=np.float64
)
_ORIGIN: Final = (0.5, 0.42)  # mid-eye point = head-frame origin, in fractions of size

#: region -> (box [x0, y0, x1, y1] in fractions of size, crop size (w, h) at size 256)
_REGIONS: Final[dict[str, tuple[tuple[float, float, float, float], tuple[int, int]]]] = {
    "right_eye": ((0.18, 0.30, 0.50, 0.54), (128, 96)),
    "left_eye": ((0.50, 0.30, 0.82, 0.54), (128, 96)),
    "lower_face": ((0.20, 0.56, 0.80, 0.96), (192, 128)),
    "eye_band": ((0.12, 0.24, 0.88, 0.58), (194, 87)),
}
#: region -> mean face surface over the region as a plane (gx, gy, z0): depth (mm, head frame)
#: z = z0 + gx * (x - cx) + gy * (y - cy) about the box centre (cx, cy). Medians of least-squares
#: fits to mediapipe meshes (FaceMesh.from_landmarks) of 152 frames from 15 clips (the demo clip
#: and 14 of ../shared/data/faces); the eye boxes curve back toward the temples (|gx| ~ 0.65), the
#: lower face recedes toward the chin (gy ~ 0.33). Used by the homography baseline, which must
#: pick one plane per region; per-frame spread of z0 is 5-9 mm, the baseline's parallax limit.
_PLANES: Final[dict[str, tuple[float, float, float]]] = {
    "right_eye": (-0.62, -0.03, -3.6),
    "left_eye": (0.66, -0.02, -3.1),
    "lower_face": (0.01, 0.33, -7.6),
    "eye_band": (0.0, 0.0, 0.0),
}
#: the three regions a headset camera sees, in the order of CAMERA_NAMES
REGION_NAMES: Final = ("left_eye", "right_eye", "lower_face")
#: the eye regions and the side of the face each shows (the landmark schemes' eye keys)
EYE_SIDES: Final = {"left_eye": "left", "right_eye": "right"}
#: semi-axes (mm; x, y) of the eye ellipse about a template eye centre: the eye is 30 mm corner to
#: corner and its opening about 10 mm tall, so both corners, both lids and a margin are in
EYE_ELLIPSE_MM: Final = (20.0, 12.0)
#: width (mm) of the ellipse's feathered rim
EYE_FEATHER_MM: Final = 3.0


@dataclass(frozen=True)
class Region:
    """A named box of the canonical face and the size its crops are stored at."""

    name: str
    box_px: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in canonical pixels
    crop_size: tuple[int, int]  # (w, h)
    plane: tuple[float, float, float] = (0.0, 0.0, 0.0)  # mean face plane (gx, gy, z0 mm)

    @property
    def box_size(self) -> tuple[int, int]:
        """(w, h) of the box in canonical pixels."""
        return self.box_px[2] - self.box_px[0], self.box_px[3] - self.box_px[1]

    def canonical_to_crop(self, points: np.ndarray) -> np.ndarray:
        """Canonical-face pixels (N, 2) -> this region's crop pixels (pixel-centre convention of
        ``cv2.resize``, the one the crops are stored with)."""
        x0, y0, x1, y1 = self.box_px
        w, h = self.crop_size
        sx, sy = (x1 - x0) / w, (y1 - y0) / h
        pts = np.asarray(points, dtype=np.float64)
        return np.stack([(pts[:, 0] - x0 + 0.5) / sx - 0.5, (pts[:, 1] - y0 + 0.5) / sy - 0.5], 1)


def crop_box(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """View of ``image`` inside ``box`` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    return image[y0:y1, x0:x1]


@dataclass(frozen=True)
class CanonicalLayout:
    """Canonical face crop of ``size`` px (256 default, 512 option)."""

    size: int = 256

    def __post_init__(self) -> None:
        if self.size not in (128, 256, 512, 1024):
            msg = f"canonical size must be one of 128, 256, 512, 1024 px, got {self.size}"
            raise ValueError(msg)

    @property
    def mm_per_px(self) -> float:
        """Millimetres per canonical pixel (interocular distance = 0.32 * size px)."""
        return INTEROCULAR_MM / (0.32 * self.size)

    @property
    def origin_px(self) -> tuple[float, float]:
        """Pixel of the head-frame origin (mid-eye point)."""
        return _ORIGIN[0] * self.size, _ORIGIN[1] * self.size

    def region(self, name: str) -> Region:
        """The named region, scaled to this layout.

        Raises:
            ValueError: unknown region name (the message lists the valid ones).
        """
        try:
            box, crop = _REGIONS[name]
        except KeyError:
            msg = f"unknown region {name!r}; expected one of {', '.join(_REGIONS)}"
            raise ValueError(msg) from None
        s = self.size
        box_px = (round(box[0] * s), round(box[1] * s), round(box[2] * s), round(box[3] * s))
        scale = s / 256
        return Region(
            name, box_px, (round(crop[0] * scale), round(crop[1] * scale)), _PLANES[name]
        )

    def regions(self) -> dict[str, Region]:
        """All regions by name."""
        return {name: self.region(name) for name in _REGIONS}

    def template_points(self) -> np.ndarray:
        """(5, 2) template key points in pixels, ordered as FaceLandmarks.key_points()."""
        return _TEMPLATE * self.size

    def head_to_pixel(self, xyz_mm: np.ndarray) -> np.ndarray:
        """Orthographic frontal projection: head-frame mm (N, 3) or (N, 2) -> pixels (N, 2)."""
        pts = np.asarray(xyz_mm, dtype=np.float64)
        ox, oy = self.origin_px
        return np.stack([ox + pts[..., 0] / self.mm_per_px, oy + pts[..., 1] / self.mm_per_px], -1)

    def pixel_to_head(self, uv: np.ndarray, z: float | np.ndarray = 0.0) -> np.ndarray:
        """Inverse of :meth:`head_to_pixel` onto depth ``z`` (mm): pixels (N, 2) -> (N, 3)."""
        pts = np.asarray(uv, dtype=np.float64)
        ox, oy = self.origin_px
        x = (pts[..., 0] - ox) * self.mm_per_px
        y = (pts[..., 1] - oy) * self.mm_per_px
        return np.stack([x, y, np.broadcast_to(z, x.shape).astype(np.float64)], -1)

    def estimate_similarity(self, points: np.ndarray) -> np.ndarray:
        """Least-squares similarity (2x3) taking 5 key points onto the template.

        Closed form (Umeyama) rather than RANSAC: five good points leave nothing to reject, and a
        deterministic fit keeps training data and run time identical.
        """
        src = np.asarray(points, dtype=np.float64)
        if src.shape != (5, 2):
            msg = f"expected (5, 2) key points, got shape {src.shape}"
            raise ValueError(msg)
        dst = self.template_points()
        mu_s, mu_d = src.mean(0), dst.mean(0)
        s_c, d_c = src - mu_s, dst - mu_d
        cov = d_c.T @ s_c / len(src)
        u, sig, vt = np.linalg.svd(cov)
        sign = np.eye(2)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            sign[1, 1] = -1
        rot = u @ sign @ vt
        var = (s_c**2).sum() / len(src)
        scale = float((sig * np.diag(sign)).sum() / var)
        t = mu_d - scale * rot @ mu_s
        return np.hstack([scale * rot, t[:, None]])

    def align_face(
        self, image: np.ndarray, landmarks: FaceLandmarks
    ) -> tuple[np.ndarray, np.ndarray]:
        """Warp ``image`` into the canonical crop; returns (aligned, M 2x3 image -> canonical)."""
        m = self.estimate_similarity(landmarks.key_points())
        aligned = cv2.warpAffine(
            image, m, (self.size, self.size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        return aligned, m

    def eye_weight(self, region: str) -> np.ndarray:
        """(h, w) float32 weights over an eye region's crop: 1 on the eye (the ellipse of
        :data:`EYE_ELLIPSE_MM` about the template eye centre), 0 away from it, feathered.

        Fixed by the layout, not by any face's landmarks: where the eye's own pixels are, for the
        gaze probe (only the eye is judged) and for aligners that must take the eye from the
        camera, never from the enrollment.

        Raises:
            ValueError: ``region`` is not an eye region.
        """
        if region not in EYE_SIDES:
            msg = f"eye_weight needs an eye region ({', '.join(EYE_SIDES)}), got {region!r}"
            raise ValueError(msg)
        reg = self.region(region)
        x0, y0, x1, y1 = reg.box_px
        w, h = reg.crop_size
        cx, cy = self.template_points()[0 if EYE_SIDES[region] == "right" else 1]
        yy, xx = np.mgrid[0:h, 0:w] + 0.5  # crop pixel centres
        dx = (xx * (x1 - x0) / w + x0 - cx) * self.mm_per_px
        dy = (yy * (y1 - y0) / h + y0 - cy) * self.mm_per_px
        a, b = EYE_ELLIPSE_MM
        inside_mm = (1.0 - np.hypot(dx / a, dy / b)) * min(a, b)  # ~ distance inside the rim
        return np.clip(inside_mm / EYE_FEATHER_MM + 0.5, 0.0, 1.0).astype(np.float32)

    def crop_region(self, aligned: np.ndarray, name: str) -> np.ndarray:
        """Crop region ``name`` of an aligned face, resized to the region's crop size."""
        reg = self.region(name)
        crop = crop_box(aligned, reg.box_px)
        if crop.shape[1::-1] != reg.crop_size:
            crop = cv2.resize(crop, reg.crop_size, interpolation=cv2.INTER_AREA)
        return crop
