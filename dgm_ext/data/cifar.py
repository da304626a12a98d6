"""CIFAR-10 from the python batches (``cifar-10-batches-py``: data_batch_1..5, test_batch)."""

from __future__ import annotations

import os
import pickle
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from .dataset import ImageDataset
from .files import (
    ChecksumError,
    DatasetNotFoundError,
    check_md5,
    data_root,
    download_allowed,
    download_file,
    removing_new_folders,
    verify_md5,
)

__all__ = ["CIFAR10_CLASSES", "find_cifar10", "load_cifar10", "read_cifar_batch"]

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"
)  # fmt: skip
_FOLDER = "cifar-10-batches-py"
_TRAIN = [
    ("data_batch_1", "c99cafc152244af753f735de768cd75f"),
    ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
    ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
    ("data_batch_4", "634d18415352ddfa80567beed471001a"),
    ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
]
_TEST = [("test_batch", "40351d587109b95175f43aff81a1287e")]
_ARCHIVE = "cifar-10-python.tar.gz"
_ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

# Only what numpy needs to rebuild arrays (and _codecs.encode, which protocol-2 pickles
# written by Python 3 use for bytes) may be loaded from a batch pickle.
_ALLOWED = {
    (mod, name)
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                "numpy._core.numeric", "numpy")
    for name in ("_reconstruct", "ndarray", "dtype", "scalar", "_frombuffer")
} | {("_codecs", "encode")}  # fmt: skip


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR batch")


def read_cifar_batch(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one python batch file; returns images ``(N, 3, 32, 32)`` uint8 and labels int64.

    Only numpy arrays, lists and primitives are unpickled (other globals are refused)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            d = _NumpyOnlyUnpickler(f, encoding="bytes").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable CIFAR-10 batch: {exc}") from exc
    if not isinstance(d, dict) or b"data" not in d or b"labels" not in d:
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict with b'data' and b'labels'")
    data = np.asarray(d[b"data"])
    labels = np.asarray(d[b"labels"], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: data must be uint8 (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels


def find_cifar10(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The ``cifar-10-batches-py`` folder under the data root (``<root>/cifar-10-batches-py``,
    ``<root>/cifar10/...`` or ``<root>/cifar-10/...``); downloads and extracts the archive
    into the root when allowed. Raises :class:`DatasetNotFoundError` otherwise."""
    base = data_root(root)
    folders = [base / _FOLDER, base / "cifar10" / _FOLDER, base / "cifar-10" / _FOLDER]
    names = [n for n, _ in _TRAIN + _TEST]
    for folder in folders:
        if all((folder / n).is_file() for n in names):
            return folder
    msg = (
        f"CIFAR-10 files not found: expected {', '.join(names)} in one of: "
        f"{', '.join(map(str, folders))}"
    )
    if not download_allowed(download):
        raise DatasetNotFoundError(
            msg + ". Downloading is disabled (download=False or DGM_EXT_NO_DOWNLOAD=1). "
            "Pass root=... or set DGM_EXT_DATA."
        )
    try:
        archive = base / _ARCHIVE
        if not archive.is_file():
            with removing_new_folders(base):  # a failed download leaves no empty data root
                download_file([_URL], archive, _ARCHIVE_MD5)
        verify_md5(archive, _ARCHIVE_MD5)
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(_FOLDER + "/")]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(base, members=members, filter="data")
            else:  # Python < 3.12 without extraction filters: refuse odd members ourselves
                for m in members:
                    if not (m.isfile() or m.isdir()) or ".." in Path(m.name).parts:
                        raise OSError(f"unsafe archive member {m.name!r}")
                tar.extractall(base, members=members)
    except (OSError, ChecksumError, tarfile.TarError) as exc:
        raise DatasetNotFoundError(f"{msg}, and downloading into {base} failed ({exc})") from exc
    return folders[0]


def load_cifar10(
    split: str = "train",
    root: str | os.PathLike | None = None,
    download: bool = True,
    *,
    variant: str = "float",
    verify: bool = True,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> ImageDataset:
    """Load CIFAR-10 ``split`` (``train``: the 50,000 images of data_batch_1..5, ``test``: the
    10,000 of test_batch) as an :class:`ImageDataset` with images ``(N, 3, 32, 32)``.

    ``variant="float"`` gives float32 in [0, 1] (dataset variant ``grey``, i.e. continuous
    intensities); ``"levels"`` gives int64 0..255. ``verify`` checks the published md5 sums;
    ``False`` uses other files, with a :class:`~dgm_ext.data.files.ChecksumWarning`.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if variant not in ("float", "levels"):
        raise ValueError(f"variant must be 'float' or 'levels', got {variant!r}")
    folder = find_cifar10(root, download)
    parts = _TRAIN if split == "train" else _TEST
    xs, ys = [], []
    for name, md5 in parts:
        check_md5(folder / name, md5, verify)  # verify=False: used anyway, with a warning
        x, y = read_cifar_batch(folder / name)
        xs.append(x)
        ys.append(y)
    images = torch.from_numpy(np.concatenate(xs))
    labels = torch.from_numpy(np.concatenate(ys))
    if variant == "levels":
        return ImageDataset(images.long(), labels, "levels", transform, f"cifar10/{split}")
    return ImageDataset(images.float().div_(255.0), labels, "grey", transform, f"cifar10/{split}")
