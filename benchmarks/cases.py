"""Benchmark cases of the dgm_ext ops at the SPEC §4 sizes (shared by bench_ops.py and report.py).

Each case builds its inputs, names which of them require gradients, and maps a provider
("dgm_ext", "eager", "compile") to a callable. The pure-PyTorch references of
``dgm_ext.ops.reference`` are the baselines, in eager mode and under ``torch.compile``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dgm_ext import ops
from dgm_ext.ops import reference as ref

QUICK = os.environ.get("DGM_EXT_BENCH_QUICK", "0") == "1"


@dataclass
class Case:
    name: str
    op: str
    make: Callable[[], tuple[list, list[bool]]]  # -> (args, requires_grad flags)
    kwargs: dict = field(default_factory=dict)

    def inputs(self, device: str = "cpu") -> list:
        args, grads = self.make()
        out = []
        for a, g in zip(args, grads, strict=True):
            if isinstance(a, torch.Tensor):
                a = a.to(device)
                if g:
                    a.requires_grad_(True)
            out.append(a)
        return out


def _r(*shape, lo=None, hi=None):
    t = torch.randn(*shape)
    if lo is not None:
        t = torch.rand(*shape) * (hi - lo) + lo
    return t


def _s(full: int, quick: int) -> int:
    return quick if QUICK else full


def _bern_is():
    k, b, d = _s(200, 4), _s(100, 8), _s(784, 64)
    return [_r(k, b, d), torch.bernoulli(torch.rand(b, d))], [True, False]


def _bern(n):
    def make():
        d = _s(784, 64)
        m = _s(n, 16)
        return [_r(m, d), torch.bernoulli(torch.rand(m, d))], [True, False]

    return make


def _gauss():
    n, d = _s(4096, 16), _s(784, 64)
    return [torch.rand(n, d), _r(n, d), _r(n, d) * 0.5], [False, True, True]


def _beta():
    n, d = _s(4096, 16), _s(784, 64)
    x = torch.rand(n, d)
    return [x, _r(n, d, lo=0.5, hi=5.0), _r(n, d, lo=0.5, hi=5.0)], [False, True, True]


def _cat():
    n, d, k = _s(128, 4), _s(784, 32), _s(256, 16)
    return [_r(n, d, k), torch.randint(0, k, (n, d))], [True, False]


def _kl_std():
    n, l = _s(20000, 64), _s(100, 16)
    return [_r(n, l), _r(n, l)], [True, True]


def _kl():
    n, l = _s(20000, 64), _s(100, 16)
    return [_r(n, l), _r(n, l), _r(n, l), _r(n, l)], [True, True, True, True]


def _reparam():
    n, l = _s(20000, 64), _s(100, 16)
    return [_r(n, l), _r(n, l), _r(n, l)], [True, True, False]


def _coupling():
    n, h = _s(256, 8), _s(28, 8)
    x = _r(n, 1, h, h)
    mask = ((torch.arange(h).view(-1, 1) + torch.arange(h)) % 2).float().view(1, 1, h, h)
    return [x, _r(n, 1, h, h) * 0.1, _r(n, 1, h, h), mask], [True, True, True, False]


def _planar():
    n, k = _s(65536, 256), _s(32, 4)
    return [_r(n, 2), _r(k, 2) * 0.1, _r(k, 2), _r(k) * 0.1], [True, True, True, True]


CASES = [
    Case("bernoulli 200x100x784 (IS)", "bernoulli_log_prob", _bern_is),
    Case("bernoulli 20000x784", "bernoulli_log_prob", _bern(20000)),
    Case("bernoulli 128x784", "bernoulli_log_prob", _bern(128)),
    Case("gaussian 4096x784", "gaussian_log_prob", _gauss),
    Case("beta 4096x784", "beta_log_prob", _beta),
    Case("categorical 128x784x256", "categorical_log_prob", _cat),
    Case("kl_normal_std 20000x100", "kl_normal_std", _kl_std),
    Case("kl_normal 20000x100", "kl_normal", _kl),
    Case("reparameterize 20000x100", "reparameterize", _reparam),
    Case("affine_coupling 256x1x28x28", "affine_coupling", _coupling),
    Case("planar_flow 65536x2 K=32", "planar_flow", _planar),
]

_compiled: dict[str, Callable] = {}


def provider_fn(case: Case, provider: str) -> Callable:
    if provider == "dgm_ext":
        return getattr(ops, case.op)
    if provider == "eager":
        return getattr(ref, case.op)
    if provider == "compile":
        if case.op not in _compiled:
            _compiled[case.op] = torch.compile(getattr(ref, case.op), fullgraph=True)
        return _compiled[case.op]
    raise ValueError(f"unknown provider {provider!r}")


def _total(out) -> torch.Tensor:
    if isinstance(out, tuple):
        return sum(o.sum() for o in out)
    return out.sum()


def runner(case: Case, provider: str, mode: str, device: str = "cpu") -> Callable[[], None]:
    """A no-argument callable running one forward (mode "fwd") or forward+backward."""
    fn = provider_fn(case, provider)
    args = case.inputs(device)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    if mode == "fwd":

        def run() -> None:
            with torch.no_grad():
                fn(*args)

    else:

        def run() -> None:
            for t in leaves:
                t.grad = None
            _total(fn(*args)).backward()

    return run


def floor_bytes(case: Case, mode: str) -> int:
    """Bytes a fused implementation must move: read inputs and write outputs (fwd); plus read
    inputs and the output gradient and write the input gradients (bwd)."""
    args, grads = case.make()
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    with torch.no_grad():
        out = getattr(ref, case.op)(*args)
    outs = out if isinstance(out, tuple) else (out,)
    read = sum(t.numel() * t.element_size() for t in tensors)
    written = sum(o.numel() * o.element_size() for o in outs)
    if mode == "fwd":
        return read + written
    grad_bytes = sum(
        t.numel() * t.element_size()
        for a, g in zip(args, grads, strict=True)
        if g and isinstance(a, torch.Tensor)
        for t in [a]
    )
    return 2 * read + 2 * written + grad_bytes
