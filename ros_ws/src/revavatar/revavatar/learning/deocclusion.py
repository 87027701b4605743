"""The eye cameras' de-occluder: a small network that takes dark blobs and lens smudges off a
headset eye frame before any alignment, and its training pairs.

Why in camera space, and why this shape. VR-Face's occlusion (:func:`revavatar.vrface.effects.
occlusion`: eyelashes, cables or housing parts darken soft blobs; a smudge hazes a patch) is what
kept every aligner above 1 degree of gaze error: on the test eyes without it the best path reads
under 1 degree, on the occluded ones every method, even the exact inverse of the camera, reads
2-3 degrees. A blob is a smooth gain on the frame's values, a smudge a haze (a blend toward a
blurred, lifted copy), and both leave most of the frame alone. So the network predicts, at half
resolution, a mask, a log-gain and an offset, and at full resolution a small residual; the
correction is ``x * exp(gain) + offset + residual`` behind the mask, so the offset and the
residual take the haze and the gain is left with the blobs. Where the mask is shut the frame
passes through untouched. It works on the raw frame, so every aligner after it reads it, and one
model serves both eyes (right frames are mirrored in and out).

What the gaze said (reports/alignment.md, 2026-12-07): trained on every pixel alike,
the full correction takes the occlusion off in gray levels but hazes and reshapes the eye
itself, and doubled the gaze error of unoccluded eyes; a gain trained alone lifts whatever is
dark, the eye included, and was worse still; the gain trained beside the offset and the
residual and applied alone (``DeoccluderConfig.apply = "gain"``) left the gaze error where it
was. Weighted to the eye (``pair_loss(weight=eye_weight_map(...))``: the pixel losses and the
mask's BCE) and trained long enough, the full correction (``apply = "full"``, the default)
lowers the gaze error of occluded eyes more than it raises that of clean ones, on test and on
val; ``models/deocclusion`` is such a run, picked among its checkpoints on the eye-weighted val
figures of :func:`revavatar.learning.train_deocclusion.evaluate` and then on val gaze. The
options added after it (``DeoccluderConfig.sharpen``, ``mask_bias``, ``log_input`` and
``deep_context``, the gradient and field terms of :func:`pair_loss`, :func:`clean_weighted`,
training on eye windows, a moving average of the weights) are measured there too; none has
lowered the val gaze error below the shipped model's, and a val lead of a few hundredths of a
degree did not carry over to test. Divided by the true gain of the blobs, an occluded eye
comes back to under a gray level (``benchmarks/deocclusion_gain_oracle.py``): the eye survives
under a blob, but a soft blob is hard to tell from the wearer's own lid shadow, and the network
hedges between them (reports/alignment.md, tenth session). ``DeoccluderConfig.reference`` gives
it the wearer's eye as the camera sees it (the median of several of their frames) to tell them
apart: the best eye figures so far and 0.11 deg better gaze on 300 val samples, level on 300
test samples, so not shipped.

Training pairs are exact: :class:`OcclusionPairs` re-renders a build's train samples
(:mod:`revavatar.vrface.replay`), runs each view's recorded effects up to the occlusion, then
draws a fresh occlusion (or none) and runs the rest (blur, vignetting, housing, sensor noise,
the build's JPEG) on both the occluded and the clean frame. Fresh occlusions at every step are
what let it carry over to held-out faces; fixed replayed pairs over-fitted the 30 training
faces (reports/alignment.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from revavatar.core.canonical import EYE_SIDES

if TYPE_CHECKING:
    from revavatar.vrface.effects import OcclusionFields

__all__ = ["DeoccluderConfig", "DeoccluderNet", "OcclusionPairs", "clean_weighted",
           "eye_weight_map", "field_targets",
           "mirror_for", "pair_loss", "save_deoccluder"]

#: gray-level change from which a pixel counts as occluded (the mask's training target)
MASK_LEVELS: Final = 2
#: the log input's floor (one gray level) and span (its log)
_LOG_FLOOR: Final = 1.0 / 255.0
_LOG_SPAN: Final = float(np.log(255.0))
#: what a deployed de-occluder can apply (``DeoccluderConfig.apply``)
APPLIES: Final = ("full", "gain")


@dataclass(frozen=True)
class DeoccluderConfig:
    """Shape of the network (stored with its weights)."""

    frame_size: tuple[int, int] = (320, 240)  # (w, h) of the eye camera frames
    width: int = 24  # channels at half resolution (twice that at quarter resolution)
    #: what the deployed forward (and so the ONNX export) applies: the ``"full"`` training-time
    #: correction or the ``"gain"`` alone (:data:`APPLIES`)
    apply: str = "full"
    #: a fourth field, the amount of ``x - blur(x)`` added back: the inverse of a lens smudge's
    #: haze (a blend toward a blurred copy) is an unsharp mask, which the residual would have to
    #: build from its own convolutions
    sharpen: bool = False
    #: the blur of that unsharp mask (Gaussian sigma, pixels): about the haze's own blur
    haze_sigma: float = 5.8
    #: subtracted from the mask's logit in the deployed forward only: a network trained to open
    #: its mask wherever an occlusion is likely also opens it on some clean eyes; a shift keeps
    #: the confident corrections and shuts the doubtful ones (on val it traded touched against
    #: clean eyes and left the gaze level: reports/alignment.md)
    mask_bias: float = 0.0
    #: a second input image, the frame's log (scaled to about [-0.5, 0.5]): a blob multiplies
    #: the frame, so in the log it is the same step on a dark iris as on bright skin; its
    #: weights are the stem's last inputs, so a network without it grows into one with it
    log_input: bool = False
    #: a branch at 1/8 and 1/16 resolution added to the quarter-resolution features
    #: (:class:`_DeepContext`): a blob that covers the eye has its gain set at its rim, up to a
    #: blob's width away, and a constant gain is a low-frequency field; its output starts at
    #: zero, so a network without it grows into one with it
    deep_context: bool = False
    #: a second image beside the frame: the wearer's eye as the same camera sees it, the
    #: median of several of their frames (:func:`revavatar.core.deocclusion.eye_reference`),
    #: so that the wearer's own lid shadows and lashes are told from a blob; its weights are
    #: the stem's last inputs, so a network without it grows into one with it
    reference: bool = False

    def __post_init__(self) -> None:
        if self.apply not in APPLIES:
            msg = f"unknown de-occluder output {self.apply!r}; expected one of {', '.join(APPLIES)}"
            raise ValueError(msg)
        if self.haze_sigma <= 0:
            msg = f"haze_sigma must be positive, got {self.haze_sigma}"
            raise ValueError(msg)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DeoccluderConfig:
        """A card without ``apply`` loads as ``"gain"``: that is what the exports of commits
        515bb6b..e9cab60 applied (the first exports, of acf5d87, applied the full correction
        and cannot be told apart by their card; none of either was committed). A card without
        ``sharpen`` is a network without that field."""
        return cls(frame_size=(int(d["frame_size"][0]), int(d["frame_size"][1])),
                   width=int(d["width"]), apply=str(d.get("apply", "gain")),
                   sharpen=bool(d.get("sharpen", False)),
                   haze_sigma=float(d.get("haze_sigma", cls.haze_sigma)),
                   mask_bias=float(d.get("mask_bias", cls.mask_bias)),
                   log_input=bool(d.get("log_input", cls.log_input)),
                   deep_context=bool(d.get("deep_context", cls.deep_context)),
                   reference=bool(d.get("reference", cls.reference)))


def _conv(cin: int, cout: int, dilation: int = 1, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation,
                                   dilation=dilation), nn.LeakyReLU(0.1, inplace=True))


class _Residual(nn.Module):
    """Dilated residual block: the context a blob's gain needs is the skin around it."""

    def __init__(self, c: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(c, c, dilation), nn.Conv2d(c, c, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.body(x), 0.1)


class _DeepContext(nn.Module):
    """Quarter-resolution features (``c`` channels) -> a correction to them from 1/8 and 1/16
    resolution (twice the channels there, a few hundred pixels at 1/16: cheap), upsampled and
    added. The output layer starts at zero, so the branch starts as no change."""

    def __init__(self, c: int) -> None:
        super().__init__()
        c2 = 2 * c
        self.down1 = nn.Sequential(_conv(c, c2, stride=2), _conv(c2, c2))  # 1/8
        self.down2 = nn.Sequential(_conv(c2, c2, stride=2), _Residual(c2, 1), _Residual(c2, 2))
        self.merge = _conv(2 * c2, c2)  # back at 1/8, with the 1/16 features
        self.out = nn.Conv2d(c2, c, 1)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        e = self.down1(q)
        f = F.interpolate(self.down2(e), size=e.shape[-2:], mode="bilinear", align_corners=False)
        g = self.out(self.merge(torch.cat([e, f], 1)))
        return F.interpolate(g, size=q.shape[-2:], mode="bilinear", align_corners=False)


class DeoccluderNet(nn.Module):
    """Gray frame in [0, 1] -> the frame without its occlusion (see the module docstring).

    Starts as the identity (mask shut, gain 1, offset 0), so an untrained or early model never
    makes a frame worse than the camera's.
    """

    #: scale of the half-resolution head's outputs (mask logit, log-gain, offset): Adam moves
    #: every weight by about the learning rate per step, and the fields need whole units
    FIELD_SCALE: Final = (5.0, 2.0, 1.0)

    def __init__(self, config: DeoccluderConfig | None = None) -> None:
        super().__init__()
        self.config = config or DeoccluderConfig()
        w, h = self.config.frame_size
        if w % 4 or h % 4:
            msg = f"frame size {w}x{h}: width and height must be multiples of 4"
            raise ValueError(msg)
        c = self.config.width
        images = (1 + int(self.config.log_input)) * (1 + int(self.config.reference))
        inputs = 4 * images  # 2x2 pixels of each input image
        self.stem = nn.Sequential(_conv(inputs, c), _conv(c, c))  # half resolution
        self.down = nn.Sequential(_conv(c, 2 * c, stride=2), _conv(2 * c, 2 * c))  # quarter
        self.deep = _DeepContext(2 * c) if self.config.deep_context else None
        self.context = nn.Sequential(*[_Residual(2 * c, d) for d in (2, 4, 8, 16)])
        self.up = nn.Sequential(_conv(3 * c, c), _conv(c, c))
        # 3 fields, a 2x2-shuffled residual, then the sharpening field (last, so that a network
        # grown to have it starts as the one without: trainer.Checkpointer.load_weights)
        self.head = nn.Conv2d(c, 3 + 4 + int(self.config.sharpen), 3, padding=1)
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, a=0.1, nonlinearity="leaky_relu")
                nn.init.zeros_(mod.bias)
        residuals = [*self.context, *(self.deep.down2[1:] if self.deep is not None else ())]
        for block in residuals:
            nn.init.zeros_(block.body[1].weight)
        if self.deep is not None:
            nn.init.zeros_(self.deep.out.weight)
        nn.init.zeros_(self.head.weight)
        with torch.no_grad():
            self.head.bias[0] = -4.0 / self.FIELD_SCALE[0]  # mask logit -4: shut
        self.register_buffer("scale", torch.tensor(self.FIELD_SCALE).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("haze", _gaussian_taps(self.config.haze_sigma), persistent=False)

    def fields(self, x: torch.Tensor, ref: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, ...]:
        """(mask logit, log-gain, offset, residual, sharpening or None), each (N, 1, H, W);
        ``ref``: the wearer's reference frame, (N, 1, H, W), with ``config.reference``."""
        a = self.stem(F.pixel_unshuffle(self._inputs(x, ref), 2))
        q = self.down(a)
        b = self.context(q if self.deep is None else q + self.deep(q))
        b = F.interpolate(b, size=a.shape[-2:], mode="bilinear", align_corners=False)
        h = self.head(self.up(torch.cat([a, b], 1)))
        low = F.interpolate(h[:, :3] * self.scale, size=x.shape[-2:], mode="bilinear",
                            align_corners=False)
        sharpen = None
        if self.config.sharpen:
            sharpen = F.interpolate(h[:, 7:8], size=x.shape[-2:], mode="bilinear",
                                    align_corners=False)
        return low[:, :1], low[:, 1:2], low[:, 2:3], F.pixel_shuffle(h[:, 3:7], 2), sharpen

    def corrected(self, x: torch.Tensor, ref: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training: (output, mask logit, the correction before the mask), with the full
        correction (gain, offset, residual and, with ``config.sharpen``, the unsharp mask)."""
        return self.apply_fields(x, self.fields(x, ref))

    def apply_fields(self, x: torch.Tensor, fields: tuple[torch.Tensor, ...]
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """:meth:`corrected` from fields already computed (a loss on the fields as well needs
        them without a second forward pass)."""
        m, g, o, r, sharpen = fields
        fixed = x * torch.exp(g) + o + 0.1 * r
        if sharpen is not None:
            fixed = fixed + sharpen * (x - self._blur(x))
        return x + torch.sigmoid(m) * (fixed - x), m, fixed

    def _inputs(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """The frame centred on 0 and, with ``config.log_input``, its log (1/255 to 1 mapped to
        about -0.5 to 0.5) as a second channel; with ``config.reference``, the same of ``ref``
        after them."""
        if self.config.reference != (ref is not None):
            msg = ("this de-occluder reads a reference frame beside the frame"
                   if self.config.reference else "this de-occluder takes no reference frame")
            raise ValueError(msg)
        images = [x] if ref is None else [x, ref]
        if not self.config.log_input:
            return torch.cat([i - 0.5 for i in images], 1)
        return torch.cat([c for i in images
                          for c in (i - 0.5, torch.log(i + _LOG_FLOOR) / _LOG_SPAN + 0.5)], 1)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian (``config.haze_sigma``), the border repeated."""
        r = self.haze.shape[-1] // 2
        x = F.pad(x, (r, r, r, r), mode="replicate")
        return F.conv2d(F.conv2d(x, self.haze), self.haze.transpose(-1, -2))

    def forward(self, x: torch.Tensor, ref: torch.Tensor | None = None) -> torch.Tensor:
        """Deployed: x (N, 1, H, W) in [0, 1] (and, with ``config.reference``, the wearer's
        reference frame ``ref`` alike) -> the corrected frame, (N, 1, H, W) clamped to [0, 1]:
        the full correction, or with ``config.apply == "gain"`` the frame times the gain (the
        offset and the residual left out), behind the mask shifted by ``config.mask_bias``."""
        if self.config.apply == "full":
            _, m, fixed = self.corrected(x, ref)
        else:
            m, g = self.fields(x, ref)[:2]
            fixed = x * torch.exp(g)
        return (x + torch.sigmoid(m - self.config.mask_bias) * (fixed - x)).clamp(0.0, 1.0)


def _gaussian_taps(sigma: float) -> torch.Tensor:
    """(1, 1, 1, 2r+1) normalised Gaussian taps, r = ceil(3 sigma)."""
    r = int(np.ceil(3.0 * sigma))
    t = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return torch.from_numpy((t / t.sum()).astype(np.float32)).view(1, 1, 1, -1)


def pair_loss(net: DeoccluderNet, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
              weight: torch.Tensor | None = None, edge: float = 0.0,
              targets: torch.Tensor | None = None, field: float = 0.0,
              ref: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of the output, MSE of the correction inside the true mask (and, at a tenth of the
    weight, outside it), and the mask's BCE; ``weight`` (broadcast to the frames) weights the
    pixels of all four (:func:`eye_weight_map`): a mask that opens on the eye's own dark parts
    moves the gaze, one that opens on the cheek does not. ``edge`` adds, at that weight, the
    MSE of the output's gradients (weighted alike): the gaze probe reads the iris and lid edges,
    and the plain MSE charges a gain a few levels off across the eye more than a smeared edge
    (measured in reports/alignment.md: it sharpened the eye's edges against its control run, and
    had not beaten the shipped model when the runs stopped). ``field`` adds, at that weight, the
    (weighted) MSE of the log-gain and offset fields against ``targets`` ((N, 3, H, W) from
    :meth:`OcclusionPairs.batch`: the exact inverse of the drawn occlusion,
    :func:`field_targets`, and a mask of where the occlusion shows), counted only where the
    occlusion shows; ``ref``: the wearer's reference frames, for a network with
    ``config.reference``. The gray levels say how wrong the output is; the fields say which
    gain was wrong, in the same units on a dark iris as on bright skin. Where the occlusion does
    not show (under the housing) no gain can be read, and where there is none the shut mask
    passes the frame whatever the fields say.

    The correction's own terms train it whatever the mask says: without the inside one the mask
    stays shut (opening it onto a poor correction costs) and the correction, seen through a shut
    mask, gets almost no gradient; without the outside one the correction is free where the mask
    is almost shut, and a mask at 0.05 over a correction 60 levels off moves clean frames.
    """
    fields = net.fields(x, ref)
    out, logit, fixed = net.apply_fields(x, fields)
    w = torch.ones_like(y) if weight is None else weight.expand_as(y)
    rec = ((out - y).pow(2) * w).sum() / w.sum()
    err = (fixed - y).pow(2) * w
    inside = (err * mask).sum() / (w * mask).sum().clamp(min=1.0)
    outside = (err * (1.0 - mask)).sum() / (w * (1.0 - mask)).sum().clamp(min=1.0)
    bce = (F.binary_cross_entropy_with_logits(logit, mask, reduction="none") * w).sum() / w.sum()
    loss = 100.0 * (rec + inside + 0.1 * outside) + bce
    parts = {"rmse": float(rec.detach().sqrt() * 255),
             "inside_rmse": float(inside.detach().sqrt() * 255),
             "outside_rmse": float(outside.detach().sqrt() * 255), "bce": float(bce.detach())}
    if edge > 0:
        grad = _gradient_error(out, y, w)
        loss = loss + 100.0 * edge * grad
        parts["edge_rmse"] = float(grad.detach().sqrt() * 255)
    if field > 0:
        if targets is None:
            msg = ("a field loss needs the occlusions' field targets "
                   "(OcclusionPairs.batch(fields=True))")
            raise ValueError(msg)
        ws = w * targets[:, 2:3]
        err = ((torch.cat(fields[1:3], 1) - targets[:, :2]).pow(2) * ws).sum() / (
            2.0 * ws.sum().clamp(min=1.0))
        loss = loss + field * err
        parts["field_rmse"] = float(err.detach().sqrt())
    return loss, {"loss": float(loss.detach()), **parts}


def clean_weighted(weight: torch.Tensor | None, mask: torch.Tensor, clean: float
                   ) -> torch.Tensor:
    """(N, 1, H, W) pixel weights for :func:`pair_loss`: ``weight`` (or ones), times ``clean``
    on the frames with no occlusion (an all-zero ``mask``). A clean eye the network touches is
    a gaze error made where there was none to undo: on val, the shipped model's damage to clean
    eyes came from a few confident corrections of the lid's own shadow and lashes
    (reports/alignment.md, tenth session), which an even loss pays for at the rate of any
    other error. (A weight of 4 did not keep them still in a fine-tune from step 6500: run J
    there.)"""
    base = torch.ones_like(mask[:, :1]) if weight is None else weight.expand_as(mask[:, :1])
    empty = mask.flatten(1).amax(1) == 0
    scale = torch.where(empty, torch.tensor(float(clean)), torch.tensor(1.0))
    return base * scale.view(-1, 1, 1, 1)


def field_targets(occ: OcclusionFields, clean: np.ndarray) -> np.ndarray:
    """(2, H, W) float32: the log-gain and the offset (in [0, 1] units) that undo the
    occlusion ``occ`` (:class:`revavatar.vrface.effects.OcclusionFields`) of a frame whose
    occlusion-free version, as stored, is ``clean`` (uint8). The occlusion multiplies by the
    blobs' gain G a blend of the frame and its haze H with weight s, so the frame is
    ``x / (G (1 - s)) - s H / (1 - s)``. The effects after the occlusion (blur, vignetting,
    noise, JPEG) are left out of the targets; they are mild and smooth where the fields are."""
    keep = occ.gain
    offset = np.zeros_like(keep)
    if occ.smudge is not None:
        rest = 1.0 - occ.smudge
        keep = keep * rest
        offset = -occ.smudge / rest * occ.haze(clean.astype(np.float32)) / np.float32(255.0)
    return np.stack([-np.log(keep), offset]).astype(np.float32)


def _gradient_error(out: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Weighted MSE between the horizontal and vertical differences of ``out`` and ``y``."""
    err = torch.zeros((), dtype=out.dtype)
    for dim in (-1, -2):
        n = out.shape[dim] - 1
        d = (out.diff(dim=dim) - y.diff(dim=dim)).pow(2)
        ww = w.narrow(dim, 0, n)
        err = err + (d * ww).sum() / ww.sum()
    return err


def eye_weight_map(camera: Any, layout: Any, gain: float,
                   sigma_mm: tuple[float, float] = (15.0, 10.0)) -> torch.Tensor:
    """(1, 1, H, W) pixel weights of a left-eye frame: 1 + ``gain`` times a Gaussian around where
    ``camera`` (the left eye's) sees the template eye centre of ``layout``, about an eye wide
    (``sigma_mm`` at the eye's depth). The gaze lives in a few percent of the frame; unweighted,
    the loss is skin."""
    centre = layout.pixel_to_head(layout.template_points()[1:2])  # the left eye's
    uv, depth = camera.project(centre)
    sx, sy = (s * float(camera.fx) / float(depth[0]) for s in sigma_mm)
    u = np.arange(camera.width)[None, :] - uv[0, 0]
    v = np.arange(camera.height)[:, None] - uv[0, 1]
    g = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    return torch.from_numpy((1.0 + gain * g).astype(np.float32))[None, None]


def mirror_for(region: str, frame: np.ndarray) -> np.ndarray:
    """The right eye's frame mirrored into the left eye's orientation (and back: it is its own
    inverse); the left eye's unchanged."""
    if region not in EYE_SIDES:
        msg = f"the de-occluder reads eye cameras ({', '.join(EYE_SIDES)}), not {region!r}"
        raise ValueError(msg)
    return np.ascontiguousarray(frame[:, ::-1]) if region == "right_eye" else frame


class OcclusionPairs:
    """Eye frames of a build's split just before the occlusion effect (as the camera sees them),
    and the records of the effects after it; :meth:`batch` draws (occluded, clean, mask)
    triples from them.

    Args:
        data: VR-Face build folder (its source folder and landmark cache must still exist).
        split: ``train`` / ``val`` / ``test``.
        limit: at most this many samples, spread over the split's identities (None: all).
        cache: ``.npz`` to keep the frames in (rendering them takes about a minute per 1,000
            samples); read back when it exists and was made from this build's split (its
            ``build_key``), else made again.
    """

    def __init__(self, data: str | Path, split: str, limit: int | None = None,
                 cache: str | Path | None = None, progress: bool = True) -> None:
        from revavatar.learning.data import VRFaceIndex  # noqa: PLC0415

        self.index = VRFaceIndex(data)
        self.split = split
        cache = Path(cache) if cache else None
        if cache is None or not cache.is_file() or not self._load(cache):
            self._render(limit, progress)
            if cache is not None:
                self._save(cache)
        if not len(self.frames):
            msg = f"{self.index.root}: no {split} eye frames could be replayed"
            raise ValueError(msg)
        self.quality = int(self.index.meta["config"].get("jpeg_quality", 95))

    def _render(self, limit: int | None, show: bool) -> None:
        from revavatar.learning.eval_align import spread_samples  # noqa: PLC0415
        from revavatar.learning.trainer import progress  # noqa: PLC0415
        from revavatar.vrface.replay import (  # noqa: PLC0415
            SampleReplay,
            apply_records,
            split_records,
        )

        replay = SampleReplay(self.index)
        entries = spread_samples(self.index, self.split, None, limit)
        frames, after, regions, samples, occluded = [], [], [], [], []
        for e in progress(len(entries), desc=f"replay {self.split}", unit="sample",
                          iterable=entries, disable=not show):
            views = replay.clean_views(e)
            if views is None:
                continue
            for region in EYE_SIDES:
                records = replay.records(e, region)
                before, rest = split_records(records, "occlusion")
                frames.append(apply_records(views[region], before))
                after.append(rest)
                regions.append(region)
                samples.append(int(e["index"]))
                occluded.append(any(r["effect"] == "occlusion" for r in records))
        self.frames = np.stack(frames) if frames else np.zeros((0, 1, 1), np.uint8)
        self.after, self.regions = after, regions
        self.samples, self.occluded = np.array(samples), np.array(occluded, bool)

    #: the frames' wearer references, after :meth:`load_references`
    references: np.ndarray | None = None

    def _source(self) -> dict[str, Any]:
        """What a cache must have been made from to stand for this build's split."""
        return {"build_key": self.index.meta.get("build_key"), "split": self.split}

    def _save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = json.dumps({"after": self.after, "regions": self.regions, **self._source()})
        tmp = path.with_name(f".tmp-{path.name}")
        with tmp.open("wb") as f:
            np.savez(f, frames=self.frames, samples=self.samples, occluded=self.occluded,
                     meta=np.frombuffer(meta.encode(), np.uint8))
        tmp.replace(path)

    def _load(self, path: Path) -> bool:
        """Read the cache; False (and a warning) when it was made from another build or split."""
        with np.load(path) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            made = {k: meta.get(k) for k in self._source()}
            if made != self._source():
                warnings.warn(f"{path}: made from {made}, not {self._source()}; replaying the "
                              "frames again", stacklevel=3)
                return False
            self.frames, self.samples = z["frames"], z["samples"]
            self.occluded = z["occluded"]
        self.after, self.regions = meta["after"], meta["regions"]
        return True

    def __len__(self) -> int:
        return len(self.frames)

    def load_references(self, frames: int, cache: str | Path | None = None,
                        progress: bool = True) -> None:
        """Give every frame its wearer's reference (:attr:`references`, uint8 (N, H, W), in
        the frames' own orientation): the median (:func:`revavatar.core.deocclusion.
        eye_reference`) of that eye camera's stored frames in ``frames`` other samples of the
        same identity (:func:`revavatar.learning.data.wearer_frames`), as an in-headset
        enrollment would have seen them, occlusions and all. Kept in ``cache`` like the
        frames."""
        import cv2  # noqa: PLC0415

        from revavatar.core.deocclusion import eye_reference  # noqa: PLC0415
        from revavatar.learning.data import wearer_frames  # noqa: PLC0415
        from revavatar.learning.trainer import progress as bar  # noqa: PLC0415

        source = {**self._source(), "frames": frames,
                  "samples": hashlib.sha1(self.samples.tobytes()).hexdigest()}
        path = Path(cache) if cache is not None else None
        if path is not None and path.is_file():
            with np.load(path) as z:
                made = json.loads(z["meta"].tobytes().decode())
                if made == source:
                    self.references = z["references"]
                    return
            warnings.warn(f"{path}: made from {made}, not {source}; making the references "
                          "again", stacklevel=2)
        others = wearer_frames(self.index, self.split, frames)
        refs = []
        for k in bar(len(self), desc=f"references {self.split}", unit="frame",
                     iterable=range(len(self)), disable=not progress):
            shots = [cv2.imread(e[self.regions[k]], cv2.IMREAD_UNCHANGED)
                     for e in others(self._entries[int(self.samples[k])])]
            refs.append(eye_reference(shots))
        self.references = np.stack(refs) if refs else np.zeros((0, 1, 1), np.uint8)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".tmp-{path.name}")
            with tmp.open("wb") as f:
                np.savez(f, references=self.references,
                         meta=np.frombuffer(json.dumps(source).encode(), np.uint8))
            tmp.replace(path)

    def reference(self, k: int) -> np.ndarray:
        """Frame ``k``'s wearer reference in the left eye's orientation (after
        :meth:`load_references`)."""
        if self.references is None:
            msg = "no wearer references yet: call load_references first"
            raise RuntimeError(msg)
        return mirror_for(self.regions[k], self.references[k])

    def pair(self, k: int, rng: np.random.Generator, p_occlusion: float = 0.75,
             fields: bool = False) -> tuple[np.ndarray, ...]:
        """(occluded, clean, mask) of frame ``k`` in the left eye's orientation: a fresh
        occlusion with probability ``p_occlusion`` (else the two frames are equal), then the
        frame's own later effects and the build's JPEG on both, as the build ran them. With
        ``fields``, a fourth array, (3, H, W): the :func:`field_targets` and 1 where the two
        frames differ (the occlusion shows; all zeros without one). The draws are the same
        either way."""
        from revavatar.vrface.effects import (  # noqa: PLC0415
            OcclusionParams,
            apply_occlusion,
            occlusion_fields,
        )

        clean = self.frames[k]
        hit = clean
        occ = None
        if rng.random() < p_occlusion:
            p = OcclusionParams.draw(rng)
            occ = occlusion_fields(clean.shape, np.random.default_rng(int(rng.integers(2**63 - 1))),
                                   **asdict(p))
            hit = apply_occlusion(clean, occ)
        mask = (np.abs(hit.astype(np.int16) - clean) > MASK_LEVELS).astype(np.float32)
        region = self.regions[k]
        truth, seen = self._finish(k, clean), self._finish(k, hit)
        out = [mirror_for(region, a) for a in (seen, truth, mask)]
        if fields:
            t = np.zeros((3, *clean.shape), np.float32)
            if occ is not None:
                t[:2] = field_targets(occ, truth)
                t[2] = seen != truth
            out.append(np.stack([mirror_for(region, c) for c in t]))
        return tuple(out)

    def _finish(self, k: int, frame: np.ndarray) -> np.ndarray:
        """The effects after the occlusion and the build's JPEG."""
        from revavatar.vrface.replay import apply_records, jpeg_round_trip  # noqa: PLC0415

        return jpeg_round_trip(apply_records(frame, self.after[k]), self.quality)

    def stored(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(the frame the build stored, the same replayed without its occlusion), both in the
        left eye's orientation: the real occlusions the evaluation scores against."""
        import cv2  # noqa: PLC0415

        entry = self._entries[int(self.samples[k])]
        region = self.regions[k]
        frame = cv2.imread(entry[region], cv2.IMREAD_UNCHANGED)
        if frame is None:
            msg = f"cannot read {entry[region]}"
            raise FileNotFoundError(msg)
        return mirror_for(region, frame), mirror_for(region, self._finish(k, self.frames[k]))

    @functools.cached_property
    def _entries(self) -> dict[int, dict[str, Any]]:
        return {int(e["index"]): e for e in self.index.samples(self.split)}

    def batch(self, rng: np.random.Generator, n: int, p_occlusion: float = 0.75,
              fields: bool = False, references: bool = False) -> tuple[torch.Tensor, ...]:
        """``n`` random pairs as (N, 1, H, W) tensors in [0, 1] (mask in {0, 1}); with
        ``fields``, the (N, 3, H, W) field targets as well; with ``references``, last, the
        frames' wearer references (:meth:`load_references`) in [0, 1]."""
        ks = rng.integers(len(self), size=n)
        pairs = list(zip(*(self.pair(int(k), rng, p_occlusion, fields) for k in ks),
                         strict=True))

        def t(a: tuple[np.ndarray, ...]) -> torch.Tensor:
            return torch.from_numpy(np.stack(a).astype(np.float32))[:, None]

        out = (t(pairs[0]) / 255.0, t(pairs[1]) / 255.0, t(pairs[2]))
        out += (torch.from_numpy(np.stack(pairs[3])),) if fields else ()
        return out + ((t(tuple(self.reference(int(k)) for k in ks)) / 255.0,)
                      if references else ())


def save_deoccluder(net: DeoccluderNet, out: str | Path, card: dict[str, Any]) -> Path:
    """Weights (safetensors), ONNX export, config and card into folder ``out``."""
    from safetensors.torch import save_file  # noqa: PLC0415

    from revavatar.learning.export import export_onnx  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()},
              str(out / "weights.safetensors"))
    w, h = net.config.frame_size
    example: Any = torch.rand(1, 1, h, w)
    inputs = ["frame"]
    if net.config.reference:
        example, inputs = (example, torch.rand(1, 1, h, w)), ["frame", "reference"]
    card = {"config": asdict(net.config), "params": sum(p.numel() for p in net.parameters()),
            "onnx_max_abs_diff": export_onnx(net, example, out / "model.onnx", inputs,
                                             ["clean"]), **card}
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / "README.md").write_text(_readme(card))
    return out


def _figures(val: dict[str, Any] | None) -> str:
    if not val:
        return "-"
    head = (f"on the val split's stored frames against the same frames replayed without their "
            f"occlusion ({val['n_occluded']} occluded, {val['n_clean']} clean)")
    parts = []
    if val.get("occluded_out") is not None:
        parts.append(f"mean absolute error on occluded frames {val['occluded_in']:.2f} -> "
                     f"{val['occluded_out']:.2f} gray levels ({val['footprint_in']:.1f} -> "
                     f"{val['footprint_out']:.1f} inside the occlusion)")
    if val.get("clean_out") is not None:
        parts.append(f"clean frames moved by {val['clean_out']:.2f}")
    if val.get("eye_touched_out") is not None:
        parts.append(f"around the eye (eye-weighted), on the {val['n_eye_touched']} occluded "
                     f"frames whose eye it touched {val['eye_touched_in']:.2f} -> "
                     f"{val['eye_touched_out']:.2f}")
    if val.get("eye_clean_out") is not None:
        parts.append(f"clean eyes moved by {val['eye_clean_out']:.2f}")
    if val.get("eye_touched_edges_out") is not None:
        parts.append(f"their high-pass (sigma 3 px) on touched eyes "
                     f"{val['eye_touched_edges_in']:.2f} -> {val['eye_touched_edges_out']:.2f}, "
                     f"on clean eyes moved by {val['eye_clean_edges_out']:.2f}")
    return head + (": " + ", ".join(parts) if parts else "")


#: what the deployed output is, per ``DeoccluderConfig.apply``, for the card
_APPLIED: Final = {
    "full": "the output is the full correction (gain, offset and residual) where the mask is "
            "open and the frame itself where it is shut",
    "gain": "the output is the frame times the gain where the mask is open and the frame "
            "itself where it is shut (the offset and residual are left out)",
}


def _mask_bias(bias: float) -> str:
    return f", the mask's logit lowered by {bias:g}" if bias else ""


def _readme(card: dict[str, Any]) -> str:
    cfg = card["config"]
    config = DeoccluderConfig.from_dict(cfg)
    return "\n".join([
        "# Eye-camera de-occluder (`learning.deocclusion`)", "",
        f"- Task: gray eye-camera frame ({cfg['frame_size'][0]}x{cfg['frame_size'][1]}) -> the "
        "same frame without VR-Face's occlusion (dark blobs, lens smudge); right eyes are "
        "mirrored in and out. Runs before every aligner (`core.deocclusion.OnnxDeoccluder`).",
        f"- Network: a mask, a log-gain and an offset field at half resolution and a "
        "full-resolution residual"
        + (", read from quarter-resolution features with a 1/8 and 1/16 resolution branch"
           if config.deep_context else "")

        + f" (width {cfg['width']}, {card['params']:,} parameters), all "
        "trained; deployed (ONNX), " + _APPLIED[config.apply] + _mask_bias(config.mask_bias)
        + ".",
        *([f"- Reference: beside each frame the network reads the wearer's eye as the same "
           f"camera sees it, the median of {card.get('reference_frames')} of their frames "
           "(`core.deocclusion.eye_reference`): in training and evaluation the frames of as many "
           "other samples of the same person, in the product the stream's first frames, one a "
           "second (`DeoccludedAligner`)."] if config.reference else []),
        f"- Data: `{card.get('data')}`, {card.get('train_frames')} train eye frames replayed "
        "up to the occlusion, a fresh occlusion (probability "
        f"{card.get('p_occlusion')}) and the frame's own later effects and JPEG per draw.",
        f"- Training: {card.get('steps')} steps, batch {card.get('batch')}, Adam lr "
        f"{card.get('lr')} (constant, then linear to 0 over the second half), CPU "
        f"{card.get('threads')} threads, fp32, wall time {card.get('wall_s')} s"
        + (f"; the weights are a moving average of the trained ones (decay {card['ema']:g} per "
           "step)" if card.get("ema") else "") + ".",
        f"- Figures: {_figures(card.get('val'))}.",
        f"- ONNX: `model.onnx` (input `frame` (1, 1, H, W) in [0, 1]"
        + (", and `reference` alike" if config.reference else "")
        + f"), max |onnxruntime - torch| {card['onnx_max_abs_diff']:.2g}.",
        f"- Command: `{card.get('command')}`",
        *([f"- Gaze: {card['gaze']}"] if card.get("gaze") else []),
        *([f"- Provenance: {card['provenance']}"] if card.get("provenance") else []), ""])

