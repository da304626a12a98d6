"""VAEs on images of any shape (VAEConfig.image_shape): MLP and conv networks, the
likelihoods over D = C·H·W values, the conv decoder's channel layout, the conditional conv
encoder with C channels, save/load, and one-line refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dgm_ext.data import ImageDataset
from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import VAEConfig, build_vae, load_vae, save_vae
from dgm_ext.vae.networks import ConvDecoder, ConvEncoder

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPES = [(3, 32, 32), (1, 16, 24), (2, 8, 12)]


@pytest.mark.parametrize("arch", ["mlp", "mlp-deep", "conv"])
@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_through_every_architecture(arch, shape):
    torch.manual_seed(0)
    vae = build_vae(arch=arch, latent_dim=4, hidden=16 if arch != "conv" else 8,
                    likelihood="gaussian", image_shape=shape)  # fmt: skip
    x = torch.rand(5, *shape)
    terms = vae.elbo_terms(x)
    assert all(t.shape == (5,) and torch.isfinite(t).all() for t in terms.values())
    assert vae.sample(3).shape == (3, *shape)
    assert vae.reconstruct(x).shape == (5, *shape)
    assert vae.log_weights(x, 7).shape == (7, 5)
    # bits/dim over D = C*H*W values (the 8-bit dequantisation offset included)
    d = shape[0] * shape[1] * shape[2]
    nll = torch.tensor(1000.0)
    expected = (nll + d * torch.log(torch.tensor(256.0))) / (d * torch.log(torch.tensor(2.0)))
    assert float(vae.bits_per_dim(nll)) == pytest.approx(float(expected), rel=1e-6)


def test_bernoulli_log_prob_over_all_values():
    """The reconstruction term of a 3x8x8 Bernoulli VAE equals torch.distributions'
    Bernoulli log-probability summed over the 192 values."""
    torch.manual_seed(1)
    vae = build_vae(arch="mlp", latent_dim=3, hidden=8, image_shape=(3, 8, 8))
    x = (torch.rand(4, 3, 8, 8) > 0.5).float()
    z = torch.randn(4, 3)
    logits = vae.decode(z)  # (4, 1, 192)
    got = vae.likelihood.log_prob(logits, vae.prepare(x), vae.ops)
    want = torch.distributions.Bernoulli(logits=logits[:, 0]).log_prob(x.flatten(1)).sum(-1)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)


def test_conv_decoder_channel_layout():
    """Parameter p of channel c is the network's output map p*C + c."""
    torch.manual_seed(2)
    dec = ConvDecoder(latent_dim=3, n_params=2, width=8, image_shape=(3, 8, 12))
    z = torch.randn(4, 3)
    raw = dec.net(dec.fc(z).view(4, 8, 2, 3))  # (4, 6, 8, 12)
    out = dec(z)
    assert out.shape == (4, 2, 3 * 8 * 12)
    for p in range(2):
        torch.testing.assert_close(out[:, p], raw[:, 3 * p : 3 * p + 3].flatten(1))


def test_conditional_conv_encoder_with_channels():
    """The label channels' map added to the image's convolution equals one convolution of
    the image concatenated with the one-hot constant channels."""
    torch.manual_seed(3)
    enc = ConvEncoder(latent_dim=2, num_classes=4, image_shape=(3, 8, 8))
    x, y = torch.rand(5, 3, 8, 8), torch.tensor([0, 3, 1, 1, 2])
    onehot = F.one_hot(y, 4).float()[:, :, None, None].expand(5, 4, 8, 8)
    conv = enc.body[0]
    want = F.conv2d(torch.cat([x, onehot], 1), conv.weight, conv.bias, padding=1)
    torch.testing.assert_close(enc._first_conv(x, y), want, rtol=1e-5, atol=1e-5)


def test_save_load_keeps_the_shape_and_mnist_files_stay_as_before(tmp_path):
    vae = build_vae(arch="conv", latent_dim=2, hidden=8, image_shape=(3, 16, 16))
    loaded = load_vae(save_vae(vae, tmp_path / "rgb.pt"))
    assert loaded.image_shape == (3, 16, 16)
    x = torch.rand(2, 3, 16, 16)
    torch.manual_seed(0)
    a = vae.elbo_terms(x)["elbo"]
    torch.manual_seed(0)
    b = loaded.elbo_terms(x)["elbo"]
    assert torch.equal(a, b)
    # an MNIST model's saved config is the one earlier versions wrote (no image_shape key)
    assert "image_shape" not in build_vae(latent_dim=2).config.to_dict()


def test_refusals_name_the_argument():
    with pytest.raises(ValueError, match=r"image_shape: the conv VAE needs .* got \(1, 30, 30\)"):
        VAEConfig(arch="conv", image_shape=(1, 30, 30))
    with pytest.raises(ValueError, match="image_shape must be"):
        VAEConfig(image_shape=(28, 28))
    vae = build_vae(latent_dim=2, hidden=8, image_shape=(3, 8, 8))
    with pytest.raises(ValueError, match=r"images: this VAE models images of shape \(3, 8, 8\)"):
        vae.elbo_terms(torch.rand(2, 1, 28, 28))


def test_trains_on_rgb_images(tmp_path):
    """A conv VAE on 3x16x16 images through the Trainer: the validation ELBO improves."""
    torch.manual_seed(4)
    base = torch.rand(1, 3, 16, 16)
    images = (base + 0.1 * torch.randn(96, 3, 16, 16)).clamp(0, 1)
    data = ImageDataset(images, torch.zeros(96, dtype=torch.long))
    vae = build_vae(arch="conv", latent_dim=4, hidden=8, likelihood="gaussian",
                    image_shape=(3, 16, 16))  # fmt: skip
    cfg = TrainerConfig(run_dir=tmp_path, epochs=4, batch_size=32, lr=3e-3, progress=False)
    rows = Trainer(vae, cfg).fit(data, data)
    assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 10
