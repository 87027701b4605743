"""Network factories, block shapes and GAN losses."""

from __future__ import annotations

import pytest
import torch

from revavatar.learning.networks import (
    GANLoss,
    ResnetBlock,
    count_parameters,
    define_discriminator,
    define_generator,
    get_norm,
)


@pytest.mark.parametrize("name", ["resnet", "autoencoder", "unet"])
@pytest.mark.parametrize("channels", [1, 3])
def test_generators_keep_shape_and_range(name, channels):
    g = define_generator(name, in_ch=channels, out_ch=channels, ngf=8, n_down=2)
    y = g(torch.randn(2, channels, 32, 48) * 3)
    assert y.shape == (2, channels, 32, 48)
    assert float(y.detach().abs().max()) <= 1.0


def test_resnet_generator_size_follows_arguments():
    small = define_generator("resnet", in_ch=1, out_ch=1, ngf=8, n_down=2, n_blocks=2)
    big = define_generator("resnet", in_ch=1, out_ch=1, ngf=16, n_down=2, n_blocks=6)
    assert count_parameters(big) > 4 * count_parameters(small)


def test_residual_generator_starts_near_identity():
    g = define_generator("resnet", in_ch=1, out_ch=1, ngf=8, n_down=2, n_blocks=2, residual=True)
    x = torch.rand(1, 1, 16, 16) * 1.6 - 0.8
    assert torch.allclose(g(x), x)
    loss = (g(x) - x.flip(-1)).abs().mean()
    loss.backward()
    assert g.model[-2].weight.grad.abs().sum() > 0  # trainable from the zero start


def test_patchgan70_receptive_field_and_multiscale():
    d = define_discriminator("patchgan70", in_ch=3, ndf=8, norm="none")
    assert d(torch.randn(1, 3, 128, 128)).shape == (1, 1, 14, 14)
    # 70x70 receptive field (no instance norm, whose statistics are global)
    x = torch.randn(1, 3, 128, 128, requires_grad=True)
    d(x)[0, 0, 7, 7].backward()
    cols = x.grad.abs().sum(dim=(0, 1, 2)).nonzero().ravel()
    assert int(cols.max() - cols.min()) + 1 == 70
    ms = define_discriminator("multiscale_patchgan", in_ch=3, ndf=8)
    outs = ms(torch.randn(2, 3, 128, 128))
    assert len(outs) == 3 and outs[0].shape[-1] > outs[1].shape[-1] > outs[2].shape[-1]
    feats = ms.features(torch.randn(1, 3, 128, 128))
    assert len(feats) == 3 and len(feats[0]) == 5


def test_unknown_keys_list_the_valid_ones():
    with pytest.raises(ValueError, match="resnet, autoencoder, unet"):
        define_generator("vit")
    with pytest.raises(ValueError, match="patchgan70"):
        define_discriminator("stylegan")
    with pytest.raises(ValueError, match="instance, batch, none"):
        get_norm("group")
    with pytest.raises(ValueError, match="lsgan, hinge, vanilla"):
        GANLoss("wgan")


def test_gan_losses():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    ls = GANLoss("lsgan")
    assert float(ls(ones, True)) == 0.0 and float(ls(zeros, True)) == 1.0
    assert float(ls([ones, zeros], False)) == pytest.approx(0.5)
    hinge = GANLoss("hinge")
    assert float(hinge(ones * 2, True)) == 0.0 and float(hinge(ones * 0.5, True)) == 0.5
    assert float(hinge(ones * 3, True, for_discriminator=False)) == -3.0
    van = GANLoss("vanilla")
    assert float(van(ones * 20, True)) < 1e-6 < float(van(ones * 20, False))


def test_resnet_block_is_residual():
    block = ResnetBlock(4, norm="none")
    for p in block.parameters():
        torch.nn.init.zeros_(p)
    x = torch.randn(1, 4, 8, 8)
    assert torch.equal(block(x), x)


def test_residual_generator_with_conditioning_channels():
    g = define_generator("resnet", in_ch=2, out_ch=1, ngf=8, n_down=2, n_blocks=1, residual=True,
                         tone=True)
    x = torch.rand(1, 2, 16, 16) * 1.6 - 0.8
    assert g(x).shape == (1, 1, 16, 16)
    assert torch.allclose(g(x), x[:, :1])  # the skip path is the first (view) channel
    with pytest.raises(ValueError, match="in_ch >= out_ch"):
        define_generator("resnet", in_ch=1, out_ch=3, residual=True)
