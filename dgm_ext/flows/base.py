"""The flow API shared by every flow of the library (planar now, RealNVP later).

A :class:`Flow` is an invertible map between data ``x`` and a standard-normal base ``z``:

* ``forward(x) -> (z, logdet)``: data to base, ``logdet = log|det ∂z/∂x|`` per example;
* ``inverse(z) -> (x, logdet)``: base to data, ``logdet = log|det ∂x/∂z|`` per example.

From these two the base class derives ``log_prob(x) = log N(z; 0, I) + log|det ∂z/∂x|``,
``sample(n, temperature)`` (``z ~ N(0, T² I)`` pushed through ``inverse``) and
``sample_and_log_prob(n)`` (one pass through ``inverse``: ``log q(x) = log N(z) − log|det
∂x/∂z|``). A subclass implements ``forward`` and ``inverse`` over examples of shape
``event_shape`` (leading dimension = batch); which of the two is the cheap direction is
the subclass's business (a planar stack is explicit one way and solved numerically the
other; RealNVP is explicit both ways).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["Flow", "standard_normal_log_prob"]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over every dimension but the first (batch) one."""
    if z.ndim < 1:
        raise ValueError("z must have a batch dimension, got a 0-d tensor")
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * (flat * flat).sum(1) - 0.5 * flat.shape[1] * _LOG_2PI


class Flow(nn.Module):
    """Base class of the normalizing flows: a bijection data ↔ N(0, I) base.

    ``event_shape``: the shape of one example (``(2,)`` for 2-D toy data, ``(C, H, W)`` for
    images). Subclasses implement :meth:`forward` (data → base) and :meth:`inverse`
    (base → data), both returning the per-example log-determinant of their own Jacobian.
    """

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        shape = tuple(int(s) for s in event_shape)
        if not shape or any(s < 1 for s in shape):
            raise ValueError(
                f"event_shape must be a non-empty tuple of sizes >= 1, got {event_shape}"
            )
        self.event_shape = shape

    # -- the two directions (subclasses) -------------------------------------------------
    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """Data → base: ``(z, log|det ∂z/∂x|)``; ``x`` of shape ``(N, *event_shape)``."""
        raise NotImplementedError

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:  # pragma: no cover - abstract
        """Base → data: ``(x, log|det ∂x/∂z|)``; ``z`` of shape ``(N, *event_shape)``."""
        raise NotImplementedError

    # -- derived ---------------------------------------------------------------------------
    def _like(self) -> tuple[torch.device, torch.dtype]:
        p = next(iter(self.parameters()), None)
        return (p.device, p.dtype) if p is not None else (torch.device("cpu"), torch.float32)

    def check_input(self, x: Tensor, name: str = "x") -> None:
        """Raise a ``ValueError``/``TypeError`` naming ``name`` unless ``x`` is a floating
        tensor of shape ``(N, *event_shape)``."""
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
        if x.ndim != len(self.event_shape) + 1 or tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"{name} must have shape (N, {', '.join(map(str, self.event_shape))}), "
                f"got {tuple(x.shape)}"
            )

    def base_sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` draws of ``N(0, temperature² I)`` on the flow's device and dtype."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or (
            temperature < 0
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        device, dtype = self._like()
        return torch.randn(n, *self.event_shape, device=device, dtype=dtype) * temperature

    def log_prob(self, x: Tensor) -> Tensor:
        """``log q(x)`` per example, in nats: ``log N(forward(x)) + log|det ∂z/∂x|``."""
        self.check_input(x)
        z, logdet = self.forward(x)
        return standard_normal_log_prob(z) + logdet

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` samples ``inverse(z)``, ``z ~ N(0, T² I)`` (``T = temperature``; 1 draws from
        the model, smaller values concentrate on its modes)."""
        x, _ = self.inverse(self.base_sample(n, temperature))
        return x

    def sample_and_log_prob(self, n: int) -> tuple[Tensor, Tensor]:
        """``n`` samples of the model and their ``log q(x)`` from the same pass:
        ``log q(x) = log N(z) − log|det ∂x/∂z|`` (differentiable, for reverse-KL fits)."""
        z = self.base_sample(n)
        x, logdet = self.inverse(z)
        return x, standard_normal_log_prob(z) - logdet
