"""``reproduce vae-flow``: the planar-posterior VAE grid (flow length x seed), its numbers and
options. The model itself (log q with the flow's log-det, the fused per-row op) is tested in
test_vae.py; here the reported test log p(x) is checked against an importance-sampling
estimate written in this file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from _data import DATA, needs_mnist
from torch.distributions import Bernoulli, Normal

from dgm_ext import cli
from dgm_ext.data import load_mnist
from dgm_ext.vae import load_vae

pytestmark = needs_mnist


@pytest.fixture
def mnist(monkeypatch):
    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@torch.no_grad()
def _importance_estimates(path: Path, images: torch.Tensor, k: int, reps: int) -> torch.Tensor:
    """``(reps, N)`` independent draws of the K-sample importance estimate
    ``logsumexp_k log w_k − log K`` of log p(x) for each image, under the VAE file ``path``
    (loaded in float64), written out with torch.distributions: ``z_0 ~ q_0 = Normal(mu, σ)``,
    the K planar layers ``z ← z + û tanh(w·z + b)`` with ``û`` of Rezende & Mohamed's
    appendix A and ``log q(z_K) = log q_0(z_0) − Σ log|1 + (1 − tanh²) w·û|``, the prior
    ``Normal(0, 1)`` and the ``Bernoulli`` decoder. The networks are the saved model's; the
    sampling and every density are this function's. Seeded: independent of the global RNG."""
    model = load_vae(path).double().eval()
    gen = torch.Generator().manual_seed(1234)
    x = images.flatten(1).double()
    mu, logvar, h = model.encoder(x)
    q0 = Normal(mu, torch.exp(0.5 * logvar))
    layers = []
    if model.flow is not None:
        d, n = model.latent_dim, model.flow.length
        p = model.flow.head(h)  # per image: u (n, d), w (n, d), b (n)
        u = p[:, : n * d].unflatten(-1, (n, d))
        w = p[:, n * d : 2 * n * d].unflatten(-1, (n, d))
        b = p[:, 2 * n * d :]
        wu = (w * u).sum(-1, keepdim=True)
        u_hat = u + (F.softplus(wu) - 1.0 - wu) * w / (w * w).sum(-1, keepdim=True)
        layers = [(u_hat[:, i], w[:, i], b[:, i]) for i in range(n)]
    out = []
    for _ in range(reps):
        z = mu + q0.stddev * torch.randn((k, *mu.shape), generator=gen, dtype=torch.float64)
        log_q = q0.log_prob(z).sum(-1)
        for uh, wi, bi in layers:
            t = torch.tanh((wi * z).sum(-1) + bi)
            log_q = log_q - torch.log(torch.abs(1.0 + (1.0 - t * t) * (wi * uh).sum(-1)))
            z = z + uh * t.unsqueeze(-1)
        logits = model.decoder(z)[..., 0, :]
        log_px_z = Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
        log_w = log_px_z + Normal(0.0, 1.0).log_prob(z).sum(-1) - log_q
        out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(out)


def _check_reported_log_px(cell: dict, path: Path, images: torch.Tensor, reps: int) -> None:
    """The cell's ``test_log_px`` (one K-sample estimate per image, averaged over N images)
    against the expectation of that same estimator from ``reps`` independent draws.

    Tolerance from the Monte-Carlo error: the reported mean has variance Σ_i Var_i / N² (Var_i
    the variance of image i's K-sample estimate, estimated from the draws) and ours that over
    ``reps``; 5 standard deviations (the estimator is right-skewed; over 3000 redraws of a
    K = 10 cell none was beyond 3.3)."""
    k, n = cell["is_k"], cell["is_n"]
    est = _importance_estimates(path, images[:n], k, reps)
    var = est.var(0).sum() / n**2
    sd = math.sqrt(var * (1.0 + 1.0 / reps))
    expected = est.mean().item()
    assert abs(cell["test_log_px"] - expected) < 5.0 * sd, (cell, expected, sd)
    # the reported s.e. is the spread over images of one estimate each, over sqrt(N)
    se = (est.std(1) / math.sqrt(n)).mean().item()
    assert cell["test_log_px_se"] == pytest.approx(se, rel=0.02)  # draws agree to ~0.5 %


def test_reproduce_vae_flow_quick(tmp_path, capsys, mnist):
    out = tmp_path / "vf"
    argv = ["reproduce", "vae-flow", "--quick", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert res["lengths"] == [0, 2] and res["seeds"] == [0, 1]
    cells = res["cells"]
    assert [(c["flow_length"], c["seed"]) for c in cells] == [(0, 0), (0, 1), (2, 0), (2, 1)]
    test = load_mnist("test", "static", root=DATA).images
    for c in cells:
        path = out / f"K{c['flow_length']}-seed{c['seed']}" / "model.pt"
        model = load_vae(path)
        # each cell trained the model it names: flow length, parameter count
        assert model.config.flow_length == c["flow_length"]
        assert sum(p.numel() for p in model.parameters()) == c["parameters"]
        assert c["epochs"] == 1 and len(c["val_elbo_curve"]) == 1 and c["seconds_per_epoch"] > 0
        assert (c["is_k"], c["is_n"]) == (10, 50)
        # the reported log p(x): the saved model's, by an importance estimate written here
        _check_reported_log_px(c, path, test, reps=16)
        assert math.isfinite(c["test_elbo"])
        row = f"| {c['flow_length']} | {c['seed']} | {c['parameters']} |"
        assert row in md and f"{c['test_log_px']:.2f} ± {c['test_log_px_se']:.2f}" in md
    # seeds give different models; a flow adds the amortised head's parameters
    assert cells[0]["test_elbo"] != cells[1]["test_elbo"]
    head = 300 * 2 * (2 * 100 + 1) + 2 * (2 * 100 + 1)
    assert cells[2]["parameters"] - cells[0]["parameters"] == head
    mean_ll = (cells[2]["test_log_px"] + cells[3]["test_log_px"]) / 2
    assert res["by_length"]["2"]["test_log_px"] == pytest.approx(mean_ll)
    assert "Rezende & Mohamed" in md and (out / "figures" / "val_elbo_curves.png").is_file()

    # a rerun into the same --out resumes the finished cells: no training, same numbers
    capsys.readouterr()
    assert cli.main([*argv, "--run", "2"]) == 0
    assert "already finished 1 epochs" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert [c["test_log_px"] for c in again["cells"]] == [c["test_log_px"] for c in cells[2:]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--run", "ten"], "run: 'ten' must be distinct flow lengths >= 0"),
        (["--run", "0,-1"], "run: '0,-1' must be distinct flow lengths >= 0"),
        (["--run", "2,2"], "run: '2,2' must be distinct flow lengths >= 0"),
        (["--ema", "0.9"], "--ema: experiment 'vae-flow' does not take this option"),
    ],
)
def test_reproduce_vae_flow_refuses_bad_options(tmp_path, capsys, mnist, argv, message):
    rc = cli.main(["reproduce", "vae-flow", "--quick", "--out", str(tmp_path / "x"), *argv])
    assert rc == 2 and message in capsys.readouterr().err


def test_seeds_option_and_log_px_of_a_long_flow(tmp_path, mnist):
    """``seeds``/``run``/``k``, and the reported log p(x) of a length-8 flow at K = 100
    against the estimate written here: the Monte-Carlo error (s.d. ~0.15 nats) is small
    against the flow's log-det (~0.35 nats a layer), so a log q that drops or mis-signs the
    log-det, or mis-forms û, is caught."""
    from dgm_ext.experiments import run_experiment

    with pytest.raises(ValueError, match="seeds: the number of seeds per flow length"):
        run_experiment("vae-flow", out=tmp_path / "s", quick=True, extra={"seeds": 0})
    out = tmp_path / "t"
    res = run_experiment("vae-flow", out=out, quick=True, seed=5, progress=False, k=100,
                         extra={"seeds": 1, "run": "0,8"})  # fmt: skip
    assert [(c["flow_length"], c["seed"]) for c in res["cells"]] == [(0, 5), (8, 5)]
    assert res["by_length"]["8"]["test_log_px"] == res["cells"][1]["test_log_px"]
    test = load_mnist("test", "static", root=DATA).images
    for c in res["cells"]:
        assert (c["is_k"], c["is_n"]) == (100, 50)
        _check_reported_log_px(c, out / f"K{c['flow_length']}-seed5" / "model.pt", test, reps=4)
