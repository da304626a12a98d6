"""The shipped MNIST / Fashion-MNIST feature-classifier weights (issue 24).

``dgm_ext/metrics/weights/<dataset>-classifier.pt`` are loaded for the default config: their
sha256 is checked against ``SHIPPED_SHA256`` on every load (a corrupt or missing file is an
error that says how to restore it, never a retraining), no data is read, nothing is trained
or written. Their accuracy on the 10,000 official test images is recomputed here from the
IDX files, decoded with gzip and numpy (not the library's reader). A non-default config is
trained on first use and cached under a ``-retrained-`` name, and the net says so.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import DATA, needs_fashion, needs_mnist

import dgm_ext
from dgm_ext.data import ChecksumError, ChecksumWarning, find_mnist_files
from dgm_ext.metrics import mnist_net
from dgm_ext.metrics.mnist_net import (
    SHIPPED_SHA256,
    FeatureNet,
    ShippedWeightsError,
    TrainConfig,
    mnist_feature_net,
    shipped_feature_net,
)

DATASETS = ("mnist", "fashion-mnist")
# where the files must be: inside the installed package, next to the metrics modules
PACKAGE_WEIGHTS = Path(dgm_ext.__file__).parent / "metrics" / "weights"
TINY = TrainConfig(width=16, channels=(8, 16), epochs=1, batch_size=32, lr=5e-3, n_train=640,
                   n_eval=200, threads=1)  # fmt: skip


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _idx(path: Path, header: int) -> np.ndarray:
    """An IDX file's payload (after its ``header`` bytes), gzip or not, read here."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return np.frombuffer(raw, dtype=np.uint8, offset=header)


def _test_split(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    files = find_mnist_files(root=DATA, fashion=dataset == "fashion-mnist", download=False)
    images = _idx(files["test_images"][0], 16).reshape(-1, 28, 28)
    labels = _idx(files["test_labels"][0], 8)
    assert images.shape == (10_000, 28, 28) and labels.shape == (10_000,)
    return torch.from_numpy(images.astype(np.float32) / 255), torch.from_numpy(labels.copy())


@pytest.fixture
def no_training(monkeypatch, tmp_path):
    """Any training or data read fails the test; the data root and cache are empty folders."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the default classifier must not train or read data")

    monkeypatch.setattr(mnist_net, "train_classifier", forbidden)
    monkeypatch.setattr(mnist_net, "_load_data", forbidden)
    monkeypatch.setattr(mnist_net, "load_mnist_arrays", forbidden)
    monkeypatch.setenv("DGM_EXT_DATA", str(tmp_path / "no-data"))
    monkeypatch.setenv("DGM_EXT_CACHE", str(tmp_path / "cache"))
    return tmp_path


@pytest.fixture
def fake_trainer(monkeypatch):
    """Counts trainings, which return an untrained (seeded) net at once."""
    calls: list[TrainConfig] = []

    def fake(images, labels, config):
        calls.append(config)
        with torch.random.fork_rng():
            torch.manual_seed(len(calls))
            return FeatureNet(config.width, config.channels, config.kernel).eval()

    monkeypatch.setattr(mnist_net, "train_classifier", fake)
    return calls


# ------------------------------------------------------------------ the files
@pytest.mark.parametrize("dataset", DATASETS)
def test_shipped_file_matches_its_constant_and_format(dataset):
    path = PACKAGE_WEIGHTS / f"{dataset}-classifier.pt"
    assert mnist_net.shipped_weights_path(dataset) == path
    assert path.is_file() and path.stat().st_size < 1_000_000
    assert re.fullmatch("[0-9a-f]{64}", SHIPPED_SHA256[dataset])
    assert _sha256(path) == SHIPPED_SHA256[dataset]
    obj = torch.load(path, weights_only=True)
    assert obj["dataset"] == dataset and obj["format"] == mnist_net.SHIPPED_FORMAT
    sd = obj["state_dict"]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in sd.values())
    # the default architecture, counted by hand: 2 convs 5x5 (1->16, 16->32), 1568->128->10
    assert sum(v.numel() for v in sd.values()) == (16 * 25 + 16) + (32 * 16 * 25 + 32) + (
        1568 * 128 + 128
    ) + (128 * 10 + 10)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.name != "threads"}
    defaults["channels"] = list(defaults["channels"])
    assert obj["config"] == defaults


def test_the_two_files_differ():
    a, b = (_sha256(PACKAGE_WEIGHTS / f"{d}-classifier.pt") for d in DATASETS)
    assert a != b


# ------------------------------------------------------------------ default call: shipped net
@pytest.mark.parametrize("dataset", DATASETS)
def test_default_call_loads_the_shipped_net_without_data_or_training(no_training, dataset):
    path = PACKAGE_WEIGHTS / f"{dataset}-classifier.pt"
    weights = torch.load(path, weights_only=True)["state_dict"]
    for config in (None, TrainConfig(), {"threads": 3}, dataclasses.replace(TrainConfig())):
        net = mnist_feature_net(dataset, train_config=config)
        assert net.shipped is True and net.dataset == dataset
        assert net.key == _sha256(path) and net.name == f"{dataset}-classifier"
        assert net.ident == f"{dataset}-classifier:{_sha256(path)}"
        assert net.weights_path == path and net.cache_path is None
        assert net.config == TrainConfig(threads=None)
        assert not net.training and not any(p.requires_grad for p in net.parameters())
        assert net.state_dict().keys() == weights.keys()
        for k, v in weights.items():
            assert torch.equal(net.state_dict()[k], v), k
    assert not (no_training / "cache").exists()  # nothing written


def test_default_call_ignores_verify_and_root(no_training):
    net = mnist_feature_net("fmnist", root=no_training / "nowhere", verify=False)
    assert net.shipped and net.dataset == "fashion-mnist"


# ------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("damage", ["flip-one-byte", "truncate", "empty", "other-dataset"])
def test_altered_copy_is_refused_with_how_to_restore(tmp_path, monkeypatch, no_training, damage):
    weights = tmp_path / "weights"
    shutil.copytree(PACKAGE_WEIGHTS, weights)
    target = weights / "mnist-classifier.pt"
    good = target.read_bytes()
    if damage == "flip-one-byte":
        target.write_bytes(good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])
    elif damage == "truncate":
        target.write_bytes(good[: len(good) // 2])
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        shutil.copyfile(weights / "fashion-mnist-classifier.pt", target)
    bad = _sha256(target)
    assert bad != SHIPPED_SHA256["mnist"]
    monkeypatch.setattr(mnist_net, "WEIGHTS_DIR", weights)
    with pytest.raises(ShippedWeightsError) as info:
        mnist_feature_net("mnist")
    msg = str(info.value)
    assert str(target) in msg and bad in msg and SHIPPED_SHA256["mnist"] in msg
    assert "git checkout -- dgm_ext/metrics/weights/mnist-classifier.pt" in msg
    assert "reinstall" in msg and "never retrains" in msg
    # the same through an explicit path; the other data set's (intact) file still loads
    with pytest.raises(ShippedWeightsError, match="corrupt or was changed"):
        shipped_feature_net("mnist", path=target)
    assert mnist_feature_net("fashion-mnist").shipped


def test_missing_file_is_refused(tmp_path, monkeypatch, no_training):
    monkeypatch.setattr(mnist_net, "WEIGHTS_DIR", tmp_path / "empty")
    with pytest.raises(ShippedWeightsError, match="cannot be read") as info:
        mnist_feature_net("fashion-mnist")
    assert str(tmp_path / "empty" / "fashion-mnist-classifier.pt") in str(info.value)
    assert "reinstall" in str(info.value)


@pytest.mark.parametrize("edit", ["dataset", "config", "shape", "format", "not-a-dict"])
def test_file_with_matching_sha_but_wrong_contents_is_refused(tmp_path, monkeypatch, edit):
    """A wrong constant (or changed defaults) with a file that passes the sha256 check."""
    obj = torch.load(PACKAGE_WEIGHTS / "mnist-classifier.pt", weights_only=True)
    if edit == "dataset":
        obj["dataset"], expected = "fashion-mnist", "holds the 'fashion-mnist' classifier"
    elif edit == "config":
        obj["config"]["epochs"], expected = 5, "default TrainConfig"
    elif edit == "shape":
        obj["state_dict"]["head.weight"], expected = torch.zeros(10, 3), "size mismatch"
    elif edit == "format":
        obj["format"], expected = 99, "format 99"
    else:
        obj, expected = [1, 2], "expected a dict, got list"
    path = tmp_path / "mnist-classifier.pt"
    torch.save(obj, path)
    monkeypatch.setitem(SHIPPED_SHA256, "mnist", _sha256(path))
    with pytest.raises(ShippedWeightsError, match="do not fit this code") as info:
        shipped_feature_net("mnist", path=path)
    assert expected in str(info.value)


# ------------------------------------------------------------------ accuracy on the test split
@torch.no_grad()
def _accuracy(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    correct = 0
    for i in range(0, len(images), 1000):
        logits = net(images[i : i + 1000].unsqueeze(1))
        correct += int((logits.argmax(dim=1) == labels[i : i + 1000].long()).sum())
    return correct / len(images)


@needs_mnist
def test_shipped_mnist_accuracy_at_least_99_percent():
    net = mnist_feature_net("mnist")
    acc = _accuracy(net, *_test_split("mnist"))
    assert acc >= 0.99, acc
    assert acc == net.test_accuracy  # the number recorded in the file when it was made


@needs_fashion
def test_shipped_fashion_accuracy_at_least_89_percent():
    net = mnist_feature_net("fashion-mnist")
    acc = _accuracy(net, *_test_split("fashion-mnist"))
    assert acc >= 0.89, acc
    assert acc == net.test_accuracy


# ------------------------------------------------------------------ non-default: retrained
@needs_mnist
def test_non_default_config_trains_once_and_caches_under_another_name(tmp_path, fake_trainer):
    net = mnist_feature_net("mnist", cache_dir=tmp_path, train_config=TINY, root=DATA,
                            verbose=False)  # fmt: skip
    assert fake_trainer == [TINY]
    assert net.shipped is False and net.config == TINY
    assert re.fullmatch("[0-9a-f]{64}", net.key) and net.key not in SHIPPED_SHA256.values()
    assert net.name == f"mnist-classifier-retrained-{net.key[:12]}"
    assert net.ident == f"{net.name}:{net.key}"
    assert net.cache_path == net.weights_path
    assert net.cache_path == tmp_path / "metrics" / f"mnist-classifier-retrained-{net.key[:16]}.pt"
    assert net.cache_path.is_file()
    assert sorted(p.name for p in (tmp_path / "metrics").glob("*.pt")) == [net.cache_path.name]
    again = mnist_feature_net("mnist", cache_dir=tmp_path, train_config=TINY, root=DATA,
                              verbose=False)  # fmt: skip
    assert fake_trainer == [TINY]  # loaded, not retrained
    assert again.key == net.key and again.config == TINY and not again.shipped


def _labels_file_with_one_label_changed(root: Path) -> None:
    """A data root whose MNIST train labels are uncompressed and have label 0 changed."""
    files = find_mnist_files(root=DATA, download=False)
    folder = root / "mnist"
    folder.mkdir(parents=True)
    for key, (path, _) in files.items():
        if key == "train_labels":
            raw = bytearray(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else
                            path.read_bytes())  # fmt: skip
            raw[8] = (raw[8] + 1) % 10
            (folder / "train-labels-idx1-ubyte").write_bytes(bytes(raw))
        else:
            (folder / path.name).symlink_to(path)


@needs_mnist
def test_retrain_path_honours_verify(tmp_path, fake_trainer):
    root = tmp_path / "data"
    _labels_file_with_one_label_changed(root)
    cache = tmp_path / "cache"
    with pytest.raises(ChecksumError):
        mnist_feature_net("mnist", cache_dir=cache, train_config=TINY, root=root, verbose=False)
    assert fake_trainer == []
    with pytest.warns(ChecksumWarning, match="train-labels-idx1-ubyte"):
        changed = mnist_feature_net("mnist", cache_dir=cache, train_config=TINY, root=root,
                                    verbose=False, verify=False)  # fmt: skip
    assert fake_trainer == [TINY]
    official = mnist_feature_net("mnist", cache_dir=cache, train_config=TINY, root=DATA,
                                 verbose=False)  # fmt: skip
    assert len(fake_trainer) == 2 and official.key != changed.key  # other data, other key


# ------------------------------------------------------------------ arguments
def test_bad_arguments_name_the_argument(no_training):
    with pytest.raises(TypeError, match="dataset must be a str"):
        mnist_feature_net(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dataset must be one of"):
        mnist_feature_net("cifar10")
    with pytest.raises(TypeError, match="train_config must be a TrainConfig"):
        mnist_feature_net("mnist", train_config="default")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"train_config has unknown fields \['epoch'\]"):
        mnist_feature_net("mnist", train_config={"epoch": 3})
    with pytest.raises(TypeError, match="verify must be a bool"):
        mnist_feature_net("mnist", verify="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        mnist_net.is_default_config({"epochs": 4})  # type: ignore[arg-type]
