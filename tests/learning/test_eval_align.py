"""``revavatar eval align`` on a tiny real VR-Face build cut from the demo clip."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from revavatar.core.composite import match_histogram
from revavatar.core.gaze import OPEN_EYE_MIN_ASPECT
from revavatar.learning.eval_align import (
    GAZE_JITTER,
    IRIS_TURN,
    METHODS,
    PAIRED_FIGURES,
    evaluate,
    gaze_face,
    markdown_table,
    paired_difference,
    paste_into_face,
)
from revavatar.vrface.builder import BuildConfig, build

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_build(demo_frames: list[np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("evsrc")
    for name, part in (("a.mp4", demo_frames[0:10]), ("b.mp4", demo_frames[30:40])):
        h, w = part[0].shape[:2]
        writer = cv2.VideoWriter(str(src / name), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
        for f in part:
            writer.write(f)
        writer.release()
    (src / "MANIFEST.csv").write_text("file,identity,split\na.mp4,demo,test\nb.mp4,other,train\n")
    out = tmp_path_factory.mktemp("evbuild") / "build"
    build(BuildConfig(src=src, headset=ROOT / "calibration" / "generic.yaml", samples=8, out=out,
                      workers=1, views=("front",), effect_probability=0.0), progress=False)
    return out


@pytest.fixture(scope="module")
def every_eye_open(tiny_build: Path) -> dict:
    """The eval with every eye scored as open: the demo clip looks down, lids over the irises
    (eye aspect ratios 0.07-0.14), so by default its eyes are shut and have no gaze figure."""
    return evaluate(tiny_build, ROOT / "models", limit=3, gaze_min_aspect=0.0)


def test_eval_align_schema_and_gaze_reference(every_eye_open: dict) -> None:
    res = every_eye_open
    assert json.loads(json.dumps(res)) == res
    assert set(res["regions"]) == {"left_eye", "right_eye", "lower_face"}
    assert res["gaze_probe_copies"] == GAZE_JITTER
    assert res["gaze_paste"] == "eye"
    assert res["gaze_min_aspect"] == 0.0
    assert res["gaze_tone"] == "match"
    assert res["enroll_frames"] == 1
    assert "cyclegan+camera_eye" in res["regions"]["left_eye"]  # the committed eyes read surfaces
    assert "cyclegan+camera_eye" not in res["regions"]["lower_face"]
    assert "its tone matched to the truth's (--gaze-tone)" in markdown_table(res)
    assert "saw each crop's eye in the true face" in markdown_table(res)
    assert "true eye is open (eye aspect ratio >= 0, --gaze-min-aspect)" in markdown_table(res)
    for region, methods in res["regions"].items():
        assert set(methods) <= set(METHODS)
        assert {"homography", "surface", "dp", "homography+dp"} <= set(methods)
        for fig in methods.values():
            assert fig["n"] == 3
            assert 0.0 < fig["ssim"] <= 1.0
            assert fig["psnr"] > 5.0
            assert 0.0 <= fig["lpips"] < 1.0
            if region == "lower_face":
                assert fig["gaze_error_deg"] is None and "opening_psnr" not in fig
            else:
                assert fig["gaze_error_deg"]["mean"] >= 0.0
                assert 2 <= fig["gaze_error_deg"]["n"] <= 3  # where Face Mesh read the crop
                assert fig["gaze_error_shut_deg"] is None
                assert set(fig["gaze_bias_deg"]) == {"yaw", "pitch"}
                assert all(np.isfinite(v) for v in fig["gaze_bias_deg"].values())
                assert 5.0 < fig["opening_psnr"] <= 100.0
    # what the gaze figure resolves: only the eye regions, both perturbations of the truth
    assert set(res["gaze_reference"]) == {"left_eye", "right_eye"}
    for refs in res["gaze_reference"].values():
        assert set(refs) == {"gt_shift_1px", "gt_noise_2", IRIS_TURN}
        assert 1.0 < refs[IRIS_TURN]["expected"] < 6.0  # 1 crop px on a 12-mm eyeball
        for stats in refs.values():
            assert stats["n"] >= 1
            assert 0.0 <= stats["mean"] < 30.0
            assert stats["p95"] >= 0.0
    # CycleGAN against every other method on the same 3 samples: the mean paired difference is
    # the difference of the means
    assert set(res["paired"]) == set(res["regions"])
    for region, others in res["paired"].items():
        figs = res["regions"][region]
        assert set(others) == set(figs) - {"cyclegan"}
        for m, diffs in others.items():
            assert set(diffs) == set(PAIRED_FIGURES)
            gaze = diffs.pop("gaze")
            if region == "lower_face":
                assert gaze is None  # no eye, no gaze
            elif gaze is not None:  # the samples where Face Mesh read both crops
                assert 2 <= gaze["n"] <= 3 and gaze["se"] >= 0.0
            for k, d in diffs.items():
                assert d["n"] == 3 and d["se"] >= 0.0 and 0.0 <= d["better"] <= 1.0
                assert d["identities"] == 1 and d["se_identity"] is None  # one test person
                assert d["mean"] == pytest.approx(figs["cyclegan"][k] - figs[m][k], abs=1e-9)


def test_eval_align_refuses_an_unknown_gaze_paste_or_tone(tiny_build: Path) -> None:
    with pytest.raises(ValueError, match="gaze_paste"):
        evaluate(tiny_build, ROOT / "models", limit=1, gaze_paste="face")
    with pytest.raises(ValueError, match="gaze_tone"):
        evaluate(tiny_build, ROOT / "models", limit=1, gaze_tone="equalize")


def test_eval_align_scores_shut_eyes_apart(tiny_build: Path, every_eye_open: dict) -> None:
    every_eye_shut = evaluate(tiny_build, ROOT / "models", limit=3, regions=("left_eye",))
    assert every_eye_shut["gaze_min_aspect"] == pytest.approx(OPEN_EYE_MIN_ASPECT)
    for m, fig in every_eye_open["regions"]["left_eye"].items():
        shut = every_eye_shut["regions"]["left_eye"][m]
        # the same readings, scored as shut: no gaze figure, no bias, no paired gaze
        assert shut["gaze_error_deg"] is None and "gaze_bias_deg" not in shut
        assert shut["gaze_error_shut_deg"]["n"] == fig["gaze_error_deg"]["n"] >= 1
        assert shut["gaze_error_shut_deg"]["mean"] == pytest.approx(fig["gaze_error_deg"]["mean"])
        assert shut["ssim"] == pytest.approx(fig["ssim"])  # pixels do not care
    for diffs in every_eye_shut["paired"]["left_eye"].values():
        assert diffs["gaze"] is None
    # the probe's resolution is measured on gazes, so on no sample here
    assert all(v is None for v in every_eye_shut["gaze_reference"]["left_eye"].values())
    assert "| - | - | - |" in markdown_table(every_eye_shut)
    with pytest.raises(ValueError, match="gaze_min_aspect"):
        evaluate(tiny_build, ROOT / "models", limit=1, gaze_min_aspect=1.5)


def test_gaze_face_pastes_only_the_eye_over_the_truth() -> None:
    from revavatar.core.canonical import CanonicalLayout

    layout = CanonicalLayout(256)
    reg = layout.region("left_eye")
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    gt = rng.integers(0, 256, reg.crop_size[::-1], dtype=np.uint8)
    crop = rng.integers(0, 256, reg.crop_size[::-1], dtype=np.uint8)
    w = layout.eye_weight("left_eye")
    got = gaze_face(face, crop, gt, reg.box_px, w, tone="raw")
    crop_w = np.rint(w * crop + (1 - w) * gt).astype(np.uint8)
    assert np.array_equal(got, paste_into_face(face, crop_w, reg.box_px))
    assert np.array_equal(gaze_face(face, crop, gt, reg.box_px, None, tone="raw"),
                          paste_into_face(face, crop, reg.box_px))  # the whole crop
    color = gaze_face(face, np.dstack([crop] * 3), np.dstack([gt] * 3), reg.box_px, w,
                      tone="raw")
    assert np.array_equal(color, got)  # BGR crops weigh the same
    matched = gaze_face(face, crop, gt, reg.box_px, w)  # the default: the truth's tone first
    assert np.array_equal(matched, gaze_face(face, match_histogram(crop, gt, w > 0), gt,
                                             reg.box_px, w, tone="raw"))


def test_iris_shifted_moves_the_iris_and_leaves_the_corners() -> None:
    from revavatar.learning.eval_align import iris_shifted

    img = np.full((96, 128), 200, np.uint8)
    cv2.circle(img, (64, 48), 10, 40, -1)  # a dark iris, 10 px = 4.9 mm at 0.49 mm/px
    img[44:52, 30:34] = 90  # a corner mark 30 px (15 mm) away
    out = iris_shifted(img, np.array([64.0, 48.0]), 1.0, 0.49)

    def dark_x(a: np.ndarray) -> float:
        w = (a < 120).astype(float)
        return float((w * np.arange(a.shape[1])).sum() / w.sum())

    assert dark_x(out[:, 40:90]) - dark_x(img[:, 40:90]) == pytest.approx(1.0, abs=0.1)
    assert np.array_equal(out[:, :36], img[:, :36])  # the corner does not move


def test_markdown_table_bolds_best_per_region() -> None:
    def fig(ssim: float, gaze: float | None) -> dict:
        return {"ssim": ssim, "psnr": 20.0, "lpips": 0.3, "n": 5,
                "gaze_error_deg": None if gaze is None else {"mean": gaze, "p95": 2 * gaze}}

    res = {"regions": {"left_eye": {"homography": fig(0.4, 6.0), "cyclegan": fig(0.6, 3.0)},
                       "lower_face": {"homography": fig(0.7, None), "cyclegan": fig(0.5, None)}},
           "gaze_reference": {"left_eye": {"gt_shift_1px": {"mean": 1.2, "p95": 3.0, "n": 5},
                                           "gt_noise_2": None,
                                           "gt_iris_1px": {"mean": 1.7, "p95": 3.0, "n": 5,
                                                           "expected": 2.85}}}}
    res["regions"]["left_eye"]["homography"]["opening_psnr"] = 12.0
    res["regions"]["left_eye"]["cyclegan"]["opening_psnr"] = 15.0
    res["regions"]["left_eye"]["cyclegan"]["gaze_bias_deg"] = {"yaw": -0.5, "pitch": 1.25}
    res["regions"]["left_eye"]["cyclegan"]["gaze_error_shut_deg"] = {"mean": 9.5, "p95": 12.0,
                                                                     "n": 2}
    lines = markdown_table(res).splitlines()
    assert lines[2].startswith("| left_eye | homography | 0.400 |") and "| 6.00 |" in lines[2]
    assert "| **0.300** | 12.00 | 6.00 |" in lines[2]  # LPIPS ties: both bold
    assert "| **0.600** |" in lines[3]
    assert "| **15.00** | **3.00** | 6.00 | -0.50 / +1.25 | 9.50 (2) | 5 |" in lines[3]
    assert lines[2].endswith("| 12.00 | 6.00 | 12.00 | - | - | 5 |")  # nothing measured: a dash
    assert "| **0.700** |" in lines[4] and lines[4].endswith("| - | - | - | - | - | 5 |")
    assert "| left_eye | gt_shift_1px | 1.20 | 3.00 | 5 |" in lines
    assert "| left_eye | gt_iris_1px (a 2.85-deg turn) | 1.70 | 3.00 | 5 |" in lines
    assert not any("gt_noise_2" in line for line in lines)  # nothing measured, no row
    assert not any("enrolled from" in line for line in lines)  # one frame: nothing to say
    assert "The wearer's shape was enrolled from 8 frames (--enroll-frames)" in markdown_table(
        {**res, "enroll_frames": 8})


def test_paired_difference_uses_shared_samples_and_the_better_direction() -> None:
    ours = {0: 0.5, 1: 0.7, 2: 0.9, 5: 100.0}
    theirs = {0: 0.4, 1: 0.8, 2: 0.6, 7: -100.0}
    d = paired_difference(ours, theirs)  # samples 0-2 only: differences +0.1, -0.1, +0.3
    assert d is not None and d["n"] == 3
    assert d["mean"] == pytest.approx(0.1)
    assert d["se"] == pytest.approx(0.2 / np.sqrt(3))
    assert d["better"] == pytest.approx(2 / 3)
    lower = paired_difference(ours, theirs, sign=-1)  # e.g. LPIPS: a smaller value is better
    assert lower is not None and lower["better"] == pytest.approx(1 / 3)
    assert paired_difference({0: 1.0}, {0: 2.0, 1: 3.0}) is None  # one shared sample: no s.e.
    # samples of one person move together: the s.e. over identities' means, not over samples
    people = paired_difference(ours, theirs, groups={0: "a", 1: "a", 2: "b"})
    assert people is not None and people["identities"] == 2
    assert people["se_identity"] == pytest.approx(0.3 / 2)  # means 0.0 and 0.3
    alone = paired_difference(ours, theirs, groups={0: "a", 1: "a", 2: "a"})
    assert alone is not None and alone["identities"] == 1 and alone["se_identity"] is None


def test_markdown_table_adds_the_paired_differences() -> None:
    fig = {"ssim": 0.5, "psnr": 20.0, "lpips": 0.3, "n": 4, "gaze_error_deg": None}
    diff = {"mean": 0.0123, "se": 0.0046, "better": 0.75, "n": 4, "identities": 2,
            "se_identity": 0.0111}
    res = {"regions": {"lower_face": {"autoencoder": fig, "cyclegan": fig}},
           "paired": {"lower_face": {"autoencoder": {"ssim": diff, "psnr": {**diff, "mean": -1.5},
                                                     "lpips": None, "gaze": None}},
                      "left_eye": {"homography": {"ssim": diff, "psnr": diff, "lpips": diff,
                                                  "gaze": {**diff, "mean": -2.345}}}}}
    lines = markdown_table(res).splitlines()
    assert lines[-4].startswith("| region | cyclegan minus (mean +- s.e. samples / identities")
    assert lines[-4].endswith("| SSIM | PSNR (dB) | LPIPS | gaze (deg) | n (identities) |")
    assert lines[-2] == ("| lower_face | autoencoder | +0.012 +- 0.005 / 0.011 (75%) "
                         "| -1.50 +- 0.00 / 0.01 (75%) | - | - | 4 (2) |")
    assert lines[-1].endswith("| -2.35 +- 0.00 / 0.01 (75%) | 4 (2) |")
    assert "cyclegan minus" not in markdown_table({**res, "paired": {}})


def test_surface_input_follows_the_enrolled_face(tiny_build: Path) -> None:
    """``input_mode="surface"`` rectifies each view onto its sample's reference face: same
    camera pixels as the plane where the face is flat, different at the nose and sockets."""
    from revavatar.learning.data import AlignmentPairs

    surf = AlignmentPairs(tiny_build, "left_eye", "test", input_mode="surface", limit=2)
    flat = AlignmentPairs(tiny_build, "left_eye", "test", input_mode="rectified", limit=2)
    for i in range(2):
        (vs, ts), (vf, tf) = surf.pair(i), flat.pair(i)
        assert vs.shape == vf.shape and np.array_equal(ts, tf)
        diff = np.abs(vs.astype(float) - vf)
        assert 1.0 < diff.mean() < 60.0
    # several frames of the wearer: the view rectified onto their mean shape
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.learning.data import ReferenceSurfaces, enrollment_frames, read_image

    mean = AlignmentPairs(tiny_build, "left_eye", "test", input_mode="surface", limit=2,
                          enroll_frames=8)
    refs = enrollment_frames(mean.index, "test", 8)(mean.entries[0])
    assert len(refs) > 1
    camera = mean.index.calibration().cameras["left_eye"]
    want = ReferenceSurfaces(CanonicalLayout(mean.index.layout_size))(refs, camera, "left_eye")
    view = read_image(mean.entries[0]["left_eye"], gray=True)
    assert np.array_equal(mean.pair(0)[0], want.align(view))
    assert not np.array_equal(mean.pair(0)[0], surf.pair(0)[0])


def test_update_cards_writes_figures_and_a_new_export_drops_them(tmp_path: Path) -> None:
    import torch

    from revavatar.learning.alignment_model import AlignModelConfig, AlignmentModel, export_aligner
    from revavatar.learning.eval_align import update_cards

    torch.manual_seed(0)
    model = AlignmentModel(AlignModelConfig(region="left_eye", crop_size=(64, 48), ngf=8,
                                            n_blocks=1, max_ch=16, ndf=8, bf16=False))
    out = export_aligner(model, tmp_path / "align_left_eye", {"steps": 7, "command": "test"})
    figs = {"ssim": 0.6, "psnr": 18.0, "lpips": 0.27, "n": 80,
            "gaze_error_deg": {"mean": 5.1, "p95": 10.0}}
    res = {"regions": {"left_eye": {"homography": figs, "cyclegan": figs},
                       "right_eye": {"cyclegan": figs}},  # no model there: skipped
           "gaze_probe_copies": 8, "gaze_paste": "eye"}
    assert update_cards(res, tmp_path, "revavatar eval align --data D") == [out / "README.md"]
    card = json.loads((out / "card.json").read_text())
    assert card["metrics"]["step"] == 7 and card["metrics"]["psnr"] == 18.0
    assert card["metrics"]["gaze_probe_copies"] == 8  # what the gaze figure was read with
    assert card["metrics"]["gaze_paste"] == "eye"
    assert "revavatar eval align --data D" in (out / "README.md").read_text()
    export_aligner(model, out, {"steps": 8, "command": "test"})  # new weights, old figures gone
    assert "metrics" not in json.loads((out / "card.json").read_text())
    assert "Not evaluated yet" in (out / "README.md").read_text()


def test_card_renders_the_provenance_of_assembled_weights(tmp_path: Path) -> None:
    """A fine-tune started from weights put together by hand says so in its model card."""
    import torch

    from revavatar.learning.alignment_model import (
        AlignModelConfig,
        AlignmentModel,
        export_aligner,
        write_card,
    )

    torch.manual_seed(0)
    model = AlignmentModel(AlignModelConfig(region="left_eye", crop_size=(64, 48), ngf=8,
                                            n_blocks=1, max_ch=16, ndf=8, bf16=False))
    out = export_aligner(model, tmp_path / "align_left_eye", {"steps": 7, "command": "test"})
    assert "Provenance" not in (out / "README.md").read_text()
    card = json.loads((out / "card.json").read_text())
    (out / "card.json").write_text(json.dumps({**card, "provenance": "G from step 6400"}))
    assert "- Provenance: G from step 6400" in write_card(out).read_text()


def test_gaze_probe_averages_fixed_subpixel_copies(demo_frames: list[np.ndarray]) -> None:
    from revavatar.learning.eval_align import GazeProbe, _jitter_moves

    moves = _jitter_moves(8)
    assert moves[0] == (0.0, 0.0, 1.0) and len(set(moves)) == 8
    assert moves == _jitter_moves(8)  # deterministic: runs repeat exactly
    for dx, dy, s in moves[1:]:
        assert -0.5 <= dx < 0.5 and -0.5 <= dy < 0.5 and 0.96 <= s < 1.04
    with pytest.raises(ValueError, match="jitter"):
        GazeProbe(0)
    face = demo_frames[0]
    single, averaged = GazeProbe(1)(face, "left"), GazeProbe(4)(face, "left")
    assert single is not None and averaged is not None
    # the copies differ by less than a pixel: their mean stays near the single reading
    assert max(abs(a - b) for a, b in zip(single, averaged, strict=True)) < 3.0
    assert GazeProbe(4)(np.zeros((64, 64, 3), np.uint8), "left") is None  # no face: no gaze


def test_gaze_probe_points_are_moved_back_onto_the_face(demo_frames: list[np.ndarray]) -> None:
    from revavatar.learning.eval_align import GazeProbe

    face = demo_frames[0]
    one, mean = GazeProbe(1).points(face), GazeProbe(4).points(face)
    assert one is not None and mean is not None and mean.shape == one.shape == (478, 2)
    # copies scaled by up to 4 % would put the points several px off if not moved back
    assert np.abs(mean - one).mean() < 1.0
    assert GazeProbe(4).points(np.zeros((64, 64, 3), np.uint8)) is None


def test_enrollment_frames_add_other_frames_of_the_wearer_never_the_sample_own(
        tiny_build: Path) -> None:
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.learning.data import ReferenceSurfaces, VRFaceIndex
    from revavatar.learning.data import enrollment_frames

    index = VRFaceIndex(tiny_build)
    entries = index.samples("test")
    one, many = enrollment_frames(index, "test", 1), enrollment_frames(index, "test", 8)
    pool = {e["reference"] for e in entries}
    for e in entries:
        assert one(e) == [e["reference"]]
        refs = many(e)
        assert refs[0] == e["reference"] and len(set(refs)) == len(refs) <= 8
        assert set(refs) <= pool
        own = (e["source"]["file"], e["source"]["frame"])
        assert all((x["reference_source"]["file"], x["reference_source"]["frame"]) != own
                   for x in entries if x["reference"] in refs)
    assert max(len(many(e)) for e in entries) > 1  # the clip has more frames of the wearer
    with pytest.raises(ValueError, match="at least 1 frame"):
        enrollment_frames(index, "test", 0)
    with pytest.warns(UserWarning, match="at most .* reference frames per wearer"):
        enrollment_frames(index, "test", 1000)
    e = next(x for x in entries if len(many(x)) > 1)
    surfaces = ReferenceSurfaces(CanonicalLayout(index.layout_size))
    single, mean = surfaces.depth(e["reference"]), surfaces.depth(many(e))
    assert np.array_equal(surfaces.depth([e["reference"]]), single)
    assert np.isfinite(mean).all() and not np.array_equal(mean, single)
