"""Training plumbing shared by the learned stages: checkpoints, loss logs, autocast, seeding.

Training here runs on a shared 2-core CPU in sessions of limited length, so a run must stop and
continue *exactly*: :class:`Checkpointer` stores weights (safetensors), optimizer state, RNG
states and the step atomically, and :meth:`Checkpointer.load` restores all of them.
:class:`LossLog` keeps the per-step losses as CSV (truncated on resume so curves never repeat
steps) and plots them. :func:`autocast` is CPU bfloat16 autocast behind one flag, because it
only pays off where it was measured to.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from revavatar.errors import ModelLoadError

__all__ = ["Checkpointer", "LossLog", "add_run_arguments", "autocast", "progress", "rng_state",
           "seed_everything", "set_rng_state", "update_average"]

_WEIGHTS: Final = "weights.safetensors"
_STATE: Final = "state.pt"
_CONFIG: Final = "config.json"


def add_run_arguments(parser: Any, out: Path, ckpt: Path, threads: int = 2) -> None:
    """The flags every single-model training command shares: where the model and the
    checkpoints go, how often to checkpoint, resume, seed, threads, progress bar."""
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--ckpt", type=Path, default=ckpt, help="checkpoint folder")
    parser.add_argument("--every", type=int, default=500, help="checkpoint every N steps")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=threads)
    parser.add_argument("--no-progress", action="store_true")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU) generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """The global RNG states (python, numpy, torch) for an exact resume."""
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "torch": torch.get_rng_state()}


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def bf16_native() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX).

    Without it, autocast emulates bf16 and is far slower than fp32: one ``train align`` step
    of the eye models took 40-55 s under bf16 autocast and 3 s in fp32 on an AVX2-only AMD EPYC
    (2026-12-06), where the Xeon with AMX ran bf16 2.7x faster than fp32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def use_bf16(requested: bool) -> bool:
    """``requested`` unless the CPU lacks native bf16 (then fp32, said once on stderr)."""
    if requested and not bf16_native():
        _say_fp32()
        return False
    return requested


@functools.cache
def _say_fp32() -> None:
    print("bf16 autocast off: this CPU has no AVX512-BF16/AMX (emulated bf16 is much slower than "
          "fp32); training in fp32", file=sys.stderr)


@contextlib.contextmanager
def autocast(enabled: bool) -> Iterator[None]:
    """CPU bfloat16 autocast when ``enabled`` (a no-op context otherwise)."""
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bool(enabled)):
        yield


def progress(total: int, initial: int = 0, desc: str = "train", disable: bool = False,
             unit: str = "step", iterable: Any = None) -> Any:
    """A tqdm bar over steps (``initial`` for resumed runs); ``bar.set_postfix(loss=...)``.
    With ``iterable`` it wraps that iterable (evaluation loops)."""
    from tqdm import tqdm  # noqa: PLC0415

    return tqdm(iterable, total=total, initial=initial, desc=desc, unit=unit, smoothing=0.05,
                dynamic_ncols=True, disable=disable)


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """One step of a moving average of ``model``'s weights into ``average`` (same
    architecture): every weight moves ``1 - decay`` of the way to the model's."""
    for avg, p in zip(average.parameters(), model.parameters(), strict=True):
        avg.lerp_(p, 1.0 - decay)


def _flatten(modules: Mapping[str, nn.Module]) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for key, val in mod.state_dict().items():
            out[f"{name}.{key}"] = val.detach().cpu().contiguous().clone()
    return out


class Checkpointer:
    """Atomic, resumable checkpoints in ``dir/step_NNNNNNNN/``.

    Each checkpoint folder holds ``weights.safetensors`` (every module's state dict, keys
    ``<module>.<param>``), ``state.pt`` (optimizer states, RNG states, step and ``extra``; torch
    save) and ``config.json`` (step, module names, ``extra`` when it is JSON-serialisable). It is
    written into a temporary folder and renamed into place, so a kill never leaves a torn
    checkpoint; only the newest ``keep`` are kept.

    Args:
        directory: where checkpoints go (created).
        keep: how many checkpoints to keep (>= 1).
    """

    def __init__(self, directory: str | Path, keep: int = 2) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.keep = max(1, int(keep))

    def _all(self) -> list[Path]:
        return sorted(p for p in self.dir.glob("step_*") if (p / _STATE).is_file()
                      and (p / _WEIGHTS).is_file())

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        ckpts = self._all()
        return ckpts[-1] if ckpts else None

    def save(self, step: int, modules: Mapping[str, nn.Module],
             optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
             extra: Mapping[str, Any] | None = None) -> Path:
        """Write checkpoint ``step``; returns its folder."""
        final = self.dir / f"step_{int(step):08d}"
        tmp = self.dir / f".tmp-{os.getpid()}-{final.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(_flatten(modules), str(tmp / _WEIGHTS))
        extra = dict(extra or {})
        torch.save({"step": int(step), "rng": rng_state(), "extra": extra,
                    "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()}},
                   tmp / _STATE)
        cfg: dict[str, Any] = {"step": int(step), "modules": sorted(modules),
                               "saved_unix": round(time.time(), 3)}
        try:
            cfg["extra"] = json.loads(json.dumps(extra))
        except TypeError:
            cfg["extra"] = None
        (tmp / _CONFIG).write_text(json.dumps(cfg, indent=1))
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        for old in self._all()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def has_module(self, name: str) -> bool:
        """Whether the newest checkpoint stores weights of module ``name``."""
        ckpt = self.latest()
        if ckpt is None or not (ckpt / _WEIGHTS).is_file():
            return False
        with safe_open(str(ckpt / _WEIGHTS), "pt") as f:
            return any(k.startswith(f"{name}.") for k in f.keys())  # noqa: SIM118

    def load_weights(self, modules: Mapping[str, nn.Module], new: tuple[str, ...] = ()) -> int:
        """Start ``modules`` from the newest checkpoint's weights only (no optimizer, no RNG).

        For fine-tuning a grown architecture: parameters whose names start with one of ``new``
        may be absent from the checkpoint (they keep their fresh initialisation), and a layer that
        is now wider (more inputs and/or outputs, :func:`_grow`) gets the stored weights in its
        leading slice, zeros from the added inputs to the stored outputs and fresh weights for
        the added outputs, so the grown network starts as the stored one; anything else that
        does not fit is an error. Returns the checkpoint's step.

        Raises:
            ModelLoadError: no checkpoint, or weights that do not fit.
        """
        ckpt = self._weights_into(None, modules, new)
        return int(json.loads((ckpt / _CONFIG).read_text())["step"])

    def _weights_into(self, path: str | Path | None, modules: Mapping[str, nn.Module],
                      new: tuple[str, ...] | None) -> Path:
        """Load a checkpoint's weights into ``modules``: exactly (``new`` None) or allowing
        the parameters named ``new*`` to be absent and inputs to grow. Returns the folder."""
        ckpt = Path(path) if path is not None else self.latest()
        if ckpt is None or not (ckpt / _WEIGHTS).is_file():
            msg = f"no checkpoint in {self.dir}"
            raise ModelLoadError(msg)
        tensors = load_file(str(ckpt / _WEIGHTS))
        for name, mod in modules.items():
            prefix = f"{name}."
            sd = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
            if new is not None:
                sd = _grow(sd, mod)
            try:
                missing, unexpected = mod.load_state_dict(sd, strict=new is None)
            except RuntimeError as err:
                msg = f"{ckpt}: weights of {name!r} do not fit its architecture: {err}"
                raise ModelLoadError(msg) from err
            bad = [k for k in missing if not k.startswith(new or ())] + list(unexpected)
            if bad:
                msg = f"{ckpt}: weights of {name!r} do not fit its architecture: {bad[:5]}"
                raise ModelLoadError(msg)
        return ckpt

    def load(self, modules: Mapping[str, nn.Module],
             optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
             path: str | Path | None = None, restore_rng: bool = True) -> dict[str, Any]:
        """Load a checkpoint (default: :meth:`latest`) into ``modules`` and ``optimizers``.

        Returns:
            ``{"step": int, "extra": dict, "path": Path}``.

        Raises:
            ModelLoadError: no checkpoint, or one that does not fit the modules.
        """
        ckpt = self._weights_into(path, modules, None)
        state = torch.load(ckpt / _STATE, weights_only=False)
        for name, opt in (optimizers or {}).items():
            if name not in state["optimizers"]:
                msg = f"{ckpt}: no optimizer state for {name!r}"
                raise ModelLoadError(msg)
            opt.load_state_dict(state["optimizers"][name])
        if restore_rng:
            set_rng_state(state["rng"])
        return {"step": int(state["step"]), "extra": state["extra"], "path": ckpt}


class LossLog:
    """Per-step losses as ``dir/losses.csv`` and a loss-curve PNG.

    Columns are set by the first :meth:`append` (``step``, ``time_s`` and the loss names, sorted);
    a loss name first seen later (a fine-tune that adds a term) adds a column, empty before.
    Call :meth:`truncate` with the resumed step so a resumed run overwrites, not repeats, steps.
    """

    def __init__(self, directory: str | Path, name: str = "losses.csv") -> None:
        self.path = Path(directory) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._columns: list[str] | None = None
        if self.path.is_file():
            with self.path.open(newline="") as fh:
                header = next(csv.reader(fh), None)
            self._columns = header or None

    def truncate(self, step: int) -> None:
        """Drop rows with ``step`` > the given step (after resuming from it)."""
        rows = self.rows()
        if self._columns is None:
            return
        self._rewrite([r for r in rows if int(float(r["step"])) <= step])

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with self.path.open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self._columns)
            w.writeheader()
            w.writerows(rows)

    def append(self, step: int, **losses: float) -> None:
        """Append one row (floats; tensors are converted)."""
        row = {"step": int(step), "time_s": round(time.time(), 3)}
        row.update({k: float(v) for k, v in sorted(losses.items())})
        new = self._columns is None
        if new:
            self._columns = list(row)
        elif set(row) - set(self._columns):  # a loss term joined (e.g. a fine-tune's new term)
            old = self.rows()
            self._columns += [k for k in row if k not in self._columns]
            self._rewrite(old)
        with self.path.open("a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self._columns, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)

    def rows(self) -> list[dict[str, str]]:
        """All rows as dicts of strings."""
        if not self.path.is_file():
            return []
        with self.path.open(newline="") as fh:
            return list(csv.DictReader(fh))

    def plot(self, png: str | Path, smooth: int = 25) -> Path:
        """Plot every loss against step (raw, faint, and a running mean of ``smooth`` steps)."""
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415

        rows = self.rows()
        names = [c for c in (self._columns or []) if c not in ("step", "time_s")]
        fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
        steps = np.array([float(r["step"]) for r in rows])
        for name in names:
            vals = np.array([float(r[name]) if r.get(name) not in (None, "") else np.nan
                             for r in rows])
            (line,) = ax.plot(steps, vals, alpha=0.25, lw=0.8)
            if len(vals) >= smooth:
                k = np.ones(smooth) / smooth
                ax.plot(steps[smooth - 1:], np.convolve(vals, k, mode="valid"),
                        color=line.get_color(), lw=1.6, label=name)
            else:
                line.set_label(name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        finite = [float(r[n]) for r in rows for n in names if r.get(n) not in (None, "")]
        if finite and min(finite) > 0:  # hinge/feature losses can be negative: keep linear then
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if names:
            ax.legend(fontsize=8, ncol=2)
        fig.tight_layout()
        out = Path(png)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
        plt.close(fig)
        return out


def _io_dims(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Parameter name -> (output dim, input dim) of every weight of a conv or linear layer."""
    dims: dict[str, tuple[int, int]] = {}
    for name, m in module.named_modules():
        if isinstance(m, nn.ConvTranspose2d):  # kernel (in, out, kh, kw)
            dims[f"{name}.weight" if name else "weight"] = (1, 0)
        elif isinstance(m, (nn.Conv2d, nn.Linear)):  # kernel (out, in, ...)
            dims[f"{name}.weight" if name else "weight"] = (0, 1)
    return dims


def _grow(stored: dict[str, torch.Tensor], module: nn.Module) -> dict[str, torch.Tensor]:
    """Stored tensors fitted to a ``module`` whose layers may have grown wider.

    A tensor the module holds larger in some dimensions (never smaller) becomes the module's fresh
    tensor with the stored one in its leading slice and, for a conv or linear kernel, zeros from
    the added inputs to the stored outputs. Stored outputs then see exactly what they saw before
    and added outputs feed nothing stored, so the grown network computes the stored function; the
    zero kernels still get gradients (the added features are not zero), so training recruits the
    new width. Tensors that match, or cannot grow into the module's, are passed through as stored
    (``load_state_dict`` reports those)."""
    wanted, dims = module.state_dict(), _io_dims(module)
    out = dict(stored)
    for k, v in stored.items():
        w = wanted.get(k)
        if (w is None or w.shape == v.shape or w.ndim != v.ndim
                or any(a < b for a, b in zip(w.shape, v.shape, strict=True))):
            continue
        grown = w.detach().clone().to(v.dtype)
        grown[tuple(slice(0, n) for n in v.shape)] = v
        if k in dims:
            o, i = dims[k]
            cut = [slice(None)] * v.ndim
            cut[o], cut[i] = slice(0, v.shape[o]), slice(v.shape[i], None)
            grown[tuple(cut)] = 0
        out[k] = grown
    return out
