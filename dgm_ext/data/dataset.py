"""In-memory image datasets and a fast, resumable, shardable batch iterator.

All data sets of this package fit in memory, so they are decoded once into tensors and
batches are gathered with one indexing operation instead of a per-sample ``DataLoader``
(about two orders of magnitude faster for MNIST-sized data). The datasets remain ordinary
map-style :class:`torch.utils.data.Dataset` objects and work with ``DataLoader`` too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, Sampler, Subset, TensorDataset, default_collate

__all__ = [
    "BatchLoader",
    "ImageDataset",
    "ShardedBatchSampler",
    "binarise_pixels",
    "epoch_permutation",
    "fetch_batch",
]

VARIANTS = ("grey", "static", "dynamic", "levels")


def binarise_pixels(images: np.ndarray, seed: int, part: str = "train") -> np.ndarray:
    """One Bernoulli draw per pixel from its 8-bit grey level (numpy PCG64 seeded by
    ``seed`` and ``part``; MNIST's static binarisation)."""
    entropy = [int(seed) % 2**64, 0xB1, int(part == "test")]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    u = rng.random(images.shape, dtype=np.float32)
    grey = images.astype(np.float32) / np.float32(255.0)
    return (u < grey).astype(np.uint8)


class ImageDataset(Dataset):
    """Images and integer labels held in memory.

    Attributes:
        images: ``(N, C, H, W)`` tensor; float32 in [0, 1] for the ``grey``, ``static`` and
            ``dynamic`` variants (for ``dynamic`` these are the grey levels), int64 in
            0..255 for ``levels``.
        labels: int64 ``(N,)``.
        variant: one of ``grey``, ``static``, ``dynamic``, ``levels``.
        transform: optional function applied to image batches (and single images) after
            dynamic binarisation, e.g. ``lambda x: 2 * x - 1``.

    For ``dynamic``, every access (``__getitem__`` or :meth:`get_batch`) returns a fresh
    Bernoulli draw from the grey levels using torch's global RNG (so a trainer that restores
    the RNG state reproduces the draws exactly).
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        variant: str = "grey",
        transform: Callable[[Tensor], Tensor] | None = None,
        name: str = "",
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if not isinstance(images, Tensor) or images.dim() < 2:
            raise ValueError("images must be a tensor of shape (N, ...)")
        if not isinstance(labels, Tensor) or labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels must be a tensor of shape ({images.shape[0]},), got "
                f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels)}"
            )
        self.images = images
        self.labels = labels
        self.variant = variant
        self.transform = transform
        self.name = name

    @classmethod
    def from_pixels(
        cls,
        pixels: Tensor | np.ndarray,
        labels: Tensor | None = None,
        variant: str = "grey",
        seed: int = 0,
        name: str = "",
        transform: Callable[[Tensor], Tensor] | None = None,
    ) -> ImageDataset:
        """A data set of ``variant`` from 8-bit images ``(N, C, H, W)`` (uint8), as the MNIST
        loader makes them: ``grey``/``dynamic`` float32 in [0, 1], ``static`` one seeded draw
        per pixel, ``levels`` int64 0..255. ``labels`` default to zeros."""
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        pixels = torch.as_tensor(pixels)
        if pixels.dtype != torch.uint8 or pixels.dim() != 4:
            raise ValueError(
                f"pixels must be uint8 images (N, C, H, W), got {pixels.dtype} "
                f"{tuple(pixels.shape)}"
            )
        if labels is None:
            labels = torch.zeros(pixels.shape[0], dtype=torch.long)
        if variant == "static":
            x = torch.from_numpy(binarise_pixels(pixels.numpy(), seed)).to(torch.float32)
        elif variant == "levels":
            x = pixels.to(torch.int64)
        else:
            x = pixels.to(torch.float32).div_(255.0)
        return cls(x, labels.to(torch.long), variant=variant, transform=transform, name=name)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def _finish(self, x: Tensor) -> Tensor:
        if self.variant == "dynamic":
            x = torch.bernoulli(x)
        if self.transform is not None:
            x = self.transform(x)
        return x

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self._finish(self.images[index]), self.labels[index]

    def get_batch(self, indices: Tensor | Sequence[int]) -> tuple[Tensor, Tensor]:
        """Return ``(images, labels)`` for ``indices`` with one gather (the fast path)."""
        idx = torch.as_tensor(indices, dtype=torch.long, device=self.images.device)
        return self._finish(self.images.index_select(0, idx)), self.labels.index_select(0, idx)

    def to(self, device: torch.device | str) -> ImageDataset:
        """Return a copy whose tensors live on ``device`` (e.g. the GPU, for faster batches)."""
        return ImageDataset(
            self.images.to(device), self.labels.to(device), self.variant, self.transform, self.name
        )

    def __repr__(self) -> str:
        return (
            f"ImageDataset({self.name or 'images'}, n={len(self)}, variant={self.variant!r}, "
            f"shape={tuple(self.images.shape[1:])}, dtype={self.images.dtype})"
        )


def _seed_from(*keys: int) -> int:
    """A well-mixed 32-bit seed derived from integer keys (no collisions like seed+epoch)."""
    entropy = [int(k) % 2**64 for k in keys]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint32)[0])


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of ``range(n)`` for ``epoch``: a pure function of (seed, epoch)."""
    g = torch.Generator()
    g.manual_seed(_seed_from(seed, epoch, 0x5EED))
    return torch.randperm(n, generator=g)


class ShardedBatchSampler(Sampler[list[int]]):
    """Index batches for one epoch, optionally shuffled and sharded over ``world_size`` ranks.

    Equivalent to ``DistributedSampler`` + batching: the epoch order is
    :func:`epoch_permutation` ``(n, seed, epoch)``; with ``world_size > 1`` it is padded by
    wrapping around to a multiple of ``world_size`` (or truncated if ``drop_last``) and rank
    ``r`` takes positions ``r, r + world_size, ...``, then cuts its share into batches of
    ``batch_size``. Consequently the ``k``-th batches of all ranks together are exactly the
    ``k``-th batch of a single process using ``batch_size * world_size``: the global batch
    is ``world_size x batch_size``. ``pad=False`` (used for evaluation) gives every example
    exactly once, with possibly unequal shard sizes. Use as ``DataLoader(ds, batch_sampler=...)``.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank}, {world_size=}")
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size, self.pad = drop_last, rank, world_size, pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order is produced (as ``DistributedSampler.set_epoch``)."""
        self.epoch = int(epoch)

    def shard_indices(self) -> Tensor:
        """This rank's indices for the current epoch, in order."""
        if self.shuffle:
            order = epoch_permutation(self.n, self.seed, self.epoch)
        else:
            order = torch.arange(self.n)
        ws = self.world_size
        if ws > 1 and self.pad:
            if self.drop_last:
                order = order[: (self.n // ws) * ws]
            elif self.n % ws and self.n > 0:
                total = -(-self.n // ws) * ws
                reps = -(-total // self.n)
                order = order.repeat(reps)[:total]
        return order[self.rank :: ws]

    def batches(self) -> list[Tensor]:
        """This rank's index batches for the current epoch."""
        shard = self.shard_indices()
        out = list(shard.split(self.batch_size))
        if self.drop_last and out and len(out[-1]) < self.batch_size:
            out.pop()
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for b in self.batches():
            yield b.tolist()

    def __len__(self) -> int:
        return len(self.batches())


def fetch_batch(dataset: Any, indices: Tensor) -> Any:
    """Gather the examples ``indices`` of ``dataset`` into one batch.

    Fast paths: objects with a ``get_batch(indices)`` method (e.g. :class:`ImageDataset`),
    :class:`~torch.utils.data.TensorDataset`, and :class:`~torch.utils.data.Subset` of
    those. Anything else is collated from ``dataset[i]`` with ``default_collate`` (lists
    of fields become tuples).
    """
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    if isinstance(dataset, TensorDataset):
        return tuple(t[indices.to(t.device)] for t in dataset.tensors)
    if isinstance(dataset, Subset) and (
        hasattr(dataset.dataset, "get_batch")
        or isinstance(dataset.dataset, (TensorDataset, Subset))
    ):
        inner = torch.as_tensor(dataset.indices, dtype=torch.long)[indices]
        return fetch_batch(dataset.dataset, inner)
    batch = default_collate([dataset[i] for i in indices.tolist()])
    return tuple(batch) if isinstance(batch, list) else batch


class BatchLoader:
    """Iterate over mini-batches of an in-memory dataset, DataLoader-style but much faster.

    The order is a pure function of ``(seed, epoch)`` (see :class:`ShardedBatchSampler`), so
    iteration is reproducible and can resume at any batch (``start_batch``). With
    ``num_workers > 0`` (or for datasets without a fast path, if you prefer) batches are
    produced by a ``torch.utils.data.DataLoader`` driven by the same batch sampler.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        pad: bool = True,
    ) -> None:
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(
                f"dataset must be a map-style Dataset with __len__ and __getitem__, "
                f"got {type(dataset).__name__}"
            )
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.dataset = dataset
        self.sampler = ShardedBatchSampler(
            len(dataset), batch_size, shuffle, seed, drop_last, rank, world_size, pad
        )
        self.num_workers = num_workers
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch, and the batch to start from (to resume mid-epoch)."""
        self.sampler.set_epoch(epoch)
        self.start_batch = int(start_batch)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start_batch)

    def __iter__(self) -> Iterator[Any]:
        batches = self.sampler.batches()[self.start_batch :]
        if self.num_workers == 0:
            for idx in batches:
                yield fetch_batch(self.dataset, idx)
            return
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.num_workers,
            persistent_workers=False,
        )
        for batch in loader:
            yield tuple(batch) if isinstance(batch, list) else batch
