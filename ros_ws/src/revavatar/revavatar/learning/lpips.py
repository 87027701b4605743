"""LPIPS perceptual distance (Zhang et al. 2018, v0.1) as a frozen torch module, without torchvision.

The `lpips` package builds its backbone through ``torchvision.models`` and downloads the ImageNet
weights at run time, neither of which this project can use (torchvision breaks beside our torch CPU
wheel; nothing downloads at run time). This module re-states the same maths with plain ``torch.nn``:

1. the scaling layer ``(x - shift) / scale`` on inputs in [-1, 1],
2. the backbone taps (AlexNet relu1..relu5, VGG16 relu1_2, relu2_2, relu3_3, relu4_3, relu5_3),
   built as a ``features`` Sequential with torchvision's layer indices so the weights load by name,
3. channel unit-normalisation, squared difference, a learned 1x1 conv per tap (no bias),
4. spatial mean and sum over taps.

Weights come from :mod:`revavatar.learning.lpips_weights` (converted once, cached as safetensors).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "LPIPS",
    "LPIPS_SCALE",
    "LPIPS_SHIFT",
    "NETS",
    "NetSpec",
    "image_to_tensor",
    "lpips_distance",
    "normalize_channels",
]

#: Input scaling constants of LPIPS v0.1 (per RGB channel, for inputs in [-1, 1]).
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

_M = "M"  # max-pool marker in the layer configs


@dataclass(frozen=True)
class NetSpec:
    """One backbone: its torchvision ``features`` layout and where LPIPS taps it.

    Attributes:
        name: registry key ("alex" | "vgg").
        convs: conv layers in order as (in_ch, out_ch, kernel, stride, padding).
        layout: torchvision ``features`` order: "C" conv (followed by "R" ReLU) or "M" max-pool.
        pool: max-pool (kernel, stride) of this architecture.
        taps: exclusive end indices into ``features`` after which a tap is read (the lpips
            package's slice boundaries).
        channels: channels of each tap (the 1x1 linear layers' inputs).
    """

    name: str
    convs: tuple[tuple[int, int, int, int, int], ...]
    layout: tuple[str, ...]
    pool: tuple[int, int]
    taps: tuple[int, ...]
    channels: tuple[int, ...]

    def conv_indices(self) -> tuple[int, ...]:
        """Indices of the conv layers inside ``features`` (torchvision numbering)."""
        return tuple(i for i, kind in enumerate(self.layout) if kind == "C")


def _vgg16_spec() -> NetSpec:
    cfg: list[int | str] = [64, 64, _M, 128, 128, _M, 256, 256, 256, _M, 512, 512, 512, _M, 512, 512, 512, _M]
    convs: list[tuple[int, int, int, int, int]] = []
    layout: list[str] = []
    cin = 3
    for v in cfg:
        if v == _M:
            layout.append("M")
        else:
            convs.append((cin, int(v), 3, 1, 1))
            layout += ["C", "R"]
            cin = int(v)
    return NetSpec(
        name="vgg",
        convs=tuple(convs),
        layout=tuple(layout),
        pool=(2, 2),
        taps=(4, 9, 16, 23, 30),
        channels=(64, 128, 256, 512, 512),
    )


#: Explicit backbone registry (torchvision.models.alexnet / vgg16 ``features``).
NETS: dict[str, NetSpec] = {
    "alex": NetSpec(
        name="alex",
        convs=(
            (3, 64, 11, 4, 2),
            (64, 192, 5, 1, 2),
            (192, 384, 3, 1, 1),
            (384, 256, 3, 1, 1),
            (256, 256, 3, 1, 1),
        ),
        layout=("C", "R", "M", "C", "R", "M", "C", "R", "C", "R", "C", "R", "M"),
        pool=(3, 2),
        taps=(2, 5, 8, 10, 12),
        channels=(64, 192, 384, 256, 256),
    ),
    "vgg": _vgg16_spec(),
}


def _spec(net: str) -> NetSpec:
    if net not in NETS:
        msg = f"unknown LPIPS net {net!r}; valid: {sorted(NETS)}"
        raise ValueError(msg)
    return NETS[net]


def _build_features(spec: NetSpec) -> nn.Sequential:
    layers: list[nn.Module] = []
    convs = iter(spec.convs)
    for kind in spec.layout:
        if kind == "C":
            cin, cout, k, s, p = next(convs)
            layers.append(nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p))
        elif kind == "R":
            # Not in-place: LPIPS is used as a training loss, gradients flow to the input image.
            layers.append(nn.ReLU(inplace=False))
        else:
            layers.append(nn.MaxPool2d(kernel_size=spec.pool[0], stride=spec.pool[1]))
    return nn.Sequential(*layers)


def normalize_channels(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalise each pixel's feature vector (lpips.normalize_tensor, eps outside the sqrt)."""
    norm = torch.sqrt(torch.sum(feat * feat, dim=1, keepdim=True))
    return feat / (norm + eps)


class LPIPS(nn.Module):
    """Frozen LPIPS v0.1 distance between two image batches.

    The module never trains: parameters have ``requires_grad=False`` and :meth:`train` keeps it in
    eval mode (it has no dropout or batch-norm, so the mode only matters for code that checks it).
    Gradients still flow to the *inputs*, which is what a perceptual loss needs.

    Under ``torch.autocast`` (e.g. bfloat16 on CPU) the backbone convs run in the low precision
    and the head (normalisation, squared difference, 1x1 layers, means) runs in float32, so the
    distance keeps about 3 significant digits while the expensive part gets faster.

    Args:
        net: backbone key of :data:`NETS` ("alex" | "vgg").

    Example:
        >>> model = LPIPS("alex")  # random weights; use load_lpips() for the real ones
        >>> d = model(torch.zeros(2, 3, 64, 64), torch.zeros(2, 3, 64, 64))
        >>> tuple(d.shape)
        (2,)
    """

    #: Smallest input side every backbone accepts (AlexNet's three pools need 31 px).
    MIN_SIDE = 32

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        self.spec = _spec(net)
        self.net = net
        self.shift: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.features = _build_features(self.spec)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in self.spec.channels)
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> LPIPS:  # noqa: ARG002 (the metric is frozen by design)
        """Stay in eval mode whatever a parent module asks: the metric is frozen."""
        return super().train(False)

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone activations at the LPIPS taps of a scaled input (N, 3, H, W)."""
        outs: list[torch.Tensor] = []
        ends = iter(self.spec.taps)
        end = next(ends)
        for i, layer in enumerate(self.features):
            if i >= self.spec.taps[-1]:
                break
            x = layer(x)
            if i + 1 == end:
                outs.append(x)
                end = next(ends, -1)
        return outs

    def _check(self, in0: torch.Tensor, in1: torch.Tensor) -> None:
        if in0.shape != in1.shape:
            msg = f"LPIPS inputs differ in shape: {tuple(in0.shape)} vs {tuple(in1.shape)}"
            raise ValueError(msg)
        if in0.ndim != 4 or in0.shape[1] != 3:  # noqa: PLR2004
            msg = f"LPIPS expects (N, 3, H, W) RGB in [-1, 1], got {tuple(in0.shape)}"
            raise ValueError(msg)
        if min(in0.shape[2:]) < self.MIN_SIDE:
            msg = f"LPIPS needs H, W >= {self.MIN_SIDE}, got {tuple(in0.shape[2:])}"
            raise ValueError(msg)

    def forward(
        self, in0: torch.Tensor, in1: torch.Tensor, *, normalize: bool = False, per_layer: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Distance per image pair.

        Args:
            in0: (N, 3, H, W) RGB in [-1, 1] (or [0, 1] with ``normalize=True``).
            in1: same shape as ``in0``.
            normalize: map [0, 1] inputs to [-1, 1] first (the lpips package's flag).
            per_layer: also return the (N,) contribution of each tap.

        Returns:
            (N,) float32 distances (0 for identical images), plus the per-tap list if asked.

        Raises:
            ValueError: shapes differ, are not (N, 3, H, W), or are smaller than MIN_SIDE.
        """
        self._check(in0, in1)
        if normalize:
            in0, in1 = 2 * in0 - 1, 2 * in1 - 1
        n = in0.shape[0]
        # One backbone pass on the stacked pair: same maths, half the Python overhead.
        x = (torch.cat([in0, in1], dim=0) - self.shift) / self.scale
        feats = self.taps(x)
        layers: list[torch.Tensor] = []
        with torch.autocast(device_type=x.device.type, enabled=False):
            for feat, lin in zip(feats, self.lins, strict=True):
                f = normalize_channels(feat.float())
                diff = (f[:n] - f[n:]) ** 2
                layers.append(lin(diff).mean(dim=(1, 2, 3)))
        total = torch.stack(layers, dim=0).sum(dim=0)
        return (total, layers) if per_layer else total


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 BGR (H, W, 3) or gray (H, W) image -> (1, 3, H, W) float32 RGB in [-1, 1].

    Gray (IR camera) images are repeated on the three channels, as LPIPS needs RGB.

    Raises:
        ValueError: not a uint8 gray or 3-channel image.
    """
    gray = image.ndim == 2  # noqa: PLR2004
    if image.dtype != np.uint8 or not (gray or (image.ndim == 3 and image.shape[2] == 3)):  # noqa: PLR2004
        msg = f"expected a uint8 BGR (H, W, 3) or gray (H, W) image, got {image.dtype} {image.shape}"
        raise ValueError(msg)
    rgb = np.repeat(image[:, :, None], 3, axis=2) if gray else image[:, :, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float()
    return tensor / 127.5 - 1.0


@functools.lru_cache(maxsize=2)
def _cached_model(net: str) -> LPIPS:
    # Lazy: lpips_weights imports this module (the architecture it converts to).
    from revavatar.learning.lpips_weights import load_lpips  # noqa: PLC0415

    return load_lpips(net, allow_fetch=False)


def lpips_distance(a_bgr_uint8: np.ndarray, b_bgr_uint8: np.ndarray, net: str = "alex") -> float:
    """LPIPS distance between two uint8 BGR (or gray) images of the same size.

    Loads the cached weights once per net (never downloads; see ``revavatar fetch-lpips``).

    Raises:
        ModelLoadError: the weights of ``net`` are not cached.
        ValueError: images differ in size or are not uint8 BGR / gray.
    """
    if a_bgr_uint8.shape != b_bgr_uint8.shape:
        msg = f"images differ in shape: {a_bgr_uint8.shape} vs {b_bgr_uint8.shape}"
        raise ValueError(msg)
    model = _cached_model(net)
    with torch.inference_mode():
        return float(model(image_to_tensor(a_bgr_uint8), image_to_tensor(b_bgr_uint8))[0])
