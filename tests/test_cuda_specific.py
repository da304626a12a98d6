"""CUDA-only checks of the dgm_ext kernels (skipped without a GPU).

The device-parametrised op tests cover values, gradients, gradcheck and opcheck on CUDA; this
file adds what only CUDA has: float16/bfloat16 storage (computed in float32) against a float32
run, bit-for-bit run-to-run determinism of every reduction (row sums, categorical logsumexp,
planar parameter gradients), results independent of pointer alignment (vectorised and scalar
load paths), CPU/CUDA agreement, device-mix and bad-input errors, and a second GPU.
"""

from __future__ import annotations

import pytest
import torch

from dgm_ext import ops

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

HALF_TOL = {torch.float16: (2e-2, 2e-2), torch.bfloat16: (8e-2, 8e-2)}


def _inputs(op: str, device, dtype=torch.float32, n: int = 64, d: int = 784, seed: int = 0):
    """Positional float inputs (and int extras) of `op` on `device`; floats need grad."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, lo=-2.0, hi=2.0):
        return torch.rand(*shape, generator=g, dtype=torch.float64) * (hi - lo) + lo

    if op == "bernoulli_log_prob":
        args = [r(n, d), r(n, d, lo=0.0, hi=1.0)]
    elif op == "gaussian_log_prob":
        args = [r(n, d), r(n, d), r(n, d, lo=-1.0, hi=1.0)]
    elif op == "beta_log_prob":
        args = [r(n, d, lo=0.01, hi=0.99), r(n, d, lo=0.5, hi=3.0), r(n, d, lo=0.5, hi=3.0)]
    elif op == "kl_normal_std":
        args = [r(n, d), r(n, d, lo=-1.0, hi=1.0)]
    elif op == "kl_normal":
        args = [r(n, d), r(n, d, lo=-1.0, hi=1.0), r(n, d), r(n, d, lo=-1.0, hi=1.0)]
    elif op == "reparameterize":
        args = [r(n, d), r(n, d, lo=-1.0, hi=1.0), r(n, d)]
    elif op == "affine_coupling":
        mask = (torch.arange(d) % 2).to(torch.float64).expand(n, d)
        args = [r(n, d), r(n, d, lo=-1.0, hi=1.0), r(n, d), mask]
    elif op == "planar_flow":
        k = 8
        args = [
            r(n, min(d, 16)),
            r(k, min(d, 16), lo=-0.5, hi=0.5),
            r(k, min(d, 16), lo=-0.5, hi=0.5),
            r(k, lo=-0.5, hi=0.5),
        ]
    elif op == "planar_flow_rows":
        # the VAE flow posterior's shape: 2 samples of n rows, d <= 100, K = 10
        k, dd = 10, min(d, 100)
        args = [
            r(2, n, dd),
            r(n, k, dd, lo=-0.1, hi=0.1),
            r(n, k, dd, lo=-0.1, hi=0.1),
            r(n, k, lo=-0.5, hi=0.5),
        ]
    else:
        raise AssertionError(op)
    out = []
    for i, a in enumerate(args):
        t = a.to(device=device, dtype=dtype)
        if not (op == "affine_coupling" and i == 3):
            t.requires_grad_(True)
        out.append(t)
    return out


def _categorical_inputs(device, dtype=torch.float32, n=32, d=100, k=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(n, d, k, generator=g, dtype=torch.float64) * 3).to(device, dtype)
    x = torch.randint(0, k, (n, d), generator=g).to(device)
    return [logits.requires_grad_(True)], x


FLOAT_OPS = [
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "beta_log_prob",
    "kl_normal_std",
    "kl_normal",
    "reparameterize",
    "affine_coupling",
    "planar_flow",
    "planar_flow_rows",
]


def _run(op: str, args, extra=None):
    """Forward outputs and the gradients of a fixed scalar function of them."""
    fn = getattr(ops, op)
    out = fn(*args, extra) if extra is not None else fn(*args)
    outs = out if isinstance(out, tuple) else (out,)
    # Linear in the outputs, with fixed weights: the gradients do not depend on output rounding.
    loss = sum(
        (o.float() * torch.linspace(-1.0, 1.0, o.numel(), device=o.device).view_as(o)).sum()
        * (i + 1)
        for i, o in enumerate(outs)
    )
    leaves = [a for a in args if a.requires_grad]
    grads = torch.autograd.grad(loss, leaves)
    return [o.detach() for o in outs], [gr.detach() for gr in grads]


def _run_any(op, device, dtype, **kw):
    if op == "categorical_log_prob":
        args, x = _categorical_inputs(device, dtype, **kw)
        return _run(op, args, x)
    return _run(op, _inputs(op, device, dtype, **kw))


ALL_OPS = [*FLOAT_OPS, "categorical_log_prob"]


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_storage_matches_float32(op, dtype):
    outs_h, grads_h = _run_any(op, "cuda", dtype)
    outs_f, grads_f = _run_any(op, "cuda", torch.float32)
    rtol, atol = HALF_TOL[dtype]
    for a, b in zip(outs_h, outs_f, strict=True):
        assert a.dtype == dtype
        # Row sums over hundreds of elements: compare relative to the row magnitude.
        scale = b.abs().amax().clamp_min(1.0) if a.dim() == 1 else 1.0
        torch.testing.assert_close(a.float() / scale, b / scale, rtol=rtol, atol=atol)
    for a, b in zip(grads_h, grads_f, strict=True):
        assert a.dtype == dtype
        scale = b.abs().amax().clamp_min(1.0)
        torch.testing.assert_close(a.float() / scale, b / scale, rtol=rtol, atol=atol)


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(op, dtype):
    outs_c, grads_c = _run_any(op, "cpu", dtype)
    outs_g, grads_g = _run_any(op, "cuda", dtype)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-9, atol=1e-9)
    for a, b in zip(outs_g, outs_c, strict=True):
        torch.testing.assert_close(a.cpu(), b, **tol)
    for a, b in zip(grads_g, grads_c, strict=True):
        torch.testing.assert_close(a.cpu(), b, **tol)


@pytest.mark.parametrize("op", ALL_OPS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
def test_run_to_run_bitwise_deterministic(op, dtype):
    first = _run_any(op, "cuda", dtype, n=513)
    for _ in range(3):
        again = _run_any(op, "cuda", dtype, n=513)
        for a, b in zip(first[0] + first[1], again[0] + again[1], strict=True):
            assert torch.equal(a, b), f"{op}: results differ between identical runs"


def test_planar_param_grads_deterministic_many_rows():
    # Many rows: several chunks in the two-stage parameter-gradient reduction.
    g = torch.Generator().manual_seed(3)
    z = torch.randn(65536, 2, generator=g).cuda()
    u = (torch.randn(32, 2, generator=g) * 0.3).cuda().requires_grad_(True)
    w = (torch.randn(32, 2, generator=g) * 0.3).cuda().requires_grad_(True)
    b = (torch.randn(32, generator=g) * 0.3).cuda().requires_grad_(True)

    def grads():
        zk, ld = ops.planar_flow(z, u, w, b)
        return torch.autograd.grad(zk.square().sum() + ld.sum(), (u, w, b))

    ref = grads()
    for _ in range(3):
        for a, c in zip(ref, grads(), strict=True):
            assert torch.equal(a, c)
    cpu = [t.detach().cpu().double().requires_grad_(True) for t in (u, w, b)]
    zk, ld = ops.planar_flow(z.cpu().double(), *cpu)
    exp = torch.autograd.grad(zk.square().sum() + ld.sum(), cpu)
    for a, e in zip(ref, exp, strict=True):
        torch.testing.assert_close(a.cpu().double(), e, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_alignment_does_not_change_bits(dtype):
    # A column slice starting at element 1 is not 16-byte aligned: the scalar load path runs.
    # The per-thread summation order is the same as the vectorised path, so bits must agree.
    g = torch.Generator().manual_seed(5)
    base = torch.randn(257, 785, generator=g).to("cuda", dtype)
    xb = torch.rand(257, 785, generator=g).to("cuda", dtype)
    logits_u, x_u = base[:, 1:], xb[:, 1:]
    logits_a, x_a = logits_u.contiguous(), x_u.contiguous()
    assert logits_u.data_ptr() % 16 != 0
    assert torch.equal(ops.bernoulli_log_prob(logits_u, x_u), ops.bernoulli_log_prob(logits_a, x_a))
    assert torch.equal(ops.kl_normal_std(logits_u, x_u), ops.kl_normal_std(logits_a, x_a))


def test_broadcast_and_noncontiguous_match_cpu():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(6, 5, 33, generator=g, dtype=torch.float64)
    mean = torch.randn(5, 1, generator=g, dtype=torch.float64)  # broadcast along D and batch
    logvar = torch.randn(33, 6, generator=g, dtype=torch.float64).t()[:, None, :]  # strided
    cpu = ops.gaussian_log_prob(x, mean, logvar)
    gpu = ops.gaussian_log_prob(x.cuda(), mean.cuda(), logvar.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-12, atol=1e-12)


def test_device_mix_raises():
    a = torch.randn(4, 8, device="cuda")
    with pytest.raises(ValueError, match="'x'"):
        ops.bernoulli_log_prob(a, torch.rand(4, 8))
    with pytest.raises(ValueError, match="'x'"):
        ops.categorical_log_prob(torch.randn(4, 8, 3, device="cuda"), torch.zeros(4, 8).long())


def test_categorical_bad_index_raises_on_cuda():
    logits = torch.randn(4, 8, 3, device="cuda")
    with pytest.raises(ValueError, match="'x'"):
        ops.categorical_log_prob(logits, torch.full((4, 8), 3, device="cuda"))
    with pytest.raises(ValueError, match="'x'"):
        ops.categorical_log_prob(logits, torch.full((4, 8), -1, device="cuda"))


def test_categorical_small_and_odd_k():
    for k in (1, 2, 3, 10, 33, 257):
        g = torch.Generator().manual_seed(k)
        logits = torch.randn(5, 7, k, generator=g, dtype=torch.float64)
        x = torch.randint(0, k, (5, 7), generator=g)
        lc = logits.clone().requires_grad_(True)
        lg = logits.cuda().requires_grad_(True)
        oc = ops.categorical_log_prob(lc, x)
        og = ops.categorical_log_prob(lg, x.cuda())
        torch.testing.assert_close(og.cpu(), oc, rtol=1e-12, atol=1e-12)
        (gc,) = torch.autograd.grad(oc.sum(), lc)
        (gg,) = torch.autograd.grad(og.sum(), lg)
        torch.testing.assert_close(gg.cpu(), gc, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d", [1, 3, 5, 64, 129, 784])
def test_planar_dims_match_cpu(d):
    g = torch.Generator().manual_seed(d)
    z = torch.randn(300, d, generator=g, dtype=torch.float64)
    u = torch.randn(4, d, generator=g, dtype=torch.float64) * 0.2
    w = torch.randn(4, d, generator=g, dtype=torch.float64) * 0.2
    b = torch.randn(4, generator=g, dtype=torch.float64) * 0.2
    res = {}
    for dev in ("cpu", "cuda"):
        args = [t.to(dev).requires_grad_(True) for t in (z, u, w, b)]
        zk, ld = ops.planar_flow(*args)
        grads = torch.autograd.grad(zk.sin().sum() + ld.sum(), args)
        res[dev] = [zk, ld, *grads]
    for a, c in zip(res["cuda"], res["cpu"], strict=True):
        torch.testing.assert_close(a.detach().cpu(), c.detach(), rtol=1e-10, atol=1e-10)


def test_planar_too_large_dim_raises():
    z = torch.randn(2, 1025, device="cuda")
    u = torch.zeros(1, 1025, device="cuda")
    with pytest.raises(ValueError, match="at most"):
        ops.planar_flow(z, u, u, torch.zeros(1, device="cuda"))


def test_planar_rows_param_grads_deterministic_many_samples():
    # 4096 samples of 3 rows: many sample blocks in the two-stage parameter-gradient reduction.
    g = torch.Generator().manual_seed(4)
    z = torch.randn(4096, 3, 5, generator=g).cuda()
    u = (torch.randn(3, 6, 5, generator=g) * 0.3).cuda().requires_grad_(True)
    w = (torch.randn(3, 6, 5, generator=g) * 0.3).cuda().requires_grad_(True)
    b = (torch.randn(3, 6, generator=g) * 0.3).cuda().requires_grad_(True)

    def grads():
        zk, ld = ops.planar_flow_rows(z, u, w, b)
        return torch.autograd.grad(zk.square().sum() + ld.sum(), (u, w, b))

    ref = grads()
    for _ in range(3):
        for a, c in zip(ref, grads(), strict=True):
            assert torch.equal(a, c)
    cpu = [t.detach().cpu().double().requires_grad_(True) for t in (u, w, b)]
    zk, ld = ops.planar_flow_rows(z.cpu().double(), *cpu)
    exp = torch.autograd.grad(zk.square().sum() + ld.sum(), cpu)
    for a, e in zip(ref, exp, strict=True):
        torch.testing.assert_close(a.cpu().double(), e, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("d", [1, 3, 64, 100, 129, 784])
def test_planar_rows_dims_match_cpu(d):
    g = torch.Generator().manual_seed(d)
    z = torch.randn(3, 50, d, generator=g, dtype=torch.float64)
    u = torch.randn(50, 4, d, generator=g, dtype=torch.float64) * 0.2
    w = torch.randn(50, 4, d, generator=g, dtype=torch.float64) * 0.2
    b = torch.randn(50, 4, generator=g, dtype=torch.float64) * 0.2
    res = {}
    for dev in ("cpu", "cuda"):
        args = [t.to(dev).requires_grad_(True) for t in (z, u, w, b)]
        zk, ld = ops.planar_flow_rows(*args)
        grads = torch.autograd.grad(zk.sin().sum() + ld.sum(), args)
        res[dev] = [zk, ld, *grads]
    for a, c in zip(res["cuda"], res["cpu"], strict=True):
        torch.testing.assert_close(a.detach().cpu(), c.detach(), rtol=1e-10, atol=1e-10)


def test_planar_rows_too_large_dim_raises():
    z = torch.randn(2, 1025, device="cuda")
    u = torch.zeros(2, 1, 1025, device="cuda")
    with pytest.raises(ValueError, match="at most"):
        ops.planar_flow_rows(z, u, u, torch.zeros(2, 1, device="cuda"))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_second_device():
    outs0, grads0 = _run_any("gaussian_log_prob", "cuda:0", torch.float32)
    outs1, grads1 = _run_any("gaussian_log_prob", "cuda:1", torch.float32)
    assert outs1[0].device == torch.device("cuda:1")
    for a, b in zip(outs0 + grads0, outs1 + grads1, strict=True):
        assert torch.equal(a.cpu(), b.cpu())
