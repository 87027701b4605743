"""Reference-guided face restorer G(x, z) (paper section 4.2), its ablations and training step.

``x`` is the composite (aligned gray eye crops and lower-face crop pasted onto the colour DP),
``z`` the reference face (another frame of the wearer at training time, the DP at run time). Both
are canonical faces of one layout, so a feature at pixel p of ``x`` mostly needs the reference at
(and near) p: an input encoder E_I and a reference encoder E_R produce features at 1/2 .. 1/16
resolution. At the two coarsest scales (1/8 and 1/16: 32x32 and 16x16 query tokens at 256 px;
at 1/8 the keys are pooled to 16x16, so attention costs ~0.05 GMAC) the input features attend to
the reference features (multi-head cross-attention; coordinate channels enter both encoders, so
attention knows where it is).
ResNet blocks at 1/16 follow; the decoder upsamples with the input encoder's features as additive
skips and predicts a residual over ``x`` at half resolution, pixel-shuffled to full size (the fine
detail of the live crops is already in ``x``; a full-resolution decoder stage would double the
FLOPs). The design is sized for <= 20 ms per 256 px frame on onnxruntime with 2 threads.

Variants (:data:`VARIANTS`, chosen by :class:`RestoreConfig.variant`):

- ``ours``: as above.
- ``ours_no_ref``: no reference encoder and no attention (G(x) only).
- ``ours_concat``: the reference is concatenated to the input (6 + 2 channels into E_I), no E_R,
  no attention.
- ``ours_no_lpips``: the ``ours`` network trained without the LPIPS term.
- ``cyclegan``: the paper's translation baseline: a CycleGAN/pix2pix ResNet generator
  (c7s1-d-d-R-u-u-c7s1, reduced width to fit the CPU) from composite to face, no reference,
  trained paired with the same adversarial + L1 loss and the same budget.

Loss: ``lambda_adv * adv + lambda_l1 * L1 + lambda_lpips * LPIPS`` against a pix2pixHD-style
multi-scale PatchGAN (3 scales) with least-squares GAN loss.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from revavatar.learning.networks import (
    ConvBlock,
    DownBlock,
    GANLoss,
    ResnetBlock,
    define_discriminator,
    define_generator,
)
from revavatar.learning.trainer import autocast

__all__ = [
    "VARIANTS",
    "CrossAttention",
    "ReferenceRestorer",
    "RestoreConfig",
    "RestoreTrainer",
    "uses_reference",
    "build_generator",
    "export_generator",
    "load_generator",
    "write_card",
]

#: variant -> (generator kind, uses the reference, LPIPS in the loss)
VARIANTS: Final[dict[str, tuple[str, str, bool]]] = {
    "ours": ("restorer", "attention", True),
    "ours_no_ref": ("restorer", "none", True),
    "ours_concat": ("restorer", "concat", True),
    "ours_no_lpips": ("restorer", "attention", False),
    "cyclegan": ("translation", "none", False),
}


@dataclass(frozen=True)
class RestoreConfig:
    """Architecture and loss settings of one restorer variant (saved with each checkpoint)."""

    variant: str = "ours"
    size: int = 256
    channels: tuple[int, int, int, int] = (16, 32, 64, 128)  # at 1/2, 1/4, 1/8, 1/16
    heads: int = 4
    attn_dim: int = 32  # query/key width per head
    res_blocks: int = 2
    ngf_translation: int = 16  # cyclegan baseline width
    translation_blocks: int = 6
    ndf: int = 32  # discriminator width
    lambda_adv: float = 1.0
    lambda_l1: float = 10.0
    lambda_lpips: float = 5.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    gan_mode: str = "lsgan"
    bf16: bool = True

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            msg = f"unknown restorer variant {self.variant!r}; expected one of {', '.join(VARIANTS)}"
            raise ValueError(msg)
        if self.size % 32:
            msg = f"restorer size must be a multiple of 32 px, got {self.size}"
            raise ValueError(msg)

    @property
    def reference(self) -> str:
        """How the reference enters: "attention" | "concat" | "none"."""
        return VARIANTS[self.variant][1]

    @property
    def use_lpips(self) -> bool:
        """Whether LPIPS is part of the loss."""
        return VARIANTS[self.variant][2] and self.lambda_lpips > 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RestoreConfig:
        """Inverse of :meth:`to_dict` (lists back to tuples)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _coords(x: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) pixel coordinates in [-1, 1] (CoordConv), built from the input's shape so the
    ONNX graph keeps no size-specific constant."""
    b, _, h, w = x.shape
    ys = (torch.arange(h, device=x.device).to(x.dtype) * (2.0 / (h - 1)) - 1.0).view(1, 1, h, 1)
    xs = (torch.arange(w, device=x.device).to(x.dtype) * (2.0 / (w - 1)) - 1.0).view(1, 1, 1, w)
    return torch.cat([xs.expand(b, 1, h, w), ys.expand(b, 1, h, w)], 1)


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Module:
    """3x3 conv, instance norm, leaky ReLU (zero padding: cheaper than reflection in ONNX)."""
    if stride == 2:
        return DownBlock(cin, cout, "instance", "lrelu")
    return ConvBlock(cin, cout, 3, 1, "instance", "lrelu", pad_mode="zeros")


class Encoder(nn.Module):
    """Strided conv pyramid: features at 1/2, 1/4, 1/8, 1/16 of the input (coordinates added)."""

    def __init__(self, cin: int, channels: tuple[int, ...]) -> None:
        super().__init__()
        stages, prev = [], cin + 2
        for i, c in enumerate(channels):
            layers = [_conv(prev, c, 2)]
            if i >= 1:  # one more conv where it is cheap enough (<= 1/4 resolution)
                layers.append(_conv(c, c))
            stages.append(nn.Sequential(*layers))
            prev = c
        self.stages = nn.ModuleList(stages)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, cin, H, W) -> features, finest first."""
        feats, h = [], torch.cat([x, _coords(x)], 1)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats


class CrossAttention(nn.Module):
    """Multi-head cross-attention from input features (queries) to reference features.

    Written with plain matmuls/softmax (not ``scaled_dot_product_attention``) so the ONNX export
    is opset-17 ops onnxruntime fuses well. Pre-norm, residual output.
    """

    def __init__(self, channels: int, heads: int, dim: int, reduce: int = 1) -> None:
        super().__init__()
        self.heads, self.dim = heads, dim
        # spatial reduction of keys/values (as in PVT): at 32x32 queries attend to the 16x16
        # pooled reference, a quarter of the cost, still a 4 px-per-token map at 256 px
        self.pool = nn.AvgPool2d(reduce) if reduce > 1 else nn.Identity()
        self.norm_q = nn.GroupNorm(1, channels)
        self.norm_k = nn.GroupNorm(1, channels)
        self.q = nn.Conv2d(channels, heads * dim, 1)
        self.k = nn.Conv2d(channels, heads * dim, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.scale = dim**-0.5

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) attends to ref (B, C, H', W'); returns (B, C, H, W)."""
        b, c, h, w = x.shape
        n = h * w
        q = self.q(self.norm_q(x)).reshape(b, self.heads, self.dim, n).transpose(2, 3)
        rn = self.norm_k(self.pool(ref))
        k = self.k(rn).reshape(b, self.heads, self.dim, -1)
        v = self.v(rn).reshape(b, self.heads, c // self.heads, -1).transpose(2, 3)
        attn = torch.softmax(torch.matmul(q, k) * self.scale, dim=-1)  # (B, heads, N, M)
        out = torch.matmul(attn, v).transpose(2, 3).reshape(b, c, h, w)
        return x + self.proj(out)


class ReferenceRestorer(nn.Module):
    """G(x, z) of the ``ours*`` variants (see the module docstring). Inputs in [-1, 1], BGR."""

    def __init__(self, cfg: RestoreConfig) -> None:
        super().__init__()
        self.mode = cfg.reference
        ch = cfg.channels
        self.enc_in = Encoder(6 if self.mode == "concat" else 3, ch)
        if self.mode == "attention":
            self.enc_ref = Encoder(3, ch)
            self.attn = nn.ModuleList([CrossAttention(ch[2], cfg.heads, cfg.attn_dim, reduce=2),
                                       CrossAttention(ch[3], cfg.heads, cfg.attn_dim)])
        self.res = nn.Sequential(*[ResnetBlock(ch[-1]) for _ in range(cfg.res_blocks)])
        ups = [_conv(ch[i + 1], ch[i]) for i in range(len(ch) - 2, -1, -1)]
        self.ups = nn.ModuleList(ups)
        self.head = nn.Sequential(nn.Conv2d(ch[0], 3 * 4, 3, 1, 1), nn.PixelShuffle(2))
        nn.init.zeros_(self.head[0].weight)  # start as the identity on x (the composite)
        nn.init.zeros_(self.head[0].bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """Composite ``x`` and reference ``z`` (B, 3, H, W) -> restored face (B, 3, H, W)."""
        inp = torch.cat([x, z], 1) if self.mode == "concat" else x
        feats = self.enc_in(inp)
        if self.mode == "attention":
            rfeats = self.enc_ref(z)
            k0 = len(feats) - len(self.attn)
            for j, att in enumerate(self.attn):
                feats[k0 + j] = att(feats[k0 + j], rfeats[k0 + j])
        h = self.res(feats[-1])
        for up, skip in zip(self.ups, reversed(feats[:-1]), strict=True):
            h = up(F.interpolate(h, scale_factor=2.0, mode="nearest")) + skip
        return x + self.head(h)


def build_generator(cfg: RestoreConfig) -> nn.Module:
    """The generator of ``cfg.variant`` (``cyclegan``: the shared CycleGAN ResNet generator)."""
    if VARIANTS[cfg.variant][0] == "translation":
        return define_generator("resnet", in_ch=3, out_ch=3, ngf=cfg.ngf_translation, n_down=2,
                                n_blocks=cfg.translation_blocks, up="resize")
    return ReferenceRestorer(cfg)


def uses_reference(cfg: RestoreConfig) -> bool:
    """Whether the generator takes the reference image as a second input (ONNX input ``z``)."""
    return cfg.reference != "none"


class RestoreTrainer:
    """Generator, multi-scale discriminator, optimizers and one training step of a variant.

    Args:
        cfg: the variant's settings.
        lpips: a frozen LPIPS module (RGB inputs in [-1, 1]) or None when the variant has no
            LPIPS term (it is then also not computed for logging).
    """

    def __init__(self, cfg: RestoreConfig, lpips: nn.Module | None = None) -> None:
        self.cfg = cfg
        self.G = build_generator(cfg)
        self.D = define_discriminator("multiscale_patchgan", in_ch=6, ndf=cfg.ndf)
        self.gan = GANLoss(cfg.gan_mode)
        self.lpips = lpips if cfg.use_lpips else None
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=cfg.betas)

    @property
    def modules(self) -> dict[str, nn.Module]:
        """Modules to checkpoint."""
        return {"G": self.G, "D": self.D}

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers to checkpoint."""
        return {"G": self.opt_g, "D": self.opt_d}

    def generate(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """G's output for a batch (reference passed only to variants that take it)."""
        return self.G(x, z) if uses_reference(self.cfg) else self.G(x)

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One D and one G update on ``batch`` (x, z, y: (B, 3, H, W) in [-1, 1]); losses."""
        cfg, x, z, y = self.cfg, batch["x"], batch["z"], batch["y"]
        self.G.train()
        self.D.train()
        with autocast(cfg.bf16):
            fake = self.generate(x, z).float()
        # discriminator: real (x, y) vs fake (x, G) pairs, conditioned on the composite
        with autocast(cfg.bf16):
            d_real = self.D(torch.cat([x, y], 1))
            d_fake = self.D(torch.cat([x, fake.detach()], 1))
            loss_d = 0.5 * (self.gan(d_real, True) + self.gan(d_fake, False))
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.float().backward()
        self.opt_d.step()
        # generator
        with autocast(cfg.bf16):
            adv = self.gan(self.D(torch.cat([x, fake], 1)), True).float()
        l1 = F.l1_loss(fake, y)
        loss = cfg.lambda_adv * adv + cfg.lambda_l1 * l1
        out = {"d": loss_d.item(), "adv": adv.item(), "l1": l1.item()}
        if self.lpips is not None:
            with autocast(cfg.bf16):
                lp = self.lpips(fake.flip(-3), y.flip(-3)).float().mean()
            loss = loss + cfg.lambda_lpips * lp
            out["lpips"] = lp.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        out["g"] = loss.item()
        return out


def export_generator(generator: nn.Module, cfg: RestoreConfig, out_dir: str | Path,
                     card: dict[str, Any] | None = None) -> Path:
    """Write a deployable model folder: ``generator.safetensors``, ``model.onnx`` (inputs ``x``
    [and ``z``], output ``y``; (1, 3, size, size) in [-1, 1], BGR), ``config.json`` and the card
    facts in ``card.json``. The ONNX graph is checked against torch by ``export_onnx``."""
    from safetensors.torch import save_file  # noqa: PLC0415

    from revavatar.learning.export import export_onnx  # noqa: PLC0415

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    generator = generator.float().eval()
    sd = {k: v.detach().contiguous() for k, v in generator.state_dict().items()}
    save_file(sd, str(out / "generator.safetensors"))
    ex = torch.rand(1, 3, cfg.size, cfg.size) * 2 - 1
    names = ["x", "z"] if uses_reference(cfg) else ["x"]
    inputs = [ex, torch.rand_like(ex) * 2 - 1][: len(names)]
    export_onnx(generator, inputs, out / "model.onnx", names, ["y"], atol=2e-3)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    (out / "card.json").write_text(json.dumps(card or {}, indent=1))
    return out


#: what each variant is, for its model card
_VARIANT_TEXT: Final[dict[str, str]] = {
    "ours": "G(x, z): input and reference encoders, cross-attention at 1/8 and 1/16, ResNet "
            "blocks, skip decoder predicting a correction of the composite",
    "ours_no_ref": "ablation: the ours network without the reference encoder and attention, G(x)",
    "ours_concat": "ablation: the reference concatenated to the composite (6 channels into the "
                   "input encoder) instead of cross-attention",
    "ours_no_lpips": "ablation: the ours network trained without the LPIPS term",
    "cyclegan": "the paper's translation baseline: CycleGAN/pix2pix ResNet generator "
                "(c7s1-d-d-R-u-u-c7s1, reduced width) from composite to face, no reference",
}


def write_card(model_dir: str | Path) -> Path:
    """Render ``README.md`` (the model card) of an exported restorer from its JSON files."""
    from revavatar.learning.networks import count_parameters  # noqa: PLC0415

    d = Path(model_dir)
    card = json.loads((d / "card.json").read_text())
    cfg = RestoreConfig.from_dict(json.loads((d / "config.json").read_text()))
    loss = f"{cfg.lambda_adv} adv ({cfg.gan_mode}) + {cfg.lambda_l1} L1"
    if cfg.use_lpips:
        loss += f" + {cfg.lambda_lpips} LPIPS(alex)"
    lines = [
        f"# restore_{cfg.variant}", "",
        f"- What: {_VARIANT_TEXT[cfg.variant]}; {count_parameters(build_generator(cfg)):,} "
        "parameters (`revavatar.learning.restoration_model`, config.json).",
        f"- Loss: {loss}, against a 3-scale PatchGAN (pix2pixHD).",
        f"- Data: VR-Face build `{card.get('data')}` (train split; recipe in README), a random "
        "other frame of the same identity as reference during training.",
        f"- Training (run here): {card.get('steps')} steps, batch {card.get('batch')}, "
        f"{card.get('resolution')} px, Adam {cfg.lr}, {'bf16 autocast' if cfg.bf16 else 'fp32'}, "
        f"CPU threads: {card.get('threads', 'not recorded')}, wall {card.get('wall_time_s')} s. "
        f"Command: `{card.get('command')}`.",
        "- Metrics: `reports/restoration.md` (`revavatar eval restore`).",
        f"- Files: generator.safetensors, model.onnx "
        f"(input{'s x, z' if uses_reference(cfg) else ' x'}: (1,3,{cfg.size},{cfg.size}) BGR in "
        "[-1,1]; output y), config.json, card.json, losses.png.",
    ]
    (d / "README.md").write_text("\n".join(lines) + "\n")
    return d / "README.md"


def load_generator(model_dir: str | Path) -> tuple[nn.Module, RestoreConfig]:
    """Generator and config from a folder written by :func:`export_generator` (torch, eval)."""
    from safetensors.torch import load_file  # noqa: PLC0415

    d = Path(model_dir)
    cfg = RestoreConfig.from_dict(json.loads((d / "config.json").read_text()))
    g = build_generator(cfg)
    g.load_state_dict(load_file(str(d / "generator.safetensors")))
    return g.eval(), cfg
