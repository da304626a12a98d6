"""Evaluation of VAEs: ELBO over a data set and importance-sampled log p(x).

A class-conditional VAE is evaluated on the data set's labels: the numbers are then the ELBO
and log-likelihood of log p(x | y).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from dgm_ext.vae.model import VAE

__all__ = [
    "dataset_images",
    "dataset_labels",
    "evaluate_elbo",
    "evaluate_log_likelihood",
    "importance_log_likelihood",
]


def dataset_images(data: object, limit: int | None = None) -> Tensor:
    """The image tensor of a data set (``.images``), a tensor, or ``(images, labels)``."""
    if isinstance(data, Tensor):
        images = data
    elif isinstance(data, (tuple, list)) and data and isinstance(data[0], Tensor):
        images = data[0]
    elif hasattr(data, "images"):
        images = data.images
    else:
        raise TypeError(f"data must be a tensor or have an .images tensor, got {type(data)!r}")
    return images if limit is None else images[:limit]


def dataset_labels(data: object, limit: int | None = None) -> Tensor | None:
    """The labels of a data set (``.labels``) or of ``(images, labels)``; ``None`` if none."""
    labels = None
    if isinstance(data, (tuple, list)) and len(data) >= 2 and isinstance(data[1], Tensor):
        labels = data[1]
    elif isinstance(getattr(data, "labels", None), Tensor):
        labels = data.labels
    return labels if labels is None or limit is None else labels[:limit]


def _model_labels(model: VAE, data: object, limit: int | None) -> Tensor | None:
    """The data set's labels for a class-conditional VAE (``None`` for an unconditional one)."""
    if not model.num_classes:
        return None
    labels = dataset_labels(data, limit)
    if labels is None:
        raise ValueError(
            f"data: a class-conditional VAE (num_classes={model.num_classes}) is evaluated "
            "on log p(x | y) and needs the labels: pass (images, labels) or a data set with "
            ".labels"
        )
    return labels


def _rows(labels: Tensor | None, start: int, stop: int) -> Tensor | None:
    return None if labels is None else labels[start:stop]


@torch.no_grad()
def evaluate_elbo(
    model: VAE, data: object, batch_size: int = 500, limit: int | None = None
) -> dict[str, float]:
    """Mean ELBO, reconstruction log-likelihood, KL (nats/example) and bits/dim (of
    log p(x | y), on the data set's labels, for a class-conditional VAE)."""
    images = dataset_images(data, limit)
    if len(images) == 0:
        raise ValueError("data: empty data set")
    labels = _model_labels(model, data, limit)
    was_training = model.training
    model.eval()
    sums = {"elbo": 0.0, "rec": 0.0, "kl": 0.0}
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        t = model.elbo_terms(images[start:stop], labels=_rows(labels, start, stop))
        for k in sums:
            sums[k] += float(t[k].sum())
    model.train(was_training)
    out = {k: v / len(images) for k, v in sums.items()}
    out["bpd"] = float(model.bits_per_dim(-out["elbo"]))
    return out


@torch.no_grad()
def importance_log_likelihood(
    model: VAE,
    images: Tensor,
    k: int = 200,
    max_elements: int = 2**24,
    labels: int | Tensor | None = None,
) -> Tensor:
    """log p(x) ≈ logsumexp_k(log w_k) − log K for each image, shape ``(B,)`` (log p(x | y)
    for a class-conditional VAE, which needs the images' ``labels``).

    Samples are drawn in chunks so that at most about ``max_elements`` decoder outputs
    are alive at a time (memory-bounded); the combination is exact (logsumexp over all K).
    """
    if k < 1:
        raise ValueError(f"k (number of importance samples) must be >= 1, got {k}")
    y = model.check_labels(labels, images.shape[0])
    x = model.prepare(images)
    per_sample = x.shape[0] * model.num_pixels * model.likelihood.n_params
    chunk = max(1, min(k, max_elements // max(per_sample, 1)))
    log_w = []
    done = 0
    while done < k:
        s = min(chunk, k - done)
        # unconditional: the call of earlier versions (overrides without labels keep working)
        kw = {} if y is None else {"labels": y}
        log_w.append(model.log_weights(images, s, x=x, **kw))
        done += s
    return torch.logsumexp(torch.cat(log_w, 0), dim=0) - math.log(k)


@torch.no_grad()
def evaluate_log_likelihood(
    model: VAE,
    data: object,
    k: int = 200,
    batch_size: int = 100,
    limit: int | None = None,
    max_elements: int = 2**24,
) -> dict[str, float]:
    """Mean importance-sampled log p(x) (nats/example), its standard error and bits/dim
    (log p(x | y), on the data set's labels, for a class-conditional VAE)."""
    images = dataset_images(data, limit)
    if len(images) == 0:
        raise ValueError("data: empty data set")
    labels = _model_labels(model, data, limit)
    was_training = model.training
    model.eval()
    values = []
    for start in range(0, len(images), batch_size):
        stop = start + batch_size
        values.append(
            importance_log_likelihood(
                model, images[start:stop], k, max_elements, labels=_rows(labels, start, stop)
            )
        )
    model.train(was_training)
    ll = torch.cat(values).double()
    return {
        "log_px": float(ll.mean()),
        "log_px_se": float(ll.std() / math.sqrt(len(ll))) if len(ll) > 1 else 0.0,
        "bpd": float(model.bits_per_dim(-float(ll.mean()))),
        "k": k,
        "n": len(ll),
    }
