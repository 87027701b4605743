"""Baseline aligner: calibrated rectification of a headset camera image onto the canonical face.

A headset camera sees the eye or mouth obliquely, through a distorting lens, from a pose that is
known from the calibration. If the face is approximated by the plane ``z = 0`` of the head frame
(the plane through the eye centres, seen frontally and orthographically by the canonical layout),
every pixel of a canonical region crop corresponds to one head-frame point, and that point to one
camera pixel. For a pinhole camera the composite mapping is a 3x3 homography
(:meth:`HomographyAligner.rectification_homography`); with lens distortion it is not, so the
aligner evaluates the exact mapping once per crop pixel in ``__init__`` and stores it as a remap
grid. Each frame is then a single :func:`cv2.remap`: exact for the distortion and cheaper than
per-frame maths. Parts of the face off the plane (nose, lids) are rectified with a parallax
error; that is the baseline's limit, which learned aligners improve on.

:class:`SurfaceAligner` drops the plane: given the depth of the face surface at every canonical
pixel (the enrolled face's mesh, or a simulated frame's own mesh), each crop pixel is the 3D
point it shows and the remap grid is exact up to occlusion. On the enrolled face it is the
product's ``surface`` aligner; on a simulated frame's own mesh (``plane_fallback=False``) it is
the exact inverse of the render, the geometric bound the gaze-floor benchmark measures against.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from revavatar.errors import InputError

if TYPE_CHECKING:
    from revavatar.core.calibration import CameraCalibration, HeadsetCalibration
    from revavatar.core.canonical import CanonicalLayout, Region

__all__ = ["EYE_SOURCES", "HOUSING_BRIDGE_PX", "HOUSING_CORE", "HOUSING_GROW_PX",
           "HOUSING_LEVEL", "VIEW_TONES", "HomographyAligner", "SurfaceAligner", "build_aligners",
           "camera_eye", "enrollment_input", "housing_mask", "toned_view"]

#: where a learned eye aligner's eye opening comes from: the network's output, or the rectified
#: camera view in the output's tone (:func:`camera_eye`)
EYE_SOURCES: Final = ("network", "camera")
#: the tone a learned aligner reads its camera view in (:func:`toned_view`)
VIEW_TONES: Final = ("camera", "enrollment", "enrollment-skin")

#: gray level at or below which a dark area touching the crop's border is taken for the headset's
#: housing (or, in simulation, for nothing rendered) rather than for the face; see
#: :func:`housing_mask`. An IR-lit face is far brighter; a pupil is dark but does not touch the
#: border.
HOUSING_LEVEL: Final = 24
#: how far (px) the housing mask reaches beyond the dark area: the housing's soft edge
HOUSING_GROW_PX: Final = 5
#: dark strokes thinner than this (px: lashes, eyeliner, the lip line, a brow) do not join a dark
#: feature to the housing; the housing itself is a broad band
HOUSING_BRIDGE_PX: Final = 7
#: semi-axes (fractions of the crop's width and height) of an eye crop's central ellipse, never
#: taken for housing: the canonical eye crops hold the eye there (corners at 0.24-0.77 of the
#: width), and a housing that covered it would leave nothing to align
HOUSING_CORE: Final = (0.3, 0.2)


class HomographyAligner:
    """Rectify one camera's images into one canonical region crop.

    Attributes:
        method: ``"homography"`` (recorded with results so baselines and learned aligners can be
            told apart).
        camera: the camera calibration the grid was built for.
        region: the canonical region the crops show.
        layout: the canonical layout (size, head-frame scale).
        plane_z_mm: depth of the face plane in the head frame (mm).
        valid_mask: (h, w) bool, crop pixels the camera actually images; the others are filled
            with ``border_value`` and should not be pasted.
        coverage: fraction of crop pixels in ``valid_mask``.
    """

    method: Final[str] = "homography"

    def __init__(
        self,
        camera: CameraCalibration,
        region: Region,
        layout: CanonicalLayout,
        *,
        plane_z_mm: float = 0.0,
        face_plane: bool = False,
        border_value: int = 0,
        interpolation: int = cv2.INTER_LINEAR,
        fixed_point: bool = True,
    ) -> None:
        """Build the remap grid.

        Args:
            camera: calibration of the camera whose images will be aligned.
            region: canonical region to produce (its ``box_px`` and ``crop_size``).
            layout: canonical layout that defines the head-frame scale.
            plane_z_mm: depth of the rectification plane (0 = through the eye centres), added to
                the region's mean face plane when ``face_plane`` is set.
            face_plane: rectify onto the region's mean face plane (``region.plane``, tilted)
                instead of the frontal plane; what the product's baseline uses.
            border_value: fill for crop pixels outside the camera's view.
            interpolation: cv2 interpolation flag for :func:`cv2.remap`.
            fixed_point: store the grid as fixed-point maps (1/32 px), about twice as fast to
                apply; set False for float maps.
        """
        self.camera = camera
        self.region = region
        self.layout = layout
        self.plane_z_mm = float(plane_z_mm)
        self.plane = region.plane if face_plane else (0.0, 0.0, 0.0)
        self.border_value = int(border_value)
        self.interpolation = int(interpolation)
        w, h = region.crop_size
        jj, ii = np.mgrid[0:h, 0:w]
        crop_px = np.stack([ii.ravel(), jj.ravel()], axis=1).astype(np.float64)
        head = self.crop_to_head(crop_px)
        uv, _ = camera.project(head)
        valid = camera.in_view(head)
        uv[:, 0] = np.clip(uv[:, 0], 0, camera.width - 1)
        uv[:, 1] = np.clip(uv[:, 1], 0, camera.height - 1)
        uv[~valid] = -16.0  # far enough outside for the bilinear taps to read only the border
        map_x = uv[:, 0].reshape(h, w).astype(np.float32)
        map_y = uv[:, 1].reshape(h, w).astype(np.float32)
        if fixed_point:
            self._map1, self._map2 = cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)
        else:
            self._map1, self._map2 = map_x, map_y
        self.valid_mask = valid.reshape(h, w)
        self.valid_mask.setflags(write=False)
        self.coverage = float(valid.mean())

    def _crop_to_canonical(self) -> np.ndarray:
        """3x3 affine: crop pixel -> canonical pixel (pixel-centre convention of cv2.resize)."""
        x0, y0, x1, y1 = self.region.box_px
        w, h = self.region.crop_size
        sx, sy = (x1 - x0) / w, (y1 - y0) / h
        return np.array(
            [[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5], [0.0, 0.0, 1.0]]
        )

    def crop_to_head(self, crop_px: np.ndarray) -> np.ndarray:
        """Crop pixels (N, 2) -> head-frame points (N, 3) on the rectification plane.

        The plane is ``z = plane_z_mm + z0 + gx (x - cx) + gy (y - cy)`` with ``(gx, gy, z0) =
        self.plane`` about the box centre ``(cx, cy)`` (flat ``z = plane_z_mm`` by default).

        Crop pixel ``(i, j)`` shows canonical pixel ``x0 + (i + 0.5) * sx - 0.5`` (likewise y),
        the sampling of :meth:`CanonicalLayout.crop_region`, so an aligned crop lines up with a
        crop of the aligned ground truth.
        """
        pts = np.asarray(crop_px, dtype=np.float64).reshape(-1, 2)
        a = self._crop_to_canonical()
        canon = pts @ a[:2, :2].T + a[:2, 2]
        head = self.layout.pixel_to_head(canon, z=self.plane_z_mm)
        gx, gy, z0 = self.plane
        if gx or gy or z0:
            x0, y0, x1, y1 = self.region.box_px
            cx, cy, _ = self.layout.pixel_to_head(np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]))[0]
            head[:, 2] += z0 + gx * (head[:, 0] - cx) + gy * (head[:, 1] - cy)
        return head

    def rectification_homography(self) -> np.ndarray:
        """3x3 homography: crop pixel ``(i, j, 1)`` -> UNDISTORTED camera pixel (homogeneous).

        ``H = K @ R.T @ M`` where the columns of ``M`` (3x3) are the head-frame steps of one crop
        pixel in i and in j and the offset ``X(0, 0) - t`` (``t`` the camera centre): the
        plane-induced homography, valid because crop pixels map affinely onto the (possibly
        tilted) plane. It equals the remap grid exactly when the lens has no distortion; with
        distortion, apply it to ``cv2.undistort``-ed images (the remap grid already includes the
        lens). Normalised so that ``H[2, 2] == 1`` when possible.
        """
        basis = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
        head = self.crop_to_head(basis)
        t = self.camera.translation_mm
        m = np.stack([head[1] - head[0], head[2] - head[0], head[0] - t], axis=1)
        hom = self.camera.K() @ self.camera.R_head_from_cam().T @ m
        if abs(hom[2, 2]) > 1e-12:
            hom = hom / hom[2, 2]
        return hom

    def align(self, image: np.ndarray) -> np.ndarray:
        """Rectify one camera frame into the region crop.

        Args:
            image: uint8 gray (H, W) or BGR (H, W, 3) at the camera's calibrated resolution.

        Returns:
            The crop, (h, w) or (h, w, 3) at ``region.crop_size``, same channels as the input.

        Raises:
            InputError: the frame's size differs from the calibration's resolution.
        """
        if image.shape[:2] != (self.camera.height, self.camera.width):
            msg = (
                f"{self.camera.name} frame is {image.shape[1]}x{image.shape[0]} but its "
                f"calibration says {self.camera.width}x{self.camera.height}"
            )
            raise InputError(msg)
        return cv2.remap(
            image,
            self._map1,
            self._map2,
            self.interpolation,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=(self.border_value,) * 4,
        )


class SurfaceAligner(HomographyAligner):
    """Rectification onto a face surface given as a canonical depth map (see module docstring).

    Args:
        camera, region, layout: as for :class:`HomographyAligner`.
        depth_mm: (size, size) float head-frame z (mm) at every canonical pixel of ``layout``
            (:func:`revavatar.vrface.renderer.render_depth_orthographic` of a face mesh).
        plane_fallback: map crop pixels whose surface point the camera cannot see through the
            face plane instead (see :meth:`crop_to_head`); False keeps the pure surface mapping
            (analysis: the exact inverse of a render).
        **kw: ``border_value``, ``interpolation``, ``fixed_point`` of the parent.

    Raises:
        ValueError: ``depth_mm`` is not a finite (size, size) array.
    """

    method: Final[str] = "surface"

    def __init__(self, camera: CameraCalibration, region: Region, layout: CanonicalLayout,
                 depth_mm: np.ndarray, *, plane_fallback: bool = True, **kw: object) -> None:
        depth = np.asarray(depth_mm, dtype=np.float32)
        if depth.shape != (layout.size, layout.size) or not np.isfinite(depth).all():
            msg = (f"depth_mm must be a finite ({layout.size}, {layout.size}) array, got "
                   f"{depth.dtype} {depth.shape}")
            raise ValueError(msg)
        self.depth_mm = depth
        self.plane_fallback = bool(plane_fallback)
        super().__init__(camera, region, layout, face_plane=True, **kw)  # type: ignore[arg-type]

    def crop_to_head(self, crop_px: np.ndarray) -> np.ndarray:
        """Crop pixels (N, 2) -> head-frame points (N, 3) on the surface (bilinear depth).

        Where the surface point is out of the camera's view (the face turns away from it at the
        crop's edge) the point on the region's mean face plane is used instead, so the crop covers
        at least what the baseline covers: the graph pastes the pixels that plane rectification
        sees (``stages.camera_visibility``), and those must never be the black border.
        """
        pts = np.asarray(crop_px, dtype=np.float64).reshape(-1, 2)
        a = self._crop_to_canonical()
        canon = pts @ a[:2, :2].T + a[:2, 2]
        xy = canon.astype(np.float32).reshape(-1, 1, 2)
        z = cv2.remap(self.depth_mm, xy[..., 0], xy[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_REPLICATE).ravel()
        head = self.layout.pixel_to_head(canon, z.astype(np.float64))
        unseen = ~self.camera.in_view(head) if self.plane_fallback else np.zeros(len(head), bool)
        if unseen.any():
            head[unseen] = super().crop_to_head(pts[unseen])
        return head


def build_aligners(
    calibration: HeadsetCalibration, layout: CanonicalLayout
) -> dict[str, HomographyAligner]:
    """One aligner per headset camera, each onto the canonical region of the same name."""
    return {
        name: HomographyAligner(cam, layout.region(name), layout)
        for name, cam in calibration.cameras.items()
    }


def housing_mask(crop: np.ndarray, level: int = HOUSING_LEVEL,
                 grow_px: int = HOUSING_GROW_PX, protect_centre: bool = True) -> np.ndarray:
    """Bool mask of the broad dark areas (<= ``level``) of a rectified crop that touch its
    border, grown by ``grow_px``: where the headset's own housing blocks the lens, not the face.

    The calibration says which crop pixels a camera could image (``valid_mask``), but not where
    its housing cuts into the view, and a rectification paints that as black face. Those areas
    are dark, broad and reach the image edge. The face's dark parts (pupils, an open mouth) are
    enclosed by skin, but a thin dark stroke (lashes, eyeliner, the lip line) can join them to
    the border: thin strokes are cut first (an opening by :data:`HOUSING_BRIDGE_PX`), and with
    ``protect_centre`` the crop's central ellipse (:data:`HOUSING_CORE`) is never masked. Without
    both, one eye crop in ten of the VR-Face test views lost most of its eye to the enrollment
    fill, often a dark IR view whose lids fall below ``level``. An eye camera images its whole
    crop, so dark at its centre is eye; a lower-face camera does not see the chin under the
    mouth, which reaches the crop's centre (``protect_centre=False`` there).
    """
    luma = crop if crop.ndim == 2 else crop.max(axis=2)
    dark = (luma <= level).astype(np.uint8)
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (HOUSING_BRIDGE_PX, HOUSING_BRIDGE_PX))
    broad = cv2.morphologyEx(dark, cv2.MORPH_OPEN, disc, borderType=cv2.BORDER_REPLICATE)
    _, labels = cv2.connectedComponents(broad, connectivity=8)
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    mask = np.isin(labels, edge[edge > 0])
    if grow_px > 0 and mask.any():
        k = 2 * grow_px + 1
        mask = cv2.dilate(mask.astype(np.uint8),
                          cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    return mask & ~_core(*luma.shape) if protect_centre else mask


@functools.lru_cache(maxsize=8)
def _core(h: int, w: int) -> np.ndarray:
    """Bool mask of the crop's central ellipse (:data:`HOUSING_CORE`), read-only: built once
    per crop size, not on every frame of the alignment node."""
    ax, ay = HOUSING_CORE
    yy, xx = np.mgrid[0:h, 0:w]
    core = ((xx + 0.5 - w / 2) / (ax * w)) ** 2 + ((yy + 0.5 - h / 2) / (ay * h)) ** 2 <= 1.0
    core.setflags(write=False)
    return core


def enrollment_input(rectified: np.ndarray, seen: np.ndarray, dp_face: np.ndarray,
                     layout: CanonicalLayout, region: str) -> tuple[np.ndarray, np.ndarray]:
    """The two inputs of an aligner that also sees the enrolled wearer (``reference`` models).

    Returns ``(view, reference)`` at the region's crop size: ``view`` is the rectified camera
    crop with the pixels its camera cannot see (``seen`` False, the rectifier's ``valid_mask``,
    and the headset's housing, :func:`housing_mask`) filled from the DP's crop, tone-matched to
    the camera (:func:`match_tone`, fitted over the seen pixels) and feathered in; ``reference``
    is the DP's crop as is (gray when the camera is), the wearer's own appearance for what the
    camera cannot tell. A rectification leaves those pixels black, and a network that must invent
    them from black fills them with an average face; the DP is this face.
    """
    from revavatar.core.composite import fill_unseen, match_tone  # noqa: PLC0415

    ref = layout.crop_region(dp_face, region)
    if rectified.ndim == 2 and ref.ndim == 3:
        ref = cv2.cvtColor(ref, cv2.COLOR_BGR2GRAY)
    seen = np.asarray(seen, bool) & ~housing_mask(rectified,
                                                  protect_centre=region.endswith("_eye"))
    view = fill_unseen(rectified, seen, match_tone(ref, rectified, seen))
    return view, ref


def toned_view(view: np.ndarray, reference: np.ndarray, tone: str,
               eye: np.ndarray | None = None) -> np.ndarray:
    """An aligner's view (``enrollment_input``'s first image) in ``tone``, one of
    :data:`VIEW_TONES`: as the camera gives it, or through the monotone gray-level map that gives
    it the enrollment crop's histogram over the whole crop (``"enrollment"``,
    :func:`revavatar.core.composite.match_histogram`), or through the gain and gamma that match
    its skin, outside the eye, to the enrollment's (``"enrollment-skin"``,
    :func:`revavatar.core.composite.match_gamma`; ``eye``: the region's
    ``CanonicalLayout.eye_weight``).

    The camera's exposure, gamma and IR look change from frame to frame; the enrollment is a
    fixed photo of the same face region. Read in the enrollment's tone, the eye's darkest pixels
    (iris, pupil) sit at the gray levels they have in the target, whatever the exposure, so a
    generator need not learn to undo the exposure before it can place them: on VR-Face the
    committed CycleGAN eyes read 0.5 deg worse on relit views than on the same views replayed
    without their lighting. The enrollment is another moment, though, its eye open wider or
    looking elsewhere; a map fitted over the whole crop also carries that difference of content
    into the eye; a gain and gamma fitted on the skin do not. The map moves no pixel. Neither
    tone has yet beaten the camera's on VR-Face: both win the relit views back and lose as much
    on the clean ones (reports/alignment.md).

    Raises:
        ValueError: an unknown tone, or ``"enrollment-skin"`` without ``eye``.
    """
    if tone not in VIEW_TONES:
        msg = f"unknown view tone {tone!r}; expected one of {', '.join(VIEW_TONES)}"
        raise ValueError(msg)
    if tone == "camera":
        return view
    from revavatar.core.composite import match_gamma, match_histogram  # noqa: PLC0415

    if tone == "enrollment":
        return match_histogram(view, reference, None)
    if eye is None:
        msg = "the enrollment-skin tone is fitted outside the eye: it needs an eye region"
        raise ValueError(msg)
    # the skin: outside the eye, and not the housing's black
    skin = (np.asarray(eye) <= 0.0) & (view > HOUSING_LEVEL) & (reference > HOUSING_LEVEL)
    return match_gamma(view, reference, skin)


def camera_eye(aligned: np.ndarray, rectified: np.ndarray, eye: np.ndarray) -> np.ndarray:
    """A learned aligner's eye crop with its eye opening (``eye``: the region's
    ``CanonicalLayout.eye_weight``, feathered) taken from the rectified camera view, mapped to
    the aligned crop's tone there (:func:`revavatar.core.composite.match_histogram`).

    Gaze lives in a few pixels of the opening, and a network that also reads the enrollment
    carries some of the enrollment's gaze into them, and its open eye over closed lids. On
    VR-Face (open eyes, tone-matched probe, the wearer's shape from 8 frames) the committed
    CycleGAN eyes read 2.24 / 1.63 deg on test with their own eye and 1.32 / 1.74 with the
    camera's, at LPIPS -0.002 / +0.005, and shut eyes 3.5 / 5.6 against 2.2 / 2.4; on val 2.14 /
    1.50 against 1.78 / 1.59, at LPIPS +0.015 / +0.014 (reports/alignment.md), so it is an
    option, not the default. The network still gives the tone, what the camera cannot see, and
    everything around the eye.
    """
    from revavatar.core.composite import eye_over, match_histogram  # noqa: PLC0415

    return eye_over(match_histogram(rectified, aligned, np.asarray(eye) > 0.5), aligned, eye)
