"""DCGAN networks at other image sizes than 32x32 (issue 25): 28x28, 32x32 and 64x64, the
32x32 networks unchanged (Miyato et al. 2018, Table 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgm_ext.gan.models import DCGANCritic, DCGANGenerator, dcgan_levels


def _convs(module: nn.Module) -> list[tuple]:
    """(kind, in, out, kernel, stride) of every conv / linear layer, in order."""
    out = []
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            kind = "T" if isinstance(m, nn.ConvTranspose2d) else "C"
            out.append((kind, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]))
        elif isinstance(m, nn.Linear):
            out.append(("L", m.in_features, m.out_features))
    return out


def test_32x32_is_miyatos_standard_cnn():
    w = 128  # Table 3: generator 512/256/128/64, discriminator 64,64,128,128,256,256,512
    assert _convs(DCGANGenerator()) == [
        ("L", 100, 4 * 4 * 512), ("T", 512, 256, 4, 2), ("T", 256, 128, 4, 2),
        ("T", 128, 64, 4, 2), ("C", 64, 3, 3, 1),
    ]  # fmt: skip
    assert _convs(DCGANCritic()) == [
        ("C", 3, 64, 3, 1), ("C", 64, 64, 4, 2), ("C", 64, 128, 3, 1), ("C", 128, 128, 4, 2),
        ("C", 128, 256, 3, 1), ("C", 256, 256, 4, 2), ("C", 256, 512, 3, 1),
        ("L", 4 * 4 * 512, 1),
    ]  # fmt: skip
    # the published parameter counts (README): unchanged by the generalisation
    assert sum(p.numel() for p in DCGANGenerator(width=w).parameters()) == 3_599_363
    assert sum(p.numel() for p in DCGANCritic(width=w).parameters()) == 2_935_873


def test_64x64_and_28x28_layouts():
    assert _convs(DCGANGenerator(width=16, image_size=64)) == [
        ("L", 100, 4 * 4 * 128), ("T", 128, 64, 4, 2), ("T", 64, 32, 4, 2),
        ("T", 32, 16, 4, 2), ("T", 16, 8, 4, 2), ("C", 8, 3, 3, 1),
    ]  # fmt: skip
    assert _convs(DCGANGenerator(width=16, channels=1, image_size=28)) == [
        ("L", 100, 7 * 7 * 32), ("T", 32, 16, 4, 2), ("T", 16, 8, 4, 2), ("C", 8, 1, 3, 1),
    ]  # fmt: skip
    assert _convs(DCGANCritic(width=16, channels=1, image_size=28)) == [
        ("C", 1, 8, 3, 1), ("C", 8, 8, 4, 2), ("C", 8, 16, 3, 1), ("C", 16, 16, 4, 2),
        ("C", 16, 32, 3, 1), ("L", 7 * 7 * 32, 1),
    ]  # fmt: skip


@pytest.mark.parametrize(("size", "channels"), [(28, 1), (32, 3), (64, 3)])
def test_shapes_through_generator_and_critic(size, channels):
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=8, width=8, channels=channels, image_size=size)
    c = DCGANCritic(width=8, channels=channels, image_size=size, spectral_norm=True)
    x = g(torch.randn(3, 8))
    assert x.shape == (3, channels, size, size)
    assert float(x.abs().max()) <= 1
    assert c(x).shape == (3,)


def test_levels_and_bad_sizes():
    assert [dcgan_levels(s) for s in (28, 32, 48, 64, 8)] == [(2, 7), (3, 4), (3, 6), (4, 4),
                                                              (1, 4)]  # fmt: skip
    for bad in (7, 9, 3, True, 32.0):
        with pytest.raises(ValueError, match="image_size"):
            dcgan_levels(bad)
