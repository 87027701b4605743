"""The eye cameras' de-occluder: replayed pairs, the network, its ONNX runtime and the aligners
that read through it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from torch.nn import functional as F

from revavatar.learning.data import VRFaceIndex
from revavatar.learning.deocclusion import (
    DeoccluderConfig,
    DeoccluderNet,
    OcclusionPairs,
    clean_weighted,
    field_targets,
    mirror_for,
    pair_loss,
    save_deoccluder,
)
from revavatar.vrface.replay import (
    SampleReplay,
    apply_records,
    jpeg_round_trip,
    sample_landmarks,
    split_records,
)

HEADSET = Path(__file__).resolve().parents[2] / "calibration" / "generic.yaml"


@pytest.fixture(scope="module")
def build_dir(vrface_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small VR-Face build in which about half the views carry an occlusion."""
    from revavatar.vrface.builder import BuildConfig, build

    root = tmp_path_factory.mktemp("deocc")
    build(BuildConfig(src=vrface_src, headset=HEADSET, samples=10, out=root / "b", workers=1,
                      cache_dir=root / "cache", effect_probability=0.5), progress=False)
    return root / "b"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained de-occluder, exported: the identity."""
    torch.manual_seed(0)
    return save_deoccluder(DeoccluderNet(), tmp_path_factory.mktemp("models") / "deocclusion",
                           {"command": "test"})


def test_replaying_a_sample_remakes_its_stored_views(build_dir: Path) -> None:
    index = VRFaceIndex(build_dir)
    replay = SampleReplay(index)
    checked = 0
    for e in index.samples("train"):
        views = replay.clean_views(e)
        assert views is not None
        for cam in ("left_eye", "right_eye"):
            remade = jpeg_round_trip(apply_records(views[cam], replay.records(e, cam)),
                                     replay.jpeg_quality)
            stored = cv2.imread(e[cam], cv2.IMREAD_UNCHANGED)
            diff = np.abs(remade.astype(int) - stored)
            assert diff.mean() < 0.5 and diff.max() <= 10
            checked += 1
    assert checked >= 4


def test_split_records_puts_each_effect_on_its_side_of_the_occlusion() -> None:
    recs = [{"effect": n, "seed": 0, "params": {}} for n in
            ("sensor_noise", "ir_look", "occlusion", "blur", "lighting")]
    before, after = split_records(recs, "occlusion")
    assert [r["effect"] for r in before] == ["ir_look", "lighting"]
    assert [r["effect"] for r in after] == ["sensor_noise", "blur"]
    with pytest.raises(ValueError, match="unknown effect"):
        split_records(recs, "rain")


def test_sample_landmarks_tells_a_still_from_a_video_of_the_same_stem(tmp_path: Path) -> None:
    from revavatar.vrface.sources import LandmarkCache, SourceFile

    cache = LandmarkCache(tmp_path)
    cache.dir.mkdir(parents=True)
    for name, n, shift in (("clip-aaaa", 1, 0.0), ("clip-bbbb", 5, 7.0)):
        np.savez(cache.dir / f"{name}.npz", frames=np.arange(n), image_size=np.array([64, 48]),
                 points=np.full((n, 478, 2), 10.0 + shift, np.float32),
                 points3d=np.zeros((n, 478, 3), np.float32), n_frames=np.array(n),
                 scheme=np.array("mediapipe478"))
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")  # its stat matches neither cache file: found by stem
    still = tmp_path / "clip.png"
    still.write_bytes(b"x")
    got_video = sample_landmarks(cache, SourceFile(video, "clip.mp4", "c", "train", "video",
                                                   None), 0)
    got_still = sample_landmarks(cache, SourceFile(still, "clip.png", "c", "train", "image",
                                                   None), 0)
    assert got_video is not None and got_still is not None
    assert float(got_video.points[0, 0]) == pytest.approx(17.0)
    assert float(got_still.points[0, 0]) == pytest.approx(10.0)
    # frame 3 exists only in the video's detections
    assert sample_landmarks(cache, SourceFile(still, "clip.png", "c", "train", "image",
                                              None), 3) is not None


def test_pairs_draw_fresh_occlusions_over_the_replayed_frames(build_dir: Path,
                                                              tmp_path: Path) -> None:
    pairs = OcclusionPairs(build_dir, "train", cache=tmp_path / "f.npz", progress=False)
    n_train = len(VRFaceIndex(build_dir).samples("train"))
    assert len(pairs) == 2 * n_train
    assert sorted(set(pairs.regions)) == ["left_eye", "right_eye"]
    rng = np.random.default_rng(0)
    x, y, m = pairs.pair(0, rng, p_occlusion=0.0)
    assert np.array_equal(x, y) and not m.any()
    hits = [pairs.pair(k % len(pairs), rng, p_occlusion=1.0) for k in range(6)]
    assert all(m.any() for _, _, m in hits)
    inside = np.concatenate([(x.astype(float) - y)[m > 0] for x, y, m in hits])
    assert inside.mean() < -5  # blobs darken (a haze can lift a dark pixel a little)
    xb, yb, mb = pairs.batch(np.random.default_rng(1), 3)
    assert xb.shape == yb.shape == mb.shape == (3, 1, 240, 320)
    assert 0.0 <= float(xb.min()) and float(xb.max()) <= 1.0
    again = OcclusionPairs(build_dir, "train", cache=tmp_path / "f.npz", progress=False)
    assert np.array_equal(again.frames, pairs.frames) and again.after == pairs.after
    assert again.regions == pairs.regions
    with pytest.warns(UserWarning, match="replaying the frames again"):  # not the val frames
        val = OcclusionPairs(build_dir, "val", cache=tmp_path / "f.npz", progress=False)
    assert set(val.samples) <= {int(e["index"]) for e in VRFaceIndex(build_dir).samples("val")}


def test_pairs_carry_the_wearers_reference_made_from_other_samples(build_dir: Path,
                                                                    tmp_path: Path) -> None:
    from revavatar.core.deocclusion import eye_reference
    from revavatar.learning.data import wearer_frames

    pairs = OcclusionPairs(build_dir, "train", cache=tmp_path / "f.npz", progress=False)
    with pytest.raises(RuntimeError, match="load_references"):
        pairs.reference(0)
    pairs.load_references(2, tmp_path / "r.npz", progress=False)
    k = len(pairs) - 1  # a right eye: the reference is mirrored like its frames
    assert pairs.regions[k] == "right_eye"
    others = wearer_frames(pairs.index, "train", 2)(pairs._entries[int(pairs.samples[k])])
    shots = [cv2.imread(e["right_eye"], cv2.IMREAD_UNCHANGED) for e in others]
    assert np.array_equal(pairs.reference(k), eye_reference(shots)[:, ::-1])
    before = np.random.default_rng(3)
    x, *_, ref = pairs.batch(before, 2, references=True)
    x0 = pairs.batch(np.random.default_rng(3), 2)[0]
    assert torch.equal(x, x0) and ref.shape == x.shape  # the same draws as without it
    again = OcclusionPairs(build_dir, "train", cache=tmp_path / "f.npz", progress=False)
    again.load_references(2, tmp_path / "r.npz", progress=False)  # read back
    assert np.array_equal(again.references, pairs.references)
    with pytest.warns(UserWarning, match="making the references again"):
        again.load_references(1, tmp_path / "r.npz", progress=False)


def test_pairs_with_fields_draw_the_same_and_carry_the_exact_inverse(build_dir: Path,
                                                                   tmp_path: Path) -> None:
    pairs = OcclusionPairs(build_dir, "train", cache=tmp_path / "f.npz", progress=False)
    right = pairs.regions.index("right_eye")
    for k in (0, right):
        plain = pairs.pair(k, np.random.default_rng(5), p_occlusion=1.0)
        x, y, m, t = pairs.pair(k, np.random.default_rng(5), p_occlusion=1.0, fields=True)
        assert all(np.array_equal(a, b) for a, b in zip(plain, (x, y, m), strict=True))
        assert t.shape == (3, *x.shape) and t.dtype == np.float32
        assert np.array_equal(t[2] > 0, x != y)  # where the occlusion shows
        assert t[0].max() > 0.3  # a blob's gain is undone by a log-gain above 0
        # the targets undo the occlusion up to the later effects (blur, noise, JPEG)
        undone = x.astype(np.float32) * np.exp(t[0]) + 255.0 * t[1]
        inside = m > 0
        before = np.abs(x.astype(np.float32) - y)[inside].mean()
        assert np.abs(undone - y)[inside].mean() < 0.3 * before
    x, y, m, t = pairs.pair(0, np.random.default_rng(5), p_occlusion=0.0, fields=True)
    assert not t.any()
    batch = pairs.batch(np.random.default_rng(1), 3, fields=True)
    assert len(batch) == 4 and batch[3].shape == (3, 3, 240, 320)
    assert len(pairs.batch(np.random.default_rng(1), 3)) == 3


def test_field_targets_without_a_smudge_are_the_blobs_gain() -> None:
    from revavatar.vrface.effects import occlusion_fields

    occ = occlusion_fields((48, 64), np.random.default_rng(0), n_blobs=2, size=0.2,
                           darkness=0.5, smudge=0.0)
    t = field_targets(occ, np.full((48, 64), 100, np.uint8))
    assert np.allclose(np.exp(-t[0]), occ.gain) and not t[1].any()


def test_stored_frames_differ_from_their_replay_by_the_occlusion_only(build_dir: Path) -> None:
    pairs = OcclusionPairs(build_dir, "train", progress=False)
    index = {e["index"]: e for e in VRFaceIndex(build_dir).samples("train")}
    diffs = {True: [], False: []}
    for k in range(len(pairs)):
        stored, truth = pairs.stored(k)
        region = pairs.regions[k]
        on_disk = cv2.imread(index[int(pairs.samples[k])][region], cv2.IMREAD_UNCHANGED)
        assert np.array_equal(stored, mirror_for(region, on_disk))  # left eye's orientation
        diffs[bool(pairs.occluded[k])].append(np.abs(stored.astype(float) - truth).mean())
    assert diffs[True] and diffs[False]
    assert max(diffs[False]) < 0.5  # replayed exactly up to JPEG
    assert np.median(diffs[True]) > 1.0  # a blob can fall on the housing and change little


def test_val_figures_around_the_eye(build_dir: Path) -> None:
    """The identity leaves clean eyes where they are and touched eyes as bad as stored; a net
    that lifts every pixel moves clean eyes by about what it lifts them, and their edges by
    less (only where the clip at white flattens them)."""
    from revavatar.learning.train_deocclusion import evaluate, eye_window

    pairs = OcclusionPairs(build_dir, "train", progress=False)
    eye = eye_window(pairs)
    assert eye.shape == pairs.frames.shape[1:3] and eye.max() > 0.9 and (eye == 0).mean() > 0.5
    net = DeoccluderNet(DeoccluderConfig(frame_size=pairs.frames.shape[2:0:-1], width=8))
    same = evaluate(net, pairs, eye)
    assert same["eye_clean_out"] == pytest.approx(0.0, abs=0.6)  # JPEG replay
    assert same["n_eye_touched"] > 0  # the fixture build has occlusions over the eye
    assert same["eye_touched_in"] > 2.0
    assert same["eye_touched_out"] == pytest.approx(same["eye_touched_in"])
    assert same["eye_touched_edges_out"] == pytest.approx(same["eye_touched_edges_in"])
    assert same["eye_touched_edges_in"] > 0.0
    assert same["eye_clean_edges_out"] == pytest.approx(0.0, abs=0.3)
    with torch.no_grad():  # mask open, offset +0.1: every pixel up by about 25 levels
        net.head.bias.copy_(torch.tensor([2.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]))
    lifted = evaluate(net, pairs, eye)
    assert 15.0 < lifted["eye_clean_out"] < 30.0
    assert lifted["eye_clean_edges_out"] < 0.5 * lifted["eye_clean_out"]
    assert "eye_clean_out" not in evaluate(net, pairs)  # no eye, no eye figures


def test_mirror_for_flips_the_right_eye_only() -> None:
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(mirror_for("left_eye", a), a)
    assert np.array_equal(mirror_for("right_eye", a), a[:, ::-1])
    with pytest.raises(ValueError, match="eye cameras"):
        mirror_for("lower_face", a)


def test_network_starts_as_the_identity_and_refuses_odd_sizes() -> None:
    net = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8))
    x = torch.rand(2, 1, 48, 64)
    assert torch.equal(net(x), x)
    mask = torch.zeros_like(x)
    loss, parts = pair_loss(net, x, x, mask)
    assert parts["rmse"] == parts["inside_rmse"] == parts["outside_rmse"] == 0.0
    loss.backward()  # the mask's BCE still teaches it to stay shut
    assert net.head.bias.grad is not None and float(net.head.bias.grad[0]) > 0
    with pytest.raises(ValueError, match="multiples of 4"):
        DeoccluderNet(DeoccluderConfig(frame_size=(66, 48)))


def test_deployed_network_applies_what_its_config_says() -> None:
    """Training corrects with gain, offset and residual; the deployed forward (and so the ONNX
    export) applies all of it, or with ``apply="gain"`` the gain behind the mask only; cards
    from before the choice existed were exported with the gain alone."""
    nets = {a: DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8, apply=a))
            for a in ("full", "gain")}
    nets["gain"].load_state_dict(nets["full"].state_dict())
    for net in nets.values():
        with torch.no_grad():
            net.head.bias.copy_(torch.tensor([2.0, 0.2, 0.3, 0.5, 0.5, 0.5, 0.5]))  # mask open
    x = torch.full((1, 1, 48, 64), 0.4)
    m, g, o, r, sharpen = nets["gain"].fields(x)
    assert sharpen is None  # no such field unless configured
    assert float(o.abs().min()) > 0 and float(r.abs().min()) > 0
    gain = x + torch.sigmoid(m) * (x * torch.exp(g) - x)
    assert torch.allclose(nets["gain"](x), gain)
    full = nets["full"].corrected(x)[0]
    assert not torch.allclose(full, gain)
    assert torch.allclose(nets["full"](x), full.clamp(0.0, 1.0))
    shifted = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8, mask_bias=1.5))
    shifted.load_state_dict(nets["full"].state_dict())
    _, m, fixed = nets["full"].corrected(x)
    assert torch.allclose(shifted(x), (x + torch.sigmoid(m - 1.5) * (fixed - x)).clamp(0, 1))
    assert torch.equal(shifted.corrected(x)[0], full)  # training does not see the shift
    old = {"frame_size": [64, 48], "width": 8}
    assert DeoccluderConfig.from_dict(old).apply == "gain"
    assert DeoccluderConfig.from_dict(old).mask_bias == 0.0
    assert DeoccluderConfig.from_dict({**old, "mask_bias": 2}).mask_bias == 2.0
    assert DeoccluderConfig.from_dict({**old, "apply": "full"}).apply == "full"
    with pytest.raises(ValueError, match="unknown de-occluder output"):
        DeoccluderConfig(apply="offset")


def test_sharpening_field_undoes_a_haze() -> None:
    """The unsharp mask, at the amount a haze of strength s calls for (s / (1 - s)), brings a
    hazed frame (a blend toward its blurred copy) closer to the frame than the haze left it."""
    cfg = DeoccluderConfig(frame_size=(64, 48), width=8, sharpen=True, haze_sigma=2.0)
    net = DeoccluderNet(cfg)
    rng = np.random.default_rng(0)
    f = torch.from_numpy(cv2.GaussianBlur(rng.random((48, 64)).astype(np.float32), (0, 0), 1.0)
                         )[None, None]
    s = 0.4
    x = (1 - s) * f + s * net._blur(f)
    with torch.no_grad():
        net.head.bias.copy_(torch.tensor([8.0, 0, 0, 0, 0, 0, 0, s / (1 - s)]))  # mask open
    out = net.corrected(x)[0]
    core = (..., slice(8, -8), slice(8, -8))  # away from the repeated border
    assert float((out - f)[core].abs().mean()) < 0.5 * float((x - f)[core].abs().mean())
    old = {"frame_size": [64, 48], "width": 8, "apply": "full"}
    assert not DeoccluderConfig.from_dict(old).sharpen
    assert DeoccluderConfig.from_dict({**old, "sharpen": True, "haze_sigma": 2.0}) == cfg
    with pytest.raises(ValueError, match="haze_sigma"):
        DeoccluderConfig(haze_sigma=0.0)


@pytest.mark.parametrize("grow", ["sharpen", "log_input", "deep_context", "reference"])
def test_network_grown_starts_as_the_one_without(tmp_path: Path, grow: str) -> None:
    """A sharpening field, a log input or the deep branch added to a trained network: the same
    function until training moves the new weights."""
    from revavatar.learning.trainer import Checkpointer

    torch.manual_seed(0)
    plain = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8))
    with torch.no_grad():
        for prm in plain.parameters():
            prm.add_(0.05 * torch.randn_like(prm))  # not the identity
    Checkpointer(tmp_path).save(10, {"net": plain})
    grown = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8, **{grow: True}))
    Checkpointer(tmp_path).load_weights({"net": grown}, new=("deep.",))
    x = torch.rand(1, 1, 48, 64)
    ref = torch.rand_like(x) if grow == "reference" else None
    assert not torch.allclose(plain(x), x)
    assert torch.allclose(grown(x, ref), plain(x), atol=1e-6)
    if grow == "sharpen":
        assert float(grown.fields(x)[4].abs().max()) == 0.0
    elif grow == "deep_context":  # a real branch down to 1/16, whose output starts at zero
        assert grown.deep is not None and plain.deep is None
        q = grown.down(grown.stem(F.pixel_unshuffle(grown._inputs(x), 2)))
        assert q.shape[-2:] == (12, 16) and float(grown.deep(q).abs().max()) == 0.0
        assert grown.deep.down2(grown.deep.down1(q)).shape[-2:] == (3, 4)
        grown.corrected(x)[0].sum().backward()  # and it trains from there
        assert float(grown.deep.out.weight.grad.abs().max()) > 0.0
    elif grow == "reference":  # the reference's weights are the stem's last four inputs
        assert grown.stem[0][0].in_channels == 8
        assert float(grown.stem[0][0].weight[:, 4:].abs().max()) == 0.0
        with pytest.raises(ValueError, match="reads a reference"):
            grown(x)
        with pytest.raises(ValueError, match="takes no reference"):
            plain(x, ref)
    else:
        assert grown.stem[0][0].in_channels == 8 and grown._inputs(x).shape[1] == 2
        dark = torch.full((1, 1, 4, 4), 1.0 / 255.0)  # the log spans about -0.5 .. 0.5
        assert float(grown._inputs(dark)[:, 1].max()) < -0.3


def test_eye_crop_cuts_the_same_window_near_the_eye() -> None:
    from revavatar.learning.train_deocclusion import eye_crop

    a = torch.arange(2 * 48 * 64, dtype=torch.float32).view(2, 1, 48, 64)
    w = a[:1] * 2
    rng = np.random.default_rng(0)
    for _ in range(20):
        ca, cw = eye_crop((a, w), (24, 50), 32, rng)
        assert ca.shape == (2, 1, 32, 32) and cw.shape == (1, 1, 32, 32)
        assert torch.equal(cw[0], ca[0] * 2)  # one window for every tensor
        top, left = divmod(int(ca[0, 0, 0, 0]), 64)
        assert 0 <= top <= 16 and 26 <= left <= 32  # centre -16, +-8 of jitter, kept inside
    with pytest.raises(ValueError, match="multiple of 4"):
        eye_crop((a,), (24, 32), 30, rng)
    with pytest.raises(ValueError, match="at most 48"):
        eye_crop((a,), (24, 32), 52, rng)


def test_eye_weight_map_peaks_where_the_camera_sees_the_eye() -> None:
    from revavatar.core.calibration import load_calibration
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.learning.deocclusion import eye_weight_map

    cam = load_calibration(HEADSET).cameras["left_eye"]
    w = eye_weight_map(cam, CanonicalLayout(256), 4.0)[0, 0].numpy()
    assert w.shape == (240, 320) and w.min() >= 1.0 and w.max() == pytest.approx(5.0, abs=0.01)
    v, u = np.unravel_index(w.argmax(), w.shape)
    assert abs(u - cam.cx) < 3 and abs(v - cam.cy) < 3  # generic.yaml aims at the eye centre
    assert w[0, 0] < 1.01 and w[int(v), int(u) + 100] < w[int(v), int(u) + 30]


def test_clean_weight_scales_the_frames_without_an_occlusion() -> None:
    mask = torch.zeros(2, 1, 6, 8)
    mask[1, :, 2:4, 3:5] = 1.0  # the second frame is occluded
    weight = torch.ones(1, 1, 6, 8)
    weight[..., 2:4, :] = 5.0  # the eye map is kept, per frame
    w = clean_weighted(weight, mask, 4.0)
    assert w.shape == (2, 1, 6, 8)
    assert torch.equal(w[0], 4.0 * weight[0]) and torch.equal(w[1], weight[0])
    assert torch.equal(clean_weighted(None, mask, 3.0)[:, 0, 0, 0], torch.tensor([3.0, 1.0]))
    # in the loss: a clean frame the network moves costs that much more than with weight 1
    net = DeoccluderNet(DeoccluderConfig(frame_size=(8, 8), width=4))
    x = torch.full((2, 1, 8, 8), 0.5)
    y = x.clone()
    y[0] += 0.1  # the same error on the clean and the occluded frame
    y[1] += 0.1
    m = torch.zeros_like(x)
    m[1, :, 2:4, 2:4] = 1.0
    plain = pair_loss(net, x, y, m, clean_weighted(None, m, 1.0))[1]["rmse"]
    assert pair_loss(net, x, y, m, clean_weighted(None, m, 4.0))[1]["rmse"] == pytest.approx(plain)
    y[1] = x[1]  # only the clean frame is wrong: its share goes from 1/2 to 4/5 of the mean
    ratio = (pair_loss(net, x, y, m, clean_weighted(None, m, 4.0))[1]["rmse"]
             / pair_loss(net, x, y, m, clean_weighted(None, m, 1.0))[1]["rmse"])
    assert ratio == pytest.approx((0.8 / 0.5) ** 0.5, rel=1e-4)


def test_weighted_loss_counts_the_eye_more() -> None:
    net = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8))
    x = torch.full((1, 1, 48, 64), 0.5)
    y_eye, y_skin = x.clone(), x.clone()
    y_eye[..., 20:28, 28:36] = 0.6  # the same error, on the eye or on the skin
    y_skin[..., 0:8, 0:8] = 0.6
    weight = torch.ones(1, 1, 48, 64)
    weight[..., 16:32, 24:40] = 5.0
    mask = torch.zeros_like(x)
    eye = pair_loss(net, x, y_eye, mask, weight)[1]["rmse"]
    skin = pair_loss(net, x, y_skin, mask, weight)[1]["rmse"]
    assert eye > 1.5 * skin
    assert pair_loss(net, x, y_eye, mask)[1]["rmse"] == pytest.approx(
        pair_loss(net, x, y_skin, mask)[1]["rmse"])
    mask_eye, mask_skin = torch.zeros_like(x), torch.zeros_like(x)  # a missed occlusion
    mask_eye[..., 20:28, 28:36] = 1.0
    mask_skin[..., 0:8, 0:8] = 1.0
    assert (pair_loss(net, x, x, mask_eye, weight)[1]["bce"]
            > 1.5 * pair_loss(net, x, x, mask_skin, weight)[1]["bce"])


def test_edge_term_counts_a_smeared_edge_not_a_level_shift() -> None:
    net = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8))
    x = torch.full((1, 1, 48, 64), 0.4)
    x[..., 24:] = 0.6  # an edge the network (the identity) keeps
    mask = torch.zeros_like(x)
    smeared = x.clone()
    smeared[..., 23:25, :] = 0.5
    shifted = x + 0.05
    assert "edge_rmse" not in pair_loss(net, x, smeared, mask)[1]
    edge = {k: pair_loss(net, x, y, mask, edge=1.0)[1] for k, y in
            (("same", x), ("smeared", smeared), ("shifted", shifted))}
    assert edge["same"]["edge_rmse"] == 0.0 and edge["shifted"]["edge_rmse"] < 1e-3
    assert edge["smeared"]["edge_rmse"] > 1.0
    assert edge["shifted"]["rmse"] > edge["smeared"]["rmse"]  # the plain MSE sees it the other way
    assert edge["smeared"]["loss"] > pair_loss(net, x, smeared, mask)[1]["loss"]


def test_field_term_pulls_the_gain_to_its_target() -> None:
    torch.manual_seed(0)
    net = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8))
    y = torch.full((1, 1, 48, 64), 0.6)
    mask = torch.zeros_like(y)
    targets = torch.zeros(1, 3, 48, 64)
    targets[:, 2, 12:36, 16:48] = 1.0  # where the occlusion shows
    assert pair_loss(net, y, y, mask, targets=targets, field=1.0)[1]["field_rmse"] < 1e-6
    targets[:, 0, 12:36, 16:48] = 0.7  # a blob that halved the frame
    loss, parts = pair_loss(net, y, y, mask, targets=targets, field=1.0)
    assert parts["field_rmse"] > 0.2 and "field_rmse" not in pair_loss(net, y, y, mask)[1]
    hidden = targets.clone()
    hidden[:, 2] = 0.0  # the same gain where it cannot be seen counts for nothing
    assert pair_loss(net, y, y, mask, targets=hidden, field=1.0)[1]["field_rmse"] == 0.0
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    loss.backward()
    opt.step()
    assert float(net.fields(y)[1][..., 20:28, 28:36].mean().detach()) > 0.0
    with pytest.raises(ValueError, match="field targets"):
        pair_loss(net, y, y, mask, field=1.0)


def test_correction_learns_under_the_mask_while_the_mask_is_shut() -> None:
    """The correction term trains the gain where the mask says occlusion, even before the mask
    opens: one step on a darkened pair must raise the gain there."""
    torch.manual_seed(0)
    net = DeoccluderNet(DeoccluderConfig(frame_size=(64, 48), width=8))
    y = torch.full((1, 1, 48, 64), 0.6)
    mask = torch.zeros_like(y)
    mask[..., 12:36, 16:48] = 1.0
    x = y * (1.0 - 0.5 * mask)
    opt = torch.optim.SGD(net.parameters(), lr=1e-2)
    loss, _ = pair_loss(net, x, y, mask)
    loss.backward()
    opt.step()
    gain = net.fields(x)[1]
    assert float(gain[..., 20:28, 28:36].mean().detach()) > 0.0


def test_onnx_deoccluder_is_the_identity_untrained_and_checks_its_input(model_dir: Path) -> None:
    from revavatar.core.deocclusion import OnnxDeoccluder
    from revavatar.errors import InputError

    d = OnnxDeoccluder(model_dir)
    assert d.frame_size == (320, 240)
    frame = np.random.default_rng(0).integers(0, 256, (240, 320), dtype=np.uint8)
    for region in ("left_eye", "right_eye"):
        assert np.array_equal(d(frame, region), frame)
    with pytest.raises(InputError, match="320x240"):
        d(frame[:, :300], "left_eye")
    with pytest.raises(InputError, match="gray"):
        d(np.dstack([frame] * 3), "left_eye")
    with pytest.raises(ValueError, match="eye cameras"):
        d(frame, "lower_face")
    card = json.loads((model_dir / "card.json").read_text())
    assert card["onnx_max_abs_diff"] < 1e-4 and (model_dir / "README.md").is_file()


class _Mark:
    """A fake de-occluder that marks what it touched, and a fake aligner that returns it."""

    REGIONS = ("left_eye", "right_eye")
    reference_frames = 0

    def __call__(self, frame: np.ndarray, region: str) -> np.ndarray:
        out = frame.copy()
        out[0, 0] = 255 if region == "left_eye" else 128
        return out

    def has_reference(self, region: str) -> bool:
        return True


class _NeedsWearer(_Mark):
    """A fake de-occluder that reads the wearer's eye: it records the frames it was enrolled
    with and refuses to run before."""

    reference_frames = 3

    def __init__(self) -> None:
        self.enrolled: list[int] = []

    def has_reference(self, region: str) -> bool:
        return bool(self.enrolled)

    def set_reference(self, region: str, frames: list[np.ndarray]) -> None:
        self.enrolled = [int(f[1, 1]) for f in frames]

    def __call__(self, frame: np.ndarray, region: str) -> np.ndarray:
        assert self.enrolled, "run before the wearer was enrolled"
        return super().__call__(frame, region)


class _Echo:
    method = "echo"
    rectifier = None

    def align(self, frame: np.ndarray) -> np.ndarray:
        return frame


def test_deoccluded_aligner_reads_through_the_deoccluder() -> None:
    from revavatar.core.deocclusion import DeoccludedAligner

    inner = _Echo()
    a = DeoccludedAligner(inner, _Mark(), "right_eye")  # type: ignore[arg-type]
    assert a.method == "deocclusion+echo"
    assert a.align(np.zeros((4, 4), np.uint8))[0, 0] == 128
    a.rectifier = "surface"  # set per sample by the evaluation: the wrapped aligner's
    assert inner.rectifier == "surface" and a.rectifier == "surface"
    with pytest.raises(ValueError, match="eye cameras"):
        DeoccludedAligner(inner, _Mark(), "lower_face")  # type: ignore[arg-type]


def test_eye_reference_votes_out_the_occlusion_of_single_frames() -> None:
    from revavatar.core.deocclusion import eye_reference
    from revavatar.errors import InputError

    eye = np.full((6, 8), 120, np.uint8)
    eye[2:4, 3:5] = 30  # the wearer's own dark part is in every frame
    frames = [eye.copy() for _ in range(3)]
    frames[0][0:2, 0:2] = 10  # a blob in one frame, another in the next
    frames[1][4:6, 6:8] = 10
    ref = eye_reference(frames)
    assert ref.dtype == np.uint8 and np.array_equal(ref, eye)
    with pytest.raises(InputError, match="at least one"):
        eye_reference([])
    with pytest.raises(InputError, match="one size"):
        eye_reference([eye, eye[:4]])


def test_wearer_frames_are_other_samples_of_the_same_person(build_dir: Path) -> None:
    from revavatar.learning.data import wearer_frames

    index = VRFaceIndex(build_dir)
    entries = index.samples("train")
    others = wearer_frames(index, "train", 2)
    for e in entries:
        got = others(e)
        same = [o for o in entries if o["identity"] == e["identity"] and o is not e]
        assert len(got) == min(2, len(same))
        assert all(o["identity"] == e["identity"] and o["index"] != e["index"] for o in got)
    with pytest.raises(ValueError, match="at least 1"):
        wearer_frames(index, "train", 0)


def test_deoccluded_aligner_enrolls_the_wearer_from_the_stream_first() -> None:
    from revavatar.core.deocclusion import DeoccludedAligner

    fake = _NeedsWearer()
    a = DeoccludedAligner(_Echo(), fake, "left_eye", enroll_every=2)  # type: ignore[arg-type]
    out = [a.align(np.full((4, 4), i, np.uint8))[0, 0] for i in range(8)]
    # frames 0, 2 and 4 enroll the wearer; the first four pass as they are, from the fifth on
    # every frame is de-occluded (marked 255)
    assert fake.enrolled == [0, 2, 4]
    assert out == [0, 1, 2, 3, 255, 255, 255, 255]
    with pytest.raises(ValueError, match="enroll_every"):
        DeoccludedAligner(_Echo(), _Mark(), "left_eye", enroll_every=0)  # type: ignore[arg-type]


def test_graph_aligner_with_the_prefix_wraps_the_eye_cameras_only(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from revavatar.core.calibration import load_calibration
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.core.deocclusion import DeoccludedAligner
    from revavatar.graph.stages import AlignmentStage, aligner_for

    monkeypatch.setenv("REVAVATAR_MODELS", str(model_dir.parent))
    cal, layout = load_calibration(HEADSET), CanonicalLayout(256)
    eye = AlignmentStage(cal.camera("left_eye"), layout, "deocclusion+homography")
    mouth = AlignmentStage(cal.camera("lower_face"), layout, "deocclusion+homography")
    assert isinstance(eye.aligner, DeoccludedAligner)
    assert eye.method == "deocclusion+homography" and mouth.method == "homography"
    frame = np.random.default_rng(1).integers(0, 256, (240, 320), dtype=np.uint8)
    assert np.array_equal(eye.aligner.align(frame), eye.aligner.inner.align(frame))  # identity
    with pytest.raises(ValueError, match="unknown aligner"):
        aligner_for("deocclusion+nope")
    from revavatar.errors import ModelLoadError

    monkeypatch.setenv("REVAVATAR_MODELS", str(model_dir.parent / "empty"))
    with pytest.raises(ModelLoadError, match="train deocclusion"):  # no model: says how
        AlignmentStage(cal.camera("right_eye"), layout, "deocclusion+homography")


def test_train_cli_writes_a_model_and_resumes(build_dir: Path, tmp_path: Path) -> None:
    from revavatar.core.deocclusion import OnnxDeoccluder
    from revavatar.errors import InputError
    from revavatar.learning.train_deocclusion import add_arguments, run_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--data", str(build_dir), "--batch", "2", "--every", "1", "--width", "8",
            "--val-samples", "2", "--out", str(tmp_path / "m"), "--ckpt", str(tmp_path / "c"),
            "--threads", "1", "--no-progress", "--eye-weight", "2"]
    assert run_from_args(parser.parse_args([*base, "--steps", "4", "--stop-at", "2"])) == 0
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["steps"] == 2 and card["val"]["n_occluded"] + card["val"]["n_clean"] == 4
    assert "--steps 4" in card["command"] and "--stop-at 2" in card["command"]
    assert "--width 8" in card["command"] and "--eye-weight 2" in card["command"]
    assert card["config"]["apply"] == "full" and "--apply full" in card["command"]
    assert card["val"]["eye_clean_out"] >= 0.0 and "eye_touched_in" in card["val"]
    assert (tmp_path / "m" / "losses.png").is_file()
    run_from_args(parser.parse_args([*base, "--steps", "4", "--stop-at", "3", "--resume",
                                     "--apply", "gain"]))  # the same weights, the gain alone
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["steps"] == 3 and card["config"]["apply"] == "gain"
    assert "the gain where the mask is open" in (tmp_path / "m" / "README.md").read_text()
    run_from_args(parser.parse_args([*base, "--steps", "4", "--stop-at", "3", "--resume",
                                     "--mask-bias", "2"]))  # only re-exports, the mask shifted
    card = json.loads((tmp_path / "m" / "card.json").read_text())
    assert card["steps"] == 3 and card["config"]["mask_bias"] == 2.0
    assert "--mask-bias 2" in card["command"]
    assert "mask's logit lowered by 2" in (tmp_path / "m" / "README.md").read_text()
    frame = cv2.imread(VRFaceIndex(build_dir).samples("val")[0]["left_eye"],
                       cv2.IMREAD_UNCHANGED)
    assert OnnxDeoccluder(tmp_path / "m")(frame, "left_eye").shape == frame.shape
    # grown to sharpen and trained on eye windows, from that run's weights on a fresh schedule
    grown = [*base[:10], "--out", str(tmp_path / "g"), "--ckpt", str(tmp_path / "cg"),
             "--threads", "1", "--no-progress", "--eye-weight", "2"]
    run_from_args(parser.parse_args([*grown, "--steps", "2", "--sharpen", "--crop", "32",
                                     "--init-from", str(tmp_path / "c"), "--edge-weight", "0.5",
                                     "--field-weight", "3", "--log-input", "--ema", "0.5",
                                     "--deep-context", "--clean-weight", "2", "--reference", "2"]))
    card = json.loads((tmp_path / "g" / "card.json").read_text())
    assert card["steps"] == 2 and card["config"]["sharpen"] and card["crop"] == 32
    assert card["init_from"] == str(tmp_path / "c")
    assert ("--edge-weight 0.5 --field-weight 3 --sharpen --log-input --deep-context "
            "--reference 2 --clean-weight 2 --ema 0.5 --crop 32 --init-from") in card["command"]
    assert card["config"]["reference"] and card["reference_frames"] == 2
    assert card["config"]["log_input"] and card["config"]["deep_context"]
    assert "1/8 and 1/16 resolution branch" in (tmp_path / "g" / "README.md").read_text()
    assert "moving average of the trained ones (decay 0.5" in (tmp_path / "g" / "README.md").read_text()
    from safetensors.torch import load_file

    stored = load_file(str(sorted((tmp_path / "cg").glob("step_*"))[-1] / "weights.safetensors"))
    exported = load_file(str(tmp_path / "g" / "weights.safetensors"))
    key = "stem.0.0.weight"  # the average is what is exported, not the last weights
    assert torch.equal(exported[key], stored[f"ema.{key}"])
    assert not torch.equal(exported[key], stored[f"net.{key}"])
    edges = {"eye_touched_edges_in", "eye_touched_edges_out", "eye_clean_edges_out"}
    assert edges <= set(card["val"])
    grown_model = OnnxDeoccluder(tmp_path / "g")
    assert grown_model.reference_frames == 2
    with pytest.raises(InputError, match="set_reference"):
        grown_model(frame, "left_eye")
    grown_model.set_reference("left_eye", [frame, frame[::-1].copy()])
    assert grown_model(frame, "left_eye").shape == frame.shape
    with pytest.raises(ValueError, match="ema"):
        run_from_args(parser.parse_args([*base, "--steps", "1", "--ema", "1"]))
    with pytest.raises(ValueError, match="clean-weight"):
        run_from_args(parser.parse_args([*base, "--steps", "1", "--clean-weight", "0"]))
    with pytest.raises(ValueError, match="p-occlusion"):
        run_from_args(parser.parse_args([*base, "--steps", "1", "--p-occlusion", "0"]))
    with pytest.raises(ValueError, match="multiple of 4"):
        run_from_args(parser.parse_args([*base, "--steps", "1", "--crop", "30"]))
    with pytest.raises(ValueError, match="stop-at"):
        run_from_args(parser.parse_args([*base, "--steps", "4", "--stop-at", "5"]))


def test_train_stops_on_a_loss_that_is_not_finite(build_dir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that blows up (one from scratch with --sharpen and lr 2e-3 did, at step 3122)
    stops at once, keeps its checkpoints and exports nothing of the broken weights."""
    from revavatar.learning import train_deocclusion
    from revavatar.learning.trainer import Checkpointer

    parser = argparse.ArgumentParser()
    train_deocclusion.add_arguments(parser)
    args = parser.parse_args(["--data", str(build_dir), "--batch", "2", "--every", "1",
                              "--width", "8", "--val-samples", "2", "--steps", "4",
                              "--out", str(tmp_path / "m"), "--ckpt", str(tmp_path / "c"),
                              "--threads", "1", "--no-progress"])
    real = train_deocclusion.pair_loss

    def blows_up_at_step_3(net, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        loss, parts = real(net, *a, **k)
        blows_up_at_step_3.calls += 1
        return (loss * float("nan"), parts) if blows_up_at_step_3.calls == 3 else (loss, parts)

    blows_up_at_step_3.calls = 0
    monkeypatch.setattr(train_deocclusion, "pair_loss", blows_up_at_step_3)
    with pytest.raises(FloatingPointError, match="step 3.*step_00000002"):
        train_deocclusion.run_from_args(args)
    assert Checkpointer(tmp_path / "c").latest().name == "step_00000002"
    assert json.loads((tmp_path / "m" / "card.json").read_text())["steps"] == 2
