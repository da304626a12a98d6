"""GAN objectives, training metrics and gradient penalties, shared by every GAN in dgm_ext.

Critic outputs are logits/scores of shape ``(N,)`` or ``(N, 1)``; every loss and estimate
returns a scalar (mean over the batch). Losses are *minimised*: critic losses by the critic,
generator losses by the generator. The JSD losses are Bernoulli log-likelihoods of the
critic's logits (label 1 for real, 0 for fake) computed by the fused
:func:`dgm_ext.ops.bernoulli_log_prob`; pass ``ops="reference"`` for the pure-PyTorch one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

import torch
from torch import Tensor

from dgm_ext.ops import resolve_ops

__all__ = [
    "CRITIC_LOSSES",
    "GENERATOR_LOSSES",
    "critic_loss",
    "generator_loss",
    "gradient_penalty",
    "hinge_critic_loss",
    "hinge_generator_loss",
    "jsd_critic_loss",
    "jsd_estimate",
    "jsd_generator_loss_nonsaturating",
    "jsd_generator_loss_saturating",
    "r1_penalty",
    "w1_critic_loss",
    "w1_estimate",
    "w1_generator_loss",
]

Ops = ModuleType | str | None
_LOG2 = math.log(2.0)


def _column(logits: Tensor) -> Tensor:
    """``(N,)`` or ``(N, 1)`` critic outputs as an ``(N, 1)`` column (one Bernoulli per row)."""
    if logits.dim() == 1:
        return logits.unsqueeze(-1)
    if logits.dim() == 2 and logits.shape[1] == 1:
        return logits
    raise ValueError(f"critic outputs must have shape (N,) or (N, 1), got {tuple(logits.shape)}")


def _flat(scores: Tensor) -> Tensor:
    return _column(scores).squeeze(-1)


def _mean_log_sigmoid(logits: Tensor, label: float, ops: Ops) -> Tensor:
    """``E log σ(l)`` (label 1) or ``E log(1 - σ(l)) = E log σ(-l)`` (label 0) on the op."""
    col = _column(logits)
    target = col.new_full((1,), label).detach()
    return resolve_ops(ops).bernoulli_log_prob(col, target).mean()


# -- JSD --------------------------------------------------------------------------------
def jsd_critic_loss(real_logits: Tensor, fake_logits: Tensor, *, ops: Ops = None) -> Tensor:
    """``-(E log σ(C(x)) + E log(1 - σ(C(G(z)))))`` = BCE(real, 1) + BCE(fake, 0).

    Equals ``2 (log 2 - jsd_estimate)``; the same critic loss for both generator losses.
    """
    return -(_mean_log_sigmoid(real_logits, 1.0, ops) + _mean_log_sigmoid(fake_logits, 0.0, ops))


def jsd_generator_loss_saturating(fake_logits: Tensor, *, ops: Ops = None) -> Tensor:
    """Saturating (minimax) generator loss ``E log(1 - σ(C(G(z))))``."""
    return _mean_log_sigmoid(fake_logits, 0.0, ops)


def jsd_generator_loss_nonsaturating(fake_logits: Tensor, *, ops: Ops = None) -> Tensor:
    """Non-saturating generator loss ``-E log σ(C(G(z)))``."""
    return -_mean_log_sigmoid(fake_logits, 1.0, ops)


def jsd_estimate(real_logits: Tensor, fake_logits: Tensor, *, ops: Ops = None) -> Tensor:
    """``½ (E log σ(C(x)) + E log(1 - σ(C(G(z))))) + log 2`` (≤ JSD(p, q) for any critic)."""
    total = _mean_log_sigmoid(real_logits, 1.0, ops) + _mean_log_sigmoid(fake_logits, 0.0, ops)
    return 0.5 * total + _LOG2


# -- Wasserstein ------------------------------------------------------------------------
def w1_estimate(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """``E C(x) - E C(G(z))`` (a lower bound on W1 when C is 1-Lipschitz)."""
    return _flat(real_scores).mean() - _flat(fake_scores).mean()


def w1_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """``-(E C(x) - E C(G(z)))``."""
    return -w1_estimate(real_scores, fake_scores)


def w1_generator_loss(fake_scores: Tensor) -> Tensor:
    """``-E C(G(z))``."""
    return -_flat(fake_scores).mean()


# -- hinge ------------------------------------------------------------------------------
def hinge_critic_loss(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """``E relu(1 - C(x)) + E relu(1 + C(G(z)))`` (SNGAN / StudioGAN default)."""
    real = torch.relu(1.0 - _flat(real_scores)).mean()
    return real + torch.relu(1.0 + _flat(fake_scores)).mean()


def hinge_generator_loss(fake_scores: Tensor) -> Tensor:
    """``-E C(G(z))``."""
    return -_flat(fake_scores).mean()


# -- by name ----------------------------------------------------------------------------
def _jsd_critic(real: Tensor, fake: Tensor, ops: Ops) -> Tensor:
    return jsd_critic_loss(real, fake, ops=ops)


CRITIC_LOSSES: dict[str, Callable[[Tensor, Tensor, Ops], Tensor]] = {
    "jsd-saturating": _jsd_critic,
    "jsd-nonsaturating": _jsd_critic,
    "w1": lambda real, fake, ops: w1_critic_loss(real, fake),
    "hinge": lambda real, fake, ops: hinge_critic_loss(real, fake),
}
"""Critic loss for each loss name: ``f(real, fake, ops)``."""

GENERATOR_LOSSES: dict[str, Callable[[Tensor, Ops], Tensor]] = {
    "jsd-saturating": lambda fake, ops: jsd_generator_loss_saturating(fake, ops=ops),
    "jsd-nonsaturating": lambda fake, ops: jsd_generator_loss_nonsaturating(fake, ops=ops),
    "w1": lambda fake, ops: w1_generator_loss(fake),
    "hinge": lambda fake, ops: hinge_generator_loss(fake),
}
"""Generator loss for each loss name: ``f(fake, ops)``."""


def _lookup(table: dict, kind: str) -> Callable:
    try:
        return table[kind]
    except KeyError:
        raise ValueError(f"unknown GAN loss {kind!r}; expected one of {sorted(table)}") from None


def critic_loss(kind: str, real: Tensor, fake: Tensor, *, ops: Ops = None) -> Tensor:
    """Critic loss by name (``jsd-saturating``, ``jsd-nonsaturating``, ``w1``, ``hinge``)."""
    return _lookup(CRITIC_LOSSES, kind)(real, fake, ops)


def generator_loss(kind: str, fake: Tensor, *, ops: Ops = None) -> Tensor:
    """Generator loss by name (``jsd-saturating``, ``jsd-nonsaturating``, ``w1``, ``hinge``)."""
    return _lookup(GENERATOR_LOSSES, kind)(fake, ops)


# -- penalties --------------------------------------------------------------------------
def _input_grad(critic: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``∇ₓ C(x)`` per sample, flattened to ``(N, -1)``, with ``create_graph=True``."""
    x = x.detach().requires_grad_(True)
    out = critic(x)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1)


def _weighted_mean(weight: float | Tensor, per_sample: Tensor) -> Tensor:
    """``weight · mean(per_sample)``; a weight Tensor of shape ``(N,)`` weighs each sample
    (``mean(weight · per_sample)``), so batched independent runs (the Dirac-GAN lab) can
    carry their own penalty weights in one call."""
    if isinstance(weight, Tensor) and weight.dim() > 0:
        if weight.shape != per_sample.shape:
            raise ValueError(
                f"weight must be a number or have shape {tuple(per_sample.shape)}, "
                f"got {tuple(weight.shape)}"
            )
        return (weight.to(per_sample) * per_sample).mean()
    return weight * per_sample.mean()


def r1_penalty(
    critic: Callable[[Tensor], Tensor], real: Tensor, weight: float | Tensor = 1.0
) -> Tensor:
    """R1 = ``weight · E ‖∇ₓ C(x)‖²`` on real data (no ½ factor); differentiable in the critic.

    real: (N, ...) batch; the critic maps it to (N,) or (N, 1). ``weight``: a number, or a
    Tensor of shape (N,) with one weight per sample (``E[weight · ‖∇ₓ C(x)‖²]``).
    """
    grad = _input_grad(critic, real)
    return _weighted_mean(weight, grad.pow(2).sum(1))


def gradient_penalty(
    critic: Callable[[Tensor], Tensor],
    real: Tensor,
    fake: Tensor,
    weight: float | Tensor = 1.0,
    *,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """WGAN-GP = ``weight · E (‖∇C(x̂)‖ - 1)²`` at ``x̂ = ε·real + (1 - ε)·fake``.

    ε ~ U(0, 1) per sample, drawn from ``generator`` unless given as ``eps`` (shape (N,)).
    Inputs are detached (the penalty trains only the critic); differentiable in the critic.
    ``weight``: a number, or a Tensor of shape (N,) with one weight per sample.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} differ")
    n = real.shape[0]
    if eps is None:
        eps = torch.rand(n, generator=generator, dtype=real.dtype, device=real.device)
    elif eps.shape != (n,):
        raise ValueError(f"eps must have shape ({n},), got {tuple(eps.shape)}")
    e = eps.reshape(n, *([1] * (real.dim() - 1))).to(real)
    mixed = e * real + (1.0 - e) * fake  # detached in _input_grad
    norm = torch.linalg.vector_norm(_input_grad(critic, mixed), dim=1)
    return _weighted_mean(weight, (norm - 1.0).pow(2))
