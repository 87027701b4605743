"""The eye-landmark gaze critic: sub-pixel read-out, mirroring, augmentation that keeps the points
on the image, learning, its CLI, and the aligners' gaze term built on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from revavatar.learning.eye_landmarks import (
    EyeLandmarkConfig,
    EyeLandmarkNet,
    EyeLandmarkSet,
    augment,
    gaze_offset,
    load_eye_landmarks,
    save_eye_landmarks,
    soft_argmax,
)


def test_soft_argmax_reads_a_blob_between_cells():
    h, w, stride = 24, 32, 2
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = 10.3, 7.8  # heatmap cells
    heat = -((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * 0.6**2)
    got = soft_argmax(torch.tensor(heat, dtype=torch.float32)[None, None], stride)[0, 0]
    # cell i covers input pixels 2i, 2i + 1: its centre is 2i + 0.5
    np.testing.assert_allclose(got.numpy(), [2 * cx + 0.5, 2 * cy + 0.5], atol=0.02)


def test_right_eye_points_are_the_mirrored_left_eye_points():
    torch.manual_seed(0)
    net = EyeLandmarkNet(EyeLandmarkConfig(crop_size=(64, 48), width=8)).requires_grad_(False)
    crops = torch.rand(2, 1, 48, 64) * 2 - 1
    left = net.points(crops.flip(-1), "left_eye")
    right = net.points(crops, "right_eye")
    np.testing.assert_allclose(right[:, 0, 0].numpy(), 63 - left[:, 0, 0].numpy(), atol=1e-4)
    np.testing.assert_allclose(right[:, 1].numpy(), (torch.stack(
        [63 - left[:, 2, 0], left[:, 2, 1]], -1)).numpy(), atol=1e-4)  # corners swap too


def test_augment_moves_the_points_with_the_image():
    img = np.full((48, 64), 230, np.uint8)
    pts = np.array([[20.0, 25.0], [44.0, 18.0], [33.0, 33.0]])
    for x, y in pts:
        cv2.circle(img, (int(x), int(y)), 2, 10, -1)
    for seed in range(5):
        out, moved = augment(img, pts, np.random.default_rng(seed))
        for x, y in moved:  # the darkest pixel near each moved point is the moved dot
            xi, yi = int(round(x)), int(round(y))
            patch = out[yi - 1:yi + 2, xi - 1:xi + 2]
            assert patch.size and patch.min() < 120, (seed, x, y)


def _dots(n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops with a dark iris between two corner marks, at random places."""
    imgs, pts = [], []
    for _ in range(n):
        img = np.full((48, 64), 200, np.uint8)
        cy = rng.uniform(18, 30)
        a, b = np.array([rng.uniform(8, 16), cy]), np.array([rng.uniform(48, 56), cy])
        iris = np.array([rng.uniform(24, 40), cy + rng.uniform(-4, 4)])
        cv2.line(img, tuple(np.rint(a).astype(int)), tuple(np.rint(b).astype(int)), 120, 1)
        cv2.circle(img, tuple(np.rint(iris).astype(int)), 5, 20, -1)
        imgs.append(img)
        pts.append(np.stack([iris, a, b]))
    x = torch.from_numpy(np.stack(imgs)).float().div(127.5).sub(1)[:, None]
    return x, torch.from_numpy(np.stack(pts)).float()


def test_the_critic_learns_to_find_the_points():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    net = EyeLandmarkNet(EyeLandmarkConfig(crop_size=(64, 48), width=8))
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    x_val, y_val = _dots(32, np.random.default_rng(99))
    with torch.no_grad():
        before = (net(x_val) - y_val).norm(dim=-1).mean()
    for _ in range(150):
        x, y = _dots(16, rng)
        loss = (net(x) - y).norm(dim=-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = (net(x_val) - y_val).norm(dim=-1).mean()
    assert after < 0.35 * before and after < 3.0


def _toy_with_eyes(root: Path) -> Path:
    """A toy build whose landmarks put both eyes' iris and corners inside their crops."""
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.core.landmarks import SCHEMES
    from revavatar.learning.data import VRFaceIndex, write_toy_build

    toy = write_toy_build(root, samples=12)
    index = VRFaceIndex(toy)
    layout = CanonicalLayout(index.layout_size)
    for e in index.samples():
        lm = np.full((478, 2), 128.0, np.float32)
        for side in ("left", "right"):
            x0, y0, x1, y1 = layout.region(f"{side}_eye").box_px
            eye = SCHEMES["mediapipe478"].eyes[side]
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            lm[[eye.iris, *eye.corners]] = [[cx, cy], [cx - 8, cy], [cx + 8, cy]]
        np.save(e["landmarks"], lm)
    return toy


def test_data_set_mirrors_the_right_eye_and_refuses_unlabelled_builds(tmp_path):
    from revavatar.learning.data import write_toy_build

    data = EyeLandmarkSet(_toy_with_eyes(tmp_path / "toy"), "train")
    assert len(data) % 2 == 0 and data.images.shape[1:] == (96, 128)
    right = data.points[1]  # a mirrored right eye: corners still image-left first
    assert right[1, 0] < right[0, 0] < right[2, 0]
    with pytest.raises(ValueError, match="no train samples with landmarks"):
        EyeLandmarkSet(write_toy_build(tmp_path / "bare", samples=12), "train")


def test_train_eye_landmarks_cli_writes_a_loadable_critic_and_resumes(tmp_path):
    from revavatar.learning.train_eye_landmarks import add_arguments, run_from_args

    toy = _toy_with_eyes(tmp_path / "toy")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data", str(toy), "--batch", "4", "--width", "8", "--every", "2", "--no-progress",
            "--out", str(tmp_path / "critic"), "--ckpt", str(tmp_path / "ck"), "--threads", "1",
            "--labels", "build"]
    run_from_args(parser.parse_args([*base, "--steps", "2"]))
    run_from_args(parser.parse_args([*base, "--steps", "4", "--resume"]))
    card = json.loads((tmp_path / "critic" / "card.json").read_text())
    assert card["steps"] == 4 and card["points"] == ["iris", "corner_a", "corner_b"]
    assert {"iris_px", "offset_px", "gaze_deg"} <= set(card["val"])
    assert (tmp_path / "critic" / "losses.png").is_file()
    assert "iris offset" in (tmp_path / "critic" / "README.md").read_text()
    net = load_eye_landmarks(tmp_path / "critic")
    assert not any(p.requires_grad for p in net.parameters())
    assert net.points(torch.zeros(1, 1, 96, 128), "left_eye").shape == (1, 3, 2)
    with pytest.raises(FileNotFoundError, match="train eye-landmarks"):
        load_eye_landmarks(tmp_path)


def _critic(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    return save_eye_landmarks(EyeLandmarkNet(EyeLandmarkConfig(crop_size=(64, 48), width=8)),
                              tmp_path / "critic", {})


def test_gaze_term_pulls_the_aligned_iris_offset_toward_the_truth(tmp_path):
    from revavatar.learning.alignment_model import AlignModelConfig, AlignmentModel

    cfg = AlignModelConfig(region="right_eye", kind="autoencoder", crop_size=(64, 48),
                           bf16=False, lambda_l1=0.0, lambda_lpips=0.0, lambda_gaze=1.0,
                           gaze_critic=str(_critic(tmp_path)), ae_ngf=8, ae_down=3)
    model = AlignmentModel(cfg)
    x, _ = _dots(2, np.random.default_rng(1))
    target = x.clone()
    fake = torch.roll(x, shifts=3, dims=-1).requires_grad_(True)  # iris moved 3 px
    gap = model._paired(fake, target)["gaze_px"]
    gap.backward()
    assert gap > 0 and fake.grad.abs().sum() > 0
    with torch.no_grad():  # a small step down the gradient narrows the gap
        stepped = fake - 0.05 * fake.grad / fake.grad.abs().max()
        assert model._paired(stepped, target)["gaze_px"] < gap
    assert "critic" not in model.trainable()  # a fixed yardstick: not trained or checkpointed


def test_gaze_term_is_refused_without_an_eye_or_a_critic(tmp_path):
    from revavatar.learning.alignment_model import AlignModelConfig
    from revavatar.learning.train_align import add_arguments, run_from_args

    with pytest.raises(ValueError, match="eye region and a gaze critic"):
        AlignModelConfig(region="lower_face", lambda_gaze=1.0, gaze_critic="x")
    with pytest.raises(ValueError, match="eye region and a gaze critic"):
        AlignModelConfig(region="left_eye", lambda_gaze=1.0)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data", str(tmp_path / "none"), "--no-progress", "--lambda-gaze", "1"]
    with pytest.raises(ValueError, match="eye regions only"):
        run_from_args(parser.parse_args([*base, "--region", "all"]))
    with pytest.raises(ValueError, match="no critic there"):
        run_from_args(parser.parse_args([*base, "--region", "left_eye",
                                         "--gaze-critic", str(tmp_path)]))


def test_gaze_offset_is_iris_minus_corner_midpoint():
    pts = torch.tensor([[[5.0, 3.0], [0.0, 0.0], [8.0, 2.0]]])
    np.testing.assert_allclose(gaze_offset(pts).numpy(), [[1.0, 2.0]])


def test_probe_labels_are_detected_once_and_cached(tmp_path, monkeypatch):
    import revavatar.learning.eval_align as eval_align
    from revavatar.learning.data import VRFaceIndex

    toy = _toy_with_eyes(tmp_path / "toy")
    build = {int(e["index"]): np.load(e["landmarks"]) for e in VRFaceIndex(toy).samples()}
    calls = []

    class FakeProbe:  # reads the build's points moved by 1 px, as a detector of the truth would
        def __init__(self, copies: int) -> None:
            calls.append(copies)

        def points(self, face: np.ndarray) -> np.ndarray:
            return next(iter(build.values())) + 1.0

    monkeypatch.setattr(eval_align, "GazeProbe", FakeProbe)
    cache = tmp_path / "labels.npz"
    probed = EyeLandmarkSet(toy, "train", labels="probe", copies=3, cache=cache)
    plain = EyeLandmarkSet(toy, "train")
    assert calls == [3] and cache.is_file()
    assert not np.allclose(probed.points, plain.points)
    monkeypatch.setattr(eval_align, "GazeProbe", None)  # a second read must not detect again
    again = EyeLandmarkSet(toy, "train", labels="probe", copies=3, cache=cache)
    np.testing.assert_array_equal(again.points, probed.points)
    # another build's labels (the same sample indices, other faces) are not reused
    meta = json.loads((toy / "meta.json").read_text())
    (toy / "meta.json").write_text(json.dumps({**meta, "build_key": "another"}))
    with pytest.raises(TypeError), pytest.warns(UserWarning, match="detecting them again"):
        EyeLandmarkSet(toy, "train", labels="probe", copies=3, cache=cache)  # GazeProbe is None
    with pytest.raises(ValueError, match="unknown labels"):
        EyeLandmarkSet(toy, "train", labels="guess")
