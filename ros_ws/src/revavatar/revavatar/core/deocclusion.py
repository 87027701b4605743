"""The eye cameras' de-occluder at run time: dark blobs and lens smudges taken off a headset eye
frame before any aligner reads it (``models/deocclusion``, trained by ``revavatar train
deocclusion``; the network is described in :mod:`revavatar.learning.deocclusion`).

It runs under onnxruntime, without torch, like the aligners, and changes only what its mask
takes for occlusion. The model in ``models/deocclusion`` (or ``$REVAVATAR_MODELS``) is trained
for VR-Face's occlusion and ``calibration/generic.yaml``'s eye cameras; in front of the camera's
eye in CycleGAN's crop it takes the test gaze error from 1.32 / 1.74 to 1.24 / 1.21 deg and moves
some unoccluded eyes a little (reports/alignment.md, "The de-occluder ships"). Another headset's
eye cameras need one trained on a build with its calibration.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from revavatar.core.onnx_runtime import create_session, models_dir
from revavatar.errors import InputError, ModelLoadError

__all__ = ["DEOCCLUSION_DIR", "DEOCCLUSION_PREFIX", "DeoccludedAligner", "OnnxDeoccluder",
           "default_deoccluder_dir"]

#: the model's folder under models/
DEOCCLUSION_DIR: Final = "deocclusion"
#: an aligner name with this prefix reads the eye cameras through the de-occluder
DEOCCLUSION_PREFIX: Final = "deocclusion+"


def default_deoccluder_dir() -> Path:
    """``$REVAVATAR_MODELS/deocclusion`` or, by default, ``<project>/models/deocclusion``."""
    return models_dir(DEOCCLUSION_DIR)


class OnnxDeoccluder:
    """Gray eye-camera frame -> the same frame without its occlusion.

    Args:
        model_dir: folder with ``model.onnx`` and ``card.json``.
        threads: onnxruntime intra-op threads.
        providers: onnxruntime execution providers.

    Attributes:
        frame_size: (w, h) of the frames the model was trained on; others are refused.

    Raises:
        ModelLoadError: missing or unreadable model files.
        BackendUnavailableError: onnxruntime is not installed.
    """

    #: the eye cameras it serves; the right eye's frames are mirrored in and out
    REGIONS: Final = ("left_eye", "right_eye")

    def __init__(self, model_dir: str | Path | None = None, *, threads: int = 2,
                 providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else default_deoccluder_dir()
        try:
            card = json.loads((self.model_dir / "card.json").read_text())
            w, h = card["config"]["frame_size"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            msg = (f"{self.model_dir}: no trained de-occluder there ({err}); train one with "
                   "`revavatar train deocclusion --data VRFACE_DIR --out "
                   f"{self.model_dir}`")
            raise ModelLoadError(msg) from err
        self.frame_size = (int(w), int(h))
        self.session: Any = create_session(self.model_dir / "model.onnx", threads, providers)
        self._input = self.session.get_inputs()[0].name

    def __call__(self, frame: np.ndarray, region: str) -> np.ndarray:
        """``frame`` (uint8 (H, W) gray, as the eye camera gave it) without its occlusion.

        Raises:
            InputError: not a uint8 gray frame of the model's size.
            ValueError: ``region`` is not an eye camera.
        """
        if region not in self.REGIONS:
            msg = f"the de-occluder reads eye cameras ({', '.join(self.REGIONS)}), not {region!r}"
            raise ValueError(msg)
        if frame.dtype != np.uint8 or frame.ndim != 2:
            msg = f"de-occluder input must be a uint8 gray frame, got {frame.dtype} {frame.shape}"
            raise InputError(msg)
        if frame.shape[::-1] != self.frame_size:
            msg = (f"{self.model_dir}: trained on {self.frame_size[0]}x{self.frame_size[1]} "
                   f"frames, got {frame.shape[1]}x{frame.shape[0]}")
            raise InputError(msg)
        x = frame[:, ::-1] if region == "right_eye" else frame
        x = np.ascontiguousarray(x, dtype=np.float32)[None, None] / np.float32(255.0)
        y = self.session.run(None, {self._input: x})[0][0, 0]
        out = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out[:, ::-1] if region == "right_eye" else out)


class DeoccludedAligner:
    """An aligner that reads its eye camera's frames through the de-occluder first.

    Everything else (``valid_mask``, ``rectifier``, ``set_enrollment``, ...) is the wrapped
    aligner's, so code that configures an aligner configures this one the same way.

    Args:
        aligner: any aligner with ``align(frame)``.
        deoccluder: the :class:`OnnxDeoccluder` it reads through.
        region: the aligner's eye camera.
    """

    def __init__(self, aligner: Any, deoccluder: OnnxDeoccluder, region: str) -> None:
        if region not in OnnxDeoccluder.REGIONS:
            msg = f"the de-occluder reads eye cameras ({', '.join(OnnxDeoccluder.REGIONS)}), " \
                  f"not {region!r}"
            raise ValueError(msg)
        self.inner, self.deoccluder, self.region_name = aligner, deoccluder, region
        self.method = f"{DEOCCLUSION_PREFIX}{getattr(aligner, 'method', type(aligner).__name__)}"

    def align(self, frame: np.ndarray) -> np.ndarray:
        """The wrapped aligner's crop of the de-occluded frame."""
        return self.inner.align(self.deoccluder(frame, self.region_name))

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("inner", "deoccluder", "region_name", "method"):
            object.__setattr__(self, name, value)
        else:  # e.g. eval's per-sample rectifier: it belongs to the wrapped aligner
            setattr(self.inner, name, value)
