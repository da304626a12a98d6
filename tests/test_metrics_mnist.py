"""MNIST feature network of dgm_ext.metrics: training, on-disk cache, feature passes.

These are the paths of non-default configs (trained on first use, cached as
``<dataset>-classifier-retrained-<key>.pt``); the shipped default weights are tested in
``test_metrics_shipped_weights.py``. Most tests use a deliberately tiny classifier
(``TINY``: width 16, 3000 training images, 2 epochs) and a temporary cache folder, so every
training takes about a second; one test trains the default architecture and recipe
(``TrainConfig()``'s optimiser, schedule, preprocessing) on fewer images. Tests that read
MNIST find it through ``_data.py`` (``$DGM_EXT_DATA``, else the library's default folder):
skipped with the reason when it is missing, failed instead when ``$DGM_EXT_REQUIRE_DATA``
is set (CI).
"""

from __future__ import annotations

import dataclasses
import io
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import DATA, needs_mnist

from dgm_ext.data import load_mnist
from dgm_ext.metrics import cache as cache_mod
from dgm_ext.metrics import mnist_net
from dgm_ext.metrics.cache import (
    CacheWarning,
    atomic_save,
    cache_root,
    file_lock,
    make_key,
    safe_load,
)
from dgm_ext.metrics.mnist_net import (
    FeatureNet,
    TrainConfig,
    class_probs,
    classifier_key,
    features,
    mnist_feature_net,
)

TINY = TrainConfig(width=16, channels=(8, 16), epochs=2, batch_size=32, lr=5e-3, n_train=3000,
                   n_eval=1000, threads=1)  # fmt: skip


PARAMS = 215_370  # the default architecture (TrainConfig())


def _count(monkeypatch, fake: bool) -> list[TrainConfig]:
    """Record the configs mnist_net.train_classifier is called with; ``fake`` returns an
    untrained net instead of training (for tests about keys and files, not accuracy)."""
    calls: list[TrainConfig] = []
    real = mnist_net.train_classifier

    def counting(images, labels, config):
        calls.append(config)
        if fake:
            with torch.random.fork_rng():
                torch.manual_seed(len(calls))
                return FeatureNet(config.width, config.channels, config.kernel).eval()
        return real(images, labels, config)

    monkeypatch.setattr(mnist_net, "train_classifier", counting)
    return calls


@pytest.fixture
def train_counter(monkeypatch):
    """Counts real trainings."""
    return _count(monkeypatch, fake=False)


@pytest.fixture
def fake_trainer(monkeypatch):
    """Counts trainings, which return untrained nets at once."""
    return _count(monkeypatch, fake=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One real training of TINY into a module-wide cache: ``(net, cache file bytes, calls)``."""
    mp = pytest.MonkeyPatch()
    calls = _count(mp, fake=False)
    try:
        net = mnist_feature_net(
            "mnist",
            cache_dir=tmp_path_factory.mktemp("cache"),
            train_config=TINY,
            root=DATA,
            verbose=False,
        )
    finally:
        mp.undo()
    return net, net.cache_path.read_bytes(), calls


def _prefill(cache: Path, trained) -> Path:
    """Put the module's trained cache file into ``cache``; returns its path."""
    net, data, _ = trained
    dest = cache / "metrics" / net.cache_path.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def _weights(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


# ------------------------------------------------------------------ train once, then load
@needs_mnist
def test_first_call_trains_and_caches_second_loads(tmp_path, trained, train_counter):
    net, _, calls = trained
    assert len(calls) == 1 and calls[0] == TINY  # the module fixture's first call trained
    assert net.cache_path is not None and net.cache_path.is_file()
    assert net.cache_path.parent.name == "metrics"
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert (net.feature_layer, net.width, net.dataset) == ("penultimate", 16, "mnist")
    # the small classifier is sane: > 90 % on 1000 test and 1000 val images, recomputed here
    assert net.test_accuracy > 0.90 and net.val_accuracy > 0.90
    test = load_mnist("test", root=DATA)
    pred = class_probs(net, test.images[:1000]).argmax(1)
    assert (pred == test.labels[:1000]).double().mean().item() == pytest.approx(net.test_accuracy)

    cache = net.cache_path.parent.parent
    again = mnist_feature_net("mnist", cache_dir=cache, train_config=TINY, root=DATA, verbose=False)
    assert train_counter == [], "second call retrained instead of loading the cache"
    assert again.cache_path == net.cache_path and again.key == net.key
    assert again.config == TINY and not again.shipped  # loaded from the cache, still described
    assert again.test_accuracy == net.test_accuracy
    for k, v in _weights(net).items():
        assert torch.equal(v, again.state_dict()[k])
    # no temp files left behind; the lock file is the only other entry
    names = sorted(p.name for p in net.cache_path.parent.iterdir())
    assert names == sorted([net.cache_path.name, net.cache_path.name + ".lock"])
    # threads are not part of the key
    mnist_feature_net(cache_dir=cache, train_config={**TINY.to_dict(), "threads": 2},
                      root=DATA, verbose=False)  # fmt: skip
    assert train_counter == []


@needs_mnist
def test_default_cache_folder_follows_env(tmp_path, monkeypatch, trained, fake_trainer):
    monkeypatch.setenv("DGM_EXT_CACHE", str(tmp_path / "env-cache"))
    assert cache_root() == tmp_path / "env-cache"
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("DGM_EXT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "dgm_ext"
    _prefill(tmp_path / "xdg" / "dgm_ext", trained)
    net = mnist_feature_net(train_config=TINY, root=DATA, verbose=False)
    assert net.cache_path.parent == tmp_path / "xdg" / "dgm_ext" / "metrics"
    assert fake_trainer == [] and net.test_accuracy == trained[0].test_accuracy


# ------------------------------------------------------------------ the key
def test_key_depends_on_every_part():
    base = classifier_key("mnist", "d" * 64, TINY)
    assert base == classifier_key("mnist", "d" * 64, TrainConfig(**TINY.to_dict()))
    others = {
        classifier_key("fashion-mnist", "d" * 64, TINY),
        classifier_key("mnist", "e" * 64, TINY),
        *(
            classifier_key("mnist", "d" * 64, TrainConfig(**{**TINY.to_dict(), field: value}))
            for field, value in [("width", 17), ("channels", (4, 9)), ("epochs", 3),
                                 ("batch_size", 51), ("lr", 4e-3), ("seed", 1),
                                 ("n_train", 2001), ("n_eval", 999), ("kernel", 3)]
        ),
    }  # fmt: skip
    assert base not in others and len(others) == 11
    with pytest.MonkeyPatch.context() as mp:  # the cache-file format is part of the key
        mp.setattr(mnist_net, "FORMAT_VERSION", mnist_net.FORMAT_VERSION + 1)
        assert classifier_key("mnist", "d" * 64, TINY) not in (base, *others)
    assert make_key("a", 1, [1, 2]) == make_key("a", 1, (1, 2)) != make_key("a", 1, [2, 1])


def test_key_depends_on_training_code(monkeypatch):
    base = classifier_key("mnist", "d" * 64, TINY)

    def other_train(images, labels, config):  # pragma: no cover - never called
        return None

    monkeypatch.setattr(mnist_net, "_CODE_HASH", None)
    monkeypatch.setattr(mnist_net, "_TRAINING_CODE", (*mnist_net._TRAINING_CODE[:1], other_train))
    assert classifier_key("mnist", "d" * 64, TINY) != base


@needs_mnist
def test_changed_config_or_data_trains_a_new_file(tmp_path, monkeypatch, fake_trainer):
    a = mnist_feature_net(cache_dir=tmp_path, train_config=TINY, root=DATA, verbose=False)
    b = mnist_feature_net(cache_dir=tmp_path, train_config={**TINY.to_dict(), "seed": 1},
                          root=DATA, verbose=False)  # fmt: skip
    assert len(fake_trainer) == 2 and b.key != a.key and b.cache_path != a.cache_path
    assert fake_trainer[1].seed == 1
    real_load = mnist_net._load_data

    def one_pixel_changed(dataset, root, verify=True):
        d = real_load(dataset, root, verify)
        x = d.train_images.copy()
        x[0, 14, 14] ^= 1
        return d._replace(train_images=x)

    monkeypatch.setattr(mnist_net, "_load_data", one_pixel_changed)
    c = mnist_feature_net(cache_dir=tmp_path, train_config=TINY, root=DATA, verbose=False)
    assert len(fake_trainer) == 3 and c.key not in (a.key, b.key)
    assert len(list((tmp_path / "metrics").glob("*.pt"))) == 3


# ------------------------------------------------------------------ corrupt cache files
@needs_mnist
@pytest.mark.parametrize(
    "damage", ["truncate", "garbage", "wrong-keys", "wrong-shapes", "other-key"]
)
def test_corrupt_cache_is_retrained_with_a_warning(tmp_path, trained, fake_trainer, damage):
    path = _prefill(tmp_path, trained)
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        path.write_bytes(b"not a torch file")
    else:
        obj = torch.load(path, weights_only=True)
        if damage == "wrong-keys":
            del obj["state_dict"]
        elif damage == "wrong-shapes":
            obj["state_dict"]["head.weight"] = torch.zeros(10, 3)
        else:
            obj["key"] = "0" * 64
        torch.save(obj, path)
    with pytest.warns(CacheWarning, match="corrupt"):
        again = mnist_feature_net(cache_dir=tmp_path, train_config=TINY, root=DATA, verbose=False)
    assert len(fake_trainer) == 1 and again.cache_path == path
    res = safe_load(path, ["state_dict"])  # a valid file again, at the same place
    assert res.ok and res.obj["key"] == again.key
    for k, v in _weights(again).items():
        assert torch.equal(v, res.obj["state_dict"][k])
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheWarning)
        mnist_feature_net(cache_dir=tmp_path, train_config=TINY, root=DATA, verbose=False)
    assert len(fake_trainer) == 1


def test_safe_load_never_raises(tmp_path):
    assert safe_load(tmp_path / "absent.pt").status == "missing"
    (tmp_path / "empty.pt").write_bytes(b"")
    assert safe_load(tmp_path / "empty.pt").status == "corrupt"
    torch.save([1, 2], tmp_path / "list.pt")
    assert "dict" in safe_load(tmp_path / "list.pt").reason
    torch.save({"a": 1}, tmp_path / "d.pt")
    assert safe_load(tmp_path / "d.pt", ["a"]).ok
    assert "missing keys" in safe_load(tmp_path / "d.pt", ["a", "b"]).reason
    assert safe_load(tmp_path / "d.pt", validate=lambda o: 1 / 0).status == "corrupt"


# ------------------------------------------------------------------ atomic writes
def test_atomic_save_never_exposes_a_partial_file(tmp_path, monkeypatch):
    """Pause in the middle of writing and look at the target: it must be absent or the old
    complete file (a direct write to the target would expose half a file here)."""
    path = tmp_path / "net.pt"
    atomic_save({"v": torch.zeros(50_000)}, path)
    seen = []
    real_save = torch.save

    def slow_save(obj, f, *args, **kwargs):
        buf = io.BytesIO()
        real_save(obj, buf, *args, **kwargs)
        data = buf.getvalue()
        f.write(data[: len(data) // 2])
        f.flush()
        res = safe_load(path, ["v"])
        seen.append((res.status, res.ok and float(res.obj["v"][0])))
        f.write(data[len(data) // 2 :])

    monkeypatch.setattr(cache_mod.torch, "save", slow_save)
    atomic_save({"v": torch.ones(50_000)}, path)
    monkeypatch.setattr(cache_mod.torch, "save", real_save)
    assert seen == [("ok", 0.0)]
    assert float(safe_load(path, ["v"]).obj["v"][0]) == 1.0
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]  # temp file renamed away

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"v": torch.zeros(3)}, path)
    assert float(safe_load(path, ["v"]).obj["v"][0]) == 1.0  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["net.pt"]  # temp file cleaned up


def test_concurrent_writers_never_leave_a_partial_file(tmp_path):
    """Two writers (like two torchrun ranks) rewrite the same file while a reader reads it:
    every read sees a complete file written by one of them. Threads stand in for processes
    (forking after torch's thread pools ran can deadlock); the file operations are the same
    and run concurrently, since file I/O releases the GIL."""
    path = tmp_path / "race.pt"
    errors: list[BaseException] = []

    def writer(value: float) -> None:
        try:
            for _ in range(15):
                atomic_save({"v": torch.full((500_000,), value)}, path)  # 2 MB
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(float(i + 1),)) for i in range(2)]
    for t in threads:
        t.start()
    reads = []
    while any(t.is_alive() for t in threads):
        res = safe_load(path, ["v"])
        if res.status != "missing":
            assert res.ok, f"reader saw a partial/corrupt file: {res.reason}"
            v = res.obj["v"]
            assert v.shape == (500_000,) and v.min() == v.max() and float(v[0]) in (1.0, 2.0)
            reads.append(float(v[0]))
    for t in threads:
        t.join()
    assert not errors and reads, (errors, reads)
    final = safe_load(path, ["v"])
    assert final.ok and float(final.obj["v"][0]) in (1.0, 2.0)
    assert [p.name for p in tmp_path.iterdir()] == ["race.pt"]


def test_file_lock_excludes_and_times_out(tmp_path):
    lock = tmp_path / "x.lock"
    got = []
    with file_lock(lock) as held:
        assert held

        def other():
            with warnings.catch_warnings(record=True) as w:
                warnings.simplefilter("always")
                with file_lock(lock, timeout=0.3, poll=0.05) as h:
                    got.append((h, [str(x.message) for x in w]))

        t = threading.Thread(target=other)
        t.start()
        t.join()
    assert got[0][0] is False and "continuing unlocked" in got[0][1][0]
    with file_lock(lock, timeout=0.3) as held:
        assert held


# ------------------------------------------------------------------ features
@needs_mnist
def test_features_width_layout_and_determinism(trained):
    net = trained[0]
    x = load_mnist("test", root=DATA).images[:700]
    f = features(net, x, batch_size=256)
    assert f.shape == (700, 16) and f.dtype == torch.float64 and f.device.type == "cpu"
    assert torch.equal(f, features(net, x, batch_size=256))  # deterministic
    assert torch.allclose(f, features(net, x, batch_size=700), atol=1e-5)
    assert torch.allclose(f, features(net, x.reshape(700, 784), batch_size=256), atol=0)
    assert torch.allclose(f, features(net, x.numpy()[:, 0], batch_size=256), atol=0)
    levels = (x * 255).round().to(torch.uint8)
    assert torch.allclose(f, features(net, levels), atol=1e-4)
    assert torch.allclose(f.float(), net.features(x), atol=1e-5)
    p = class_probs(net, x)
    assert p.shape == (700, 10) and torch.allclose(p.sum(1), torch.ones(700, dtype=p.dtype))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        features(net, x * 2 - 1)
    with pytest.raises(ValueError, match="shape"):
        features(net, x[:, :, :20])
    assert features(net, x[:0]).shape == (0, 16)


def test_default_architecture():
    cfg = TrainConfig()
    net = FeatureNet(cfg.width, cfg.channels)
    assert (net.feature_layer, net.width) == ("penultimate", 128)
    assert dict(net.named_modules())[net.feature_layer] is net.penultimate
    x = torch.rand(3, 784)
    assert net.features(x).shape == (3, 128) and net.probs(x).shape == (3, 10)
    assert sum(p.numel() for p in net.parameters()) == PARAMS


# The default configuration on fewer images: 30 steps per epoch, everything else TrainConfig()'s
# (architecture, Adam + one-cycle at 2e-3, 4 epochs, batch 128, seed, preprocessing). About
# 10 s on one thread. n_eval=1000 gives test and val accuracies that differ (0.925 / 0.933),
# so a test accuracy computed on the wrong split cannot match by chance.
REDUCED = dataclasses.replace(TrainConfig(), n_train=3840, n_eval=1000, threads=1)


def _documented_parameter_count() -> int:
    """The architecture of mnist_net's docstring, counted by hand: Conv 5x5 1->16, Conv 5x5
    16->32 (weights + biases), Linear 32*7*7 -> 128, Linear 128 -> 10."""
    conv1 = 1 * 16 * 5 * 5 + 16
    conv2 = 16 * 32 * 5 * 5 + 32
    penultimate = 32 * 7 * 7 * 128 + 128
    head = 128 * 10 + 10
    return conv1 + conv2 + penultimate + head


@needs_mnist
def test_default_configuration_reports_what_it_trained(tmp_path, trained, train_counter):
    """The default training path at reduced size: the net, the accuracies and the cache file
    it reports, each checked against a computation written here."""
    net = mnist_feature_net(cache_dir=tmp_path, train_config=REDUCED, root=DATA, verbose=False)
    assert train_counter == [REDUCED]  # trained (not loaded), with the default settings
    assert REDUCED == TrainConfig(n_train=3840, n_eval=1000, threads=1)

    # the documented architecture, layer by layer
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {
        "body.0.weight": (16, 1, 5, 5), "body.0.bias": (16,),
        "body.3.weight": (32, 16, 5, 5), "body.3.bias": (32,),
        "penultimate.0.weight": (128, 1568), "penultimate.0.bias": (128,),
        "head.weight": (10, 128), "head.bias": (10,),
    }  # fmt: skip
    assert sum(p.numel() for p in net.parameters()) == _documented_parameter_count() == PARAMS
    assert (net.width, net.feature_layer, net.config) == (128, "penultimate", REDUCED)

    # reported accuracies = accuracies of the net's predictions, recomputed here on images read
    # through load_mnist (another reader than the training path's), first 1000 of each split
    def accuracy(split: str) -> float:
        data = load_mnist(split, "grey", root=DATA, download=False)
        x, y = data.images[:1000], data.labels[:1000]
        with torch.no_grad():
            pred = net(x).argmax(1)
        return int((pred == y).sum()) / 1000

    test_acc, val_acc = accuracy("test"), accuracy("val")
    assert test_acc != val_acc  # so that the two checks below tell the splits apart
    assert net.test_accuracy == test_acc and net.val_accuracy == val_acc
    assert test_acc > 0.9  # chance is 0.1; 120 steps of the default recipe reach ~0.92

    # the cache file says the same, and its key is neither TINY's nor the full default's
    saved = torch.load(net.cache_path, weights_only=True)
    assert saved["config"] == REDUCED.to_dict() and saved["n_train"] == 3840
    assert (saved["test_accuracy"], saved["val_accuracy"]) == (test_acc, val_acc)
    assert net.key != trained[0].key and net.cache_path.name != trained[0].cache_path.name
    data_hash = mnist_net._data_hash(mnist_net._load_data("mnist", DATA))
    assert net.key == classifier_key("mnist", data_hash, REDUCED)
    assert net.key != classifier_key("mnist", data_hash, TrainConfig())


@needs_mnist
def test_training_tensors_default_sizes_are_the_documented_splits():
    """n_train = n_eval = None: 50,000 training images, the last 10,000 of the training file as
    val and the 10,000 test images, equal to load_mnist's train/val/test splits."""
    d = mnist_net._load_data("mnist", DATA)
    cfg = dataclasses.replace(TINY, n_train=None, n_eval=None)
    xtr, ytr, xva, yva, xte, yte = mnist_net._training_tensors(d, cfg)
    assert [t.shape[0] for t in (xtr, ytr, xva, yva, xte, yte)] == [50_000] * 2 + [10_000] * 4
    for split, x, y in (("val", xva, yva), ("test", xte, yte)):
        data = load_mnist(split, "grey", root=DATA, download=False)
        assert torch.equal(x, data.images) and torch.equal(y, data.labels.long()), split
    assert torch.equal(xtr[-1, 0], torch.from_numpy(d.train_images[49_999] / np.float32(255)))
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64


@needs_mnist
def test_training_is_deterministic_and_leaves_global_rng_alone():
    d = mnist_net._load_data("mnist", DATA)
    xtr, ytr, *_ = mnist_net._training_tensors(d, TINY)
    state = torch.get_rng_state()
    a = mnist_net.train_classifier(xtr[:320], ytr[:320], TINY)
    assert torch.equal(state, torch.get_rng_state())
    b = mnist_net.train_classifier(xtr[:320], ytr[:320], TINY)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k])
    np.testing.assert_array_equal(d.train_images[:2], mnist_net._load_data("mnist", DATA)[0][:2])


@needs_mnist
def test_cache_unwritable_warns_and_still_returns(tmp_path, monkeypatch, fake_trainer):
    """Writing can fail (read-only cache): the net is still returned, with a warning."""

    def fail(obj, path):
        raise PermissionError("read-only")

    monkeypatch.setattr(mnist_net, "atomic_save", fail)
    with pytest.warns(CacheWarning, match="could not write"):
        net = mnist_feature_net(cache_dir=tmp_path, train_config=TINY, root=DATA, verbose=False)
    assert len(fake_trainer) == 1 and not Path(net.cache_path).exists()
