"""MNIST and Fashion-MNIST from the four standard gzip IDX files.

Splits (fixed, documented): ``train`` is the first 50,000 images of the official training
file, ``val`` the last 10,000 of it (the split of the classic "binarised MNIST" of
Larochelle & Murray), ``train+val`` all 60,000, ``test`` the official 10,000 test images.
``val_size`` / ``train_size`` change the split (e.g. ``train_size=40_000`` gives the
40k/10k split of the reference RealNVP run).

Variants: ``grey`` float32 in [0, 1]; ``static`` a fixed binarisation, one Bernoulli draw
per pixel from the grey level made with numpy's PCG64 seeded by ``seed`` over the whole
official file (so an image has the same binarisation whatever the split, and the result
does not depend on the torch version; computed once and cached bit-packed in
``<cache>/binarised/``, keyed by the images' content hash, seed, file and the draw's version,
written atomically, recomputed when unreadable); ``dynamic`` a fresh Bernoulli draw on every access
(torch's global RNG); ``levels`` int64 grey levels 0..255.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset import VARIANTS, ImageDataset, binarise_pixels
from .files import (
    ChecksumError,
    DatasetNotFoundError,
    cache_dir,
    check_md5,
    data_root,
    download_allowed,
    download_file,
    removing_new_folders,
)
from .idx import IDXFormatError, read_idx

__all__ = ["SPLITS", "find_mnist_files", "load_mnist", "load_mnist_arrays"]

SPLITS = ("train", "val", "train+val", "test")
_SPLIT_ALIASES = {"valid": "val", "validation": "val", "trainval": "train+val", "full": "train+val"}


@dataclass(frozen=True)
class _FileSpec:
    name: str  # the .gz name
    md5_gz: str
    md5_raw: str
    magic: int
    count: int


def _specs(md5s: list[tuple[str, str]]) -> dict[str, _FileSpec]:
    names = [
        ("train_images", "train-images-idx3-ubyte.gz", 2051, 60000),
        ("train_labels", "train-labels-idx1-ubyte.gz", 2049, 60000),
        ("test_images", "t10k-images-idx3-ubyte.gz", 2051, 10000),
        ("test_labels", "t10k-labels-idx1-ubyte.gz", 2049, 10000),
    ]
    return {
        key: _FileSpec(name, gz, raw, magic, count)
        for (key, name, magic, count), (gz, raw) in zip(names, md5s, strict=True)
    }


_MNIST = _specs(
    [
        ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
        ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
        ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
        ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
    ]
)
_FASHION = _specs(
    [
        ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
        ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
        ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
        ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
    ]
)
_MIRRORS = {
    False: ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"],
    True: ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}


def _candidates(root: Path, fashion: bool) -> list[Path]:
    if fashion:
        return [root / "fashion-mnist", root / "FashionMNIST" / "raw", root]
    return [root / "mnist", root / "MNIST" / "raw", root]


def _present(folder: Path, spec: _FileSpec) -> tuple[Path, str] | None:
    """The file for ``spec`` in ``folder`` (gzip preferred) with its expected md5."""
    gz = folder / spec.name
    if gz.is_file():
        return gz, spec.md5_gz
    raw = folder / spec.name[: -len(".gz")]
    if raw.is_file():
        return raw, spec.md5_raw
    return None


def find_mnist_files(
    root: str | os.PathLike | None = None, fashion: bool = False, download: bool = True
) -> dict[str, tuple[Path, str]]:
    """Locate (or download) the four IDX files; returns ``{key: (path, expected_md5)}``.

    Folders searched under the data root (see :func:`dgm_ext.data.files.data_root`):
    ``mnist/`` (or ``fashion-mnist/``), torchvision's ``MNIST/raw/`` (or
    ``FashionMNIST/raw/``), and the root itself. Each file may be gzip-compressed or not.
    Raises :class:`DatasetNotFoundError` naming the files and folders when they are missing
    and cannot be downloaded.
    """
    base = data_root(root)
    specs = _FASHION if fashion else _MNIST
    folders = _candidates(base, fashion)
    for folder in folders:
        found = {k: _present(folder, s) for k, s in specs.items()}
        if all(v is not None for v in found.values()):
            return found  # type: ignore[return-value]
    title = "Fashion-MNIST" if fashion else "MNIST"
    expected = ", ".join(s.name for s in specs.values())
    where = ", ".join(str(f) for f in folders)
    hint = (
        " Pass root=..., or set DGM_EXT_DATA to a folder holding mnist/ and fashion-mnist/ "
        "(on the project machines: ../shared/data relative to the repository)."
    )
    if not download_allowed(download):
        raise DatasetNotFoundError(
            f"{title} files not found: expected {expected} (or the same names without .gz) "
            f"in one of: {where}. Downloading is disabled (download=False or "
            f"DGM_EXT_NO_DOWNLOAD=1).{hint}"
        )
    target = folders[0]
    try:
        with removing_new_folders(target):  # a failed download leaves no empty mnist/ behind
            for spec in specs.values():
                if _present(target, spec) is None:
                    urls = [m + spec.name for m in _MIRRORS[fashion]]
                    download_file(urls, target / spec.name, spec.md5_gz)
    except OSError as exc:
        raise DatasetNotFoundError(
            f"{title} files not found: expected {expected} (or the same names without .gz) "
            f"in one of: {where}, and downloading into {target} failed ({exc}).{hint}"
        ) from exc
    return {k: _present(target, s) for k, s in specs.items()}  # type: ignore[misc]


# In-process caches: decoded uint8 arrays and static binarisations.
_DECODED: dict[tuple[str, int, int], np.ndarray] = {}
_STATIC: dict[tuple[str, int, int, int], np.ndarray] = {}


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def _decode_cached(path: Path, md5: str | None) -> np.ndarray:
    """Decode an IDX file once per process; verified files are also cached on disk as .npy
    under ``<cache>/decoded/`` (keyed by their md5, so stale entries are impossible)."""
    key = _file_key(path)
    if key in _DECODED:
        return _DECODED[key]
    npy = cache_dir() / "decoded" / f"{md5}.npy" if md5 else None
    arr = None
    if npy is not None and npy.is_file():
        with contextlib.suppress(OSError, ValueError):
            arr = np.load(npy, allow_pickle=False)
    if arr is None:
        arr = read_idx(path)
        if npy is not None:
            tmp = None
            try:
                npy.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(dir=npy.parent, suffix=".npy.tmp")
                with os.fdopen(fd, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
                os.replace(tmp, npy)
            except OSError:
                if tmp is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
    arr.setflags(write=False)
    _DECODED[key] = arr
    return arr


def load_mnist_arrays(
    part: str,
    root: str | os.PathLike | None = None,
    fashion: bool = False,
    download: bool = True,
    verify: bool = True,
) -> tuple[np.ndarray, np.ndarray, Path]:
    """Images ``(N, 28, 28)`` uint8 and labels ``(N,)`` uint8 of the official ``part``
    (``"train"`` or ``"test"`` file), validated; also returns the images file path."""
    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    files = find_mnist_files(root, fashion, download)
    specs = _FASHION if fashion else _MNIST
    out = []
    for kind in ("images", "labels"):
        key = f"{part}_{kind}"
        path, md5 = files[key]
        check_md5(path, md5, verify)  # verify=False: used anyway, with a ChecksumWarning
        arr = _decode_cached(path, md5 if verify else None)
        spec = specs[key]
        want_ndim = 3 if kind == "images" else 1
        if arr.dtype != np.uint8 or arr.ndim != want_ndim:
            raise IDXFormatError(
                f"{path}: expected uint8 with {want_ndim} dims (magic {spec.magic}), "
                f"got {arr.dtype} with shape {arr.shape}"
            )
        if kind == "images" and arr.shape[1:] != (28, 28):
            raise IDXFormatError(f"{path}: expected 28x28 images, got {arr.shape[1:]}")
        if verify and arr.shape[0] != spec.count:
            raise IDXFormatError(f"{path}: expected {spec.count} items, got {arr.shape[0]}")
        out.append(arr)
    images, labels = out
    if images.shape[0] != labels.shape[0]:
        raise IDXFormatError(
            f"{files[f'{part}_images'][0]} has {images.shape[0]} images but "
            f"{files[f'{part}_labels'][0]} has {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise IDXFormatError(f"{files[f'{part}_labels'][0]}: label {labels.max()} outside 0..9")
    return images, labels, files[f"{part}_images"][0]


_BINARISATION_VERSION = 1  # bump when the draw below changes: old cache files are ignored


_binarise = binarise_pixels  # MNIST's static binarisation (tests wrap it here)


def _binarised_cache_file(images: np.ndarray, seed: int, part: str) -> Path:
    """``<cache>/binarised/<data hash>-<part>-seed<seed>-v<version>.npy``: the key is the
    images' content (BLAKE2b of the bytes), the seed, the variant and the draw's version."""
    digest = hashlib.blake2b(np.ascontiguousarray(images).data, digest_size=16).hexdigest()
    name = f"{digest}-{part}-seed{int(seed)}-v{_BINARISATION_VERSION}.npy"
    return cache_dir() / "binarised" / name


def _read_binarised(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """The cached draw (bit-packed on disk), or ``None`` when missing, unreadable or of the
    wrong size (a corrupt file is then recomputed and replaced)."""
    if not path.is_file():
        return None
    try:
        packed = np.load(path, allow_pickle=False)
        n = int(np.prod(shape))
        if packed.dtype != np.uint8 or packed.ndim != 1 or packed.size != (n + 7) // 8:
            return None
        return np.unpackbits(packed, count=n).reshape(shape)
    except (OSError, ValueError, EOFError):
        return None


def _write_binarised(path: Path, arr: np.ndarray) -> None:
    """Write atomically (temp file + rename), so concurrent processes (torchrun ranks) never
    see a partial file; failures to write only cost the next start the recomputation."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.packbits(arr.reshape(-1)), allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _static_binarised(images: np.ndarray, path: Path, seed: int, part: str) -> np.ndarray:
    """The static binarisation of ``images``: per process in memory, across processes in the
    cache folder (computing it takes ~1.3 s for the 60k training images)."""
    key = (*_file_key(path), int(seed))
    if key not in _STATIC:
        cache = _binarised_cache_file(images, seed, part)
        arr = _read_binarised(cache, images.shape)
        if arr is None:
            arr = _binarise(images, seed, part)
            _write_binarised(cache, arr)
        arr.setflags(write=False)
        _STATIC[key] = arr
    return _STATIC[key]


def load_mnist(
    split: str = "train",
    variant: str = "grey",
    root: str | os.PathLike | None = None,
    fashion: bool = False,
    seed: int = 0,
    download: bool = True,
    *,
    verify: bool = True,
    val_size: int = 10_000,
    train_size: int | None = None,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ImageDataset:
    """Load a split of MNIST (or Fashion-MNIST with ``fashion=True``) as an :class:`ImageDataset`.

    Args:
        split: ``train`` (first ``train_size`` = 50,000 training images), ``val`` (last
            ``val_size`` = 10,000 training images), ``train+val`` or ``test``.
        variant: ``grey`` | ``static`` | ``dynamic`` | ``levels`` (see the module docstring).
        root: data root; default ``$DGM_EXT_DATA``, else the cache folder ``~/.cache/dgm_ext``.
        fashion: load Fashion-MNIST instead of MNIST.
        seed: seed of the ``static`` binarisation.
        download: try to download missing files (never needed when the files are present).
        verify: check the published md5 sums and item counts (cached after the first check);
            ``False`` uses files that are not the published ones, with a
            :class:`~dgm_ext.data.files.ChecksumWarning` (``--no-verify`` on the command line).
        val_size: number of validation images taken from the end of the training file.
        train_size: number of training images from the start of the file
            (default ``60000 - val_size``).
        transform: optional function applied to every image batch (see :class:`ImageDataset`).

    Returns:
        ``ImageDataset`` with ``images`` ``(N, 1, 28, 28)`` (float32, or int64 for
        ``levels``) and int64 ``labels``.
    """
    split = _SPLIT_ALIASES.get(split, split)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    part = "test" if split == "test" else "train"
    images, labels, path = load_mnist_arrays(part, root, fashion, download, verify)
    n = images.shape[0]
    if part == "train":
        if not 0 <= val_size < n:
            raise ValueError(f"val_size must be in [0, {n}), got {val_size}")
        n_train = n - val_size if train_size is None else train_size
        if not 0 < n_train <= n - val_size:
            raise ValueError(f"train_size must be in [1, {n - val_size}], got {train_size}")
        sl = {"train": slice(0, n_train), "val": slice(n - val_size, n), "train+val": slice(0, n)}
        sel = sl[split]
    else:
        sel = slice(0, n)
    if variant == "static":
        pixels = _static_binarised(images, path, seed, part)[sel]
    else:
        pixels = images[sel]
    x = torch.from_numpy(np.array(pixels, copy=True)).unsqueeze(1)
    x = x.to(torch.int64) if variant == "levels" else x.to(torch.float32)
    if variant in ("grey", "dynamic"):
        x.div_(255.0)
    y = torch.from_numpy(labels[sel].astype(np.int64))
    name = f"{'fashion-mnist' if fashion else 'mnist'}/{split}"
    return ImageDataset(x, y, variant=variant, transform=transform, name=name)


__all__ += ["ChecksumError", "DatasetNotFoundError"]
