"""OnnxRestorer: runs an exported restorer graph on the composite, torch-free, registered as ours."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from revavatar.core.canonical import CanonicalLayout
from revavatar.core.composite import composite
from revavatar.core.onnx_restorer import OnnxRestorer
from revavatar.core.restoration import RESTORERS, create_restorer
from revavatar.errors import ModelLoadError


class _Profile:
    def __init__(self, dp: np.ndarray) -> None:
        self.dp = dp


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    from revavatar.learning.restoration_model import RestoreConfig, build_generator, export_generator

    cfg = RestoreConfig(variant="ours", size=256, channels=(8, 8, 16, 16), heads=2, attn_dim=8,
                        res_blocks=1)
    g = build_generator(cfg)
    torch.nn.init.normal_(g.head[0].weight, 0, 0.01)
    return export_generator(g, cfg, tmp_path_factory.mktemp("m") / "restore_ours")


def _crops(rng: np.random.Generator, layout: CanonicalLayout) -> dict[str, np.ndarray]:
    out = {}
    for name in ("left_eye", "right_eye", "lower_face"):
        w, h = layout.region(name).crop_size
        out[name] = rng.integers(0, 255, (h, w) if "eye" in name else (h, w, 3), dtype=np.uint8)
    return out


def test_restore_shape_and_reference_use(model_dir: Path) -> None:
    layout = CanonicalLayout(256)
    rng = np.random.default_rng(0)
    dp = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
    r = OnnxRestorer(_Profile(dp), layout, model_dir)
    assert r.method == "ours"
    crops = _crops(rng, layout)
    out = r.restore(crops)
    assert out.shape == (256, 256, 3) and out.dtype == np.uint8
    x = composite(dp, crops, layout)[0]
    assert np.abs(out.astype(int) - x).mean() < 40  # residual over the composite, not noise
    r.set_dp(np.full_like(dp, 128))
    assert not np.array_equal(r.restore(crops), out)  # DP is both canvas and reference


def test_registered_in_restorers(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert RESTORERS["ours"] is OnnxRestorer
    monkeypatch.setenv("REVAVATAR_MODELS", str(model_dir.parent))
    layout = CanonicalLayout(256)
    r = create_restorer("ours", _Profile(np.zeros((256, 256, 3), np.uint8)), layout)
    assert r.restore(_crops(np.random.default_rng(1), layout)).shape == (256, 256, 3)


def test_missing_model_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="config.json"):
        OnnxRestorer(_Profile(np.zeros((256, 256, 3), np.uint8)), CanonicalLayout(256), tmp_path)


def test_no_torch_at_run_time(model_dir: Path) -> None:
    code = ("import sys, numpy as np\n"
            "from revavatar.core.canonical import CanonicalLayout\n"
            "from revavatar.core.onnx_restorer import OnnxRestorer\n"
            "P = type('P', (), {'dp': np.zeros((256, 256, 3), np.uint8)})\n"
            f"r = OnnxRestorer(P(), CanonicalLayout(256), {str(model_dir)!r})\n"
            "r.restore({})\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    subprocess.run([sys.executable, "-c", code], check=True)
