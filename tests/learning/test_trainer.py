"""Checkpoints (exact resume), loss logs and plots, autocast, seeding."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from revavatar.errors import ModelLoadError
from revavatar.learning import trainer
from revavatar.learning.trainer import Checkpointer, LossLog, autocast, progress, seed_everything, use_bf16


def _setup(seed: int = 0):
    seed_everything(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    return net, opt


def _step(net, opt):
    x = torch.randn(16, 4)  # from the global RNG: resume must restore it too
    loss = ((net(x) - x.sum(1, keepdim=True)) ** 2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss)


def test_resume_is_exact(tmp_path):
    net, opt = _setup()
    ck = Checkpointer(tmp_path / "ck", keep=2)
    for _ in range(3):
        _step(net, opt)
    ck.save(3, {"net": net}, {"opt": opt}, extra={"config": {"lr": 0.01}})
    straight = [_step(net, opt) for _ in range(3)]

    net2, opt2 = _setup(seed=123)  # different init, RNG and optimizer state
    info = ck.load({"net": net2}, {"opt": opt2})
    assert info["step"] == 3 and info["extra"]["config"]["lr"] == 0.01
    resumed = [_step(net2, opt2) for _ in range(3)]
    assert resumed == straight
    cfg = json.loads((info["path"] / "config.json").read_text())
    assert cfg["step"] == 3 and cfg["modules"] == ["net"]


def test_keep_latest_and_errors(tmp_path):
    net, opt = _setup()
    ck = Checkpointer(tmp_path)
    with pytest.raises(ModelLoadError, match="no checkpoint"):
        ck.load({"net": net})
    for s in (1, 2, 3):
        ck.save(s, {"net": net}, {"opt": opt})
    assert [p.name for p in sorted(tmp_path.glob("step_*"))] == ["step_00000002", "step_00000003"]
    assert ck.latest().name == "step_00000003"
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(ModelLoadError, match="do not fit"):
        ck.load({"net": nn.Linear(2, 2)})


def test_loss_log_truncate_and_plot(tmp_path):
    log = LossLog(tmp_path)
    for s in range(1, 41):
        log.append(s, g=1.0 / s, d=torch.tensor(0.5))
    log.truncate(30)
    log2 = LossLog(tmp_path)  # reopened by a resumed run
    log2.append(31, g=0.1, d=0.2)
    rows = log2.rows()
    assert [int(r["step"]) for r in rows] == list(range(1, 32))
    assert set(rows[0]) == {"step", "time_s", "d", "g"}
    log2.append(32, g=0.1, d=0.2, focus=0.3)  # a term a fine-tune adds: a new column
    rows = LossLog(tmp_path).rows()
    assert rows[0]["focus"] == "" and rows[-1]["focus"] == "0.3" and len(rows) == 32
    png = log2.plot(tmp_path / "curves.png")
    assert png.stat().st_size > 5000
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_autocast_switch():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with autocast(True):
        assert (a @ b).dtype == torch.bfloat16
    with autocast(False):
        assert (a @ b).dtype == torch.float32


def test_seed_and_progress():
    seed_everything(5)
    x = torch.rand(3)
    seed_everything(5)
    assert torch.equal(x, torch.rand(3))
    bar = progress(10, initial=4)
    bar.update(2)
    assert bar.n == 6
    bar.close()


def test_bf16_only_where_the_cpu_computes_it(monkeypatch, capsys) -> None:
    """Emulated bf16 is an order of magnitude slower than fp32: ask for it and get fp32 (with one
    notice) on a CPU without AVX512-BF16/AMX; get it where either is present."""
    for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        monkeypatch.setattr(torch.cpu, name, lambda: False)
    trainer._say_fp32.cache_clear()
    assert not trainer.bf16_native()
    assert use_bf16(True) is False and use_bf16(True) is False and use_bf16(False) is False
    assert capsys.readouterr().err.count("training in fp32") == 1
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert trainer.bf16_native() and use_bf16(True) is True and use_bf16(False) is False
    assert "fp32" not in capsys.readouterr().err
