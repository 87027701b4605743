"""Network blocks, generators, discriminators and GAN losses shared by the learned stages.

Kept apart from the models (losses, training steps) and the runtime (ONNX), so the alignment and
restoration models build from one set of parts. Architectures are picked by explicit registries
(:data:`GENERATORS`, :data:`DISCRIMINATORS`, :data:`NORMS`); an unknown key raises ValueError
listing the valid ones. Every generator ends in ``tanh`` (outputs in [-1, 1], the tensor
convention of :mod:`revavatar.learning.data`) and only uses ops that export to ONNX opset 17.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DISCRIMINATORS",
    "GAN_MODES",
    "GENERATORS",
    "NORMS",
    "ConvAutoencoder",
    "ConvBlock",
    "DownBlock",
    "GANLoss",
    "MultiscaleDiscriminator",
    "NLayerDiscriminator",
    "ResnetBlock",
    "ResnetGenerator",
    "UnetGenerator",
    "UpBlock",
    "count_parameters",
    "define_discriminator",
    "define_generator",
    "get_norm",
    "init_weights",
]

NormFactory = Callable[[int], nn.Module]

#: normalisation name -> factory(channels). Instance norm (no affine, per-image statistics) is
#: CycleGAN's choice; it needs no running statistics, so train and export behave the same.
NORMS: Final[dict[str, NormFactory]] = {
    "instance": lambda c: nn.InstanceNorm2d(c, affine=False, track_running_stats=False),
    "batch": lambda c: nn.BatchNorm2d(c),
    "none": lambda c: nn.Identity(),
}


def _lookup(registry: Mapping[str, Any], key: str, what: str) -> Any:
    try:
        return registry[key]
    except KeyError:
        msg = f"unknown {what} {key!r}; expected one of {', '.join(registry)}"
        raise ValueError(msg) from None


def get_norm(name: str) -> NormFactory:
    """The norm factory registered as ``name`` (ValueError listing the keys otherwise)."""
    return _lookup(NORMS, name, "norm")


_ACTS: Final[dict[str, Callable[[], nn.Module]]] = {
    "relu": lambda: nn.ReLU(inplace=True),
    "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True),
    "tanh": nn.Tanh,
    "none": nn.Identity,
}


class ConvBlock(nn.Sequential):
    """Conv -> norm -> activation, with 'same' padding for odd kernels at stride 1."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1,
                 norm: str = "instance", act: str = "relu", pad_mode: str = "reflect",
                 bias: bool | None = None) -> None:
        pad = kernel // 2
        use_bias = norm in ("none", "instance") if bias is None else bias
        layers: list[nn.Module] = []
        if pad_mode == "reflect" and pad:
            layers.append(nn.ReflectionPad2d(pad))
            pad = 0
        layers.append(nn.Conv2d(in_ch, out_ch, kernel, stride, pad, bias=use_bias))
        layers.append(get_norm(norm)(out_ch))
        layers.append(_lookup(_ACTS, act, "activation")())
        super().__init__(*layers)


class DownBlock(ConvBlock):
    """3x3 stride-2 conv block: halves H and W."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "instance", act: str = "relu") -> None:
        super().__init__(in_ch, out_ch, 3, 2, norm, act, pad_mode="zeros")


class UpBlock(nn.Sequential):
    """Doubles H and W: 3x3 transposed conv (``mode="transpose"``, CycleGAN's, 4x cheaper) or
    nearest upsampling + 3x3 conv (``mode="resize"``, no checkerboard artefacts)."""

    def __init__(self, in_ch: int, out_ch: int, norm: str = "instance", act: str = "relu",
                 mode: str = "transpose") -> None:
        bias = norm in ("none", "instance")
        if mode == "transpose":
            layers: list[nn.Module] = [nn.ConvTranspose2d(in_ch, out_ch, 3, 2, 1, output_padding=1,
                                                          bias=bias)]
        elif mode == "resize":
            layers = [nn.Upsample(scale_factor=2, mode="nearest"),
                      nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)]
        else:
            msg = f"unknown up mode {mode!r}; expected one of transpose, resize"
            raise ValueError(msg)
        layers += [get_norm(norm)(out_ch), _lookup(_ACTS, act, "activation")()]
        super().__init__(*layers)


class ResnetBlock(nn.Module):
    """Two reflection-padded 3x3 conv blocks with a skip connection (CycleGAN's block)."""

    def __init__(self, dim: int, norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(ConvBlock(dim, dim, 3, 1, norm, "relu"),
                                  ConvBlock(dim, dim, 3, 1, norm, "none"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + body(x)."""
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's ResNet generator, sized by arguments so it can be fit to a FLOP budget.

    c7s1-ngf, ``n_down`` stride-2 downsamplings (doubling channels, capped at ``max_ch``),
    ``n_blocks`` residual blocks at the bottom resolution, ``n_down`` upsamplings, c7s1-out, tanh.
    H and W must be multiples of ``2**n_down``.

    ``residual=True`` (needs ``in_ch >= out_ch``) predicts a correction instead: the output is
    ``clamp(x + net(x), -1, 1)``, ``x`` being the first ``out_ch`` input channels (later ones are
    conditioning, e.g. the enrolled wearer's crop). When the input is already roughly aligned
    (pre-rectified with the calibration) the generator then starts at the identity and only
    learns what differs, which converges in far fewer CPU steps.

    ``tone=True`` (residual only) adds a global tone head: from the pooled bottleneck features it
    predicts a per-channel log-gain and offset applied to the skip path, ``x * exp(g) + b``. An
    infrared camera's gain and gamma change the whole crop at once; instance-normalised local
    convolutions undo that poorly (the residual keeps the camera's brightness), one global affine
    does it exactly. Zero-initialised, so it starts as the plain residual generator.

    ``blend=True`` (residual and conditioned on a reference of ``out_ch`` channels, the next input
    channels) adds a per-pixel reference weight ``r`` as one more output channel, and the skip
    path becomes ``(1 - r) * skip + r * reference``. A reference that already looks like the
    target (the enrolled wearer's own crop) then reaches the output through a skip instead of
    through the residual, which would have to carry ``reference - input`` at full resolution
    through the bottleneck. ``r`` starts at 0 (the output conv is zero-initialised), so a blend
    generator grown from a plain one starts as that one. ``blend_mask`` ((H, W), the input size)
    scales ``r`` per pixel: 0 where the reference must never reach the output (an eye's gaze has
    to come from the camera, not from the enrollment selfie's eye).
    """

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 32, n_down: int = 2, n_blocks: int = 6,
                 norm: str = "instance", up: str = "transpose", max_ch: int = 256,
                 residual: bool = False, tone: bool = False, blend: bool = False,
                 blend_mask: np.ndarray | None = None) -> None:
        super().__init__()
        if residual and in_ch < out_ch:
            msg = f"a residual generator needs in_ch >= out_ch, got {in_ch} and {out_ch}"
            raise ValueError(msg)
        if tone and not residual:
            msg = "the tone head acts on the skip path: it needs residual=True"
            raise ValueError(msg)
        if blend and not (residual and in_ch >= 2 * out_ch):
            msg = ("the reference blend acts on the skip path and mixes in the next out_ch input "
                   f"channels: it needs residual=True and in_ch >= 2 * out_ch, got in_ch {in_ch}")
            raise ValueError(msg)
        if blend_mask is not None and not blend:
            msg = "blend_mask scales the reference blend: it needs blend=True"
            raise ValueError(msg)
        self.residual = bool(residual)
        self.blend = bool(blend)
        # not persistent: a function of the config, so weights files stay as they were
        mask = None if blend_mask is None else torch.as_tensor(blend_mask, dtype=torch.float32)
        self.register_buffer("blend_mask", None if mask is None else mask[None, None],
                             persistent=False)
        self.out_ch = int(out_ch)
        self.conditioned = in_ch > out_ch  # extra input channels beyond the residual's base
        self.multiple = 2**n_down
        layers: list[nn.Module] = [ConvBlock(in_ch, ngf, 7, 1, norm, "relu")]
        ch = ngf
        for _ in range(n_down):
            nxt = min(ch * 2, max_ch)
            layers.append(DownBlock(ch, nxt, norm))
            ch = nxt
        layers += [ResnetBlock(ch, norm) for _ in range(n_blocks)]
        self._bottom = len(layers)  # layers before this index make the bottleneck features
        self.tone = nn.Linear(ch, 2 * out_ch) if tone else None
        if self.tone is not None:
            nn.init.zeros_(self.tone.weight)
            nn.init.zeros_(self.tone.bias)
        chans = [min(ngf * 2**i, max_ch) for i in range(n_down)][::-1]
        for nxt in chans:
            layers.append(UpBlock(ch, nxt, norm, mode=up))
            ch = nxt
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ch, out_ch + int(blend), 7),
                   nn.Identity() if residual else nn.Tanh()]
        if residual:  # start exactly at the identity (see init_weights)
            layers[-2].zero_init = True  # type: ignore[assignment]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) in [-1, 1] -> (N, out_ch, H, W) in [-1, 1]."""
        if not self.residual:
            return self.model(x)
        skip = x[:, : self.out_ch] if self.conditioned else x
        if self.tone is None:
            out = self.model(x)
        else:
            h = self.model[: self._bottom](x)
            gain, offset = self.tone(h.mean(dim=(2, 3))).unsqueeze(-1).unsqueeze(-1).chunk(2, 1)
            skip = skip * torch.exp(gain) + offset
            out = self.model[self._bottom :](h)
        if self.blend:
            out, r = out[:, : self.out_ch], out[:, self.out_ch :]
            if self.blend_mask is not None:
                r = r * self.blend_mask.to(r.dtype)
            skip = skip + r * (x[:, self.out_ch : 2 * self.out_ch] - skip)
        return torch.clamp(skip + out, -1.0, 1.0)


class ConvAutoencoder(nn.Module):
    """A plain convolutional auto-encoder (the paper's ablation baseline).

    ``n_down`` stride-2 conv blocks to a bottleneck of ``2**n_down`` times lower resolution, then
    as many upsamplings back, no skip connections and no residual blocks: everything must pass
    through the bottleneck, which is what distinguishes it from the ResNet generator.
    """

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 32, n_down: int = 4,
                 norm: str = "instance", up: str = "transpose", max_ch: int = 256) -> None:
        super().__init__()
        self.multiple = 2**n_down
        layers: list[nn.Module] = [ConvBlock(in_ch, ngf, 5, 1, norm, "relu")]
        ch = ngf
        for _ in range(n_down):
            nxt = min(ch * 2, max_ch)
            layers.append(DownBlock(ch, nxt, norm))
            ch = nxt
        for nxt in [min(ngf * 2**i, max_ch) for i in range(n_down)][::-1]:
            layers.append(UpBlock(ch, nxt, norm, mode=up))
            ch = nxt
        layers += [nn.ReflectionPad2d(2), nn.Conv2d(ch, out_ch, 5), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W) in [-1, 1]."""
        return self.model(x)


class UnetGenerator(nn.Module):
    """U-Net (pix2pix style): ``n_down`` encoder levels with skip concatenations to the decoder."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 32, n_down: int = 4,
                 norm: str = "instance", max_ch: int = 256) -> None:
        super().__init__()
        self.multiple = 2**n_down
        self.stem = ConvBlock(in_ch, ngf, 3, 1, "none", "lrelu")
        chans = [min(ngf * 2**i, max_ch) for i in range(n_down + 1)]
        self.downs = nn.ModuleList(DownBlock(chans[i], chans[i + 1], norm, "lrelu")
                                   for i in range(n_down))
        self.ups = nn.ModuleList(UpBlock(chans[i + 1] * (1 if i == n_down - 1 else 2), chans[i],
                                         norm, "relu", mode="resize")
                                 for i in range(n_down))
        self.head = nn.Sequential(nn.Conv2d(chans[0] * 2, out_ch, 3, 1, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, out_ch, H, W) in [-1, 1]."""
        skips = [self.stem(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for i in reversed(range(len(self.ups))):
            y = self.ups[i](y)
            y = torch.cat([y, skips.pop()], dim=1)
        return self.head(y)


class NLayerDiscriminator(nn.Module):
    """PatchGAN discriminator; ``n_layers=3`` gives the 70x70 receptive field of pix2pix/CycleGAN.

    Outputs one logit per patch, (N, 1, H', W'); no sigmoid (the GAN loss decides).
    """

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance",
                 max_ch: int = 512) -> None:
        super().__init__()
        kw, pw = 4, 1
        blocks: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_ch, ndf, kw, 2, pw),
                                                 nn.LeakyReLU(0.2, inplace=True))]
        ch = ndf
        bias = norm in ("none", "instance")
        for n in range(1, n_layers + 1):
            nxt = min(ndf * 2**n, max_ch)
            stride = 2 if n < n_layers else 1
            blocks.append(nn.Sequential(nn.Conv2d(ch, nxt, kw, stride, pw, bias=bias),
                                        get_norm(norm)(nxt), nn.LeakyReLU(0.2, inplace=True)))
            ch = nxt
        blocks.append(nn.Sequential(nn.Conv2d(ch, 1, kw, 1, pw)))
        self.blocks = nn.ModuleList(blocks)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every block's output (the last is the patch logits), for feature-matching losses."""
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_ch, H, W) -> (N, 1, H', W') patch logits."""
        return self.features(x)[-1]


class MultiscaleDiscriminator(nn.Module):
    """pix2pixHD's multi-scale discriminator: ``num_d`` PatchGANs on the input downsampled by
    1, 2, 4, ... (3x3 average pooling, stride 2, count_include_pad=False)."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, num_d: int = 3,
                 norm: str = "instance") -> None:
        super().__init__()
        self.nets = nn.ModuleList(NLayerDiscriminator(in_ch, ndf, n_layers, norm)
                                  for _ in range(num_d))

    def _pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        levels = [x]
        for _ in range(len(self.nets) - 1):
            levels.append(F.avg_pool2d(levels[-1], 3, 2, 1, count_include_pad=False))
        return levels

    def features(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        """Per scale, every block's output (last = logits)."""
        return [net.features(lv) for net, lv in zip(self.nets, self._pyramid(x), strict=True)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Patch logits per scale, finest first."""
        return [net(lv) for net, lv in zip(self.nets, self._pyramid(x), strict=True)]


#: generator name -> class; kwargs of define_generator go to the constructor
GENERATORS: Final[dict[str, type[nn.Module]]] = {
    "resnet": ResnetGenerator,
    "autoencoder": ConvAutoencoder,
    "unet": UnetGenerator,
}
#: discriminator name -> factory(**kw)
DISCRIMINATORS: Final[dict[str, Callable[..., nn.Module]]] = {
    "patchgan70": lambda **kw: NLayerDiscriminator(**{"n_layers": 3, **kw}),
    "patchgan": NLayerDiscriminator,
    "multiscale_patchgan": lambda **kw: MultiscaleDiscriminator(**{"num_d": 3, **kw}),
}


def init_weights(module: nn.Module, gain: float = 0.02) -> nn.Module:
    """CycleGAN's init: conv weights N(0, gain), biases 0, norm scales N(1, gain).

    Convs flagged ``zero_init`` (the output conv of a residual generator) start at zero.
    """
    for m in module.modules():
        if getattr(m, "zero_init", False):
            nn.init.zeros_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return module


def define_generator(name: str, **kw: Any) -> nn.Module:
    """Build the generator ``name`` of :data:`GENERATORS` with ``kw``, initialised.

    Raises:
        ValueError: unknown name (the message lists the valid keys).
    """
    return init_weights(_lookup(GENERATORS, name, "generator")(**kw))


def define_discriminator(name: str, **kw: Any) -> nn.Module:
    """Build the discriminator ``name`` of :data:`DISCRIMINATORS` with ``kw``, initialised.

    Raises:
        ValueError: unknown name (the message lists the valid keys).
    """
    return init_weights(_lookup(DISCRIMINATORS, name, "discriminator")(**kw))


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


#: GAN objectives of :class:`GANLoss`
GAN_MODES: Final = ("lsgan", "hinge", "vanilla")


class GANLoss(nn.Module):
    """GAN objective on discriminator logits (a tensor, or a list per scale, averaged).

    ``lsgan``: MSE to 1 (real) / 0 (fake) (CycleGAN). ``vanilla``: BCE with logits. ``hinge``:
    D minimises relu(1 - real) + relu(1 + fake); G minimises -fake.

    Call ``loss(pred, target_is_real, for_discriminator=True)``; for the generator's adversarial
    term pass ``target_is_real=True, for_discriminator=False``.
    """

    def __init__(self, mode: str = "lsgan") -> None:
        super().__init__()
        if mode not in GAN_MODES:
            msg = f"unknown GAN mode {mode!r}; expected one of {', '.join(GAN_MODES)}"
            raise ValueError(msg)
        self.mode = mode

    def _one(self, pred: torch.Tensor, real: bool, for_d: bool) -> torch.Tensor:
        pred = pred.float()
        if self.mode == "lsgan":
            return F.mse_loss(pred, torch.full_like(pred, 1.0 if real else 0.0))
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(pred, torch.full_like(pred, float(real)))
        if not for_d:
            return -pred.mean()
        return F.relu(1.0 - pred).mean() if real else F.relu(1.0 + pred).mean()

    def forward(self, pred: torch.Tensor | Sequence[torch.Tensor], target_is_real: bool,
                for_discriminator: bool = True) -> torch.Tensor:
        """The loss (a scalar)."""
        preds = [pred] if isinstance(pred, torch.Tensor) else list(pred)
        losses = [self._one(p, target_is_real, for_discriminator) for p in preds]
        return torch.stack(losses).mean()
