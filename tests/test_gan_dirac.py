"""Dirac-GAN lab: the batched simulator against a scalar closed-form reference and against
single runs (batching must not couple runs), hand-computed first steps, the EMA, the
convergence rule, the expected convergence pattern and ``dgm-ext reproduce dirac-gan``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dgm_ext.cli import main
from dgm_ext.gan import dirac as D
from dgm_ext.gan.dirac import DiracConfig

DT = torch.float64
LR = 0.1


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _critic_grads(cfg: DiracConfig, theta: float, psi0: float, psi1: float) -> tuple[float, float]:
    """∂/∂(ψ₀, ψ₁) of ``-metric + weight·penalty`` for C(x) = ψ₀x + ψ₁, real 0, fake θ.

    JSD metric ½(log σ(ψ₁) + log σ(-(ψ₀θ + ψ₁))) + log 2; W1 metric ψ₁ - (ψ₀θ + ψ₁) = -ψ₀θ.
    ∇ₓC = ψ₀, so R1 = ψ₀² and GP = (|ψ₀| - 1)² whatever ε is.
    """
    c = psi0 * theta + psi1
    if cfg.loss == "jsd":
        g0, g1 = 0.5 * _sigmoid(c) * theta, -0.5 * (_sigmoid(-psi1) - _sigmoid(c))
    else:
        g0, g1 = theta, 0.0
    if cfg.penalty == "r1":
        g0 += 2 * cfg.weight * psi0
    elif cfg.penalty == "gp":
        g0 += 2 * cfg.weight * (abs(psi0) - 1) * math.copysign(1.0, psi0)
    return g0, g1


def _generator_grad(cfg: DiracConfig, theta: float, psi0: float, psi1: float) -> float:
    """∂/∂θ of ½ log(1 - σ(C(θ))) (saturating), -½ log σ(C(θ)) (non-saturating), -C(θ) (W1)."""
    c = psi0 * theta + psi1
    if cfg.loss == "w1":
        return -psi0
    return -0.5 * (_sigmoid(-c) if cfg.nonsaturating else _sigmoid(c)) * psi0


def _reference_run(cfg: DiracConfig, seed: int, iterations: int) -> list[tuple[float, ...]]:
    """One run in plain floats: critic step, then generator step against the NEW critic."""
    theta, psi0, psi1 = D.initial_parameters(seed)
    out = [(theta, psi0, psi1)]
    for _ in range(iterations):
        g0, g1 = _critic_grads(cfg, theta, psi0, psi1)
        psi0, psi1 = psi0 - LR * g0, psi1 - LR * g1
        theta = theta - LR * _generator_grad(cfg, theta, psi0, psi1)
        out.append((theta, psi0, psi1))
    return out


MIXED = [
    DiracConfig("jsd"),
    DiracConfig("jsd", "r1", 0.1, nonsaturating=True),
    DiracConfig("w1", "gp", 0.1),
    DiracConfig("jsd", "gp", 0.01, ema=True),
    DiracConfig("w1", "r1", 0.01),
    DiracConfig("w1"),
]


@pytest.mark.parametrize("ops", ["fused", "reference"])
def test_batched_matches_scalar_reference(ops: str) -> None:
    seeds = [3, 7]
    runs = D.simulate(MIXED, seeds, 200, ops=ops)
    assert runs.theta.shape == (201, len(MIXED), 2) and runs.iterations == 200
    for j, cfg in enumerate(MIXED):
        for s, seed in enumerate(seeds):
            want = torch.tensor(_reference_run(cfg, seed, 200), dtype=DT)
            got = torch.stack([runs.theta[:, j, s], runs.psi0[:, j, s], runs.psi1[:, j, s]], 1)
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11, msg=cfg.name)


def test_batching_does_not_couple_runs() -> None:
    seeds = [0, 5]
    batched = D.simulate(MIXED, seeds, 60)
    for j in (0, 2, 4):  # one single-run simulation per loss / penalty kind
        for s in (0, 1):
            single = D.simulate([MIXED[j]], [seeds[s]], 60)
            for name in ("theta", "psi0", "psi1"):
                torch.testing.assert_close(
                    getattr(batched, name)[:, j, s], getattr(single, name)[:, 0, 0]
                )


@pytest.mark.parametrize(
    ("cfg", "want"),
    [
        # θ = 0.5, ψ₀ = 0.8, ψ₁ = -0.3, so C(θ) = 0.1 and σ(0.1) = 0.52497918747894.
        # JSD: ∂ψ₀ = ½σ(0.1)·0.5; ∂ψ₁ = -½(σ(0.3) - σ(0.1)) = -½(0.57444251681165 - σ(0.1)).
        (DiracConfig("jsd"), (0.131244796869735, -0.024731664666355)),
        (DiracConfig("jsd", "r1", 0.1), (0.131244796869735 + 0.16, -0.024731664666355)),
        (DiracConfig("jsd", "gp", 0.1), (0.131244796869735 - 0.04, -0.024731664666355)),
        # W1: ∂ψ₀ = θ = 0.5, ∂ψ₁ = 0; R1 adds 2·0.01·0.8; GP adds 2·0.01·(0.8 - 1).
        (DiracConfig("w1"), (0.5, 0.0)),
        (DiracConfig("w1", "r1", 0.01), (0.516, 0.0)),
        (DiracConfig("w1", "gp", 0.01), (0.496, 0.0)),
    ],
    ids=lambda v: v.name if isinstance(v, DiracConfig) else "",
)
def test_first_step_gradients_by_hand(cfg: DiracConfig, want: tuple[float, float]) -> None:
    theta = torch.tensor([0.5], dtype=DT)
    critic = D.DiracCritic(torch.tensor([0.8], dtype=DT), torch.tensor([-0.3], dtype=DT))
    gen = D.DiracGenerator(theta)
    loss_c = D.critic_objective(critic, gen(), [cfg], generator=torch.Generator().manual_seed(0))
    g0, g1 = torch.autograd.grad(loss_c, [critic.psi0, critic.psi1])
    assert (g0.item(), g1.item()) == pytest.approx(want, abs=1e-12)
    # Generator against the critic after its SGD step (hand value: -½σ(C)ψ₀ or -ψ₀).
    psi0, psi1 = 0.8 - LR * want[0], -0.3 - LR * want[1]
    with torch.no_grad():
        critic.psi0.fill_(psi0)
        critic.psi1.fill_(psi1)
    (g_theta,) = torch.autograd.grad(D.generator_objective(critic, gen(), [cfg]), [gen.theta])
    c = psi0 * 0.5 + psi1
    hand = -psi0 if cfg.loss == "w1" else -0.5 / (1 + math.exp(-c)) * psi0
    assert g_theta.item() == pytest.approx(hand, abs=1e-12)


def test_first_simulated_step_and_initialisation() -> None:
    cfg = DiracConfig("jsd", "r1", 0.1)
    runs = D.simulate([cfg], [11], 1)
    g = torch.Generator().manual_seed(11)
    theta, psi0, psi1 = (0.7 * torch.randn(3, generator=g, dtype=DT)).tolist()
    assert runs.theta[0, 0, 0].item() == theta and runs.psi1[0, 0, 0].item() == psi1
    g0, g1 = _critic_grads(cfg, theta, psi0, psi1)
    psi0, psi1 = psi0 - LR * g0, psi1 - LR * g1
    assert runs.psi0[1, 0, 0].item() == pytest.approx(psi0, abs=1e-14)
    assert runs.psi1[1, 0, 0].item() == pytest.approx(psi1, abs=1e-14)
    want_theta = theta - LR * _generator_grad(cfg, theta, psi0, psi1)
    assert runs.theta[1, 0, 0].item() == pytest.approx(want_theta, abs=1e-14)


def test_ema_is_the_closed_form_average_of_the_shared_raw_dynamics() -> None:
    raw, ema = DiracConfig("w1"), DiracConfig("w1", ema=True)
    slow = DiracConfig("w1", ema=True, ema_decay=0.9)
    runs = D.simulate([raw, ema, slow], 2, 120)
    torch.testing.assert_close(runs.theta[:, 1], runs.theta[:, 0])  # EMA does not feed back
    torch.testing.assert_close(runs.psi0[:, 2], runs.psi0[:, 0])
    assert torch.isnan(runs.theta_ema[:, 0]).all()
    for j, decay in ((1, 0.998), (2, 0.9)):
        s = runs.theta[0, 0].clone()  # the shadow starts at the initial θ
        want = [s.clone()]
        for t in range(1, 121):
            s = decay * s + (1 - decay) * runs.theta[t, 0]
            want.append(s.clone())
        torch.testing.assert_close(runs.theta_ema[:, j], torch.stack(want))


def test_vector_field_matches_hand_gradients() -> None:
    th = torch.tensor([[0.5, -1.2], [0.0, 2.0]], dtype=DT)
    ps = torch.tensor([[0.8, 0.3], [-0.4, -1.5]], dtype=DT)
    for cfg in (
        DiracConfig("jsd", "gp", 0.1),
        DiracConfig("w1", "r1", 0.1),
        DiracConfig("jsd", nonsaturating=True),
    ):
        d_th, d_ps = D.vector_field(cfg, th, ps, psi1=0.2)
        assert d_th.shape == th.shape == d_ps.shape
        for t, p, a, b in zip(
            th.flatten(), ps.flatten(), d_th.flatten(), d_ps.flatten(), strict=True
        ):
            t, p = t.item(), p.item()
            assert b.item() == pytest.approx(-_critic_grads(cfg, t, p, 0.2)[0], abs=1e-12)
            assert a.item() == pytest.approx(-_generator_grad(cfg, t, p, 0.2), abs=1e-12)
    gp = DiracConfig("w1", "gp", 0.1)  # a linear critic's GP does not depend on ε
    torch.testing.assert_close(D.vector_field(gp, th, ps, eps=0.1), D.vector_field(gp, th, ps))


def test_r1_converges_while_unregularised_and_gp_do_not() -> None:
    cfgs = [
        DiracConfig("jsd"),
        DiracConfig("w1"),
        DiracConfig("jsd", "r1", 0.1),
        DiracConfig("w1", "r1", 0.1),
        DiracConfig("jsd", "gp", 0.1),
        DiracConfig("w1", "gp", 0.1),
    ]
    runs = D.simulate(cfgs, 3, 1000)
    th, ps, conv = D.convergence(runs.theta, runs.psi0)
    assert conv.tolist() == [[False] * 3] * 2 + [[True] * 3] * 2 + [[False] * 3] * 2
    assert (torch.maximum(th, ps)[:2] > 0.2).all()  # the orbits do not shrink
    assert (ps[4:] > 0.5).all()  # GP keeps |ψ₀| near 1, not 0


def test_convergence_rule() -> None:
    t = torch.linspace(0, 1, 1001, dtype=DT)[:, None].repeat(1, 5)
    theta = torch.zeros_like(t)
    psi0 = torch.zeros_like(t)
    theta[500, 0] = 1.0  # outside the last 500 iterates (rows 501..1000)
    theta[501, 1] = -0.05  # inside, exactly at the tolerance: not converged (strict <)
    psi0[-1, 2] = 0.0499  # inside, under the tolerance
    psi0[800, 3] = -0.2  # ψ₀ counts as well as θ
    theta[900, 4] = float("nan")  # a diverged run
    th, ps, conv = D.convergence(theta, psi0)
    assert conv.tolist() == [True, False, True, False, False]
    assert th[1].item() == 0.05 and ps[3].item() == 0.2 and ps[2].item() == 0.0499
    assert D.convergence(theta, psi0, window=501)[2][0].item() is False
    assert D.convergence(theta[:10], psi0[:10])[2].shape == (5,)  # fewer rows: all of them
    with pytest.raises(ValueError, match="window"):
        D.convergence(theta, psi0, window=0)


def test_grid_and_config_validation() -> None:
    grid = D.dirac_grid()
    assert len(grid) == 20 and len({c.name for c in grid}) == 20
    assert [c.ema for c in grid[:10]] == [False] * 5 + [True] * 5
    assert [(c.penalty, c.weight) for c in grid[:5]] == [
        ("none", 0.0),
        ("r1", 0.01),
        ("r1", 0.1),
        ("gp", 0.01),
        ("gp", 0.1),
    ]
    assert {c.loss for c in grid[:10]} == {"jsd"} and {c.loss for c in grid[10:]} == {"w1"}
    assert grid[7].name == "jsd-r1-0.1-ema" and grid[7].raw == grid[2]
    assert all(c.nonsaturating == (c.loss == "jsd") for c in D.dirac_grid(nonsaturating=True))
    for bad in (
        dict(loss="hinge"),
        dict(loss="jsd", penalty="r2", weight=1.0),
        dict(loss="jsd", penalty="none", weight=0.1),
        dict(loss="jsd", penalty="r1"),
        dict(loss="w1", nonsaturating=True),
        dict(loss="w1", ema=True, ema_decay=1.0),
    ):
        with pytest.raises(ValueError):
            DiracConfig(**bad)


@pytest.fixture
def restore_threads():
    """The CLI sets torch's thread count; put it back for the other tests."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_reproduce_quick_writes_figures_table_and_runs(
    tmp_path: Path, restore_threads: None
) -> None:
    out = tmp_path / "dirac"
    argv = ["reproduce", "dirac-gan", "--quick", "--out", str(out), "--threads", "1"]
    assert main([*argv, "--no-progress"]) == 0
    figures = sorted((out / "figures").glob("*.png"))
    assert len(figures) == 20 and all(f.stat().st_size > 10_000 for f in figures)
    md = (out / "results.md").read_text()
    assert "| # | loss | penalty |" in md and md.count("\n| ") == 21 and "(quick)" in md
    res = json.loads((out / "results.json").read_text())
    assert res["iterations"] == 1500 and len(res["configurations"]) == 20
    runs = res["runs"]
    assert len(runs) == 60 and {r["seed"] for r in runs} == {0, 1, 2}
    keys = {
        "loss",
        "penalty",
        "weight",
        "ema",
        "seed",
        "final_theta",
        "final_theta_ema",
        "max_abs_theta_last500",
        "max_abs_psi0_last500",
        "converged",
    }
    for r in runs:
        assert keys <= set(r)
        raw = max(r["max_abs_theta_last500"], r["max_abs_psi0_last500"]) < 0.05
        assert r["converged_raw"] == raw
        if r["ema"]:
            ema = max(r["max_abs_theta_ema_last500"], r["max_abs_psi0_last500"]) < 0.05
            assert r["converged"] == r["converged_ema"] == ema
            assert isinstance(r["final_theta_ema"], float)
        else:
            assert r["converged"] == raw and r["final_theta_ema"] is None
    by = {(r["config"], r["seed"]): r for r in runs}
    assert all(by["jsd-r1-0.1", s]["converged"] for s in range(3))
    assert not any(by["jsd-none", s]["converged"] for s in range(3))
    assert by["w1-gp-0.1-ema", 1]["final_theta"] == by["w1-gp-0.1", 1]["final_theta"]
