"""Users' own networks in VAEs and GANs (dgm_ext.networks): registry, contracts, training,
save/load with weights_only, and the one-line error for a builder that is not registered."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgm_ext import load, register_network
from dgm_ext.gan import GAN, GANConfig, save_gan
from dgm_ext.networks import NETWORKS, build_network, network_spec
from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import build_vae, save_vae

pytestmark = pytest.mark.usefixtures("one_thread")


@register_network("test-encoder", replace=True)
class TinyEncoder(nn.Module):
    """x (B, 1, 4, 4) -> (mu, logvar): no features, so no amortised flow."""

    def __init__(self, latent_dim: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, width), nn.Tanh())
        self.head = nn.Linear(width, 2 * latent_dim)

    def forward(self, x):
        return self.head(self.body(x)).chunk(2, dim=-1)


@register_network("test-decoder", replace=True)
def tiny_decoder(latent_dim: int, pixels: int = 16) -> nn.Module:
    """z (*B, L) -> Bernoulli logits (*B, D) (one parameter per value)."""
    return nn.Sequential(nn.Linear(latent_dim, 8), nn.Tanh(), nn.Linear(8, pixels))


@register_network("test-generator", replace=True)
class TinyGenerator(nn.Module):
    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.net = nn.Linear(z_dim, 16)

    def forward(self, z):
        return torch.tanh(self.net(z)).view(-1, 1, 4, 4)


@register_network("test-critic", replace=True)
class TinyCritic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)  # (N, 1): the GAN takes (N,) or (N, 1)


def _vae():
    torch.manual_seed(0)
    return build_vae(latent_dim=3, image_shape=(1, 4, 4),
                     encoder={"name": "test-encoder", "kwargs": {"latent_dim": 3}},
                     decoder={"name": "test-decoder", "kwargs": {"latent_dim": 3}})  # fmt: skip


def test_vae_elbo_with_user_networks_against_torch_distributions():
    vae = _vae()
    x = (torch.rand(6, 1, 4, 4) > 0.5).float()
    torch.manual_seed(1)
    terms = vae.elbo_terms(x)
    torch.manual_seed(1)
    mu, logvar = vae.encoder(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    rec = torch.distributions.Bernoulli(logits=vae.decoder(z)).log_prob(x.flatten(1)).sum(-1)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(terms["rec"], rec, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(terms["kl"], kl, rtol=1e-5, atol=1e-5)
    assert vae.sample(2).shape == (2, 1, 4, 4) and vae.log_weights(x, 5).shape == (5, 6)


def test_vae_with_user_networks_trains_saves_and_loads(tmp_path):
    vae = _vae()
    data = torch.utils.data.TensorDataset((torch.rand(64, 1, 4, 4) > 0.5).float())
    cfg = TrainerConfig(run_dir=tmp_path / "run", epochs=2, batch_size=16, progress=False)
    rows = Trainer(vae, cfg).fit(data)
    assert len(rows) == 2
    loaded = load(save_vae(vae, tmp_path / "vae.pt"))  # weights_only inside
    assert isinstance(loaded.encoder, TinyEncoder)
    for a, b in zip(vae.state_dict().values(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_gan_with_user_networks(tmp_path):
    torch.manual_seed(0)
    config = GANConfig(image_shape=(1, 4, 4), z_dim=2, penalty="r1", penalty_weight=1.0,
                       generator={"name": "test-generator", "kwargs": {"z_dim": 2}},
                       critic="test-critic")  # fmt: skip
    gan = GAN(config)
    data = torch.utils.data.TensorDataset(torch.rand(32, 1, 4, 4))
    cfg = TrainerConfig(run_dir=tmp_path / "run", epochs=1, batch_size=8, progress=False)
    (row,) = Trainer(gan, cfg).fit(data)
    assert {"train_critic_loss", "train_penalty"} <= set(row)
    loaded = load(save_gan(gan, tmp_path / "g.pt"))
    assert isinstance(loaded.generator, TinyGenerator) and isinstance(loaded.critic, TinyCritic)
    assert loaded.config.critic == {"name": "test-critic", "kwargs": {}}
    assert loaded.sample(3).shape == (3, 1, 4, 4)


@pytest.mark.parametrize("loss", ["jsd-nonsaturating", "w1", "hinge"])
def test_critic_scores_of_shape_n1_train_as_n(tmp_path, loss):
    """A critic returning (N, 1) scores takes the same steps as the same critic returning
    (N,): every loss and penalty reduces them alike."""

    class Flat(TinyCritic):
        def forward(self, x):
            return super().forward(x).squeeze(1)

    generator = {"name": "test-generator", "kwargs": {"z_dim": 2}}
    data = torch.utils.data.TensorDataset(torch.rand(32, 1, 4, 4))
    results = []
    for flat in (False, True):
        torch.manual_seed(0)
        gan = GAN(GANConfig(image_shape=(1, 4, 4), z_dim=2, loss=loss, penalty="gp",
                            penalty_weight=1.0, generator=generator,
                            critic="test-critic"))  # fmt: skip
        if flat:  # the same weights, scores of shape (N,)
            state = gan.critic.state_dict()
            gan.critic = Flat()
            gan.critic.load_state_dict(state)
        cfg = TrainerConfig(run_dir=tmp_path / f"{loss}-{flat}", epochs=1, batch_size=8,
                            progress=False, seed=3)  # fmt: skip
        (row,) = Trainer(gan, cfg).fit(data)
        results.append((row, gan.state_dict()))
    (row_a, a), (row_b, b) = results
    assert row_a["train_critic_loss"] == pytest.approx(row_b["train_critic_loss"], rel=1e-6)
    for k in a:
        torch.testing.assert_close(a[k], b[k])


def test_unregistered_builder_is_one_line(tmp_path, monkeypatch):
    path = save_vae(_vae(), tmp_path / "vae.pt")
    monkeypatch.delitem(NETWORKS, "test-encoder")
    with pytest.raises(ValueError) as err:
        load(path)
    msg = str(err.value)
    assert "encoder network 'test-encoder' is not registered" in msg and "\n" not in msg
    assert "dgm_ext.register_network('test-encoder', builder)" in msg


def test_registry_and_spec_refusals():
    with pytest.raises(ValueError, match="already registered"):
        register_network("test-critic", lambda: nn.Linear(1, 1))
    with pytest.raises(TypeError, match="must be callable"):
        register_network("x-not-callable", 3)
    with pytest.raises(ValueError, match=r"encoder kwargs\['w'\] .* plain values"):
        network_spec({"name": "test-encoder", "kwargs": {"w": torch.zeros(1)}}, "encoder")
    with pytest.raises(ValueError, match="unknown keys"):
        network_spec({"name": "a", "kwarg": {}}, "decoder")
    with pytest.raises(ValueError, match=r"test-encoder.*unexpected keyword"):
        build_network({"name": "test-encoder", "kwargs": {"latent": 3}}, "encoder")
    register_network("x-not-a-module", lambda: 3, replace=True)
    with pytest.raises(TypeError, match=r"not an nn\.Module"):
        build_network("x-not-a-module")
    with pytest.raises(ValueError, match="feature_dim"):
        build_vae(latent_dim=3, image_shape=(1, 4, 4), flow_length=2,
                  encoder={"name": "test-encoder", "kwargs": {"latent_dim": 3}})  # fmt: skip
    # an MNIST model's saved config has no network keys (files earlier versions read)
    assert "encoder" not in build_vae(latent_dim=2).config.to_dict()
    assert "generator" not in GANConfig().to_dict()
