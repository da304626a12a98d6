"""Dirac-GAN lab (Mescheder, Geiger & Nowozin 2018, "Which training methods for GANs do
actually converge?"), batched: every run of the grid is one entry of the same tensors.

Setup (SPEC §2/§3). Data ``p = δ₀``, generator ``q = δ_θ``, critic ``C(x) = ψ₀·x + ψ₁``.
The losses, penalties and EMA are the ones the real GANs use (:mod:`dgm_ext.gan.losses`,
:class:`dgm_ext.gan.GeneratorEMA`); this module only lays B independent runs side by side:

- critic loss ``-metric + weight·penalty`` where ``metric`` is :func:`jsd_estimate`
  (``½(log σ(C(0)) + log(1 - σ(C(θ)))) + log 2``) or :func:`w1_estimate`
  (``C(0) - C(θ)``); the penalty is :func:`r1_penalty` (``E‖∇C(real)‖²``) or
  :func:`gradient_penalty` (``E(‖∇C(εp + (1-ε)q)‖ - 1)²``, ε ~ U(0, 1));
- the generator minimises the metric. For W1 that is :func:`w1_generator_loss`
  (``-C(θ)``, equal to ``w1_estimate`` up to a θ-free term). For JSD it is the *saturating*
  loss scaled by the ½ of ``jsd_estimate``: ``½·jsd_generator_loss_saturating`` =
  ``½ log(1 - σ(C(θ)))`` has exactly the θ-gradient of ``jsd_estimate``. The non-saturating
  option uses the matching term at the same scale, ``½·jsd_generator_loss_nonsaturating``
  = ``-½ log σ(C(θ))``; critic and generator gradients are then on the same footing;
- SGD (lr 0.1 by default), alternating: one critic step, then one generator step against the
  *updated* critic; θ, ψ₀, ψ₁ start at ``0.7·N(0, 1)`` drawn from a generator seeded with the
  run's seed, so every configuration starts from the same points for a given seed.

Batching. The parameters are ``(B,)`` tensors, one run per entry, with one sample of real
data (0) and one fake sample (θ_b) per run. Each loss is summed over its runs (``n·mean``
over the runs that use it), so the gradient with respect to run b's parameters is exactly
run b's own gradient: runs do not interact. Loss types are index sets, penalty weights
per-run ``(B,)`` tensors (zero for runs without that penalty). EMA only averages θ and never
feeds back into training, so configurations with EMA on share the raw dynamics of their
EMA-off twin: :func:`simulate` simulates each distinct raw configuration × seed once and
reports the EMA θ (a :class:`GeneratorEMA` over the module holding the ``(B,)`` θ) for the
EMA-on configurations.

GP on a linear critic. ``∇ₓC = ψ₀`` everywhere, so the GP (and its gradient) does not
depend on the interpolation point: ε is drawn as in the real GANs during simulation and
fixed to ½ in :func:`vector_field`, and both are exact.

What the lab shows (``dgm-ext reproduce dirac-gan``: 5000 iterations, seeds 0–2). As in
Mescheder et al.: unregularised JSD and W1 do not converge — the alternating steps circle
the equilibrium (θ, ψ₀) = (0, 0) (W1 on closed orbits, JSD on orbits that shrink by only a
few per cent over the run); R1 converges along a damped spiral (0.1 within ~500
iterations, 0.01 slowly: it needs ~1700–3000 iterations to get within 0.05); GP does not
converge: it drives ``|ψ₀|`` towards 1 instead of 0, the field pushes away from the
equilibrium and the runs settle on a limit cycle of radius ~1.3.

What EMA changes. EMA averages the generator's position θ over ~1/(1 − 0.998) = 500 steps
and never feeds back, so the dynamics are those of the EMA-off rows. Where θ circles 0
with a period much shorter than 500 steps, the average sits near the orbit's centre: the
EMA θ ends within 0.05 of the data point for unregularised W1 and for W1 + GP (all seeds)
and for most unregularised JSD seeds, although θ itself keeps oscillating with amplitude
~0.3–1.3 — the EMA generator is much better than the raw one. It does not make the *game*
converge: the critic's ψ₀ still oscillates, so the rule ``max(|θ_ema|, |ψ₀|) < 0.05``
fails exactly where the raw rule fails. Where the raw iterates do converge, the EMA lags
them by its window (with 1500 iterations it has not yet forgotten its start).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor, nn

from dgm_ext.gan.ema import GeneratorEMA
from dgm_ext.gan.losses import (
    gradient_penalty,
    jsd_estimate,
    jsd_generator_loss_nonsaturating,
    jsd_generator_loss_saturating,
    r1_penalty,
    w1_estimate,
    w1_generator_loss,
)

__all__ = [
    "DiracConfig",
    "DiracCritic",
    "DiracGenerator",
    "DiracRuns",
    "convergence",
    "critic_objective",
    "dirac_grid",
    "generator_objective",
    "initial_parameters",
    "simulate",
    "vector_field",
]

Ops = ModuleType | str | None
LOSSES = ("jsd", "w1")
PENALTIES = ("none", "r1", "gp")


@dataclass(frozen=True)
class DiracConfig:
    """One configuration of the lab: loss, penalty and weight, EMA, generator loss variant.

    loss: ``"jsd"`` or ``"w1"``; penalty: ``"none"``, ``"r1"`` or ``"gp"`` with ``weight``
    (0 for ``"none"``); ema: report the EMA θ (``ema_decay``); nonsaturating: JSD only, the
    non-saturating generator loss instead of the saturating one.
    """

    loss: str
    penalty: str = "none"
    weight: float = 0.0
    ema: bool = False
    ema_decay: float = 0.998
    nonsaturating: bool = False

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.penalty == "none" and self.weight != 0.0:
            raise ValueError(f"penalty 'none' takes weight 0, got {self.weight!r}")
        if self.penalty != "none" and not self.weight > 0.0:
            raise ValueError(f"penalty {self.penalty!r} needs a weight > 0, got {self.weight!r}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay!r}")
        if self.nonsaturating and self.loss != "jsd":
            raise ValueError("nonsaturating applies to the JSD loss only")

    @property
    def name(self) -> str:
        """Short name, e.g. ``jsd-r1-0.1-ema`` or ``w1-none``."""
        parts = [self.loss + ("-ns" if self.nonsaturating else "")]
        parts.append(self.penalty if self.penalty == "none" else f"{self.penalty}-{self.weight:g}")
        if self.ema:
            parts.append("ema" if self.ema_decay == 0.998 else f"ema{self.ema_decay:g}")
        return "-".join(parts)

    @property
    def raw(self) -> DiracConfig:
        """The configuration without EMA: the one whose dynamics this one shares."""
        return dataclasses.replace(self, ema=False, ema_decay=0.998)


def dirac_grid(nonsaturating: bool = False, ema_decay: float = 0.998) -> list[DiracConfig]:
    """The 20 configurations of SPEC §3 in its order: for each loss (JSD, W1), configurations
    1–5 = {none, R1 0.01, R1 0.1, GP 0.01, GP 0.1} with EMA off, 6–10 the same with EMA on."""
    penalties = [("none", 0.0), ("r1", 0.01), ("r1", 0.1), ("gp", 0.01), ("gp", 0.1)]
    return [
        DiracConfig(loss, pen, w, ema, ema_decay, nonsaturating and loss == "jsd")
        for loss in LOSSES
        for ema in (False, True)
        for pen, w in penalties
    ]


class DiracGenerator(nn.Module):
    """B generators ``δ_θ``: ``forward()`` returns the one fake sample of each run, (B, 1)."""

    def __init__(self, theta: Tensor) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta.detach().clone())

    def forward(self) -> Tensor:
        return self.theta.unsqueeze(-1)


class DiracCritic(nn.Module):
    """B linear critics ``C_b(x) = ψ₀_b·x + ψ₁_b``: maps (B, 1) inputs (one per run) to (B,)."""

    def __init__(self, psi0: Tensor, psi1: Tensor) -> None:
        super().__init__()
        self.psi0 = nn.Parameter(psi0.detach().clone())
        self.psi1 = nn.Parameter(psi1.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return self.psi0 * x.squeeze(-1) + self.psi1


@dataclass
class _Layout:
    """Which runs use which loss terms: index sets and per-run penalty weights."""

    n: int
    jsd: Tensor
    w1: Tensor
    saturating: Tensor
    nonsaturating: Tensor
    r1_weight: Tensor | None
    gp_weight: Tensor | None

    @classmethod
    def of(cls, configs: Sequence[DiracConfig], dtype: torch.dtype) -> _Layout:
        def where(pred: list[bool]) -> Tensor:
            return torch.tensor([i for i, p in enumerate(pred) if p], dtype=torch.long)

        def weights(pen: str) -> Tensor | None:
            w = [c.weight if c.penalty == pen else 0.0 for c in configs]
            return torch.tensor(w, dtype=dtype) if any(w) else None  # skip unused penalties

        return cls(
            n=len(configs),
            jsd=where([c.loss == "jsd" for c in configs]),
            w1=where([c.loss == "w1" for c in configs]),
            saturating=where([c.loss == "jsd" and not c.nonsaturating for c in configs]),
            nonsaturating=where([c.loss == "jsd" and c.nonsaturating for c in configs]),
            r1_weight=weights("r1"),
            gp_weight=weights("gp"),
        )


def _layout(configs: Sequence[DiracConfig] | _Layout, dtype: torch.dtype) -> _Layout:
    return configs if isinstance(configs, _Layout) else _Layout.of(configs, dtype)


def critic_objective(
    critic: DiracCritic,
    fake: Tensor,
    configs: Sequence[DiracConfig] | _Layout,
    *,
    ops: Ops = None,
    eps: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """``Σ_b (-metric_b + weight_b · penalty_b)`` over the runs (configs[b] is run b's).

    fake: (B, 1), run b's generated point; the real point is 0 for every run. Summing
    (``n · mean`` over the runs of each loss) keeps each run's gradient its own. GP's ε is
    ``eps`` (B,) if given, else U(0, 1) drawn from ``generator``.
    """
    lay = _layout(configs, fake.dtype)
    real = torch.zeros_like(fake)
    real_out, fake_out = critic(real), critic(fake.detach())
    total = fake_out.new_zeros(())
    if len(lay.jsd):
        i = lay.jsd
        total = total - len(i) * jsd_estimate(real_out[i], fake_out[i], ops=ops)
    if len(lay.w1):
        i = lay.w1
        total = total - len(i) * w1_estimate(real_out[i], fake_out[i])
    if lay.r1_weight is not None:
        total = total + lay.n * r1_penalty(critic, real, lay.r1_weight)
    if lay.gp_weight is not None:
        gp = gradient_penalty(critic, real, fake, lay.gp_weight, eps=eps, generator=generator)
        total = total + lay.n * gp
    return total


def generator_objective(
    critic: DiracCritic,
    fake: Tensor,
    configs: Sequence[DiracConfig] | _Layout,
    *,
    ops: Ops = None,
) -> Tensor:
    """``Σ_b`` of run b's generator loss: ``½·jsd_generator_loss_saturating`` (= the
    θ-dependent part of ``jsd_estimate``), ``½·jsd_generator_loss_nonsaturating`` or
    ``w1_generator_loss``. fake: (B, 1), differentiable in θ."""
    lay = _layout(configs, fake.dtype)
    out = critic(fake)
    total = out.new_zeros(())
    if len(lay.saturating):
        i = lay.saturating
        total = total + len(i) * 0.5 * jsd_generator_loss_saturating(out[i], ops=ops)
    if len(lay.nonsaturating):
        i = lay.nonsaturating
        total = total + len(i) * 0.5 * jsd_generator_loss_nonsaturating(out[i], ops=ops)
    if len(lay.w1):
        total = total + len(lay.w1) * w1_generator_loss(out[lay.w1])
    return total


def initial_parameters(
    seed: int, init_scale: float = 0.7, dtype: torch.dtype = torch.float64
) -> tuple[float, float, float]:
    """``(θ, ψ₀, ψ₁) = init_scale · N(0, I₃)`` from a generator seeded with ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    theta, psi0, psi1 = (init_scale * torch.randn(3, generator=g, dtype=dtype)).tolist()
    return theta, psi0, psi1


@dataclass
class DiracRuns:
    """Trajectories of ``simulate``: tensors of shape (iterations + 1, C, S) for C configs
    and S seeds (row 0 is the initial point). ``theta_ema`` is NaN for configs without EMA."""

    configs: list[DiracConfig]
    seeds: list[int]
    theta: Tensor
    psi0: Tensor
    psi1: Tensor
    theta_ema: Tensor

    @property
    def iterations(self) -> int:
        """Number of (critic, generator) update pairs simulated."""
        return self.theta.shape[0] - 1


def simulate(
    configs: Sequence[DiracConfig],
    seeds: int | Sequence[int] = 3,
    iterations: int = 5000,
    *,
    lr: float = 0.1,
    init_scale: float = 0.7,
    ops: Ops = None,
    dtype: torch.dtype = torch.float64,
    gp_seed: int = 0,
) -> DiracRuns:
    """Run every configuration × seed as one batched program; returns their trajectories.

    seeds: a count n (seeds 0..n-1) or explicit seeds; a seed fixes the initial point (see
    :func:`initial_parameters`). Distinct raw dynamics (:attr:`DiracConfig.raw`) are
    simulated once; EMA configurations read a :class:`GeneratorEMA` over the batched θ.
    """
    configs = list(configs)
    seeds = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not configs or not seeds:
        raise ValueError("need at least one configuration and one seed")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    raw = list(dict.fromkeys(c.raw for c in configs))
    n_seeds = len(seeds)
    run_configs = [c for c in raw for _ in seeds]  # run b = raw config b // S, seed b % S
    init = torch.tensor([initial_parameters(s, init_scale, dtype) for s in seeds], dtype=dtype)
    init = init.repeat(len(raw), 1)
    gen = DiracGenerator(init[:, 0])
    critic = DiracCritic(init[:, 1], init[:, 2])
    lay = _Layout.of(run_configs, dtype)
    opt_c = torch.optim.SGD(critic.parameters(), lr=lr)
    opt_g = torch.optim.SGD(gen.parameters(), lr=lr)
    decays = sorted({c.ema_decay for c in configs if c.ema})
    emas = {d: GeneratorEMA(gen, d) for d in decays}
    eps_gen = torch.Generator().manual_seed(gp_seed)

    b = len(run_configs)
    traj = torch.empty(4 + len(decays), iterations + 1, b, dtype=dtype)

    def record(t: int) -> None:
        traj[0, t] = gen.theta.detach()
        traj[1, t] = critic.psi0.detach()
        traj[2, t] = critic.psi1.detach()
        for k, d in enumerate(decays):
            traj[4 + k, t] = emas[d].shadow["theta"]

    record(0)
    for t in range(1, iterations + 1):
        opt_c.zero_grad(set_to_none=True)
        loss_c = critic_objective(critic, gen(), lay, ops=ops, generator=eps_gen)
        loss_c.backward(inputs=[critic.psi0, critic.psi1])
        opt_c.step()
        # Alternating updates: the generator's step sees the critic just updated above.
        opt_g.zero_grad(set_to_none=True)
        generator_objective(critic, gen(), lay, ops=ops).backward(inputs=[gen.theta])
        opt_g.step()
        for ema in emas.values():
            ema.update()
        record(t)

    # Expand the raw runs to the requested configurations (EMA rows share raw dynamics).
    shape = (iterations + 1, len(raw), n_seeds)
    raw_index = {c: i for i, c in enumerate(raw)}
    idx = torch.tensor([raw_index[c.raw] for c in configs], dtype=torch.long)
    pick = [traj[k].reshape(shape)[:, idx] for k in range(3)]
    theta_ema = torch.full_like(pick[0], float("nan"))
    for j, c in enumerate(configs):
        if c.ema:
            k = 4 + decays.index(c.ema_decay)
            theta_ema[:, j] = traj[k].reshape(shape)[:, raw_index[c.raw]]
    return DiracRuns(configs, seeds, pick[0], pick[1], pick[2], theta_ema)


def vector_field(
    config: DiracConfig,
    theta: Tensor,
    psi0: Tensor,
    psi1: float = 0.0,
    *,
    ops: Ops = None,
    eps: float = 0.5,
) -> tuple[Tensor, Tensor]:
    """The update direction ``(-∂L_G/∂θ, -∂L_C/∂ψ₀)`` of ``config`` at each point.

    theta, psi0: tensors of the same shape (e.g. a meshgrid); ψ₁ is fixed. The points are
    evaluated as one batch through :func:`critic_objective` / :func:`generator_objective`,
    both at the same point (the continuous-time field of the alternating updates). GP's ε is
    fixed to ``eps``; on a linear critic the GP gradient does not depend on it.
    """
    if theta.shape != psi0.shape:
        raise ValueError(f"theta {tuple(theta.shape)} and psi0 {tuple(psi0.shape)} differ")
    dtype = theta.dtype if theta.is_floating_point() else torch.float64
    th = theta.detach().reshape(-1).to(dtype)
    p0 = psi0.detach().reshape(-1).to(dtype)
    gen = DiracGenerator(th)
    critic = DiracCritic(p0, torch.full_like(p0, psi1))
    lay = _Layout.of([config.raw] * th.numel(), dtype)
    eps_t = torch.full_like(th, eps)
    (g_psi0,) = torch.autograd.grad(
        critic_objective(critic, gen(), lay, ops=ops, eps=eps_t), [critic.psi0]
    )
    (g_theta,) = torch.autograd.grad(generator_objective(critic, gen(), lay, ops=ops), [gen.theta])
    return -g_theta.reshape(theta.shape), -g_psi0.reshape(theta.shape)


def convergence(
    theta: Tensor, psi0: Tensor, window: int = 500, tol: float = 0.05
) -> tuple[Tensor, Tensor, Tensor]:
    """The lab's convergence rule over the time axis 0 of (T + 1, ...) trajectories.

    Returns ``(max |θ|, max |ψ₀|, converged)`` over the last ``window`` iterates (all of
    them when there are fewer); converged ⇔ ``max(max |θ|, max |ψ₀|) < tol``. Pass the EMA θ
    as ``theta`` for the EMA criterion. NaN (a diverged run) counts as not converged.
    """
    if theta.shape != psi0.shape:
        raise ValueError(f"theta {tuple(theta.shape)} and psi0 {tuple(psi0.shape)} differ")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    th = theta[-window:].abs().amax(0)
    ps = psi0[-window:].abs().amax(0)
    return th, ps, torch.maximum(th, ps) < tol
