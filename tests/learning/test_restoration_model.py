"""Restorer networks: shapes per variant, learning on a fixed batch, exact resume, ONNX, data."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from revavatar.core.composite import composite
from revavatar.learning.export import OnnxModel
from revavatar.learning.restoration_data import RestorationTriples, aligner_like_crops
from revavatar.learning.restoration_model import (
    VARIANTS,
    RestoreConfig,
    RestoreTrainer,
    build_generator,
    export_generator,
    load_generator,
    uses_reference,
    write_card,
)
from revavatar.learning.trainer import Checkpointer

SMALL = {"channels": (8, 8, 16, 16), "heads": 2, "attn_dim": 8, "res_blocks": 1,
         "ngf_translation": 4, "translation_blocks": 1, "ndf": 8, "bf16": False}


def _cfg(variant: str, size: int = 64, **kw: object) -> RestoreConfig:
    return RestoreConfig(variant=variant, size=size, **{**SMALL, **kw})


def _batch(size: int = 128, n: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    y = torch.rand(n, 3, size, size, generator=g) * 2 - 1
    y = torch.nn.functional.avg_pool2d(y, 5, 1, 2)  # some spatial structure
    return {"x": y * 0.5, "z": y.flip(-1), "y": y}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_per_variant(variant: str) -> None:
    cfg = _cfg(variant)
    g = build_generator(cfg).eval()
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    out = g(x, x) if uses_reference(cfg) else g(x)
    assert out.shape == (2, 3, 64, 64)
    assert torch.isfinite(out).all()


def test_reference_changes_output_only_when_used() -> None:
    x, z1, z2 = (torch.rand(1, 3, 64, 64) * 2 - 1 for _ in range(3))
    for variant, changes in (("ours", True), ("ours_concat", True)):
        g = build_generator(_cfg(variant)).eval()
        torch.nn.init.normal_(g.head[0].weight, 0, 0.1)  # head starts at zero (identity on x)
        with torch.no_grad():
            assert (not torch.allclose(g(x, z1), g(x, z2))) == changes


def test_untrained_restorer_is_identity_on_composite() -> None:
    g = build_generator(_cfg("ours")).eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(g(x, torch.zeros_like(x)), x)


def test_unknown_variant_lists_keys() -> None:
    with pytest.raises(ValueError, match="ours_concat"):
        RestoreConfig(variant="nope")


def test_few_steps_reduce_loss_on_fixed_batch() -> None:
    torch.manual_seed(0)
    tr = RestoreTrainer(_cfg("ours", 128, lambda_adv=0.1, lr=2e-3))
    batch = _batch(n=2)

    def l1() -> float:  # the generator's own error, free of the step's adversarial noise
        with torch.no_grad():
            return float(F.l1_loss(tr.generate(batch["x"], batch["z"]).float(), batch["y"]))

    first = l1()
    for _ in range(24):  # here: 0.75x after 16 steps, 0.60x after 24
        tr.step(batch)
    assert l1() < 0.8 * first


def test_exact_resume(tmp_path: Path) -> None:
    def run(trainer: RestoreTrainer, steps: int) -> None:
        for _ in range(steps):
            trainer.step(_batch())

    torch.manual_seed(1)
    a = RestoreTrainer(_cfg("ours_no_lpips", 128))
    run(a, 2)
    ck = Checkpointer(tmp_path)
    ck.save(2, a.modules, a.optimizers)
    run(a, 2)
    torch.manual_seed(99)
    b = RestoreTrainer(_cfg("ours_no_lpips", 128))
    assert ck.load(b.modules, b.optimizers)["step"] == 2
    run(b, 2)
    for (k, va), vb in zip(a.G.state_dict().items(), b.G.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.parametrize("variant", ["ours", "ours_no_ref"])
def test_onnx_round_trip(tmp_path: Path, variant: str) -> None:
    cfg = _cfg(variant)
    g = build_generator(cfg)
    torch.nn.init.normal_(g.head[0].weight, 0, 0.1)
    out = export_generator(g, cfg, tmp_path / variant, {"steps": 0})
    g2, cfg2 = load_generator(out)
    assert cfg2 == cfg
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    ins = (x, x.flip(-1)) if uses_reference(cfg) else (x,)
    with torch.no_grad():
        ref = g2(*ins).numpy()
    names = ["x", "z"][: len(ins)]
    got = OnnxModel(out / "model.onnx").run(**{n: t.numpy() for n, t in zip(names, ins, strict=True)})
    np.testing.assert_allclose(got, ref, atol=2e-3)
    card = write_card(out).read_text()
    assert f"# restore_{variant}" in card
    assert f"{sum(p.numel() for p in g.parameters()):,} parameters" in card
    assert ("inputs x, z" in card) == uses_reference(cfg)


def _fake_build(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    (root / "s").mkdir(parents=True)
    entries = []
    for i in range(n):
        paths = {}
        for field in ("gt", "reference"):
            img = cv2.GaussianBlur(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8), (9, 9), 3)
            paths[field] = f"s/{i}_{field}.png"
            cv2.imwrite(str(root / paths[field]), img)
        for cam, shape in (("left_eye", (240, 320)), ("right_eye", (240, 320)),
                           ("lower_face", (240, 320, 3))):
            paths[cam] = f"s/{i}_{cam}.png"
            cv2.imwrite(str(root / paths[cam]), np.zeros(shape, np.uint8))
        entries.append({"index": i, "identity": f"id{i % 2}", "split": "test", **paths})
    (root / "index.json").write_text(json.dumps(entries))
    (root / "meta.json").write_text(json.dumps({"config": {"samples": n, "layout_size": 256},
                                                "summary": {"complete": True}}))
    return root


def test_triples_composite_is_the_run_time_composite(tmp_path: Path) -> None:
    ds = RestorationTriples(_fake_build(tmp_path), "test", train=False)
    im = ds.images(1)
    assert im["crops"]["left_eye"].ndim == 2 and im["crops"]["lower_face"].ndim == 3
    expected, mask = composite(im["z"], im["crops"], ds.layout)
    np.testing.assert_array_equal(im["x"], expected)
    np.testing.assert_array_equal(im["x"][mask == 0], im["z"][mask == 0])
    again = ds.images(1)  # evaluation draws are fixed per sample
    np.testing.assert_array_equal(again["x"], im["x"])
    assert ds[0]["x"].shape == (3, 256, 256)


def test_training_references_come_from_the_same_identity(tmp_path: Path) -> None:
    root = _fake_build(tmp_path)
    ds = RestorationTriples(root, "test", train=True)
    ds.set_step(3)
    first = ds.images(0)["z"]
    ds.set_step(3)
    np.testing.assert_array_equal(ds.images(0)["z"], first)  # keyed by step: resumable
    same_id = [cv2.imread(str(root / f"s/{i}_{f}.png")) for i in (0, 2) for f in ("gt", "reference")]
    pool = [im for im in same_id[1:]] + [im[:, ::-1] for im in same_id[1:]]
    assert any(np.array_equal(first, p) for p in pool)


def test_aligner_like_crops_are_degraded_not_copied() -> None:
    from revavatar.core.canonical import CanonicalLayout

    layout = CanonicalLayout(256)
    gt = cv2.GaussianBlur(np.random.default_rng(1).integers(0, 255, (256, 256, 3), np.uint8),
                          (7, 7), 2)
    crops = aligner_like_crops(gt, layout, np.random.default_rng(0))
    clean = cv2.cvtColor(layout.crop_region(gt, "left_eye"), cv2.COLOR_BGR2GRAY)
    assert crops["left_eye"].shape == clean.shape
    diff = np.abs(crops["left_eye"].astype(int) - clean).mean()
    assert 0.5 < diff < 60
