"""``reproduce families-mnist``: the VAE, GAN and RealNVP side by side (quick run, option
parsing, and the reported numbers recomputed from the saved models)."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from _data import DATA, require
from torch.distributions import Bernoulli, Normal

from dgm_ext.experiments import families_mnist as fm


def test_parse_paths_defaults_and_errors():
    paths = fm._parse_paths(None)
    assert paths == {k: Path(v) for k, v in fm.DEFAULTS.items()}
    got = fm._parse_paths("gan=a/g.pt, realnvp=b/m.pt")
    assert got["gan"] == Path("a/g.pt") and got["realnvp"] == Path("b/m.pt")
    assert got["vae"] == Path(fm.DEFAULTS["vae"])
    for bad in ("glow=x.pt", "vae", "vae=", "vae=x.pt,,"):
        with pytest.raises(ValueError, match="FAMILY=PATH"):
            fm._parse_paths(bad)


def test_seconds_per_epoch_reads_the_runs_log(tmp_path):
    rows = [
        {"epoch": 1, "time_s": 10.0, "grid_s": 1.0},
        {"epoch": 2, "time_s": 30.0, "eval_s": 2.0},
        {"epoch": 3, "time_s": 20.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert fm._seconds_per_epoch(tmp_path / "model.pt") == (20.0, 3)
    sec, n = fm._seconds_per_epoch(tmp_path / "elsewhere" / "model.pt")
    assert n == 0 and sec != sec  # nan


# -- the reported numbers, recomputed --------------------------------------------------------
# The FID, KID and likelihood columns, recomputed from the saved models by a second path: the
# samples through each model's public sampling call (the run's seed), features straight from
# the classifier's layers, FID (scipy's sqrtm) and KID (the unbiased MMD² with the cubic
# kernel) in numpy, the VAE's log p(x) by an importance estimate with torch.distributions,
# RealNVP's bits/dim with the change of variables written out.
VAE_LL = re.compile(
    r"log p\(x\) (-?\d+\.\d\d) ± (\d+\.\d\d) nats \(binarised, IS K=(\d+), (\d+) test images\)"
)
FLOW_LL = re.compile(r"(\d+\.\d{3}) ± (\d+\.\d{3}) bits/dim \(8-bit, (\d+) test images\)")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``reproduce families-mnist --quick`` once (its three tiny models serve the tests below)."""
    from dgm_ext.experiments import run_experiment

    require("mnist")
    out = tmp_path_factory.mktemp("families") / "fam"
    threads = torch.get_num_threads()
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DGM_EXT_DATA", str(DATA))
            res = run_experiment("families-mnist", out=out, quick=True, progress=False)
    finally:
        torch.set_num_threads(threads)
    return out, res


def _classifier_features(images: torch.Tensor) -> np.ndarray:
    """The quick run's classifier's penultimate-layer activations, through its layers."""
    from dgm_ext.experiments.gan_mnist import QUICK_CLASSIFIER
    from dgm_ext.metrics.mnist_net import mnist_feature_net

    net = mnist_feature_net("mnist", root=DATA, train_config=QUICK_CLASSIFIER).eval()
    with torch.no_grad():
        x = images.reshape(-1, 1, 28, 28).float()
        return net.penultimate(net.body(x)).double().numpy()


def _fid(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance of Gaussians fitted to feature sets ``a`` and ``b`` (ddof = 1)."""
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        # dead ReLU units make the covariances singular: sqrtm warns, yet agrees with an
        # eigendecomposition of sqrt(s1) s2 sqrt(s1) to 1e-10 on these features
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(s1 @ s2).real
    d = a.mean(0) - b.mean(0)
    return float(d @ d + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def _kid(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD² with k(x, y) = (xᵀy / d + 1)³ between all rows of ``a`` and ``b``."""
    d = a.shape[1]
    kxx, kyy, kxy = ((u @ v.T / d + 1.0) ** 3 for u, v in ((a, a), (b, b), (a, b)))
    m, n = len(a), len(b)
    return float(
        (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
        - 2.0 * kxy.mean()
    )


def _model_samples(family: str, path: Path, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` samples in [0, 1] through the model's public sampling call, seeded as the run."""
    torch.manual_seed(seed)
    with torch.no_grad():
        if family == "vae":
            from dgm_ext.vae import load_vae

            images = load_vae(path).eval().sample(n)
        elif family == "gan":
            from dgm_ext.gan import load_gan

            images = load_gan(path).sample(n, generator=torch.Generator().manual_seed(seed))
        else:
            from dgm_ext.flows.realnvp import load_realnvp

            images = load_realnvp(path).eval().sample(n)
    return images.cpu().clamp(0, 1)


def _check_quality(reported: dict, feats: np.ndarray, ref: np.ndarray) -> None:
    # float32 features through the same layers in other batches: ~1e-7 relative
    assert reported["fid"] == pytest.approx(_fid(feats, ref), rel=1e-5)
    # 500 of 500 rows: every KID subset is all the data, so the subsets agree
    assert reported["kid"] == pytest.approx(_kid(feats, ref), rel=1e-5, abs=1e-9)
    assert reported["kid_std"] <= 1e-9 * max(1.0, abs(reported["kid"]))


@torch.no_grad()
def _vae_importance_estimates(path: Path, images: torch.Tensor, k: int, reps: int) -> torch.Tensor:
    """``(reps, N)`` draws of the K-sample importance estimate of log p(x) under the VAE file
    ``path`` (float64; Gaussian posterior, no flow): ``Normal`` q and prior, ``Bernoulli``
    decoder, ``logsumexp_k log w_k − log K``. Seeded, independent of the global RNG."""
    from dgm_ext.vae import load_vae

    model = load_vae(path).double().eval()
    assert model.flow is None and model.config.likelihood == "bernoulli"
    gen = torch.Generator().manual_seed(99)
    x = images.flatten(1).double()
    mu, logvar, _ = model.encoder(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    out = []
    for _ in range(reps):
        z = mu + q.stddev * torch.randn((k, *mu.shape), generator=gen, dtype=torch.float64)
        logits = model.decoder(z)[..., 0, :]
        log_w = (
            Bernoulli(logits=logits).log_prob(x.expand_as(logits)).sum(-1)
            + Normal(0.0, 1.0).log_prob(z).sum(-1)
            - q.log_prob(z).sum(-1)
        )
        out.append(torch.logsumexp(log_w, 0) - math.log(k))
    return torch.stack(out)


def _check_vae_likelihood(column: str, path: Path, k: int, n: int) -> None:
    """The VAE's likelihood column: log p(x) (K = ``k`` importance samples on the first ``n``
    binarised test images) against the expectation of the same estimator from 3 independent
    draws, within 5 Monte-Carlo standard deviations plus the column's rounding."""
    from dgm_ext.data import load_mnist

    m = VAE_LL.fullmatch(column)
    assert m, column
    value, se, col_k, col_n = float(m[1]), float(m[2]), int(m[3]), int(m[4])
    assert (col_k, col_n) == (k, n)
    images = load_mnist("test", "static", root=DATA).images[:n]
    reps = 3
    est = _vae_importance_estimates(path, images, k, reps)
    sd = math.sqrt(est.var(0).sum() / n**2 * (1.0 + 1.0 / reps))
    assert abs(value - est.mean().item()) < 5.0 * sd + 0.005, (column, est.mean().item(), sd)
    assert se == pytest.approx((est.std(1) / math.sqrt(n)).mean().item(), rel=0.02, abs=0.005)


@torch.no_grad()
def _check_flow_likelihood(column: str, path: Path, n: int) -> None:
    """RealNVP's likelihood column against bits/dim of the first ``n`` 8-bit test images written
    out here: dequantisation noise from a generator seeded 0 (``evaluate_bits_per_dim``'s
    documented default), the logit with the model's α and its log-det, the inner flow's forward,
    the N(0, I) base and the D log 256 term."""
    from dgm_ext.data import load_mnist
    from dgm_ext.flows.realnvp import load_realnvp

    m = FLOW_LL.fullmatch(column)
    assert m, column
    assert int(m[3]) == n
    flow = load_realnvp(path).eval()
    levels = load_mnist("test", "levels", root=DATA).images[:n]
    noise = torch.rand(levels.shape, generator=torch.Generator().manual_seed(0), device="cpu")
    x = (levels.double() + noise.double()) / 256.0
    a = flow.config.alpha
    p = a + (1.0 - 2.0 * a) * x
    log_jac_logit = (math.log(1.0 - 2.0 * a) - torch.log(p) - torch.log1p(-p)).flatten(1).sum(1)
    y = (torch.log(p) - torch.log1p(-p)).float().to(next(flow.parameters()).device)
    z, log_jac = flow.inner(y)
    z, log_jac = z.double().cpu(), log_jac.double().cpu()
    d = levels[0].numel()
    log_base = (-0.5 * z.flatten(1) ** 2 - 0.5 * math.log(2.0 * math.pi)).sum(1)
    bpd = -(log_base + log_jac + log_jac_logit - d * math.log(256.0)) / (d * math.log(2.0))
    # printed to 3 decimals; float32 rounding is far below that
    assert float(m[1]) == pytest.approx(bpd.mean().item(), abs=6e-4)
    assert float(m[2]) == pytest.approx((bpd.std() / math.sqrt(n)).item(), abs=6e-4)


def test_reproduce_quick(quick_run):
    from dgm_ext.data import load_mnist

    out, res = quick_run
    fam = res["families"]
    assert set(fam) == {"vae", "gan", "realnvp"}
    assert json.loads((out / "results.json").read_text())["n_samples"] == 500
    md = (out / "results.md").read_text()
    assert "| realnvp |" in md and "floor: training images" in md
    models = out / "quick-models"
    paths = {
        "vae": models / "vae" / "model.pt",
        "gan": models / "gan" / "generator.pt",
        "realnvp": models / "realnvp" / "model.pt",
    }
    ref = _classifier_features(load_mnist("test", "grey", root=DATA).images[:500])
    train = _classifier_features(load_mnist("train", "grey", root=DATA).images[:500])
    _check_quality(res["floor"], train, ref)
    for name, path in paths.items():
        row = fam[name]
        assert row["epochs"] == 1 and row["path"] == str(path)
        assert (out / "figures" / f"{name}_samples.png").is_file()
        _check_quality(row, _classifier_features(_model_samples(name, path, 500)), ref)
        assert f"| {name} | {row['fid']:.2f} | {row['kid']:.2f} ± {row['kid_std']:.2f} |" in md
        assert f"| {row['likelihood']} |" in md
    assert res["floor"]["fid"] < min(f["fid"] for f in fam.values())
    assert fam["gan"]["likelihood"] == "— (no likelihood)"
    _check_vae_likelihood(fam["vae"]["likelihood"], paths["vae"], fm.IS_K, 100)
    _check_flow_likelihood(fam["realnvp"]["likelihood"], paths["realnvp"], 100)
    from dgm_ext.flows.realnvp import load_realnvp

    params = sum(p.numel() for p in load_realnvp(paths["realnvp"]).parameters())
    assert fam["realnvp"]["parameters"] == params


def test_full_size_path_at_reduced_size(quick_run, tmp_path, monkeypatch):
    """The run without ``--quick`` (the models of ``--run``, ``N_SAMPLES`` samples, log p(x)
    with ``IS_K`` samples on ``IS_LIMIT`` test images, bits/dim on the whole test split), with
    its sizes and classifier made small: what its likelihood column says, recomputed."""
    from dgm_ext.experiments import run_experiment
    from dgm_ext.experiments.gan_mnist import QUICK_CLASSIFIER

    models = quick_run[0] / "quick-models"
    paths = {
        "vae": models / "vae" / "model.pt",
        "gan": models / "gan" / "generator.pt",
        "realnvp": models / "realnvp" / "model.pt",
    }
    monkeypatch.setattr(fm, "N_SAMPLES", 100)
    monkeypatch.setattr(fm, "IS_K", 50)
    monkeypatch.setattr(fm, "IS_LIMIT", 300)
    monkeypatch.setattr(fm, "CLASSIFIER", QUICK_CLASSIFIER)
    monkeypatch.setenv("DGM_EXT_DATA", str(DATA))
    threads = torch.get_num_threads()
    out = tmp_path / "full"
    try:
        res = run_experiment(
            "families-mnist", out=out, progress=False,
            extra={"run": ",".join(f"{k}={v}" for k, v in paths.items())},
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    fam = res["families"]
    assert res["n_samples"] == 100 and all(fam[k]["path"] == str(v) for k, v in paths.items())
    _check_vae_likelihood(fam["vae"]["likelihood"], paths["vae"], 50, 300)
    _check_flow_likelihood(fam["realnvp"]["likelihood"], paths["realnvp"], 10_000)
    md = (out / "results.md").read_text()
    for name in fm.FAMILIES:
        assert f"| {fam[name]['likelihood']} |" in md


def test_command_comes_from_the_experiment_config(tmp_path):
    run = tmp_path / "gan-run"
    (run / "train").mkdir(parents=True)
    exp = {"name": "gan-mnist", "out": str(run), "epochs": 25, "seed": 3, "extra": {}}
    (run / "config.json").write_text(json.dumps(exp))
    (run / "train" / "config.json").write_text(json.dumps({"run_dir": "x", "epochs": 25}))
    got = fm._command("gan", run / "train" / "generator.pt")
    assert got == "dgm-ext reproduce gan-mnist --epochs 25 --seed 3 --out gan-run (its train/)"
    exp = {"name": "realnvp-mnist", "out": "x", "epochs": None, "extra": {"run": "mlp"}}
    (run / "train" / "config.json").write_text(json.dumps(exp))
    got = fm._command("realnvp", run / "train" / "model.pt")
    assert got == "dgm-ext reproduce realnvp-mnist --run mlp --out train"
    (run / "train" / "config.json").write_text("{not json")
    (run / "config.json").unlink()
    assert fm._command("vae", run / "train" / "model.pt") == fm.COMMANDS["vae"]
