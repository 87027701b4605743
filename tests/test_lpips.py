"""LPIPS port: weights equal the lpips wheel's, distances equal the lpips package's own forward.

The `lpips` package (a test dependency, installed with ``pip install --no-deps lpips==0.1.4``)
imports ``torchvision.models`` at import time; torchvision is not installable beside our torch,
so the reference tests inject a minimal fake ``torchvision`` whose ``models.alexnet`` / ``vgg16``
build the standard torchvision ``features`` layers (no download) and load our converted backbone.
The converted weights come from the cache that the set-up fills once (``revavatar fetch-lpips``).
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import os
import pickle
import shutil
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from revavatar.errors import ModelLoadError
from revavatar.learning.lpips import LPIPS, NETS, image_to_tensor, lpips_distance
from revavatar.learning.lpips_weights import (
    convert_flax_params,
    fetch_lpips_weights,
    load_ckpt,
    load_lpips,
    weights_path,
)

# torchvision's features layers, written out independently of the port.
_TV_ALEX = ["C3-64-11-4-2", "R", "M3", "C64-192-5-1-2", "R", "M3", "C192-384-3-1-1", "R",
            "C384-256-3-1-1", "R", "C256-256-3-1-1", "R", "M3"]  # fmt: skip
_TV_VGG_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _tv_features(net: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    if net == "alex":
        for item in _TV_ALEX:
            if item == "R":
                layers.append(nn.ReLU(inplace=True))
            elif item == "M3":
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            else:
                cin, cout, k, s, p = map(int, item[1:].split("-"))
                layers.append(nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p))
    else:
        cin = 3
        for v in _TV_VGG_CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                layers += [nn.Conv2d(cin, int(v), kernel_size=3, padding=1), nn.ReLU(inplace=True)]
                cin = int(v)
    return nn.Sequential(*layers)


def _fake_torchvision() -> tuple[types.ModuleType, types.ModuleType]:
    tv = types.ModuleType("torchvision")
    models = types.ModuleType("torchvision.models")

    def _factory(net: str):  # noqa: ANN202
        def build(pretrained: bool = False, **_: object) -> nn.Module:  # noqa: ARG001 (never downloads)
            holder = nn.Module()
            holder.features = _tv_features(net)
            return holder

        return build

    models.alexnet = _factory("alex")
    models.vgg16 = _factory("vgg")
    tv.models = models
    return tv, models


def _lpips_wheel_dir() -> Path:
    spec = importlib.util.find_spec("lpips")
    assert spec is not None and spec.origin, "test dependency missing: pip install --no-deps lpips==0.1.4"
    return Path(spec.origin).parent


@pytest.fixture(scope="module")
def lpips_pkg() -> Iterator[types.ModuleType]:
    """The real `lpips` package, imported over a fake torchvision (removed afterwards)."""
    _lpips_wheel_dir()
    tv, models = _fake_torchvision()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "torchvision", tv)
        mp.setitem(sys.modules, "torchvision.models", models)
        for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
            mp.delitem(sys.modules, name)
        import lpips  # noqa: PLC0415 (only importable over the fake torchvision)

        yield lpips
        for name in [m for m in sys.modules if m == "lpips" or m.startswith("lpips.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def alex_path() -> Path:
    """Converted AlexNet weights (fetched by the set-up; cached afterwards)."""
    return fetch_lpips_weights("alex")


def _vgg_or_skip() -> Path:
    path = weights_path("vgg")
    if not (path.is_file() and path.with_suffix(".json").is_file()):
        pytest.skip(f"VGG LPIPS conversion not cached at {path} (run `revavatar fetch-lpips --net vgg`)")
    return path


def _reference(lpips_pkg: types.ModuleType, net: str, port: LPIPS) -> nn.Module:
    """lpips.LPIPS with its own wheel linear layers and our converted backbone."""
    ref = lpips_pkg.LPIPS(net=net, verbose=False)
    ours = port.state_dict()
    backbone = {}
    for key in ref.state_dict():
        if key.startswith("net.slice"):
            idx_param = key.split(".", 2)[2]  # "<torchvision index>.<weight|bias>"
            backbone[key] = ours[f"features.{idx_param}"]
    assert len(backbone) == 2 * len(NETS[net].convs)
    missing, unexpected = ref.load_state_dict(backbone, strict=False)
    assert not unexpected and all(k.startswith(("lin", "scaling_layer.")) for k in missing)
    assert torch.equal(ref.scaling_layer.shift, port.shift)
    assert torch.equal(ref.scaling_layer.scale, port.scale)
    return ref.eval()


def _pairs(frames: list[np.ndarray], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(0)
    base = [cv2.resize(f[:, 140:500], (size, size), interpolation=cv2.INTER_AREA) for f in frames[:40:10]]
    noisy = np.clip(base[0] + rng.normal(0, 20, base[0].shape), 0, 255).astype(np.uint8)
    blurred = cv2.GaussianBlur(base[1], (0, 0), 2.0)
    rand = rng.integers(0, 256, base[0].shape, dtype=np.uint8)
    a = [base[0], base[1], base[2], base[3], rand]
    b = [noisy, blurred, base[3], base[2], base[0]]
    return torch.cat([image_to_tensor(x) for x in a]), torch.cat([image_to_tensor(x) for x in b])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_linear_layers_equal_the_lpips_wheel(net: str, alex_path: Path) -> None:
    path = alex_path if net == "alex" else _vgg_or_skip()
    ours = load_file(str(path))
    pth = _lpips_wheel_dir() / "weights" / "v0.1" / f"{net}.pth"
    wheel = torch.load(pth, weights_only=True, map_location="cpu")
    assert len(wheel) == len(NETS[net].channels)
    for k in range(len(NETS[net].channels)):
        assert torch.equal(ours[f"lins.{k}.weight"], wheel[f"lin{k}.model.1.weight"])


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_distances_equal_the_lpips_package(
    net: str, alex_path: Path, lpips_pkg: types.ModuleType, demo_frames: list[np.ndarray]
) -> None:
    if net == "vgg":
        _vgg_or_skip()
    del alex_path
    port = load_lpips(net)
    ref = _reference(lpips_pkg, net, port)
    a, b = _pairs(demo_frames, 96 if net == "vgg" else 160)
    with torch.no_grad():
        ours = port(a, b)
        theirs = ref(a, b).flatten()
    assert ours.shape == (5,)
    assert torch.all(theirs > 0.01)
    assert float((ours - theirs).abs().max()) < 1e-5, (ours, theirs)


def test_identical_is_zero_and_noise_increases_distance(alex_path: Path, face_image: np.ndarray) -> None:
    del alex_path
    face = cv2.resize(face_image[:, 140:500], (128, 128), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(1)
    noise = rng.normal(0, 1, face.shape)
    dists = [lpips_distance(face, np.clip(face + s * noise, 0, 255).astype(np.uint8)) for s in (0, 5, 15, 40)]
    assert dists[0] == pytest.approx(0.0, abs=1e-6)
    assert all(lo < hi for lo, hi in itertools.pairwise(dists)), dists
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    assert lpips_distance(gray, gray) == pytest.approx(0.0, abs=1e-6)
    assert lpips_distance(gray, cv2.GaussianBlur(gray, (0, 0), 2.0)) > 0.02


def test_frozen_eval_gradients_and_bf16_autocast(alex_path: Path, demo_frames: list[np.ndarray]) -> None:
    del alex_path
    model = load_lpips("alex")
    assert not any(p.requires_grad for p in model.parameters())
    nn.Sequential(model).train()
    assert not model.training
    a, b = _pairs(demo_frames, 96)
    x = a.clone().requires_grad_(True)
    d32 = model(x, b)
    d32.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        d16 = model(a, b)
    assert d16.dtype == torch.float32
    assert torch.allclose(d16, d32.detach(), rtol=0.05, atol=0.01), (d16, d32)
    with pytest.raises(ValueError, match="differ in shape"):
        model(a, b[:, :, :64])


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned > lpips_pwned.txt",))


def test_restricted_unpickler_refuses_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError, match=r"refusing to unpickle (posix|nt|os)\.system"):
        load_ckpt(pickle.dumps({"AlexNet_0": _Evil()}, protocol=3))
    assert not (tmp_path / "lpips_pwned.txt").exists()
    with pytest.raises(ModelLoadError, match="expected float arrays"):
        load_ckpt(pickle.dumps({"w": np.array([1, "a"], dtype=object)}, protocol=3))
    tree = {"a": {"kernel": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    assert np.array_equal(load_ckpt(pickle.dumps(tree, protocol=3))["a"]["kernel"], tree["a"]["kernel"])
    buf = io.BytesIO()
    pickle.dump([1, 2], buf)
    with pytest.raises(ModelLoadError, match="expected a dict"):
        load_ckpt(buf.getvalue())


def test_conversion_transposes_hwio_to_oihw() -> None:
    rng = np.random.default_rng(2)
    spec = NETS["alex"]
    tree: dict[str, dict] = {"AlexNet_0": {}}
    for j, (cin, cout, k, _, _) in enumerate(spec.convs):
        tree["AlexNet_0"][f"Conv_{j}"] = {
            "kernel": rng.normal(size=(k, k, cin, cout)).astype(np.float32),
            "bias": rng.normal(size=cout).astype(np.float32),
        }
    for i, c in enumerate(spec.channels):
        tree[f"NetLinLayer_{i}"] = {"Conv_0": {"kernel": rng.normal(size=(1, 1, c, 1)).astype(np.float32)}}
    state = convert_flax_params(tree, "alex")
    w = state["features.3.weight"].numpy()  # second conv (5x5), torchvision index 3
    src = tree["AlexNet_0"]["Conv_1"]["kernel"]
    assert w.shape == (192, 64, 5, 5)
    assert w[7, 11, 1, 4] == src[1, 4, 11, 7] and w[7, 11, 4, 1] == src[4, 1, 11, 7]
    assert state["lins.2.weight"].shape == (1, 384, 1, 1)
    LPIPS("alex").load_state_dict(state, strict=True)
    del tree["AlexNet_0"]["Conv_4"]
    with pytest.raises(ModelLoadError, match="Conv_4"):
        convert_flax_params(tree, "alex")


def test_missing_or_corrupt_cache_raises(tmp_path: Path, alex_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="revavatar fetch-lpips"):
        load_lpips("alex", cache_dir=tmp_path, allow_fetch=False)
    shutil.copy(alex_path, tmp_path / alex_path.name)
    shutil.copy(alex_path.with_suffix(".json"), tmp_path / alex_path.with_suffix(".json").name)
    assert load_lpips("alex", cache_dir=tmp_path).net == "alex"
    data = bytearray((tmp_path / alex_path.name).read_bytes())
    data[-100] ^= 0xFF
    (tmp_path / alex_path.name).write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256"):
        load_lpips("alex", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown LPIPS net"):
        weights_path("squeeze")
