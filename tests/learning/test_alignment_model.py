"""Alignment models at tiny shapes: losses fall, resume is exact, export round trip."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from revavatar.learning.alignment_model import (
    AlignModelConfig,
    AlignmentModel,
    export_aligner,
    load_generator,
    lpips_input,
)
from revavatar.learning.networks import count_parameters
from revavatar.learning.trainer import Checkpointer, seed_everything

TINY = {"ngf": 8, "n_blocks": 1, "max_ch": 16, "ndf": 8, "ae_ngf": 8, "ae_down": 3,
        "crop_size": (64, 48), "bf16": False}


def _batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(4, 1, 6, 8, generator=g) * 2 - 1
    target = torch.nn.functional.interpolate(coarse, size=(48, 64), mode="bilinear")
    view = torch.roll(target, shifts=(1, 2), dims=(2, 3)) * 0.5  # a fixed shift + contrast
    return view, target


def test_autoencoder_loss_decreases_on_fixed_batch():
    seed_everything(0)
    model = AlignmentModel(AlignModelConfig(region="left_eye", kind="autoencoder", lr=5e-3,
                                            **TINY))
    view, target = _batch()
    before = model.evaluate(view, target)["l1"]
    for _ in range(20):
        losses = model.train_step(view, target)
    assert model.evaluate(view, target)["l1"] < 0.85 * before
    assert {"total", "l1"} <= set(losses)


def test_cyclegan_loss_decreases_on_fixed_batch():
    seed_everything(0)
    model = AlignmentModel(AlignModelConfig(region="left_eye", lr=1e-3, lambda_gan=0.1, **TINY))
    view, target = _batch()
    steps = [model.train_step(view, target) for _ in range(20)]
    assert {"total", "l1", "d", "g_gan", "cycle", "idt"} <= set(steps[0])
    recon = [s["l1"] + s["cycle"] for s in steps]  # the non-adversarial generator objective
    assert np.mean(recon[-5:]) < 0.8 * np.mean(recon[:5])


def test_resume_is_exact(tmp_path):
    view, target = _batch(1)

    def fresh(seed):
        seed_everything(seed)
        return AlignmentModel(AlignModelConfig(region="left_eye", **TINY))

    a = fresh(0)
    for _ in range(2):
        a.train_step(view, target)
    ck = Checkpointer(tmp_path)
    ck.save(2, a.trainable(), a.optimizers())
    straight = [a.train_step(view, target) for _ in range(2)]
    b = fresh(7)
    assert ck.load(b.trainable(), b.optimizers())["step"] == 2
    resumed = [b.train_step(view, target) for _ in range(2)]
    assert resumed == straight


def test_export_round_trip(tmp_path):
    from revavatar.learning.export import OnnxModel

    seed_everything(0)
    cfg = AlignModelConfig(region="left_eye", input_mode="resize", **TINY)
    model = AlignmentModel(cfg)
    view, target = _batch()
    model.train_step(view, target)
    out = export_aligner(model, tmp_path / "m", {"steps": 1, "command": "test"})
    assert {"weights.safetensors", "model.onnx", "card.json", "README.md"} <= {
        p.name for p in out.iterdir()}
    assert "cyclegan aligner: left_eye" in (out / "README.md").read_text()
    g, cfg2 = load_generator(out)
    assert cfg2 == cfg
    with torch.no_grad():
        ref = g(view).numpy()
    np.testing.assert_allclose(OnnxModel(out / "model.onnx").run(view=view.numpy()), ref,
                               atol=1e-4)


def test_config_and_lpips_input():
    with pytest.raises(ValueError, match="cyclegan, autoencoder"):
        AlignModelConfig(region="left_eye", kind="vae")
    cfg = AlignModelConfig(region="lower_face", channels=3)
    assert AlignModelConfig.from_dict(cfg.to_dict()) == cfg
    gray = torch.zeros(2, 1, 8, 8)
    assert lpips_input(gray).shape == (2, 3, 8, 8)
    bgr = torch.arange(3.0).view(1, 3, 1, 1)
    assert lpips_input(bgr).ravel().tolist() == [2.0, 1.0, 0.0]  # BGR -> RGB


def test_tone_head_starts_as_plain_generator_and_learns_a_global_gain(tmp_path):
    view, target = _batch(2)
    seed_everything(0)
    plain = AlignmentModel(AlignModelConfig(region="left_eye", lr=1e-3, **TINY))
    ck = Checkpointer(tmp_path / "align_left_eye")
    ck.save(5, plain.trainable(), plain.optimizers())
    toned = AlignmentModel(AlignModelConfig(region="left_eye", lr=1e-3, tone=True, **TINY))
    assert ck.load_weights(toned.trainable(), new=("tone.",)) == 5
    with torch.no_grad():  # zero-initialised head: the grown model is the old one
        assert torch.equal(toned.G(view), plain.G(view))
    # the view is the target at half contrast (and shifted): a global gain the head can fit
    before = toned.evaluate(view, target)["l1"]
    for _ in range(15):
        toned.train_step(view, target)
    assert toned.evaluate(view, target)["l1"] < 0.9 * before
    assert toned.G.tone.weight.abs().sum() > 0
    # an unrelated architecture is refused, not silently half-loaded
    other = AlignmentModel(AlignModelConfig(region="left_eye", **{**TINY, "ngf": 4}))
    with pytest.raises(Exception, match="do not fit"):
        ck.load_weights(other.trainable(), new=("tone.",))
    with pytest.raises(ValueError, match="residual"):
        AlignmentModel(AlignModelConfig(region="left_eye", residual=False, tone=True, **TINY))


def test_a_wider_generator_starts_as_the_stored_one_and_recruits_its_new_width(tmp_path):
    view, target = _batch(2)
    seed_everything(0)
    cfg = AlignModelConfig(region="left_eye", tone=True, lr=1e-3, **TINY)
    narrow = AlignmentModel(cfg)
    for _ in range(2):  # trained a little, so every stored kernel is non-trivial
        narrow.train_step(view, target)
    ck = Checkpointer(tmp_path / "ck")
    ck.save(7, narrow.trainable(), narrow.optimizers())
    wide = AlignmentModel(cfg.with_(max_ch=2 * TINY["max_ch"]))
    assert ck.load_weights(wide.trainable()) == 7
    assert count_parameters(wide.G) > count_parameters(narrow.G)
    with torch.no_grad():  # zero kernels from the added channels: the same function
        assert torch.allclose(wide.G(view), narrow.G(view), atol=1e-6)
        assert torch.allclose(wide.F(target), narrow.F(target), atol=1e-6)
    for _ in range(2):
        wide.train_step(view, target)
    up = wide.G.model[wide.G._bottom][0].weight  # the first transposed conv: (in, out, ...)
    assert up[TINY["max_ch"]:].abs().sum() > 0  # the added channels now feed the output
    narrower = AlignmentModel(cfg.with_(max_ch=TINY["max_ch"] // 2))
    with pytest.raises(Exception, match="do not fit"):
        ck.load_weights(narrower.trainable())


def _train_cli(tmp_path):
    """(parser of ``train align``, a toy build made under ``tmp_path``)."""
    import argparse

    from revavatar.learning.data import write_toy_build
    from revavatar.learning.train_align import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser, write_toy_build(tmp_path / "toy", samples=12)


def _fine_tune(tmp_path, *flags: str):
    """``train align`` on a toy build: 2 steps into ``a``, then steps 2 -> 4 into ``b`` (models
    in ``m2``) from them with ``flags``. Returns (run_from_args, the arguments shared by both)."""
    from revavatar.learning.train_align import run_from_args

    parser, toy = _train_cli(tmp_path)
    base = ["--region", "left_eye", "--data", str(toy), "--batch", "2", "--ckpt-every", "2",
            "--no-progress", "--no-bf16"]
    run_from_args(parser.parse_args(
        [*base, "--steps", "2", "--ckpt-root", str(tmp_path / "a"), "--out", str(tmp_path / "m1")]))
    run_from_args(parser.parse_args(
        [*base, "--steps", "4", "--ckpt-root", str(tmp_path / "b"), "--out", str(tmp_path / "m2"),
         *flags, "--lr-origin", "2", "--init-from", str(tmp_path / "a")]))
    return lambda argv: run_from_args(parser.parse_args(argv)), base


def test_train_align_init_from_continues_step_and_curves(tmp_path):
    import csv
    import json

    _fine_tune(tmp_path, "--tone", "--lambda-cycle", "2", "--lambda-gan", "0.5", "--max-ch", "64",
               "--lambda-ssim", "3", "--lr", "1e-4")
    card = json.loads((tmp_path / "m2" / "align_left_eye" / "card.json").read_text())
    assert card["steps"] == 4 and card["config"]["tone"] is True
    assert card["config"]["lambda_cycle"] == 2.0 and card["config"]["lambda_gan"] == 0.5
    assert card["config"]["max_ch"] == 64  # grown from the default 48
    assert card["fine_tuned_from"].endswith("step_00000002")
    assert ("--tone --max-ch 64 --lambda-cycle 2 --lambda-gan 0.5 --lambda-ssim 3 --lr 0.0001 "
            "--lr-origin 2 --init-from") in card["command"]
    assert card["config"]["lambda_ssim"] == 3.0 and card["lr_origin"] == 2
    readme = (tmp_path / "m2" / "align_left_eye" / "README.md").read_text()
    assert "3 x (1 - SSIM)" in readme and "restarted at step 2" in readme
    assert "--lambda-focus" not in card["command"] and card["config"]["lambda_focus"] == 0
    with (tmp_path / "b" / "align_left_eye" / "losses.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["step"] for r in rows] == ["1", "2", "3", "4"]
    assert [bool(r.get("dssim")) for r in rows] == [False, False, True, True]  # logged once on


@pytest.mark.parametrize("kind", ["cyclegan", "autoencoder"])
def test_focus_term_is_the_mean_error_on_the_mask(kind):
    seed_everything(0)
    view, target = _batch()
    focus = torch.zeros(4, 1, 48, 64)
    focus[:, :, 16:32, 20:44] = 1.0
    model = AlignmentModel(AlignModelConfig(region="left_eye", kind=kind, lambda_focus=5.0,
                                            **TINY))
    with torch.no_grad():
        fake = model.G(view)
    terms = model._paired(fake, target, focus)
    want = (fake - target).abs()[:, :, 16:32, 20:44].mean()
    assert torch.allclose(terms["focus_l1"], want, atol=1e-6)
    assert "focus_l1" in model.train_step(view, target, focus)
    assert "focus_l1" not in model.train_step(view, target)  # no mask, no term
    plain = AlignmentModel(AlignModelConfig(region="left_eye", kind=kind, **TINY))
    assert "focus_l1" not in plain.train_step(view, target, focus)  # weight 0: off


def test_train_align_region_list_and_focus_flag(tmp_path):
    import json

    from revavatar.learning.train_align import run_from_args

    parser, toy = _train_cli(tmp_path)
    args = parser.parse_args(["--region", "right_eye,left_eye", "--data", str(toy), "--batch", "2",
                              "--steps", "1", "--no-progress", "--no-bf16", "--kind", "autoencoder",
                              "--lambda-focus", "3", "--ckpt-root", str(tmp_path / "c"),
                              "--out", str(tmp_path / "m")])
    assert args.region == ("left_eye", "right_eye")  # canonical order
    outs = run_from_args(args)
    assert [o.name for o in outs] == ["align_ae_left_eye", "align_ae_right_eye"]
    card = json.loads((outs[0] / "card.json").read_text())
    assert card["config"]["lambda_focus"] == 3.0
    assert "--region left_eye,right_eye" in card["command"]
    assert "--lambda-focus 3" in card["command"]
    with pytest.raises(SystemExit):
        parser.parse_args(["--region", "left_eye,nose", "--data", str(toy)])


@pytest.mark.parametrize("kind", ["cyclegan", "autoencoder"])
def test_reference_model_grows_from_a_plain_one_and_exports_two_inputs(tmp_path, kind):
    from revavatar.learning.export import OnnxModel

    view, target = _batch(3)
    reference = torch.rand_like(view) * 2 - 1
    seed_everything(0)
    plain = AlignmentModel(AlignModelConfig(region="left_eye", kind=kind, **TINY))
    ck = Checkpointer(tmp_path / "ck")
    ck.save(3, plain.trainable(), plain.optimizers())
    grown = AlignmentModel(AlignModelConfig(region="left_eye", kind=kind, reference=True, **TINY))
    assert ck.load_weights(grown.trainable(), new=("tone.",)) == 3
    with torch.no_grad():  # zero weights on the new input: the grown model is the old one
        assert torch.allclose(grown(view, reference), plain(view), atol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        grown(view)
    for _ in range(3):  # a fresh residual G's output conv is zero: step 1 moves only that
        losses = grown.train_step(view, target, reference=reference)
    assert losses["l1"] > 0
    with torch.no_grad():  # trained, the new input matters
        assert not torch.allclose(grown(view, reference), grown(view, -reference))
    out = export_aligner(grown, tmp_path / "m", {"steps": 4, "command": "test"})
    assert "reference" in (out / "README.md").read_text()
    with torch.no_grad():
        want = grown(view, reference).numpy()
    got = OnnxModel(out / "model.onnx").run(view=view.numpy(), reference=reference.numpy())
    np.testing.assert_allclose(got, want, atol=1e-4)
    g, cfg = load_generator(out)
    assert cfg.reference and g(torch.cat([view, reference], 1)).shape == view.shape


def test_iris_centre_finds_the_dark_disk_in_the_opening_and_trains_toward_it():
    from revavatar.learning.alignment_model import iris_centre

    h, w = 48, 64
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")

    def eye(cx: float, cy: float) -> torch.Tensor:  # bright sclera, dark iris disk, in [-1, 1]
        disk = ((xx - cx) ** 2 + (yy - cy) ** 2 <= 16).float()
        return (0.6 - 1.4 * disk).view(1, 1, h, w)

    focus = torch.zeros(1, 1, h, w)
    focus[..., 12:36, 10:54] = 1.0
    dark_outside = eye(30, 24)
    dark_outside[..., 0:4, 0:4] = -1.0  # darker than the iris, but outside the opening
    c = iris_centre(dark_outside, focus, tau=0.1)[0]
    assert torch.allclose(c, torch.tensor([30.0, 24.0]), atol=0.3)
    moved = iris_centre(eye(36.5, 21), focus, tau=0.1)[0]
    assert torch.allclose(moved, torch.tensor([36.5, 21.0]), atol=0.3)
    # the term is trained on and reported, in the log and the card
    from revavatar.learning.alignment_model import _losses

    seed_everything(0)
    view, target = _batch()
    model = AlignmentModel(AlignModelConfig(region="left_eye", lambda_iris=1.0, **TINY))
    losses = model.train_step(view, target, torch.ones(4, 1, 48, 64))
    assert losses["iris_px"] >= 0.0
    assert "iris-centre distance" in _losses(model.config.to_dict())


def test_lr_schedule_restarts_at_its_origin():
    from revavatar.learning.train_align import lr_schedule

    plain = [lr_schedule(s, 100) for s in range(1, 101)]
    assert plain[:51] == [1.0] * 51 and plain[-1] == pytest.approx(0.02)
    assert all(a >= b for a, b in zip(plain, plain[1:]))  # never rises
    restarted = [lr_schedule(s, 1200, origin=1000) for s in range(1001, 1201)]
    assert restarted == pytest.approx([lr_schedule(s, 200) for s in range(1, 201)])
    assert lr_schedule(1001, 1200) < 0.5 < lr_schedule(1001, 1200, origin=1000)


def test_reference_blend_grows_from_a_reference_model_and_learns_to_pass_the_reference(tmp_path):
    from revavatar.learning.export import OnnxModel

    view, target = _batch(4)
    reference = target.clone()  # the enrolled crop shows exactly the truth here
    seed_everything(0)
    cfg = AlignModelConfig(region="left_eye", reference=True, tone=True, lr=1e-3, **TINY)
    plain = AlignmentModel(cfg)
    for _ in range(2):
        plain.train_step(view, target, reference=reference)
    ck = Checkpointer(tmp_path / "ck")
    ck.save(5, plain.trainable(), plain.optimizers())
    blend = AlignmentModel(cfg.with_(ref_blend=True))
    assert ck.load_weights(blend.trainable()) == 5
    with torch.no_grad():  # r starts at 0: the grown model is the stored one
        assert torch.allclose(blend(view, reference), plain(view, reference), atol=1e-6)
    err = {}
    for name, model in (("plain", plain), ("blend", blend)):
        for _ in range(20):
            model.train_step(view, target, reference=reference)
        with torch.no_grad():
            err[name] = float((model(view, reference) - target).abs().mean())
    assert err["blend"] < 0.5 * err["plain"]  # the skip carries the reference; a residual cannot
    out = export_aligner(blend, tmp_path / "m", {"steps": 25, "command": "test"})
    assert "per-pixel reference blend" in (out / "README.md").read_text()
    got = OnnxModel(out / "model.onnx").run(view=view.numpy(), reference=reference.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(got, blend(view, reference).numpy(), atol=1e-4)


def test_blend_mask_keeps_the_reference_where_it_is_allowed():
    from revavatar.learning.networks import ResnetGenerator

    mask = np.zeros((8, 8), np.float32)
    mask[:, :4] = 1.0  # the reference may reach the left half only
    g = ResnetGenerator(2, 1, ngf=4, n_down=1, n_blocks=1, residual=True, blend=True,
                        blend_mask=mask)
    last = g.model[-2]
    with torch.no_grad():  # residual 0 and r = 1 everywhere: the output is the blended skip
        last.weight.zero_()
        last.bias.copy_(torch.tensor([0.0, 1.0]))
        x = torch.stack([torch.full((8, 8), -0.5), torch.full((8, 8), 0.25)])[None]
        y = g(x)[0, 0]
    assert torch.allclose(y[:, :4], torch.tensor(0.25)) and torch.allclose(y[:, 4:],
                                                                          torch.tensor(-0.5))
    assert "blend_mask" not in g.state_dict()  # a function of the config, not a weight
    with pytest.raises(ValueError, match="blend=True"):
        ResnetGenerator(2, 1, ngf=4, n_down=1, n_blocks=1, residual=True, blend_mask=mask)


def test_blend_off_the_eye_masks_the_canonical_eye_and_exports(tmp_path):
    from revavatar.core.canonical import CanonicalLayout
    from revavatar.learning.export import OnnxModel

    cfg = AlignModelConfig(region="left_eye", reference=True, ref_blend=True, blend_eye=False,
                           **TINY)
    model = AlignmentModel(cfg)
    eye = cv2.resize(CanonicalLayout().eye_weight("left_eye"), (64, 48),
                     interpolation=cv2.INTER_AREA)
    np.testing.assert_allclose(model.G.blend_mask[0, 0].numpy(), 1.0 - eye, atol=1e-6)
    assert AlignmentModel(cfg.with_(blend_eye=True)).G.blend_mask is None
    with pytest.raises(ValueError, match="blend_eye"):
        AlignModelConfig(region="lower_face", reference=True, ref_blend=True, blend_eye=False)
    with pytest.raises(ValueError, match="blend_eye"):
        AlignModelConfig(region="left_eye", blend_eye=False)
    view, target = _batch(1)
    for _ in range(2):
        model.train_step(view, target, reference=target)
    out = export_aligner(model, tmp_path / "m", {"steps": 2, "command": "test"})
    assert "(not on the eye)" in (out / "README.md").read_text()
    g, loaded = load_generator(out)
    assert not loaded.blend_eye and g.blend_mask is not None  # rebuilt from the card
    got = OnnxModel(out / "model.onnx").run(view=view.numpy(), reference=target.numpy())
    with torch.no_grad():
        np.testing.assert_allclose(got, model(view, target).numpy(), atol=1e-4)


def test_view_tone_other_than_the_camera_needs_a_reference():
    from revavatar.learning.alignment_model import AlignModelConfig

    with pytest.raises(ValueError, match="view_tone"):
        AlignModelConfig(region="left_eye", view_tone="enrollment")
    with pytest.raises(ValueError, match="view_tone"):
        AlignModelConfig(region="left_eye", reference=True, view_tone="sepia")
    with pytest.raises(ValueError, match="view_tone"):
        AlignModelConfig(region="lower_face", reference=True, view_tone="enrollment-skin")
    for tone in ("enrollment", "enrollment-skin"):
        cfg = AlignModelConfig(region="left_eye", reference=True, view_tone=tone)
        assert AlignModelConfig.from_dict(cfg.to_dict()) == cfg


def test_reference_blend_needs_a_reference():
    from revavatar.learning.networks import ResnetGenerator

    with pytest.raises(ValueError, match="2 \\* out_ch"):
        ResnetGenerator(1, 1, ngf=8, n_down=1, n_blocks=1, residual=True, blend=True)
    with pytest.raises(ValueError, match="residual"):
        ResnetGenerator(2, 1, ngf=8, n_down=1, n_blocks=1, blend=True)


def test_train_align_refuses_a_blend_without_reference_and_an_origin_past_the_end(tmp_path):
    import argparse

    from revavatar.learning.train_align import add_arguments, run_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = ["--region", "left_eye", "--data", str(tmp_path / "none"), "--no-progress"]
    with pytest.raises(ValueError, match="needs --reference"):
        run_from_args(parser.parse_args([*base, "--ref-blend"]))
    with pytest.raises(ValueError, match="--lr-origin 10"):
        run_from_args(parser.parse_args([*base, "--steps", "10", "--lr-origin", "10"]))
    with pytest.raises(ValueError, match="--no-blend-eye"):  # nothing to keep off without a blend
        run_from_args(parser.parse_args([*base, "--reference", "--no-blend-eye"]))
    face = ["--region", "left_eye,lower_face", *base[2:], "--reference", "--ref-blend"]
    with pytest.raises(ValueError, match="eye regions only"):
        run_from_args(parser.parse_args([*face, "--no-blend-eye"]))
    with pytest.raises(ValueError, match="eye regions only"):
        run_from_args(parser.parse_args([*face, "--mirror-eyes"]))
    with pytest.raises(ValueError, match="--enroll-frames 8"):  # a plane has no shape to average
        run_from_args(parser.parse_args([*base, "--enroll-frames", "8"]))
    with pytest.raises(ValueError, match="--enroll-frames 0"):
        run_from_args(parser.parse_args([*base, "--input-mode", "surface", "--enroll-frames",
                                         "0"]))


def test_train_align_mirror_eyes_doubles_the_pairs_and_says_so(tmp_path):
    import json

    from revavatar.learning.train_align import run_from_args

    parser, toy = _train_cli(tmp_path)
    args = parser.parse_args(["--region", "left_eye", "--data", str(toy), "--batch", "2",
                              "--steps", "1", "--no-progress", "--no-bf16", "--ngf", "8",
                              "--input-mode", "rectified", "--reference", "--ref-blend",
                              "--no-blend-eye", "--mirror-eyes", "--ckpt-root",
                              str(tmp_path / "c"), "--out", str(tmp_path / "m")])
    card = json.loads((run_from_args(args)[0] / "card.json").read_text())
    assert card["train_samples"] == 2 * 8  # the toy's 8 train samples, each eye
    assert card["mirror_eyes"] is True
    assert "--no-blend-eye --mirror-eyes" in card["command"]
    assert "the other eye mirrored" in (tmp_path / "m" / "align_left_eye" / "README.md").read_text()


def test_ema_averages_the_generator_and_is_what_is_validated_and_exported(tmp_path):
    from safetensors.torch import load_file

    seed_everything(0)
    model = AlignmentModel(AlignModelConfig(region="left_eye", lr=1e-3, ema=0.75, **TINY))
    view, target = _batch()
    start = [p.detach().clone() for p in model.G.parameters()]
    model.train_step(view, target)
    for avg, p0, p in zip(model.G_ema.parameters(), start, model.G.parameters(), strict=True):
        torch.testing.assert_close(avg, 0.75 * p0 + 0.25 * p)  # one step of the average
    assert not all(torch.equal(a, b) for a, b in zip(model.G_ema.parameters(),
                                                     model.G.parameters(), strict=True))
    assert "G_ema" in model.trainable() and model.deployed is model.G_ema
    with torch.no_grad():
        torch.testing.assert_close(model(view), model.G_ema(view))
    out = export_aligner(model, tmp_path / "m", {"steps": 1, "command": "test"})
    stored = load_file(str(out / "weights.safetensors"))
    for k, v in model.G_ema.state_dict().items():
        torch.testing.assert_close(stored[k], v)
    # a checkpoint keeps the average: resuming goes on from it
    ck = Checkpointer(tmp_path / "ck")
    ck.save(1, model.trainable(), model.optimizers())
    again = AlignmentModel(AlignModelConfig(region="left_eye", lr=1e-3, ema=0.75, **TINY))
    ck.load(again.trainable(), again.optimizers())
    for a, b in zip(again.G_ema.parameters(), model.G_ema.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert ck.has_module("G_ema") and not ck.has_module("G_avg")
    with pytest.raises(ValueError, match="ema"):
        AlignModelConfig(region="left_eye", ema=1.0)


def test_train_align_ema_fine_tune_of_a_run_without_one(tmp_path):
    import json

    from safetensors.torch import load_file

    train, base = _fine_tune(tmp_path, "--ema", "0.5")
    card = json.loads((tmp_path / "m2" / "align_left_eye" / "card.json").read_text())
    assert card["config"]["ema"] == 0.5 and "--ema 0.5" in card["command"]
    readme = (tmp_path / "m2" / "align_left_eye" / "README.md").read_text()
    assert "moving average of G's (decay 0.5 per step)" in readme
    ckpt = Checkpointer(tmp_path / "b" / "align_left_eye")
    weights = load_file(str(ckpt.latest() / "weights.safetensors"))
    exported = load_file(str(tmp_path / "m2" / "align_left_eye" / "weights.safetensors"))
    for k, v in exported.items():
        torch.testing.assert_close(v, weights[f"G_ema.{k}"])
    assert not all(torch.equal(v, weights[f"G.{k}"]) for k, v in exported.items())
    with pytest.raises(ValueError, match="--ema"):
        train([*base, "--steps", "2", "--ema", "1.5", "--ckpt-root", str(tmp_path / "c"),
               "--out", str(tmp_path / "m3")])
