"""gan-mnist's reported numbers, recomputed: the Spearman correlations over evaluated epochs
and the mode coverage (class histogram, share of confident samples) of the final generator.

One small run (``--quick`` with 128 images for 4 epochs, each evaluated, generator EMA; KID
on fewer, smaller subsets) is shared by the module. Its numbers are checked against scipy on
the per-epoch rows of its ``metrics.jsonl``, and against a histogram computed here from the
saved generator's samples.
The feature network is a stand-in (``_hashed_space``): after 8 generator steps the real
MNIST classifier labels every sample alike (all one class, none confident), which would leave
the histogram and the confident share untested; the stand-in spreads the samples over the ten
classes with a share of confident ones strictly between 0 and 1. The real classifier's
histogram is checked in test_gan_cli.py. ``spearman`` itself is checked on controlled inputs
against ranks counted by brute force.
"""

from __future__ import annotations

import functools
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.stats
import torch
from _data import needs_mnist, require

from dgm_ext import cli
from dgm_ext.experiments import gan_mnist
from dgm_ext.experiments.gan_common import SampleQuality, spearman
from dgm_ext.metrics import evaluate as ev

EPOCHS, SEED = 4, 3
_G = torch.Generator().manual_seed(7)
_W = torch.randn(784, 12, generator=_G, dtype=torch.float64)
_V = torch.randn(784, 10, generator=_G, dtype=torch.float64)


def _logits(images: torch.Tensor) -> torch.Tensor:
    """Class logits of the stand-in: a fast-oscillating function of a fixed projection, so
    similar images still get unrelated classes (a hash of the image, not a classifier)."""
    return 8.0 * torch.sin(40.0 * (images.reshape(images.shape[0], -1).double() @ _V))


def _hashed_space(dataset: str = "mnist", **kwargs) -> ev.FeatureSpace:
    def extract(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.reshape(x.shape[0], -1).double() @ _W, torch.softmax(_logits(x), dim=1)

    return ev.FeatureSpace("hashed-stand-in", "projection", 12, extract)


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory):
    """The run's folder and its results.json."""
    import dgm_ext.metrics

    root = require("mnist")
    out = tmp_path_factory.mktemp("gan-mnist") / "run"
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dgm_ext.metrics, "mnist_feature_space", _hashed_space)
        # KID over 10 subsets of 200 instead of 100 of 1000: 3 s less per evaluation
        quality = functools.partial(SampleQuality, kid_subsets=10, kid_subset_size=200)
        mp.setattr(gan_mnist, "SampleQuality", quality)
        try:
            assert cli.main(["reproduce", "gan-mnist", "--quick", "--epochs", str(EPOCHS),
                             "--train-size", "128", "--seed", str(SEED), "--ema", "0.9",
                             "--data-root", str(root), "--threads", "1", "--out", str(out),
                             "--no-progress"]) == 0  # fmt: skip
        finally:
            torch.set_num_threads(threads)
    res = json.loads((out / "results.json").read_text())
    assert res["feature_net"].startswith("hashed-stand-in")  # the run used the stand-in
    return SimpleNamespace(out=out, res=res)


# --------------------------------------------------------------------------- spearman
def _average_ranks(x: list[float]) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their positions (counted, not sorted)."""
    return np.array([sum(v < a for v in x) + (sum(v == a for v in x) + 1) / 2 for a in x])


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([3.0, 1.0, 4.0, 1.5, 5.0], [9.0, 2.0, 6.0, 5.0, 3.0]),  # no ties
        ([1.0, 2.0, 2.0, 3.0, 7.0, 7.0], [0.5, 0.1, 0.9, 0.9, 0.2, 0.3]),  # ties in both
        ([4.0, 3.0, 2.0, 1.0], [1.0, 10.0, 100.0, 1000.0]),  # monotone, not linear
    ],
)
def test_spearman_is_pearson_of_average_ranks(a, b) -> None:
    ra, rb = _average_ranks(a), _average_ranks(b)
    want = float(np.corrcoef(ra, rb)[0, 1])
    assert spearman(a, b) == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert spearman(b, a) == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_spearman_drops_non_finite_pairs_and_refuses_degenerate_inputs() -> None:
    a = [1.0, float("nan"), 2.0, 5.0, 3.0, float("inf")]
    b = [2.0, 0.0, 1.0, 4.0, float("nan"), 3.0]
    # finite pairs: (1, 2), (2, 1), (5, 4): ranks (1, 2, 3) and (2, 1, 3)
    assert spearman(a, b) == pytest.approx(0.5, rel=1e-12)
    assert math.isnan(spearman([1.0, 2.0], [2.0, 1.0]))  # fewer than 3 points
    assert math.isnan(spearman([1.0, 2.0, 3.0, float("nan")], [1.0, 2.0, float("nan"), 4.0]))
    assert math.isnan(spearman([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]))  # constant input
    assert math.isnan(spearman([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]))


# --------------------------------------------------------------------------- the run
@needs_mnist
def test_spearman_correlations_over_evaluated_epochs(gan_run) -> None:
    lines = (gan_run.out / "train" / "metrics.jsonl").read_text().splitlines()
    evaluated = [r for r in map(json.loads, lines) if "fid" in r]
    assert [r["epoch"] for r in evaluated] == list(range(1, EPOCHS + 1))  # every epoch measured
    col = {k: np.array([r[k] for r in evaluated]) for k in ("fid", "kid", "train_jsd", "epoch")}
    pairs = {
        "fid_vs_jsd": ("fid", "train_jsd"),
        "kid_vs_jsd": ("kid", "train_jsd"),
        "fid_vs_epoch": ("fid", "epoch"),
        "jsd_vs_epoch": ("train_jsd", "epoch"),
    }
    got = gan_run.res["spearman"]
    assert set(got) == set(pairs)
    for name, (x, y) in pairs.items():
        want = scipy.stats.spearmanr(col[x], col[y]).statistic
        assert math.isfinite(want), name  # 4 distinct values per column: no NaN branch
        assert got[name] == pytest.approx(want, rel=1e-12, abs=1e-15), name
    # the reported per-epoch numbers are the rows' numbers
    report = gan_run.res["evaluations"]
    for r, e in zip(evaluated, report, strict=True):
        assert {k: e[k] for k in ("epoch", "train_jsd", "fid", "kid", "kid_std", "is")} == {
            k: r[k] for k in ("epoch", "train_jsd", "fid", "kid", "kid_std", "is")
        }
    assert gan_run.res["final"]["fid"] == evaluated[-1]["fid"]
    md = (gan_run.out / "results.md").read_text()
    assert f"FID vs train_jsd {got['fid_vs_jsd']:.3f}" in md
    assert f"train_jsd vs epoch {got['jsd_vs_epoch']:.3f}" in md


@needs_mnist
def test_class_histogram_and_confident_share_of_final_samples(gan_run) -> None:
    """1000 samples of the saved (EMA) generator, drawn with seed SEED + 2 as the run's final
    samples are, labelled here from the stand-in's logits."""
    from dgm_ext.gan import load_gan

    gan = load_gan(gan_run.out / "train" / "generator.pt")
    assert gan.generator.training is False
    z = torch.randn(1000, 100, generator=torch.Generator().manual_seed(SEED + 2))
    with torch.no_grad():
        images = ((gan.generator(z) + 1) / 2).clamp(0, 1)
    logits = _logits(images)
    labels = logits.argmax(1).numpy()
    hist = [int((labels == c).sum()) for c in range(10)]
    # max softmax > 0.9  ⇔  Σ_{j≠top} exp(l_j − l_top) < 1/9
    rest = torch.exp(logits - logits.max(1, keepdim=True).values).sum(1) - 1
    confident = float((rest < 1 / 9).double().mean())
    assert min(hist) > 0 and 0 < confident < 1  # a histogram and a share that can be wrong
    res = gan_run.res
    assert res["class_histogram"] == hist
    assert res["share_confident"] == pytest.approx(confident, abs=1e-12)
    row = f"| samples | {' | '.join(map(str, hist))} |"
    assert row in (gan_run.out / "results.md").read_text()
