"""Class labels of the class-conditional models: one set of checks for every family.

A class-conditional VAE, GAN or RealNVP (``num_classes`` K >= 2) takes one class index in
``[0, K)`` per example: from the ``(images, labels)`` batch when it trains, as ``labels``
when it samples or scores. An unconditional model (K = 0) refuses labels. Every message
names the model (``who``) and says what it expected, in one line.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["batch_labels", "check_labels", "one_hot", "sampling_labels"]


def check_labels(
    labels: int | Tensor | None, n: int, num_classes: int, device: torch.device, who: str
) -> Tensor | None:
    """``n`` labels as int64 on ``device`` (an int: that class for all), or ``None`` for an
    unconditional model (``num_classes`` 0); a one-line ``ValueError`` for missing labels,
    labels given to an unconditional model, or labels of the wrong shape or out of range."""
    k = num_classes
    if not k:
        if labels is not None:
            raise ValueError(f"labels: this {who} is not class-conditional (num_classes=0)")
        return None
    if labels is None:
        raise ValueError(
            f"labels: this {who} is class-conditional (num_classes={k}); pass one class "
            "index per example"
        )
    if isinstance(labels, bool) or not isinstance(labels, (int, Tensor)):
        raise ValueError(f"labels must be an int or a tensor of class indices, got {labels!r}")
    if isinstance(labels, int):
        labels = torch.full((n,), labels, dtype=torch.long)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices, got {labels.dtype}")
    y = labels.to(device, torch.long)
    bad = y.shape != (n,) or bool(((y < 0) | (y >= k)).any())  # one device sync
    if bad:
        values = f"values in [{int(y.min())}, {int(y.max())}]" if y.numel() else "no values"
        raise ValueError(
            f"labels must be {n} class indices in [0, {k}), got shape {tuple(y.shape)} "
            f"with {values}"
        )
    return y


def sampling_labels(
    n: int,
    labels: int | Tensor | None,
    num_classes: int,
    device: torch.device,
    who: str,
    generator: torch.Generator | None = None,
) -> Tensor | None:
    """``n`` labels to sample with: ``None`` → uniform over the classes (drawn from
    ``generator`` on its device, else on ``device``), an int → that class, a tensor → as
    given; ``None`` for an unconditional model."""
    if num_classes and labels is None:
        dev = generator.device if generator is not None else device
        labels = torch.randint(num_classes, (n,), generator=generator, device=dev)
    return check_labels(labels, n, num_classes, device, who)


def batch_labels(
    batch: Any, n: int, num_classes: int, device: torch.device, who: str
) -> Tensor | None:
    """The labels of a training batch ``(images, labels, ...)`` for a class-conditional
    model (``None`` for an unconditional one, whatever the batch holds)."""
    if not num_classes:
        return None
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(
            f"a class-conditional {who} (num_classes={num_classes}) trains on "
            "(images, labels) batches; the data set yields images only"
        )
    return check_labels(batch[1], n, num_classes, device, who)


def one_hot(y: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """``(N, K)`` one-hot codes of checked labels ``y`` in ``dtype``."""
    return F.one_hot(y, num_classes).to(dtype)
