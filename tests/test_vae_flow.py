"""``reproduce vae-flow``: the planar-posterior VAE grid (flow length x seed), its numbers and
options. The model itself (log q with the flow's log-det, the fused per-row op) is tested in
test_vae.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dgm_ext import cli
from dgm_ext.data import load_mnist
from dgm_ext.vae import evaluate_elbo, evaluate_log_likelihood, load_vae

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
pytestmark = pytest.mark.skipif(
    not (DATA / "mnist").is_dir(), reason=f"MNIST files not found under {DATA}"
)


@pytest.fixture
def mnist(monkeypatch):
    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_reproduce_vae_flow_quick(tmp_path, capsys, mnist):
    out = tmp_path / "vf"
    argv = ["reproduce", "vae-flow", "--quick", "--out", str(out), "--no-progress"]
    assert cli.main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert res["lengths"] == [0, 2] and res["seeds"] == [0, 1]
    cells = res["cells"]
    assert [(c["flow_length"], c["seed"]) for c in cells] == [(0, 0), (0, 1), (2, 0), (2, 1)]
    for c in cells:
        model = load_vae(out / f"K{c['flow_length']}-seed{c['seed']}" / "model.pt")
        # each cell trained the model it names: flow length, parameter count
        assert model.config.flow_length == c["flow_length"]
        assert sum(p.numel() for p in model.parameters()) == c["parameters"]
        assert c["epochs"] == 1 and len(c["val_elbo_curve"]) == 1 and c["seconds_per_epoch"] > 0
        assert (c["is_k"], c["is_n"]) == (10, 50)
        # log p(x) >= ELBO up to Monte Carlo noise; both finite
        assert math.isfinite(c["test_elbo"]) and c["test_log_px"] > c["test_elbo"] - 5.0
        row = f"| {c['flow_length']} | {c['seed']} | {c['parameters']} |"
        assert row in md and f"{c['test_log_px']:.2f} ± {c['test_log_px_se']:.2f}" in md
    # seeds give different models; a flow adds the amortised head's parameters
    assert cells[0]["test_elbo"] != cells[1]["test_elbo"]
    head = 300 * 2 * (2 * 100 + 1) + 2 * (2 * 100 + 1)
    assert cells[2]["parameters"] - cells[0]["parameters"] == head
    mean_ll = (cells[2]["test_log_px"] + cells[3]["test_log_px"]) / 2
    assert res["by_length"]["2"]["test_log_px"] == pytest.approx(mean_ll)
    assert "Rezende & Mohamed" in md and (out / "figures" / "val_elbo_curves.png").is_file()

    # the reported log p(x) is the saved model's, recomputed independently with the same seed
    model = load_vae(out / "K2-seed1" / "model.pt")
    val, test = (load_mnist(s, "static").images[:n] for s, n in (("val", 300), ("test", 100)))
    torch.manual_seed(1)
    evaluate_elbo(model, val), evaluate_elbo(model, test)  # the same RNG draws as the run
    ll = evaluate_log_likelihood(model, test, k=10, limit=50)
    assert ll["log_px"] == pytest.approx(cells[3]["test_log_px"], rel=1e-6)

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


def test_vae_flow_seeds_option(tmp_path, mnist):
    from dgm_ext.experiments import run_experiment

    with pytest.raises(ValueError, match="seeds: the number of seeds per flow length"):
        run_experiment("vae-flow", out=tmp_path / "s", quick=True, extra={"seeds": 0})
    res = run_experiment("vae-flow", out=tmp_path / "t", quick=True, seed=5, progress=False,
                         extra={"seeds": 1, "run": "3"})  # fmt: skip
    assert [(c["flow_length"], c["seed"]) for c in res["cells"]] == [(3, 5)]
    assert res["by_length"]["3"]["test_log_px"] == res["cells"][0]["test_log_px"]
