"""`dgm-ext eval --metrics` and dgm_ext.metrics.evaluate: sources, references and plumbing.

The feature networks are replaced by fixed random projections (the real MNIST classifier and
Inception have their own tests), so every number can be recomputed here independently. Tests
that read MNIST carry ``needs_mnist`` (``_data.py``: skipped when the files are missing,
failed under ``$DGM_EXT_REQUIRE_DATA``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from _data import DATA, needs_mnist
from _metrics_helpers import projection_space
from PIL import Image

from dgm_ext import cli
from dgm_ext.metrics import evaluate as ev
from dgm_ext.metrics import frechet_distance, inception_score, save_stats
from dgm_ext.recipes import evaluation
from dgm_ext.recipes.sources import data_spec


@pytest.fixture
def spaces(monkeypatch):
    calls = []

    def mnist_space(dataset="mnist", **kwargs):
        calls.append(("mnist", dataset))
        return projection_space(f"{dataset}-proj", 1)

    def inception_space(weights=None, device=None):
        calls.append(("inception", weights))
        return projection_space("inception-proj", 3)

    monkeypatch.setattr(ev, "mnist_feature_space", mnist_space)
    monkeypatch.setattr(ev, "inception_feature_space", inception_space)
    return calls


def _run(argv, tmp_path, capsys):
    out = tmp_path / "res.json"
    assert cli.main(["eval", *argv, "--json", str(out)]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())


def _mnist(split, n):
    from dgm_ext.data import load_mnist

    return load_mnist(split, "grey", root=DATA, download=False).images[:n]


@needs_mnist
def test_data_split_source_matches_direct_computation(spaces, tmp_path, capsys):
    res = _run(["mnist:train", "--n", "300", "--kid-subset-size", "100"], tmp_path, capsys)
    space = projection_space("x", 1)
    fa, pa = space.extract(_mnist("train", 300))
    fb, _ = space.extract(_mnist("test", 300))
    assert spaces == [("mnist", "mnist")]
    assert res["n"] == res["n_ref"] == 300 and res["reference"] == "mnist:test"
    assert res["feature_net"] == "mnist-proj" and res["feature_width"] == 12
    assert res["fid"] == pytest.approx(frechet_distance(fa, fb), rel=1e-12)
    assert (res["is_mean"], res["is_std"]) == pytest.approx(inception_score(pa, splits=10))
    assert res["kid_subset_size"] == 100 and np.isfinite(res["kid_mean"])


@needs_mnist
def test_png_folder_source_and_ref_stats(spaces, tmp_path, capsys):
    images = _mnist("val", 40)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(images):
        a = (img[0].numpy() * 255).round().astype(np.uint8)
        Image.fromarray(a, mode="L").save(folder / f"{i:03d}.png")
    res = _run([str(folder), "--metrics", "fid", "--n", "40"], tmp_path, capsys)
    space = projection_space("x", 1)
    quantised = (images * 255).round() / 255
    fa, _ = space.extract(quantised)
    fb, _ = space.extract(_mnist("test", 40))
    assert res["n"] == 40 and set(res) >= {"fid"} and "kid_mean" not in res
    assert res["fid"] == pytest.approx(frechet_distance(fa, fb), rel=1e-9)
    # the same FID against a statistics file of the reference, as pytorch-fid writes them
    stats = tmp_path / "ref.npz"
    fb_np = fb.numpy()
    save_stats(stats, fb_np.mean(0), np.cov(fb_np, rowvar=False))
    res2 = _run([str(folder), "--metrics", "fid", "--ref-stats", str(stats)], tmp_path, capsys)
    assert res2["fid"] == pytest.approx(res["fid"], rel=1e-9)
    assert res2["ref_stats"] == str(stats) and "n_ref" not in res2


@needs_mnist
def test_save_stats_round_trip(spaces, tmp_path, capsys):
    stats = tmp_path / "own.npz"
    res = _run(
        ["mnist:val", "--metrics", "fid", "--n", "50", "--save-stats", str(stats)],
        tmp_path,
        capsys,
    )
    res2 = _run(
        ["mnist:val", "--metrics", "fid", "--n", "50", "--ref-stats", str(stats)], tmp_path, capsys
    )
    assert res2["fid"] == pytest.approx(0.0, abs=1e-9)
    assert res["fid"] > 0


def test_rgb_images_use_inception(spaces, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(
        evaluation,
        "split_images",
        lambda d, s, r, n, **kw: torch.rand(20 if n is None else n, 3, 28, 28),
    )
    folder = tmp_path / "rgb"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    res = _run(
        [str(folder), "--inception-weights", "w.pth", "--kid-subset-size", "6"], tmp_path, capsys
    )
    assert spaces == [("inception", "w.pth")]
    assert res["reference"] == "cifar10:test" and res["n"] == 12


@needs_mnist
def test_vae_checkpoint_samples(spaces, tmp_path, capsys):
    from dgm_ext.vae import build_vae, save_vae

    path = save_vae(build_vae(arch="mlp", latent_dim=2, hidden=16), tmp_path / "model.pt")
    res = _run(
        [str(path), "--k", "0", "--limit", "20", "--metrics", "fid,is", "--n", "30"],
        tmp_path,
        capsys,
    )
    q = res["sample_quality"]
    assert q["n"] == 30 and q["n_ref"] == 30 and q["reference"] == "mnist:test"
    assert "elbo" in res and "kid_mean" not in q


def test_bad_requests_are_clear(spaces, tmp_path):
    with pytest.raises(ValueError, match="KID needs reference images"):
        ev.sample_quality(torch.rand(5, 1, 28, 28), projection_space("p", 1), ref_stats="x.npz")
    with pytest.raises(ValueError, match="subset of"):
        ev.parse_metrics("fid,lpips")
    stats = tmp_path / "wide.npz"
    save_stats(stats, np.zeros(7), np.eye(7))
    with pytest.raises(ValueError, match="another feature network"):
        ev.sample_quality(
            torch.rand(5, 1, 28, 28), projection_space("p", 1), ref_stats=stats, metrics=["fid"]
        )
    with pytest.raises(ValueError, match="data set must be one of"):
        data_spec("imagenet:train")
    with pytest.raises(ValueError, match=r"holds no \.png"):
        (tmp_path / "empty").mkdir()
        ev.load_image_folder(tmp_path / "empty")
