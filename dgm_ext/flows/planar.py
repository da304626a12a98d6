"""Planar flows (Rezende & Mohamed, 2015): ``f(z) = z + û tanh(w·z + b)``, stacked K times.

Each layer uses the invertibility-preserving ``û = u + (m(w·u) − w·u) w/‖w‖²`` with
``m(a) = −1 + softplus(a)`` (appendix A), so ``w·û > −1`` and the layer is a bijection of
ℝ^d. The stack runs on the fused op ``dgm_ext.ops.planar_flow`` (or its pure-PyTorch
reference, ``ops="reference"``) in the direction it is explicit; the other direction is the
numerical inverse :func:`planar_inverse`: for ``y = z + û tanh(a)``, ``a = w·z + b``, the
scalar ``a`` solves the monotone equation ``a + (w·û) tanh(a) = w·y + b`` (bracketed in
``w·y + b ± |w·û|``), found by batched Newton steps that fall back to bisection whenever they
leave the bracket, to ``tol`` (1e-6) in float64; then ``z = y − û tanh(a)``.

:class:`PlanarFlow` is a :class:`~dgm_ext.flows.base.Flow`. ``generative=False`` (maximum
likelihood on samples): the layers map data to the base, so ``log_prob`` is explicit and
``sample`` uses the numerical inverse. ``generative=True`` (reverse KL on densities): the
layers map base samples to data, so ``sample_and_log_prob`` is explicit and ``log_prob``
(density heat-maps) uses the numerical inverse.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor, nn

from dgm_ext.flows.base import Flow
from dgm_ext.ops import resolve_ops

__all__ = ["PlanarFlow", "planar_inverse", "planar_u_hat"]


def planar_u_hat(u: Tensor, w: Tensor) -> Tensor:
    """The invertibility-preserving û of each layer (last dim = data dim): ``w·û > −1``.

    ``û = u + (m(w·u) − w·u) w / ‖w‖²``, ``m(a) = −1 + softplus(a)``; ``w = 0`` gives û = u.
    In floating point ``−1 + softplus(a)`` rounds to exactly −1 (a folded, non-invertible
    layer) below ``a ≈ −17`` in float32, and ``w·û`` computed from û carries a rounding error
    of a few ``eps·‖w‖‖u‖``; so softplus is floored at ``8 eps (2 + ‖w‖‖u‖)``, which keeps the
    computed ``1 + w·û`` positive and changes nothing where ``softplus(a)`` is larger.
    """
    wu = (w * u).sum(-1, keepdim=True)
    eps = torch.finfo(wu.dtype).eps
    floor = (
        8.0
        * eps
        * (
            2.0
            + (
                torch.linalg.vector_norm(w, dim=-1, keepdim=True)
                * torch.linalg.vector_norm(u, dim=-1, keepdim=True)
            ).detach()
        )
    )
    m = -1.0 + torch.maximum(nn.functional.softplus(wu), floor)
    w_norm_sq = (w * w).sum(-1, keepdim=True).clamp_min(1e-12)
    return u + (m - wu) * w / w_norm_sq


def _solve_monotone(r: Tensor, c: Tensor, tol: float, max_iter: int) -> Tensor:
    """The root ``a`` of ``g(a) = a + c tanh(a) − r`` (``c > −1``: g increasing), batched over
    ``r``, without autograd. Safeguarded Newton (``rtsafe``): the bracket ``[r − |c|, r + |c|]``
    shrinks around the root at every iterate, and an element bisects instead whenever its
    Newton step would leave the bracket or would not be shorter than half its step before
    last (so Newton cannot cycle, as it does for large ``c``). Stops when every element's
    Newton correction ``|g/g'|`` is ``<= tol`` and returns the corrected point."""
    lo, hi = r - c.abs(), r + c.abs()
    a = (r - c * torch.tanh(r)).clamp(lo, hi)
    dx_old = hi - lo
    dx = dx_old
    for _ in range(max_iter):
        t = torch.tanh(a)
        g = a + c * t - r
        dg = 1.0 + c * (1.0 - t * t)
        newton = a - g / dg
        if a.numel() == 0 or float((newton - a).abs().max()) <= tol:
            return newton.clamp(torch.minimum(lo, hi), torch.maximum(lo, hi))
        above = g > 0
        hi = torch.where(above, a, hi)
        lo = torch.where(above | (g == 0), lo, a)
        bisect = (newton < lo) | (newton > hi) | ~torch.isfinite(newton)
        bisect |= (2.0 * g).abs() > (dx_old * dg).abs()
        new = torch.where(bisect, 0.5 * (lo + hi), newton)
        dx_old, dx = dx, (new - a).abs()
        a = new
    raise RuntimeError(
        f"planar inverse: the Newton/bisection solve did not reach tol={tol} in {max_iter} "
        "iterations"
    )


def planar_inverse(
    y: Tensor,
    u_hat: Tensor,
    w: Tensor,
    b: Tensor,
    tol: float = 1e-6,
    max_iter: int = 100,
) -> tuple[Tensor, Tensor]:
    """Invert K planar layers ``z ← z + û_k tanh(w_k·z + b_k)`` (applied in order k = 1..K).

    ``y`` (N, d), ``u_hat``/``w`` (K, d), ``b`` (K,), with ``w_k·û_k > −1``. Returns ``(z,
    logdet)``, ``logdet = log|det ∂z/∂y| = −Σ_k log(1 + (w_k·û_k) tanh'(a_k))`` per row. Solved
    in float64 and returned in ``y``'s dtype. Differentiable in all inputs: after the solve
    one Newton step from the (detached) root carries the implicit-function gradient
    ``∂a/∂θ = −(∂g/∂θ)/g'(a)``.
    """
    if u_hat.ndim != 2 or w.shape != u_hat.shape or b.shape != u_hat.shape[:1]:
        raise ValueError(
            f"u_hat, w must be (K, d) and b (K,), got {tuple(u_hat.shape)}, {tuple(w.shape)}, "
            f"{tuple(b.shape)}"
        )
    if y.ndim != 2 or y.shape[1] != u_hat.shape[1]:
        raise ValueError(f"y must be (N, {u_hat.shape[1]}), got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y: the planar inverse needs finite inputs (got inf or nan)")
    z = y.double()
    uh, ww, bb = u_hat.double(), w.double(), b.double()
    c = (ww * uh).sum(-1)
    if bool((c.detach() <= -1).any()):
        raise ValueError("u_hat: every layer needs w·û > −1 to be invertible (use planar_u_hat)")
    logdet = z.new_zeros(z.shape[0])
    for k in range(uh.shape[0] - 1, -1, -1):
        r = z @ ww[k] + bb[k]
        with torch.no_grad():
            a0 = _solve_monotone(r.detach(), c[k].detach(), tol, max_iter)
        t0 = torch.tanh(a0)
        a = a0 - (a0 + c[k] * t0 - r) / (1.0 + c[k] * (1.0 - t0 * t0))
        t = torch.tanh(a)
        logdet = logdet - torch.log1p(c[k] * (1.0 - t * t))
        z = z - t.unsqueeze(-1) * uh[k]
    return z.to(y.dtype), logdet.to(y.dtype)


class PlanarFlow(Flow):
    """K planar layers with û on the fused op, and their numerical inverse.

    ``dim``: data dimension; ``length``: K >= 1; ``generative``: False (default) when the
    layers map data → base (maximum likelihood), True when they map base → data (reverse KL);
    ``ops``: ``"fused"`` (``dgm_ext.ops``), ``"reference"`` or an op module; ``init_scale``:
    u, w ~ N(0, init_scale²), b = 0 (SPEC §3: 0.01); ``tol``: tolerance of the inverse.
    """

    def __init__(
        self,
        dim: int = 2,
        length: int = 1,
        generative: bool = False,
        ops: ModuleType | str | None = "fused",
        init_scale: float = 0.01,
        tol: float = 1e-6,
    ) -> None:
        for name, v in (("dim", dim), ("length", length)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not (init_scale >= 0):
            raise ValueError(f"init_scale must be >= 0, got {init_scale!r}")
        if not (tol > 0):
            raise ValueError(f"tol must be > 0, got {tol!r}")
        super().__init__((dim,))
        self.dim, self.length, self.generative, self.tol = dim, length, bool(generative), tol
        self.ops = resolve_ops(ops)
        self.u = nn.Parameter(torch.randn(length, dim) * init_scale)
        self.w = nn.Parameter(torch.randn(length, dim) * init_scale)
        self.b = nn.Parameter(torch.zeros(length))

    @classmethod
    def from_parameters(
        cls, u: Tensor, w: Tensor, b: Tensor, generative: bool = True, **kwargs
    ) -> PlanarFlow:
        """A flow with the given raw ``u``, ``w`` (K, d) and ``b`` (K,) (û is still applied)."""
        u, w, b = (torch.as_tensor(t, dtype=torch.get_default_dtype()) for t in (u, w, b))
        if u.ndim != 2 or w.shape != u.shape or b.shape != u.shape[:1]:
            raise ValueError(
                f"u, w must be (K, d) and b (K,), got {tuple(u.shape)}, {tuple(w.shape)}, "
                f"{tuple(b.shape)}"
            )
        flow = cls(u.shape[1], u.shape[0], generative=generative, **kwargs)
        with torch.no_grad():
            flow.u.copy_(u), flow.w.copy_(w), flow.b.copy_(b)
        return flow

    def extra_repr(self) -> str:
        ops = getattr(self.ops, "__name__", str(self.ops))
        return f"dim={self.dim}, length={self.length}, generative={self.generative}, ops={ops}"

    def u_hat(self) -> Tensor:
        """û of every layer, (K, d)."""
        return planar_u_hat(self.u, self.w)

    def _check(self, x: Tensor, name: str) -> None:
        self.check_input(x, name)
        if x.dtype != self.u.dtype:
            raise TypeError(
                f"{name} has dtype {x.dtype} but the flow's parameters are {self.u.dtype}; "
                f"convert one of them (e.g. flow.to({x.dtype}))"
            )
        if x.device != self.u.device:
            raise ValueError(
                f"{name} is on {x.device} but the flow's parameters are on {self.u.device}"
            )

    def transform(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """The layers in order, on the op backend: ``(z_K, log|det ∂z_K/∂z|)``."""
        return self.ops.planar_flow(z.contiguous(), self.u_hat(), self.w, self.b)

    def untransform(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """The numerical inverse of :meth:`transform`: ``(z, log|det ∂z/∂y|)``."""
        return planar_inverse(y, self.u_hat(), self.w, self.b, tol=self.tol)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data → base: ``(z, log|det ∂z/∂x|)``."""
        self._check(x, "x")
        return self.untransform(x) if self.generative else self.transform(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Base → data: ``(x, log|det ∂x/∂z|)``."""
        self._check(z, "z")
        return self.transform(z) if self.generative else self.untransform(z)
