"""The learned restorer at run time: the exported G(x, z) run by onnxruntime, no torch.

The restoration node builds the composite exactly as the classical restorers do
(:func:`revavatar.core.composite.composite` of the aligned crops on the DP) and feeds it, with the
DP as the reference image, to the ONNX graph written by
``revavatar.learning.restoration_model.export_generator`` (inputs ``x`` [and ``z``], (1, 3, S, S)
float32 in [-1, 1], BGR; output ``y`` of the same shape). The DP tensor is prepared once per
wearer. A model trained at S < layout size runs on area-downscaled inputs and is resized back.

onnxruntime is imported lazily here (not through ``revavatar.learning``, whose package import
pulls in torch).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import cv2
import numpy as np

from revavatar.core.composite import check_image, checks_enabled, composite
from revavatar.core.onnx_runtime import create_session
from revavatar.errors import ModelLoadError

if TYPE_CHECKING:
    from revavatar.core.canonical import CanonicalLayout

__all__ = ["DEFAULT_MODEL", "OnnxRestorer", "default_model_dir"]

#: model folder name used when none is given (``models/restore_ours``)
DEFAULT_MODEL: Final = "restore_ours"


class _HasDP(Protocol):
    dp: np.ndarray


def default_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """``$REVAVATAR_MODELS/<name>`` if set, else ``<project root>/models/<name>`` (found by
    walking up from this file to the folder that holds ``models/``)."""
    env = os.environ.get("REVAVATAR_MODELS")
    if env:
        return Path(env) / name
    for parent in Path(__file__).resolve().parents:
        if (parent / "models" / name).is_dir():
            return parent / "models" / name
    return Path.cwd() / "models" / name


def _to_input(img: np.ndarray, size: int) -> np.ndarray:
    if img.shape[0] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    x = img.astype(np.float32).transpose(2, 0, 1)[None] * (1.0 / 127.5) - 1.0
    return np.ascontiguousarray(x)


class OnnxRestorer:
    """Learned restorer (method ``"ours"``, or the variant name of the model folder).

    Args:
        profile: enrollment Profile; its aligned ``dp`` is the composite canvas and the reference.
        layout: the canonical layout of DP and crops.
        model_dir: folder with ``model.onnx`` and ``config.json`` (default
            :func:`default_model_dir`).
        threads: onnxruntime intra-op threads (2 = the headset budget).
        valid: per-region masks of the crop pixels the cameras see (None: all); elsewhere the
            composite keeps the DP, as in training, where every pasted pixel is real.

    Raises:
        ModelLoadError: model folder, graph or config missing/invalid.
        BackendUnavailableError: onnxruntime not installed.
        ShapeError: the DP is not uint8 (size, size, 3) of ``layout``.
    """

    method: str = "ours"

    def __init__(self, profile: _HasDP, layout: CanonicalLayout,
                 model_dir: str | Path | None = None, threads: int = 2,
                 valid: Mapping[str, np.ndarray] | None = None) -> None:
        check_image(profile.dp, "profile.dp", size=(layout.size, layout.size), channels=(3,))
        self.profile, self.layout = profile, layout
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        try:
            self.config: dict[str, Any] = json.loads((self.model_dir / "config.json").read_text())
        except (OSError, ValueError) as err:
            msg = f"{self.model_dir}: no readable config.json of a restorer model ({err})"
            raise ModelLoadError(msg) from err
        self.method = "ours" if self.config.get("variant") == "ours" else str(
            self.config.get("variant", "ours"))
        self.size = int(self.config.get("size", layout.size))
        self.session = create_session(self.model_dir / "model.onnx", threads)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self._z = _to_input(profile.dp, self.size)
        self.valid = dict(valid) if valid is not None else None

    def set_dp(self, dp: np.ndarray) -> None:
        """Switch to another wearer's DP (the composite canvas and the reference input)."""
        check_image(dp, "dp", size=(self.layout.size, self.layout.size), channels=(3,))
        self.profile = type("DP", (), {"dp": dp})()
        self._z = _to_input(dp, self.size)

    def composite(self, crops: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Hard composite of ``crops`` on the DP: ``(bgr, mask)`` (the network's input)."""
        return composite(self.profile.dp, crops, self.layout, valid=self.valid)

    def restore_composite(self, x_bgr: np.ndarray) -> np.ndarray:
        """Run the network on a ready composite (uint8 BGR (size, size, 3)) -> restored face."""
        feed = {"x": _to_input(x_bgr, self.size)}
        if "z" in self.input_names:
            feed["z"] = self._z
        y = self.session.run(None, feed)[0][0]
        out = np.clip(np.rint((y.transpose(1, 2, 0) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        if out.shape[0] != self.layout.size:
            out = cv2.resize(out, (self.layout.size, self.layout.size),
                             interpolation=cv2.INTER_LINEAR)
        return np.ascontiguousarray(out)

    def restore(self, crops: Mapping[str, np.ndarray]) -> np.ndarray:
        """Crops by region name -> restored uint8 BGR (size, size, 3)."""
        out = self.restore_composite(self.composite(crops)[0])
        if checks_enabled():
            check_image(out, "restored", size=(self.layout.size, self.layout.size), channels=(3,))
        return out
