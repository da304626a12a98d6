"""Tests of dgm_ext.data on small generated IDX / CIFAR files, plus the real MNIST and
Fashion-MNIST files under the data root (``$DGM_EXT_DATA``, see ``_data.py``). Nothing is
downloaded."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import shutil
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from _data import DATA, needs_fashion, needs_mnist
from torch.utils.data import DataLoader, Subset, TensorDataset

import dgm_ext.data.files as files_mod
import dgm_ext.data.mnist as mnist_mod
from dgm_ext.data import (
    BatchLoader,
    ChecksumError,
    DatasetNotFoundError,
    IDXFormatError,
    ImageDataset,
    ShardedBatchSampler,
    epoch_permutation,
    fetch_batch,
    find_mnist_files,
    load_cifar10,
    load_mnist,
    read_idx,
    write_idx,
)

MNIST_NAMES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Keep md5 stamps / decoded arrays out of the home folder; forbid downloads."""
    monkeypatch.setenv("DGM_EXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("DGM_EXT_DATA", raising=False)
    monkeypatch.delenv("DGM_EXT_NO_DOWNLOAD", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("tests must not access the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    files_mod._VERIFIED.clear()
    mnist_mod._DECODED.clear()
    mnist_mod._STATIC.clear()


def make_fake_mnist(folder: Path, n_train=120, n_test=30, gz=True, seed=0) -> dict:
    """Write the four IDX files with random images/labels; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, arr in arrays.items():
        write_idx(folder / (name + (".gz" if gz else "")), arr)
    return arrays


def fake(tmp_path, **kw):
    root = tmp_path / "data"
    return root, make_fake_mnist(root / "mnist", **kw)


def load(root, split="train", variant="grey", **kw):
    kw.setdefault("verify", False)
    kw.setdefault("val_size", 20)
    return load_mnist(split, variant, root=root, download=False, **kw)


# ------------------------------------------------------------------------------ IDX
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    arr = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    write_idx(tmp_path / f"a{suffix}", arr)
    back = read_idx(tmp_path / f"a{suffix}")
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, arr)


def test_idx_magic_numbers_of_mnist(tmp_path):
    write_idx(tmp_path / "i", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "l", np.zeros(2, np.uint8))
    assert int.from_bytes((tmp_path / "i").read_bytes()[:4], "big") == 2051
    assert int.from_bytes((tmp_path / "l").read_bytes()[:4], "big") == 2049


def test_idx_corrupt_files(tmp_path):
    good = tmp_path / "x"
    write_idx(good, np.ones((3, 28, 28), np.uint8))
    data = good.read_bytes()
    (tmp_path / "magic").write_bytes(b"\x12\x34" + data[2:])
    with pytest.raises(IDXFormatError, match="magic"):
        read_idx(tmp_path / "magic")
    (tmp_path / "short").write_bytes(data[:-5])
    with pytest.raises(IDXFormatError, match="truncated or corrupt"):
        read_idx(tmp_path / "short")
    (tmp_path / "long").write_bytes(data + b"\0")
    with pytest.raises(IDXFormatError, match="truncated or corrupt"):
        read_idx(tmp_path / "long")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(IDXFormatError, match="cannot read"):
        read_idx(tmp_path / "bad.gz")


def test_corrupt_magic_in_mnist_folder(tmp_path):
    root, _ = fake(tmp_path)
    path = root / "mnist" / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    with gzip.open(path, "wb") as f:
        f.write(b"\0\0\x08\x07" + payload[4:])  # 7 dimensions: header no longer matches
    with pytest.raises(IDXFormatError, match="train-images"):
        load(root)
    write_idx(path, np.zeros((120, 28, 28), np.float32))  # wrong dtype (magic 0x0D03)
    with pytest.raises(IDXFormatError, match="expected uint8"):
        load(root)
    write_idx(path, np.zeros((119, 28, 28), np.uint8))  # count differs from the labels
    with pytest.raises(IDXFormatError, match="119 images"):
        load(root)


# ------------------------------------------------------------------------- splits
def test_splits_and_sizes(tmp_path):
    root, arrays = fake(tmp_path)
    train_images = arrays["train-images-idx3-ubyte"]
    sizes = {s: len(load(root, s)) for s in ("train", "val", "train+val", "test")}
    assert sizes == {"train": 100, "val": 20, "train+val": 120, "test": 30}
    val = load(root, "val", "levels")
    assert torch.equal(val.images[:, 0], torch.from_numpy(train_images[100:]).long())
    assert torch.equal(val.labels, torch.from_numpy(arrays["train-labels-idx1-ubyte"][100:]).long())
    assert len(load(root, "train", train_size=50)) == 50
    assert len(load(root, "validation")) == 20  # alias
    with pytest.raises(ValueError, match="split"):
        load(root, "dev")
    with pytest.raises(ValueError, match="variant"):
        load(root, variant="binary")
    with pytest.raises(ValueError, match="val_size"):
        load(root, val_size=120)
    with pytest.raises(ValueError, match="train_size"):
        load(root, train_size=101)


def test_variants_dtypes_and_ranges(tmp_path):
    root, _ = fake(tmp_path)
    grey, levels = load(root, "test", "grey"), load(root, "test", "levels")
    assert grey.images.shape == (30, 1, 28, 28) and grey.images.dtype == torch.float32
    assert levels.images.dtype == torch.int64 and grey.labels.dtype == torch.int64
    assert 0 <= int(levels.images.min()) and int(levels.images.max()) <= 255
    assert 0.0 <= float(grey.images.min()) and float(grey.images.max()) <= 1.0
    torch.testing.assert_close(grey.images, levels.images.float() / 255)
    static = load(root, "test", "static")
    assert static.images.dtype == torch.float32
    assert set(static.images.unique().tolist()) == {0.0, 1.0}
    dyn = load(root, "test", "dynamic")
    torch.testing.assert_close(dyn.images, grey.images)  # grey levels are stored
    x, y = dyn[3]
    assert (
        x.shape == (1, 28, 28) and set(x.unique().tolist()) <= {0.0, 1.0} and y.dtype == torch.int64
    )


def test_static_binarisation_cache_is_bit_equal_keyed_and_survives_corruption(tmp_path):
    root, arrays = fake(tmp_path)
    fresh = load(root, "train", "static", seed=3).images
    folder = files_mod.cache_dir() / "binarised"
    (cached_file,) = folder.glob("*-train-seed3-v1.npy")
    assert not list(folder.glob("*.tmp"))  # written atomically
    # the key is the images' content: another seed or the test file get their own files
    load(root, "test", "static", seed=3)
    load(root, "train", "static", seed=4)
    assert len(list(folder.glob("*.npy"))) == 3
    # a new process (empty memory cache) reads the disk cache, bit for bit
    mnist_mod._STATIC.clear()
    calls = []
    real = mnist_mod._binarise
    mnist_mod._binarise = lambda *a: calls.append(a) or real(*a)
    try:
        assert torch.equal(load(root, "train", "static", seed=3).images, fresh)
        assert calls == []  # not recomputed
        # a truncated cache file is recomputed and replaced
        data = cached_file.read_bytes()
        cached_file.write_bytes(data[: len(data) // 2])
        mnist_mod._STATIC.clear()
        assert torch.equal(load(root, "train", "static", seed=3).images, fresh)
        assert len(calls) == 1 and cached_file.read_bytes() == data
        # garbage of the right length is not trusted either (wrong size after unpacking)
        cached_file.write_bytes(b"garbage")
        mnist_mod._STATIC.clear()
        assert torch.equal(load(root, "train", "static", seed=3).images, fresh)
        assert len(calls) == 2
    finally:
        mnist_mod._binarise = real
    # the cached draw is the documented one: numpy PCG64 over the official file
    rng = np.random.default_rng(np.random.SeedSequence([3, 0xB1, 0]))
    images = arrays["train-images-idx3-ubyte"]
    want = rng.random(images.shape, dtype=np.float32) < images.astype(np.float32) / 255
    n_train = fresh.shape[0]
    assert np.array_equal(fresh.numpy().reshape(n_train, 28, 28), want[:n_train])


def test_static_binarisation_is_seeded(tmp_path):
    root, _ = fake(tmp_path)
    a = load(root, "train", "static", seed=0).images
    mnist_mod._STATIC.clear()
    shutil.rmtree(files_mod.cache_dir() / "binarised")  # recomputed, not a cached copy
    assert torch.equal(a, load(root, "train", "static", seed=0).images)
    b = load(root, "train", "static", seed=1).images
    assert not torch.equal(a, b)
    grey = load(root, "train", "grey").images
    assert abs(a.mean().item() - grey.mean().item()) < 0.01  # unbiased draw from grey levels
    # pixels equal to 0 or 1 stay fixed
    assert torch.all(a[grey == 0] == 0) and torch.all(a[grey == 1] == 1)
    # an image's binarisation does not depend on the split it is loaded in
    full = load(root, "train+val", "static").images
    assert torch.equal(full[100:], load(root, "val", "static").images)
    assert torch.equal(load(root, "test", "static").images, load(root, "test", "static").images)


def test_dynamic_binarisation_fresh_but_reproducible(tmp_path):
    root, _ = fake(tmp_path)
    ds = load(root, "train", "dynamic")
    idx = torch.arange(50)
    torch.manual_seed(3)
    first, _ = ds.get_batch(idx)
    second, _ = ds.get_batch(idx)
    assert not torch.equal(first, second)  # a fresh draw per batch / epoch
    torch.manual_seed(3)
    assert torch.equal(ds.get_batch(idx)[0], first)  # torch's RNG state decides
    assert abs(first.mean().item() - ds.images[:50].mean().item()) < 0.02
    # also through the batch iterator across epochs
    loader = BatchLoader(ds, 100, shuffle=False)
    loader.set_epoch(0)
    e0 = next(iter(loader))[0]
    loader.set_epoch(1)
    assert not torch.equal(e0, next(iter(loader))[0])


# --------------------------------------------------------------- files and roots
def test_missing_files_error_names_files_and_folders(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    with pytest.raises(DatasetNotFoundError) as e:
        load_mnist(root=empty, download=False)
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    for name in MNIST_NAMES:
        assert name in msg
    assert str(empty / "mnist") in msg and str(empty / "MNIST" / "raw") in msg
    assert "download=False" in msg
    with pytest.raises(DatasetNotFoundError, match="fashion-mnist") as e:
        load_mnist(root=empty, fashion=True, download=False)
    assert str(empty / "FashionMNIST" / "raw") in str(e.value)
    # the environment switch disables downloads even with download=True
    monkeypatch.setenv("DGM_EXT_NO_DOWNLOAD", "1")
    with pytest.raises(DatasetNotFoundError, match="DGM_EXT_NO_DOWNLOAD"):
        load_mnist(root=empty, download=True)


def test_failed_download_is_reported(tmp_path, monkeypatch):
    def offline(url, timeout):
        assert timeout <= 60
        raise OSError(f"offline: {url}")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DatasetNotFoundError, match=r"downloading into .* failed") as e:
        load_mnist(root=tmp_path / "r", download=True)
    assert "train-images-idx3-ubyte.gz" in str(e.value) and "offline" in str(e.value)
    assert not list((tmp_path / "r" / "mnist").glob("*"))  # no partial downloads left


def test_root_resolution_and_layouts(tmp_path, monkeypatch):
    # $DGM_EXT_DATA when root is None, with the <root>/mnist layout
    root, _ = fake(tmp_path)
    monkeypatch.setenv("DGM_EXT_DATA", str(root))
    assert len(load_mnist("test", root=None, download=False, verify=False)) == 30
    # torchvision layout with uncompressed files
    tv = tmp_path / "tv"
    make_fake_mnist(tv / "FashionMNIST" / "raw", n_test=7, gz=False)
    ds = load_mnist("test", root=tv, fashion=True, download=False, verify=False)
    assert len(ds) == 7 and ds.name == "fashion-mnist/test"
    # with nothing given: the cache folder
    monkeypatch.delenv("DGM_EXT_DATA")
    make_fake_mnist(tmp_path / "cache" / "mnist", n_test=5)
    assert len(load_mnist("test", download=False, verify=False)) == 5


def test_wrong_md5_is_rejected(tmp_path):
    root, _ = fake(tmp_path)
    with pytest.raises(ChecksumError, match=r"t10k-images-idx3-ubyte\.gz: md5 .* does not match"):
        load_mnist("test", root=root, download=False)  # verify=True by default


def test_md5_verification_is_cached(tmp_path, monkeypatch):
    f = tmp_path / "blob"
    f.write_bytes(b"some bytes" * 1000)
    md5 = hashlib.md5(f.read_bytes()).hexdigest()
    calls = []
    real = files_mod.md5_file
    monkeypatch.setattr(files_mod, "md5_file", lambda p: calls.append(p) or real(p))
    files_mod.verify_md5(f, md5)
    files_mod.verify_md5(f, md5)
    assert len(calls) == 1  # in-process cache
    files_mod._VERIFIED.clear()
    files_mod.verify_md5(f, md5)
    assert len(calls) == 1  # stamp file in the cache folder
    assert (tmp_path / "cache" / "md5-stamps.json").is_file()
    f.write_bytes(b"other bytes" * 1000)  # size (and mtime) change -> hashed again
    with pytest.raises(ChecksumError):
        files_mod.verify_md5(f, md5)
    assert len(calls) == 2


# ----------------------------------------------------------------- batch iteration
def test_epoch_order_is_a_function_of_seed_and_epoch():
    a, b = epoch_permutation(100, 0, 1), epoch_permutation(100, 0, 1)
    assert torch.equal(a, b) and sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_permutation(100, 0, 2))
    assert not torch.equal(epoch_permutation(100, 1, 0), epoch_permutation(100, 0, 1))


def test_sharded_batches_reassemble_the_global_batch():
    single = ShardedBatchSampler(96, 16, seed=5)
    single.set_epoch(3)
    shards = []
    for r in range(2):
        s = ShardedBatchSampler(96, 8, seed=5, rank=r, world_size=2)
        s.set_epoch(3)
        shards.append(s.batches())
    assert len(shards[0]) == len(shards[1]) == len(single.batches()) == 6
    for k, glob in enumerate(single.batches()):
        assert sorted(torch.cat([shards[0][k], shards[1][k]]).tolist()) == sorted(glob.tolist())
    # padding: 10 examples on 3 ranks -> 4 each, every example at least once
    parts = [ShardedBatchSampler(10, 4, seed=0, rank=r, world_size=3).shard_indices()
             for r in range(3)]  # fmt: skip
    assert [len(p) for p in parts] == [4, 4, 4]
    assert set(torch.cat(parts).tolist()) == set(range(10))
    # evaluation shards (pad=False) cover every example exactly once
    ev = [ShardedBatchSampler(10, 4, shuffle=False, rank=r, world_size=3, pad=False)
          .shard_indices() for r in range(3)]  # fmt: skip
    assert sorted(torch.cat(ev).tolist()) == list(range(10))
    with pytest.raises(ValueError, match="rank"):
        ShardedBatchSampler(10, 4, rank=3, world_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        ShardedBatchSampler(10, 0)


def test_batch_loader_covers_the_dataset_and_resumes():
    ds = ImageDataset(torch.rand(50, 1, 2, 2), torch.arange(50) % 10)
    loader = BatchLoader(ds, 16, seed=1, drop_last=False)
    loader.set_epoch(0)
    batches = list(loader)
    assert [len(b[1]) for b in batches] == [16, 16, 16, 2] and len(loader) == 4
    seen = torch.cat([b[1] for b in batches])
    assert sorted(torch.cat([loader.sampler.shard_indices()]).tolist()) == list(range(50))
    assert torch.equal(seen, ds.labels[loader.sampler.shard_indices()])
    loader.set_epoch(0, start_batch=2)  # resume mid-epoch
    rest = list(loader)
    assert len(rest) == 2 and torch.equal(rest[0][0], batches[2][0])
    dl = BatchLoader(ds, 16, seed=1, drop_last=True)
    dl.set_epoch(0)
    assert len(list(dl)) == 3


def test_fetch_batch_paths_agree():
    x, y = torch.randn(20, 3), torch.arange(20)
    idx = torch.tensor([4, 0, 7])
    tds = TensorDataset(x, y)
    fast = fetch_batch(tds, idx)
    assert torch.equal(fast[0], x[idx]) and torch.equal(fast[1], y[idx])
    sub = Subset(tds, [10, 11, 12, 13, 14, 15, 16, 17])
    assert torch.equal(fetch_batch(sub, idx)[1], torch.tensor([14, 10, 17]))

    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return x[i], y[i]

    slow = fetch_batch(Plain(), idx)
    assert isinstance(slow, tuple) and torch.equal(slow[0], fast[0])
    loader = BatchLoader(Plain(), 8, num_workers=1, seed=2)  # DataLoader with workers
    loader.set_epoch(0)
    ref = BatchLoader(tds, 8, seed=2)
    ref.set_epoch(0)
    for a, b in zip(loader, ref, strict=True):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_image_dataset_works_with_dataloader_and_is_faster_in_memory():
    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(torch.rand(10_000, 1, 28, 28, generator=g), torch.arange(10_000) % 10)

    def best_time(make_iter):
        times, counts = [], set()
        for _ in range(3):
            t0 = time.perf_counter()
            counts.add(sum(len(b[0]) for b in make_iter()))
            times.append(time.perf_counter() - t0)
        return min(times), counts

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # an oversubscribed CI machine makes OpenMP timings erratic
    try:
        t_dataloader, n = best_time(lambda: DataLoader(ds, batch_size=128, shuffle=True))
        t_memory, m = best_time(lambda: BatchLoader(ds, 128))
    finally:
        torch.set_num_threads(threads)
    assert n == m == {10_000}
    assert t_memory * 5 < t_dataloader, (t_memory, t_dataloader)


def test_image_dataset_validation():
    with pytest.raises(ValueError, match="labels"):
        ImageDataset(torch.rand(4, 1, 2, 2), torch.arange(3))
    with pytest.raises(ValueError, match="variant"):
        ImageDataset(torch.rand(4, 1, 2, 2), torch.arange(4), variant="colour")
    ds = ImageDataset(torch.rand(4, 1, 2, 2), torch.arange(4), transform=lambda x: 2 * x - 1)
    assert ds.get_batch([0, 1])[0].min() >= -1 and ds[0][0].max() <= 1


# ------------------------------------------------------------------------ CIFAR-10
def write_fake_cifar(folder: Path, per_batch=4, n_test=3) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else per_batch
        d = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
             b"labels": rng.integers(0, 10, n).tolist(), b"batch_label": name.encode()}  # fmt: skip
        with open(folder / name, "wb") as f:
            pickle.dump(d, f, protocol=2)


def test_cifar10_from_fake_batches(tmp_path):
    write_fake_cifar(tmp_path / "cifar-10-batches-py")
    train = load_cifar10("train", root=tmp_path, download=False, verify=False)
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.float32
    assert 0 <= train.images.min() and train.images.max() <= 1 and train.labels.dtype == torch.int64
    test = load_cifar10("test", root=tmp_path, download=False, verify=False, variant="levels")
    assert test.images.shape == (3, 3, 32, 32) and test.images.dtype == torch.int64
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert torch.equal(test.images[1, 2].flatten(), torch.from_numpy(raw[b"data"][1, 2048:]).long())
    with pytest.raises(ChecksumError, match="data_batch_1"):
        load_cifar10("train", root=tmp_path, download=False)
    with pytest.raises(DatasetNotFoundError, match="data_batch_1") as e:
        load_cifar10("train", root=tmp_path / "nothing", download=False)
    assert isinstance(e.value, FileNotFoundError)


def test_cifar10_refuses_code_in_pickles(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(folder / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="not allowed"):
        load_cifar10("test", root=tmp_path, download=False, verify=False)


# ------------------------------------------------------------- the real data sets
@needs_mnist
def test_real_mnist_counts_and_checksums():
    tr = load_mnist("train", root=DATA, download=False)  # verify=True: md5 checked
    va = load_mnist("val", root=DATA, download=False)
    te = load_mnist("test", "static", root=DATA, download=False)
    assert (len(tr), len(va), len(te)) == (50_000, 10_000, 10_000)
    assert te.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    all_train = torch.cat([tr.labels, va.labels]).bincount().tolist()
    assert all_train == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    mean = torch.cat([tr.images, va.images]).mean().item()
    assert mean == pytest.approx(33.32 / 255, abs=2e-4)
    grey = load_mnist("test", root=DATA, download=False)
    assert te.images.mean().item() == pytest.approx(grey.images.mean().item(), abs=3e-3)


@needs_fashion
def test_real_fashion_mnist_counts():
    te = load_mnist("test", "levels", root=DATA, fashion=True, download=False)
    assert te.labels.bincount().tolist() == [1000] * 10
    assert te.images.shape == (10_000, 1, 28, 28) and te.images.dtype == torch.int64


@needs_mnist
def test_download_path_with_a_local_server(tmp_path, monkeypatch):
    """The download code (urllib, md5 check, atomic move) against a fake urlopen that serves
    the real files from disk: no network involved."""
    served = []
    # the files as found under the data root, in whichever layout (the served bytes are the
    # .gz files the md5 sums name)
    local = {path.name: path for path, _ in find_mnist_files(DATA, download=False).values()}

    def local_urlopen(url, timeout):
        name = url.rsplit("/", 1)[1]
        served.append(name)
        return io.BytesIO(local[name].read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", local_urlopen)
    ds = load_mnist("test", root=tmp_path / "dl", download=True)
    assert len(ds) == 10_000 and sorted(served) == sorted(MNIST_NAMES)
    assert sorted(p.name for p in (tmp_path / "dl" / "mnist").iterdir()) == sorted(MNIST_NAMES)
    # a corrupted download is rejected and not kept
    shutil.rmtree(tmp_path / "dl")
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: io.BytesIO(b"junk"))
    with pytest.raises(DatasetNotFoundError, match="md5"):
        load_mnist("test", root=tmp_path / "dl", download=True)
    assert not list((tmp_path / "dl" / "mnist").glob("*"))  # (the new folder may go too)
