"""Learned aligner at run time: a trained CycleGAN (or auto-encoder) generator under onnxruntime.

The alignment node must not import torch (start-up time, memory, and the headset has no use
for autograd), so trained aligners ship as ONNX (``models/align_<region>/model.onnx`` with its
``card.json``) and run here through onnxruntime with explicit providers and two threads. The
card says how the network's input is made: ``rectified`` applies the calibrated homography grid
of :class:`~revavatar.core.alignment.HomographyAligner` first, ``surface`` the rectification onto
the enrolled wearer's face (:class:`~revavatar.core.alignment.SurfaceAligner`), ``resize`` just
resizes the raw frame to the crop size. A ``reference`` model also takes the enrolled wearer's
crop of the region (the profile's aligned DP), which fills what the camera cannot see
(:func:`~revavatar.core.alignment.enrollment_input`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import cv2
import numpy as np

from revavatar.core.onnx_runtime import create_session, models_dir
from revavatar.errors import InputError, ModelLoadError

if TYPE_CHECKING:
    from revavatar.core.calibration import CameraCalibration
    from revavatar.core.canonical import CanonicalLayout, Region

__all__ = ["MODEL_PREFIXES", "OnnxAligner", "aligner_factory", "default_model_dir"]

#: aligner method -> model folder prefix under models/
MODEL_PREFIXES: Final = {"cyclegan": "align_", "autoencoder": "align_ae_"}


def default_model_dir(method: str, region: str) -> Path:
    """``$REVAVATAR_MODELS/<prefix><region>`` or, by default, ``<project>/models/<prefix><region>``.

    Raises:
        ValueError: unknown method.
    """
    if method not in MODEL_PREFIXES:
        msg = f"unknown learned aligner {method!r}; expected one of {', '.join(MODEL_PREFIXES)}"
        raise ValueError(msg)
    return models_dir(f"{MODEL_PREFIXES[method]}{region}")


class OnnxAligner:
    """Headset camera frame -> canonical region crop with a trained generator.

    Args:
        region: ``left_eye`` | ``right_eye`` | ``lower_face`` (must match the model's card).
        model_dir: folder with ``model.onnx`` and ``card.json``.
        camera: the camera's calibration; required for models with ``input_mode: rectified``.
        layout: canonical layout (default 256, the training layout).
        threads: onnxruntime intra-op threads.
        providers: onnxruntime execution providers.
        surface_depth: the enrolled face's canonical depth (``surface`` models).
        dp: the enrolled wearer's aligned DP, uint8 BGR at ``layout`` (``reference`` models).
        eye_from: where an eye crop's eye opening comes from, one of
            :data:`~revavatar.core.alignment.EYE_SOURCES`: the network (default) or the
            rectified camera view in the network's tone
            (:func:`~revavatar.core.alignment.camera_eye`; eye regions with a rectifying input).

    Attributes:
        method: ``"cyclegan"`` or ``"autoencoder"`` (from the card), ``+camera_eye`` with
            ``eye_from="camera"``.
        channels: 1 (gray crops from IR cameras) or 3 (BGR).

    Raises:
        ModelLoadError: missing or mismatched model files.
        BackendUnavailableError: onnxruntime is not installed.
        ValueError: a rectified model without a camera calibration, a DP not at the layout, or
            an ``eye_from`` the model cannot give.
    """

    def __init__(self, region: str, model_dir: str | Path, camera: CameraCalibration | None = None,
                 layout: CanonicalLayout | None = None, *, threads: int = 2,
                 providers: Sequence[str] = ("CPUExecutionProvider",),
                 surface_depth: np.ndarray | None = None, dp: np.ndarray | None = None,
                 eye_from: str = "network") -> None:
        from revavatar.core.alignment import EYE_SOURCES  # noqa: PLC0415
        from revavatar.core.canonical import EYE_SIDES, CanonicalLayout  # noqa: PLC0415

        self.model_dir = Path(model_dir)
        try:
            card = json.loads((self.model_dir / "card.json").read_text())
            cfg = card["config"]
        except (OSError, ValueError, KeyError) as err:
            msg = f"{self.model_dir}: no readable card.json for a trained aligner ({err})"
            raise ModelLoadError(msg) from err
        if card.get("region") != region:
            msg = f"{self.model_dir} holds a {card.get('region')} aligner, not {region}"
            raise ModelLoadError(msg)
        self.method: str = str(card["method"])
        self.region_name = region
        self.channels = int(cfg["channels"])
        self.crop_size = (int(cfg["crop_size"][0]), int(cfg["crop_size"][1]))
        self.input_mode = str(cfg.get("input_mode", "resize"))
        self.layout = layout or CanonicalLayout(256)
        self.region: Region = self.layout.region(region)
        if self.region.crop_size != self.crop_size:
            msg = (f"{self.model_dir}: model crop {self.crop_size} != layout crop "
                   f"{self.region.crop_size}; use the layout the model was trained at")
            raise ModelLoadError(msg)
        self.camera = camera
        #: the input's rectification (None: plain resize); a ``surface`` model's can be swapped
        #: for another wearer's (evaluation does, per sample)
        self.rectifier: Any = None
        if self.input_mode in ("rectified", "surface"):
            if camera is None:
                msg = f"{self.model_dir}: a rectified-input aligner needs the camera calibration"
                raise ValueError(msg)
            from revavatar.core.alignment import HomographyAligner, SurfaceAligner  # noqa: PLC0415

            self.rectifier = HomographyAligner(camera, self.region, self.layout)
            if self.input_mode == "surface" and surface_depth is not None:
                self.rectifier = SurfaceAligner(camera, self.region, self.layout, surface_depth)
        #: whether the network also takes the enrolled wearer's crop (input ``reference``)
        self.reference = bool(cfg.get("reference", False))
        #: the tone the network reads its view in (core.alignment.VIEW_TONES)
        self.view_tone = str(cfg.get("view_tone", "camera"))
        #: the eye's weights, where a skin-fitted tone must not look (computed once, not per frame)
        self._eye = (self.layout.eye_weight(region) if self.view_tone == "enrollment-skin"
                     else None)
        if eye_from not in EYE_SOURCES or (eye_from == "camera" and (
                region not in EYE_SIDES or self.rectifier is None)):
            msg = (f"eye_from {eye_from!r}: expected one of {', '.join(EYE_SOURCES)}; the "
                   "camera's eye needs an eye region and a rectifying input")
            raise ValueError(msg)
        self.eye_from = eye_from
        if eye_from == "camera":  # what the graph reports as its alignment method
            self.method += "+camera_eye"
        #: the eye opening's weights, where the camera's eye goes (``eye_from="camera"``)
        self._camera_eye = self.layout.eye_weight(region) if eye_from == "camera" else None
        self.dp: np.ndarray | None = None
        if dp is not None and self.reference:  # other models have no use for it
            self.set_enrollment(dp)
        self._session = create_session(self.model_dir / "model.onnx", threads, providers)

    def set_enrollment(self, dp: np.ndarray) -> None:
        """Use ``dp`` (aligned BGR face at the layout) as the wearer's reference from now on.

        Raises:
            ValueError: not a uint8 (size, size, 3) image of the layout.
        """
        dp = np.asarray(dp)
        size = self.layout.size
        if dp.dtype != np.uint8 or dp.shape != (size, size, 3):
            msg = (f"the DP must be a uint8 ({size}, {size}, 3) aligned face, got {dp.dtype} "
                   f"{dp.shape}")
            raise ValueError(msg)
        self.dp = dp

    def prepare(self, image: np.ndarray) -> list[np.ndarray]:
        """Raw frame -> the network's input images (crop size, the model's channel count): the
        view, and for ``reference`` models the DP crop after it.

        Raises:
            InputError: a ``reference`` model that has no enrollment (:meth:`set_enrollment`).
        """
        img = np.asarray(image)
        if self.channels == 1 and img.ndim == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        elif self.channels == 3 and img.ndim == 2:
            img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        if self.rectifier is None:
            return [cv2.resize(img, self.crop_size, interpolation=cv2.INTER_AREA)]
        view = self.rectifier.align(img)
        if not self.reference:
            return [view]
        if self.dp is None:
            msg = (f"{self.model_dir}: this aligner also reads the enrolled wearer; give it the "
                   "enrollment profile (parameter 'profile')")
            raise InputError(msg)
        from revavatar.core.alignment import enrollment_input, toned_view  # noqa: PLC0415

        view, ref = enrollment_input(view, self.rectifier.valid_mask, self.dp, self.layout,
                                     self.region_name)
        return [toned_view(view, ref, self.view_tone, self._eye), ref]

    def align(self, image: np.ndarray) -> np.ndarray:
        """Align one camera frame.

        Args:
            image: uint8 gray (H, W) or BGR (H, W, 3) camera frame (calibrated resolution for
                rectified models).

        Returns:
            uint8 crop (h, w) for 1-channel models, (h, w, 3) BGR otherwise.

        Raises:
            InputError: not a uint8 image, or a frame size the calibration does not have.
        """
        if np.asarray(image).dtype != np.uint8 or np.asarray(image).ndim not in (2, 3):
            msg = f"expected a uint8 camera frame, got {np.asarray(image).dtype} {np.shape(image)}"
            raise InputError(msg)
        return self.align_batch([image])[0]

    def align_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Align several frames in one onnxruntime call (evaluation)."""
        prep = [self.prepare(im) for im in images]
        feeds = {}
        for k, node in enumerate(self._session.get_inputs()):
            x = np.stack([p[k][None] if p[k].ndim == 2 else p[k].transpose(2, 0, 1)
                          for p in prep])
            feeds[node.name] = x.astype(np.float32) / 127.5 - 1.0
        y = self._session.run(None, feeds)[0]
        out = np.clip(np.rint((np.clip(y, -1.0, 1.0) + 1.0) * 127.5), 0, 255).astype(np.uint8)
        crops = [o[0] if o.shape[0] == 1 else np.ascontiguousarray(o.transpose(1, 2, 0))
                 for o in out]
        if self._camera_eye is None:
            return crops
        from revavatar.core.alignment import camera_eye  # noqa: PLC0415

        return [camera_eye(c, p[0], self._camera_eye) for c, p in zip(crops, prep, strict=True)]


def aligner_factory(method: str, eye_from: str = "network") -> Callable[..., OnnxAligner]:
    """A factory(camera, region, layout, surface_depth=None, dp=None) for
    :data:`revavatar.graph.stages.ALIGNERS`, loading the trained model of ``method`` from
    :func:`default_model_dir`; ``surface_depth`` is the enrolled face's canonical depth, which
    a model trained on ``surface`` input needs, ``dp`` the enrolled aligned face, which a
    ``reference`` model needs. ``eye_from`` is :class:`OnnxAligner`'s, for the eye regions (the
    lower face has no eye opening to take from the camera).

    Raises:
        InputError: a ``surface`` model without the enrolled face's depth, or a ``reference``
            model without the DP.
    """
    def make(camera: CameraCalibration, region: Region, layout: CanonicalLayout,
             surface_depth: np.ndarray | None = None,
             dp: np.ndarray | None = None) -> OnnxAligner:
        from revavatar.core.canonical import EYE_SIDES  # noqa: PLC0415

        aligner = OnnxAligner(region.name, default_model_dir(method, region.name), camera, layout,
                              surface_depth=surface_depth, dp=dp,
                              eye_from=eye_from if region.name in EYE_SIDES else "network")
        if aligner.reference and dp is None:
            msg = (f"the {method} {region.name} model also reads the enrolled wearer: give the "
                   "alignment node the enrollment profile (parameter 'profile')")
            raise InputError(msg)
        if aligner.input_mode == "surface" and surface_depth is None:
            msg = (f"the {method} {region.name} model rectifies onto the enrolled face: give the "
                   "alignment node the enrollment profile (parameter 'profile')")
            raise InputError(msg)
        return aligner

    return make
