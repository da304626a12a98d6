"""Unit tests of dgm_ext.vae (models, likelihoods, evaluation, latent and inference tools)."""

from __future__ import annotations

import math

import pytest
import torch
from _planar_reference import planar_flow_batched
from torch import distributions as D
from torch.utils._python_dispatch import TorchDispatchMode

from dgm_ext.vae import (
    VAE,
    VAEConfig,
    build_vae,
    complete_left_half,
    different_class_pairs,
    evaluate_elbo,
    evaluate_log_likelihood,
    fit_posterior,
    importance_log_likelihood,
    interpolate,
    load_vae,
    make_likelihood,
    manifold_grid,
    manifold_images,
    pca,
    planar_u_hat,
    posterior_elbo,
    save_vae,
)
from dgm_ext.vae.likelihoods import CategoricalLikelihood

LIKELIHOOD_KW = {
    "bernoulli": {"likelihood": "bernoulli"},
    "gaussian": {"likelihood": "gaussian"},
    "beta": {"likelihood": "beta"},
    "categorical": {"likelihood": "categorical", "categories": 4},
    "categorical256": {"likelihood": "categorical", "categories": 256},
}


def _images(n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g)


@pytest.mark.parametrize("arch", ["mlp", "mlp-deep", "conv"])
@pytest.mark.parametrize("lik", list(LIKELIHOOD_KW))
def test_shapes_and_training_step(arch: str, lik: str) -> None:
    torch.manual_seed(0)
    model = build_vae(
        arch=arch, latent_dim=3, hidden=32 if arch != "conv" else None, **LIKELIHOOD_KW[lik]
    )
    x = _images(4)
    mu, logvar, h = model.encode(x)
    assert mu.shape == logvar.shape == (4, 3) and h.shape[0] == 4
    out = model.decode(torch.randn(5, 4, 3))
    assert out.shape == (5, 4, model.likelihood.n_params, 784)
    metrics = model.training_step((x, torch.zeros(4, dtype=torch.long)))
    assert set(metrics) >= {"loss", "elbo", "rec", "kl", "bpd"}
    assert metrics["loss"].ndim == 0 and torch.isfinite(metrics["loss"])
    metrics["loss"].backward()
    assert all(p.grad is not None for p in model.decoder.parameters())
    assert model.sample(3).shape == (3, 1, 28, 28)
    assert model.sample(3, mean=False).shape == (3, 1, 28, 28)
    assert model.reconstruct(x).shape == (4, 1, 28, 28)
    assert importance_log_likelihood(model, x, k=3).shape == (4,)


def test_elbo_matches_torch_distributions() -> None:
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=4, hidden=16, likelihood="bernoulli")
    x = (_images(5) > 0.5).float()
    torch.manual_seed(1)
    terms = model.elbo_terms(x)
    torch.manual_seed(1)
    mu, logvar, _ = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = model.decode(z)[:, 0]
    rec = D.Bernoulli(logits=logits).log_prob(x.flatten(1)).sum(-1)
    q = D.Normal(mu, torch.exp(0.5 * logvar))
    kl = D.kl_divergence(q, D.Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    torch.testing.assert_close(terms["rec"], rec, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(terms["kl"], kl, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms["elbo"], rec - kl, rtol=1e-5, atol=1e-3)
    # the trainer loss is the batch mean of the negative ELBO
    torch.manual_seed(1)
    loss = model.training_step((x, None))["loss"]
    torch.testing.assert_close(loss, -(rec - kl).mean(), rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("name", ["gaussian", "beta", "categorical"])
def test_likelihood_log_prob_matches_torch_distributions(name: str) -> None:
    torch.manual_seed(0)
    lik = make_likelihood(name, num_pixels=784, categories=4)
    out = torch.randn(3, lik.n_params, 784)
    x = lik.prepare(_images(3))
    from dgm_ext import ops

    got = lik.log_prob(out, x, ops)
    if name == "gaussian":
        dist = D.Normal(torch.sigmoid(out[:, 0]), torch.exp(0.5 * lik.logvar))
        want = dist.log_prob(x).sum(-1)
        assert torch.all((x > 0) & (x < 1))  # dequantised
    elif name == "beta":
        conc = torch.nn.functional.softplus(out) + 1e-3
        want = D.Beta(conc[:, 0], conc[:, 1]).log_prob(x).sum(-1)
    else:
        want = D.Categorical(logits=out.transpose(1, 2)).log_prob(x).sum(-1)
        assert x.dtype == torch.int64 and int(x.max()) <= 3
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize(
    "lik", [CategoricalLikelihood(4), make_likelihood("bernoulli", binarize="threshold")]
)
def test_binned_likelihood_is_normalised_over_8bit_levels(lik) -> None:
    """Spreading bin mass uniformly over its levels gives a distribution over 0..255."""
    from dgm_ext import ops

    levels = torch.arange(256, dtype=torch.float32)[:, None] / 255.0  # 256 one-pixel images
    x = lik.prepare(levels)
    out = torch.randn(1, lik.n_params, 1).expand(256, lik.n_params, 1)
    logp = lik.log_prob(out, x, ops) - lik.log_256_offset(1)
    torch.testing.assert_close(torch.logsumexp(logp, 0), torch.tensor(0.0), atol=1e-4, rtol=0)


def test_importance_sampling_bounds_and_converges_to_quadrature() -> None:
    """L=1 model: exact log p(x) by quadrature; IS >= ELBO on average; error falls with K."""
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=1, hidden=8, likelihood="bernoulli")
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(0.3)
    x = (_images(4) > 0.7).float()
    grid = torch.linspace(-9, 9, 20001)[:, None]
    with torch.no_grad():
        logits = model.decode(grid)[:, 0]  # (G, 784)
        ll = D.Bernoulli(logits=logits[:, None]).log_prob(x.flatten(1)[None]).sum(-1)  # (G, B)
        lp = D.Normal(0.0, 1.0).log_prob(grid)  # (G, 1)
        exact = torch.logsumexp(ll + lp, 0) + math.log(float(grid[1] - grid[0]))
        mu, logvar, _ = model.encode(x)
        elbo = posterior_elbo(model, x.flatten(1), mu, logvar, n_samples=2000)
    errors = []
    for k in (1, 10, 100, 1000):
        torch.manual_seed(k)
        est = torch.stack([importance_log_likelihood(model, x, k=k) for _ in range(20)])
        assert float(est.mean()) >= float(elbo.mean()) - 0.05
        assert torch.all(est.mean(0) <= exact + 1.0)  # E log p_hat <= log p (Jensen)
        errors.append(float((est - exact).abs().mean()))
    assert errors[-1] < 0.5
    assert errors[3] < errors[2] < errors[1] < errors[0]


def test_importance_sampling_chunking_is_memory_bounded_and_exact(monkeypatch) -> None:
    """Chunks never exceed the element budget and are combined by one exact logsumexp."""
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=2, hidden=8)
    x = (_images(3) > 0.5).float()
    table = torch.randn(400, 3, dtype=torch.float64) * 50.0 - 500.0
    sizes: list[int] = []

    def fake_log_weights(images, n_samples, x=None):
        start = sum(sizes)
        sizes.append(n_samples)
        return table[start : start + n_samples]

    monkeypatch.setattr(model, "log_weights", fake_log_weights)
    got = importance_log_likelihood(model, x, k=400, max_elements=784 * 3 * 7)
    assert max(sizes) <= 7 and sum(sizes) == 400
    want = torch.logsumexp(table, 0) - math.log(400)
    torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="k"):
        importance_log_likelihood(model, x, k=0)


def test_evaluate_functions_on_tensor_data() -> None:
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=2, hidden=8)
    x = (_images(10) > 0.5).float()
    e = evaluate_elbo(model, x, batch_size=3)
    assert e["elbo"] < 0 and e["kl"] >= 0
    assert e["bpd"] == pytest.approx(-e["elbo"] / (784 * math.log(2)))
    r = evaluate_log_likelihood(model, x, k=20, batch_size=4)
    assert r["n"] == 10 and r["log_px"] > e["elbo"] - 1.0
    with pytest.raises(TypeError, match="data"):
        evaluate_elbo(model, "nope")


def test_manifold_grid_quantiles() -> None:
    z = manifold_grid(20, 0.05, 0.95)
    assert z.shape == (400, 2)
    cdf = D.Normal(0.0, 1.0).cdf(z.double())
    torch.testing.assert_close(
        cdf[:20, 0], torch.linspace(0.05, 0.95, 20, dtype=torch.float64), atol=1e-6, rtol=0
    )
    # z1 grows to the right along a row, z2 decreases downwards
    assert torch.all(z[1:20, 0] > z[:19, 0]) and torch.all(z[:20, 1] == z[0, 1])
    assert z[0, 1] > z[-1, 1]
    torch.testing.assert_close(
        cdf[::20, 1], torch.linspace(0.95, 0.05, 20, dtype=torch.float64), atol=1e-6, rtol=0
    )
    model = build_vae(arch="mlp", latent_dim=2, hidden=8)
    assert manifold_images(model, 4).shape == (16, 1, 28, 28)
    with pytest.raises(ValueError, match="latent_dim"):
        manifold_images(build_vae(arch="mlp", latent_dim=3, hidden=8))
    with pytest.raises(ValueError, match="lo"):
        manifold_grid(5, 0.0, 0.9)


def test_pca_recovers_principal_axis() -> None:
    g = torch.Generator().manual_seed(0)
    direction = torch.tensor([3.0, 4.0, 0.0, 0.0, 0.0]) / 5.0
    t = torch.randn(500, 1, generator=g) * 5.0
    x = t * direction + 0.1 * torch.randn(500, 5, generator=g) + 7.0
    proj, comps, ratio = pca(x, 2)
    assert proj.shape == (500, 2) and comps.shape == (2, 5)
    assert abs(float(comps[0] @ direction)) == pytest.approx(1.0, abs=1e-3)
    assert float(ratio[0]) > 0.99 and float(ratio.sum()) <= 1.0
    torch.testing.assert_close(proj.mean(0), torch.zeros(2), atol=1e-4, rtol=0)
    corr = torch.corrcoef(torch.stack([proj[:, 0], t[:, 0]]))[0, 1]
    assert abs(float(corr)) > 0.999
    with pytest.raises(ValueError, match="k"):
        pca(x, 6)


def test_interpolation_and_pairs() -> None:
    model = build_vae(arch="mlp", latent_dim=3, hidden=8)
    x = _images(2)
    path = interpolate(model, x[0], x[1], steps=5)
    assert path.shape == (5, 1, 28, 28)
    torch.testing.assert_close(path[0], model.reconstruct(x[:1])[0])
    torch.testing.assert_close(path[-1], model.reconstruct(x[1:])[0])
    labels = torch.tensor([0, 0, 1, 2, 2])
    pairs = different_class_pairs(labels, 6, seed=1)
    assert len(pairs) == 6 and all(labels[i] != labels[j] for i, j in pairs)
    with pytest.raises(ValueError, match="labels"):
        different_class_pairs(torch.zeros(4, dtype=torch.long), 2)


def test_fit_posterior_improves_elbo_and_beats_prior() -> None:
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=4, hidden=32)
    x = (_images(4) > 0.5).float()
    mu, logvar, hist = fit_posterior(model, x, steps=150, lr=0.05)
    assert len(hist) == 150 and sum(hist[-10:]) / 10 > hist[0]
    xt = model.prepare(x)
    prior = posterior_elbo(model, xt, torch.zeros_like(mu), torch.zeros_like(logvar), 200)
    fitted = posterior_elbo(model, xt, mu, logvar, 200)
    assert float(fitted.mean()) > float(prior.mean())
    # decoder parameters are not trained by the posterior fit
    assert all(p.grad is None for p in model.parameters())


def test_completion_only_uses_observed_pixels() -> None:
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=3, hidden=16)
    a = (_images(3, seed=1) > 0.5).float()
    b = a.clone()
    b[..., 14:] = 1.0 - b[..., 14:]  # change only the unobserved right half
    torch.manual_seed(5)
    ra = complete_left_half(model, a, steps=30)
    torch.manual_seed(5)
    rb = complete_left_half(model, b, steps=30)
    torch.testing.assert_close(ra["mu"], rb["mu"])
    torch.testing.assert_close(ra["completion"][..., 14:], rb["completion"][..., 14:])
    torch.testing.assert_close(ra["completion"][..., :14], a[..., :14])
    assert torch.all(ra["observed"][..., 14:] == 0.5)
    # changing an observed pixel does change the fit
    c = a.clone()
    c[..., :14] = 1.0 - c[..., :14]
    torch.manual_seed(5)
    rc = complete_left_half(model, c, steps=30)
    assert not torch.allclose(ra["mu"], rc["mu"])


def test_u_hat_guarantees_invertibility() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(1000, 4, generator=g, dtype=torch.float64)
    u = -1.5 * w + torch.randn(1000, 4, generator=g, dtype=torch.float64)
    assert float(((w * u).sum(-1)).min()) < -1
    u_hat = planar_u_hat(u, w)
    assert torch.all((w * u_hat).sum(-1) > -1.0)
    # rows that were already invertible are moved only by m(a) - a along w
    # and û leaves u unchanged in directions orthogonal to w
    perp = u - (w * u).sum(-1, keepdim=True) * w / (w * w).sum(-1, keepdim=True)
    perp_hat = u_hat - (w * u_hat).sum(-1, keepdim=True) * w / (w * w).sum(-1, keepdim=True)
    torch.testing.assert_close(perp, perp_hat)
    # float32 with extreme w·u: softplus underflows, the bound still holds (w·û >= -1)
    u32 = planar_u_hat((-50.0 * w).float(), w.float())
    assert torch.all((w.float() * u32).sum(-1) >= -1.0 - 1e-3)  # rounding of the cancellation


def test_planar_logdet_matches_autograd_jacobian() -> None:
    g = torch.Generator().manual_seed(0)
    d, k = 3, 4
    u = planar_u_hat(
        torch.randn(k, d, generator=g, dtype=torch.float64),
        w := torch.randn(k, d, generator=g, dtype=torch.float64),
    )
    b = torch.randn(k, generator=g, dtype=torch.float64)
    z = torch.randn(5, d, generator=g, dtype=torch.float64)
    _, logdet = planar_flow_batched(z, u, w, b)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: planar_flow_batched(v, u, w, b)[0], z[i])
        assert float(logdet[i]) == pytest.approx(float(torch.linalg.slogdet(jac)[1]), abs=1e-8)
    from dgm_ext import ops

    zk_op, ld_op = ops.planar_flow(z, u, w, b)
    zk, ld = planar_flow_batched(z, u, w, b)
    torch.testing.assert_close(zk_op, zk)
    torch.testing.assert_close(ld_op, ld)


def _ind_u_hat(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rezende & Mohamed (2015) appendix A: û = u + (−1 + log(1 + e^{w·u}) − w·u) w / ‖w‖²."""
    wu = torch.dot(w, u)
    return u + (-1.0 + torch.log1p(torch.exp(wu)) - wu) * w / torch.dot(w, w)


def _ind_planar_map(z: torch.Tensor, u, w, b) -> torch.Tensor:
    """One example's planar flow z ↦ z + û_k tanh(w_k·z + b_k), k = 1..K (1-D z)."""
    for k in range(u.shape[0]):
        z = z + _ind_u_hat(u[k], w[k]) * torch.tanh(torch.dot(w[k], z) + b[k])
    return z


def _flow_posterior_reference(model, mu, logvar, h, eps):
    """Independent (float64) z_K, log q(z_K|x) and log p(z_K) from the noise ``eps`` (S, B, L):
    log q(z_K|x) = log N(z_0; mu, σ²) − log|det ∂z_K/∂z_0| with the Jacobian by autograd."""
    u, w, b = (t.detach().double() for t in model.flow.params(h))
    mu, logvar, eps = mu.detach().double(), logvar.detach().double(), eps.double()
    z0 = mu + torch.exp(0.5 * logvar) * eps
    log_q0 = D.Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1)
    zk = torch.empty_like(z0)
    logdet = torch.empty(z0.shape[:-1], dtype=torch.float64)
    for idx in torch.cartesian_prod(*(torch.arange(n) for n in z0.shape[:-1])).view(
        -1, z0.dim() - 1
    ):
        idx = tuple(idx.tolist())
        ex = idx[-1]  # the example (batch) index
        params = (u[ex], w[ex], b[ex]) if model.flow.amortized else (u, w, b)
        zk[idx] = _ind_planar_map(z0[idx], *params)
        jac = torch.autograd.functional.jacobian(
            lambda v, p=params: _ind_planar_map(v, *p), z0[idx]
        )
        logdet[idx] = torch.linalg.slogdet(jac).logabsdet
    log_p = D.Normal(0.0, 1.0).log_prob(zk).sum(-1)
    return zk, log_q0 - logdet, log_p


@pytest.mark.parametrize("amortized", [True, False])
def test_planar_posterior_vae(amortized: bool) -> None:
    torch.manual_seed(0)
    model = build_vae(arch="mlp", latent_dim=2, hidden=16, flow_length=3, flow_amortized=amortized)
    x = (_images(4) > 0.5).float()
    with torch.no_grad():  # make the flow non-trivial
        for p in model.flow.parameters():
            p.add_(0.5 * torch.randn_like(p))
    mu, logvar, h = model.encode(x)
    # sample_posterior draws its noise as torch.randn(S, B, L) first: replay it
    torch.manual_seed(3)
    z, log_q = model.sample_posterior(mu, logvar, h, n_samples=3)
    torch.manual_seed(3)
    eps = torch.randn(3, 4, 2)
    assert z.shape == (3, 4, 2) and log_q.shape == (3, 4)
    zk, exp_log_q, _ = _flow_posterior_reference(model, mu, logvar, h, eps)
    torch.testing.assert_close(z.double(), zk, atol=1e-5, rtol=1e-5)  # the noise was replayed
    # log q(z_K|x) = log N(z_0) − log|det J| against the autograd Jacobian, every sample
    torch.testing.assert_close(log_q.double(), exp_log_q, atol=1e-4, rtol=1e-5)
    # the flow's own log-det for one example, as before
    u, w, b = model.flow.params(h)
    u, w, b = (t[0] if amortized else t for t in (u, w, b))
    z0 = (mu[0] + torch.exp(0.5 * logvar[0]) * eps[0, 0]).detach()
    jac = torch.autograd.functional.jacobian(
        lambda v: planar_flow_batched(v, planar_u_hat(u, w), w, b)[0], z0
    )
    _, logdet = model.flow(z0[None], h[:1], model.ops)
    torch.testing.assert_close(logdet[0], torch.linalg.slogdet(jac)[1], atol=1e-4, rtol=1e-4)
    # the single-sample KL term of elbo_terms: log q(z_K|x) − log p(z_K), with its noise replayed
    torch.manual_seed(5)
    terms = model.elbo_terms(x)
    torch.manual_seed(5)
    eps1 = torch.randn(4, 2)
    _, exp_log_q1, exp_log_p1 = _flow_posterior_reference(model, mu, logvar, h, eps1)
    torch.testing.assert_close(terms["kl"].double(), exp_log_q1 - exp_log_p1, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(terms["elbo"], terms["rec"] - terms["kl"])
    metrics = model.training_step((x, None))
    assert torch.isfinite(metrics["loss"])
    metrics["loss"].backward()
    assert all(p.grad is not None for p in model.flow.parameters())
    assert torch.isfinite(importance_log_likelihood(model, x, k=5)).all()


class _RecordOps(TorchDispatchMode):
    """Records every operator that reaches the dispatcher, forward and backward."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("n_samples", [None, 3], ids=["one_sample", "three_samples"])
def test_amortised_planar_posterior_runs_the_fused_per_row_op(n_samples) -> None:
    """The amortised flow posterior is the fused per-row op (dgm_ext::planar_flow_rows and its
    fused backward), with one sample per example and with S samples sharing each example's
    layers; the reference backend runs no dgm_ext op and gives the same z_K, log q(z_K|x) and
    gradients of the flow head."""
    torch.manual_seed(0)
    fused = build_vae(arch="mlp", latent_dim=3, hidden=16, flow_length=4)
    with torch.no_grad():  # a non-trivial flow
        for p in fused.flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    ref = build_vae(ops="reference", arch="mlp", latent_dim=3, hidden=16, flow_length=4)
    ref.load_state_dict(fused.state_dict())
    x = _images(5)
    res = {}
    for name, model in (("fused", fused), ("reference", ref)):
        mu, logvar, h = model.encode(x)
        torch.manual_seed(7)
        with _RecordOps() as rec:
            z, log_q = model.sample_posterior(mu, logvar, h, n_samples=n_samples)
            (z.square().sum() + log_q.sum()).backward()
        grads = [p.grad for p in model.flow.parameters()]
        res[name] = (rec.names, z.detach(), log_q.detach(), grads)
    shape = (5, 3) if n_samples is None else (n_samples, 5, 3)
    assert res["fused"][1].shape == shape
    assert {"dgm_ext.planar_flow_rows.default", "dgm_ext.planar_flow_rows_backward.default"} <= (
        res["fused"][0]
    )
    assert not any(n.startswith("dgm_ext.") for n in res["reference"][0])
    for a, b in zip(res["fused"][1:3], res["reference"][1:3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(res["fused"][3], res["reference"][3], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_save_load_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_vae(arch="conv", latent_dim=3, likelihood="categorical", categories=4)
    path = save_vae(model, tmp_path / "m.pt")
    loaded = load_vae(path, ops="reference")
    assert isinstance(loaded, VAE) and loaded.config == model.config
    assert loaded.ops.__name__ == "dgm_ext.ops.reference"
    z = torch.randn(2, 3)
    torch.testing.assert_close(loaded.sample(z=z), model.sample(z=z))
    with pytest.raises(FileNotFoundError, match="path"):
        load_vae(tmp_path / "missing.pt")


def test_fused_and_reference_backends_agree() -> None:
    torch.manual_seed(0)
    fused = build_vae(arch="mlp", latent_dim=3, hidden=16, likelihood="beta")
    ref = build_vae(ops="reference", arch="mlp", latent_dim=3, hidden=16, likelihood="beta")
    ref.load_state_dict(fused.state_dict())
    x = _images(4)
    torch.manual_seed(2)
    a = fused.elbo_terms(x)["elbo"]
    torch.manual_seed(2)
    b = ref.elbo_terms(x)["elbo"]
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-2)


def test_bad_arguments_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="arch"):
        VAEConfig(arch="rnn")
    with pytest.raises(ValueError, match="latent_dim"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ValueError, match="likelihood"):
        build_vae(likelihood="poisson")
    with pytest.raises(ValueError, match="k"):
        CategoricalLikelihood(3)
    with pytest.raises(ValueError, match="binarize"):
        make_likelihood("bernoulli", binarize="otsu")
    with pytest.raises(ValueError, match="flow_length"):
        VAEConfig(flow_length=-1)
    with pytest.raises(TypeError, match="ops"):
        build_vae(ops=3)
