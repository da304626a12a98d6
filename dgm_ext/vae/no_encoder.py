"""Inference without the encoder: per-example Gaussian posteriors fitted by gradient ascent."""

from __future__ import annotations

import torch
from torch import Tensor

from dgm_ext.vae.model import VAE

__all__ = [
    "amortisation_gap",
    "complete_left_half",
    "fit_posterior",
    "left_half_index",
    "posterior_elbo",
]


def _elbo(model: VAE, x: Tensor, mu: Tensor, logvar: Tensor, n_samples: int, index: Tensor | None):
    ops = model.ops
    shape = (n_samples, *mu.shape)
    eps = torch.randn(shape, dtype=mu.dtype, device=mu.device)
    z = ops.reparameterize(mu.expand(shape), logvar.expand(shape), eps)
    rec = model.likelihood.log_prob(model.decode(z), x, ops, index=index).mean(0)
    return rec - ops.kl_normal_std(mu, logvar)


def posterior_elbo(
    model: VAE,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    n_samples: int = 100,
    index: Tensor | None = None,
) -> Tensor:
    """Monte-Carlo ELBO ``(B,)`` of targets ``x`` under q = N(mu, diag exp(logvar))."""
    with torch.no_grad():
        return _elbo(model, x, mu, logvar, n_samples, index)


def fit_posterior(
    model: VAE,
    images: Tensor,
    steps: int = 500,
    lr: float = 5e-2,
    n_samples: int = 1,
    index: Tensor | None = None,
    init: tuple[Tensor, Tensor] | None = None,
    x: Tensor | None = None,
) -> tuple[Tensor, Tensor, list[float]]:
    """Maximise the ELBO over per-example ``(mu, logvar)`` for a fixed decoder (Adam).

    ``index`` restricts the likelihood to those pixels (shared by the batch), so pixels
    outside it never influence the fit. ``init`` defaults to the prior N(0, I). Returns
    ``(mu, logvar, history of the mean ELBO per step)``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if x is None:
        x = model.prepare(images)
    b, latent = x.shape[0], model.latent_dim
    if init is None:
        mu = torch.zeros(b, latent, device=x.device)
        logvar = torch.zeros(b, latent, device=x.device)
    else:
        mu, logvar = (t.detach().clone().to(x.device) for t in init)
    mu.requires_grad_(True)
    logvar.requires_grad_(True)
    opt = torch.optim.Adam([mu, logvar], lr=lr)
    history: list[float] = []
    for _ in range(steps):
        elbo = _elbo(model, x, mu, logvar, n_samples, index)
        loss = -elbo.sum()
        g_mu, g_lv = torch.autograd.grad(loss, [mu, logvar])
        mu.grad, logvar.grad = g_mu, g_lv
        opt.step()
        history.append(float(elbo.detach().mean()))
    return mu.detach(), logvar.detach(), history


def amortisation_gap(
    model: VAE, images: Tensor, steps: int = 500, lr: float = 5e-2, eval_samples: int = 100
) -> dict[str, object]:
    """Encoder ELBO vs per-example optimised ELBO on the same targets.

    ``gap`` = optimised − encoder (nats/example); positive means the amortised encoder
    leaves ELBO on the table. Both ELBOs use ``eval_samples`` Monte-Carlo samples.
    """
    x = model.prepare(images)
    with torch.no_grad():
        mu_e, lv_e, _ = model.encode(images)
    mu_o, lv_o, history = fit_posterior(model, images, steps=steps, lr=lr, x=x)
    enc = posterior_elbo(model, x, mu_e, lv_e, eval_samples)
    opt = posterior_elbo(model, x, mu_o, lv_o, eval_samples)
    return {
        "encoder_elbo": float(enc.mean()),
        "optimised_elbo": float(opt.mean()),
        "gap": float((opt - enc).mean()),
        "history": history,
        "mu_encoder": mu_e,
        "mu_optimised": mu_o,
        "logvar_optimised": lv_o,
    }


def left_half_index(
    width: int = 28, height: int = 28, device: torch.device | None = None
) -> Tensor:
    """Flat pixel indices of the left half (columns ``< width // 2``)."""
    cols = torch.arange(width * height, device=device) % width
    return torch.nonzero(cols < width // 2).flatten()


def complete_left_half(
    model: VAE, images: Tensor, steps: int = 500, lr: float = 5e-2
) -> dict[str, Tensor]:
    """Fit q on the observed left half only, then decode the right half.

    Returns ``observed`` (right half set to 0.5), ``completion`` (observed left half +
    decoded right half) and ``decoded`` (full decoder mean) images, plus ``mu``/``logvar``.
    """
    images = images.to(model.device)
    index = left_half_index(device=images.device)
    mu, logvar, history = fit_posterior(model, images, steps=steps, lr=lr, index=index)
    with torch.no_grad():
        decoded = model.likelihood.mean(model.decode(mu)).reshape(-1, 1, 28, 28)
    left = torch.zeros(28, 28, dtype=torch.bool, device=images.device)
    left[:, :14] = True
    observed = torch.where(left, images, torch.full_like(images, 0.5))
    completion = torch.where(left, images, decoded)
    return {
        "observed": observed,
        "completion": completion,
        "decoded": decoded,
        "mu": mu,
        "logvar": logvar,
        "history": torch.tensor(history),
    }
