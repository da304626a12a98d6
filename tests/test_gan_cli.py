"""`dgm-ext train gan`, `dgm-ext eval` of a generator, and `reproduce gan-mnist --quick`.

The train/eval tests replace the feature networks by fixed random projections (as
tests/test_metrics_eval.py does), so the numbers can be recomputed independently here; the
gan-mnist test runs the real (small, quick) MNIST classifier end to end.
"""

from __future__ import annotations

import json

import pytest
import torch
from _data import DATA, needs_mnist
from _metrics_helpers import projection_space

from dgm_ext import cli
from dgm_ext.metrics import evaluate as ev
from dgm_ext.metrics import frechet_distance


@pytest.fixture
def projection(monkeypatch):
    monkeypatch.setattr(ev, "mnist_feature_space", lambda d="mnist", **k: projection_space(d, 1))
    torch.set_num_threads(1)


def _test_images(n):
    from dgm_ext.data import load_mnist

    return load_mnist("test", "grey").images[:n]


@needs_mnist
def test_train_gan_then_eval_its_generator(projection, tmp_path, capsys):
    out = tmp_path / "gan"
    argv = ["train", "gan", "--out", str(out), "--train-size", "96", "--batch-size", "32",
            "--epochs", "2", "--metrics-every", "1", "--n", "64", "--ema", "0.9",
            "--critic-steps", "2", "--penalty", "r1", "--penalty-weight", "0.5",
            "--no-progress"]  # fmt: skip
    assert cli.main(argv) == 0
    res = json.loads((out / "eval.json").read_text())
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all({"fid", "kid", "is", "train_penalty", "train_jsd"} <= set(r) for r in rows)
    assert res["fid"] == rows[-1]["fid"] and res["epochs"] == 2
    for e in (0, 1, 2):
        assert (out / "figures" / f"samples-epoch-{e:04d}.png").is_file()
    from dgm_ext.gan import load_gan

    gan = load_gan(out / "generator.pt")
    assert gan.config.critic_steps == 2 and gan.config.penalty == "r1"
    ck = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert ck["ema"] is not None and ck["config"]["extra"]["gan"]["penalty_weight"] == 0.5

    # eval of the run folder: the FID of 64 samples (seed 0) against 64 test images,
    # recomputed here independently
    capsys.readouterr()
    assert cli.main(["eval", str(out), "--n", "64", "--metrics", "fid,is", "--json",
                     str(tmp_path / "e.json")]) == 0  # fmt: skip
    got = json.loads((tmp_path / "e.json").read_text())["sample_quality"]
    torch.manual_seed(0)
    samples = gan.sample(64)
    space = projection_space("mnist", 1)
    want = frechet_distance(space.extract(samples)[0], space.extract(_test_images(64))[0])
    assert got["fid"] == pytest.approx(want, rel=1e-9)
    assert got["reference"] == "mnist:test" and "is_mean" in got

    # rerunning the same command resumes, finds nothing to do, says so
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert "already finished 2 epochs" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--penalty", "r1"], "penalty_weight"),
        (["--ema", "1.5"], "--ema must be in"),
        (["--epochs", "0"], "--epochs must be >= 1"),
        (["--critic-steps", "0"], "critic_steps"),
        (["--precision", "16"], "need the Trainer's default step"),  # the GAN steps itself
        (["--lr-schedule", "step"], "needs lr_step_size"),
    ],
)
def test_train_gan_bad_options_are_clear_errors(projection, tmp_path, capsys, extra, message):
    assert cli.main(["train", "gan", "--out", str(tmp_path / "x"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_reproduce_options_are_checked_per_experiment(tmp_path, capsys):
    assert cli.main(["reproduce", "vae-mlp", "--quick", "--ema", "0.9", "--out",
                     str(tmp_path / "v")]) == 2  # fmt: skip
    assert "--ema: experiment 'vae-mlp' does not take this option" in capsys.readouterr().err


@needs_mnist
def test_reproduce_gan_mnist_quick(tmp_path, monkeypatch, capsys):
    """The whole experiment on 256 images for one epoch with the real quick classifier; its
    class histogram recomputed from that classifier's logits on the saved generator's
    samples (tests/test_gan_mnist_report.py checks the correlations, and the histogram of a
    generator whose samples spread over the classes)."""
    monkeypatch.setenv("DGM_EXT_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)
    out = tmp_path / "run"
    assert cli.main(["reproduce", "gan-mnist", "--quick", "--epochs", "1", "--train-size",
                     "256", "--out", str(out), "--no-progress"]) == 0  # fmt: skip
    res = json.loads((out / "results.json").read_text())
    assert res["epochs"] == 1 and res["parameters"] == 1_510_032 + 533_505
    assert [e["epoch"] for e in res["evaluations"]] == [1]
    _check_class_histogram(out, res)
    assert len(res["interpolation_labels"]) == 7  # endpoints: see the test below
    assert res["floor"]["fid"] < res["final"]["fid"]
    for name in ("losses", "metric_and_fid", "interpolation", "class_histogram"):
        assert (out / "figures" / f"{name}.png").is_file()
    assert "gan-mnist: sample quality over training" in (out / "results.md").read_text()


def _check_class_histogram(out, res) -> None:
    """The final samples (seed 0 + 2, the saved generator) labelled by the cached quick
    classifier's logits, counted here."""
    from dgm_ext.experiments.gan_mnist import QUICK_CLASSIFIER
    from dgm_ext.gan import load_gan
    from dgm_ext.metrics.mnist_net import mnist_feature_net

    net = mnist_feature_net("mnist", train_config=QUICK_CLASSIFIER, root=DATA).eval()
    gen = load_gan(out / "train" / "generator.pt").generator.eval()
    z = torch.randn(1000, 100, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        images = ((gen(z) + 1) / 2).clamp(0, 1)
        probs = torch.cat([torch.softmax(net(x), 1) for x in images.split(500)])
    labels = probs.argmax(1)
    assert res["class_histogram"] == [int((labels == c).sum()) for c in range(10)]
    share = float((probs.max(1).values > 0.9).double().mean())
    assert res["share_confident"] == pytest.approx(share, abs=1e-12)


def test_interpolation_endpoints_are_confident_samples_of_two_classes():
    from dgm_ext.experiments.gan_mnist import _interpolation
    from dgm_ext.gan import GAN, GANConfig

    torch.manual_seed(0)
    gan = GAN(GANConfig(image_shape=(1, 4, 4)))

    z = torch.randn(64, 100, generator=torch.Generator().manual_seed(3))
    middle = gan.decode(z).flatten(1).mean(1).median()

    class Quality:  # class 1 when an image is brighter than the median candidate
        def probs(self, images):
            p1 = torch.sigmoid(1e4 * (images.flatten(1).mean(1) - middle)).double()
            return torch.stack([1 - p1, p1], 1)

    images, labels = _interpolation(gan, Quality(), seed=3, steps=7, candidates=64)
    assert images.shape == (7, 1, 4, 4) and len(labels) == 7
    probs = Quality().probs(gan.decode(z))
    conf, label = probs.max(1)
    assert len(set(label.tolist())) == 2  # the candidates hold both classes
    assert torch.allclose(images[0], gan.decode(z[conf.argmax()][None])[0], atol=1e-6)
    assert labels[0] != labels[-1]
    best_other = conf.masked_fill(label == label[conf.argmax()], -1).argmax()
    assert torch.allclose(images[-1], gan.decode(z[best_other][None])[0], atol=1e-6)
