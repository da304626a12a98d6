"""Features of image sets, streamed through a feature network, cached, and compared.

* :func:`folder_features` / :func:`tensor_features` -- ``(N, F)`` features (and class
  probabilities) of a folder of image files or of an image tensor, batch by batch: only the
  features stay in memory (float32 for the real networks, which compute in float32; 50 000
  Inception features are 400 MB).
* Cache -- features of folders and data splits are kept in
  ``<cache>/metrics/features/<key>.pt`` (``<cache>``: :func:`~dgm_ext.metrics.cache.cache_root`),
  keyed by a sha256 of the network's identity (:attr:`FeatureSpace.ident`: the weights file's
  sha256 or the classifier's key), the resize convention and the content: a folder's relative
  paths, sizes and modification times (a changed file gives a new key), a tensor's bytes (a
  data split's checksum). A second evaluation against the same reference reads its features
  back, so it costs only the new images, and KID / precision-recall work from the cache.
* :func:`compare` -- FID, KID, IS, precision / recall / density / coverage from feature sets,
  in float64 blocks (statistics by blocks of rows, KID by subsets, IS by splits), so that memory
  stays at the features' own size.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .cache import atomic_save, cache_root, hash_arrays, make_key, safe_load
from .folder import FolderStream, iter_folder, list_images
from .frechet import frechet_distance_from_stats
from .prdc import prdc
from .resize import check_resize, resize_images, to_channels
from .scores import inception_score, kid_subset_indices, mmd2_unbiased
from .stats import load_stats

if TYPE_CHECKING:
    from .evaluate import FeatureSpace

__all__ = [
    "FeatureSet",
    "compare",
    "feature_statistics_blocked",
    "features_cache_path",
    "folder_features",
    "tensor_features",
]

FORMAT = "dgm_ext.metrics.features/1"
_STATS_BLOCK = 4096


@dataclass
class FeatureSet:
    """Features of one image set: ``features`` (N, F), ``probs`` (N, C) or None, a ``label``
    naming the source, ``n_available`` images there (None: unbounded, e.g. a model),
    ``skipped`` (path, reason) of undecodable files, ``cached`` when read from the cache."""

    features: Tensor
    probs: Tensor | None
    label: str
    n_available: int | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cached: bool = False

    @property
    def n(self) -> int:
        """Number of images the features come from."""
        return int(self.features.shape[0])


# --------------------------------------------------------------------------- extraction
def _prepare(x: Tensor, space: FeatureSpace, resize: str) -> Tensor:
    """A batch (uint8 or float in [0, 1]) as the network's input: its channels, its size."""
    if space.device is not None and resize != "clean":
        x = x.to(space.device)
    x = to_channels(x, space.channels)
    if space.input_size is not None:
        return resize_images(x, space.input_size, resize)
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def _extract(
    batches: Iterable[Tensor], space: FeatureSpace, resize: str, total: int, keep_probs: bool
) -> tuple[Tensor, Tensor | None]:
    """Features (and, with ``keep_probs``, probabilities) of ``batches`` (at most ``total``
    images), preallocated."""
    feats: Tensor | None = None
    probs: Tensor | None = None
    i = 0
    with torch.no_grad():
        for x in batches:
            f, p = space.extract(_prepare(x, space, resize))
            if feats is None:
                feats = torch.empty(total, f.shape[1], dtype=space.feature_dtype)
                if p is not None and keep_probs:
                    probs = torch.empty(total, p.shape[1], dtype=space.feature_dtype)
            j = i + f.shape[0]
            feats[i:j] = f.detach().cpu()
            if probs is not None:
                probs[i:j] = p.detach().cpu()
            i = j
    if feats is None:
        raise ValueError("no image could be read: nothing to evaluate")
    if i < total:  # skipped files: copy, so a saved cache file holds only the used rows
        feats = feats[:i].clone()
        probs = probs[:i].clone() if probs is not None else None
    return feats, probs


def features_cache_path(key: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """Where the features with cache ``key`` are kept."""
    return cache_root(cache_dir) / "metrics" / "features" / f"{key[:32]}.pt"


def _cached(
    key: str | None,
    cache_dir: str | os.PathLike | None,
    compute: Callable[[], FeatureSet],
    need_probs: bool,
) -> FeatureSet:
    if key is None:
        return compute()
    path = features_cache_path(key, cache_dir)

    def usable(o: dict) -> str | None:
        if o["format"] != FORMAT or o["key"] != key:
            return "another key"
        # a reference cached without probabilities is computed again when IS needs them
        return "no probabilities" if need_probs and o.get("probs") is None else None

    res = safe_load(path, ("format", "key", "features", "label"), usable)
    if res.ok:
        o = res.obj
        skipped = [(str(p), str(w)) for p, w in o.get("skipped", [])]
        return FeatureSet(o["features"], o.get("probs"), o["label"], o.get("n_available"),
                          skipped, cached=True)  # fmt: skip
    fs = compute()
    blob = {
        "format": FORMAT,
        "key": key,
        "features": fs.features,
        "probs": fs.probs,
        "label": fs.label,
        "n_available": fs.n_available,
        "skipped": [list(s) for s in fs.skipped],
    }
    try:
        atomic_save(blob, path)
    except OSError:  # an unwritable cache only costs the next run the same work
        pass
    return fs


def _limit(n: int | None, available: int) -> int:
    if n is None:
        return available
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return min(n, available)


def folder_features(
    folder: str | os.PathLike,
    space: FeatureSpace,
    *,
    n: int | None = None,
    resize: str = "pytorch-fid",
    batch_size: int = 50,
    workers: int = 0,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    label: str | None = None,
    probs: bool = True,
) -> FeatureSet:
    """Features of the image files below ``folder`` (recursive, sorted by relative path; the
    first ``n`` of them when given), decoded in ``workers`` processes, converted to the
    network's channels and resized to its input with ``resize``. Undecodable files are skipped
    with a :class:`~dgm_ext.metrics.folder.SkippedImageWarning` and listed in ``skipped``.
    Cached (see the module docstring) when ``cache`` and the space has an ``ident``.
    ``probs=False`` keeps no class probabilities (a reference needs none: 200 MB less for
    50 000 Inception outputs)."""
    check_resize(resize)
    root = Path(folder)
    every = list_images(root)
    files = every[: _limit(n, len(every))]
    name = label if label is not None else str(folder)
    key = None
    if cache and space.ident is not None:
        listing = []
        for p in files:
            st = p.stat()
            listing.append([p.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns])
        key = make_key(FORMAT, "folder", space.ident, resize, listing)

    def compute() -> FeatureSet:
        stream = FolderStream(files)
        batches = iter_folder(
            files,
            stream,
            channels=space.channels,
            size=space.input_size,
            resize=resize,
            batch_size=batch_size,
            workers=workers,
        )
        feats, p = _extract(batches, space, resize, len(files), probs)
        return FeatureSet(feats, p, name, len(every), stream.skipped)

    fs = _cached(key, cache_dir, compute, probs)
    fs.n_available = len(every)
    if fs.skipped:
        FolderStream(files, fs.skipped).warn()
    return fs


def tensor_features(
    images: Tensor,
    space: FeatureSpace,
    *,
    resize: str = "pytorch-fid",
    batch_size: int = 50,
    label: str = "images",
    n_available: int | None = None,
    cache: bool = False,
    cache_dir: str | os.PathLike | None = None,
    probs: bool = True,
) -> FeatureSet:
    """Features of ``images`` (N, C, H, W), uint8 or float in [0, 1], in batches. With
    ``cache`` (data splits) they are cached under a hash of the images' bytes; ``probs``
    as :func:`folder_features`."""
    check_resize(resize)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    key = None
    if cache and space.ident is not None:
        key = make_key(FORMAT, "tensor", space.ident, resize, hash_arrays(images))

    def compute() -> FeatureSet:
        batches = (images[i : i + batch_size] for i in range(0, images.shape[0], batch_size))
        feats, p = _extract(batches, space, resize, int(images.shape[0]), probs)
        return FeatureSet(feats, p, label, n_available)

    fs = _cached(key, cache_dir, compute, probs)
    fs.label, fs.n_available = label, n_available
    return fs


# --------------------------------------------------------------------------- metrics
def feature_statistics_blocked(features: Tensor, block: int = _STATS_BLOCK) -> tuple[Any, Any]:
    """``(mu, sigma)`` as :func:`~dgm_ext.metrics.stats.feature_statistics` (float64,
    ``ddof=1``), from blocks of rows: no float64 copy of all features is made."""
    x = features if isinstance(features, Tensor) else torch.as_tensor(np.asarray(features))
    n = x.shape[0]
    if x.dim() != 2 or n < 2:
        raise ValueError(f"features need shape (N >= 2, F), got {tuple(x.shape)}")
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, n, block):
        b = x[i : i + block].double()
        if not torch.isfinite(b).all():
            raise ValueError("features contain NaN or Inf")
        total += b.sum(0)
    mu = total / n
    sigma = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    for i in range(0, n, block):
        c = x[i : i + block].double() - mu
        sigma += c.T @ c
    sigma /= n - 1
    sigma = 0.5 * (sigma + sigma.T)
    return mu.numpy(), sigma.numpy()


def _kid(a: Tensor, b: Tensor, subsets: int, size: int, seed: int = 0) -> tuple[float, float]:
    """:func:`~dgm_ext.metrics.scores.kernel_inception_distance` by subsets: only each subset
    is converted to float64."""
    idx = kid_subset_indices(a.shape[0], b.shape[0], subsets, size, seed)
    mmds = np.array(
        [mmd2_unbiased(a[torch.from_numpy(ia)].double(), b[torch.from_numpy(ib)].double())
         for ia, ib in idx]
    )  # fmt: skip
    return float(mmds.mean()), float(mmds.std())


def _inception_score(probs: Tensor, splits: int) -> tuple[float, float]:
    """:func:`~dgm_ext.metrics.scores.inception_score`, one split converted at a time."""
    n = probs.shape[0]
    scores = np.array(
        [inception_score(probs[i * n // splits : (i + 1) * n // splits], 1)[0]
         for i in range(splits)]
    )  # fmt: skip
    return float(scores.mean()), float(scores.std())


PRDC_NAMES = ("precision", "recall", "density", "coverage")


def compare(
    a: FeatureSet,
    b: FeatureSet | None,
    metrics: Sequence[str],
    *,
    ref_stats: str | os.PathLike | tuple[Any, Any] | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    nearest_k: int = 3,
) -> dict[str, Any]:
    """Metrics of ``a`` against the reference ``b`` (or, for FID, the statistics ``ref_stats``:
    a pytorch-fid ``.npz`` path or a ``(mu, sigma)`` pair). ``metrics`` holds names among
    fid, kid, is, precision, recall, density, coverage. Precision/recall treat ``b`` as the
    real set and ``a`` as the generated one."""
    out: dict[str, Any] = {}
    if "fid" in metrics:
        mu_a, sigma_a = feature_statistics_blocked(a.features)
        if ref_stats is not None:
            if isinstance(ref_stats, tuple):
                mu_b, sigma_b = ref_stats
            else:
                mu_b, sigma_b = load_stats(ref_stats)
                out["ref_stats"] = str(ref_stats)
            if mu_b.shape[0] != a.features.shape[1]:
                raise ValueError(
                    f"reference statistics {ref_stats if not isinstance(ref_stats, tuple) else ''}"
                    f" have {mu_b.shape[0]} features but the images' feature network has "
                    f"{a.features.shape[1]}: they come from another feature network"
                )
        elif b is not None:
            mu_b, sigma_b = feature_statistics_blocked(b.features)
        else:
            raise ValueError("FID needs reference images or reference statistics")
        out["fid"] = frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b)
    if "kid" in metrics:
        if b is None:
            raise ValueError("KID needs reference features (images, a data split or a cache)")
        size = min(kid_subset_size, a.n, b.n)
        out["kid_mean"], out["kid_std"] = _kid(a.features, b.features, kid_subsets, size)
        out["kid_subsets"], out["kid_subset_size"] = kid_subsets, size
    if "is" in metrics:
        if a.probs is None:
            raise ValueError("IS needs class probabilities, which this feature network lacks")
        splits = min(is_splits, a.n)
        out["is_mean"], out["is_std"] = _inception_score(a.probs, splits)
        out["is_splits"] = splits
    wanted = [m for m in PRDC_NAMES if m in metrics]
    if wanted:
        if b is None:
            raise ValueError("precision/recall/density/coverage need reference features")
        res = prdc(b.features, a.features, k=nearest_k)
        out.update({m: res[m] for m in wanted})
        out["nearest_k"] = nearest_k
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (the identity of a weights file in cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
