"""Benchmark cases of the dgm_ext ops at the SPEC §4 sizes (shared by bench_ops.py and report.py).

Each case builds its inputs, names which of them require gradients, and maps a provider
("dgm_ext", "eager", "compile") to a callable. The pure-PyTorch references of
``dgm_ext.ops.reference`` are the baselines, in eager mode and under ``torch.compile``.

Inputs are generated on the CPU (same values on every device) and moved to the device under
test; on CUDA every timed callable ends with ``torch.cuda.synchronize`` (otherwise it would
time the kernel launches only) and runs ``calls_per_round(device)`` calls per round so that
the synchronisation's latency is amortised (report.py divides by it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch._dynamo

from dgm_ext import ops
from dgm_ext.ops import reference as ref

QUICK = os.environ.get("DGM_EXT_BENCH_QUICK", "0") == "1"

# Devices benchmarked: the CPU always, CUDA when this torch build sees a GPU.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
CUDA_CALLS = 2 if QUICK else 10  # back-to-back calls per timed round (and one sync) on CUDA


def calls_per_round(device: str) -> int:
    """How many calls one timed round makes: 1 on the CPU, ``CUDA_CALLS`` on CUDA."""
    return CUDA_CALLS if torch.device(device).type == "cuda" else 1


def device_name(device: str) -> str:
    """The accelerator's name (CUDA), or "" for the CPU (pytest-benchmark's machine_info)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return ""


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


def _planar_rows(k: int):
    # The amortised flow posterior of the VAE (SPEC §3 vae-elbo sizes): one sample of a batch
    # of 64 examples, latent L = 100, K per-example planar layers.
    def make():
        n, d, kk = _s(64, 8), _s(100, 16), _s(k, 2)
        args = [_r(n, d), _r(n, kk, d) * 0.1, _r(n, kk, d) * 0.1, _r(n, kk) * 0.1]
        return args, [True, True, True, True]

    return make


def _training(op: str, *shape: int, grads: tuple[bool, ...]):
    """A training-size case (issue 13's per-call targets): the same sizes in the smoke run."""

    def make():
        n_in = {"bernoulli_log_prob": 2, "gaussian_log_prob": 3, "kl_normal_std": 2,
                "reparameterize": 3}[op]  # fmt: skip
        args = [_r(*shape) for _ in range(n_in)]
        if op == "bernoulli_log_prob":
            args[1] = torch.bernoulli(torch.rand(*shape))
        if op == "gaussian_log_prob":
            args[0] = torch.rand(*shape)
        return args, list(grads)

    return make


def _coupling_training():
    x = _r(128, 1, 28, 28)
    mask = ((torch.arange(28).view(-1, 1) + torch.arange(28)) % 2).float().view(1, 1, 28, 28)
    return [x, _r(128, 1, 28, 28) * 0.1, _r(128, 1, 28, 28), mask], [True, True, True, False]


# Sizes of one training step, where the per-call host cost decides (issue 13).
TRAINING_CASES = [
    Case("bernoulli 64x1 (GAN loss)", "bernoulli_log_prob",
         _training("bernoulli_log_prob", 64, 1, grads=(True, False))),
    Case("bernoulli 128x1 (GAN loss)", "bernoulli_log_prob",
         _training("bernoulli_log_prob", 128, 1, grads=(True, False))),
    Case("gaussian 128x784 (step)", "gaussian_log_prob",
         _training("gaussian_log_prob", 128, 784, grads=(False, True, True))),
    Case("kl_normal_std 128x20 (step)", "kl_normal_std",
         _training("kl_normal_std", 128, 20, grads=(True, True))),
    Case("kl_normal_std 64x100 (step)", "kl_normal_std",
         _training("kl_normal_std", 64, 100, grads=(True, True))),
    Case("reparameterize 128x20 (step)", "reparameterize",
         _training("reparameterize", 128, 20, grads=(True, True, False))),
    Case("reparameterize 64x100 (step)", "reparameterize",
         _training("reparameterize", 64, 100, grads=(True, True, False))),
    Case("affine_coupling 128x1x28x28 (step)", "affine_coupling", _coupling_training),
]  # fmt: skip

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
    Case("planar_flow_rows 64x100 K=10", "planar_flow_rows", _planar_rows(10)),
    Case("planar_flow_rows 64x100 K=40", "planar_flow_rows", _planar_rows(40)),
    *TRAINING_CASES,
]

# torch.compile of the references, one compiled function per (case, device): each case's sizes
# get their own static graph (dynamic=False). With one function shared by the three Bernoulli
# sizes, the size-guard recompile of the second size switched to a size-generic (dynamic)
# graph, so the large sizes were timed on a graph that is not what a model with fixed shapes
# gets. The compiled functions of one reference still share its code object, whose
# cache-entry limit (8) sizes x grad modes x devices can exceed; past it dynamo would silently
# run eager, so the limit is raised and hitting it is made an error.
_compiled: dict[tuple[str, str], Callable] = {}


def _compile(case: Case, device: str) -> Callable:
    key = (case.name, torch.device(device).type)
    if key not in _compiled:
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        dynamo_config.fail_on_recompile_limit_hit = True
        _compiled[key] = torch.compile(getattr(ref, case.op), fullgraph=True, dynamic=False)
    return _compiled[key]


def provider_fn(case: Case, provider: str, device: str = "cpu") -> Callable:
    if provider == "dgm_ext":
        return getattr(ops, case.op)
    if provider == "eager":
        return getattr(ref, case.op)
    if provider == "compile":
        return _compile(case, device)
    raise ValueError(f"unknown provider {provider!r}")


def _total(out) -> torch.Tensor:
    if isinstance(out, tuple):
        return sum(o.sum() for o in out)
    return out.sum()


def runner(case: Case, provider: str, mode: str, device: str = "cpu") -> Callable[[], None]:
    """A no-argument callable running one forward (mode "fwd") or forward+backward on the CPU;
    on CUDA, ``calls_per_round(device)`` of them and then ``torch.cuda.synchronize``."""
    fn = provider_fn(case, provider, device)
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

    if torch.device(device).type != "cuda":
        return run
    calls = calls_per_round(device)
    dev = torch.device(device)

    def run_cuda() -> None:
        for _ in range(calls):
            run()
        torch.cuda.synchronize(dev)

    return run_cuda


def _stored_bytes(t: torch.Tensor) -> int:
    """Bytes of the distinct elements a tensor addresses: a broadcast (stride-0) dimension
    counts once, so an expanded tensor counts at its stored size, not its broadcast size."""
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return n * t.element_size()


_floors: dict[str, dict[str, int]] = {}


def floor_bytes(case: Case, mode: str) -> int:
    """Minimal memory traffic of a fused implementation, in bytes (the same on every device).

    Each input is read once at its stored size (a broadcast input, such as x in the
    importance-sampling Bernoulli, counts at its stored size, not at the broadcast size) and
    each output is written once:

    - ``fwd``: read every input, write every output.
    - ``fwd_bwd``: what one fused forward + backward must move: read every input once and the
      output gradient once; write every output once and the gradient of every input that
      requires one (at the input's stored size). The output gradient is the one the
      benchmark's backward receives, that of the sum of every output (``_total``): an
      expanded scalar (stride 0), one element per output. Inputs reread by a separate
      backward pass, saved intermediates and a materialised output gradient are not counted:
      they are costs of an implementation, not of the computation.

    Until this rule, ``fwd_bwd`` counted 2 x inputs + 2 x outputs + input gradients. The copy
    benchmark counts its read and its write alike, so floor_bytes / copy bandwidth is the time
    at the device's measured memory bandwidth.
    """
    if case.name not in _floors:
        args, grads = case.make()
        leaves = [a.requires_grad_(True) for a, g in zip(args, grads, strict=True) if g]
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        out = getattr(ref, case.op)(*args)
        outs = out if isinstance(out, tuple) else (out,)
        read = sum(_stored_bytes(t) for t in tensors)
        written = sum(_stored_bytes(o) for o in outs)
        out_grads = torch.autograd.grad(_total(out), outs)
        grad_out = sum(_stored_bytes(g) for g in out_grads)
        in_grads = sum(_stored_bytes(t) for t in leaves)
        _floors[case.name] = {
            "fwd": read + written,
            "fwd_bwd": read + grad_out + written + in_grads,
        }
    return _floors[case.name][mode]
