"""KL divergences and the reparameterisation: extreme log-variances, closed forms, the RNG."""

from __future__ import annotations

import pytest
import torch
from _helpers import DEVICES, DTYPES

from dgm_ext import ops


def _kl64(mu_q, lv_q, mu_p, lv_p):
    mu_q, lv_q, mu_p, lv_p = (t.double() for t in (mu_q, lv_q, mu_p, lv_p))
    return 0.5 * (lv_p - lv_q + (lv_q - lv_p).exp() + (mu_q - mu_p) ** 2 / lv_p.exp() - 1).sum(-1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_extreme_logvar_finite(dtype):
    mu = torch.tensor([[0.5, -2.0, 1.0, 0.0]], dtype=dtype, requires_grad=True)
    lv = torch.tensor([[30.0, -30.0, 0.0, -30.0]], dtype=dtype, requires_grad=True)
    out = ops.kl_normal_std(mu, lv)
    z = torch.zeros_like(mu)
    exp = _kl64(mu.detach(), lv.detach(), z, z)
    torch.testing.assert_close(out.double(), exp, rtol=1e-6, atol=0)
    gm, glv = torch.autograd.grad(out.sum(), (mu, lv))
    torch.testing.assert_close(gm, mu.detach())
    torch.testing.assert_close(glv, 0.5 * (lv.detach().exp() - 1))

    mu_p = torch.tensor([[0.0, 1.0, -1.0, 0.5]], dtype=dtype, requires_grad=True)
    lv_p = torch.tensor([[-30.0, 30.0, 30.0, -30.0]], dtype=dtype, requires_grad=True)
    out = ops.kl_normal(mu, lv, mu_p, lv_p)
    exp = _kl64(mu.detach(), lv.detach(), mu_p.detach(), lv_p.detach())
    torch.testing.assert_close(out.double(), exp, rtol=1e-6, atol=0)
    for g in torch.autograd.grad(out.sum(), (mu, lv, mu_p, lv_p)):
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_of_identical_distributions_is_zero(device, dtype):
    mu = torch.randn(5, 7, dtype=dtype, device=device)
    lv = torch.randn(5, 7, dtype=dtype, device=device)
    torch.testing.assert_close(
        ops.kl_normal(mu, lv, mu, lv), torch.zeros(5, dtype=dtype, device=device)
    )
    z = torch.zeros_like(mu)
    torch.testing.assert_close(ops.kl_normal(mu, lv, z, z), ops.kl_normal_std(mu, lv))
    assert (ops.kl_normal_std(mu, lv) >= 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_reparameterize_extreme_logvar(dtype):
    mu = torch.tensor([[1.0, -1.0, 0.0]], dtype=dtype, requires_grad=True)
    lv = torch.tensor([[30.0, -30.0, 0.0]], dtype=dtype, requires_grad=True)
    eps = torch.tensor([[0.5, 2.0, -1.0]], dtype=dtype, requires_grad=True)
    z = ops.reparameterize(mu, lv, eps)
    exp = mu.detach().double() + (lv.detach().double() / 2).exp() * eps.detach().double()
    torch.testing.assert_close(z.double(), exp, rtol=1e-6, atol=1e-12)
    gm, glv, ge = torch.autograd.grad(z.sum(), (mu, lv, eps))
    torch.testing.assert_close(gm, torch.ones_like(gm))
    torch.testing.assert_close(ge, (lv.detach() / 2).exp())
    torch.testing.assert_close(glv, 0.5 * (lv.detach() / 2).exp() * eps.detach())


def test_reparameterize_eps_none_uses_torch_rng():
    mu = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    lv = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    torch.manual_seed(1234)
    z1 = ops.reparameterize(mu, lv)
    torch.manual_seed(1234)
    z2 = ops.reparameterize(mu, lv)
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    torch.manual_seed(1234)
    eps = torch.randn(3, dtype=torch.float64)
    torch.testing.assert_close(z1, ops.reparameterize(mu, lv, eps), rtol=0, atol=0)
    assert not torch.equal(z1, ops.reparameterize(mu, lv))  # RNG advanced

    n = 40000
    torch.manual_seed(0)
    z = ops.reparameterize(mu.expand(n, 3), lv)
    assert z.shape == (n, 3) and z.dtype == torch.float64
    std = (lv / 2).exp()
    # 5 standard errors
    assert ((z.mean(0) - mu).abs() < 5 * std / n**0.5).all(), z.mean(0)
    assert ((z.std(0) / std - 1).abs() < 5 / (2 * n) ** 0.5).all(), z.std(0)


def test_reparameterize_eps_none_gradients():
    mu = torch.randn(4, 3, requires_grad=True)
    lv = torch.randn(3, requires_grad=True)
    torch.manual_seed(7)
    z = ops.reparameterize(mu, lv)
    gm, glv = torch.autograd.grad(z.sum(), (mu, lv))
    torch.manual_seed(7)
    eps = torch.randn(4, 3)
    torch.testing.assert_close(gm, torch.ones_like(mu))
    torch.testing.assert_close(glv, (0.5 * (lv.detach() / 2).exp() * eps).sum(0))
