"""The differentiable SSIM is the metric the evaluation reports, and it can be trained on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revavatar.core.metrics import ssim as metric_ssim
from revavatar.learning.ssim_loss import ssim


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    chw = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
    return torch.from_numpy(chw.astype(np.float32) / 127.5 - 1.0)[None]


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_equals_the_evaluation_metric(channels):
    rng = np.random.default_rng(channels)
    shape = (40, 56) if channels == 1 else (40, 56, 3)
    smooth = np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8)
    for noise in (5.0, 30.0):
        other = np.clip(smooth + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
        got = float(ssim(_to_tensor(smooth), _to_tensor(other))[0])
        # the metric rounds BGR->gray to uint8; the port keeps the exact luma
        assert got == pytest.approx(metric_ssim(smooth, other), abs=2e-3 if channels == 3 else 1e-5)
    assert float(ssim(_to_tensor(smooth), _to_tensor(smooth))[0]) == pytest.approx(1.0)


def test_ssim_gradient_raises_it_and_small_images_are_refused():
    torch.manual_seed(0)
    target = torch.rand(2, 1, 24, 24) * 2 - 1
    x = (target + 0.5 * torch.randn_like(target)).clamp(-1, 1).requires_grad_(True)
    before = ssim(x, target)
    (1 - before.mean()).backward()
    with torch.no_grad():
        after = ssim(x - 0.5 * x.grad / x.grad.abs().max(), target)
    assert (after > before.detach()).all()
    with pytest.raises(ValueError, match="11x11"):
        ssim(torch.zeros(1, 1, 10, 30), torch.zeros(1, 1, 10, 30))
    with pytest.raises(ValueError, match="channels"):
        ssim(torch.zeros(1, 2, 16, 16), torch.zeros(1, 2, 16, 16))
