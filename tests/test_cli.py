"""Tests of the ``dgm-ext`` command line (``--quick`` reproduce runs, train, eval)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _data import DATA, needs_mnist

from dgm_ext.cli import build_parser, main
from dgm_ext.experiments import (
    EXPERIMENTS,
    get_experiment,
    list_experiments,
    register,
)

VAE_TARGETS = ["vae-elbo", "vae-mlp", "vae-likelihoods", "vae-latent", "vae-no-encoder"]


@pytest.fixture
def restore_threads():
    """The CLI sets torch's thread count; put it back for the other tests."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def test_registry_lists_vae_targets() -> None:
    assert set(VAE_TARGETS) <= set(list_experiments())
    assert get_experiment("vae-elbo").module == "dgm_ext.experiments.vae_elbo"
    assert callable(get_experiment("vae-mlp").load())
    with pytest.raises(ValueError, match="unknown experiment"):
        get_experiment("vae-nope")
    with pytest.raises(ValueError, match="already registered"):
        register("vae-elbo", "somewhere.else", "clash")
    assert EXPERIMENTS["vae-elbo"].module == "dgm_ext.experiments.vae_elbo"


def test_parser_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["reproduce", "vae-elbo", "--quick", "--out", "x"])
    assert args.command == "reproduce" and args.quick and args.name == "vae-elbo"
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in VAE_TARGETS)
    with pytest.raises(SystemExit):
        main(["train", "vae", "--likelihood", "poisson"])


def test_unknown_experiment_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "no-such-thing", "--out", "unused"]) == 2
    assert "unknown experiment" in capsys.readouterr().err


def test_python_dash_m_help() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "dgm_ext", "--help"], capture_output=True, text=True, check=False
    )
    assert res.returncode == 0 and "reproduce" in res.stdout


def _check_log_px_independently(reported: dict, model_path: Path) -> None:
    """The reported test log p(x) (one K-sample importance estimate per image, averaged)
    against the same estimator written out with torch.distributions in test_vae_flow.py,
    within 5 Monte-Carlo standard deviations of its mean over independent draws."""
    import math

    from test_vae_flow import _importance_estimates

    from dgm_ext.data import load_mnist

    k, n = reported["k"], reported["n"]
    images = load_mnist("test", "static", root=DATA).images[:n]
    est = _importance_estimates(model_path, images, k, reps=8)
    sd = math.sqrt(est.var(0).sum().item() / n**2 * (1 + 1 / 8))
    assert abs(reported["log_px"] - est.mean().item()) < 5 * sd, (reported, est.mean(), sd)


@needs_mnist
@pytest.mark.parametrize("name", VAE_TARGETS)
def test_reproduce_quick(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_threads: None
) -> None:
    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    out = tmp_path / name
    rc = main(["reproduce", name, "--quick", "--out", str(out), "--threads", "1", "--no-progress"])
    assert rc == 0
    md = (out / "results.md").read_text()
    assert md.startswith("# ") and "|---|" in md and "(quick)" in md
    results = json.loads((out / "results.json").read_text())
    assert results["wall_time_s"] > 0
    assert json.loads((out / "config.json").read_text())["quick"] is True
    figures = list(out.rglob("*.png"))
    assert figures and all(f.stat().st_size > 1000 for f in figures)
    assert list(out.rglob("metrics.csv")) or name == "vae-no-encoder"
    if name == "vae-elbo":
        _check_log_px_independently(results["test_log_px"], out / "model.pt")
        assert (out / "figures" / "elbo_curve.png").is_file()
    if name == "vae-mlp":
        assert (out / "figures" / "manifold_L2.png").is_file()
        assert len(list((out / "figures").glob("samples_epoch*.png"))) == 3
    if name == "vae-likelihoods":
        assert set(results["models"]) == {"gaussian", "beta", "categorical-4", "bernoulli"}
    if name == "vae-latent":
        assert (out / "figures" / "scatter_L2.png").is_file()
        assert (out / "figures" / "pca_L16.png").is_file()
    if name == "vae-no-encoder":
        assert (out / "figures" / "completion_left_half.png").is_file()
        assert results["optimised_elbo"] > results["encoder_elbo"] - 5.0


@needs_mnist
def test_train_then_eval(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_threads: None,
) -> None:
    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    run = tmp_path / "run"
    argv = [
        "train",
        "vae",
        "--out",
        str(run),
        "--latent-dim",
        "4",
        "--epochs",
        "1",
        "--train-size",
        "256",
        "--val-size",
        "128",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert (run / "model.pt").is_file() and (run / "metrics.csv").is_file()
    assert json.loads((run / "eval.json").read_text())["variant"] == "static"
    assert json.loads((run / "config.json").read_text())  # trainer config written
    capsys.readouterr()
    report = tmp_path / "eval.json"
    argv = ["eval", str(run), "--k", "5", "--limit", "40", "--json", str(report), "--threads", "1"]
    assert main(argv) == 0
    res = json.loads(report.read_text())
    assert res["log_px"]["n"] == 40 and res["log_px"]["k"] == 5
    assert res["log_px"]["log_px"] < 0 and res["elbo"]["elbo"] < 0
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
