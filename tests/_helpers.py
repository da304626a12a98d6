"""Shared axes, tolerances and per-op sample inputs for the dgm_ext op tests.

Follows the pytorch/extension-cpp pattern: every op has one ``sample_inputs_<op>(device,
dtype, requires_grad)`` generator yielding :class:`Sample` cases (plain, broadcast batch
dims, broadcast along D, non-contiguous, 3-D batch, empty batch / empty D), which the value,
gradient, gradcheck and opcheck tests all iterate over.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import dgm_ext
from dgm_ext import ops
from dgm_ext.ops import reference

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu"] + (["cuda"] if HAS_CUDA else [])
DTYPES = [torch.float32, torch.float64]
# float16/bfloat16 are accepted on CUDA only (computed in float32).
CUDA_HALF_DTYPES = [torch.float16, torch.bfloat16] if HAS_CUDA else []

# (rtol, atol) for forward values and gradients, per dtype.
_TOL = {
    torch.float16: (1e-2, 1e-2),
    torch.bfloat16: (5e-2, 5e-2),
    torch.float32: (2e-5, 2e-5),
    torch.float64: (1e-10, 1e-10),
}

LIB = torch.ops.dgm_ext

requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")


def tol(dtype: torch.dtype) -> dict[str, float]:
    rtol, atol = _TOL[dtype]
    return {"rtol": rtol, "atol": atol}


def assert_close(actual, expected, dtype: torch.dtype | None = None, scale: float = 1.0, **kw):
    """assert_close with this suite's per-dtype tolerances (times ``scale``)."""
    if dtype is None:
        dtype = actual.dtype
    t = tol(dtype)
    kw.setdefault("rtol", t["rtol"] * scale)
    kw.setdefault("atol", t["atol"] * scale)
    torch.testing.assert_close(actual, expected, check_dtype=False, **kw)


def device_dtype_params(dtypes=None, devices=None):
    """``pytest.mark.parametrize`` arguments over (device, dtype)."""
    dtypes = DTYPES if dtypes is None else dtypes
    devices = DEVICES if devices is None else devices
    return [(dev, dt) for dev in devices for dt in dtypes]


# ------------------------------------------------------------------------------ samples
@dataclasses.dataclass
class Sample:
    """One call of an op: positional ``args`` and keyword ``kwargs``.

    ``grad_ok`` is False when an input has overlapping memory (an expanded leaf), which
    gradcheck cannot perturb element by element.
    """

    desc: str
    args: tuple
    kwargs: dict = dataclasses.field(default_factory=dict)
    grad_ok: bool = True

    def __repr__(self) -> str:  # readable pytest ids / failure messages
        shapes = ", ".join(
            f"{tuple(a.shape)}{'' if a.is_contiguous() else '*'}"
            if isinstance(a, torch.Tensor)
            else repr(a)
            for a in self.args
        )
        return f"Sample({self.desc}: {shapes}{', ' + repr(self.kwargs) if self.kwargs else ''})"

    def diff_inputs(self) -> list[int]:
        """Indices of the args that require grad."""
        return [
            i for i, a in enumerate(self.args) if isinstance(a, torch.Tensor) and a.requires_grad
        ]

    def detached(self, requires_grad: bool = True, dtype: torch.dtype | None = None) -> Sample:
        """Copy with fresh leaves (same values and strides; optionally cast to dtype)."""
        new = []
        for a in self.args:
            if isinstance(a, torch.Tensor):
                b = a.detach()
                if dtype is not None and b.is_floating_point():
                    b = b.to(dtype)
                new.append(b.requires_grad_(a.requires_grad and requires_grad))
            else:
                new.append(a)
        return dataclasses.replace(self, args=tuple(new))


def _leaf(t: torch.Tensor, requires_grad: bool) -> torch.Tensor:
    """A leaf with t's values *and strides* (views stay non-contiguous)."""
    return t.detach().requires_grad_(requires_grad)


class _Maker:
    def __init__(self, device, dtype, requires_grad, seed=0):
        self.device, self.dtype, self.rg = device, dtype, requires_grad
        self.g = torch.Generator().manual_seed(seed)

    def randn(self, *shape, scale=1.0, shift=0.0, rg=None):
        t = torch.randn(shape, generator=self.g, dtype=torch.float64) * scale + shift
        return _leaf(t.to(self.device, self.dtype), self.rg if rg is None else rg)

    def uniform(self, *shape, lo=0.0, hi=1.0, rg=None):
        t = torch.rand(shape, generator=self.g, dtype=torch.float64) * (hi - lo) + lo
        return _leaf(t.to(self.device, self.dtype), self.rg if rg is None else rg)

    def transposed(self, fn: Callable, *shape, **kw):
        """(..., a, b) non-contiguous: made as (..., b, a) and transposed."""
        t = fn(*shape[:-2], shape[-1], shape[-2], rg=False, **kw).transpose(-1, -2)
        return _leaf(t, self.rg)

    def sliced(self, fn: Callable, *shape, **kw):
        """Non-contiguous: every other element along the last dim."""
        t = fn(*shape[:-1], 2 * shape[-1], rg=False, **kw)[..., ::2]
        return _leaf(t, self.rg)

    def expanded(self, fn: Callable, *shape, **kw):
        """Stride-0 batch dim: (1, ...) expanded to shape (overlapping memory)."""
        t = fn(1, *shape[1:], rg=False, **kw).expand(*shape)
        return _leaf(t, self.rg)


def _row_op_samples(
    device, dtype, requires_grad, makers: list[tuple[str, Callable]], allow_empty_d=True
) -> Iterator[Sample]:
    """Samples for the row-wise ops ``op(a, b, ...)`` with (*B, D) arguments.

    ``makers``: (name, fn(m, *shape, rg=None) -> Tensor) per argument, giving valid values.
    """
    m = _Maker(device, dtype, requires_grad)

    def mk(i, *shape, how="plain"):
        fn = makers[i][1]
        f = lambda *s, rg=None: fn(m, *s, rg=rg)  # noqa: E731
        if how == "plain":
            return f(*shape)
        return getattr(m, how)(f, *shape)

    n = len(makers)
    yield Sample("plain", tuple(mk(i, 4, 5) for i in range(n)))
    yield Sample("one_row", tuple(mk(i, 1, 3) for i in range(n)))
    yield Sample("1d", tuple(mk(i, 6) for i in range(n)))
    # broadcast batch dims: the first argument (N, D), the others (D,) / (1, D)
    yield Sample(
        "bcast_batch", (mk(0, 3, 4), *(mk(i, 4) if i % 2 else mk(i, 1, 4) for i in range(1, n)))
    )
    # broadcast along D: every argument but the first has D = 1
    yield Sample("bcast_D", (mk(0, 3, 5), *(mk(i, 3, 1) for i in range(1, n))))
    # the first argument is the broadcast one
    yield Sample("bcast_first", (mk(0, 1, 4), *(mk(i, 3, 4) for i in range(1, n))))
    # 3-D batch with broadcasting over the middle dim
    yield Sample("3d", (mk(0, 2, 3, 4), *(mk(i, 2, 1, 4) for i in range(1, n))))
    yield Sample("3d_full", tuple(mk(i, 2, 3, 4) for i in range(n)))
    # non-contiguous
    yield Sample("transposed", tuple(mk(i, 4, 3, how="transposed") for i in range(n)))
    yield Sample(
        "sliced",
        tuple(mk(i, 3, 4, how="sliced" if i % 2 == 0 else "plain") for i in range(n)),
    )
    yield Sample(
        "transposed_3d",
        (mk(0, 2, 4, 3, how="transposed"), *(mk(i, 2, 4, 3) for i in range(1, n))),
    )
    yield Sample(
        "expanded",
        tuple(mk(i, 3, 4, how="expanded" if i == 0 else "plain") for i in range(n)),
        grad_ok=False,
    )
    # more independent batch dims than a RowLayout holds (kMaxRowDims = 6): materialised path
    a, b = (2, 1, 2, 1, 2, 1, 2, 3), (1, 2, 1, 2, 1, 2, 1, 3)
    yield Sample("many_batch_dims", tuple(mk(i, *(b if i % 2 else a)) for i in range(n)))
    # empty batch / empty D
    yield Sample("empty_batch", tuple(mk(i, 0, 4) for i in range(n)))
    yield Sample("empty_batch_3d", tuple(mk(i, 2, 0, 3) for i in range(n)))
    if allow_empty_d:
        yield Sample("empty_D", tuple(mk(i, 3, 0) for i in range(n)))


def _normal(m, *s, rg=None):
    return m.randn(*s, rg=rg)


def _logvar(m, *s, rg=None):
    return m.randn(*s, scale=0.5, rg=rg)


def sample_inputs_bernoulli_log_prob(device, dtype, requires_grad) -> Iterator[Sample]:
    # x in [0, 1] (continuous targets are allowed: grey levels); differentiable in both.
    yield from _row_op_samples(
        device,
        dtype,
        requires_grad,
        [
            ("logits", lambda m, *s, rg=None: m.randn(*s, scale=2.0, rg=rg)),
            ("x", lambda m, *s, rg=None: m.uniform(*s, rg=rg)),
        ],
    )


def sample_inputs_gaussian_log_prob(device, dtype, requires_grad) -> Iterator[Sample]:
    yield from _row_op_samples(
        device, dtype, requires_grad, [("x", _normal), ("mean", _normal), ("logvar", _logvar)]
    )


def sample_inputs_beta_log_prob(device, dtype, requires_grad) -> Iterator[Sample]:
    # x well inside (eps, 1 - eps) so that finite differences never cross the clamp.
    makers = [
        ("x", lambda m, *s, rg=None: m.uniform(*s, lo=0.05, hi=0.95, rg=rg)),
        ("alpha", lambda m, *s, rg=None: m.uniform(*s, lo=0.5, hi=3.0, rg=rg)),
        ("beta", lambda m, *s, rg=None: m.uniform(*s, lo=0.5, hi=3.0, rg=rg)),
    ]
    yield from _row_op_samples(device, dtype, requires_grad, makers)
    m = _Maker(device, dtype, requires_grad, seed=1)
    args = (m.uniform(3, 4, lo=0.3, hi=0.7), m.uniform(3, 4, lo=1, hi=2), m.uniform(4, lo=1, hi=2))
    yield Sample("eps_kw", args, {"eps": 1e-3})


def sample_inputs_categorical_log_prob(device, dtype, requires_grad) -> Iterator[Sample]:
    m = _Maker(device, dtype, requires_grad)
    g = torch.Generator().manual_seed(1)

    def idx(*shape, k):
        return torch.randint(0, k, shape, generator=g).to(device)

    yield Sample("plain", (m.randn(4, 5, 3), idx(4, 5, k=3)))
    yield Sample("one_class", (m.randn(2, 3, 1), idx(2, 3, k=1)))
    yield Sample("1d_x", (m.randn(6, 4), idx(6, k=4)))
    yield Sample("bcast_logits_batch", (m.randn(5, 4), idx(3, 5, k=4)))
    yield Sample("bcast_x_batch", (m.randn(3, 5, 4), idx(5, k=4)))
    yield Sample("bcast_x_D", (m.randn(3, 5, 4), idx(3, 1, k=4)))
    yield Sample("bcast_logits_D", (m.randn(3, 1, 4), idx(3, 5, k=4)))
    yield Sample("3d", (m.randn(2, 3, 4, 5), idx(2, 1, 4, k=5)))
    t = m.randn(4, 3, 5, rg=False).transpose(0, 1)  # (3, 4, 5), classes contiguous
    yield Sample("transposed_batch", (_leaf(t, requires_grad), idx(4, 3, k=5).t()))
    t = m.randn(3, 5, 4, rg=False).transpose(-1, -2)  # (3, 4, 5), classes strided
    yield Sample("transposed_classes", (_leaf(t, requires_grad), idx(3, 4, k=5)))
    t = m.randn(3, 4, 10, rg=False)[..., ::2]
    yield Sample("sliced", (_leaf(t, requires_grad), idx(3, 8, k=5)[:, ::2]))
    t = m.randn(1, 4, 5, rg=False).expand(3, 4, 5)
    yield Sample("expanded", (_leaf(t, requires_grad), idx(3, 4, k=5)), grad_ok=False)
    yield Sample("empty_batch", (m.randn(0, 4, 3), idx(0, 4, k=3)))
    yield Sample("empty_D", (m.randn(3, 0, 3), idx(3, 0, k=3)))


def sample_inputs_kl_normal_std(device, dtype, requires_grad) -> Iterator[Sample]:
    yield from _row_op_samples(device, dtype, requires_grad, [("mu", _normal), ("logvar", _logvar)])


def sample_inputs_kl_normal(device, dtype, requires_grad) -> Iterator[Sample]:
    yield from _row_op_samples(
        device,
        dtype,
        requires_grad,
        [("mu_q", _normal), ("logvar_q", _logvar), ("mu_p", _normal), ("logvar_p", _logvar)],
    )


def sample_inputs_reparameterize(device, dtype, requires_grad) -> Iterator[Sample]:
    yield from _row_op_samples(
        device, dtype, requires_grad, [("mu", _normal), ("logvar", _logvar), ("eps", _normal)]
    )


def checkerboard(h: int, w: int, device="cpu", dtype=torch.float32) -> torch.Tensor:
    i = torch.arange(h).view(-1, 1) + torch.arange(w).view(1, -1)
    return (i % 2).to(device=device, dtype=dtype)


def sample_inputs_affine_coupling(device, dtype, requires_grad) -> Iterator[Sample]:
    m = _Maker(device, dtype, requires_grad)

    def s_(*shape, rg=None):
        return m.randn(*shape, scale=0.5, rg=rg)

    half = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0], dtype=dtype, device=device)
    for rev in (False, True):
        r = "rev" if rev else "fwd"
        yield Sample(f"plain_{r}", (m.randn(4, 5), s_(4, 5), m.randn(4, 5), half, rev))
        # images (N, C, H, W) with a checkerboard mask (H, W) and channel-broadcast s, t
        cb = checkerboard(3, 3, device, dtype)
        yield Sample(
            f"image_checker_{r}",
            (m.randn(2, 2, 3, 3), s_(2, 2, 3, 3), m.randn(2, 1, 3, 3), cb, rev),
        )
        # channel mask (C, 1, 1), s/t shared over the batch
        chm = torch.tensor([1.0, 0.0], dtype=dtype, device=device).view(2, 1, 1)
        yield Sample(
            f"image_channel_bcast_{r}",
            (m.randn(3, 2, 2, 2), s_(1, 2, 2, 2), m.randn(2, 1, 1), chm, rev),
        )
        yield Sample(
            f"transposed_{r}",
            (m.transposed(m.randn, 3, 5), m.transposed(s_, 3, 5), m.randn(3, 5), half, rev),
        )
        yield Sample(
            f"sliced_{r}",
            (m.sliced(m.randn, 3, 5), s_(3, 5), m.sliced(m.randn, 3, 5), half, rev),
        )
        yield Sample(
            f"expanded_{r}",
            (m.randn(3, 5), m.expanded(s_, 3, 5), m.randn(3, 5), half, rev),
            grad_ok=False,
        )
        yield Sample(f"empty_batch_{r}", (m.randn(0, 5), s_(0, 5), m.randn(0, 5), half, rev))


def sample_inputs_planar_flow(device, dtype, requires_grad) -> Iterator[Sample]:
    # |u·w| small so that 1 + tanh'·u·w stays well away from 0 (finite log|det|).
    m = _Maker(device, dtype, requires_grad)

    def small(*shape, rg=None):
        return m.randn(*shape, scale=0.4, rg=rg)

    yield Sample("plain", (m.randn(5, 3), small(2, 3), small(2, 3), small(2)))
    yield Sample("one_layer", (m.randn(4, 2), small(1, 2), small(1, 2), small(1)))
    yield Sample("d1_k3", (m.randn(6, 1), small(3, 1), small(3, 1), small(3)))
    yield Sample(
        "transposed",
        (m.transposed(m.randn, 4, 3), m.transposed(small, 2, 3), small(2, 3), small(4)[::2]),
    )
    yield Sample("sliced", (m.sliced(m.randn, 4, 3), small(3, 3), m.sliced(small, 3, 3), small(3)))
    yield Sample(
        "expanded_z",
        (m.expanded(m.randn, 4, 3), small(2, 3), small(2, 3), small(2)),
        grad_ok=False,
    )
    yield Sample("empty_batch", (m.randn(0, 3), small(2, 3), small(2, 3), small(2)))
    yield Sample("no_layers", (m.randn(3, 2), small(0, 2), small(0, 2), small(0)))


def sample_inputs_planar_flow_rows(device, dtype, requires_grad) -> Iterator[Sample]:
    # z (*S, N, d); u, w (N, K, d); b (N, K). |u·w| small as for planar_flow.
    m = _Maker(device, dtype, requires_grad)

    def small(*shape, rg=None):
        return m.randn(*shape, scale=0.4, rg=rg)

    def params(n, k, d):
        return small(n, k, d), small(n, k, d), small(n, k)

    yield Sample("plain", (m.randn(4, 3), *params(4, 2, 3)))
    yield Sample("samples", (m.randn(3, 4, 3), *params(4, 2, 3)))
    yield Sample("samples_2d", (m.randn(2, 3, 4, 3), *params(4, 3, 3)))
    yield Sample("one_layer", (m.randn(2, 5, 2), *params(5, 1, 2)))
    yield Sample("d1_k3", (m.randn(2, 6, 1), *params(6, 3, 1)))
    yield Sample("one_row", (m.randn(5, 1, 4), *params(1, 2, 4)))
    yield Sample(
        "transposed",
        (
            m.transposed(m.randn, 2, 4, 3),  # (2, 4, 3) made as (2, 3, 4)
            m.transposed(small, 4, 2, 3),
            small(4, 2, 3),
            m.transposed(small, 4, 2),
        ),
    )
    yield Sample(
        "sliced",
        (m.sliced(m.randn, 2, 4, 3), small(4, 2, 3), m.sliced(small, 4, 2, 3), small(4, 2)),
    )
    yield Sample(
        "expanded_z",  # one z row block shared by every sample (stride 0 over S)
        (m.expanded(m.randn, 3, 4, 3), *params(4, 2, 3)),
        grad_ok=False,
    )
    yield Sample("empty_batch", (m.randn(0, 4, 3), *params(4, 2, 3)))
    yield Sample("empty_rows", (m.randn(2, 0, 3), *params(0, 2, 3)))
    yield Sample("no_layers", (m.randn(2, 3, 2), *params(3, 0, 2)))
    yield Sample("empty_D", (m.randn(2, 3, 0), *params(3, 2, 0)))


SAMPLES: dict[str, Callable[..., Iterator[Sample]]] = {
    "bernoulli_log_prob": sample_inputs_bernoulli_log_prob,
    "gaussian_log_prob": sample_inputs_gaussian_log_prob,
    "beta_log_prob": sample_inputs_beta_log_prob,
    "categorical_log_prob": sample_inputs_categorical_log_prob,
    "kl_normal_std": sample_inputs_kl_normal_std,
    "kl_normal": sample_inputs_kl_normal,
    "reparameterize": sample_inputs_reparameterize,
    "affine_coupling": sample_inputs_affine_coupling,
    "planar_flow": sample_inputs_planar_flow,
    "planar_flow_rows": sample_inputs_planar_flow_rows,
}
OP_NAMES = list(SAMPLES)


def public(name: str) -> Callable:
    return getattr(ops, name)


def ref(name: str) -> Callable:
    return getattr(reference, name)


def call(fn: Callable, s: Sample):
    return fn(*s.args, **s.kwargs)


def as_tuple(out) -> tuple[torch.Tensor, ...]:
    return out if isinstance(out, tuple) else (out,)


def scalarize(outs: tuple[torch.Tensor, ...], seed: int = 123) -> torch.Tensor:
    """A fixed random linear functional of the outputs (exercises every output gradient)."""
    g = torch.Generator().manual_seed(seed)
    total = 0
    for o in outs:
        w = torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.device, o.dtype)
        total = total + (o * w).sum()
    return total


def grads_of(fn: Callable, s: Sample) -> tuple[tuple[torch.Tensor, ...], list]:
    """Outputs and the gradients (None where no grad flows) of scalarize(fn(s))."""
    outs = as_tuple(call(fn, s))
    idx = s.diff_inputs()
    if not idx:
        return outs, []
    loss = scalarize(outs)
    gs = torch.autograd.grad(
        loss, [s.args[i] for i in idx], allow_unused=True, materialize_grads=True
    )
    return outs, list(gs)


# ------------------------------------------------------------------------------ ISA payload
def isa_payload() -> dict[str, torch.Tensor]:
    """Every op (forward + backward) on fixed inputs in float32 and float64, CPU.

    Run in-process and in a subprocess with ``DGM_EXT_CPU_ISA=default`` to compare the AVX2
    and portable kernel tables. Shapes are large enough (D = 37) to hit both the vector body
    and the scalar tail of the vectorised loops.
    """
    out: dict[str, torch.Tensor] = {"_isa": torch.tensor([ord(c) for c in _isa()])}
    for dtype in DTYPES:
        for name in OP_NAMES:
            samples = {
                "bernoulli_log_prob": _payload_rows(2, dtype, "logits"),
                "gaussian_log_prob": _payload_rows(3, dtype, "gauss"),
                "beta_log_prob": _payload_rows(3, dtype, "beta"),
                "kl_normal_std": _payload_rows(2, dtype, "gauss"),
                "kl_normal": _payload_rows(4, dtype, "gauss"),
                "reparameterize": _payload_rows(3, dtype, "gauss"),
            }
            if name in samples:
                args = samples[name]
            else:
                args = _payload_special(name, dtype)
            s = Sample("isa", tuple(args))
            outs, gs = grads_of(public(name), s)
            for j, o in enumerate(outs):
                out[f"{name}/{dtype}/out{j}"] = o.detach()
            for j, gr in enumerate(gs):
                out[f"{name}/{dtype}/grad{j}"] = gr.detach()
    return out


def _isa() -> str:
    return dgm_ext.build_info()["cpu_isa"]


def _payload_rows(n: int, dtype, kind: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    shape = (9, 37)
    args = []
    for i in range(n):
        if kind == "beta":
            t = torch.rand(shape, generator=g, dtype=torch.float64)
            t = t * 0.9 + 0.05 if i == 0 else t * 3 + 0.2
        elif kind == "logits" and i == 1:
            t = torch.rand(shape, generator=g, dtype=torch.float64)
        else:
            t = torch.randn(shape, generator=g, dtype=torch.float64) * (2 if i == 0 else 0.7)
        args.append(t.to(dtype).requires_grad_())
    return args


def _payload_special(name: str, dtype) -> list:
    g = torch.Generator().manual_seed(11)

    def r(*shape, scale=1.0):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * scale).to(dtype)

    if name == "categorical_log_prob":
        x = torch.randint(0, 19, (9, 13), generator=g)
        return [r(9, 13, 19, scale=3).requires_grad_(), x]
    if name == "affine_coupling":
        mask = checkerboard(5, 7, dtype=dtype)
        return [
            r(4, 2, 5, 7).requires_grad_(),
            r(4, 2, 5, 7, scale=0.5).requires_grad_(),
            r(4, 2, 5, 7).requires_grad_(),
            mask,
        ]
    if name == "planar_flow":
        return [
            r(33, 19).requires_grad_(),
            r(5, 19, scale=0.2).requires_grad_(),
            r(5, 19, scale=0.2).requires_grad_(),
            r(5, scale=0.3).requires_grad_(),
        ]
    if name == "planar_flow_rows":
        return [
            r(3, 11, 19).requires_grad_(),  # 3 samples of 11 rows, d = 19: vector body + tail
            r(11, 5, 19, scale=0.2).requires_grad_(),
            r(11, 5, 19, scale=0.2).requires_grad_(),
            r(11, 5, scale=0.3).requires_grad_(),
        ]
    raise KeyError(name)


LOG_2PI = math.log(2 * math.pi)

__all__: list[Any] = []
