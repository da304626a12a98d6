"""Unit tests of dgm_ext.vae pieces that mutation testing found unguarded (docs/MUTATION.md):
likelihood defaults, dequantisation and pixel subsets against torch.distributions, the planar
posterior's construction, the batched planar reference, data-set and latent-space helpers,
and the VAE file format."""

from __future__ import annotations

import math

import pytest
import torch
from _planar_reference import planar_flow_batched
from torch import distributions as D

import dgm_ext.ops as fused
import dgm_ext.ops.reference as reference_ops
from dgm_ext.vae import (
    PlanarPosterior,
    build_vae,
    different_class_pairs,
    load_vae,
    manifold_grid,
    pca,
    save_vae,
)
from dgm_ext.vae.evaluate import dataset_images
from dgm_ext.vae.likelihoods import BetaLikelihood, GaussianLikelihood

LIKELIHOODS = [GaussianLikelihood, BetaLikelihood]


# -- likelihoods ------------------------------------------------------------------------------
def test_gaussian_defaults():
    lik = GaussianLikelihood()
    assert lik.dequantize is True and lik.logvar.shape == (784,)
    assert torch.equal(lik.logvar.detach(), torch.full((784,), math.log(0.05)))
    assert BetaLikelihood().dequantize is True and BetaLikelihood().eps == 1e-6


@pytest.mark.parametrize("cls", LIKELIHOODS)
def test_prepare_dequantises_levels_uniformly_within_their_bin(cls):
    images = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    torch.manual_seed(5)
    x = cls().prepare(images)
    torch.manual_seed(5)
    u = torch.rand(3, 784)
    levels = torch.round(images.flatten(1) * 255.0)
    assert x.dtype == torch.float32 and x.shape == (3, 784)
    assert torch.equal(x, ((levels.float() + u) / 256.0))
    # without dequantisation: the images as float32, unchanged
    raw = cls(dequantize=False).prepare(images)
    assert raw.dtype == torch.float32 and torch.equal(raw, images.flatten(1).float())


def _out(n_params, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, n_params, 10, generator=g, dtype=dtype)


def test_gaussian_log_prob_on_a_pixel_subset_matches_torch_distributions():
    lik = GaussianLikelihood(num_pixels=10)
    with torch.no_grad():
        lik.logvar.copy_(torch.linspace(-3.0, 0.5, 10))
    out, x = _out(1), torch.rand(3, 10, dtype=torch.float64)
    index = torch.tensor([7, 0, 4])
    got = lik.log_prob(out, x, fused, index=index)
    mean = torch.sigmoid(out[..., 0, :])[..., index]
    std = torch.exp(0.5 * lik.logvar.detach().double()[index])
    want = D.Normal(mean, std).log_prob(x[:, index]).sum(-1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)
    full = lik.log_prob(out, x, fused)
    std = torch.exp(0.5 * lik.logvar.detach().double())
    torch.testing.assert_close(
        full, D.Normal(torch.sigmoid(out[..., 0, :]), std).log_prob(x).sum(-1)
    )


def test_gaussian_sample_uses_the_learned_variance():
    lik = GaussianLikelihood(num_pixels=10)
    with torch.no_grad():
        lik.logvar.copy_(torch.linspace(-6.0, -2.0, 10))
    out = _out(1, torch.float32)
    torch.manual_seed(3)
    got = lik.sample(out)
    torch.manual_seed(3)
    m = torch.sigmoid(out[..., 0, :])
    want = (m + torch.randn_like(m) * torch.exp(0.5 * lik.logvar.detach())).clamp(0.0, 1.0)
    torch.testing.assert_close(got, want)


def test_beta_log_prob_mean_and_eps_match_torch_distributions():
    lik = BetaLikelihood(eps=1e-2)
    out = _out(2)
    x = torch.rand(3, 10, dtype=torch.float64)
    x[:, 0], x[:, 1] = 0.0, 1.0  # clamped to [eps, 1 - eps]
    index = torch.tensor([1, 0, 6])
    conc = torch.nn.functional.softplus(out) + 1e-3
    a, b = conc[..., 0, :], conc[..., 1, :]
    got = lik.log_prob(out, x, fused, index=index)
    want = D.Beta(a[..., index], b[..., index]).log_prob(x[:, index].clamp(1e-2, 1 - 1e-2)).sum(-1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(lik.mean(out), a / (a + b))


# -- planar posterior and the batched reference -----------------------------------------------
def test_planar_posterior_construction():
    with pytest.raises(ValueError) as e:
        PlanarPosterior(3, 0, 8)
    assert str(e.value) == "length (number of planar layers) must be >= 1, got 0"
    one = PlanarPosterior(3, 1, 8)
    assert one.amortized and one.head.out_features == 1 * (2 * 3 + 1)
    torch.manual_seed(0)
    big = PlanarPosterior(50, 20, 400)
    assert 0.9e-3 < float(big.head.weight.detach().std()) < 1.1e-3 and not big.head.bias.any()
    flat = PlanarPosterior(50, 20, 400, amortized=False)
    for p in (flat.u, flat.w):
        assert p.shape == (20, 50) and 0.009 < float(p.detach().std()) < 0.011
    assert not flat.b.any()


def test_planar_posterior_params_keep_batch_dimensions():
    post = PlanarPosterior(3, 4, 8)
    h = torch.randn(2, 5, 8)
    u, w, b = post.params(h)
    assert u.shape == w.shape == (2, 5, 4, 3) and b.shape == (2, 5, 4)
    p = post.head(h)
    assert torch.equal(u[1, 2, 3], p[1, 2, 9:12]) and torch.equal(w[0, 4, 1], p[0, 4, 15:18])


def test_planar_flow_batched_matches_the_per_row_reference():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)  # (S, N, d)
    u, w = (torch.randn(6, 5, 3, generator=g, dtype=torch.float64) for _ in range(2))
    b = torch.randn(6, 5, generator=g, dtype=torch.float64)
    zk, logdet = planar_flow_batched(z, u, w, b)
    ref_z, ref_ld = reference_ops.planar_flow_rows(z, u, w, b)
    assert logdet.shape == (4, 6) and logdet.dtype == torch.float64
    torch.testing.assert_close(zk, ref_z)
    torch.testing.assert_close(logdet, ref_ld)
    # no layers: the identity, with a zero log-det of z's dtype and batch shape
    zk, logdet = planar_flow_batched(z, u[:, :0], w[:, :0], b[:, :0])
    assert torch.equal(zk, z) and logdet.dtype == torch.float64 and logdet.shape == (4, 6)
    assert not logdet.any()


def test_planar_flow_batched_log_det_is_finite_where_the_layer_is_singular():
    # w·u = -1 at w·z + b = 0: the Jacobian determinant is 0; the 1e-12 guard keeps it finite
    z = torch.zeros(1, 2, dtype=torch.float64)
    u, w = torch.tensor([[-1.0, 0.0]], dtype=torch.float64), torch.tensor([[1.0, 0.0]])
    _, logdet = planar_flow_batched(z, u, w.double(), torch.zeros(1, dtype=torch.float64))
    assert logdet.item() == pytest.approx(math.log(1e-12))


# -- data and latent helpers --------------------------------------------------------------------
class _WithImages:
    def __init__(self, images):
        self.images = images


def test_dataset_images_accepts_each_container_and_limits():
    t = torch.arange(12.0).reshape(6, 2)
    labels = torch.arange(6)
    for data in (t, (t, labels), [t, labels], _WithImages(t)):
        assert dataset_images(data) is t
        assert torch.equal(dataset_images(data, limit=4), t[:4])
    for bad in ((), [labels.tolist()], "images", None):
        with pytest.raises(TypeError) as e:
            dataset_images(bad)
        assert str(e.value) == (
            f"data must be a tensor or have an .images tensor, got {type(bad)!r}"
        )


def test_different_class_pairs():
    labels = torch.tensor([0, 0, 1, 0, 1, 0, 1, 1])
    torch.manual_seed(11)
    pairs = different_class_pairs(labels, 6)
    after = torch.rand(())
    torch.manual_seed(11)
    assert torch.equal(after, torch.rand(())), "consumed the global RNG"
    assert len(pairs) == 6 and all(labels[i] != labels[j] for i, j in pairs)
    assert (
        pairs
        == different_class_pairs(labels, 6, seed=0)
        != different_class_pairs(labels, 6, seed=1)
    )
    with pytest.raises(ValueError) as e:
        different_class_pairs(torch.zeros(5, dtype=torch.long), 2)
    assert str(e.value) == "labels: need at least two classes to form pairs"


def test_manifold_grid_defaults_and_bounds():
    z = manifold_grid()
    assert z.shape == (400, 2) and torch.equal(z, manifold_grid(20, 0.05, 0.95))
    q = D.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0).icdf(
        torch.linspace(0.05, 0.95, 20, dtype=torch.float64)
    )
    assert torch.equal(z[:20, 0], q.float())  # computed in float64, then rounded once
    assert manifold_grid(2).shape == (4, 2)
    for kw, msg in [
        ({"n": 1}, "n must be >= 2, got 1"),
        ({"lo": 0.5, "hi": 0.5}, "need 0 < lo < hi < 1, got lo=0.5, hi=0.5"),
        ({"hi": 1.0}, "need 0 < lo < hi < 1, got lo=0.05, hi=1.0"),
        ({"lo": 0.0}, "need 0 < lo < hi < 1, got lo=0.0, hi=0.95"),
    ]:
        with pytest.raises(ValueError) as e:
            manifold_grid(**kw)
        assert str(e.value) == msg


def test_pca_explained_variance_and_bounds():
    g = torch.Generator().manual_seed(0)
    # independent columns with standard deviations 3, 2, 1: explained variance 9:4:1
    x = torch.randn(20000, 3, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0])
    proj, comps, ratio = pca(x)
    assert proj.shape == (20000, 2) and comps.shape == (2, 3)
    torch.testing.assert_close(ratio, torch.tensor([9 / 14, 4 / 14]), atol=0.01, rtol=0)
    assert pca(x, 1)[0].shape == (20000, 1) and pca(x, 3)[2].sum() == pytest.approx(1.0)
    for bad, k in [(x, 0), (x, 4), (x[None], 2)]:
        with pytest.raises(ValueError, match="x must be \\(N, L\\) with k <= min\\(N, L\\)"):
            pca(bad, k)


# -- the model and its file -------------------------------------------------------------------
def test_vae_forward_is_the_per_example_elbo():
    model = build_vae(arch="mlp", latent_dim=3, hidden=8)
    images = torch.rand(4, 1, 28, 28)
    torch.manual_seed(2)
    got = model(images)
    torch.manual_seed(2)
    assert got.shape == (4,) and torch.equal(got, model.elbo_terms(images)["elbo"])


def test_save_vae_into_new_folders_and_load_refuses_pickled_code(tmp_path):
    model = build_vae(arch="mlp", latent_dim=3, hidden=8)
    path = save_vae(model, tmp_path / "a" / "b" / "model.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]
    assert load_vae(path).config == model.config
    blob = torch.load(path, weights_only=True)
    blob["extra"] = _WithImages(None)  # an arbitrary pickled object
    torch.save(blob, tmp_path / "evil.pt")
    with pytest.raises(Exception, match=r"weights_only|Unsupported global"):
        load_vae(tmp_path / "evil.pt")


# -- networks -----------------------------------------------------------------------------------
def _layers(module: torch.nn.Module) -> list[str]:
    out = []
    for m in module.modules():
        if list(m.children()):
            continue
        name = type(m).__name__
        if isinstance(m, torch.nn.Linear):
            out.append(f"Linear({m.in_features},{m.out_features})")
        elif isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            k, s, p = m.kernel_size[0], m.stride[0], m.padding[0]
            out.append(f"{name}({m.in_channels},{m.out_channels},k{k},s{s},p{p})")
        else:
            out.append(name)
    return out


ARCH_LAYERS = {
    # SPEC §3: vae-mlp 784-500-L (ReLU); vae-elbo 784-300-300-2L (ELU); the conv VAE
    "mlp": (
        ["Linear(784,500)", "ReLU", "Linear(500,16)", "Linear(500,16)"],
        ["Linear(16,500)", "ReLU", "Linear(500,1568)"],
    ),
    "mlp-deep": (
        ["Linear(784,300)", "ELU", "Linear(300,300)", "ELU", "Linear(300,32)"],
        ["Linear(16,300)", "ELU", "Linear(300,300)", "ELU", "Linear(300,1568)"],
    ),
    "conv": (
        ["Conv2d(1,32,k3,s1,p1)", "ReLU", "MaxPool2d", "Conv2d(32,64,k3,s1,p1)", "ReLU",
         "MaxPool2d", "Conv2d(64,128,k3,s1,p1)", "ReLU", "MaxPool2d", "Flatten",
         "Linear(1152,16)", "Linear(1152,16)"],
        ["Linear(16,6272)", "ReLU", "ConvTranspose2d(128,64,k4,s2,p1)", "ReLU",
         "ConvTranspose2d(64,32,k4,s2,p1)", "ReLU", "Conv2d(32,2,k3,s1,p1)"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("arch", sorted(ARCH_LAYERS))
def test_default_architectures_layer_by_layer(arch):
    from dgm_ext.vae.networks import make_decoder, make_encoder

    enc, dec = make_encoder(arch, 16), make_decoder(arch, 16, 2)
    assert (_layers(enc), _layers(dec)) == ARCH_LAYERS[arch]
    x = torch.rand(5, 1, 28, 28)
    mu, logvar, h = enc(x)
    assert mu.shape == logvar.shape == (5, 16) and h.shape == (5, enc.feature_dim)
    assert dec(mu).shape == (5, 2, 784)
    with pytest.raises(ValueError) as e:
        make_encoder("resnet", 16)
    assert str(e.value) == "arch must be one of ('mlp', 'mlp-deep', 'conv'), got 'resnet'"
    with pytest.raises(ValueError) as e:
        make_decoder("resnet", 16, 1)
    assert str(e.value) == "arch must be one of ('mlp', 'mlp-deep', 'conv'), got 'resnet'"


def test_deep_decoder_shift_and_conv_width():
    from dgm_ext.vae.networks import ConvDecoder, make_decoder

    dec = make_decoder("mlp-deep", 4, 1, shift=-5.0)
    with torch.no_grad():
        dec.net[-1].weight.zero_()
        dec.net[-1].bias.zero_()
    assert torch.equal(dec(torch.randn(3, 4)), torch.full((3, 1, 784), -5.0))
    assert make_decoder("mlp-deep", 4, 1).shift == 0.0
    assert _layers(ConvDecoder(4, width=8))[0] == "Linear(4,392)"
    assert ConvDecoder(4, width=4)(torch.randn(2, 4)).shape == (2, 1, 784)
    for width in (0, 2, 6):
        with pytest.raises(ValueError) as e:
            ConvDecoder(4, width=width)
        assert str(e.value) == f"width must be a positive multiple of 4, got {width}"


def test_amortisation_gap_is_optimised_minus_encoder_elbo():
    from dgm_ext.vae import amortisation_gap

    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=2, hidden=16)
    images = (torch.rand(6, 1, 28, 28) < 0.3).float()
    res = amortisation_gap(model, images, steps=30, lr=5e-2, eval_samples=20)
    assert res["gap"] == pytest.approx(res["optimised_elbo"] - res["encoder_elbo"], abs=1e-3)
    assert res["optimised_elbo"] > res["encoder_elbo"]  # 30 steps of per-example Adam help
    assert len(res["history"]) == 30 and res["history"][-1] > res["history"][0]
    mu_e, _, _ = model.encode(images)
    assert torch.equal(res["mu_encoder"], mu_e.detach())
    assert res["mu_optimised"].shape == res["logvar_optimised"].shape == (6, 2)


# -- Bernoulli and categorical likelihoods ------------------------------------------------------
def test_levels_and_bernoulli_prepare():
    from dgm_ext.vae.likelihoods import BernoulliLikelihood, _levels

    grey = torch.tensor([[-0.1, 0.0, 0.5 / 255, 127.4 / 255, 127.6 / 255, 1.0, 1.2]])
    assert torch.equal(_levels(grey), torch.tensor([[0, 0, 0, 127, 128, 255, 255]]))
    assert _levels(grey).dtype == torch.int64
    lik = BernoulliLikelihood("threshold")
    assert (lik.binarize, lik.bins) == ("threshold", 2) and BernoulliLikelihood().bins == 2
    x = lik.prepare(grey.double())
    assert x.dtype == torch.float32 and torch.equal(x, torch.tensor([[0.0, 0, 0, 0, 1, 1, 1]]))
    plain = BernoulliLikelihood()
    levels = torch.tensor([[0, 51, 255]])
    assert torch.equal(plain.prepare(levels), torch.tensor([[0.0, 0.2, 1.0]]))
    soft = plain.prepare(torch.tensor([[0.25, 1.0]], dtype=torch.float64))
    assert soft.dtype == torch.float32 and torch.equal(soft, torch.tensor([[0.25, 1.0]]))
    with pytest.raises(ValueError) as e:
        BernoulliLikelihood("round")
    assert str(e.value) == "binarize must be None or 'threshold', got 'round'"


def test_bernoulli_log_prob_in_float64_on_a_pixel_subset():
    from dgm_ext.vae.likelihoods import BernoulliLikelihood

    out, x = _out(1), (torch.rand(3, 10) < 0.5).float()
    index = torch.tensor([9, 2])
    got = BernoulliLikelihood().log_prob(out, x, fused, index=index)
    want = D.Bernoulli(logits=out[..., 0, index]).log_prob(x[:, index].double()).sum(-1)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)


def test_categorical_likelihood():
    from dgm_ext.vae import make_likelihood
    from dgm_ext.vae.likelihoods import CategoricalLikelihood

    lik = CategoricalLikelihood()
    assert (lik.k, lik.bins, lik.n_params) == (4, 4, 4)
    assert make_likelihood("categorical").k == 4
    assert make_likelihood("gaussian").logvar.shape == (784,)
    for k in (2, 256):
        assert CategoricalLikelihood(k).bins == k
    for k in (1, 3, 512, 4.0):
        with pytest.raises(ValueError) as e:
            CategoricalLikelihood(k)
        assert (
            str(e.value) == f"k (number of bins) must be an integer divisor of 256 >= 2, got {k!r}"
        )
    out = _out(4)  # (2, 3, k=4, D=10)
    x = torch.randint(0, 4, (3, 10))
    index = torch.tensor([5, 1, 8])
    got = lik.log_prob(out, x, fused, index=index)
    want = D.Categorical(logits=out[..., index].transpose(-1, -2)).log_prob(x[:, index]).sum(-1)
    torch.testing.assert_close(got, want)
    probs = torch.softmax(out, dim=-2)
    centres = torch.tensor([0.125, 0.375, 0.625, 0.875], dtype=torch.float64)
    torch.testing.assert_close(lik.mean(out), (probs * centres[:, None]).sum(-2))
    torch.manual_seed(1)
    s = lik.sample(out)
    assert s.shape == (2, 3, 10) and set(s.unique().tolist()) <= set(centres.tolist())


# -- the VAE model's plumbing ------------------------------------------------------------------
def test_vae_config_reaches_its_parts():
    m = build_vae(arch="mlp-deep", latent_dim=3, hidden=12, likelihood="bernoulli",
                  binarize="threshold", decoder_shift=-2.0, flow_length=1)  # fmt: skip
    assert m.likelihood.binarize == "threshold" and m.decoder.shift == -2.0
    assert m.encoder.feature_dim == 12 and m.decoder.net[0].out_features == 12
    assert m.flow is not None and m.flow.length == 1
    assert build_vae(arch="mlp", latent_dim=3, hidden=8).flow is None


def test_training_step_metrics_and_bits_per_dim():
    images = torch.rand(4, 1, 28, 28)
    for lik, offset in (("bernoulli", 0.0), ("gaussian", 784 * math.log(256.0))):
        m = build_vae(arch="mlp", latent_dim=3, hidden=8, likelihood=lik)
        torch.manual_seed(0)
        out = m.training_step(images)
        torch.manual_seed(0)
        t = m.elbo_terms(images)
        assert float(out["rec"]) == pytest.approx(-float(t["rec"].detach().mean()))
        assert float(out["loss"].detach()) == pytest.approx(-float(t["elbo"].mean()))
        want_bpd = (-float(out["elbo"]) + offset) / (784 * math.log(2.0))
        assert float(out["bpd"]) == pytest.approx(want_bpd)
        torch.manual_seed(0)
        same = m.training_step((images, torch.zeros(4)))  # (images, labels) batches
        assert float(same["loss"].detach()) == float(out["loss"].detach())


def test_encode_accepts_8_bit_levels_and_log_weights_prepares_targets():
    m = build_vae(arch="mlp", latent_dim=3, hidden=8)
    levels = torch.randint(0, 256, (2, 1, 28, 28))
    mu_l, lv_l, _ = m.encode(levels)
    mu_f, lv_f, _ = m.encode(levels.float() / 255.0)
    assert torch.equal(mu_l, mu_f) and torch.equal(lv_l, lv_f)
    images = (torch.rand(2, 1, 28, 28) < 0.5).float()
    torch.manual_seed(4)
    a = m.log_weights(images, 3)
    torch.manual_seed(4)
    b = m.log_weights(images, 3, x=m.prepare(images))
    assert a.shape == (3, 2) and torch.equal(a, b)


def test_posterior_samples_in_float64():
    m = build_vae(arch="mlp", latent_dim=3, hidden=8, flow_length=2).double()
    mu, logvar, h = (torch.randn(2, n, dtype=torch.float64) for n in (3, 3, 8))
    z, log_q = m.sample_posterior(mu, logvar, h, n_samples=5)
    assert z.dtype == log_q.dtype == torch.float64 and z.shape == (5, 2, 3)


# -- inference without an encoder ---------------------------------------------------------------
def _tiny_gaussian_vae():
    torch.manual_seed(0)
    return build_vae(arch="mlp", latent_dim=2, hidden=8, likelihood="gaussian")


def test_fit_posterior_is_adam_on_the_single_sample_elbo():
    """fit_posterior against a hand-written loop: Adam (lr 0.05) on per-example (mu, logvar)
    from N(0, I), one reparameterised sample per step, closed-form KL."""
    import inspect

    from dgm_ext.vae import fit_posterior

    defaults = inspect.signature(fit_posterior).parameters
    assert (defaults["steps"].default, defaults["lr"].default) == (500, 5e-2)
    assert defaults["n_samples"].default == 1
    model = _tiny_gaussian_vae()
    images = torch.rand(3, 1, 28, 28)
    x = model.prepare(images)
    torch.manual_seed(1)
    mu, logvar, hist = fit_posterior(model, images, steps=4, lr=0.05, x=x)

    torch.manual_seed(1)
    m = torch.zeros(3, 2, requires_grad=True)
    lv = torch.zeros(3, 2, requires_grad=True)
    opt = torch.optim.Adam([m, lv], lr=0.05)
    want = []
    for _ in range(4):
        z = m + torch.exp(0.5 * lv) * torch.randn(1, 3, 2)
        mean = torch.sigmoid(model.decode(z)[..., 0, :])
        std = torch.exp(0.5 * model.likelihood.logvar)
        rec = D.Normal(mean, std).log_prob(x).sum(-1).mean(0)
        kl = 0.5 * (m**2 + lv.exp() - 1 - lv).sum(-1)
        elbo = rec - kl
        opt.zero_grad()
        (-elbo.sum()).backward()
        opt.step()
        want.append(float(elbo.detach().mean()))
    torch.testing.assert_close(mu, m.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(logvar, lv.detach(), rtol=1e-4, atol=1e-5)
    assert hist == pytest.approx(want, rel=1e-5)
    # an initial posterior is copied, not trained in place
    init = (torch.ones(3, 2), torch.zeros(3, 2))
    mu2, _, _ = fit_posterior(model, images, steps=1, init=init)
    assert torch.equal(init[0], torch.ones(3, 2)) and not torch.equal(mu2, torch.zeros(3, 2))
    assert (mu2 - 1).abs().max() < 0.1  # one step of 0.05 from the initial mean
    with pytest.raises(ValueError) as e:
        fit_posterior(model, images, steps=0)
    assert str(e.value) == "steps must be >= 1, got 0"


def test_amortisation_gap_and_completion_use_their_arguments():
    import inspect

    from dgm_ext.vae import amortisation_gap, complete_left_half, fit_posterior, posterior_elbo
    from dgm_ext.vae.no_encoder import left_half_index

    for fn in (amortisation_gap, complete_left_half):
        p = inspect.signature(fn).parameters
        assert (p["steps"].default, p["lr"].default) == (500, 5e-2)
    assert inspect.signature(amortisation_gap).parameters["eval_samples"].default == 100
    assert inspect.signature(posterior_elbo).parameters["n_samples"].default == 100
    assert left_half_index(4, 2).tolist() == [0, 1, 4, 5]
    assert left_half_index(5, 1).tolist() == [0, 1]
    assert left_half_index().shape == (392,)

    model = _tiny_gaussian_vae()
    images = torch.rand(2, 1, 28, 28)
    torch.manual_seed(3)
    res = amortisation_gap(model, images, steps=3, lr=0.2, eval_samples=7)
    torch.manual_seed(3)
    x = model.prepare(images)  # the same dequantisation draw as amortisation_gap's
    mu, lv, _ = fit_posterior(model, images, steps=3, lr=0.2, x=x)
    assert torch.equal(res["mu_optimised"], mu) and torch.equal(res["logvar_optimised"], lv)

    torch.manual_seed(4)
    out = complete_left_half(model, images, steps=2, lr=0.3)
    torch.manual_seed(4)
    mu, lv, hist = fit_posterior(model, images, steps=2, lr=0.3, index=left_half_index())
    assert torch.equal(out["mu"], mu) and torch.equal(out["logvar"], lv)
    assert out["history"].tolist() == hist
    decoded = model.likelihood.mean(model.decode(mu)).reshape(-1, 1, 28, 28).detach()
    assert torch.equal(out["decoded"], decoded)
    assert torch.equal(out["completion"][..., :14], images[..., :14])
    assert torch.equal(out["completion"][..., 14:], decoded[..., 14:])
    assert torch.equal(out["observed"][..., :14], images[..., :14])
    assert (out["observed"][..., 14:] == 0.5).all()


def _hand_elbo(model, x, mu, logvar, n_samples, index):
    """The Monte-Carlo ELBO of a Gaussian-likelihood VAE written out: per example, averaged
    over ``n_samples`` reparameterised draws, the likelihood restricted to ``index``."""
    eps = torch.randn(n_samples, *mu.shape)
    z = mu + torch.exp(0.5 * logvar) * eps
    mean = torch.sigmoid(model.decode(z)[..., 0, :])
    std = torch.exp(0.5 * model.likelihood.logvar)
    log_p = D.Normal(mean, std).log_prob(x)
    rec = (log_p if index is None else log_p[..., index]).sum(-1).mean(0)
    return rec - 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(-1)


def test_posterior_elbo_is_per_example_on_the_given_pixels():
    from dgm_ext.vae import posterior_elbo
    from dgm_ext.vae.no_encoder import left_half_index

    model = _tiny_gaussian_vae()
    x = model.prepare(torch.rand(3, 1, 28, 28))
    mu, logvar = torch.randn(3, 2), 0.1 * torch.randn(3, 2)
    with torch.no_grad():
        for n, index in ((4, left_half_index()), (100, None)):
            torch.manual_seed(5)
            got = (
                posterior_elbo(model, x, mu, logvar, n, index)
                if index is not None
                else posterior_elbo(model, x, mu, logvar)  # the default: 100 samples
            )
            torch.manual_seed(5)
            want = _hand_elbo(model, x, mu, logvar, n, index)
            assert got.shape == (3,)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-3)


def test_amortisation_gap_and_completion_pass_their_settings_on(monkeypatch):
    """Which steps, lr, sample counts and pixels reach fit_posterior / posterior_elbo, with
    the defaults and with explicit values (both recorded instead of computed)."""
    import dgm_ext.vae.no_encoder as ne

    calls = []

    def fake_fit(model, images, steps, lr, **kw):
        calls.append(("fit", steps, lr, sorted(kw)))
        if "index" in kw:
            assert torch.equal(kw["index"], ne.left_half_index())
        b = images.shape[0]
        return torch.zeros(b, 2), torch.zeros(b, 2), [0.0]

    def fake_elbo(model, x, mu, logvar, n_samples="default", index=None):
        calls.append(("elbo", n_samples))
        return torch.zeros(x.shape[0])

    monkeypatch.setattr(ne, "fit_posterior", fake_fit)
    monkeypatch.setattr(ne, "posterior_elbo", fake_elbo)
    model = _tiny_gaussian_vae()
    images = torch.rand(2, 1, 28, 28)
    ne.amortisation_gap(model, images)
    assert calls == [("fit", 500, 5e-2, ["x"]), ("elbo", 100), ("elbo", 100)]
    calls.clear()
    ne.amortisation_gap(model, images, steps=3, lr=0.2, eval_samples=7)
    assert calls == [("fit", 3, 0.2, ["x"]), ("elbo", 7), ("elbo", 7)]
    calls.clear()
    out = ne.complete_left_half(model, images)
    assert calls == [("fit", 500, 5e-2, ["index"])]
    assert sorted(out) == ["completion", "decoded", "history", "logvar", "mu", "observed"]


def test_fit_posterior_default_steps_and_samples(monkeypatch):
    import dgm_ext.vae.no_encoder as ne

    seen = []

    def cheap_elbo(model, x, mu, logvar, n_samples, index):
        seen.append((n_samples, index))
        return -((mu - 1) ** 2).sum(-1) - (logvar**2).sum(-1)

    monkeypatch.setattr(ne, "_elbo", cheap_elbo)
    model = _tiny_gaussian_vae()
    mu, _, history = ne.fit_posterior(model, torch.rand(2, 1, 28, 28))
    assert len(history) == len(seen) == 500 and set(seen) == {(1, None)}
    assert torch.allclose(mu, torch.ones(2, 2), atol=0.05)  # Adam, lr 0.05, 500 steps
