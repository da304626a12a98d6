"""``--data folder:PATH``: the train commands on a folder of the user's images (any size and
channels, subfolders as classes), and ``--data`` refusals before anything is created."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dgm_ext.cli import main
from dgm_ext.recipes.datasets import load_training_data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def folder(tmp_path):
    """20 RGB 12x10 PNG files in two class subfolders (cats: 8, dogs: 12)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "images"
    pics = {}
    for cls, n in (("cats", 8), ("dogs", 12)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
            path = root / cls / f"{i:02d}.png"
            Image.fromarray(a).save(path)
            pics[path] = a
    return root, pics


def _args(spec, **kw):
    base = {"dataset": spec, "data_root": None, "no_verify": False, "data_seed": 0,
            "image_channels": None, "image_size": None, "train_size": None,
            "val_size": None}  # fmt: skip
    return argparse.Namespace(**{**base, **kw})


def test_folder_pixels_labels_and_splits(folder):
    root, pics = folder
    data = load_training_data(_args(f"folder:{root}", image_size="8x6"), "levels")
    assert data.image_shape == (3, 8, 6) and data.classes == ["cats", "dogs"]
    assert data.num_classes == 2 and len(data.train) == 18 and len(data.val) == 2
    assert data.test is data.val
    # every image: PIL bicubic (antialiased) to 6x8, as uint8 levels; label = its subfolder
    expected = {}
    for path, a in pics.items():
        small = np.asarray(Image.fromarray(a).resize((6, 8), Image.BICUBIC)).transpose(2, 0, 1)
        expected[small.tobytes()] = int(path.parent.name == "dogs")
    got = torch.cat([data.train.images, data.val.images]).to(torch.uint8).numpy()
    labels = torch.cat([data.train.labels, data.val.labels]).tolist()
    pairs = sorted((g.tobytes(), y) for g, y in zip(got, labels, strict=True))
    assert sorted(expected.items()) == pairs
    grey = load_training_data(_args(f"folder:{root}", image_channels=1), "grey")
    assert grey.image_shape == (1, 12, 10) and grey.train.images.dtype == torch.float32
    assert float(grey.train.images.max()) <= 1.0


def test_train_vae_gan_realnvp_on_a_folder(folder, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DGM_EXT_INCEPTION_WEIGHTS", raising=False)
    root, _ = folder
    common = ["--data", f"folder:{root}", "--image-size", "8x8", "--no-progress"]
    assert main(["train", "vae", *common, "--arch", "conv", "--hidden", "8", "--latent-dim",
                 "2", "--epochs", "1", "--batch-size", "8", "--conditional",
                 "--likelihood", "gaussian", "--out", str(tmp_path / "vae")]) == 0  # fmt: skip
    res = json.loads((tmp_path / "vae" / "eval.json").read_text())
    assert res["image_shape"] == [3, 8, 8] and res["data"] == f"folder:{root}"
    from dgm_ext import load

    vae = load(tmp_path / "vae" / "model.pt")
    assert vae.image_shape == (3, 8, 8) and vae.num_classes == 2
    assert vae.sample(3, labels=1).shape == (3, 3, 8, 8)

    capsys.readouterr()
    assert main(["train", "gan", *common, "--epochs", "1", "--batch-size", "8", "--width", "8",
                 "--z-dim", "4", "--conditional", "--out", str(tmp_path / "gan")]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "sample-quality metrics skipped" in err and "--inception-weights" in err
    res = json.loads((tmp_path / "gan" / "eval.json").read_text())
    assert res["feature_net"] is None and "fid" not in res
    gan = load(tmp_path / "gan" / "generator.pt")
    assert gan.config.image_shape == (3, 8, 8) and gan.config.num_classes == 2

    assert main(["train", "realnvp", *common, "--epochs", "1", "--batch-size", "8",
                 "--couplings", "2", "--hidden", "16",
                 "--out", str(tmp_path / "nvp")]) == 0  # fmt: skip
    res = json.loads((tmp_path / "nvp" / "eval.json").read_text())
    assert res["image_shape"] == [3, 8, 8] and np.isfinite(res["test"]["bpd"])


def test_data_refusals_create_nothing(folder, tmp_path, capsys):
    root, _ = folder
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "a.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "b.png")
    out = tmp_path / "out"
    cases = [
        (["train", "vae", "--data", "imagenet"], "--data must be one of"),
        (["train", "gan", "--data", f"folder:{tmp_path / 'nope'}"], "is not a folder"),
        (["train", "vae", "--image-size", "8x8", "--epochs", "0", "--train-size", "8",
          "--val-size", "8"], "apply to folder data, not mnist"),
        (["train", "vae", "--data", f"folder:{root}", "--image-size", "8y"], "--image-size must"),
        (["train", "gan", "--data", f"folder:{flat}", "--conditional"], "needs class labels"),
        (["train", "vae", "--data", f"folder:{root}", "--arch", "conv", "--image-size", "10x10"],
         "image_shape: the conv VAE needs"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main([*argv, "--out", str(out), "--no-progress"]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)
        assert not out.exists(), argv
