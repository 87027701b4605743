"""ONNX export checked against torch, and the onnxruntime wrapper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from revavatar.errors import ModelLoadError
from revavatar.learning.export import OnnxModel, export_onnx
from revavatar.learning.networks import define_generator


def test_export_round_trip_dynamic_batch(tmp_path):
    torch.manual_seed(0)
    g = define_generator("resnet", in_ch=1, out_ch=1, ngf=8, n_down=2, n_blocks=2)
    x = torch.randn(1, 1, 32, 48)
    diff = export_onnx(g, x, tmp_path / "g.onnx", ["view"], ["aligned"])
    assert diff < 1e-3
    model = OnnxModel(tmp_path / "g.onnx", threads=1)
    assert model.input_names == ["view"] and model.output_names == ["aligned"]
    xb = torch.randn(3, 1, 32, 48)
    with torch.no_grad():
        ref = g(xb).numpy()
    got = model.run(view=xb.numpy())
    assert got.shape == (3, 1, 32, 48)
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_export_rejects_mismatch(tmp_path, monkeypatch):
    class Drift(nn.Module):
        def forward(self, x):
            return x * 2

    m = Drift()
    import revavatar.learning.export as ex

    real_run_all = ex.OnnxModel.run_all
    monkeypatch.setattr(ex.OnnxModel, "run_all",
                        lambda self, **kw: [o + 1.0 for o in real_run_all(self, **kw)])
    with pytest.raises(ModelLoadError, match="differs from torch"):
        export_onnx(m, torch.randn(1, 1, 4, 4), tmp_path / "d.onnx", ["x"], ["y"])
    assert not (tmp_path / "d.onnx").exists()


def test_onnx_model_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="not found"):
        OnnxModel(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load"):
        OnnxModel(tmp_path / "bad.onnx")
    g = nn.Conv2d(1, 1, 1)
    export_onnx(g, torch.randn(1, 1, 4, 4), tmp_path / "c.onnx", ["x"], ["y"])
    with pytest.raises(ValueError, match="takes inputs"):
        OnnxModel(tmp_path / "c.onnx").run(z=np.zeros((1, 1, 4, 4), np.float32))
