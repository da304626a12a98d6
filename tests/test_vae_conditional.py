"""A class-conditional VAE (issue 25; CVAE of Sohn et al. 2015): the label enters the encoder
and the decoder, q(z | x, y) and p(x | z, y), the prior stays N(0, I). Conditioning honoured on
a tiny two-class problem (top-half vs bottom-half bright 28x28 images), the conditional ELBO and
importance-sampled log p(x | y) against torch.distributions on the same weights and noise, the
conv encoder's label channels, the flow posterior, unconditional models unchanged, saving and
loading, and the error messages."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence
from torch.utils.data import TensorDataset

import dgm_ext
from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import (
    VAEConfig,
    build_vae,
    encode_means,
    evaluate_elbo,
    evaluate_log_likelihood,
    importance_log_likelihood,
    load_vae,
    save_vae,
)
from dgm_ext.vae.networks import ConvDecoder, ConvEncoder

CLOSE = {"rtol": 1e-4, "atol": 1e-4}
LEGACY = Path(__file__).resolve().parent / "data" / "legacy"


def _two_classes(n: int = 512) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % 2
    x = torch.full((n, 1, 28, 28), 0.05) + 0.1 * torch.rand(n, 1, 28, 28, generator=g)
    x[y == 0, :, :14, :] += 0.8
    x[y == 1, :, 14:, :] += 0.8
    return TensorDataset(x, y)


def _class_of(images: torch.Tensor) -> torch.Tensor:
    """The toy problem's classifier: which half of the image is brighter."""
    top, bottom = images[:, :, :14].mean((1, 2, 3)), images[:, :, 14:].mean((1, 2, 3))
    return (bottom > top).long()


def _perturb(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = build_vae(arch="mlp", latent_dim=2, hidden=16, num_classes=2)
    run = tmp_path_factory.mktemp("cvae") / "run"
    cfg = TrainerConfig(run_dir=run, epochs=60, batch_size=64, lr=1e-2, progress=False)
    Trainer(vae, cfg).fit(_two_classes())
    torch.set_num_threads(threads)
    return vae


def test_samples_are_of_the_class_asked_for(trained):
    # an unconditional VAE (or one whose networks ignore the label) puts both classes
    # in z: its samples are about half of each class whatever label is asked for
    for c in (0, 1):
        images = trained.sample(200, labels=c, generator=torch.Generator().manual_seed(1))
        assert images.shape == (200, 1, 28, 28)
        accuracy = (_class_of(images) == c).float().mean().item()
        assert accuracy >= 0.9, (c, accuracy)
    # uniform labels by default; one label per image when given (likelihood samples too)
    mixed = trained.sample(400, generator=torch.Generator().manual_seed(2))
    assert 0.35 < _class_of(mixed).float().mean().item() < 0.65
    wanted = torch.tensor([0, 1] * 50)
    assert (_class_of(trained.sample(100, labels=wanted)) == wanted).float().mean() >= 0.9
    drawn = trained.sample(100, labels=wanted, mean=False)
    assert (_class_of(drawn) == wanted).float().mean() >= 0.9
    # reconstructions of the data keep their class
    x, y = _two_classes(64).tensors
    assert (_class_of(trained.reconstruct(x, labels=y)) == y).float().mean() >= 0.9


# ----------------------------------------------------------------- the objective by hand


def _conditional_mlp(seed: int = 1, **kwargs):
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=3, hidden=5, num_classes=3, **kwargs)
    _perturb(model, seed)
    return model


def _batch(b: int = 4):
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(b, 1, 28, 28, generator=g) > 0.5).float()
    return x, torch.tensor([0, 2, 1, 2])[:b]


def _by_hand(model, x: torch.Tensor, y: torch.Tensor, eps: torch.Tensor):
    """q(z | x, y), z = mu + sigma * eps and log p(x | z, y) of the conditional MLP VAE
    computed from its weights: one-hot labels after the pixels and after z."""
    w = model.state_dict()
    onehot = torch.eye(model.config.num_classes)[y]
    inputs = torch.cat([x.flatten(1), onehot], 1)
    h = torch.relu(inputs @ w["encoder.body.0.weight"].T + w["encoder.body.0.bias"])
    mu = h @ w["encoder.mu.weight"].T + w["encoder.mu.bias"]
    logvar = h @ w["encoder.logvar.weight"].T + w["encoder.logvar.bias"]
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = q.loc + q.scale * eps
    dec_in = torch.cat([z, onehot.expand(*z.shape[:-1], -1)], -1)
    hidden = torch.relu(dec_in @ w["decoder.net.0.weight"].T + w["decoder.net.0.bias"])
    logits = hidden @ w["decoder.net.2.weight"].T + w["decoder.net.2.bias"]
    rec = Bernoulli(logits=logits).log_prob(x.flatten(1)).sum(-1)
    return q, z, rec


def test_conditional_elbo_equals_torch_distributions_on_the_same_noise():
    model = _conditional_mlp()
    x, y = _batch()
    torch.manual_seed(3)
    got = model.elbo_terms(x, labels=y)
    torch.manual_seed(3)
    q, _, rec = _by_hand(model, x, y, torch.randn(4, 3))
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    torch.testing.assert_close(got["rec"], rec, **CLOSE)
    torch.testing.assert_close(got["kl"], kl, **CLOSE)
    torch.testing.assert_close(got["elbo"], rec - kl, **CLOSE)
    # the trainer's step takes the labels from the (images, labels) batch
    torch.manual_seed(3)
    loss = model.training_step((x, y))["loss"]
    torch.testing.assert_close(loss, -(rec - kl).mean(), **CLOSE)
    # evaluate_elbo uses the data set's labels (one batch: the same noise)
    torch.manual_seed(3)
    ev = evaluate_elbo(model, SimpleNamespace(images=x, labels=y))
    assert ev["elbo"] == pytest.approx(float((rec - kl).mean()), rel=1e-5)


def test_importance_sampled_log_likelihood_is_log_p_x_given_y():
    model = _conditional_mlp(seed=2)
    x, y = _batch()
    k = 7
    torch.manual_seed(4)
    eps = torch.randn(k, 4, 3)
    q, z, rec = _by_hand(model, x, y, eps)
    log_w = rec + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    expected = torch.logsumexp(log_w, 0) - math.log(k)
    torch.manual_seed(4)
    torch.testing.assert_close(importance_log_likelihood(model, x, k, labels=y), expected, **CLOSE)
    torch.manual_seed(4)
    got = evaluate_log_likelihood(model, (x, y), k=k, batch_size=4)
    assert got["log_px"] == pytest.approx(float(expected.mean()), rel=1e-5)


# ----------------------------------------------------------------- networks and posterior


def test_conv_encoder_label_channels_are_constant_one_hot_input_channels():
    torch.manual_seed(0)
    enc = ConvEncoder(latent_dim=3, num_classes=4)
    _perturb(enc, 6)
    x, y = torch.rand(5, 1, 28, 28), torch.tensor([0, 3, 1, 2, 3])
    mu, logvar, h = enc(x, y)
    # the literal construction: the image and K constant channels, channel y all ones
    planes = torch.eye(4)[y][:, :, None, None].expand(5, 4, 28, 28)
    h_ref = enc.body(torch.cat([x, planes], 1))
    torch.testing.assert_close(h, h_ref, **CLOSE)
    torch.testing.assert_close(mu, enc.mu(h_ref), **CLOSE)
    torch.testing.assert_close(logvar, enc.logvar(h_ref), **CLOSE)
    # the conv decoder concatenates the one-hot label to z; sample dimensions share it
    dec = ConvDecoder(latent_dim=3, width=4, num_classes=4)
    _perturb(dec, 7)
    z = torch.randn(2, 5, 3)
    first = dec.fc[0]
    assert first.in_features == 3 + 4
    out = dec(z, y)
    for s in range(2):
        hid = torch.relu(torch.cat([z[s], torch.eye(4)[y]], 1) @ first.weight.T + first.bias)
        ref = dec.net(hid.view(5, 4, 7, 7)).flatten(2)
        torch.testing.assert_close(out[s], ref, **CLOSE)


@pytest.mark.parametrize("amortized", [True, False])
def test_a_planar_flow_posterior_is_conditional_through_the_encoder_features(amortized):
    model = _conditional_mlp(flow_length=2, flow_amortized=amortized)
    x, _ = _batch(2)
    h = [model.encode(x, labels=c)[2] for c in (0, 1)]
    assert not torch.allclose(h[0], h[1])  # the flow head reads features that see y
    torch.manual_seed(0)
    z0 = torch.randn(3, 2, 3)
    if amortized:
        zk = [model.flow(z0, hc, model.ops)[0] for hc in h]
        assert not torch.allclose(zk[0], zk[1])
    loss = model.training_step((x, torch.tensor([0, 1])))["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    ll = importance_log_likelihood(model, x, 5, labels=torch.tensor([2, 1]))
    assert ll.shape == (2,) and bool(torch.isfinite(ll).all())


# ----------------------------------------------------------------- unconditional unchanged


def _pre_change_parameter_count(arch: str, latent: int, hidden: int) -> int:
    """The unconditional networks' parameter counts written out (784 pixels, Bernoulli)."""
    if arch == "mlp":
        enc = 784 * hidden + hidden + 2 * (hidden * latent + latent)
        return enc + latent * hidden + hidden + hidden * 784 + 784
    if arch == "mlp-deep":
        enc = 784 * hidden + hidden + hidden * hidden + hidden + hidden * 2 * latent + 2 * latent
        dec = latent * hidden + hidden + hidden * hidden + hidden + hidden * 784 + 784
        return enc + dec
    convs = (1 * 32 + 32 * 64 + 64 * 128) * 9 + 32 + 64 + 128
    enc = convs + 2 * (128 * 9 * latent + latent)
    c = hidden
    dec = latent * c * 49 + c * 49
    dec += c * (c // 2) * 16 + c // 2 + (c // 2) * (c // 4) * 16 + c // 4 + (c // 4) * 9 + 1
    return enc + dec


@pytest.mark.parametrize(("arch", "hidden"), [("mlp", 6), ("mlp-deep", 5), ("conv", 8)])
def test_unconditional_models_are_unchanged_and_the_label_adds_its_weights(arch, hidden):
    count = _pre_change_parameter_count(arch, 3, hidden)
    plain = build_vae(arch=arch, latent_dim=3, hidden=hidden)
    assert sum(p.numel() for p in plain.parameters()) == count
    cond = build_vae(arch=arch, latent_dim=3, hidden=hidden, num_classes=4)
    assert cond.state_dict().keys() == plain.state_dict().keys()
    # K label inputs into the encoder's first layer and the decoder's first layer
    enc_first = 32 * 9 if arch == "conv" else hidden
    dec_first = hidden * 49 if arch == "conv" else hidden
    assert sum(p.numel() for p in cond.parameters()) == count + 4 * (enc_first + dec_first)


def test_an_unconditional_vae_built_today_is_the_one_built_before_conditioning():
    """tests/data/legacy/make_legacy_files.py built vae.pt from seed 0 and perturbed it with
    seed 1 (the code before this change): the same steps today give the same weights (same
    initialisation order) and the same outputs."""
    torch.manual_seed(0)
    vae = build_vae(arch="mlp", latent_dim=2, hidden=1, flow_length=1)
    _perturb(vae, 1)
    legacy = torch.load(LEGACY / "vae.pt", weights_only=True)["state_dict"]
    assert list(vae.state_dict()) == list(legacy)
    for key, value in vae.state_dict().items():
        assert torch.equal(value, legacy[key]), key
    expected = torch.load(LEGACY / "expected.pt", weights_only=True)["vae"]
    with torch.no_grad():
        mu, logvar, _ = vae.encode(expected["x"])
        torch.testing.assert_close(mu, expected["mu"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(logvar, expected["logvar"], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(vae.decode(expected["z"]), expected["decode"])


def test_an_unconditional_file_keeps_the_earlier_config(tmp_path):
    torch.manual_seed(0)
    plain = build_vae(arch="mlp", latent_dim=2, hidden=3)
    blob = torch.load(save_vae(plain, tmp_path / "p.pt"), weights_only=True)
    assert "num_classes" not in blob["config"]
    assert load_vae(tmp_path / "p.pt").config.num_classes == 0
    cond = build_vae(arch="mlp", latent_dim=2, hidden=3, num_classes=2)
    blob = torch.load(save_vae(cond, tmp_path / "c.pt"), weights_only=True)
    assert blob["config"]["num_classes"] == 2


# ----------------------------------------------------------------- save and load


def test_save_and_load_keep_the_conditioning(tmp_path):
    torch.manual_seed(0)
    model = build_vae(arch="conv", latent_dim=3, hidden=4, num_classes=3, flow_length=1)
    _perturb(model, 8)
    path = save_vae(model, tmp_path / "cvae.pt")
    x, y = torch.rand(4, 1, 28, 28), torch.tensor([2, 0, 1, 2])
    z = torch.randn(4, 3)
    for again in (dgm_ext.load(path), load_vae(path)):
        assert again.config.num_classes == 3 and again.num_classes == 3
        for a, b in zip(again.encode(x, y), model.encode(x, y), strict=True):
            assert torch.equal(a, b)
        assert torch.equal(again.decode(z, y), model.decode(z, y))
        assert torch.equal(again.sample(z=z, labels=y), model.sample(z=z, labels=y))
        assert torch.equal(again.reconstruct(x, y), model.reconstruct(x, y))
        # in batches of 3, with each batch's labels
        means = encode_means(again, x, 3, labels=y)
        torch.testing.assert_close(means, model.encode(x, y)[0].detach(), rtol=1e-6, atol=1e-4)


# ----------------------------------------------------------------- errors


def test_labels_are_required_and_checked():
    model = _conditional_mlp()
    x, y = _batch()
    with pytest.raises(ValueError, match=r"trains on \(images, labels\) batches"):
        model.training_step(x)
    with pytest.raises(ValueError, match=r"4 class indices in \[0, 3\), .*values in \[0, 3\]"):
        model.training_step((x, torch.tensor([0, 1, 3, 3])))
    with pytest.raises(ValueError, match=r"labels must be 4 class indices .*shape \(2,\)"):
        model.elbo_terms(x, labels=y[:2])
    with pytest.raises(ValueError, match=r"labels must be 4 class indices"):
        model.sample(4, labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"in \[0, 3\), .*in \[-1, -1\]"):
        model.sample(2, labels=-1)
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=3\); pass one class"):
        model.encode(x)
    with pytest.raises(ValueError, match=r"class-conditional \(num_classes=3\); pass one class"):
        model.reconstruct(x)
    with pytest.raises(ValueError, match="needs the labels"):
        evaluate_elbo(model, x)
    with pytest.raises(ValueError, match="needs the labels"):
        evaluate_log_likelihood(model, x, k=2)
    plain = build_vae(arch="mlp", latent_dim=2, hidden=3)
    with pytest.raises(ValueError, match=r"not class-conditional \(num_classes=0\)"):
        plain.sample(2, labels=1)
    with pytest.raises(ValueError, match="not class-conditional"):
        plain.elbo_terms(x, labels=y)
    for bad in (1, -1, True, 2.0):
        with pytest.raises(ValueError, match=r"num_classes must be 0 \(unconditional\)"):
            VAEConfig(num_classes=bad)
