"""Headset camera rendering of a per-frame face mesh (numpy + OpenCV, a few ms per camera).

Why this design: the simulator renders every source frame from three cameras and several view
poses, on CPU, inside a multiprocess builder, so it has to be fast and exactly reproducible. And
headset eye cameras sit 5-40 mm from the skin with wide lenses, so parts of the face lie beside or
behind the camera: triangles must be clipped at a near plane rather than dropped (dropping leaves
straight-edged holes), and a big clipped triangle is not served well by interpolating linearly
between distorted vertices. So, per camera:

1. vertices -> camera frame; backface culling by the sign of ``det[a, b, c]`` (the orientation of
   the triangle seen from the camera centre; valid even for triangles the near plane cuts);
2. clip against the near plane ``z = near_mm`` (Sutherland-Hodgman: 1 or 2 triangles out);
3. painter's algorithm on an undistorted *pinhole* buffer (same fx, fy, wide enough to hold every
   ray the real lens sees): triangle ids drawn far-to-near with ``cv2.fillConvexPoly`` into an
   int32 id buffer, so the nearest triangle wins each pixel;
4. every output pixel's ray is known once per camera (``undistort_points`` of the pixel grid: the
   calibrated lens exactly, whatever its model): look its triangle up in the id buffer and
   evaluate that triangle's perspective-correct map to a source-frame pixel (affine in 1/z, u/z,
   v/z);
5. one ``cv2.remap`` of the source frame; pixels that see no face get the dark inside of the
   headset.

Views: ``front`` is the calibration exactly. Other views orbit every camera about its look-at
point (the point of its optical axis nearest to the centre of the face region it films, at z = 0)
by ``(droll, dpitch, dyaw)`` degrees, ``R_orbit = Ry(dyaw) @ Rx(dpitch) @ Rz(droll)`` in the head
frame, so the region stays centred while the camera swings around it. ``left-60`` swings the
cameras 60 degrees toward the wearer's left (+x; dyaw = -60 in the calibration's sign), ``right-60``
toward the wearer's right, ``top-30`` 30 degrees up (toward -y, looking down at the face).

Clamping: eye cameras sit close to the face, and a full 60 degree swing can bury them in the nose
or brow. Each orbit is therefore scaled down (in steps of 5 % of the angle) until the camera centre
keeps ``min_clearance_mm`` outside a fixed head proxy: an ellipsoid roughly enclosing an adult head
(centre (0, 15, 75) mm, semi-axes (78, 105, 90) mm, front surface near z = -15 mm) plus one for the
nose (centre (0, 22, -5), semi-axes (13, 26, 28): bridge near z = -20, tip z = -33). The angles
actually used are in :meth:`HeadsetRenderer.view_angles`. The proxy is fixed, not the frame's mesh,
so a view is the same camera pose for every frame. A swing that would end inside the margin
is not taken at all when even 5 % of it would (e.g. ``vive_focus_like``'s eye cameras sit beside
the nose already: they swing fully away from it and not at all toward it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import cv2
import numpy as np

from revavatar.core.calibration import CameraCalibration, rotation_head_from_cam

if TYPE_CHECKING:
    from revavatar.core.calibration import HeadsetCalibration
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.vrface.mesh import FaceMesh

__all__ = [
    "CAMERA_REGIONS",
    "VIEWS",
    "HeadsetRenderer",
    "RenderConfig",
    "RenderedView",
    "clip_near",
    "enrolled_depth",
    "orbit_camera",
    "rasterize",
    "render_depth_orthographic",
    "render_orthographic",
    "rotation_to_deg",
]

#: view name -> (droll, dpitch, dyaw) degrees of the orbit applied to every camera
VIEWS: Final[dict[str, tuple[float, float, float]]] = {
    "front": (0.0, 0.0, 0.0),
    "left-60": (0.0, 0.0, -60.0),
    "right-60": (0.0, 0.0, 60.0),
    "top-30": (0.0, -30.0, 0.0),
}
#: camera name -> the canonical region it films (its look-at point is that region's centre)
CAMERA_REGIONS: Final[dict[str, str]] = {
    "left_eye": "left_eye",
    "right_eye": "right_eye",
    "lower_face": "lower_face",
}
#: head proxy for the orbit clamp: (centre, semi-axes) mm of the head and the nose ellipsoids
_PROXY: Final = (
    (np.array([0.0, 15.0, 75.0]), np.array([78.0, 105.0, 90.0])),
    (np.array([0.0, 22.0, -5.0]), np.array([13.0, 26.0, 28.0])),
)
#: rays beyond this tangent (76 deg off-axis) are never rendered, whatever the lens
_MAX_TAN: Final = 4.0
_SHIFT: Final = 4  # fillConvexPoly sub-pixel bits
_ONE: Final = 1 << _SHIFT


@dataclass(frozen=True)
class RenderConfig:
    """Renderer settings.

    Attributes:
        background: gray level (0-255) of pixels that see no face (inside of the headset).
        near_mm: near clipping plane distance from the camera centre, mm.
        min_clearance_mm: orbit clamp margin outside the head proxy (see module doc), mm.
    """

    background: int = 12
    near_mm: float = 1.0
    min_clearance_mm: float = 8.0

    def __post_init__(self) -> None:
        if not 0 <= self.background <= 255:
            msg = f"RenderConfig.background must be 0..255, got {self.background}"
            raise ValueError(msg)
        if self.near_mm <= 0 or self.min_clearance_mm < 0:
            msg = (
                "RenderConfig needs near_mm > 0 and min_clearance_mm >= 0, got "
                f"{self.near_mm}, {self.min_clearance_mm}"
            )
            raise ValueError(msg)


@dataclass(frozen=True)
class RenderedView:
    """One camera's render: the image, which pixels show the face, and the camera pose used."""

    image: np.ndarray
    mask: np.ndarray  # (H, W) bool, True where a mesh triangle covers the pixel
    camera: CameraCalibration


def rotation_to_deg(rot: np.ndarray) -> tuple[float, float, float]:
    """Inverse of ``rotation_head_from_cam``: 3x3 ``Ry @ Rx @ Rz`` -> (roll, pitch, yaw) degrees."""
    r = np.asarray(rot, dtype=np.float64)
    pitch = math.asin(max(-1.0, min(1.0, -r[1, 2])))
    roll = math.atan2(r[1, 0], r[1, 1])
    yaw = math.atan2(r[0, 2], r[2, 2])
    return math.degrees(roll), math.degrees(pitch), math.degrees(yaw)


def _look_at(camera: CameraCalibration, target: np.ndarray) -> np.ndarray:
    """Point of the optical axis nearest to ``target`` (at least 1 mm ahead of the camera)."""
    axis = camera.R_head_from_cam()[:, 2]
    t = camera.translation_mm
    return t + max(float((target - t) @ axis), 1.0) * axis


def _inside_proxy(point: np.ndarray, clearance: float) -> bool:
    for centre, axes in _PROXY:
        rel = (point - centre) / (axes + clearance)
        if float(rel @ rel) < 1.0:
            return True
    return False


def orbit_camera(
    camera: CameraCalibration,
    pivot: np.ndarray,
    angles_deg: tuple[float, float, float],
    clearance_mm: float = 8.0,
) -> tuple[CameraCalibration, tuple[float, float, float]]:
    """Swing ``camera`` about ``pivot`` by (droll, dpitch, dyaw), clamped to stay outside the head.

    Returns:
        The posed camera and the (droll, dpitch, dyaw) actually applied: the full angles scaled
        down in 5 % steps while the swing would put the camera centre inside the head proxy.
    """
    t = camera.translation_mm
    rot = camera.R_head_from_cam()
    scaled: tuple[float, ...] = (0.0, 0.0, 0.0)
    r_orb, t_new = np.eye(3), t
    for k in range(20, 0, -1):
        trial = tuple(a * k / 20 for a in angles_deg)
        r_try = rotation_head_from_cam(trial)  # type: ignore[arg-type]
        t_try = pivot + r_try @ (t - pivot)
        if not _inside_proxy(t_try, clearance_mm):
            scaled, r_orb, t_new = trial, r_try, t_try
            break
    if not any(scaled):
        return camera, (0.0, 0.0, 0.0)
    posed = dataclasses.replace(camera, translation_mm=t_new, rotation_deg=rotation_to_deg(r_orb @ rot))
    return posed, scaled  # type: ignore[return-value]


def rasterize(
    pix: np.ndarray,
    depth: np.ndarray,
    triangles: np.ndarray,
    size: tuple[int, int],
) -> np.ndarray:
    """Painter's-algorithm id buffer: (H, W) int32 index into ``triangles``, -1 where empty.

    Triangles with non-positive signed area (back faces on the y-down image) are culled.

    Args:
        pix: (V, 2) buffer position of each vertex (pixel centres at integers).
        depth: (V,) distance along the viewing direction (larger = farther).
        triangles: (T, 3) vertex indices, front faces clockwise on the y-down image.
        size: (width, height) of the buffer.
    """
    w, h = size
    ids = np.full((h, w), -1, dtype=np.int32)
    tri_pix = pix[triangles]  # (T, 3, 2)
    d = tri_pix[:, 1:] - tri_pix[:, :1]
    area2 = d[:, 0, 0] * d[:, 1, 1] - d[:, 0, 1] * d[:, 1, 0]
    lo, hi = tri_pix.min(1), tri_pix.max(1)
    keep = (area2 > 1e-9) & (hi[:, 0] >= -1) & (hi[:, 1] >= -1) & (lo[:, 0] <= w) & (lo[:, 1] <= h)
    idx = np.nonzero(keep)[0]
    if not len(idx):
        return ids
    order = idx[np.argsort(-depth[triangles[idx]].mean(1), kind="stable")]
    fixed = np.round(np.clip(tri_pix, -1e6, 1e6) * _ONE).astype(np.int32)
    fill = cv2.fillConvexPoly
    for i in order.tolist():
        fill(ids, fixed[i], i, cv2.LINE_8, _SHIFT)
    return ids


def clip_near(xyz: np.ndarray, uv: np.ndarray, near: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip camera-frame triangles against the plane ``z = near``, keeping their orientation.

    Args:
        xyz: (T, 3, 3) triangle vertices in the camera frame, mm.
        uv: (T, 3, 2) their texture coordinates.
        near: clip plane depth, mm.

    Returns:
        (T', 3, 3) and (T', 3, 2): the parts with z >= near (a triangle with one vertex behind
        becomes two, with two behind becomes one smaller one, with three behind vanishes).
    """
    behind = xyz[:, :, 2] < near
    n_behind = behind.sum(1)
    out_xyz, out_uv = [xyz[n_behind == 0]], [uv[n_behind == 0]]
    for n_b in (1, 2):
        sel = np.nonzero(n_behind == n_b)[0]
        if not len(sel):
            continue
        # rotate each triangle so its odd vertex (the lone behind / lone front one) comes first
        odd = behind[sel] if n_b == 1 else ~behind[sel]
        first = np.argmax(odd, axis=1)
        perm = (first[:, None] + np.arange(3)) % 3
        p = np.take_along_axis(xyz[sel], perm[:, :, None], 1)
        q = np.take_along_axis(uv[sel], perm[:, :, None], 1)

        def cut(i: int, j: int, p: np.ndarray = p, q: np.ndarray = q) -> tuple[np.ndarray, np.ndarray]:
            t = ((near - p[:, i, 2]) / (p[:, j, 2] - p[:, i, 2]))[:, None]
            return p[:, i] + t * (p[:, j] - p[:, i]), q[:, i] + t * (q[:, j] - q[:, i])

        ab, ab_uv = cut(0, 1)
        ac, ac_uv = cut(0, 2)
        if n_b == 1:  # a behind: quad ab, b, c, ca -> (ab, b, c) + (ab, c, ca)
            out_xyz += [np.stack([ab, p[:, 1], p[:, 2]], 1), np.stack([ab, p[:, 2], ac], 1)]
            out_uv += [np.stack([ab_uv, q[:, 1], q[:, 2]], 1), np.stack([ab_uv, q[:, 2], ac_uv], 1)]
        else:  # only a in front: (a, ab, ca)
            out_xyz.append(np.stack([p[:, 0], ab, ac], 1))
            out_uv.append(np.stack([q[:, 0], ab_uv, ac_uv], 1))
    return np.concatenate(out_xyz), np.concatenate(out_uv)


@dataclass(frozen=True)
class _LensGrid:
    """View-independent per-camera lookup: where each output pixel's ray hits the pinhole buffer.

    Buffer pixel of a ray (x, y, 1) = ``(k * (fx * x + cx) - ox, k * (fy * y + cy) - oy)``; the
    scale k < 1 only for very wide lenses, whose pinhole buffer would otherwise be huge. The arrays
    cover every output pixel (row-major), so a render gathers without any scatter: a pixel without
    a valid ray looks up ``sentinel``, one cell past the buffer that always reads "no triangle".
    """

    size: tuple[int, int]  # pinhole buffer (w, h)
    offset: tuple[float, float]  # (ox, oy)
    scale: float  # k
    lookup: np.ndarray  # (H*W,) intp flat buffer index of each pixel's nearest buffer pixel
    bx: np.ndarray  # (H*W,) float32 exact buffer x (0 where the pixel has no valid ray)
    by: np.ndarray  # (H*W,) float32 exact buffer y

    @property
    def sentinel(self) -> int:
        """Flat index of the extra always-empty cell appended to the id buffer."""
        return self.size[0] * self.size[1]


@functools.lru_cache(maxsize=64)
def _lens_grid_cached(
    resolution: tuple[int, int],
    intrinsics: tuple[float, float, float, float],
    model: str,
    dist: tuple[float, ...],
) -> _LensGrid:
    fx, fy, cx, cy = intrinsics
    cam = CameraCalibration(
        "lens", resolution, 30.0, fx, fy, cx, cy, model, dist, np.zeros(3), (0.0, 0.0, 0.0), False
    )
    return _lens_grid_uncached(cam)


def _lens_grid(camera: CameraCalibration) -> _LensGrid:
    """The camera's lens grid, cached per process by resolution, intrinsics and distortion
    (undistorting and re-projecting every pixel is the slow part of building a renderer)."""
    intr = (camera.fx, camera.fy, camera.cx, camera.cy)
    return _lens_grid_cached(camera.resolution, intr, camera.distortion_model, camera.distortion)


def _lens_grid_uncached(camera: CameraCalibration) -> _LensGrid:
    w, h = camera.resolution
    ys, xs = np.mgrid[0:h, 0:w]
    pix = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float64)
    rays = camera.undistort_points(pix)
    valid = np.all(np.isfinite(rays), 1) & (np.abs(rays).max(1) < _MAX_TAN)
    # keep only rays that project back onto their pixel (inside the lens' invertible range);
    # checked on a 4-px lattice (projectPoints is the slow part) and spread to its cells
    gy, gx = np.mgrid[0 : h + 3 : 4, 0 : w + 3 : 4]
    lat = np.stack([np.minimum(gx, w - 1).ravel(), np.minimum(gy, h - 1).ravel()], 1).astype(np.float64)
    lat_rays = camera.undistort_points(lat)
    good = np.all(np.isfinite(lat_rays), 1)
    pts = np.concatenate([np.nan_to_num(lat_rays), np.ones((len(lat), 1))], 1)
    back, _ = camera.project(camera.rays_to_head(pts) + camera.translation_mm)
    good &= np.linalg.norm(back - lat, axis=1) < 0.05
    good_img = cv2.resize(
        good.reshape(gy.shape).astype(np.uint8), None, fx=4, fy=4, interpolation=cv2.INTER_NEAREST
    )
    lattice_ok = cv2.erode(good_img, np.ones((5, 5), np.uint8))[:h, :w].astype(bool).ravel()
    idx = np.nonzero(valid & lattice_ok)[0]
    n = w * h
    if not len(idx):
        zeros = np.zeros(n, dtype=np.float32)
        return _LensGrid((1, 1), (0.0, 0.0), 1.0, np.ones(n, dtype=np.intp), zeros, zeros)
    px = camera.fx * rays[idx, 0] + camera.cx
    py = camera.fy * rays[idx, 1] + camera.cy
    span = max(px.max() - px.min(), py.max() - py.min())
    k = min(1.0, 2.0 * max(w, h) / span)
    px, py = px * k, py * k
    ox, oy = math.floor(px.min()) - 1, math.floor(py.min()) - 1
    bx, by = px - ox, py - oy
    size = (math.ceil(bx.max()) + 2, math.ceil(by.max()) + 2)
    lookup = np.full(n, size[0] * size[1], dtype=np.intp)  # the sentinel cell
    lookup[idx] = np.rint(by).astype(np.intp) * size[0] + np.rint(bx).astype(np.intp)
    full_x, full_y = np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.float32)
    full_x[idx], full_y[idx] = bx, by
    return _LensGrid(size, (float(ox), float(oy)), k, lookup, full_x, full_y)


def _perspective_coefs(q: np.ndarray, z: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(T, 3, 3) C with ``[x, y, 1] @ C = [1/z, u/z, v/z]`` on each triangle's buffer plane."""
    mat = np.concatenate([q, np.ones(q.shape[:2] + (1,))], axis=2)
    inv_z = 1.0 / z
    rhs = np.concatenate([inv_z[..., None], uv * inv_z[..., None]], axis=2)
    a, b, c = mat[:, 0], mat[:, 1], mat[:, 2]
    adj = np.stack([np.cross(b, c), np.cross(c, a), np.cross(a, b)], axis=2)  # columns
    det = np.einsum("ti,ti->t", a, adj[:, :, 0])
    ok = np.abs(det) > 1e-9
    coef = np.zeros((len(q), 3, 3))
    coef[ok] = np.einsum("tij,tjk->tik", adj[ok], rhs[ok]) / det[ok, None, None]
    coef[~ok, 2, 0] = 1.0  # degenerate: constant mean uv
    coef[~ok, 2, 1:] = uv[~ok].mean(1)
    return coef


def _sample_maps(
    coef: np.ndarray, tri: np.ndarray, bx: np.ndarray, by: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Source pixel (u, v) at buffer points (bx, by) through triangle ``tri``'s coefficients.

    ``tri`` = -1 selects an appended constant map to (-1, -1) (no triangle: the caller paints
    those pixels with the background), so whole images are evaluated without masking.
    """
    c = np.empty((len(coef) + 1, 9), dtype=np.float32)
    c[:-1] = coef.reshape(len(coef), 9)
    c[-1] = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0, -1.0)
    c = np.take(c, tri.astype(np.intp, copy=False), axis=0)  # row gather: faster than c[tri]
    w0 = bx * c[:, 0] + by * c[:, 3] + c[:, 6]
    u = (bx * c[:, 1] + by * c[:, 4] + c[:, 7]) / w0
    v = (bx * c[:, 2] + by * c[:, 5] + c[:, 8]) / w0
    return u, v


def _render_camera(
    source: np.ndarray, mesh: FaceMesh, cam: CameraCalibration, grid: _LensGrid, config: RenderConfig
) -> tuple[np.ndarray, np.ndarray]:
    w, h = cam.resolution
    shape = (h, w) if source.ndim == 2 else (h, w, source.shape[2])
    pts = cam.to_camera(mesh.vertices.astype(np.float64))
    xyz = pts[mesh.triangles]
    uv = mesh.uv.astype(np.float64)[mesh.triangles]
    front = np.einsum("ti,ti->t", xyz[:, 0], np.cross(xyz[:, 1], xyz[:, 2])) > 0
    xyz, uv = clip_near(xyz[front], uv[front], config.near_mm)
    z = xyz[:, :, 2]
    ox, oy = grid.offset
    k = grid.scale
    q = np.stack(
        [k * (cam.fx * xyz[:, :, 0] / z + cam.cx) - ox, k * (cam.fy * xyz[:, :, 1] / z + cam.cy) - oy], 2
    )
    tris = np.arange(q.shape[0] * 3, dtype=np.int32).reshape(-1, 3)
    ids = rasterize(q.reshape(-1, 2), z.ravel(), tris, grid.size)
    ids_ext = np.empty(ids.size + 1, dtype=np.int32)
    ids_ext[:-1] = ids.ravel()
    ids_ext[-1] = -1  # the sentinel cell of pixels without a valid ray
    hit = np.take(ids_ext, grid.lookup)
    mask = (hit >= 0).reshape(h, w)
    if not mask.any():
        return np.full(shape, config.background, dtype=np.uint8), mask
    coef = _perspective_coefs(q, z, uv)
    u, v = _sample_maps(coef, hit, grid.bx, grid.by)
    img = cv2.remap(source, u.reshape(h, w), v.reshape(h, w), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    img[~mask] = config.background
    return img, mask


def _orthographic_lookup(
    mesh: FaceMesh, layout: CanonicalLayout, values: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex ``values`` (V, 2) interpolated over the frontal orthographic view of ``mesh``
    in canonical pixels: ((size, size, 2) float32, -1 where no triangle; (size, size) bool)."""
    pix = mesh.frontal_pixels(layout)
    size = layout.size
    ids = rasterize(pix, mesh.vertices[:, 2].astype(np.float64), mesh.triangles, (size, size))
    mask = ids >= 0
    out = np.full((size, size, 2), -1.0, dtype=np.float32)
    if mask.any():
        ys, xs = np.nonzero(mask)
        tri = mesh.triangles
        coef = _perspective_coefs(pix[tri], np.ones(tri.shape), np.asarray(values, np.float64)[tri])
        a, b = _sample_maps(coef, ids[ys, xs], xs.astype(np.float32), ys.astype(np.float32))
        out[ys, xs, 0], out[ys, xs, 1] = a, b
    return out, mask


def render_orthographic(
    frame_bgr: np.ndarray, mesh: FaceMesh, layout: CanonicalLayout, background: int = 12
) -> tuple[np.ndarray, np.ndarray]:
    """The mesh seen frontally and orthographically in canonical pixels: (image, mask).

    This is the view ``align_face`` produces for the face area; tests compare the two. Texture
    coordinates are interpolated affinely (exact for an orthographic camera).
    """
    size = layout.size
    uv, mask = _orthographic_lookup(mesh, layout, mesh.uv)
    if not mask.any():
        shape = (size, size) if frame_bgr.ndim == 2 else (size, size, frame_bgr.shape[2])
        return np.full(shape, background, dtype=np.uint8), mask
    img = cv2.remap(frame_bgr, uv[..., 0], uv[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    img[~mask] = background
    return img, mask


def render_depth_orthographic(mesh: FaceMesh, layout: CanonicalLayout) -> tuple[np.ndarray, np.ndarray]:
    """Head-frame depth z (mm) of the mesh surface at every canonical pixel: (depth, mask).

    The frontal twin of a depth render: with it a canonical pixel becomes the 3D point of the
    face it shows, which any calibrated camera can then project (``SurfaceAligner``). Pixels off
    the mesh get depth 0 (the eye-corner plane) and False in ``mask``.
    """
    z = mesh.vertices[:, 2].astype(np.float64)
    vals, mask = _orthographic_lookup(mesh, layout, np.stack([z, z], 1))
    depth = vals[..., 0]
    depth[~mask] = 0.0
    return depth, mask


def enrolled_depth(mesh: FaceMesh, layout: CanonicalLayout) -> np.ndarray:
    """Canonical depth (mm) of an enrolled face as the ``surface`` aligner uses it: the mesh with
    the selfie's head turn taken out first (:func:`revavatar.vrface.mesh.without_yaw`), since in
    the headset's frame the wearer's face does not turn."""
    from revavatar.vrface.mesh import without_yaw  # noqa: PLC0415

    return render_depth_orthographic(without_yaw(mesh), layout)[0]


def _check_angles(name: str, angles: object) -> tuple[float, float, float]:
    try:
        vals = tuple(float(a) for a in angles)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        msg = f"view {name!r}: expected (droll, dpitch, dyaw) degrees, got {angles!r}"
        raise ValueError(msg) from err
    if len(vals) != 3 or not all(math.isfinite(a) and abs(a) <= 180.0 for a in vals):
        msg = f"view {name!r}: expected 3 finite angles within +-180 deg, got {angles!r}"
        raise ValueError(msg)
    return vals  # type: ignore[return-value]


class HeadsetRenderer:
    """Renders a :class:`FaceMesh` from every camera of a headset calibration, for named views.

    Camera poses per view and each lens' pixel -> ray grid are computed once here; :meth:`render`
    only transforms, rasterises and samples.
    """

    def __init__(
        self,
        calibration: HeadsetCalibration,
        layout: CanonicalLayout,
        views: Mapping[str, tuple[float, float, float]] = VIEWS,
        extra_views: Mapping[str, tuple[float, float, float]] | None = None,
        config: RenderConfig | None = None,
    ) -> None:
        """Pose every camera for every view.

        Args:
            calibration: the headset profile (cameras, poses, lenses).
            layout: canonical layout (defines the region centres the cameras look at).
            views: view name -> (droll, dpitch, dyaw) degrees; default :data:`VIEWS`.
            extra_views: more views, e.g. from a YAML, same form; may not reuse a name.
            config: renderer settings.

        Raises:
            ValueError: a malformed view or a duplicate view name.
        """
        self.calibration = calibration
        self.layout = layout
        self.config = config or RenderConfig()
        all_views = {name: _check_angles(name, a) for name, a in views.items()}
        for name, angles in (extra_views or {}).items():
            if name in all_views:
                msg = f"extra view {name!r} duplicates a view; views are {', '.join(all_views)}"
                raise ValueError(msg)
            all_views[name] = _check_angles(name, angles)
        self.views = all_views
        self._cams: dict[str, dict[str, CameraCalibration]] = {}
        self._angles: dict[str, dict[str, tuple[float, float, float]]] = {}
        for view, angles in all_views.items():
            self._cams[view], self._angles[view] = {}, {}
            for name, cam in calibration.cameras.items():
                pivot = _look_at(cam, self._region_centre(name))
                posed, used = orbit_camera(cam, pivot, angles, self.config.min_clearance_mm)
                self._cams[view][name] = posed
                self._angles[view][name] = used
        self._grids = {name: _lens_grid(cam) for name, cam in calibration.cameras.items()}

    def _region_centre(self, camera_name: str) -> np.ndarray:
        region = self.layout.region(CAMERA_REGIONS.get(camera_name, "eye_band"))
        x0, y0, x1, y1 = region.box_px
        return self.layout.pixel_to_head(np.array([[(x0 + x1) / 2, (y0 + y1) / 2]]))[0]

    def _check_view(self, view: str) -> None:
        if view not in self._cams:
            msg = f"unknown view {view!r}; expected one of {', '.join(self._cams)}"
            raise ValueError(msg)

    def camera(self, view: str, name: str) -> CameraCalibration:
        """The posed camera ``name`` of ``view``.

        Raises:
            ValueError: unknown view or camera.
        """
        self._check_view(view)
        try:
            return self._cams[view][name]
        except KeyError:
            msg = f"unknown camera {name!r}; expected one of {', '.join(self._cams[view])}"
            raise ValueError(msg) from None

    def view_angles(self, view: str) -> dict[str, tuple[float, float, float]]:
        """(droll, dpitch, dyaw) actually applied per camera for ``view`` (after clamping)."""
        self._check_view(view)
        return dict(self._angles[view])

    def render_views(
        self, frame_bgr: np.ndarray, mesh: FaceMesh, view: str = "front"
    ) -> dict[str, RenderedView]:
        """Like :meth:`render`, also returning each camera's face mask and posed calibration.

        Raises:
            ValueError: unknown view, or a frame that is not a uint8 BGR image.
        """
        self._check_view(view)
        if frame_bgr.dtype != np.uint8 or frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3:
            msg = f"render needs a uint8 BGR frame (H, W, 3), got {frame_bgr.dtype} {frame_bgr.shape}"
            raise ValueError(msg)
        gray = None
        out: dict[str, RenderedView] = {}
        for name, cam in self._cams[view].items():
            if cam.infrared and gray is None:
                gray = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
            source = gray if cam.infrared else frame_bgr
            img, mask = _render_camera(source, mesh, cam, self._grids[name], self.config)  # type: ignore[arg-type]
            out[name] = RenderedView(img, mask, cam)
        return out

    def render(self, frame_bgr: np.ndarray, mesh: FaceMesh, view: str = "front") -> dict[str, np.ndarray]:
        """Render ``mesh`` (textured by ``frame_bgr``) from every camera for ``view``.

        Returns:
            camera name -> image at the camera's resolution: uint8 (H, W) for infrared cameras,
            uint8 (H, W, 3) BGR otherwise.

        Raises:
            ValueError: unknown view or a frame that is not uint8 BGR.
        """
        return {name: rv.image for name, rv in self.render_views(frame_bgr, mesh, view).items()}
