"""One way to open an ONNX Runtime session: explicit providers, a fixed thread budget.

The aligners, the restorer and the export checks all run models through here so that every
session gets the same options (the headset's 2-thread budget, no inter-op pool, quiet logs) and
the same typed errors. onnxruntime is imported lazily: cores that never run a model never load it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from revavatar.errors import BackendUnavailableError, ModelLoadError

__all__ = ["DEFAULT_PROVIDERS", "create_session", "models_dir"]

#: Providers in order of preference; CPU only on the machines this ships for.
DEFAULT_PROVIDERS: Final = ("CPUExecutionProvider",)


def models_dir(name: str) -> Path:
    """``$REVAVATAR_MODELS/<name>`` or, by default, ``<project>/models/<name>``: where a
    deployed model's folder is looked for."""
    root = os.environ.get("REVAVATAR_MODELS")
    base = Path(root) if root else Path(__file__).resolve().parents[5] / "models"
    return base / name


def create_session(
    path: str | Path, threads: int = 2, providers: Sequence[str] = DEFAULT_PROVIDERS
) -> Any:
    """Open ``path`` with ``threads`` intra-op threads on ``providers``.

    Raises:
        BackendUnavailableError: onnxruntime is not installed.
        ModelLoadError: the file is missing or is not a loadable ONNX graph.
    """
    try:
        import onnxruntime as ort  # noqa: PLC0415
    except ImportError as err:
        msg = f"onnxruntime unavailable ({err}); install it with `pip install onnxruntime`"
        raise BackendUnavailableError(msg) from err
    path = Path(path)
    if not path.is_file():
        msg = f"ONNX model not found: {path}"
        raise ModelLoadError(msg)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=list(providers))
    except Exception as err:  # onnxruntime raises its own untyped exceptions
        msg = f"{path}: cannot load ONNX model ({type(err).__name__}: {err})"
        raise ModelLoadError(msg) from err
