"""Likelihood ops (Bernoulli, Gaussian, Beta, Categorical): extreme values, exact closed
forms, scipy, clamping and ``eps``."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from _helpers import DEVICES, DTYPES, LOG_2PI, assert_close

from dgm_ext import ops
from dgm_ext.ops import reference


def _grads(out, *inputs):
    return torch.autograd.grad(out.sum(), inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_extreme_logits_exact(device, dtype):
    big = [1e4, -1e4, 100.0, -100.0, 0.0]
    logits = torch.tensor(big, dtype=dtype, device=device).repeat(2).view(10, 1)
    x = torch.tensor([0.0] * 5 + [1.0] * 5, dtype=dtype, device=device).view(10, 1)
    logits.requires_grad_()
    x.requires_grad_()
    out = ops.bernoulli_log_prob(logits, x)
    # x = 0: -softplus(l); x = 1: -softplus(-l)
    exp = [-1e4, 0.0, -100.0, 0.0, -math.log(2), 0.0, -1e4, 0.0, -100.0, -math.log(2)]
    exp = torch.tensor(exp, dtype=torch.float64, device=device)
    torch.testing.assert_close(out.double(), exp, rtol=1e-7, atol=1e-7)
    gl, gx = _grads(out, logits, x)
    assert torch.isfinite(gl).all() and torch.isfinite(gx).all()
    # d/dl = x - sigmoid(l); d/dx = logsigmoid(l) - logsigmoid(-l) = l
    exp_gl = (x - torch.sigmoid(logits)).detach()
    torch.testing.assert_close(gl, exp_gl, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx, logits.detach(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bernoulli_matches_scipy_binary_cross_entropy(dtype):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 7, generator=g, dtype=torch.float64) * 5
    x = torch.rand(6, 7, generator=g, dtype=torch.float64)
    ln, xn = logits.numpy(), x.numpy()
    exp = (xn * -np.logaddexp(0, -ln) + (1 - xn) * -np.logaddexp(0, ln)).sum(-1)
    got = ops.bernoulli_log_prob(logits.to(dtype), x.to(dtype))
    assert_close(got, torch.from_numpy(exp), dtype, scale=10)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gaussian_closed_form_and_extreme_logvar(dtype):
    x = torch.tensor([[0.5, -1.0, 2.0, 0.0]], dtype=torch.float64)
    mean = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    logvar = torch.tensor([[30.0, -30.0, 0.0, -30.0]], dtype=torch.float64)
    exp = (-0.5 * (LOG_2PI + logvar + (x - mean) ** 2 * torch.exp(-logvar))).sum(-1)
    xs, ms, ls = (t.to(dtype).clone().requires_grad_() for t in (x, mean, logvar))
    out = ops.gaussian_log_prob(xs, ms, ls)
    torch.testing.assert_close(
        out.double(), exp, rtol=1e-6 if dtype == torch.float32 else 1e-12, atol=0
    )
    for g in _grads(out, xs, ms, ls):
        assert torch.isfinite(g).all()
    # scipy
    sp = scipy.stats.norm.logpdf(x.numpy(), mean.numpy(), np.exp(logvar.numpy() / 2)).sum(-1)
    torch.testing.assert_close(out.double(), torch.from_numpy(sp), rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------ Beta
@pytest.mark.parametrize("dtype", DTYPES)
def test_beta_matches_scipy_over_concentration_range(dtype):
    conc = [1e-3, 1e-2, 0.5, 1.0, 3.0, 100.0, 1e4]
    a, b = np.meshgrid(conc, conc, indexing="ij")
    x = np.linspace(0.02, 0.98, a.size).reshape(a.shape)
    exp = scipy.stats.beta.logpdf(x, a, b)  # rows: sum over D = len(conc)
    args = [torch.from_numpy(v).to(dtype).requires_grad_() for v in (x, a, b)]
    out = ops.beta_log_prob(*args)
    exp_t = torch.from_numpy(exp.sum(-1))
    if dtype == torch.float64:
        torch.testing.assert_close(out, exp_t, rtol=1e-9, atol=1e-9)
    else:
        # float32: the exact value at the float32-rounded inputs (so that only the kernel's
        # arithmetic is measured), bounded by the float32 rounding of the terms the kernel
        # adds per element: (a-1) log x, (b-1) log1p(-x), lgamma(a), lgamma(b), lgamma(a+b),
        # i.e. a few eps32 times the row sum of their absolute values.
        x32, a32, b32 = (t.detach().double().numpy() for t in args)
        exp32 = torch.from_numpy(scipy.stats.beta.logpdf(x32, a32, b32).sum(-1))
        terms = (
            np.abs((a32 - 1) * np.log(x32))
            + np.abs((b32 - 1) * np.log1p(-x32))
            + np.abs(scipy.special.gammaln(a32))
            + np.abs(scipy.special.gammaln(b32))
            + np.abs(scipy.special.gammaln(a32 + b32))
        )
        bound = 4 * np.finfo(np.float32).eps * torch.from_numpy(terms.sum(-1))
        err = (out.double() - exp32).abs()
        assert (err <= bound).all(), (err, bound)
    grads = _grads(out, *args)
    for g in grads:
        assert torch.isfinite(g).all()
    # grads match float64 closed forms: d/da = log x - digamma(a) + digamma(a + b)
    ga = np.log(x) - scipy.special.digamma(a) + scipy.special.digamma(a + b)
    gb = np.log1p(-x) - scipy.special.digamma(b) + scipy.special.digamma(a + b)
    gx = (a - 1) / x - (b - 1) / (1 - x)
    for g, e in zip(grads, (gx, ga, gb), strict=True):
        e = torch.from_numpy(e)
        tol = 1e-8 if dtype == torch.float64 else 2e-3
        torch.testing.assert_close(g.double(), e, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("eps", [1e-6, 1e-3, 0.0])
def test_beta_boundary_x_is_clamped(dtype, eps):
    a = torch.tensor([[0.5, 2.0, 1e-3, 1e4]], dtype=dtype)
    b = torch.tensor([[2.0, 0.5, 3.0, 1e4]], dtype=dtype)
    kw = {} if eps == 1e-6 else {"eps": eps}
    for xv, xc in ((0.0, eps), (1.0, 1 - eps)):
        x = torch.full_like(a, xv, requires_grad=True)
        aa, bb = a.clone().requires_grad_(), b.clone().requires_grad_()
        out = ops.beta_log_prob(x, aa, bb, **kw)
        at = ops.beta_log_prob(torch.full_like(a, xc), a, b, **kw)
        nan = eps == 0.0  # log(0) terms of both signs may sum to nan
        torch.testing.assert_close(out, at, equal_nan=nan)
        torch.testing.assert_close(
            out, reference.beta_log_prob(x.detach(), a, b, eps), equal_nan=nan
        )
        if eps == 0.0:
            continue  # log(0): infinities are the mathematically right answer
        assert torch.isfinite(out).all()
        gx, ga, gb = _grads(out, x, aa, bb)
        assert torch.isfinite(ga).all() and torch.isfinite(gb).all()
        torch.testing.assert_close(gx, torch.zeros_like(gx))  # clamp: no gradient to x


def test_beta_eps_keyword_changes_clamp():
    x = torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64)
    a = torch.tensor([[2.0, 3.0, 0.7]], dtype=torch.float64)
    b = torch.tensor([[1.5, 0.4, 2.0]], dtype=torch.float64)
    out = ops.beta_log_prob(x, a, b, eps=1e-2)
    xc = torch.tensor([[1e-2, 1 - 1e-2, 0.5]], dtype=torch.float64)
    exp = scipy.stats.beta.logpdf(xc.numpy(), a.numpy(), b.numpy()).sum(-1)
    torch.testing.assert_close(out, torch.from_numpy(exp))
    assert not torch.equal(out, ops.beta_log_prob(x, a, b))


# ------------------------------------------------------------------------------ Categorical
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_extreme_logits_exact(device, dtype):
    logits = torch.tensor(
        [[[1e4, -1e4, 0.0], [-1e4, -1e4, 1e4], [1e4, 1e4, -1e4]]], dtype=dtype, device=device
    ).requires_grad_()
    x = torch.tensor([[1, 2, 0]], device=device)
    out = ops.categorical_log_prob(logits, x)
    # -2e4 + 0 + log(1/2)
    exp = torch.tensor([-2e4 - math.log(2)], dtype=torch.float64, device=device)
    torch.testing.assert_close(out.double(), exp, rtol=1e-7, atol=1e-3)
    (g,) = _grads(out, logits)
    assert torch.isfinite(g).all()
    exp_g = torch.nn.functional.one_hot(x, 3).to(dtype) - torch.softmax(logits.detach(), -1)
    # float32: the saved logsumexp (~1e4) carries an absolute rounding error of ~1e-3 / 2,
    # so the recomputed softmax is only good to ~3e-4 at these magnitudes.
    t = 1e-3 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(g, exp_g, rtol=t, atol=t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_categorical_large_k_matches_scipy(dtype):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 6, 256, generator=g, dtype=torch.float64) * 4
    x = torch.randint(0, 256, (4, 6), generator=g)
    lsm = logits.numpy() - scipy.special.logsumexp(logits.numpy(), axis=-1, keepdims=True)
    exp = np.take_along_axis(lsm, x.numpy()[..., None], -1)[..., 0].sum(-1)
    got = ops.categorical_log_prob(logits.to(dtype), x)
    assert_close(got, torch.from_numpy(exp), dtype, scale=50)


def test_categorical_x_gets_no_gradient_and_logits_grad_sums_to_zero():
    logits = torch.randn(3, 4, 5, dtype=torch.float64, requires_grad=True)
    x = torch.randint(0, 5, (3, 4))
    out = ops.categorical_log_prob(logits, x)
    (g,) = _grads(out, logits)
    torch.testing.assert_close(g.sum(-1), torch.zeros(3, 4, dtype=torch.float64))
