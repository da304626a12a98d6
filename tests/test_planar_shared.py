"""One planar parameterisation (issue 23): the VAE's planar posterior and the planar flows use
the same û, with its float32 guard, and the guard changes nothing at ordinary parameters."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

import dgm_ext.ops as fused
import dgm_ext.vae
import dgm_ext.vae.planar
from dgm_ext.flows import PlanarFlow
from dgm_ext.flows.planar import planar_u_hat
from dgm_ext.vae import PlanarPosterior


def _appendix_a(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Rezende & Mohamed (2015), appendix A, as the VAE computed it before the shared û:
    ``û = u + (−1 + softplus(w·u) − w·u) w / ‖w‖²``."""
    wu = (w * u).sum(-1, keepdim=True)
    m = -1.0 + nn.functional.softplus(wu)
    return u + (m - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)


def test_the_vae_and_the_flows_share_one_u_hat_and_no_test_only_planar():
    assert dgm_ext.vae.planar.planar_u_hat is planar_u_hat
    assert dgm_ext.vae.planar_u_hat is planar_u_hat
    assert not hasattr(dgm_ext.vae.planar, "planar_flow_batched")
    assert "planar_flow_batched" not in dgm_ext.vae.__all__


def test_the_guard_changes_nothing_at_ordinary_parameters():
    g = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        w = torch.randn(4096, 5, generator=g, dtype=dtype)
        u = torch.randn(4096, 5, generator=g, dtype=dtype)
        keep = (w * u).sum(-1).abs() < 8  # ordinary: softplus(w·u) far above the float32 floor
        w, u = w[keep], u[keep]
        assert len(w) > 4000 and float((w * u).sum(-1).min()) < -5
        assert torch.equal(planar_u_hat(u, w), _appendix_a(u, w)), dtype


def _extreme_head(posterior: PlanarPosterior, feature_dim: int) -> None:
    """Amortised parameters with u = −50 w for every example, w = c + (small, varying with
    h), ‖c‖ = 1, b = 0: in float32 softplus(w·u ≈ −50) underflows and the unguarded layer
    folds (w·û = −1)."""
    d, k = posterior.latent_dim, posterior.length
    g = torch.Generator().manual_seed(1)
    w_weight = 0.1 * torch.randn(k * d, feature_dim, generator=g)
    c = torch.randn(k * d, generator=g)
    c = c / c.norm()
    with torch.no_grad():
        posterior.head.weight.zero_()
        posterior.head.bias.zero_()
        posterior.head.weight[k * d : 2 * k * d] = w_weight
        posterior.head.bias[k * d : 2 * k * d] = c
        posterior.head.weight[: k * d] = -50.0 * w_weight
        posterior.head.bias[: k * d] = -50.0 * c


def test_the_vae_posterior_keeps_float32_layers_invertible():
    d, feat, batch, samples = 3, 4, 64, 5
    post = PlanarPosterior(d, 1, feat, amortized=True)
    _extreme_head(post, feat)
    seen = {}

    def rows(z, u_hat, w, b):
        seen.update(u_hat=u_hat.detach(), w=w.detach(), b=b.detach())
        return fused.planar_flow_rows(z, u_hat, w, b)

    h = torch.randn(batch, feat, generator=torch.Generator().manual_seed(2))
    z0 = torch.zeros(samples, batch, d)  # w·z + b = 0: tanh' = 1, the worst case
    with torch.no_grad():
        _, logdet = post(z0, h, SimpleNamespace(planar_flow_rows=rows))
    w, u_hat = seen["w"].double(), seen["u_hat"].double()
    wu = (w * u_hat).sum(-1)  # (B, 1), in float64 from the float32 values the op used
    assert float(wu.max()) < -0.999  # nearly folded layers: the regime aimed at
    assert bool((1.0 + wu > 0).all()), f"{int((1.0 + wu <= 0).sum())} folded layers"
    assert bool(torch.isfinite(logdet).all())
    # each example's log-det at a = 0 is log(1 + w·û); the float32 op cancels 1 − 1 + O(1e-5)
    # so only the magnitude is checked: a layer this contractive has a log-det near −10
    expected = torch.log1p(wu[:, 0]).expand(samples, batch)
    assert float((logdet.double() - expected).abs().max()) < 1.0


def test_the_posterior_and_the_planar_flow_agree_at_extreme_parameters():
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, 3, generator=g)
    u = -50.0 * w
    b = torch.zeros(2)
    post = PlanarPosterior(3, 2, feature_dim=1, amortized=False)
    with torch.no_grad():
        post.u.copy_(u), post.w.copy_(w), post.b.copy_(b)
    flow = PlanarFlow.from_parameters(u, w, b, generative=True, ops="fused")
    z = 0.01 * torch.randn(7, 3, generator=g)
    with torch.no_grad():
        zk_post, ld_post = post(z, None, fused)
        zk_flow, ld_flow = flow.transform(z)
    assert torch.equal(zk_post, zk_flow) and torch.equal(ld_post, ld_flow)
    # and both differ from the unguarded û here: the guard is what they share
    with torch.no_grad():
        _, ld_raw = fused.planar_flow(z, _appendix_a(u, w), w, b)
    assert not torch.equal(ld_raw, ld_post)
