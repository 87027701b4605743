"""ONNX export of trained modules, checked against torch, and the onnxruntime wrapper the nodes use.

The nodes must not import torch at run time, and onnxruntime ran our small encoder-decoders
3-8x faster than torch eager at batch 1 here; so every deployed network is exported once with
:func:`export_onnx` (which refuses an export whose outputs differ from torch's) and run through
:class:`OnnxModel` with explicit providers and thread counts. This module imports torch only
inside :func:`export_onnx`, so :class:`OnnxModel` is usable without torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from revavatar.core.onnx_runtime import create_session
from revavatar.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = ["OPSET", "OnnxModel", "export_onnx"]

#: ONNX opset of every export
OPSET = 17


def export_onnx(module: torch.nn.Module, example_inputs: torch.Tensor | Sequence[torch.Tensor],
                path: str | Path, input_names: Sequence[str], output_names: Sequence[str],
                dynamic_batch: bool = True, *, atol: float = 1e-3, rtol: float = 1e-3,
                threads: int = 2) -> float:
    """Export ``module`` (eval mode, fp32) to ONNX and check onnxruntime against torch.

    The TorchScript-based exporter is used (``dynamo=False``): it needs no onnxscript and gives
    plain opset-17 graphs that onnxruntime optimises well for convolutional nets.

    Args:
        module: the network; it is put in eval mode and left there.
        example_inputs: one tensor or a sequence, with batch first.
        path: the ``.onnx`` file to write (parent created; written atomically).
        input_names / output_names: graph names (the keys of :meth:`OnnxModel.run`).
        dynamic_batch: make dimension 0 of every input and output dynamic.
        atol / rtol: allowed difference between onnxruntime and torch outputs.
        threads: onnxruntime threads for the check.

    Returns:
        The maximum absolute difference between the two outputs on ``example_inputs``.

    Raises:
        ModelLoadError: onnxruntime's output differs from torch's beyond the tolerance.
    """
    import torch  # noqa: PLC0415

    inputs = (example_inputs,) if isinstance(example_inputs, torch.Tensor) else tuple(
        example_inputs)
    module.eval()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".tmp-{os.getpid()}-{out.name}")
    axes = ({n: {0: "batch"} for n in (*input_names, *output_names)} if dynamic_batch else None)
    with torch.no_grad():
        ref = module(*inputs)
        torch.onnx.export(module, inputs, str(tmp), dynamo=False, opset_version=OPSET,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes=axes, do_constant_folding=True)
    refs = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    model = OnnxModel(tmp, threads=threads)
    got = model.run_all(**{n: t.numpy() for n, t in zip(input_names, inputs, strict=True)})
    worst = 0.0
    for name, r, g in zip(output_names, refs, got, strict=True):
        r_np = r.float().numpy()
        if r_np.shape != g.shape or not np.allclose(g, r_np, atol=atol, rtol=rtol):
            diff = float(np.abs(g - r_np).max()) if r_np.shape == g.shape else float("inf")
            tmp.unlink(missing_ok=True)
            msg = (f"ONNX export of {type(module).__name__} output {name!r} differs from torch "
                   f"(max |diff| {diff:.3g} > atol {atol})")
            raise ModelLoadError(msg)
        worst = max(worst, float(np.abs(g - r_np).max()))
    os.replace(tmp, out)
    return worst


class OnnxModel:
    """An onnxruntime session with explicit providers and thread counts.

    Args:
        path: ``.onnx`` file.
        threads: intra-op threads (2 = the headset compute budget; inter-op is 1).
        providers: onnxruntime execution providers, in order of preference.

    Raises:
        ModelLoadError: the file is missing or not a valid model.
        BackendUnavailableError: onnxruntime is not installed.
    """

    def __init__(self, path: str | Path, threads: int = 2,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self.path = Path(path)
        self.session: Any = create_session(self.path, threads, providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run_all(self, **inputs: np.ndarray) -> list[np.ndarray]:
        """All outputs, in graph order, for float32 ``inputs`` keyed by input name.

        Raises:
            ValueError: an input name is missing or unknown.
        """
        if set(inputs) != set(self.input_names):
            msg = f"{self.path.name} takes inputs {self.input_names}, got {sorted(inputs)}"
            raise ValueError(msg)
        feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        return list(self.session.run(None, feed))

    def run(self, **inputs: np.ndarray) -> np.ndarray:
        """The first output for ``inputs`` keyed by input name (see :meth:`run_all`)."""
        return self.run_all(**inputs)[0]
