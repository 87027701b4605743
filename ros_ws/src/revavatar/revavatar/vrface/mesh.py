"""Per-frame 3D face mesh in the head frame, textured by the frame it was detected in.

The VR-Face simulator has no 3D scan of anyone: it lifts each source frame to a mesh built from
mediapipe's 468 face-mesh landmarks and renders that mesh from the headset cameras. The mesh is
placed so that its orthographic frontal projection through ``CanonicalLayout.head_to_pixel``
lands exactly on ``CanonicalLayout.align_face`` of the same frame (x, y go through the very same
5-point similarity), which is what lets a learnt aligner map a headset view back onto the frontal
ground-truth crop pixel for pixel.

Topology (fixed, computed once per process from ``FACEMESH_TESSELATION``):

* the 852 real triangles of mediapipe's tessellation (the 3-cliques of its edge graph minus the two
  cliques whose three edges all belong to other triangles), oriented consistently;
* mediapipe's mesh has *holes* at both eye openings (16-vertex lid contours) and at the mouth
  (20-vertex inner-lip contour); each is closed with a fan around an extra centre vertex, so an
  eye camera sees the eyeball texture instead of the headset background;
* a two-ring "skirt" extruded outward and backward from the face oval, textured with what lies
  around the face in the source frame, so steep cameras do not look past the face border.

Vertex order: the 468 landmarks, then the 3 fill centres (right eye, left eye, mouth), then the
skirt rings (inner, outer; 36 vertices each, in oval order).
"""

from __future__ import annotations

import collections
import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from revavatar.core.canonical import CanonicalLayout
    from revavatar.core.landmarks import FaceLandmarks

__all__ = [
    "EYE_CORNERS",
    "N_LANDMARKS",
    "FaceMesh",
    "MeshTopology",
    "SkirtConfig",
    "head_pose_deg",
    "landmarks_to_head",
    "level_yaw",
    "mean_shape",
    "mesh_topology",
    "turn_yaw",
    "without_yaw",
]

#: landmarks of the face mesh proper (the 10 iris points of the 478 scheme are not mesh vertices)
N_LANDMARKS: Final = 468
#: mediapipe indices of the four eye corners (right outer, right inner, left inner, left outer);
#: their mean depth is the head frame's z = 0
EYE_CORNERS: Final = (33, 133, 362, 263)
#: one oval edge and its on-screen sense: walking the face oval from the forehead top (10) to 109
#: (toward the wearer's right = image left) runs counter-clockwise on a frontal y-down image
_OVAL_ANCHOR: Final = (10, 109)
#: mirror pairs (wearer's right, left) whose joining lines make the head's x axis: outer and inner
#: eye corners, cheeks
_X_PAIRS: Final = ((33, 263), (133, 362), (234, 454))
#: landmarks that span the face plane used by :func:`head_pose_deg`
_POSE_PLANE: Final = (33, 133, 362, 263, 61, 291, 10, 152, 234, 454)


@dataclass(frozen=True)
class SkirtConfig:
    """How far the two skirt rings reach beyond the face oval.

    Attributes:
        out_mm: (inner, outer) ring offset outward in the x-y plane, mm.
        back_mm: (inner, outer) ring offset backward (+z, into the head), mm.
    """

    out_mm: tuple[float, float] = (9.0, 20.0)
    back_mm: tuple[float, float] = (12.0, 45.0)

    def __post_init__(self) -> None:
        for name in ("out_mm", "back_mm"):
            val = getattr(self, name)
            if len(val) != 2 or not 0.0 <= val[0] <= val[1] <= 200.0:
                msg = f"SkirtConfig.{name} must be 0 <= inner <= outer <= 200 mm, got {val}"
                raise ValueError(msg)


@dataclass(frozen=True)
class MeshTopology:
    """The fixed triangulation shared by every frame's mesh.

    Attributes:
        triangles: (T, 3) int32, oriented so that a face seen from its front side is clockwise on a
            y-down image (positive signed area), which is what the renderer's backface test keeps.
        oval: (36,) int32 face-oval landmarks, ordered like the skirt rings.
        holes: name -> (n,) int32 hole contour ("right_eye", "left_eye", "mouth"), closed by fans.
        n_vertices: total vertex count (landmarks + fill centres + 2 skirt rings).
    """

    triangles: np.ndarray
    oval: np.ndarray
    holes: dict[str, np.ndarray]
    n_vertices: int

    @property
    def fill_start(self) -> int:
        """Index of the first fill-centre vertex."""
        return N_LANDMARKS

    @property
    def skirt_start(self) -> int:
        """Index of the first skirt vertex."""
        return N_LANDMARKS + len(self.holes)


def _edges(tri: tuple[int, int, int]) -> tuple[tuple[int, int], ...]:
    a, b, c = tri
    return (a, b), (b, c), (c, a)


def _orient(faces: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Flip faces so that every shared edge is walked in opposite senses (breadth first)."""
    by_edge: dict[frozenset[int], list[int]] = collections.defaultdict(list)
    for i, f in enumerate(faces):
        for a, b in _edges(f):
            by_edge[frozenset((a, b))].append(i)
    out: list[tuple[int, int, int] | None] = [None] * len(faces)
    for seed in range(len(faces)):
        if out[seed] is not None:
            continue
        out[seed] = faces[seed]
        queue = collections.deque([seed])
        while queue:
            i = queue.popleft()
            cur = out[i]
            assert cur is not None
            for a, b in _edges(cur):
                for j in by_edge[frozenset((a, b))]:
                    if out[j] is not None:
                        continue
                    f = faces[j]
                    out[j] = (f[0], f[2], f[1]) if (a, b) in _edges(f) else f
                    queue.append(j)
    return [f for f in out if f is not None]


def _boundary_loops(directed: set[tuple[int, int]], boundary: set[frozenset[int]]) -> list[list[int]]:
    """Boundary contours, each walked in the sense its adjacent faces use."""
    nxt = {a: b for a, b in directed if frozenset((a, b)) in boundary}
    loops, seen = [], set()
    for start in sorted(nxt):
        if start in seen:
            continue
        loop, cur = [], start
        while cur not in seen:
            seen.add(cur)
            loop.append(cur)
            cur = nxt[cur]
        loops.append(loop)
    return loops


@functools.lru_cache(maxsize=1)
def mesh_topology() -> MeshTopology:
    """Triangulation of mediapipe's face mesh plus hole fans and skirt (cached per process).

    Raises:
        RuntimeError: mediapipe's tessellation does not have the expected structure.
    """
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    nbrs: dict[int, set[int]] = collections.defaultdict(set)
    for a, b in FACEMESH_TESSELATION:
        nbrs[a].add(b)
        nbrs[b].add(a)
    cliques = sorted(
        {tuple(sorted((a, b, c))) for a in nbrs for b in nbrs[a] if b > a for c in nbrs[a] & nbrs[b] if c > b}
    )
    count: collections.Counter[frozenset[int]] = collections.Counter()
    for t in cliques:
        count.update(frozenset(e) for e in _edges(t))  # type: ignore[arg-type]
    # A 3-cycle that is not a face separates the mesh: each of its edges also borders two faces.
    faces = [t for t in cliques if not all(count[frozenset(e)] > 2 for e in _edges(t))]  # type: ignore[arg-type]
    faces = _orient(faces)  # type: ignore[arg-type]
    directed = {e for f in faces for e in _edges(f)}
    if _OVAL_ANCHOR in directed:  # the oval must run clockwise on screen, like every face
        faces = [(a, c, b) for a, b, c in faces]
        directed = {e for f in faces for e in _edges(f)}
    inc: collections.Counter[frozenset[int]] = collections.Counter(frozenset(e) for e in directed)
    boundary = {e for e, n in inc.items() if n == 1}
    loops = sorted(_boundary_loops(directed, boundary), key=len, reverse=True)
    if [len(lp) for lp in loops] != [36, 20, 16, 16]:
        msg = f"unexpected mediapipe tessellation: boundary loops of {[len(lp) for lp in loops]} vertices"
        raise RuntimeError(msg)
    oval, mouth = loops[0], loops[1]
    eyes = sorted(loops[2:], key=lambda lp: 33 not in lp)  # the loop holding 33 is the right eye
    holes = {"right_eye": eyes[0], "left_eye": eyes[1], "mouth": mouth}

    tris = list(faces)
    for k, loop in enumerate(holes.values()):  # fans walk each contour edge backwards
        centre = N_LANDMARKS + k
        tris += [(loop[(i + 1) % len(loop)], loop[i], centre) for i in range(len(loop))]
    n = len(oval)
    s1 = N_LANDMARKS + len(holes)
    s2 = s1 + n
    for i in range(n):
        a, b = oval[i], oval[(i + 1) % n]
        ia, ib = s1 + i, s1 + (i + 1) % n
        oa, ob = s2 + i, s2 + (i + 1) % n
        tris += [(b, a, ia), (b, ia, ib), (ib, ia, oa), (ib, oa, ob)]
    return MeshTopology(
        triangles=np.asarray(tris, dtype=np.int32),
        oval=np.asarray(oval, dtype=np.int32),
        holes={k: np.asarray(v, dtype=np.int32) for k, v in holes.items()},
        n_vertices=s2 + n,
    )


def _similarity_scale(m: np.ndarray) -> float:
    return math.sqrt(abs(float(np.linalg.det(np.asarray(m, dtype=np.float64)[:, :2]))))


@dataclass(frozen=True, eq=False)
class FaceMesh:
    """One frame's face as a triangle mesh in the head frame.

    Attributes:
        vertices: (V, 3) float32 head-frame mm (x wearer's left, y down, z into the head).
        triangles: (T, 3) int32 vertex indices, front faces clockwise on a y-down image.
        uv: (V, 2) float32 source-frame pixel of each vertex (the texture coordinates).
        similarity: the 2x3 source -> canonical similarity the mesh was placed with, if known.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    similarity: np.ndarray | None = None

    def __post_init__(self) -> None:
        v = np.ascontiguousarray(self.vertices, dtype=np.float32)
        t = np.ascontiguousarray(self.triangles, dtype=np.int32)
        uv = np.ascontiguousarray(self.uv, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != 3 or uv.shape != (len(v), 2):
            msg = f"FaceMesh needs vertices (V, 3) and uv (V, 2), got {v.shape} and {uv.shape}"
            raise ValueError(msg)
        if t.ndim != 2 or t.shape[1] != 3 or (t.size and (t.min() < 0 or t.max() >= len(v))):
            msg = f"FaceMesh triangles must be (T, 3) indices below {len(v)}, got shape {t.shape}"
            raise ValueError(msg)
        object.__setattr__(self, "vertices", v)
        object.__setattr__(self, "triangles", t)
        object.__setattr__(self, "uv", uv)

    @property
    def n_vertices(self) -> int:
        """Vertex count V."""
        return len(self.vertices)

    @classmethod
    def from_landmarks(
        cls,
        lm: FaceLandmarks,
        layout: CanonicalLayout,
        similarity_M: np.ndarray | None = None,  # noqa: N803 - the contract's name
        skirt: SkirtConfig | None = None,
    ) -> FaceMesh:
        """Lift mediapipe landmarks of one frame to a head-frame mesh.

        x, y go through the same similarity ``M`` as ``layout.align_face`` (estimated from
        ``lm.key_points()`` unless given), then canonical pixel -> mm; z is mediapipe's relative
        depth scaled by the same factor, shifted so the four eye corners average z = 0.

        Args:
            lm: landmarks with ``points3d`` (mediapipe468 or mediapipe478).
            layout: the canonical layout that defines the head frame's pixel scale.
            similarity_M: optional 2x3 source -> canonical similarity to reuse.
            skirt: skirt geometry (default :class:`SkirtConfig`).

        Raises:
            ValueError: landmarks without 3D points or with fewer than 468 of them.
        """
        if lm.points3d is None or len(lm.points3d) < N_LANDMARKS:
            msg = f"FaceMesh needs mediapipe 3D landmarks (>= 468 points3d), got scheme {lm.scheme!r}"
            raise ValueError(msg)
        skirt = skirt or SkirtConfig()
        topo = mesh_topology()
        m = np.asarray(
            similarity_M if similarity_M is not None else layout.estimate_similarity(lm.key_points()),
            dtype=np.float64,
        )
        src = np.asarray(lm.points, dtype=np.float64)[:N_LANDMARKS, :2]
        xyz = landmarks_to_head(lm, layout, m)[:N_LANDMARKS]

        fill_xyz = [xyz[loop].mean(0) for loop in topo.holes.values()]
        fill_uv = [src[loop].mean(0) for loop in topo.holes.values()]
        oval = xyz[topo.oval]
        centre = oval[:, :2].mean(0)
        out = oval[:, :2] - centre
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        rings = []
        for d_out, d_back in zip(skirt.out_mm, skirt.back_mm, strict=True):
            ring = oval.copy()
            ring[:, :2] += out * d_out
            ring[:, 2] += d_back
            rings.append(ring)
        skirt_xyz = np.concatenate(rings)
        # texture of the skirt = what the aligned crop shows there (source pixel via M^-1)
        m_inv = np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]
        skirt_px = layout.head_to_pixel(skirt_xyz)
        skirt_uv = skirt_px @ m_inv[:, :2].T + m_inv[:, 2]
        vertices = np.concatenate([xyz, np.asarray(fill_xyz), skirt_xyz])
        uv = np.concatenate([src, np.asarray(fill_uv), skirt_uv])
        return cls(vertices=vertices, triangles=topo.triangles, uv=uv, similarity=m)

    def frontal_pixels(self, layout: CanonicalLayout) -> np.ndarray:
        """Orthographic frontal projection of the vertices into canonical pixels (V, 2)."""
        return layout.head_to_pixel(self.vertices)


def _axes_to_angles(x_axis: np.ndarray, z_axis: np.ndarray) -> tuple[float, float, float]:
    face_dir = -z_axis  # the way the face points (out of the face)
    yaw = math.degrees(math.atan2(face_dir[0], -face_dir[2]))
    pitch = math.degrees(math.atan2(-face_dir[1], math.hypot(face_dir[0], face_dir[2])))
    # roll: angle of the head x axis after undoing yaw and pitch
    cy, sy = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    cp, sp = math.cos(math.radians(pitch)), math.sin(math.radians(pitch))
    ry = np.array([[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]])  # face yaw about image y
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cp, sp], [0.0, -sp, cp]])  # face pitch about image x
    x_local = (ry @ rx).T @ x_axis
    roll = math.degrees(math.atan2(x_local[1], x_local[0]))
    return yaw, pitch, roll


def head_pose_deg(lm: FaceLandmarks) -> tuple[float, float, float]:
    """Head orientation (yaw, pitch, roll) in degrees from the 3D landmarks, relative to the camera.

    What it measures: a head frame fitted to the landmarks' ``points3d`` (image x right, y down,
    z away from the camera, mediapipe's weak-perspective depth). Its x axis runs from the wearer's
    right to left eye/cheek (33->263, 133->362, 234->454 averaged); its z axis is the normal of the
    least-squares plane through eye corners, mouth corners, forehead top, chin and cheeks. Zero is
    a face whose eye line is horizontal and whose face plane is parallel to the image, so a real
    frontal face reads a few degrees of pitch (the plane is not exactly vertical anatomically).

    Signs follow the calibration convention, applied to the direction the face points:
    yaw > 0 = face turned toward image +x (the wearer's left), pitch > 0 = looking up (toward -y),
    roll > 0 = the head's x axis tilted toward +y (clockwise on the image).

    Raises:
        ValueError: landmarks without 468 3D points.
    """
    if lm.points3d is None or len(lm.points3d) < N_LANDMARKS:
        msg = f"head_pose_deg needs mediapipe 3D landmarks, got scheme {lm.scheme!r}"
        raise ValueError(msg)
    p = np.asarray(lm.points3d, dtype=np.float64)[:N_LANDMARKS]
    x_axis = sum(p[b] - p[a] for a, b in _X_PAIRS)
    x_axis /= np.linalg.norm(x_axis)
    plane = p[list(_POSE_PLANE)]
    _, _, vt = np.linalg.svd(plane - plane.mean(0))
    z_axis = vt[2]
    if z_axis[2] < 0:  # z points into the head = away from the camera for a visible face
        z_axis = -z_axis
    z_axis = z_axis - x_axis * float(z_axis @ x_axis)
    z_axis /= np.linalg.norm(z_axis)
    return _axes_to_angles(x_axis, z_axis)


def landmarks_to_head(lm: FaceLandmarks, layout: CanonicalLayout, similarity_M: np.ndarray) -> np.ndarray:  # noqa: N803
    """Every landmark (iris points included) in head-frame mm, placed as :meth:`FaceMesh.from_landmarks`
    places the mesh: x, y through the similarity ``M``, z = mediapipe's depth in the same scale,
    zero at the mean of the four eye corners."""
    m = np.asarray(similarity_M, dtype=np.float64)
    canon = np.asarray(lm.points, dtype=np.float64)[:, :2] @ m[:, :2].T + m[:, 2]
    z = np.asarray(lm.points3d, dtype=np.float64)[:, 2] * _similarity_scale(m) * layout.mm_per_px
    z -= z[list(EYE_CORNERS)].mean()
    return layout.pixel_to_head(canon, z)


def level_yaw(vertices: np.ndarray) -> float:
    """The turn (radians) about the head frame's vertical axis that brings the mirror pairs of
    :data:`_X_PAIRS` to equal depth; > 0 when the wearer's left side lies deeper."""
    v = np.asarray(vertices, dtype=np.float64)
    across = sum(v[b] - v[a] for a, b in _X_PAIRS)
    return math.atan2(float(across[2]), float(across[0]))


def turn_yaw(points: np.ndarray, yaw: float) -> np.ndarray:
    """Head-frame points (N, 3) turned by ``yaw`` radians about the vertical axis through the origin
    (the sense that :func:`level_yaw`'s angle undoes)."""
    p = np.asarray(points, dtype=np.float64)
    c, s = math.cos(yaw), math.sin(yaw)
    out = p.copy()
    out[:, 0] = c * p[:, 0] + s * p[:, 2]
    out[:, 2] = -s * p[:, 0] + c * p[:, 2]
    return out


def without_yaw(mesh: FaceMesh) -> FaceMesh:
    """The mesh turned about the head frame's vertical axis (through the origin between the eyes)
    until its eye corners and cheeks, pairwise, lie at equal depth.

    A headset is fixed to the head, so in its frame the wearer's face is never turned; a selfie
    is, by a few degrees, and a mesh lifted from it keeps the turn as depth: one eye's region
    sits ~10 mm nearer the camera than the other's (8.8 degrees on the demo's enrollment frame).
    Rectifying every later frame onto that surface (the ``surface`` aligner) then carries the
    selfie's turn into every crop. Pitch is left alone: the head frame's pitch is the
    calibration's and the simulator's definition, not a property of the face.
    """
    turned = turn_yaw(mesh.vertices, level_yaw(mesh.vertices))
    return FaceMesh(vertices=turned, triangles=mesh.triangles, uv=mesh.uv,
                    similarity=mesh.similarity)


def mean_shape(meshes: Sequence[FaceMesh]) -> FaceMesh:
    """The vertex mean of several meshes of one face, each levelled first (:func:`without_yaw`).

    Face Mesh guesses depth anew in every frame, and the ``surface`` aligner turns a wrong depth
    at the eye into parallax, which the gaze probe reads as a turn of the eye. The mean of a few
    frames' meshes averages the guesses: on VR-Face's test eyes the ``surface`` rectification
    onto the mean of 8 enrollment frames reads 1.35 / 1.67 deg of gaze error against 1.59 / 1.75
    onto one (reports/alignment.md). Each mesh is levelled first, so the frames' head turns do
    not smear the mean. Triangles and texture coordinates are the first mesh's.

    Raises:
        ValueError: no meshes, or meshes of different vertex counts.
    """
    if not meshes or len({len(m.vertices) for m in meshes}) != 1:
        msg = f"mean_shape needs one or more meshes of one topology, got {len(meshes)}"
        raise ValueError(msg)
    if len(meshes) == 1:
        return without_yaw(meshes[0])
    verts = np.mean([without_yaw(m).vertices for m in meshes], axis=0)
    first = meshes[0]
    return FaceMesh(vertices=verts, triangles=first.triangles, uv=first.uv,
                    similarity=first.similarity)
