"""Planar flows (Rezende & Mohamed, 2015): ``f(z) = z + û tanh(w·z + b)``, stacked K times.

Each layer uses the invertibility-preserving ``û = u + (m(w·u) − w·u) w/‖w‖²`` with
``m(a) = −1 + softplus(a)`` (appendix A), so ``w·û > −1`` and the layer is a bijection of
ℝ^d. The stack runs on the fused op ``dgm_ext.ops.planar_flow`` (or its pure-PyTorch
reference, ``ops="reference"``) in the direction it is explicit; the other direction is the
numerical inverse :func:`planar_inverse`: for ``y = z + û tanh(a)``, ``a = w·z + b``, the
scalar ``a`` solves the monotone equation ``a + (w·û) tanh(a) = w·y + b`` (bracketed in
``w·y + b ± |w·û|``), found by batched Newton steps that fall back to bisection whenever they
leave the bracket, to ``tol`` (1e-6) in float64; then ``z = y − û tanh(a)``.

:class:`PlanarTransform` is the stack as a :class:`~dgm_ext.flows.base.Transform` (forward:
the fused op, inverse: numerical). :class:`ConditionalPlanarTransform` is its conditional form:
a small network maps a context vector to per-example ``(u, w, b)``, applied with
``ops.planar_flow_rows`` (:func:`planar_flow_amortized`, also the amortised VAE posterior's
flow, :class:`dgm_ext.vae.PlanarPosterior`).

:class:`PlanarFlow` is a :class:`~dgm_ext.flows.base.Flow` built on a :class:`PlanarTransform`
(``flow.layers``; its state-dict keys stay ``u``, ``w``, ``b``). ``generative=False``
(maximum likelihood on samples): the layers map data to the base, so ``log_prob`` is
explicit and ``sample`` uses the numerical inverse. ``generative=True`` (reverse KL on
densities): the layers map base samples to data, so ``sample_and_log_prob`` is explicit and
``log_prob`` (density heat-maps) uses the numerical inverse.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from dgm_ext.flows.base import Flow, Transform, expand_context
from dgm_ext.ops import resolve_ops

__all__ = [
    "ConditionalPlanarTransform",
    "PlanarFlow",
    "PlanarTransform",
    "planar_flow_amortized",
    "planar_head",
    "planar_inverse",
    "planar_u_hat",
    "split_planar_params",
]


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

    ``y`` (N, d), ``u_hat``/``w`` (K, d), ``b`` (K,), with ``w_k·û_k > −1``; or per-row layers
    (those of ``ops.planar_flow_rows``): ``u_hat``/``w`` (N, K, d), ``b`` (N, K). Returns ``(z,
    logdet)``, ``logdet = log|det ∂z/∂y| = −Σ_k log(1 + (w_k·û_k) tanh'(a_k))`` per row. Solved
    in float64 and returned in ``y``'s dtype. Differentiable in all inputs: after the solve
    one Newton step from the (detached) root carries the implicit-function gradient
    ``∂a/∂θ = −(∂g/∂θ)/g'(a)``.
    """
    rows = u_hat.ndim == 3
    if rows:
        if w.shape != u_hat.shape or b.shape != u_hat.shape[:2] or y.shape[:1] != b.shape[:1]:
            raise ValueError(
                f"per-row u_hat, w must be (N, K, d) and b (N, K) for y (N, d), got "
                f"{tuple(u_hat.shape)}, {tuple(w.shape)}, {tuple(b.shape)}, y {tuple(y.shape)}"
            )
    elif u_hat.ndim != 2 or w.shape != u_hat.shape or b.shape != u_hat.shape[:1]:
        raise ValueError(
            f"u_hat, w must be (K, d) and b (K,), got {tuple(u_hat.shape)}, {tuple(w.shape)}, "
            f"{tuple(b.shape)}"
        )
    if y.ndim != 2 or y.shape[1] != u_hat.shape[-1]:
        raise ValueError(f"y must be (N, {u_hat.shape[-1]}), got {tuple(y.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise ValueError("y: the planar inverse needs finite inputs (got inf or nan)")
    z = y.double()
    uh, ww, bb = u_hat.double(), w.double(), b.double()
    c = (ww * uh).sum(-1)
    if bool((c.detach() <= -1).any()):
        raise ValueError("u_hat: every layer needs w·û > −1 to be invertible (use planar_u_hat)")
    logdet = z.new_zeros(z.shape[0])
    for k in range(uh.shape[-2] - 1, -1, -1):
        if rows:
            uk, ck = uh[:, k], c[:, k]
            r = (z * ww[:, k]).sum(-1) + bb[:, k]
        else:
            uk, ck = uh[k], c[k]
            r = z @ ww[k] + bb[k]
        with torch.no_grad():
            a0 = _solve_monotone(r.detach(), ck.detach(), tol, max_iter)
        t0 = torch.tanh(a0)
        a = a0 - (a0 + ck * t0 - r) / (1.0 + ck * (1.0 - t0 * t0))
        t = torch.tanh(a)
        logdet = logdet - torch.log1p(ck * (1.0 - t * t))
        z = z - t.unsqueeze(-1) * uk
    return z.to(y.dtype), logdet.to(y.dtype)


def _check_planar_args(dim: int, length: int, init_scale: float, tol: float) -> None:
    for name, v in (("dim", dim), ("length", length)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    if not (init_scale >= 0):
        raise ValueError(f"init_scale must be >= 0, got {init_scale!r}")
    if not (tol > 0):
        raise ValueError(f"tol must be > 0, got {tol!r}")


class PlanarTransform(Transform):
    """K planar layers ``z ← z + û_k tanh(w_k·z + b_k)`` as a :class:`Transform`: ``forward``
    runs them in order on the op backend (``ops.planar_flow``, explicit log-det), ``inverse``
    is the numerical :func:`planar_inverse` (to ``tol``).

    ``dim``: data dimension; ``length``: K >= 1; ``ops``: ``"fused"``, ``"reference"`` or an
    op module; ``init_scale``: u, w ~ N(0, init_scale²), b = 0. The context is ignored.
    """

    def __init__(
        self,
        dim: int = 2,
        length: int = 1,
        ops: ModuleType | str | None = "fused",
        init_scale: float = 0.01,
        tol: float = 1e-6,
    ) -> None:
        _check_planar_args(dim, length, init_scale, tol)
        super().__init__()
        self.dim, self.length, self.tol = dim, length, tol
        self.ops = resolve_ops(ops)
        self.u = nn.Parameter(torch.randn(length, dim) * init_scale)
        self.w = nn.Parameter(torch.randn(length, dim) * init_scale)
        self.b = nn.Parameter(torch.zeros(length))

    def extra_repr(self) -> str:
        ops = getattr(self.ops, "__name__", str(self.ops))
        return f"dim={self.dim}, length={self.length}, ops={ops}"

    def u_hat(self) -> Tensor:
        """û of every layer, (K, d)."""
        return planar_u_hat(self.u, self.w)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The layers in order: ``(z_K, log|det ∂z_K/∂x|)``, ``x`` (N, d)."""
        return self.ops.planar_flow(x.contiguous(), self.u_hat(), self.w, self.b)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The numerical inverse: ``(x, log|det ∂x/∂y|)``."""
        return planar_inverse(y, self.u_hat(), self.w, self.b, tol=self.tol)


def planar_head(context_dim: int, length: int, dim: int) -> nn.Linear:
    """The linear map context → ``(u, w, b)`` of K = ``length`` planar layers on ℝ^``dim``
    (``length·(2·dim + 1)`` outputs), weights ~ N(0, 1e-3²) and zero bias, so the layers
    start near the identity."""
    head = nn.Linear(context_dim, length * (2 * dim + 1))
    nn.init.normal_(head.weight, std=1e-3)
    nn.init.zeros_(head.bias)
    return head


def split_planar_params(p: Tensor, length: int, dim: int) -> tuple[Tensor, Tensor, Tensor]:
    """Raw ``(u, w, b)`` from a vector ``p`` (*B, K(2d+1)) laid out ``[u (K·d), w (K·d),
    b (K)]``: u, w (*B, K, d) and b (*B, K)."""
    k, d = length, dim
    u = p[..., : k * d].unflatten(-1, (k, d))
    w = p[..., k * d : 2 * k * d].unflatten(-1, (k, d))
    b = p[..., 2 * k * d :]
    return u, w, b


def planar_flow_amortized(
    z: Tensor, u: Tensor, w: Tensor, b: Tensor, ops: ModuleType
) -> tuple[Tensor, Tensor]:
    """Per-example planar layers (raw ``u``, ``w`` (*B, K, d), ``b`` (*B, K); û applied here)
    on ``z`` (*S, *B, d): each example's layers apply to all its samples ``*S``, on
    ``ops.planar_flow_rows`` (parameters not expanded). Returns ``(z_K, logdet (*S, *B))``."""
    u_hat = planar_u_hat(u, w)
    k, d = u.shape[-2:]
    batch = tuple(u.shape[:-2])
    if z.dim() < len(batch) + 1 or tuple(z.shape[z.dim() - 1 - len(batch) : -1]) != batch:
        raise ValueError(
            f"z {tuple(z.shape)} must end with the batch shape {batch} of the parameters "
            f"(the context's) and the dimension {d}"
        )
    n = math.prod(batch)
    samples = z.shape[: z.dim() - 1 - len(batch)]
    zk, logdet = ops.planar_flow_rows(
        z.reshape(*samples, n, d),
        u_hat.reshape(n, k, d),
        w.reshape(n, k, d),
        b.reshape(n, k),
    )
    return zk.reshape(z.shape), logdet.reshape(z.shape[:-1])


class ConditionalPlanarTransform(Transform):
    """K planar layers whose ``(u, w, b)`` come from the context: ``net(context)`` gives
    ``length·(2·dim + 1)`` numbers per example (laid out as :func:`split_planar_params`
    reads them; default :func:`planar_head`, a linear map). ``forward`` runs the layers with
    ``ops.planar_flow_rows`` (:func:`planar_flow_amortized`); ``inverse`` is the numerical
    per-row :func:`planar_inverse`. ``forward(x, context)`` takes ``x`` (N, d) with
    ``context`` (N, F) or (F,), or ``x`` (*S, *B, d) with ``context`` (*B, F) (samples that
    share their example's layers, as in the amortised VAE posterior)."""

    def __init__(
        self,
        dim: int,
        length: int,
        context_dim: int,
        net: nn.Module | None = None,
        ops: ModuleType | str | None = "fused",
        tol: float = 1e-6,
    ) -> None:
        _check_planar_args(dim, length, 0.0, tol)
        if isinstance(context_dim, bool) or not isinstance(context_dim, int) or context_dim < 1:
            raise ValueError(f"context_dim must be an int >= 1, got {context_dim!r}")
        super().__init__()
        self.dim, self.length, self.context_dim, self.tol = dim, length, context_dim, tol
        self.ops = resolve_ops(ops)
        self.head = planar_head(context_dim, length, dim) if net is None else net

    def extra_repr(self) -> str:
        ops = getattr(self.ops, "__name__", str(self.ops))
        return f"dim={self.dim}, length={self.length}, context_dim={self.context_dim}, ops={ops}"

    def params(self, context: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Raw ``(u, w, b)`` per example: (*B, K, d), (*B, K, d), (*B, K)."""
        return split_planar_params(self.head(context), self.length, self.dim)

    def _context(self, x: Tensor, context: Tensor | None) -> Tensor:
        if context is None:
            raise ValueError("ConditionalPlanarTransform needs a context")
        if x.ndim == 2:  # (N, d): one context row per example, or one for all
            return expand_context(context, x.shape[0])
        return context

    def forward(
        self, x: Tensor, context: Tensor | None = None, ops: ModuleType | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(z_K, log|det ∂z_K/∂x|)``; ``ops`` overrides the transform's op backend."""
        u, w, b = self.params(self._context(x, context))
        return planar_flow_amortized(x, u, w, b, self.ops if ops is None else ops)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The numerical inverse, per row: ``(x, log|det ∂x/∂y|)``."""
        u, w, b = self.params(self._context(y, context))
        u_hat = planar_u_hat(u, w)
        k, d = u.shape[-2:]
        rows = y.shape[:-1]

        def flat(p: Tensor, tail: tuple[int, ...]) -> Tensor:
            return p.expand(*rows, *tail).reshape(-1, *tail)

        x, logdet = planar_inverse(
            y.reshape(-1, d), flat(u_hat, (k, d)), flat(w, (k, d)), flat(b, (k,)), tol=self.tol
        )
        return x.reshape(y.shape), logdet.reshape(rows)


_PLANAR_KEYS = ("u", "w", "b")


class PlanarFlow(Flow):
    """K planar layers with û on the fused op, and their numerical inverse: a
    :class:`PlanarTransform` (``self.layers``) between data and the N(0, I) base.

    ``dim``: data dimension; ``length``: K >= 1; ``generative``: False (default) when the
    layers map data → base (maximum likelihood), True when they map base → data (reverse KL);
    ``ops``: ``"fused"`` (``dgm_ext.ops``), ``"reference"`` or an op module; ``init_scale``:
    u, w ~ N(0, init_scale²), b = 0 (SPEC §3: 0.01); ``tol``: tolerance of the inverse.
    The state dict keeps the keys ``u``, ``w``, ``b`` of the files written before the layers
    became a transform (``layers.u`` etc. are renamed on save and on load).
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
        _check_planar_args(dim, length, init_scale, tol)
        super().__init__((dim,))
        self.generative = bool(generative)
        self.layers = PlanarTransform(dim, length, ops, init_scale, tol)
        self.register_state_dict_post_hook(_planar_keys_on_save)
        self.register_load_state_dict_pre_hook(_planar_keys_on_load)

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

    # the layers' settings and parameters, as attributes of the flow
    dim = property(lambda self: self.layers.dim, doc="Data dimension d.")
    length = property(lambda self: self.layers.length, doc="Number of layers K.")
    tol = property(lambda self: self.layers.tol, doc="Tolerance of the numerical inverse.")
    ops = property(lambda self: self.layers.ops, doc="The op backend module.")
    u = property(lambda self: self.layers.u, doc="Raw u of every layer, (K, d).")
    w = property(lambda self: self.layers.w, doc="w of every layer, (K, d).")
    b = property(lambda self: self.layers.b, doc="b of every layer, (K,).")

    def extra_repr(self) -> str:
        ops = getattr(self.ops, "__name__", str(self.ops))
        return f"dim={self.dim}, length={self.length}, generative={self.generative}, ops={ops}"

    def __repr__(self) -> str:
        # one line, as before the layers became a submodule: they hold only u, w, b
        return f"{type(self).__name__}({self.extra_repr()})"

    def u_hat(self) -> Tensor:
        """û of every layer, (K, d)."""
        return self.layers.u_hat()

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
        return self.layers(z)

    def untransform(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """The numerical inverse of :meth:`transform`: ``(z, log|det ∂z/∂y|)``."""
        return self.layers.inverse(y)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Data → base: ``(z, log|det ∂z/∂x|)``."""
        self._check(x, "x")
        return self.untransform(x) if self.generative else self.transform(x)

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Base → data: ``(x, log|det ∂x/∂z|)``."""
        self._check(z, "z")
        return self.transform(z) if self.generative else self.untransform(z)


def _planar_keys_on_save(module: nn.Module, state: dict, prefix: str, *args: Any) -> None:
    """``layers.u`` → ``u`` (and w, b), in place and in order."""
    renames = {prefix + "layers." + k: prefix + k for k in _PLANAR_KEYS}
    if not any(k in state for k in renames):
        return
    items = list(state.items())
    state.clear()
    for k, v in items:
        state[renames.get(k, k)] = v


def _planar_keys_on_load(module: nn.Module, state: dict, prefix: str, *args: Any) -> None:
    """``u`` → ``layers.u`` (and w, b) before the layers load."""
    for k in _PLANAR_KEYS:
        if prefix + k in state and prefix + "layers." + k not in state:
            state[prefix + "layers." + k] = state.pop(prefix + k)
