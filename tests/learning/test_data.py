"""VR-Face index, image/tensor conversion and alignment pairs (on a toy build made here)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from revavatar.errors import InputError
from revavatar.learning.data import (
    AlignmentPairs,
    VRFaceIndex,
    read_image,
    to_image,
    to_tensor,
    write_toy_build,
)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return write_toy_build(tmp_path_factory.mktemp("toy"), samples=12)


def test_index_splits_and_absolute_paths(toy):
    idx = VRFaceIndex(toy)
    assert len(idx) == 12
    train, val, test = idx.samples("train"), idx.samples("val"), idx.samples("test")
    assert len(train) + len(val) + len(test) == 12
    assert {e["identity"] for e in train}.isdisjoint({e["identity"] for e in test})
    for e in train:
        assert e["gt_left_eye"].startswith(str(toy.resolve()))
    with pytest.raises(ValueError, match="train, val, test"):
        idx.samples("bogus")


def test_index_rejects_missing_and_incomplete(tmp_path, toy):
    with pytest.raises(InputError, match="meta.json is missing"):
        VRFaceIndex(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps(
        {"config": {"samples": 5}, "summary": {"complete": False}}))
    (tmp_path / "index.json").write_text("[]")
    with pytest.raises(InputError, match="incomplete"):
        VRFaceIndex(tmp_path)


def test_tensor_round_trip_gray_and_colour():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
    t = to_tensor(bgr)
    assert t.shape == (3, 9, 7) and t.dtype == torch.float32
    assert float(t.min()) >= -1.0 and float(t.max()) <= 1.0
    assert np.array_equal(to_image(t), bgr)
    assert np.array_equal(to_image(t[None]), bgr)
    gray = bgr[:, :, 0].copy()
    assert to_tensor(gray).shape == (1, 9, 7)
    assert np.array_equal(to_image(to_tensor(gray)), gray)
    assert to_image(torch.full((1, 2, 2), 5.0)).max() == 255
    with pytest.raises(ValueError):
        to_tensor(bgr.astype(np.float32))


def test_read_image_modes(toy, tmp_path):
    e = VRFaceIndex(toy).samples("train")[0]
    assert read_image(e["left_eye"]).shape == (240, 320, 3)
    assert read_image(e["left_eye"], gray=True).shape == (240, 320)
    with pytest.raises(InputError, match="cannot read"):
        read_image(tmp_path / "nope.png")


@pytest.mark.parametrize(("region", "channels", "size"),
                         [("left_eye", 1, (96, 128)), ("lower_face", 3, (128, 192))])
def test_alignment_pairs_shapes(toy, region, channels, size):
    ds = AlignmentPairs(toy, region, "train")
    item = ds[0]
    assert item["view"].shape == (channels, *size)
    assert item["target"].shape == (channels, *size)
    assert item["gaze"].shape == (2,)
    assert isinstance(item["identity"], str)
    # the target is the stored ground-truth crop (gray for the IR eye cameras)
    gt = read_image(ds.entries[0][f"gt_{region}"], gray=channels == 1)
    assert np.array_equal(to_image(item["target"]), gt)


def test_alignment_pairs_augment_only_jitters_view(toy):
    plain = AlignmentPairs(toy, "right_eye", "train", cache=True)
    aug = AlignmentPairs(toy, "right_eye", "train", augment=True, cache=True)
    a, b = plain[1], aug[1]
    assert torch.equal(a["target"], b["target"])
    assert not torch.equal(a["view"], b["view"])
    assert torch.equal(aug[1]["view"], b["view"])  # deterministic for one epoch
    aug.set_epoch(1)
    assert not torch.equal(aug[1]["view"], b["view"])
    batch = plain.batch([0, 1, 2])
    assert batch["view"].shape == (3, 1, 96, 128)


def test_alignment_pairs_rectified_mode(toy):
    ds = AlignmentPairs(toy, "left_eye", "val", input_mode="rectified")
    resized = AlignmentPairs(toy, "left_eye", "val")
    assert ds[0]["view"].shape == resized[0]["view"].shape
    assert not torch.equal(ds[0]["view"], resized[0]["view"])
    with pytest.raises(ValueError, match="resize, rectified"):
        AlignmentPairs(toy, "left_eye", "val", input_mode="warp")
    with pytest.raises(ValueError, match="unknown region"):
        AlignmentPairs(toy, "nose", "val")


def _eye_landmarks(centre: tuple[float, float], half: tuple[float, float]) -> np.ndarray:
    """478 canonical points, all zero but the left eye's lids on an ellipse around ``centre``."""
    from revavatar.core.landmarks import SCHEMES

    pts = np.zeros((478, 2), np.float32)
    eye = SCHEMES["mediapipe478"].eyes["left"]
    (cx, cy), (ax, ay) = centre, half
    pts[eye.corners[0]], pts[eye.corners[1]] = (cx - ax, cy), (cx + ax, cy)
    for k, (u, lo) in enumerate(zip(eye.upper, eye.lower, strict=True)):
        x = cx + ax * (k - 1) * 0.6
        pts[u], pts[lo] = (x, cy - ay), (x, cy + ay)
    return pts


def test_focus_mask_covers_the_eye_opening_only() -> None:
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.learning.data import focus_mask

    layout = CanonicalLayout(256)
    region = layout.region("left_eye")
    x0, y0, x1, y1 = region.box_px
    lm = _eye_landmarks(((x0 + x1) / 2, (y0 + y1) / 2), (12.0, 4.0))
    mask = focus_mask(lm, region, "left")
    w, h = region.crop_size
    assert mask.shape == (h, w) and mask.dtype == np.uint8
    assert mask[h // 2, w // 2] == 255  # the eye centre, in crop pixels
    assert mask[:8].max() == 0 and mask[-8:].max() == 0 and mask[:, :8].max() == 0
    assert 0.03 < (mask > 127).mean() < 0.3
    assert not focus_mask(lm, region, None).any()  # no eye in the region (lower face)
    assert not focus_mask(np.zeros((478, 2)), region, "left").any()  # a toy build's landmarks


def test_alignment_pairs_carry_the_focus_mask(tmp_path: Path) -> None:
    from revavatar.learning.data import AlignmentPairs, write_toy_build

    root = write_toy_build(tmp_path / "toy", samples=6)
    ds = AlignmentPairs(root, "left_eye", "train")
    item = ds[0]
    assert item["focus"].shape == (1, *item["target"].shape[1:])
    assert float(item["focus"].sum()) == 0.0  # toy landmarks are all zero: no eye opening
    assert ds.batch([0, 1])["focus"].shape[0] == 2


def test_alignment_pairs_reference_items(toy):
    from revavatar.core.canonical import CanonicalLayout

    ds = AlignmentPairs(toy, "left_eye", "val", input_mode="rectified", reference=True)
    plain = AlignmentPairs(toy, "left_eye", "val", input_mode="rectified")
    item = ds[0]
    dp = read_image(ds.entries[0]["reference"])
    want = CanonicalLayout(256).crop_region(dp, "left_eye")
    assert to_image(item["reference"]).shape == (96, 128)
    assert np.abs(to_image(item["reference"]).astype(float)
                  - want.mean(axis=2)).mean() < 3.0  # the DP's crop, gray like the IR camera
    assert ds._aligner.valid_mask.all()  # the generic headset sees the whole toy crop, so
    seen = np.ones((96, 128), bool)  # make it blind on the left, as oblique cameras are
    seen[:, :40] = False
    ds._aligner.valid_mask = seen
    item = ds[0]
    far = cv2.erode(np.asarray(seen, np.uint8), np.ones((11, 11), np.uint8)) > 0  # past the seam
    assert torch.equal(item["view"][0][far], plain[0]["view"][0][far])
    assert not torch.equal(item["view"][0][~seen], plain[0]["view"][0][~seen])
    assert set(ds.batch([0, 1])) >= {"view", "target", "reference"}
    assert "reference" not in plain.batch([0])
    with pytest.raises(ValueError, match="rectifying"):
        AlignmentPairs(toy, "left_eye", "val", reference=True)


def test_alignment_pairs_view_in_the_enrollment_tone(toy):
    from revavatar.core.alignment import toned_view
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.core.composite import match_histogram

    camera = AlignmentPairs(toy, "left_eye", "train", augment=True, input_mode="rectified",
                            reference=True)
    toned = AlignmentPairs(toy, "left_eye", "train", augment=True, input_mode="rectified",
                           reference=True, view_tone="enrollment")
    got, plain = toned[0], camera[0]
    ref = to_image(got["reference"])
    # after the augmentation, as at run time: the jittered camera view mapped to the DP's tone
    assert np.array_equal(to_image(got["view"]), match_histogram(to_image(plain["view"]), ref,
                                                                 None))
    assert not np.array_equal(to_image(got["view"]), to_image(plain["view"]))
    assert torch.equal(got["target"], plain["target"])
    with pytest.raises(ValueError, match="view tone"):
        AlignmentPairs(toy, "left_eye", "val", input_mode="rectified", view_tone="enrollment")
    with pytest.raises(ValueError, match="view tone"):
        toned_view(ref, ref, "daylight")
    assert toned_view(ref, ref[::-1], "camera") is ref
    # the skin's gain and gamma: fitted outside the eye, so it needs the eye
    skin = AlignmentPairs(toy, "left_eye", "train", augment=True, input_mode="rectified",
                          reference=True, view_tone="enrollment-skin")[0]
    skin_eye = CanonicalLayout(256).eye_weight("left_eye")
    assert np.array_equal(to_image(skin["view"]),
                          toned_view(to_image(plain["view"]), ref, "enrollment-skin", skin_eye))
    with pytest.raises(ValueError, match="eye region"):
        toned_view(ref, ref, "enrollment-skin")
    with pytest.raises(ValueError, match="view tone"):
        AlignmentPairs(toy, "lower_face", "val", input_mode="rectified", reference=True,
                       view_tone="enrollment-skin")


def test_mirrored_eyes_appends_the_other_eye_flipped(toy):
    from revavatar.learning.data import MirroredEyes

    def pairs(region):
        return AlignmentPairs(toy, region, "train", augment=True, input_mode="rectified",
                              reference=True)

    left, right = pairs("left_eye"), pairs("right_eye")
    both = MirroredEyes(left, right)
    assert len(both) == len(left) + len(right)
    assert torch.equal(both[0]["view"], left[0]["view"])
    got, src = both[len(left)], right[0]
    for key in ("view", "target", "focus", "reference"):
        assert torch.equal(got[key], src[key].flip(-1))
    assert got["gaze"].tolist() == pytest.approx([-src["gaze"][0].item(), src["gaze"][1].item()])
    both.set_epoch(3)
    right.set_epoch(3)  # the halves follow the epoch: the flipped item is the other eye's draw
    assert torch.equal(both[len(left)]["view"], right[0]["view"].flip(-1))
    batch = both.batch([0, len(left)])
    assert batch["view"].shape == (2, 1, 96, 128) and "reference" in batch
    with pytest.raises(ValueError, match="two eyes"):
        MirroredEyes(left, pairs("left_eye"))
    with pytest.raises(ValueError, match="two eyes"):
        MirroredEyes(left, AlignmentPairs(toy, "right_eye", "train", input_mode="rectified"))
