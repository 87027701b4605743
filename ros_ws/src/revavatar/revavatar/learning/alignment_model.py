"""Learned aligners (paper section 4.1): one CycleGAN per region, and the auto-encoder ablation.

``cyclegan``: generator ``G`` (headset view -> frontal crop) and ``F`` (frontal -> view), 70x70
PatchGAN discriminators ``D_t`` (frontal crops) and ``D_v`` (views), least-squares GAN loss,
cycle (``F(G(v)) ~ v``, ``G(F(t)) ~ t``) and identity (``G(t) ~ t``, ``F(v) ~ v``) losses, as in
Zhu et al. 2017. The paper trains it unpaired; VR-Face gives us pairs, so ``G`` also gets a paired
L1 + LPIPS term (``lambda_l1``, ``lambda_lpips``; set both to 0 for the unpaired original).
``autoencoder``: the paper's ablation, a plain bottleneck auto-encoder trained on the same pairs
with L1 + LPIPS only.

Real time shapes the generator: the three crops must align in well under 20 ms on two CPU
threads (onnxruntime), so ``G`` is a ResNet generator sized to ~0.3-0.7 GMAC per crop (ngf 16,
two downsamplings, channel cap 48, 4 residual blocks) rather than CycleGAN's 11 M-parameter
ResNet-9. By default its input is the calibrated homography rectification of the frame
(``input_mode="rectified"``) and it is residual, so it learns the correction the plane
approximation needs (parallax of lids and eyeball, lens effects, IR, blur) instead of the whole
warp; see :class:`revavatar.learning.data.AlignmentPairs`.

``reference=True`` gives ``G`` (not ``F``) a second input, the enrolled wearer's crop of the
region (the DP the product enrolls), and its first input has the pixels the camera cannot see
filled from it (:func:`revavatar.core.alignment.enrollment_input`): the camera tells where the eye
looks and how the mouth moves, the DP what this face looks like where the camera is blind.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from revavatar.core.alignment import VIEW_TONES
from revavatar.core.canonical import EYE_SIDES
from revavatar.learning.networks import GANLoss, define_discriminator, define_generator
from revavatar.learning.ssim_loss import ssim
from revavatar.learning.trainer import autocast, update_average

if TYPE_CHECKING:
    import numpy as np

__all__ = ["KINDS", "AlignModelConfig", "AlignmentModel", "export_aligner", "load_generator",
           "iris_centre", "lpips_input", "make_job", "save_job",
           "write_card"]

#: model kinds (the ``method`` a trained aligner reports)
KINDS: Final = ("cyclegan", "autoencoder")


@dataclass(frozen=True)
class AlignModelConfig:
    """Architecture and loss weights of one region's aligner (saved with every checkpoint)."""

    region: str
    kind: str = "cyclegan"
    channels: int = 1  # 1 for the IR eye cameras, 3 for the colour lower-face camera
    crop_size: tuple[int, int] = (128, 96)  # (w, h)
    input_mode: str = "rectified"
    ngf: int = 16
    n_down: int = 2
    n_blocks: int = 4
    max_ch: int = 48
    residual: bool = True
    tone: bool = False  # global gain/offset head on the residual's skip path (networks.py)
    reference: bool = False  # G also sees the enrolled wearer's crop (module docstring)
    ref_blend: bool = False  # G's skip path mixes in the reference per pixel (ResnetGenerator)
    blend_eye: bool = True  # False: the blend stays out of the eye (CanonicalLayout.eye_weight)
    view_tone: str = "camera"  # the view's tone as G reads it (core.alignment.toned_view)
    ae_ngf: int = 24  # autoencoder width and depth (bottleneck at 1/16)
    ae_down: int = 4
    ndf: int = 16
    lr: float = 2e-4
    beta1: float = 0.5
    lambda_gan: float = 1.0
    lambda_cycle: float = 10.0
    lambda_idt: float = 0.5  # times lambda_cycle, as in CycleGAN
    lambda_l1: float = 10.0
    lambda_lpips: float = 1.0
    lambda_focus: float = 0.0  # extra L1 on the eye opening (data.focus_mask), paired term
    lambda_iris: float = 0.0  # distance of the dark-mass centres on the eye opening (iris_centre)
    iris_tau: float = 0.1  # softness of iris_centre (tensor units, [-1, 1] range)
    lambda_ssim: float = 0.0  # 1 - SSIM (luma, the eval's definition: learning.ssim_loss)
    lambda_gaze: float = 0.0  # iris-offset gap (px) read by the eye-landmark critic (eyes only)
    gaze_critic: str | None = None  # folder of that critic (learning.eye_landmarks)
    gan_mode: str = "lsgan"
    bf16: bool = True
    ema: float = 0.0  # decay of a moving average of G's weights, the generator exported; 0 off

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            msg = f"unknown aligner kind {self.kind!r}; expected one of {', '.join(KINDS)}"
            raise ValueError(msg)
        if self.lambda_gaze > 0 and (self.region not in EYE_SIDES or not self.gaze_critic):
            msg = "the gaze term reads eye landmarks: it needs an eye region and a gaze critic"
            raise ValueError(msg)
        if self.view_tone not in VIEW_TONES or (self.view_tone != "camera"
                                                 and not self.reference) or (
                self.view_tone == "enrollment-skin" and self.region not in EYE_SIDES):
            msg = (f"view_tone {self.view_tone!r}: expected one of {', '.join(VIEW_TONES)}; a "
                   "tone other than the camera's is the reference's and needs reference=True, "
                   "the skin's an eye region")
            raise ValueError(msg)
        if not 0.0 <= self.ema < 1.0:
            msg = f"ema is a decay in [0, 1), got {self.ema}"
            raise ValueError(msg)
        if not self.blend_eye and not (self.ref_blend and self.region in EYE_SIDES):
            msg = "blend_eye=False keeps the reference blend off an eye: it needs an eye region "\
                  "and ref_blend"
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["crop_size"] = list(self.crop_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AlignModelConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        d = dict(d)
        d["crop_size"] = tuple(d.get("crop_size", (128, 96)))
        return cls(**d)

    def with_(self, **kw: Any) -> AlignModelConfig:
        """A copy with some fields changed."""
        return replace(self, **kw)


def iris_centre(img: torch.Tensor, focus: torch.Tensor, tau: float) -> torch.Tensor:
    """(N, 2) soft centre (x, y px) of the dark mass inside the eye opening of (N, C, H, W) crops.

    Gaze is the iris's place between the eye corners; a misplaced iris changes few pixels, which
    crop-wide (and even opening-wide) L1 barely weighs. In the opening (``focus``, the truth's lid
    hull) the iris and pupil are the darkest pixels, so a softmax of -brightness / ``tau`` there
    puts nearly all weight on them, and its centre of mass is a differentiable iris position.
    Computed the same way on the aligned crop and the truth, it needs no landmark model.
    """
    gray = img.mean(dim=1)
    n, h, w = gray.shape
    logits = -gray / tau + torch.log(focus[:, 0].clamp_min(1e-6))
    weights = torch.softmax(logits.reshape(n, -1), dim=1).reshape(n, h, w)
    ys = torch.arange(h, dtype=weights.dtype, device=weights.device)
    xs = torch.arange(w, dtype=weights.dtype, device=weights.device)
    return torch.stack([(weights.sum(1) * xs).sum(1), (weights.sum(2) * ys).sum(1)], dim=1)


def lpips_input(x: torch.Tensor) -> torch.Tensor:
    """Our (N, 1|3, H, W) BGR/gray tensors -> the (N, 3, H, W) RGB LPIPS expects."""
    return x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x.flip(1)


class AlignmentModel(nn.Module):
    """Networks, optimizers and one training step of a region's aligner.

    Args:
        config: architecture and loss weights.
        lpips: a frozen LPIPS module (``load_lpips("alex")``), or None to drop the LPIPS term
            (tests).
    """

    def __init__(self, config: AlignModelConfig, lpips: nn.Module | None = None) -> None:
        super().__init__()
        self.config = c = config
        if c.kind == "cyclegan":
            gen = {"ngf": c.ngf, "n_down": c.n_down, "n_blocks": c.n_blocks, "max_ch": c.max_ch,
                   "residual": c.residual, "tone": c.tone, "out_ch": c.channels}
            self.G = define_generator("resnet", in_ch=self.g_channels, blend=c.ref_blend,
                                      blend_mask=self._blend_mask(), **gen)
            self.F = define_generator("resnet", in_ch=c.channels, **gen)
            self.D_t = define_discriminator("patchgan70", in_ch=c.channels, ndf=c.ndf)
            self.D_v = define_discriminator("patchgan70", in_ch=c.channels, ndf=c.ndf)
        else:
            self.G = define_generator("autoencoder", in_ch=self.g_channels, out_ch=c.channels,
                                      ngf=c.ae_ngf, n_down=c.ae_down)
        # the exported generator: a moving average of G's weights (0 = G itself). An adversarial
        # game keeps G moving, and its gaze figure swings from one checkpoint to the next by more
        # than the differences being measured; the average sits in the middle of that swing
        self.G_ema = copy.deepcopy(self.G).requires_grad_(False) if c.ema > 0 else None
        self.lpips = lpips
        self.critic = None
        if c.lambda_gaze > 0:  # frozen, not in trainable(): a fixed yardstick, not a player
            from revavatar.learning.eye_landmarks import load_eye_landmarks  # noqa: PLC0415

            self.critic = load_eye_landmarks(c.gaze_critic)
        self.gan = GANLoss(c.gan_mode)
        betas = (c.beta1, 0.999)
        if c.kind == "cyclegan":
            self.opt_g = torch.optim.Adam([*self.G.parameters(), *self.F.parameters()], c.lr,
                                          betas=betas)
            self.opt_d = torch.optim.Adam([*self.D_t.parameters(), *self.D_v.parameters()],
                                          c.lr, betas=betas)
        else:
            self.opt_g = torch.optim.Adam(self.G.parameters(), c.lr, betas=(0.9, 0.999))

    def _blend_mask(self) -> np.ndarray | None:
        """Where G's reference blend may act: everywhere, or (``blend_eye`` False) not on the
        eye, whose gaze must come from the camera."""
        c = self.config
        if not c.ref_blend or c.blend_eye:
            return None
        import cv2  # noqa: PLC0415

        from revavatar.core.canonical import CanonicalLayout  # noqa: PLC0415

        eye = CanonicalLayout().eye_weight(c.region)
        if eye.shape[::-1] != tuple(c.crop_size):
            eye = cv2.resize(eye, tuple(c.crop_size), interpolation=cv2.INTER_AREA)
        return 1.0 - eye

    @property
    def g_channels(self) -> int:
        """Input channels of ``G``: the view's, twice over with the enrolled reference."""
        return self.config.channels * (2 if self.config.reference else 1)

    def _g_in(self, x: torch.Tensor, reference: torch.Tensor | None) -> torch.Tensor:
        """``G``'s input: ``x``, with the reference crop stacked behind it for reference models."""
        if not self.config.reference:
            return x
        if reference is None:
            msg = "this aligner is conditioned on the enrolled wearer: pass the reference crops"
            raise ValueError(msg)
        return torch.cat([x, reference.to(x.dtype)], dim=1)

    # -- checkpoint plumbing -----------------------------------------------------------------
    def trainable(self) -> dict[str, nn.Module]:
        """The modules a checkpoint stores (LPIPS is frozen and loaded separately)."""
        names = ("G", "F", "D_t", "D_v") if self.config.kind == "cyclegan" else ("G",)
        names += ("G_ema",) if self.G_ema is not None else ()
        return {n: getattr(self, n) for n in names}

    @property
    def deployed(self) -> nn.Module:
        """The generator that is validated and exported: the moving average when kept."""
        return self.G if self.G_ema is None else self.G_ema

    def reset_ema(self) -> None:
        """Start the moving average at G's weights (a fine-tune of a run that kept none)."""
        if self.G_ema is not None:
            self.G_ema.load_state_dict(self.G.state_dict())

    def _update_ema(self) -> None:
        if self.G_ema is not None:
            update_average(self.G_ema, self.G, self.config.ema)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers a checkpoint stores."""
        opts = {"opt_g": self.opt_g}
        if self.config.kind == "cyclegan":
            opts["opt_d"] = self.opt_d
        return opts

    def set_lr(self, lr: float) -> None:
        """Set the learning rate of every optimizer (linear decay in the trainer)."""
        for opt in self.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = lr

    # -- losses ------------------------------------------------------------------------------
    def _paired(self, fake: torch.Tensor, target: torch.Tensor,
                focus: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        c = self.config
        err = (fake.float() - target).abs()
        out = {"l1": err.mean()}
        if focus is not None and c.lambda_focus > 0:  # mean error on the eye opening
            w = focus.expand_as(err)
            out["focus_l1"] = (err * w).sum() / w.sum().clamp_min(1.0)
        if focus is not None and c.lambda_iris > 0:
            moved = iris_centre(fake.float(), focus, c.iris_tau)
            truth = iris_centre(target, focus, c.iris_tau).detach()
            out["iris_px"] = (moved - truth).norm(dim=1).mean()
        if self.critic is not None:
            out["gaze_px"] = self._gaze_gap(fake, target)
        if self.lpips is not None and c.lambda_lpips > 0:
            out["lpips"] = self.lpips(lpips_input(fake), lpips_input(target)).mean()
        if c.lambda_ssim > 0:
            out["dssim"] = 1.0 - ssim(fake, target).mean()
        return out

    def _gaze_gap(self, fake: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean distance (px) between the critic's iris offsets on ``fake`` and ``target``.

        Both crops go through the same critic, so its own bias cancels; it runs in fp32 because
        the offsets that matter are fractions of a pixel.
        """
        from revavatar.learning.eye_landmarks import gaze_offset  # noqa: PLC0415

        with torch.autocast("cpu", enabled=False):
            moved = gaze_offset(self.critic.points(fake.float(), self.config.region))
            truth = gaze_offset(self.critic.points(target.float(), self.config.region)).detach()
        return (moved - truth).norm(dim=-1).mean()

    def _paired_loss(self, terms: dict[str, torch.Tensor]) -> torch.Tensor | float:
        c = self.config
        return (c.lambda_l1 * terms.get("l1", 0.0) + c.lambda_lpips * terms.get("lpips", 0.0)
                + c.lambda_focus * terms.get("focus_l1", 0.0)
                + c.lambda_iris * terms.get("iris_px", 0.0)
                + c.lambda_gaze * terms.get("gaze_px", 0.0)
                + c.lambda_ssim * terms.get("dssim", 0.0))

    def forward(self, view: torch.Tensor, reference: torch.Tensor | None = None) -> torch.Tensor:
        """Aligned crop for a batch of model inputs (the deployed path)."""
        return self.deployed(self._g_in(view, reference))

    def train_step(self, view: torch.Tensor, target: torch.Tensor,
                   focus: torch.Tensor | None = None,
                   reference: torch.Tensor | None = None) -> dict[str, float]:
        """One optimisation step on a batch; returns the losses (floats).

        ``focus``: (N, 1, H, W) eye-opening weights (:func:`revavatar.learning.data.focus_mask`)
        for the ``lambda_focus`` term; ignored when that weight is 0. ``reference``: the enrolled
        wearer's crops, required by (and only used by) ``reference`` models.
        """
        self.train()
        if self.config.kind == "autoencoder":
            return self._step_ae(view, target, focus, reference)
        return self._step_cyclegan(view, target, focus, reference)

    def _step_ae(self, view: torch.Tensor, target: torch.Tensor, focus: torch.Tensor | None,
                 reference: torch.Tensor | None) -> dict[str, float]:
        c = self.config
        with autocast(c.bf16):
            fake = self.G(self._g_in(view, reference))
            terms = self._paired(fake, target, focus)
        loss = self._paired_loss(terms)
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self._update_ema()
        return {"total": float(loss.detach()), **{k: float(v.detach()) for k, v in terms.items()}}

    def _step_cyclegan(self, view: torch.Tensor, target: torch.Tensor,
                       focus: torch.Tensor | None,
                       reference: torch.Tensor | None) -> dict[str, float]:
        c = self.config
        lam_idt = c.lambda_cycle * c.lambda_idt
        discs = (self.D_t, self.D_v)
        for d in discs:
            d.requires_grad_(False)
        with autocast(c.bf16):
            fake_t = self.G(self._g_in(view, reference))
            fake_v = self.F(target)
            rec_v = self.F(fake_t)
            rec_t = self.G(self._g_in(fake_v, reference))
            g_gan = self.gan(self.D_t(fake_t), True, False) + self.gan(self.D_v(fake_v), True,
                                                                       False)
            cyc = F.l1_loss(rec_v.float(), view) + F.l1_loss(rec_t.float(), target)
            terms: dict[str, torch.Tensor] = {"g_gan": g_gan, "cycle": cyc}
            if lam_idt > 0:
                terms["idt"] = (F.l1_loss(self.G(self._g_in(target, reference)).float(), target)
                                + F.l1_loss(self.F(view).float(), view))
            if c.lambda_l1 > 0 or c.lambda_lpips > 0 or c.lambda_focus > 0 or c.lambda_iris > 0 \
                    or c.lambda_ssim > 0 or c.lambda_gaze > 0:
                terms.update(self._paired(fake_t, target, focus))
        loss_g = (c.lambda_gan * g_gan + c.lambda_cycle * cyc + lam_idt * terms.get("idt", 0.0)
                  + self._paired_loss(terms))
        self.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_g.step()
        self._update_ema()
        for d in discs:
            d.requires_grad_(True)
        with autocast(c.bf16):
            d_t = 0.5 * (self.gan(self.D_t(target), True) + self.gan(self.D_t(fake_t.detach()),
                                                                      False))
            d_v = 0.5 * (self.gan(self.D_v(view), True) + self.gan(self.D_v(fake_v.detach()),
                                                                    False))
        loss_d = d_t + d_v
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        out = {"total": float(loss_g.detach()), "d": float(loss_d.detach())}
        out.update({k: float(v.detach()) for k, v in terms.items()})
        return out

    @torch.no_grad()
    def evaluate(self, view: torch.Tensor, target: torch.Tensor,
                 reference: torch.Tensor | None = None) -> dict[str, float]:
        """Paired L1 (and LPIPS) of ``G`` on a batch, in eval mode, fp32."""
        self.eval()
        fake = self(view, reference)
        return {k: float(v) for k, v in self._paired(fake, target).items()}


class _ReferenceInputs(nn.Module):
    """``G`` of a reference model with its two inputs named apart in the ONNX graph."""

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        self.g = g

    def forward(self, view: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) view and reference crops -> (N, C, H, W) aligned crops."""
        return self.g(torch.cat([view, reference], dim=1))


def export_aligner(model: AlignmentModel, out: str | Path, meta: dict[str, Any]) -> Path:
    """Write the deployable aligner: ``weights.safetensors`` (G only), ``model.onnx`` (input
    ``view``, and ``reference`` for reference models; output ``aligned``; dynamic batch; checked
    against torch), ``card.json`` and ``README.md`` (the model card: data, resolution, steps,
    wall time, command, metrics)."""
    from safetensors.torch import save_file  # noqa: PLC0415

    from revavatar.learning.export import export_onnx  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    c = model.config
    g = model.deployed.eval()
    save_file({k: v.detach().contiguous() for k, v in g.state_dict().items()},
              str(out / "weights.safetensors"))
    w, h = c.crop_size
    example = torch.zeros(1, c.channels, h, w).uniform_(-1, 1)
    if c.reference:
        diff = export_onnx(_ReferenceInputs(g), (example, torch.rand_like(example) * 2 - 1),
                           out / "model.onnx", ["view", "reference"], ["aligned"])
    else:
        diff = export_onnx(g, example, out / "model.onnx", ["view"], ["aligned"])
    card = {"method": c.kind, "region": c.region, "config": c.to_dict(),
            "params_G": sum(p.numel() for p in g.parameters()), "onnx_max_abs_diff": diff,
            **meta}
    # metrics belong to the weights they were measured on: a new export starts without them
    # (`revavatar eval align --update-cards` writes them, with the step)
    (out / "card.json").write_text(json.dumps(card, indent=1))
    write_card(out)
    return out


def load_generator(model_dir: str | Path) -> tuple[nn.Module, AlignModelConfig]:
    """The torch generator of an exported aligner (for benchmarks and tests), in eval mode.

    Raises:
        ModelLoadError: card or weights missing or not fitting the architecture.
    """
    from safetensors.torch import load_file  # noqa: PLC0415

    from revavatar.errors import ModelLoadError  # noqa: PLC0415

    d = Path(model_dir)
    try:
        card = json.loads((d / "card.json").read_text())
        config = AlignModelConfig.from_dict(card["config"])
        model = AlignmentModel(config)
        model.G.load_state_dict(load_file(str(d / "weights.safetensors")), strict=True)
    except (OSError, KeyError, ValueError, RuntimeError) as err:
        msg = f"{d}: cannot load the aligner ({type(err).__name__}: {err})"
        raise ModelLoadError(msg) from err
    return model.G.eval(), config


def write_card(out: str | Path) -> Path:
    """Render ``README.md`` (the model card) from ``card.json``."""
    out = Path(out)
    card = json.loads((out / "card.json").read_text())
    c = card["config"]
    lines = [
        f"# {card['method']} aligner: {card['region']}", "",
        f"- Task: headset camera frame -> frontal canonical `{card['region']}` crop "
        f"({c['crop_size'][0]}x{c['crop_size'][1]} px at canonical layout 256, "
        f"{'1 channel (IR, gray)' if c['channels'] == 1 else '3 channels (BGR)'}).",
        f"- Input: {c['input_mode']} (rectified = calibrated homography grid of the headset "
        "YAML applied first; the network learns the residual correction)"
        + ("; plus the enrolled wearer's crop of the region (input `reference`), which also "
           "fills the pixels the camera cannot see" if c.get("reference") else "")
        + ("; the view read in the enrollment crop's tone ("
           + ("a gain and gamma fitted on the skin" if c.get("view_tone") == "enrollment-skin"
              else "a histogram match over the crop")
           + ", `core.alignment.toned_view`)" if c.get("view_tone", "camera") != "camera" else "")
        + ".",
        f"- Architecture: {_arch(c)}; G has {card['params_G']:,} parameters.",
        f"- Losses: {_losses(c)}.",
        f"- Data: VR-Face build `{card.get('data')}`, train split "
        f"({card.get('train_samples')} samples"
        f"{': its own eye and the other eye mirrored' if card.get('mirror_eyes') else ''}), "
        "identity-disjoint val/test"
        + (f"; the enrolled surface is the mean shape of {card['enroll_frames']} frames of the "
           "wearer" if int(card.get("enroll_frames") or 1) > 1 else "") + ".",
        f"- Training: {card.get('steps')} steps, batch {card.get('batch')}, Adam lr {c['lr']} "
        f"({_schedule(card)}), CPU {card.get('threads')} threads, "
        f"{'bf16 autocast' if c['bf16'] else 'fp32'}, wall time {card.get('wall_s')} s"
        + (f"; the weights are a moving average of G's (decay {c['ema']:g} per step)"
           if c.get("ema") else "") + ".",
        *([f"- Fine-tuned from `{card['fine_tuned_from']}` (its weights and step, a fresh Adam; "
           "the learning rate follows the schedule above)."]
          if card.get("fine_tuned_from") else []),
        *([f"- Provenance: {card['provenance']}"] if card.get("provenance") else []),
        f"- Command: `{card.get('command')}`",
        f"- Files: `weights.safetensors` (G{', averaged' if c.get('ema') else ''}), "
        "`model.onnx` (opset 17, input `view`"
        f"{' and `reference`' if c.get('reference') else ''}, output "
        f"`aligned`, [-1, 1]; max |ONNX - torch| {card.get('onnx_max_abs_diff', 0):.2g}), "
        "`card.json`, `losses.png`.",
    ]
    if card.get("metrics"):
        lines += ["", "## Metrics (test split, `revavatar eval align`)", "", "```json",
                  json.dumps(card["metrics"], indent=1), "```"]
    else:
        lines += ["", "Not evaluated yet: `revavatar eval align --data BUILD --update-cards`."]
    (out / "README.md").write_text("\n".join(lines) + "\n")
    return out / "README.md"


def _schedule(card: dict[str, Any]) -> str:
    origin = int(card.get("lr_origin") or 0)
    if not origin:
        return "linear decay over the second half"
    return (f"schedule restarted at step {origin}: constant, then linear decay over the second "
            f"half of steps {origin}-{card.get('steps_planned')}")


def _arch(c: dict[str, Any]) -> str:
    if c["kind"] == "autoencoder":
        return (f"plain conv auto-encoder, ngf {c['ae_ngf']}, {c['ae_down']} stride-2 levels, "
                "no skips")
    return (f"ResNet generator ngf {c['ngf']}, {c['n_down']} downsamplings, {c['n_blocks']} "
            f"residual blocks, channel cap {c['max_ch']}, residual output {c['residual']}"
            f"{', global tone head (gain/offset)' if c.get('tone') else ''}"
            f"{', per-pixel reference blend on the skip path' if c.get('ref_blend') else ''}"
            f"{' (not on the eye)' if c.get('ref_blend') and not c.get('blend_eye', True) else ''}; "
            f"70x70 PatchGAN ndf {c['ndf']} (x2, one per domain)")


def _losses(c: dict[str, Any]) -> str:
    extra = (f" + {c['lambda_focus']:g} L1 on the eye opening (landmark mask)"
             if c.get("lambda_focus") else "")
    extra += (f" + {c['lambda_iris']:g} x iris-centre distance (px; dark-mass centre on the "
              f"opening, tau {c.get('iris_tau', 0.1):g})" if c.get("lambda_iris") else "")
    extra += f" + {c['lambda_ssim']:g} x (1 - SSIM)" if c.get("lambda_ssim") else ""
    extra += (f" + {c['lambda_gaze']:g} x iris-offset gap (px; eye-landmark critic "
              f"`{c.get('gaze_critic')}`)" if c.get("lambda_gaze") else "")
    if c["kind"] == "autoencoder":
        return f"{c['lambda_l1']} L1 + {c['lambda_lpips']} LPIPS(alex){extra}, paired"
    return (f"{c['gan_mode']} GAN x{c['lambda_gan']}, cycle x{c['lambda_cycle']}, identity "
            f"x{c['lambda_cycle'] * c['lambda_idt']}, plus paired {c['lambda_l1']} L1 + "
            f"{c['lambda_lpips']} LPIPS(alex){extra} on G (the paper is unpaired; VR-Face has "
            "pairs)")


# -- training jobs of `revavatar train align` (kept here so train_align.py stays a short loop)
def make_job(args: Any, region: str, kind: str, data: Any,
         lpips: torch.nn.Module) -> dict:
    """One model's training state for ``train align`` (resumed from its checkpoint if asked)."""
    from revavatar.learning.data import AlignmentPairs  # noqa: PLC0415
    from revavatar.learning.trainer import Checkpointer, LossLog, use_bf16  # noqa: PLC0415

    name = f"{'align_ae_' if kind == 'autoencoder' else 'align_'}{region}"
    config = AlignModelConfig(region=region, kind=kind, channels=data.channels,
                              crop_size=data.crop_size, input_mode=args.input_mode,
                              bf16=use_bf16(not args.no_bf16),
                              tone=kind == "cyclegan" and getattr(args, "tone", False),
                              reference=bool(getattr(args, "reference", False)),
                              ref_blend=kind == "cyclegan" and getattr(args, "ref_blend", False),
                              blend_eye=not (kind == "cyclegan"
                                             and getattr(args, "no_blend_eye", False)),
                              view_tone=getattr(args, "view_tone", "camera"),
                              ngf=int(getattr(args, "ngf", AlignModelConfig.ngf)),
                              max_ch=int(getattr(args, "max_ch", AlignModelConfig.max_ch)),
                              lambda_cycle=float(getattr(args, "lambda_cycle",
                                                         AlignModelConfig.lambda_cycle)),
                              lambda_gan=float(getattr(args, "lambda_gan",
                                                       AlignModelConfig.lambda_gan)),
                              lambda_focus=float(getattr(args, "lambda_focus", 0.0)),
                              lambda_iris=float(getattr(args, "lambda_iris", 0.0)),
                              lambda_ssim=float(getattr(args, "lambda_ssim", 0.0)),
                              lambda_gaze=float(getattr(args, "lambda_gaze", 0.0)),
                              gaze_critic=(getattr(args, "gaze_critic", None)
                                           if getattr(args, "lambda_gaze", 0.0) else None),
                              lr=float(getattr(args, "lr", None) or AlignModelConfig.lr),
                              ema=float(getattr(args, "ema", 0.0)))
    job = {"name": name, "data": data, "model": AlignmentModel(config, lpips=lpips),
           "ckpt": Checkpointer(Path(args.ckpt_root) / name), "start": 0, "wall": 0.0,
           "val": AlignmentPairs(args.data, region, "val", input_mode=args.input_mode, limit=32,
                                 reference=config.reference, view_tone=config.view_tone,
                                 enroll_frames=int(getattr(args, "enroll_frames", 1)))}
    if args.resume and job["ckpt"].latest() is not None:
        info = job["ckpt"].load(job["model"].trainable(), job["model"].optimizers())
        job["start"], job["wall"] = info["step"], float(info["extra"].get("wall_s", 0.0))
    elif getattr(args, "init_from", None):  # fine-tune (maybe grown): earlier weights and step
        earlier = Checkpointer(Path(args.init_from) / name)
        stored = {k: m for k, m in job["model"].trainable().items()
                  if k != "G_ema" or earlier.has_module(k)}
        job["start"] = earlier.load_weights(stored, new=("tone.",))
        if "G_ema" not in stored:  # the earlier run kept no average: it starts at G
            job["model"].reset_ema()
        path = earlier.latest()
        extra = json.loads((path / "config.json").read_text()).get("extra") or {}
        job["init_from"], job["wall"] = str(path), float(extra.get("wall_s", 0.0))
        for src in ("losses.csv", "val.csv"):  # the curves go on from the earlier run's
            if (earlier.dir / src).is_file() and not (job["ckpt"].dir / src).is_file():
                shutil.copy2(earlier.dir / src, job["ckpt"].dir / src)
    job["log"], job["vlog"] = LossLog(job["ckpt"].dir), LossLog(job["ckpt"].dir, "val.csv")
    if job["start"]:
        job["log"].truncate(job["start"])
        job["vlog"].truncate(job["start"])
    return job


def save_job(args: Any, job: dict, step: int) -> None:
    """Validate, checkpoint, plot and export one model of ``train align`` at ``step``."""
    model, vb = job["model"], job["val"].batch(range(len(job["val"])))
    job["vlog"].append(step, **model.evaluate(vb["view"], vb["target"], vb.get("reference")))
    extra = {"config": model.config.to_dict(), "wall_s": job["wall"]}
    job["ckpt"].save(step, model.trainable(), model.optimizers(), extra=extra)
    job["log"].plot(Path(args.out) / job["name"] / "losses.png")
    region = args.region if isinstance(args.region, str) else ",".join(args.region)
    if region == "left_eye,right_eye,lower_face":
        region = "all"
    cmd = (f"revavatar train align --region {region} --kind {args.kind} --data {args.data} "
           f"--steps {args.steps} --batch {args.batch} --input-mode {args.input_mode} "
           f"--threads {args.threads}" + (" --no-bf16" if args.no_bf16 else "")
           + (" --tone" if model.config.tone else "")
           + (" --reference" if model.config.reference else "")
           + (" --ref-blend" if model.config.ref_blend else "")
           + (" --no-blend-eye" if not model.config.blend_eye else "")
           + (" --mirror-eyes" if getattr(args, "mirror_eyes", False) else "")
           + (f" --enroll-frames {args.enroll_frames}"
              if getattr(args, "enroll_frames", 1) != 1 else "")
           + (f" --view-tone {model.config.view_tone}" if model.config.view_tone != "camera"
              else "")
           + (f" --ngf {model.config.ngf}" if model.config.ngf != AlignModelConfig.ngf else "")
           + (f" --max-ch {model.config.max_ch}"
              if model.config.max_ch != AlignModelConfig.max_ch else "")
           + (f" --lambda-cycle {model.config.lambda_cycle:g}"
              if model.config.lambda_cycle != AlignModelConfig.lambda_cycle else "")
           + (f" --lambda-gan {model.config.lambda_gan:g}"
              if model.config.lambda_gan != AlignModelConfig.lambda_gan else "")
           + (f" --lambda-focus {model.config.lambda_focus:g}" if model.config.lambda_focus else "")
           + (f" --lambda-iris {model.config.lambda_iris:g}" if model.config.lambda_iris else "")
           + (f" --lambda-ssim {model.config.lambda_ssim:g}" if model.config.lambda_ssim else "")
           + (f" --lambda-gaze {model.config.lambda_gaze:g} --gaze-critic "
              f"{model.config.gaze_critic}" if model.config.lambda_gaze else "")
           + (f" --ema {model.config.ema:g}" if model.config.ema else "")
           + (f" --lr {model.config.lr:g}" if model.config.lr != AlignModelConfig.lr else "")
           + (f" --lr-origin {args.lr_origin}" if getattr(args, "lr_origin", 0) else "")
           + (f" --init-from {args.init_from}" if job.get("init_from") else ""))
    export_aligner(model, Path(args.out) / job["name"], {
        "data": str(Path(args.data).resolve()), "train_samples": len(job["data"]),
        "mirror_eyes": bool(getattr(args, "mirror_eyes", False)),
        "enroll_frames": int(getattr(args, "enroll_frames", 1)),
        "steps": step, "steps_planned": args.steps, "batch": args.batch,
        "lr_origin": int(getattr(args, "lr_origin", 0)),
        "wall_s": round(job["wall"], 1), "threads": args.threads, "seed": args.seed,
        "checkpoints": str(job["ckpt"].dir), "val_last": job["vlog"].rows()[-1],
        "fine_tuned_from": job.get("init_from"),
        "command": cmd})
