"""Composable transforms: the pieces flows are built from (a flow = base distribution +
transform, as in zuko).

Every transform is a :class:`Transform` (an ``nn.Module``) with

* ``forward(x, context=None) -> (y, logdet)``, ``logdet = log|det ∂y/∂x|`` per example (N,);
* ``inverse(y, context=None) -> (x, logdet)``, ``logdet = log|det ∂x/∂y|`` (minus the forward
  one at the same point).

Conditional transforms read ``context`` (``(N, F)``, or ``(F,)`` shared by all examples); the
others ignore it. :class:`ComposedTransform` chains transforms (nested compositions too),
``t.inv`` (:class:`InverseTransform`) swaps the directions, and
:class:`~dgm_ext.flows.base.TransformedFlow` turns a transform (data → base) and a base
distribution (:class:`~dgm_ext.flows.base.StandardNormal`,
:class:`~dgm_ext.flows.base.DiagonalGaussian`) into a :class:`~dgm_ext.flows.base.Flow`.

The transforms, each on the library's existing code (no second copy of the math):

* :class:`PlanarTransform`: K planar layers on the fused ``planar_flow`` op, numerical inverse
  (:func:`~dgm_ext.flows.planar.planar_inverse`);
* :class:`ConditionalPlanarTransform`: per-example planar layers from a context (fused
  ``planar_flow_rows``; the amortised VAE posterior's flow);
* :class:`AffineCouplingTransform` (= :class:`~dgm_ext.flows.coupling.AffineCoupling`): the
  fused ``affine_coupling`` op with masks and coupling nets, conditional when the net is built
  with ``context_dim``;
* :class:`SqueezeTransform`: space-to-depth (log-det 0);
* :class:`FactorOutTransform`: the multi-scale factor-out: the first half of the channels
  passes unchanged (straight to the base), the second half goes through an inner transform;
* :class:`PermutationTransform`: a fixed permutation of the features (dim 1; log-det 0);
* :class:`LogitTransform`: the logit front end of the image flows on dequantised pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from dgm_ext.flows.base import ComposedTransform, InverseTransform, Transform
from dgm_ext.flows.coupling import AffineCoupling, squeeze, unsqueeze
from dgm_ext.flows.image import LogitTransform
from dgm_ext.flows.planar import ConditionalPlanarTransform, PlanarTransform

__all__ = [
    "AffineCouplingTransform",
    "ComposedTransform",
    "ConditionalPlanarTransform",
    "FactorOutTransform",
    "InverseTransform",
    "LogitTransform",
    "PermutationTransform",
    "PlanarTransform",
    "SqueezeTransform",
    "Transform",
]

#: The affine coupling is itself a :class:`Transform` (see :mod:`dgm_ext.flows.coupling`).
AffineCouplingTransform = AffineCoupling


class SqueezeTransform(Transform):
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)`` (:func:`~dgm_ext.flows.coupling.squeeze`), a
    permutation of the entries: log-det 0 both ways."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return squeeze(x), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return unsqueeze(y), y.new_zeros(y.shape[0])


class FactorOutTransform(Transform):
    """Dinh et al.'s factor-out: of ``x`` split in two along dim 1 (``torch.chunk``), the
    first half passes unchanged (in a multi-scale flow it has reached the base) and the second
    goes through ``transform``; the two are concatenated again, so the output has ``x``'s
    shape. Log-det: ``transform``'s (the context goes to it)."""

    def __init__(self, transform: Transform) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(f"transform must be a Transform, got {type(transform).__name__}")
        self.transform = transform

    @staticmethod
    def _split(x: Tensor) -> tuple[Tensor, Tensor]:
        if x.ndim < 2 or x.shape[1] < 2 or x.shape[1] % 2:
            raise ValueError(f"x must have an even size >= 2 in dim 1, got {tuple(x.shape)}")
        out, rest = x.chunk(2, dim=1)
        return out, rest

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, rest = self._split(x)
        rest, logdet = self.transform(rest, context)
        return torch.cat([out, rest], dim=1), logdet

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out, rest = self._split(y)
        rest, logdet = self.transform.inverse(rest, context)
        return torch.cat([out, rest], dim=1), logdet


class PermutationTransform(Transform):
    """A fixed permutation of dim 1 (the features of ``(N, D)``, the channels of images):
    ``y[:, i] = x[:, perm[i]]``, log-det 0. ``perm`` is saved in the state dict.
    :meth:`reversal` gives the order reversal used between couplings."""

    def __init__(self, perm: Sequence[int] | Tensor) -> None:
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if perm.ndim != 1 or not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError(f"perm must be a permutation of 0..n-1, got {perm.tolist()}")
        self.register_buffer("perm", perm)

    @classmethod
    def reversal(cls, features: int) -> PermutationTransform:
        """The permutation ``features − 1, …, 1, 0``."""
        return cls(torch.arange(features - 1, -1, -1))

    def _check(self, x: Tensor) -> None:
        if x.ndim < 2 or x.shape[1] != len(self.perm):
            raise ValueError(
                f"x must have {len(self.perm)} features in dim 1, got shape {tuple(x.shape)}"
            )

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(x)
        return x.index_select(1, self.perm), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        self._check(y)
        return y.index_select(1, torch.argsort(self.perm)), y.new_zeros(y.shape[0])
