"""Where the Trainer's batches come from.

A map-style data set (``__len__``/``__getitem__``: :class:`dgm_ext.data.ImageDataset`,
``TensorDataset``, your own) is batched by :class:`dgm_ext.data.dataset.BatchLoader`: the
order is a function of ``(seed, epoch)``, every rank gets its shard, and a run resumes at the
exact batch. A ``torch.utils.data.DataLoader``, an ``IterableDataset`` or any other iterable
is used as given (:class:`IterableBatches`): one pass is one epoch; an ``IterableDataset`` of
examples is batched by a ``DataLoader`` with ``config.batch_size`` and ``config.num_workers``.
The sampler's ``set_epoch`` (``DistributedSampler``) is called each epoch, and a run resumed
mid-epoch skips the batches already trained on, which reproduces the interrupted epoch
exactly when the loader's order is a function of the epoch (no shuffling, or a sampler with
``set_epoch``). Under DDP each rank iterates its own loader as given: shard it (e.g. a
``DistributedSampler``) and give every rank the same number of batches.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import torch

from dgm_ext.data.dataset import BatchLoader

from .config import TrainerConfig

__all__ = ["IterableBatches", "is_map_style", "make_loader"]

log = logging.getLogger("dgm_ext.train")


def is_map_style(data: Any) -> bool:
    """True for data sets the Trainer batches itself (``__len__`` and ``__getitem__``, and not
    a ``DataLoader`` or ``IterableDataset``)."""
    if isinstance(data, torch.utils.data.DataLoader | torch.utils.data.IterableDataset):
        return False
    return hasattr(data, "__len__") and hasattr(data, "__getitem__")


class IterableBatches:
    """Batches of a user's loader or iterable, one pass per epoch (see the module docstring).

    ``num_batches`` is the loader's length when it has one, else ``None``."""

    def __init__(self, data: Any, config: TrainerConfig, name: str = "train_set") -> None:
        if isinstance(data, torch.utils.data.IterableDataset):
            data = torch.utils.data.DataLoader(
                data, batch_size=config.batch_size, num_workers=config.num_workers
            )
        if not isinstance(data, Iterable) or isinstance(data, str | bytes | torch.Tensor):
            raise TypeError(
                f"{name} must be a map-style Dataset, a DataLoader, an IterableDataset or an "
                f"iterable of batches, got {type(data).__name__}"
            )
        self.data = data
        self.name = name
        self.start_batch = 0
        try:
            self.num_batches: int | None = len(data)
        except TypeError:  # an iterable without a length (e.g. an IterableDataset's loader)
            self.num_batches = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch (the sampler's ``set_epoch``, when it has one) and the batch to
        start from."""
        for attr in ("sampler", "batch_sampler"):
            set_epoch = getattr(getattr(self.data, attr, None), "set_epoch", None)
            if callable(set_epoch):
                set_epoch(epoch)
        self.start_batch = int(start_batch)

    def __iter__(self) -> Iterator[Any]:
        it = iter(self.data)
        if self.start_batch:
            skipped = sum(1 for _ in itertools.islice(it, self.start_batch))
            if skipped < self.start_batch:
                raise ValueError(
                    f"{self.name} yielded {skipped} batches this epoch; the run being resumed "
                    f"had trained on {self.start_batch} of it: the data changed"
                )
        for batch in it:
            yield tuple(batch) if isinstance(batch, list) else batch


def make_loader(
    data: Any, config: TrainerConfig, rank: int, world_size: int, *, train: bool
) -> BatchLoader | IterableBatches:
    """The batches of ``data`` for training (``train=True``: shuffled, padded shards) or
    validation (in order, no padding)."""
    name = "train_set" if train else "val_set"
    if not is_map_style(data):
        if world_size > 1 and train:
            log.info("%s is a loader or iterable: each of the %d ranks iterates it as given "
                     "(shard it, e.g. with a DistributedSampler)", name, world_size)  # fmt: skip
        return IterableBatches(data, config, name)
    if train:
        return BatchLoader(data, config.batch_size, shuffle=True, seed=config.seed,
                           drop_last=config.drop_last, rank=rank, world_size=world_size,
                           num_workers=config.num_workers)  # fmt: skip
    return BatchLoader(data, config.val_batch_size or config.batch_size, shuffle=False,
                       rank=rank, world_size=world_size, num_workers=config.num_workers,
                       pad=False)  # fmt: skip
