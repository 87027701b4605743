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
           "default_deoccluder_dir", "eye_reference"]

#: the model's folder under models/
DEOCCLUSION_DIR: Final = "deocclusion"
#: an aligner name with this prefix reads the eye cameras through the de-occluder
DEOCCLUSION_PREFIX: Final = "deocclusion+"


def eye_reference(frames: Sequence[np.ndarray]) -> np.ndarray:
    """The per-pixel median of an eye camera's frames of one wearer (uint8 (H, W)): what that
    wearer's eye region looks like through this headset, lid shadows and lashes included, with
    the occlusions of single frames voted out. A de-occluder that reads it beside the frame can
    tell the wearer's own dark parts from a blob (reports/alignment.md, tenth session).

    Raises:
        InputError: no frames, or frames that are not uint8 gray of one size.
    """
    if not frames:
        msg = "an eye reference needs at least one frame"
        raise InputError(msg)
    shape = frames[0].shape
    if any(f.dtype != np.uint8 or f.ndim != 2 or f.shape != shape for f in frames):
        msg = f"eye reference frames must be uint8 gray frames of one size, first {shape}"
        raise InputError(msg)
    return np.median(np.stack(frames), axis=0).round().astype(np.uint8)


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
        reference_frames: for a model that reads the wearer's reference beside the frame
            (``config.reference``), how many of the wearer's frames it was trained with
            (:meth:`set_reference`); 0 for one that reads the frame alone.

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
        self.reference_frames = (int(card.get("reference_frames") or 0)
                                 if card["config"].get("reference") else 0)
        self.session: Any = create_session(self.model_dir / "model.onnx", threads, providers)
        self._input = self.session.get_inputs()[0].name
        self._references: dict[str, np.ndarray] = {}  # region -> float32 (1, 1, H, W)

    def set_reference(self, region: str, frames: Sequence[np.ndarray]) -> None:
        """Enroll the wearer's eye as ``region``'s camera sees it: the median of ``frames``
        (:func:`eye_reference`; about :attr:`reference_frames` of them, uint8 gray frames of
        the model's size, taken with the headset on). A model without a reference input
        ignores it.

        Raises:
            InputError: no frames, or frames of another type or size.
        """
        ref = eye_reference(frames)
        self._check(region, ref)
        if self.reference_frames:
            self._references[region] = self._tensor(ref, region)

    def has_reference(self, region: str) -> bool:
        """Whether ``region``'s frames can be de-occluded now: always for a model that reads
        the frame alone, after :meth:`set_reference` for one that reads the wearer's eye too."""
        return not self.reference_frames or region in self._references

    def _check(self, region: str, frame: np.ndarray) -> None:
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

    @staticmethod
    def _tensor(frame: np.ndarray, region: str) -> np.ndarray:
        """(1, 1, H, W) float32 in [0, 1], right eyes mirrored into the left eye's orientation."""
        x = frame[:, ::-1] if region == "right_eye" else frame
        return np.ascontiguousarray(x, dtype=np.float32)[None, None] / np.float32(255.0)

    def __call__(self, frame: np.ndarray, region: str) -> np.ndarray:
        """``frame`` (uint8 (H, W) gray, as the eye camera gave it) without its occlusion.

        Raises:
            InputError: not a uint8 gray frame of the model's size, or a model that reads the
                wearer's reference before one was set (:meth:`set_reference`).
            ValueError: ``region`` is not an eye camera.
        """
        self._check(region, frame)
        feed = {self._input: self._tensor(frame, region)}
        if self.reference_frames:
            if region not in self._references:
                msg = (f"{self.model_dir}: this de-occluder reads the wearer's eye beside the "
                       f"frame; enroll {self.reference_frames} of their {region} frames first "
                       "(set_reference)")
                raise InputError(msg)
            feed["reference"] = self._references[region]
        y = self.session.run(None, feed)[0][0, 0]
        out = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out[:, ::-1] if region == "right_eye" else out)


class DeoccludedAligner:
    """An aligner that reads its eye camera's frames through the de-occluder first.

    Everything else (``valid_mask``, ``rectifier``, ``set_enrollment``, ...) is the wrapped
    aligner's, so code that configures an aligner configures this one the same way.

    A de-occluder that reads the wearer's eye beside the frame
    (:attr:`OnnxDeoccluder.reference_frames`) is enrolled from the stream itself: every
    ``enroll_every``-th frame until it has that many (at 30 fps and the default, one a second,
    so that blinks, gaze and the occlusions of single frames vary between them); until then
    frames reach the aligner as the camera gave them.

    Args:
        aligner: any aligner with ``align(frame)``.
        deoccluder: the :class:`OnnxDeoccluder` it reads through.
        region: the aligner's eye camera.
        enroll_every: the stream's frames between two enrollment frames.
    """

    _OWN: Final = ("inner", "deoccluder", "region_name", "method", "enroll_every", "_enrolling",
                   "_seen")

    def __init__(self, aligner: Any, deoccluder: OnnxDeoccluder, region: str,
                 enroll_every: int = 30) -> None:
        if region not in OnnxDeoccluder.REGIONS:
            msg = f"the de-occluder reads eye cameras ({', '.join(OnnxDeoccluder.REGIONS)}), " \
                  f"not {region!r}"
            raise ValueError(msg)
        if enroll_every < 1:
            msg = f"enroll_every must be at least 1, got {enroll_every}"
            raise ValueError(msg)
        self.inner, self.deoccluder, self.region_name = aligner, deoccluder, region
        self.method = f"{DEOCCLUSION_PREFIX}{getattr(aligner, 'method', type(aligner).__name__)}"
        self.enroll_every = enroll_every
        self._enrolling: list[np.ndarray] = []
        self._seen = 0

    def align(self, frame: np.ndarray) -> np.ndarray:
        """The wrapped aligner's crop of the de-occluded frame (of the frame itself while the
        wearer's eye is being enrolled)."""
        return self.inner.align(self.deocclude(frame))

    def deocclude(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` without its occlusion, or as it is while the wearer's eye is enrolled."""
        if not self.deoccluder.has_reference(self.region_name):
            if self._seen % self.enroll_every == 0:
                self._enrolling.append(frame.copy())
            self._seen += 1
            if len(self._enrolling) < self.deoccluder.reference_frames:
                return frame
            self.deoccluder.set_reference(self.region_name, self._enrolling)
            self._enrolling = []
        return self.deoccluder(frame, self.region_name)

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (copy / unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self._OWN:
            object.__setattr__(self, name, value)
        else:  # e.g. eval's per-sample rectifier: it belongs to the wrapped aligner
            setattr(self.inner, name, value)
