"""The library's own MNIST / Fashion-MNIST feature network (for FID, KID and an IS-like score).

A small CNN classifier whose default weights **ship with the package**, so that an FID in
its feature space is the same quantity on every machine and in every version that ships the
same file:

* architecture (:class:`FeatureNet`, default :class:`TrainConfig`): ``body`` = Conv 5x5 1→16
  (pad 2) → ReLU → MaxPool 2 → Conv 5x5 16→32 (pad 2) → ReLU → MaxPool 2 → Flatten (1568);
  ``penultimate`` = Linear 1568→128 → ReLU (**the feature layer**, width 128); ``head`` =
  Linear 128→10 (logits). 215,370 parameters.
* input convention: images in [0, 1] (float; uint8 0..255 is divided by 255 by
  :func:`features`), shape ``(N, 1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 784)``; the
  library's ``load_mnist(..., variant="grey")`` format. GAN samples in [-1, 1] must be
  mapped with ``(x + 1) / 2`` first (:func:`features` checks the range).
* shipped weights (the default config: ``train_config`` None or equal to ``TrainConfig()``
  but for ``threads``): ``dgm_ext/metrics/weights/<dataset>-classifier.pt``, a
  ``weights_only``-loadable dict (float32 ``state_dict``, accuracies, config, data and code
  hashes), made by ``tools/train_feature_classifiers.py`` (one thread, torch 2.13 CPU).
  Their sha256 (:data:`SHIPPED_SHA256`) is checked on every load; a missing or altered file
  raises :class:`ShippedWeightsError`, never a silent retraining. No data is read and
  nothing is trained or written. Accuracy on the 10,000 official test images: MNIST
  99.16 %, Fashion-MNIST 89.73 % (val: 99.05 %, 90.12 %).
* training (:func:`train_classifier`): the 50,000-image ``train`` split of
  :func:`dgm_ext.data.load_mnist` (the official training file minus its last 10,000, which
  form the ``val`` split), plain ``torch.nn``, Adam with a one-cycle learning-rate schedule
  (peak 2e-3), 4 epochs, batch 128, no augmentation, seeded (weights, shuffling) and on the
  CPU, so a given machine/torch build reproduces it. Accuracy is reported on the 10,000
  official test images (``net.test_accuracy``) and on the ``val`` split
  (``net.val_accuracy``). 1,560 optimiser steps of about 2.3 GFLOP each (forward +
  backward, batch 128).
* a non-default ``train_config`` is trained on first use and cached:
  ``<cache>/metrics/<dataset>-classifier-retrained-<key[:16]>.pt`` where ``<cache>`` is
  ``cache_dir``, else ``$DGM_EXT_CACHE``, else ``$XDG_CACHE_HOME/dgm_ext``, else
  ``~/.cache/dgm_ext``. The key is a sha256 of (format version, dataset, the sha256 of the
  decoded train/test images and labels, the sha256 of this module's architecture and
  training source code, the training config). Written atomically (temp file + rename) under
  a lock file, so concurrent ``torchrun`` ranks train once and never see a partial file;
  loaded with ``torch.load(weights_only=True)``; an unreadable or inconsistent file is
  reported with a :class:`~dgm_ext.metrics.cache.CacheWarning`, retrained, and overwritten
  atomically. Such a net says so (``net.shipped`` False, ``net.name`` ending in
  ``-retrained-<key[:12]>``), so results name the network that produced them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import math
import os
import sys
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.mnist import load_mnist_arrays
from .cache import CacheWarning, atomic_save, cache_root, file_lock, hash_arrays, make_key
from .cache import safe_load as _safe_load
from .cache import source_hash as _source_hash

__all__ = [
    "DATASETS",
    "SHIPPED_SHA256",
    "FeatureNet",
    "ShippedWeightsError",
    "TrainConfig",
    "cache_path",
    "class_probs",
    "classifier_key",
    "evaluate_accuracy",
    "features",
    "is_default_config",
    "mnist_feature_net",
    "shipped_feature_net",
    "shipped_weights_bytes",
    "shipped_weights_path",
    "train_classifier",
]

DATASETS = ("mnist", "fashion-mnist")
_ALIASES = {"fashion": "fashion-mnist", "fashion_mnist": "fashion-mnist", "fmnist": "fashion-mnist"}
FORMAT_VERSION = 1  # of the retrained classifiers' cache files
SHIPPED_FORMAT = 1  # of the shipped weights files
VAL_SIZE = 10_000  # the last 10k of the official training file form the val split
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# sha256 of the shipped weights files (dgm_ext/metrics/weights/<dataset>-classifier.pt),
# checked on every load. Changed only on purpose, with tools/train_feature_classifiers.py,
# which prints the new values; every FID/KID/IS in these feature spaces changes with them.
SHIPPED_SHA256: dict[str, str] = {
    "mnist": "09435350f9127ab53022fde0900c8ab5fafac089778b1b0b98d2125db5cc6b50",
    "fashion-mnist": "0132aede3fdea778409418b6d832d97a65ae06a55ef572ddb48e91c133e3b404",
}


@dataclass(frozen=True)
class TrainConfig:
    """Architecture and training settings of the feature classifier (all part of the cache key).

    Attributes:
        width: width of the feature layer ``penultimate``.
        channels: output channels of the two convolutions.
        kernel: (odd) kernel size of the convolutions ("same" padding).
        epochs: passes over the training images.
        batch_size: minibatch size.
        lr: peak learning rate of Adam's one-cycle schedule.
        seed: seed of the initialisation and of the shuffling.
        n_train: use only the first ``n_train`` images of the 50k ``train`` split (None: all).
        n_eval: evaluate on only the first ``n_eval`` test and val images (None: all 10k).
        threads: torch CPU threads while training (None: leave torch's setting). Not part
            of the cache key (it changes only speed and float rounding).
    """

    width: int = 128
    channels: tuple[int, int] = (16, 32)
    kernel: int = 5
    epochs: int = 4
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    n_train: int | None = None
    n_eval: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"channels must be two positive ints, got {self.channels}")
        for name in ("width", "epochs", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if int(self.kernel) < 1 or int(self.kernel) % 2 == 0:
            raise ValueError(f"kernel must be a positive odd int, got {self.kernel}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/``weights_only``-safe)."""
        d = dataclasses.asdict(self)
        d["channels"] = list(self.channels)
        return d


class FeatureNet(nn.Module):
    """Small CNN classifier used as the MNIST/Fashion-MNIST feature network.

    ``features(x)`` is the output of the layer named :attr:`feature_layer` (``"penultimate"``,
    Linear + ReLU, width :attr:`width`, 128 by default); ``forward``/``logits`` give the 10
    class logits and ``probs`` their softmax. Inputs: images in [0, 1] of shape
    ``(N, 1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 784)``. Set by :func:`mnist_feature_net`:
    ``dataset``, ``test_accuracy``, ``val_accuracy`` (fractions in [0, 1]), ``shipped``
    (True: the package's weights file), ``key`` (shipped: the sha256 of the weights file;
    retrained: the cache key), ``weights_path`` (the file the weights came from),
    ``cache_path`` (retrained only), ``config``; :attr:`name` names the network for results.
    """

    feature_layer: str = "penultimate"

    def __init__(
        self, width: int = 128, channels: tuple[int, int] = (16, 32), kernel: int = 5
    ) -> None:
        super().__init__()
        c1, c2 = channels
        self.body = nn.Sequential(
            nn.Conv2d(1, c1, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.penultimate = nn.Sequential(nn.Linear(c2 * 7 * 7, width), nn.ReLU())
        self.head = nn.Linear(width, 10)
        self.width = int(width)
        self.dataset: str | None = None
        self.test_accuracy: float = math.nan
        self.val_accuracy: float = math.nan
        self.key: str = ""
        self.shipped: bool = False
        self.weights_path: Path | None = None
        self.cache_path: Path | None = None
        self.config: TrainConfig | None = None

    @property
    def name(self) -> str:
        """The network's name for results: ``<dataset>-classifier`` for the shipped weights,
        ``<dataset>-classifier-retrained-<key[:12]>`` for a classifier trained here."""
        base = f"{self.dataset}-classifier"
        return base if self.shipped else f"{base}-retrained-{self.key[:12]}"

    @property
    def ident(self) -> str:
        """The exact identity of the weights, for cache keys and records: ``<name>:<key>``
        (shipped: the weights file's sha256)."""
        return f"{self.name}:{self.key}"

    @staticmethod
    def _as_images(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[1] == 784:
            x = x.reshape(-1, 1, 28, 28)
        elif x.dim() == 3 and x.shape[1:] == (28, 28):
            x = x.unsqueeze(1)
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28):
            raise ValueError(
                f"expected images of shape (N, 1, 28, 28), (N, 28, 28) or (N, 784), "
                f"got {tuple(x.shape)}"
            )
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, width)`` activations of the feature layer for images in [0, 1]."""
        return self.penultimate(self.body(self._as_images(x)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 10)`` class logits."""
        return self.head(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`logits`."""
        return self.logits(x)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 10)`` class probabilities (softmax of the logits)."""
        return torch.softmax(self.logits(x), dim=-1)


# --------------------------------------------------------------------------- training
def train_classifier(images: torch.Tensor, labels: torch.Tensor, config: TrainConfig) -> FeatureNet:
    """Train a :class:`FeatureNet` on ``images`` ``(N, 1, 28, 28)`` float32 in [0, 1] and int64
    ``labels`` with Adam + one-cycle LR; seeded, on the CPU, without touching torch's global
    RNG state. Returns the net in eval mode."""
    old_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(int(config.threads))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            net = FeatureNet(config.width, config.channels, config.kernel)
        gen = torch.Generator().manual_seed(config.seed + 1)
        n = images.shape[0]
        bs = min(config.batch_size, n)
        steps_per_epoch = n // bs  # drop the last partial batch
        opt = torch.optim.Adam(net.parameters(), lr=config.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch
        )
        net.train()
        for _ in range(config.epochs):
            perm = torch.randperm(n, generator=gen)
            for i in range(steps_per_epoch):
                idx = perm[i * bs : (i + 1) * bs]
                loss = F.cross_entropy(net(images[idx]), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        if not all(torch.isfinite(p).all() for p in net.parameters()):
            raise RuntimeError("feature classifier training diverged (non-finite weights)")
    finally:
        torch.set_num_threads(old_threads)
    return net.eval()


@torch.no_grad()
def evaluate_accuracy(
    net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000
) -> float:
    """Fraction of ``images`` whose argmax class equals ``labels``."""
    if images.shape[0] == 0:
        return math.nan
    was_training = net.training
    net.eval()
    correct = 0
    for i in range(0, images.shape[0], batch_size):
        pred = net(images[i : i + batch_size]).argmax(dim=-1)
        correct += int((pred == labels[i : i + batch_size]).sum())
    net.train(was_training)
    return correct / images.shape[0]


# --------------------------------------------------------------------------- data and key
class _Data(NamedTuple):
    train_images: np.ndarray  # (60000, 28, 28) uint8, the official training file
    train_labels: np.ndarray
    test_images: np.ndarray  # (10000, 28, 28) uint8
    test_labels: np.ndarray


def _normalise_dataset(dataset: str) -> str:
    if not isinstance(dataset, str):
        raise TypeError(f"dataset must be a str (one of {DATASETS}), got {type(dataset).__name__}")
    name = _ALIASES.get(dataset.lower(), dataset.lower())
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
    return name


def _load_data(dataset: str, root: str | os.PathLike | None, verify: bool = True) -> _Data:
    """The official train and test arrays of MNIST or Fashion-MNIST (md5-verified unless
    ``verify`` is False, see :func:`dgm_ext.data.load_mnist_arrays`)."""
    fashion = dataset == "fashion-mnist"
    xtr, ytr, _ = load_mnist_arrays("train", root, fashion=fashion, download=True, verify=verify)
    xte, yte, _ = load_mnist_arrays("test", root, fashion=fashion, download=True, verify=verify)
    return _Data(xtr, ytr, xte, yte)


def _data_hash(data: _Data) -> str:
    """sha256 of the four arrays (about 0.1 s for MNIST)."""
    return hash_arrays(*data)


def classifier_key(dataset: str, data_hash: str, config: TrainConfig) -> str:
    """Cache key: sha256 over the format version, dataset, data hash, training-code hash
    and training config (all fields but ``threads``)."""
    return make_key(
        "dgm_ext.metrics.mnist_net",
        FORMAT_VERSION,
        _normalise_dataset(dataset),
        data_hash,
        _code_hash(),
        _config_fields(config),
    )


def _config_fields(config: TrainConfig) -> dict[str, Any]:
    """The config's fields that define the weights (all but ``threads``)."""
    return {k: v for k, v in config.to_dict().items() if k != "threads"}


def is_default_config(config: TrainConfig) -> bool:
    """Whether ``config`` trains the shipped classifier: equal to ``TrainConfig()`` in every
    field but ``threads`` (which changes only speed and float rounding)."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return _config_fields(config) == _config_fields(TrainConfig())


def cache_path(dataset: str, key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """File holding the retrained (non-default) classifier with cache ``key``: named
    ``<dataset>-classifier-retrained-<key[:16]>.pt``, never like the shipped file."""
    name = f"{_normalise_dataset(dataset)}-classifier-retrained-{key[:16]}.pt"
    return cache_root(cache_dir) / "metrics" / name


def _training_tensors(data: _Data, config: TrainConfig) -> tuple[torch.Tensor, ...]:
    n_train = len(data.train_images) - VAL_SIZE
    if config.n_train is not None:
        n_train = min(n_train, int(config.n_train))
    n_eval = VAL_SIZE if config.n_eval is None else int(config.n_eval)

    def grey(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.array(a, dtype=np.float32)).div_(255.0).unsqueeze(1)

    def lab(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a, dtype=np.int64))

    val = slice(len(data.train_images) - VAL_SIZE, len(data.train_images) - VAL_SIZE + n_eval)
    return (
        grey(data.train_images[:n_train]),
        lab(data.train_labels[:n_train]),
        grey(data.train_images[val]),
        lab(data.train_labels[val]),
        grey(data.test_images[:n_eval]),
        lab(data.test_labels[:n_eval]),
    )


def _as_config(train_config: TrainConfig | Mapping[str, Any] | None) -> TrainConfig:
    if train_config is None:
        return TrainConfig()
    if isinstance(train_config, TrainConfig):
        return train_config
    if not isinstance(train_config, Mapping):
        raise TypeError(
            "train_config must be a TrainConfig, a dict of its fields or None, got "
            f"{type(train_config).__name__}"
        )
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(str(k) for k in train_config if k not in fields)
    if unknown:
        raise TypeError(
            f"train_config has unknown fields {unknown}; TrainConfig has {sorted(fields)}"
        )
    return TrainConfig(**dict(train_config))


_REQUIRED = ("format", "key", "dataset", "config", "state_dict", "test_accuracy", "val_accuracy")


def _build(obj: Mapping[str, Any], config: TrainConfig) -> FeatureNet:
    net = FeatureNet(config.width, config.channels, config.kernel)
    net.load_state_dict(obj["state_dict"], strict=True)
    if not all(torch.isfinite(t).all() for t in net.state_dict().values()):
        raise ValueError("non-finite weights")
    return net


def _validator(key: str, config: TrainConfig):
    def validate(obj: dict[str, Any]) -> str | None:
        if obj["format"] != FORMAT_VERSION:
            return f"format {obj['format']!r} != {FORMAT_VERSION}"
        if obj["key"] != key:
            return "key mismatch (file belongs to other data/code/config)"
        _build(obj, config)  # raises on missing/unexpected/mis-shaped weights
        return None

    return validate


def _finish(
    net: FeatureNet, obj: Mapping[str, Any], config: TrainConfig, path: Path, *, shipped: bool
) -> FeatureNet:
    net.dataset = str(obj["dataset"])
    net.test_accuracy = float(obj["test_accuracy"])
    net.val_accuracy = float(obj["val_accuracy"])
    net.shipped = shipped
    net.key = str(obj["sha256"] if shipped else obj["key"])
    net.weights_path = path
    net.cache_path = None if shipped else path
    net.config = config
    net.requires_grad_(False)
    return net.eval()


# --------------------------------------------------------------------------- shipped weights
class ShippedWeightsError(RuntimeError):
    """A shipped weights file is missing, altered (sha256 mismatch) or inconsistent."""


_SHIPPED_REQUIRED = (
    "format", "dataset", "config", "state_dict", "test_accuracy", "val_accuracy", "data_sha256",
)  # fmt: skip


def shipped_weights_path(dataset: str) -> Path:
    """The shipped weights file of ``dataset``:
    ``dgm_ext/metrics/weights/<dataset>-classifier.pt``."""
    return WEIGHTS_DIR / f"{_normalise_dataset(dataset)}-classifier.pt"


def _restore_hint(dataset: str) -> str:
    return (
        "Restore the file that came with dgm_ext (`git checkout -- "
        f"dgm_ext/metrics/weights/{dataset}-classifier.pt` in a source checkout, or reinstall "
        "the package); the library never retrains it silently. If you regenerated the weights "
        "on purpose with tools/train_feature_classifiers.py, put the sha256 it printed into "
        f"SHIPPED_SHA256[{dataset!r}] in dgm_ext/metrics/mnist_net.py."
    )


def shipped_feature_net(
    dataset: str = "mnist",
    *,
    path: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
) -> FeatureNet:
    """The classifier of ``dataset`` from its shipped weights file, checked against
    :data:`SHIPPED_SHA256` before it is read (``torch.load(weights_only=True)``).

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        path: read this file instead of the shipped one (it must still have the shipped
            sha256; for checks of copies).
        device: move the returned net there.

    Raises:
        ShippedWeightsError: the file is missing, its sha256 differs from the constant
            (corrupt or changed: the message says how to restore it), or its contents do not
            fit the default architecture.
    """
    dataset = _normalise_dataset(dataset)
    file = shipped_weights_path(dataset) if path is None else Path(path)
    expected = SHIPPED_SHA256[dataset]
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ShippedWeightsError(
            f"the shipped {dataset} feature classifier weights {file} cannot be read "
            f"({exc.strerror or exc}). {_restore_hint(dataset)}"
        ) from exc
    actual = hashlib.sha256(raw).hexdigest()
    if actual != expected:
        raise ShippedWeightsError(
            f"the shipped {dataset} feature classifier weights {file} have sha256 {actual}, "
            f"expected {expected}: the file is corrupt or was changed, and FIDs computed with "
            f"it would not be comparable. {_restore_hint(dataset)}"
        )
    try:
        obj = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        problem = _shipped_problem(obj, dataset)
        if problem is None:
            config = TrainConfig(**obj["config"])
            net = _build(obj, config)
    except Exception as exc:  # the sha256 matched: a wrong constant or changed code
        problem = f"{type(exc).__name__}: {exc}"
    if problem is not None:
        raise ShippedWeightsError(
            f"the shipped {dataset} feature classifier weights {file} (sha256 {actual}) do not "
            f"fit this code: {problem}. Regenerate them with tools/train_feature_classifiers.py."
        )
    obj = {**obj, "sha256": actual}
    return _finish(net, obj, config, file, shipped=True).to(device)


def _shipped_problem(obj: Any, dataset: str) -> str | None:
    if not isinstance(obj, dict):
        return f"expected a dict, got {type(obj).__name__}"
    missing = [k for k in _SHIPPED_REQUIRED if k not in obj]
    if missing:
        return f"missing entries {missing}"
    if obj["format"] != SHIPPED_FORMAT:
        return f"format {obj['format']!r} != {SHIPPED_FORMAT}"
    if obj["dataset"] != dataset:
        return f"it holds the {obj['dataset']!r} classifier"
    if not is_default_config(TrainConfig(**obj["config"])):
        return (
            f"trained with {obj['config']}, but the default TrainConfig() is now "
            f"{_config_fields(TrainConfig())}"
        )
    return None


def shipped_weights_bytes(
    dataset: str,
    *,
    root: str | os.PathLike | None = None,
    verify: bool = True,
    threads: int = 1,
) -> tuple[bytes, dict[str, Any]]:
    """Train the default-config classifier of ``dataset`` and return the contents of its
    shipped weights file (``torch.save`` of a ``weights_only``-loadable dict: float32
    ``state_dict``, accuracies, config, data and code hashes, torch version) and the dict.

    Deterministic for a given machine and torch build: seeded, on the CPU, on ``threads``
    threads, and serialised to memory (no file name or time inside). Used by
    ``tools/train_feature_classifiers.py``; never called by the library itself.
    """
    dataset = _normalise_dataset(dataset)
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    config = dataclasses.replace(TrainConfig(), threads=int(threads))
    data = _load_data(dataset, root, verify)
    xtr, ytr, xva, yva, xte, yte = _training_tensors(data, config)
    net = train_classifier(xtr, ytr, config)
    obj = {
        "format": SHIPPED_FORMAT,
        "dataset": dataset,
        "config": _config_fields(config),
        "state_dict": {
            k: v.detach().to(torch.float32).contiguous().clone()
            for k, v in net.state_dict().items()
        },
        "test_accuracy": evaluate_accuracy(net, xte, yte),
        "val_accuracy": evaluate_accuracy(net, xva, yva),
        "n_train": int(xtr.shape[0]),
        "train_threads": int(threads),
        "data_sha256": _data_hash(data),
        "code_sha256": _code_hash(),
        "torch_version": str(torch.__version__),
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue(), obj


# --------------------------------------------------------------------------- the entry point
def mnist_feature_net(
    dataset: str = "mnist",
    cache_dir: str | os.PathLike | None = None,
    train_config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    verbose: bool = True,
    lock_timeout: float = 900.0,
    verify: bool = True,
) -> FeatureNet:
    """The feature classifier for ``dataset`` (``"mnist"`` or ``"fashion-mnist"``).

    Default config (``train_config`` None or equal to ``TrainConfig()`` but for ``threads``):
    the shipped weights (:func:`shipped_feature_net`): sha256-checked, no data read, nothing
    trained or written; ``cache_dir``, ``root``, ``verbose``, ``lock_timeout`` and
    ``verify`` are not used.

    Any other config: loaded from the cache when present; otherwise trained (a note goes to
    stderr when ``verbose``) and written to the cache atomically, as
    ``<dataset>-classifier-retrained-<key[:16]>.pt``. Concurrent callers (e.g. ``torchrun``
    ranks) serialise on a lock file, so one trains and the others load its file. A corrupt
    cache file gives a ``CacheWarning`` and is retrained and overwritten; an unwritable cache
    folder gives a warning and an uncached net.

    Args:
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        cache_dir: cache folder (default ``$DGM_EXT_CACHE`` / ``$XDG_CACHE_HOME/dgm_ext`` /
            ``~/.cache/dgm_ext``); the file goes to ``<cache_dir>/metrics/``.
        train_config: :class:`TrainConfig` (or a dict of its fields); None: the shipped net.
        root: data root for :func:`dgm_ext.data.load_mnist_arrays` (default ``$DGM_EXT_DATA``).
        device: move the returned net there (training always runs on the CPU).
        verbose: print a note to stderr when training.
        lock_timeout: seconds to wait for another process's training before training too.
        verify: check the data files' md5 sums (False: use them anyway, with a
            :class:`~dgm_ext.data.ChecksumWarning`; the data hash in the key still tells
            other data apart).

    Returns:
        A :class:`FeatureNet` in eval mode with frozen parameters and ``shipped``, ``name``,
        ``test_accuracy``, ``val_accuracy``, ``feature_layer``, ``width``, ``key``,
        ``weights_path``, ``cache_path`` (None when shipped), ``config`` set.

    Raises:
        ShippedWeightsError: the shipped file is missing or altered (default config).
    """
    dataset = _normalise_dataset(dataset)
    config = _as_config(train_config)
    if not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool, got {type(verify).__name__}")
    if is_default_config(config):
        return shipped_feature_net(dataset, device=device)
    data = _load_data(dataset, root, verify)
    key = classifier_key(dataset, _data_hash(data), config)
    path = cache_path(dataset, key, cache_dir)
    validate = _validator(key, config)

    res = _safe_load(path, _REQUIRED, validate)
    if not res.ok:
        with file_lock(path.with_name(path.name + ".lock"), timeout=lock_timeout):
            res = _safe_load(path, _REQUIRED, validate)  # another process may have written it
            if not res.ok:
                if res.status == "corrupt":
                    warnings.warn(
                        f"cached feature classifier {path} is corrupt ({res.reason}); "
                        "retraining it and overwriting the file",
                        CacheWarning,
                        stacklevel=2,
                    )
                obj = _train_and_save(dataset, data, key, config, path, verbose)
                net = _build(obj, config)
                return _finish(net, obj, config, path, shipped=False).to(device)
    return _finish(_build(res.obj, config), res.obj, config, path, shipped=False).to(device)


def _train_and_save(
    dataset: str, data: _Data, key: str, config: TrainConfig, path: Path, verbose: bool
) -> dict[str, Any]:
    if verbose:
        print(f"dgm_ext.metrics: training the {dataset} feature classifier for a non-default "
              f"config (once; cached at {path})", file=sys.stderr, flush=True)  # fmt: skip
    xtr, ytr, xva, yva, xte, yte = _training_tensors(data, config)
    t0 = time.perf_counter()
    net = train_classifier(xtr, ytr, config)
    seconds = time.perf_counter() - t0
    obj = {
        "format": FORMAT_VERSION,
        "key": key,
        "dataset": dataset,
        "config": config.to_dict(),
        "state_dict": {k: v.detach().clone() for k, v in net.state_dict().items()},
        "test_accuracy": evaluate_accuracy(net, xte, yte),
        "val_accuracy": evaluate_accuracy(net, xva, yva),
        "n_train": int(xtr.shape[0]),
        "train_seconds": seconds,
        "torch_version": str(torch.__version__),
    }
    if verbose:
        print(f"dgm_ext.metrics: trained in {seconds:.0f} s, test accuracy "
              f"{obj['test_accuracy']:.4f}", file=sys.stderr, flush=True)  # fmt: skip
    try:
        atomic_save(obj, path)
    except OSError as exc:
        warnings.warn(f"could not write the feature classifier cache {path} ({exc}); "
                      "it will be retrained next time", CacheWarning, stacklevel=3)  # fmt: skip
    return obj


# --------------------------------------------------------------------------- feature passes
def _batches(net: nn.Module, images: Any, batch_size: int, check_range: bool):
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a tensor or numpy array, got {type(images).__name__}")
    scale = 1.0 / 255.0 if images.dtype == torch.uint8 else None
    if check_range and scale is None and images.numel():
        lo, hi = float(images.min()), float(images.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"images must be in [0, 1] (got values in [{lo:.3g}, {hi:.3g}]); map samples "
                "in [-1, 1] with (x + 1) / 2, or pass check_range=False"
            )
    try:
        device = next(net.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for i in range(0, images.shape[0], batch_size):
        x = images[i : i + batch_size].to(device, torch.float32)
        yield x * scale if scale is not None else x


def _run(net: FeatureNet, images: Any, batch_size: int, check_range: bool, fn) -> torch.Tensor:
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            outs = [fn(x).double().cpu() for x in _batches(net, images, batch_size, check_range)]
    finally:
        net.train(was_training)
    if not outs:
        width = net.width if fn == net.features else 10
        return torch.empty(0, width, dtype=torch.float64)
    return torch.cat(outs)


def features(
    net: FeatureNet, images: torch.Tensor | np.ndarray, batch_size: int = 500,
    *, check_range: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Feature-layer activations of ``images``, computed in batches without gradients.

    Args:
        net: a :class:`FeatureNet` (e.g. from :func:`mnist_feature_net`), on any device.
        images: ``(N, 1, 28, 28)``, ``(N, 28, 28)`` or ``(N, 784)``; float in [0, 1] (any
            float dtype, computed in float32) or uint8 0..255 (divided by 255). CPU or device.
        batch_size: images per forward pass.
        check_range: raise ``ValueError`` when float images leave [0, 1] (by more than 1e-3).

    Returns:
        ``(N, net.width)`` float64 CPU tensor (``.numpy()`` for numpy).
    """
    return _run(net, images, batch_size, check_range, net.features)


def class_probs(
    net: FeatureNet, images: torch.Tensor | np.ndarray, batch_size: int = 500,
    *, check_range: bool = True,
) -> torch.Tensor:  # fmt: skip
    """``(N, 10)`` float64 CPU class probabilities of ``images`` (same conventions as
    :func:`features`), e.g. for an Inception-Score-like score."""
    return _run(net, images, batch_size, check_range, net.probs)


# The code whose source defines the cached weights: editing any of it changes the cache key.
# Captured at import, so wrapping ``train_classifier`` (e.g. in tests) does not change it.
_TRAINING_CODE = (FeatureNet, train_classifier, _training_tensors)
_CODE_HASH: str | None = None


def _code_hash() -> str:
    global _CODE_HASH
    if _CODE_HASH is None:
        _CODE_HASH = _source_hash(*_TRAINING_CODE)
    return _CODE_HASH
