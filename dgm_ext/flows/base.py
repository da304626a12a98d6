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

The same module holds the pieces users compose flows from (after zuko's flow = transform +
base distribution):

* :class:`Transform`: an invertible map ``forward(x, context=None) -> (y, log|det ∂y/∂x|)``,
  ``inverse(y, context=None) -> (x, log|det ∂x/∂y|)``; conditional transforms read the
  ``context`` (one vector per example), the others ignore it. :class:`ComposedTransform`
  chains transforms (log-dets summed; inverse in reverse order), :class:`InverseTransform`
  (``t.inv``) swaps the two directions. The concrete transforms are collected in
  :mod:`dgm_ext.flows.transforms`.
* :class:`Distribution`: a base density with ``log_prob(z)`` and ``sample(n, temperature)``:
  :class:`StandardNormal` and the learnable :class:`DiagonalGaussian`.
* :class:`TransformedFlow`: ``Flow`` of a transform (data → base) and a base distribution,
  with ``log_prob``/``sample``/``sample_and_log_prob`` taking an optional ``context``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = [
    "ComposedTransform",
    "DiagonalGaussian",
    "Distribution",
    "Flow",
    "InverseTransform",
    "StandardNormal",
    "Transform",
    "TransformedFlow",
    "standard_normal_log_prob",
]

_LOG_2PI = math.log(2.0 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """``log N(z; 0, I)`` summed over every dimension but the first (batch) one."""
    if z.ndim < 1:
        raise ValueError("z must have a batch dimension, got a 0-d tensor")
    flat = z.reshape(z.shape[0], -1)
    return -0.5 * (flat * flat).sum(1) - 0.5 * flat.shape[1] * _LOG_2PI


def check_sample_args(n: int, temperature: float) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature)) or (
        temperature < 0
    ):
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")


def _event_shape(event_shape: tuple[int, ...] | int) -> tuple[int, ...]:
    shape = tuple(int(s) for s in ((event_shape,) if isinstance(event_shape, int) else event_shape))
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"event_shape must be a non-empty tuple of sizes >= 1, got {event_shape}")
    return shape


def expand_context(context: Tensor, n: int) -> Tensor:
    """``context`` as ``(n, F)`` rows: a vector ``(F,)`` (or one row ``(1, F)``) is shared by
    all ``n`` examples, ``(n, F)`` is used as given."""
    if not isinstance(context, Tensor) or context.ndim not in (1, 2):
        shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
        raise ValueError(f"context must be a tensor of shape (F,) or (N, F), got {shape}")
    if context.ndim == 1:
        context = context.unsqueeze(0)
    if context.shape[0] not in (1, n):
        raise ValueError(f"context has {context.shape[0]} rows but the input has {n} examples")
    return context.expand(n, context.shape[1])


# -- transforms ----------------------------------------------------------------------------
class Transform(nn.Module):
    """An invertible map ``x ↦ y`` with the log-determinant of its Jacobian per example.

    Subclasses implement :meth:`forward` and :meth:`inverse`; ``context`` (one vector per
    example, or one for all) is read by conditional transforms and ignored by the others, so
    a :class:`ComposedTransform` hands the same context to every member.
    """

    def forward(  # pragma: no cover - abstract
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(y, log|det ∂y/∂x|)``, the log-det of shape ``(N,)``."""
        raise NotImplementedError

    def inverse(  # pragma: no cover - abstract
        self, y: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(x, log|det ∂x/∂y|)``: the inverse map and its log-det (minus the forward one)."""
        raise NotImplementedError

    @property
    def inv(self) -> Transform:
        """This transform with its two directions swapped."""
        return InverseTransform(self)


class InverseTransform(Transform):
    """``transform`` run backwards: ``forward`` is ``transform.inverse`` and vice versa."""

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(f"transform must be a Transform, got {type(transform).__name__}")
        self.transform = transform

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform.inverse(x, context)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.transform(y, context)

    @property
    def inv(self) -> Transform:
        return self.transform


class ComposedTransform(Transform):
    """``transforms`` applied in order (``inverse``: in reverse order), log-dets summed.

    The members are submodules named ``0, 1, …`` (as in ``nn.ModuleList``, so a list of layers
    and their composition have the same state-dict keys); a member may itself be a
    composition. ``len``, indexing and iteration work as on a list.
    """

    def __init__(self, *transforms: Transform) -> None:
        super().__init__()
        for i, t in enumerate(transforms):
            if not isinstance(t, Transform):
                raise TypeError(f"transforms[{i}] must be a Transform, got {type(t).__name__}")
            self.add_module(str(i), t)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Transform]:
        return iter(self._modules.values())  # type: ignore[arg-type]

    def __getitem__(self, index: int | slice) -> Transform:
        members = list(self._modules.values())
        if isinstance(index, slice):
            return ComposedTransform(*members[index])
        return members[index]  # type: ignore[return-value]

    @staticmethod
    def _chain(
        members: Iterator[Transform], x: Tensor, context: Tensor | None, reverse: bool
    ) -> tuple[Tensor, Tensor]:
        logdet = None
        for t in members:
            x, ld = t.inverse(x, context) if reverse else t(x, context)
            logdet = ld if logdet is None else logdet + ld
        return x, x.new_zeros(x.shape[0]) if logdet is None else logdet

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._chain(iter(self), x, context, reverse=False)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self._chain(reversed(list(self)), y, context, reverse=True)


# -- base distributions --------------------------------------------------------------------
class Distribution(nn.Module):
    """A base density on examples of shape ``event_shape``: :meth:`log_prob` (summed over the
    event, one value per example) and :meth:`sample`. It follows ``.to()``/``.double()`` of
    the module holding it (a zero-size buffer records its device and dtype)."""

    def __init__(self, event_shape: tuple[int, ...] | int) -> None:
        super().__init__()
        self.event_shape = _event_shape(event_shape)
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)

    def _like(self) -> tuple[torch.device, torch.dtype]:
        return self._anchor.device, self._anchor.dtype

    def log_prob(self, z: Tensor) -> Tensor:  # pragma: no cover - abstract
        """``log p(z)`` per example, ``z`` of shape ``(N, *event_shape)``."""
        raise NotImplementedError

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:  # pragma: no cover
        """``n`` draws, shape ``(n, *event_shape)``; ``temperature`` scales the spread."""
        raise NotImplementedError


class StandardNormal(Distribution):
    """``N(0, I)`` on ``event_shape`` (the base of every :class:`Flow`)."""

    def log_prob(self, z: Tensor) -> Tensor:
        return standard_normal_log_prob(z)

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` draws of ``N(0, temperature² I)``."""
        check_sample_args(n, temperature)
        device, dtype = self._like()
        return torch.randn(n, *self.event_shape, device=device, dtype=dtype) * temperature


class DiagonalGaussian(Distribution):
    """``N(loc, diag(exp(2·log_scale)))`` with learnable ``loc`` and ``log_scale`` (each of
    ``event_shape``; starting at 0, i.e. at ``N(0, I)``)."""

    def __init__(self, event_shape: tuple[int, ...] | int) -> None:
        super().__init__(event_shape)
        self.loc = nn.Parameter(torch.zeros(self.event_shape))
        self.log_scale = nn.Parameter(torch.zeros(self.event_shape))

    def _like(self) -> tuple[torch.device, torch.dtype]:
        return self.loc.device, self.loc.dtype

    def log_prob(self, z: Tensor) -> Tensor:
        eps = (z - self.loc) * torch.exp(-self.log_scale)
        lp = -0.5 * eps * eps - self.log_scale - 0.5 * _LOG_2PI
        return lp.reshape(z.shape[0], -1).sum(1)

    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``loc + temperature · exp(log_scale) · ε``, ``ε ~ N(0, I)``."""
        check_sample_args(n, temperature)
        device, dtype = self._like()
        eps = torch.randn(n, *self.event_shape, device=device, dtype=dtype)
        return self.loc + (temperature * torch.exp(self.log_scale)) * eps


class Flow(nn.Module):
    """Base class of the normalizing flows: a bijection data ↔ N(0, I) base.

    ``event_shape``: the shape of one example (``(2,)`` for 2-D toy data, ``(C, H, W)`` for
    images). Subclasses implement :meth:`forward` (data → base) and :meth:`inverse`
    (base → data), both returning the per-example log-determinant of their own Jacobian.
    """

    def __init__(self, event_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.event_shape = _event_shape(event_shape)

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
        check_sample_args(n, temperature)
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


class TransformedFlow(Flow):
    """The flow of a :class:`Transform` (data → base) and a base :class:`Distribution`:
    ``log q(x | c) = log p(t(x, c)) + log|det ∂t/∂x|``, samples ``t⁻¹(z, c)``, ``z ~ p``.

    ``context`` (optional): one vector per example or one shared by all, handed to every
    member of ``transform``. E.g. ``TransformedFlow(ComposedTransform(PlanarTransform(2),
    PlanarTransform(2)), DiagonalGaussian((2,)))``.
    """

    def __init__(self, transform: Transform, base: Distribution) -> None:
        if not isinstance(transform, Transform):
            raise TypeError(f"transform must be a Transform, got {type(transform).__name__}")
        if not isinstance(base, Distribution):
            raise TypeError(f"base must be a Distribution, got {type(base).__name__}")
        super().__init__(base.event_shape)
        self.transform = transform
        self.base = base

    def _like(self) -> tuple[torch.device, torch.dtype]:
        return self.base._like()

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Data → base: ``(z, log|det ∂z/∂x|)``."""
        return self.transform(x, context)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Base → data: ``(x, log|det ∂x/∂z|)``."""
        return self.transform.inverse(z, context)

    def base_sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """``n`` draws of the base distribution at ``temperature``."""
        return self.base.sample(n, temperature)

    def log_prob(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """``log q(x | context)`` per example, in nats."""
        self.check_input(x)
        z, logdet = self.forward(x, context)
        return self.base.log_prob(z) + logdet

    def sample(self, n: int, temperature: float = 1.0, context: Tensor | None = None) -> Tensor:
        """``n`` samples (``context``: ``(F,)`` for all of them or ``(n, F)``, one each)."""
        x, _ = self.inverse(self.base.sample(n, temperature), context)
        return x

    def sample_and_log_prob(self, n: int, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``n`` samples and their ``log q(x | context)`` from one pass through ``inverse``."""
        z = self.base.sample(n)
        x, logdet = self.inverse(z, context)
        return x, self.base.log_prob(z) - logdet
