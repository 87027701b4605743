"""VR-Face mesh: topology (no holes, consistent orientation), placement against align_face, pose."""

from __future__ import annotations

import collections
import dataclasses

import cv2
import numpy as np
import pytest

from revavatar.core.canonical import CanonicalLayout
from revavatar.core.landmarks import FaceLandmarks, create_detector
from revavatar.vrface.mesh import (
    EYE_CORNERS,
    N_LANDMARKS,
    FaceMesh,
    SkirtConfig,
    head_pose_deg,
    mesh_topology,
)
from revavatar.vrface.renderer import render_orthographic


@pytest.fixture(scope="module")
def face_lm(face_image: np.ndarray) -> FaceLandmarks:
    det = create_detector("mediapipe", static_image=True)
    try:
        lm = det.detect(face_image)
    finally:
        det.close()  # type: ignore[attr-defined]
    assert lm is not None and lm.points3d is not None
    return lm


@pytest.fixture(scope="module")
def layout() -> CanonicalLayout:
    return CanonicalLayout(256)


def _directed_edges(tris: np.ndarray) -> list[tuple[int, int]]:
    return [(int(a), int(b)) for t in tris for a, b in ((t[0], t[1]), (t[1], t[2]), (t[2], t[0]))]


def test_topology_is_an_oriented_disk_without_eye_or_mouth_holes() -> None:
    topo = mesh_topology()
    tris = topo.triangles
    assert tris.dtype == np.int32 and tris.shape == (852 + 16 + 16 + 20 + 4 * 36, 3)
    assert tris.min() >= 0 and tris.max() == topo.n_vertices - 1
    directed = _directed_edges(tris)
    counts = collections.Counter(directed)
    assert max(counts.values()) == 1, "an edge walked twice the same way: inconsistent orientation"
    undirected = collections.Counter(frozenset(e) for e in directed)
    assert max(undirected.values()) == 2
    boundary = [e for e, n in undirected.items() if n == 1]
    boundary_vertices = {v for e in boundary for v in e}
    # the only boundary left is the outer skirt ring: eyes and mouth are closed
    assert boundary_vertices == set(range(topo.skirt_start + 36, topo.n_vertices))
    for name in ("right_eye", "left_eye", "mouth"):
        assert not boundary_vertices & set(topo.holes[name].tolist()), name
    assert 33 in topo.holes["right_eye"] and 263 in topo.holes["left_eye"]


def test_topology_is_cached() -> None:
    assert mesh_topology() is mesh_topology()


def test_frontal_projection_matches_align_face(
    face_image: np.ndarray, face_lm: FaceLandmarks, layout: CanonicalLayout
) -> None:
    mesh = FaceMesh.from_landmarks(face_lm, layout)
    aligned, m = layout.align_face(face_image, face_lm)
    np.testing.assert_allclose(mesh.similarity, m, atol=1e-9)
    # landmark vertices land exactly where align_face puts the landmarks
    want = face_lm.transformed(m).points[:N_LANDMARKS]
    got = mesh.frontal_pixels(layout)[:N_LANDMARKS]
    assert np.abs(got - want).max() < 1e-2
    # and the textured mesh seen frontally is the aligned crop, pixel for pixel
    ortho, mask = render_orthographic(face_image, mesh, layout)
    assert ortho.shape == aligned.shape and mask.mean() > 0.5
    diff = np.abs(ortho.astype(np.int16) - aligned.astype(np.int16))[mask]
    assert diff.mean() < 0.5
    assert np.percentile(diff, 99) <= 2


def test_mesh_geometry(face_lm: FaceLandmarks, layout: CanonicalLayout) -> None:
    mesh = FaceMesh.from_landmarks(face_lm, layout)
    topo = mesh_topology()
    assert mesh.vertices.dtype == np.float32 and mesh.vertices.shape == (topo.n_vertices, 3)
    assert mesh.uv.dtype == np.float32 and mesh.uv.shape == (topo.n_vertices, 2)
    np.testing.assert_allclose(mesh.uv[:N_LANDMARKS], face_lm.points[:N_LANDMARKS], atol=1e-3)
    v = mesh.vertices
    assert abs(float(v[list(EYE_CORNERS), 2].mean())) < 1e-3
    assert v[1, 2] < -10.0, "the nose tip should stand out in front of the eye corners (z < 0)"
    interocular = float(np.linalg.norm(v[topo.fill_start + 1] - v[topo.fill_start]))  # eye fill centres
    assert 50.0 < interocular < 75.0  # mm, canonical 63 mm between eye centres
    # skirt rings lie outside and behind the oval
    oval = v[topo.oval]
    ring_in = v[topo.skirt_start : topo.skirt_start + 36]
    ring_out = v[topo.skirt_start + 36 :]
    centre = oval[:, :2].mean(0)
    r_oval = np.linalg.norm(oval[:, :2] - centre, axis=1)
    assert (np.linalg.norm(ring_in[:, :2] - centre, axis=1) > r_oval).all()
    assert (
        np.linalg.norm(ring_out[:, :2] - centre, axis=1) > np.linalg.norm(ring_in[:, :2] - centre, axis=1)
    ).all()
    assert (ring_out[:, 2] > ring_in[:, 2]).all() and (ring_in[:, 2] > oval[:, 2]).all()


def test_front_faces_are_clockwise_on_a_frontal_image(
    face_lm: FaceLandmarks, layout: CanonicalLayout
) -> None:
    mesh = FaceMesh.from_landmarks(face_lm, layout)
    p = mesh.frontal_pixels(layout)[mesh.triangles]
    d = p[:, 1:] - p[:, :1]
    area2 = d[:, 0, 0] * d[:, 1, 1] - d[:, 0, 1] * d[:, 1, 0]
    assert (area2[:852] > 0).mean() > 0.95  # a few nose-side triangles face away on a turned head
    skirt = area2[-4 * 36 :]
    assert (skirt > 0).all()


def test_from_landmarks_rejects_2d_landmarks(face_lm: FaceLandmarks, layout: CanonicalLayout) -> None:
    flat = dataclasses.replace(face_lm, points3d=None)
    with pytest.raises(ValueError, match="3D landmarks"):
        FaceMesh.from_landmarks(flat, layout)
    with pytest.raises(ValueError, match="3D landmarks"):
        head_pose_deg(flat)


def test_mesh_validates_shapes() -> None:
    with pytest.raises(ValueError, match="uv"):
        FaceMesh(np.zeros((4, 3)), np.zeros((1, 3), int), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="indices"):
        FaceMesh(np.zeros((4, 3)), np.array([[0, 1, 4]]), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="out_mm"):
        SkirtConfig(out_mm=(20.0, 10.0))


def _rotated(lm: FaceLandmarks, q: np.ndarray) -> FaceLandmarks:
    p3 = lm.points3d.astype(np.float64)  # type: ignore[union-attr]
    c = p3.mean(0)
    r = (p3 - c) @ q.T + c
    return dataclasses.replace(lm, points=r[:, :2], points3d=r)


@pytest.mark.parametrize("axis", ["yaw", "pitch", "roll"])
def test_head_pose_follows_a_known_rotation(face_lm: FaceLandmarks, axis: str) -> None:
    yaw0, pitch0, roll0 = head_pose_deg(face_lm)
    assert abs(yaw0) < 25 and abs(pitch0) < 25 and abs(roll0) < 15  # a roughly frontal frame
    a = np.radians(20.0)
    c, s = np.cos(a), np.sin(a)
    q = {
        # the face direction (0, 0, -1) turns toward image +x / up (-y); x axis toward +y
        "yaw": np.array([[c, 0, -s], [0, 1, 0], [s, 0, c]]),
        "pitch": np.array([[1, 0, 0], [0, c, s], [0, -s, c]]),
        "roll": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]
    yaw, pitch, roll = head_pose_deg(_rotated(face_lm, q))
    delta = {"yaw": yaw - yaw0, "pitch": pitch - pitch0, "roll": roll - roll0}
    assert delta[axis] == pytest.approx(20.0, abs=2.5)
    for other, val in delta.items():
        if other != axis:
            assert abs(val) < 6.0, (other, val)


def test_without_yaw_levels_the_face_and_forgets_any_turn(face_lm, layout) -> None:
    """The enrolled surface must not depend on how far the selfie was turned: any turn about the
    vertical axis gives the same levelled mesh, whose mirror pairs sit at equal depth."""
    from revavatar.vrface.mesh import without_yaw

    mesh = FaceMesh.from_landmarks(face_lm, layout)
    level = without_yaw(mesh)
    v = level.vertices.astype(np.float64)
    across = (v[263] - v[33]) + (v[362] - v[133]) + (v[454] - v[234])
    assert abs(across[2]) < 1e-3 * np.linalg.norm(across)
    for deg in (-12.0, 7.0):
        t = np.radians(deg)
        rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
        turned = dataclasses.replace(mesh, vertices=mesh.vertices.astype(np.float64) @ rot.T)
        np.testing.assert_allclose(without_yaw(turned).vertices, level.vertices, atol=1e-3)
    np.testing.assert_array_equal(level.uv, mesh.uv)
    np.testing.assert_array_equal(level.triangles, mesh.triangles)


def test_mean_shape_averages_levelled_frames(face_lm, layout) -> None:
    """Frames of one face, each turned its own way and with its own depth guess: the mean is
    the levelled face with the guesses averaged, not a blend of the turns."""
    from revavatar.vrface.mesh import mean_shape, without_yaw

    mesh = FaceMesh.from_landmarks(face_lm, layout)
    level = without_yaw(mesh).vertices.astype(np.float64)
    t = np.radians(9.0)
    rot = np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]])
    nearer = dataclasses.replace(mesh, vertices=(mesh.vertices + [0.0, 0.0, -1.5]) @ rot.T)
    further = dataclasses.replace(mesh, vertices=mesh.vertices + [0.0, 0.0, 1.5])
    got = mean_shape([nearer, further]).vertices
    np.testing.assert_allclose(got, level, atol=0.05)  # the +-1.5 mm guesses cancel
    np.testing.assert_allclose(mean_shape([mesh]).vertices, level, atol=1e-4)
    with pytest.raises(ValueError, match="one topology"):
        mean_shape([])
    small = FaceMesh(mesh.vertices[:3], np.array([[0, 1, 2]]), mesh.uv[:3])
    with pytest.raises(ValueError, match="one topology"):
        mean_shape([mesh, small])


def _turned(lm: FaceLandmarks, deg: float) -> FaceLandmarks:
    """The same landmarks turned about the vertical axis through the eye corners' mean (pixels)."""
    p = lm.points3d.astype(np.float64)
    centre = p[list(EYE_CORNERS)].mean(0)
    t = np.radians(deg)
    q = p - centre
    turned = np.column_stack([np.cos(t) * q[:, 0] + np.sin(t) * q[:, 2], q[:, 1],
                              -np.sin(t) * q[:, 0] + np.cos(t) * q[:, 2]]) + centre
    return FaceLandmarks(turned[:, :2], turned, lm.scheme, lm.image_size, lm.score)


def test_frame_truth_turns_with_the_head(
    face_image: np.ndarray, face_lm: FaceLandmarks, layout: CanonicalLayout
) -> None:
    """Head-fixed: whatever the frame's head turn, the headset sees a levelled face, and the
    truth's landmarks are where that levelled face puts them. Not head-fixed: the 2D alignment."""
    from revavatar.vrface.builder import frame_truth

    def across_depth(v: np.ndarray) -> float:
        v = np.asarray(v, np.float64)
        across = (v[263] - v[33]) + (v[362] - v[133]) + (v[454] - v[234])
        return float(across[2] / np.linalg.norm(across))

    turned = _turned(face_lm, 15.0)
    old = frame_truth(face_image, turned, layout, head_fixed=False)
    aligned, m = layout.align_face(face_image, turned)
    assert np.array_equal(old.gt, aligned)
    np.testing.assert_allclose(old.canon.points, turned.transformed(m).points, atol=1e-4)
    assert abs(across_depth(old.mesh.vertices)) > 0.2  # the turn kept as depth

    fixed = frame_truth(face_image, turned, layout)
    assert abs(across_depth(fixed.mesh.vertices)) < 1e-6
    np.testing.assert_allclose(fixed.canon.points[:N_LANDMARKS],
                               layout.head_to_pixel(fixed.mesh.vertices[:N_LANDMARKS]), atol=1e-3)
    # the levelled face of the turned frame is the levelled face of the unturned one: the head
    # turn barely moves anything in the headset's frame (the test turns about the image's vertical,
    # not the pitched head's), where the 2D alignment moves the eyes by pixels
    def moved(head_fixed: bool) -> np.ndarray:
        a = frame_truth(face_image, turned, layout, head_fixed).canon.points[:N_LANDMARKS]
        b = frame_truth(face_image, face_lm, layout, head_fixed).canon.points[:N_LANDMARKS]
        return np.linalg.norm(a - b, axis=1)

    assert np.median(moved(True)) < 0.3 < 2.0 < np.median(moved(False)), (moved(True), moved(False))
    assert moved(True)[list(EYE_CORNERS)].max() < 0.5
    # iris points turn with the eyes they sit in
    for iris, corners in ((468, (33, 133)), (473, (362, 263))):
        mid = fixed.canon.points[list(corners)].mean(0)
        assert np.linalg.norm(fixed.canon.points[iris] - mid) < 6.0
    # the truth is the image the levelled mesh shows, blended into the aligned frame outside it
    render, mask = render_orthographic(face_image, fixed.mesh, layout)
    assert fixed.gt.shape == aligned.shape and fixed.gt.dtype == np.uint8
    deep = cv2.erode(mask.astype(np.uint8), np.ones((19, 19), np.uint8)).astype(bool)
    assert deep.mean() > 0.3
    assert np.abs(fixed.gt.astype(int) - render.astype(int))[deep].max() <= 1
    assert np.array_equal(fixed.gt[~mask], aligned[~mask])
