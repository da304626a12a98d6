"""Every family at the image shapes users bring (issue 25): 1x28x28, 3x32x32 and 3x64x64
through the VAE (MLP, conv), the GAN (MLP, DCGAN) and RealNVP (MLP, multi-scale): a training
step's loss is finite and samples come back in the data's shape, saved and loaded unchanged."""

from __future__ import annotations

import pytest
import torch

from dgm_ext import load
from dgm_ext.flows.realnvp import build_realnvp, save_realnvp
from dgm_ext.gan import GAN, GANConfig, save_gan
from dgm_ext.vae import build_vae, save_vae

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(1, 28, 28), (3, 32, 32), (3, 64, 64)]


def _same_outputs(a, b, fn) -> None:
    torch.manual_seed(5)
    x = fn(a)
    torch.manual_seed(5)
    assert torch.equal(x, fn(b))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_vae(shape, arch, tmp_path):
    torch.manual_seed(0)
    vae = build_vae(arch=arch, latent_dim=4, hidden=8, image_shape=shape)
    x = (torch.rand(3, *shape) > 0.5).float()
    assert torch.isfinite(vae.training_step(x)["loss"])
    assert vae.sample(2).shape == (2, *shape)
    loaded = load(save_vae(vae, tmp_path / "vae.pt"))
    _same_outputs(vae, loaded, lambda m: m.sample(2))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ["mlp", "dcgan"])
def test_gan(shape, arch, tmp_path):
    torch.manual_seed(0)
    gan = GAN(GANConfig(arch=arch, image_shape=shape, z_dim=4, width=8))
    fake = gan.decode(gan.sample_z(3))
    assert fake.shape == (3, *shape) and float(fake.min()) >= 0 and float(fake.max()) <= 1
    assert gan.critic(2 * fake - 1).shape == (3,)
    loaded = load(save_gan(gan, tmp_path / "g.pt"))
    _same_outputs(gan, loaded, lambda m: m.sample(2))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("arch", ["mlp", "multiscale"])
def test_realnvp(shape, arch, tmp_path):
    torch.manual_seed(0)
    model = build_realnvp(arch=arch, image_shape=shape, couplings=2, hidden=8, scales=2,
                          channels=4, blocks=1)  # fmt: skip
    x = torch.randint(0, 256, (2, *shape))
    assert torch.isfinite(model.training_step((x, torch.zeros(2)))["loss"])
    assert model.sample_images(2).shape == (2, *shape)
    loaded = load(save_realnvp(model, tmp_path / "nvp.pt"))
    _same_outputs(model, loaded, lambda m: m.sample_images(2))
