"""Flow ops (affine coupling, planar flow, per-row planar flow): inverses, Jacobian
determinants, determinism, single-output gradients."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import DEVICES, DTYPES, assert_close, checkerboard

from dgm_ext import ops
from dgm_ext.ops import reference


# ------------------------------------------------------------------------------ coupling
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_coupling_reverse_inverts_forward(device, dtype):
    g = torch.Generator().manual_seed(0)
    kw = {"dtype": dtype}
    x = torch.randn(3, 2, 4, 4, generator=g).to(device, **kw)
    s = (torch.randn(3, 2, 4, 4, generator=g) * 0.5).to(device, **kw)
    t = torch.randn(3, 2, 4, 4, generator=g).to(device, **kw)
    for mask in (
        checkerboard(4, 4, device, dtype),
        torch.tensor([1.0, 0.0], dtype=dtype, device=device).view(2, 1, 1),
    ):
        y, ld = ops.affine_coupling(x, s, t, mask)
        x2, ld2 = ops.affine_coupling(y, s, t, mask, reverse=True)
        assert_close(x2, x, scale=10)
        assert_close(ld + ld2, torch.zeros_like(ld))
        # masked entries pass through unchanged
        keep = mask.expand_as(x) != 0
        assert torch.equal(y[keep], x[keep])
        # and reverse then forward
        x3, _ = ops.affine_coupling(x, s, t, mask, reverse=True)
        assert_close(ops.affine_coupling(x3, s, t, mask)[0], x, scale=10)


@pytest.mark.parametrize("reverse", [False, True])
def test_coupling_logdet_matches_jacobian(reverse):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 6, generator=g, dtype=torch.float64)
    s = torch.randn(2, 6, generator=g, dtype=torch.float64) * 0.7
    t = torch.randn(2, 6, generator=g, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    _, ld = ops.affine_coupling(x, s, t, mask, reverse)
    for i in range(2):

        def f(xi, i=i):
            return ops.affine_coupling(xi[None], s[i : i + 1], t[i : i + 1], mask, reverse)[0][0]

        jac = torch.autograd.functional.jacobian(f, x[i])
        torch.testing.assert_close(ld[i], torch.linalg.slogdet(jac).logabsdet)


def test_coupling_mask_is_constant():
    """The mask gets no gradient (None) even when it requires grad."""
    x = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    s = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64, requires_grad=True)
    y, ld = ops.affine_coupling(x, s, s, mask)
    (y.sum() + ld.sum()).backward()
    assert mask.grad is None
    assert x.grad is not None and s.grad is not None


def test_coupling_gradcheck_through_round_trip():
    """gradcheck of reverse(forward(x)) w.r.t. x, s, t (exercises both backward directions)."""
    g = torch.Generator().manual_seed(2)
    x, s, t = (
        torch.randn(2, 5, generator=g, dtype=torch.float64).requires_grad_() for _ in range(3)
    )
    mask = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0], dtype=torch.float64)

    def f(x, s, t):
        y, ld = ops.affine_coupling(x, s, t, mask)
        return ops.affine_coupling(y, s * 0.5, t, mask, reverse=True)[0], ld

    assert torch.autograd.gradcheck(f, (x, s, t))


# ------------------------------------------------------------------------------ planar flow
def _small_planar(n=4, d=3, k=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g, dtype=dtype)
    u = torch.randn(k, d, generator=g, dtype=dtype) * 0.5
    w = torch.randn(k, d, generator=g, dtype=dtype) * 0.5
    b = torch.randn(k, generator=g, dtype=dtype) * 0.5
    return z, u, w, b


def test_planar_logdet_matches_autograd_jacobian():
    z, u, w, b = _small_planar()
    zk, ld = ops.planar_flow(z, u, w, b)
    for i in range(z.shape[0]):

        def f(zi):
            return ops.planar_flow(zi[None], u, w, b)[0][0]

        jac = torch.autograd.functional.jacobian(f, z[i])
        torch.testing.assert_close(ld[i], torch.linalg.slogdet(jac).logabsdet)
        assert_close(zk[i], f(z[i]))


def test_planar_negative_determinant_uses_abs():
    """u·w < -1 makes 1 + h'·u·w negative for small pre-activations; log|.| stays finite."""
    z = torch.zeros(2, 2, dtype=torch.float64)
    u = torch.tensor([[-3.0, 0.0]], dtype=torch.float64)
    w = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    b = torch.zeros(1, dtype=torch.float64)
    _, ld = ops.planar_flow(z, u, w, b)
    torch.testing.assert_close(
        ld, torch.full((2,), torch.log(torch.tensor(2.0)).item(), dtype=torch.float64)
    )


def test_planar_layers_applied_in_order():
    z, u, w, b = _small_planar(k=2)
    z1, ld1 = ops.planar_flow(z, u[:1], w[:1], b[:1])
    z2, ld2 = ops.planar_flow(z1, u[1:], w[1:], b[1:])
    zk, ld = ops.planar_flow(z, u, w, b)
    torch.testing.assert_close(zk, z2)
    torch.testing.assert_close(ld, ld1 + ld2)


def _planar_param_grads(n=2048, d=8, k=6):
    z, u, w, b = _small_planar(n, d, k, dtype=torch.float32, seed=5)
    z.requires_grad_()
    u.requires_grad_()
    w.requires_grad_()
    b.requires_grad_()
    zk, ld = ops.planar_flow(z, u, w, b)
    gw = torch.randn(n, d, generator=torch.Generator().manual_seed(9))
    return torch.autograd.grad((zk * gw).sum() + ld.sum(), (z, u, w, b))


def test_planar_backward_deterministic():
    """Parameter grads are bit-identical run to run and across thread counts (the kernel sums
    fixed blocks in a fixed order)."""
    first = _planar_param_grads()
    again = _planar_param_grads()
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a, b)
    old = torch.get_num_threads()
    try:
        results = {}
        for nt in (1, 2):
            torch.set_num_threads(nt)
            results[nt] = _planar_param_grads()
    finally:
        torch.set_num_threads(old)
    for a, b in zip(results[1], results[2], strict=True):
        assert torch.equal(a, b)


def test_planar_zero_layers_is_identity():
    z = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    e = torch.zeros(0, 2, dtype=torch.float64, requires_grad=True)
    eb = torch.zeros(0, dtype=torch.float64, requires_grad=True)
    zk, ld = ops.planar_flow(z, e, e, eb)
    torch.testing.assert_close(zk, z.detach())
    torch.testing.assert_close(ld, torch.zeros(3, dtype=torch.float64))
    (gz,) = torch.autograd.grad((zk * 2).sum() + ld.sum(), (z,))
    torch.testing.assert_close(gz, torch.full_like(z, 2.0))


def _single_output_grads(fn, args, diff, which, seed=0):
    """Gradients w.r.t. args[diff] of a random linear functional of output ``which`` only
    (autograd hands the op's backward None for the other output)."""
    args = [
        a.detach().requires_grad_(i in diff) if torch.is_tensor(a) else a
        for i, a in enumerate(args)
    ]
    out = fn(*args)[which]
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out.shape, generator=g, dtype=torch.float64).to(out.device, out.dtype)
    return torch.autograd.grad(
        (out * weight).sum(), [args[i] for i in diff], allow_unused=True, materialize_grads=True
    )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", [0, 1], ids=["only_z", "only_logdet"])
def test_planar_single_output_grads_match_reference(device, which):
    """Only z_K (grad_logdet None) or only logdet (grad_z None) in the loss: every gradient
    equals the pure-PyTorch reference's (a None treated as anything but zeros shows up)."""
    z, u, w, b = (t.to(device) for t in _small_planar())
    got = _single_output_grads(ops.planar_flow, (z, u, w, b), [0, 1, 2, 3], which)
    exp = _single_output_grads(reference.planar_flow, (z, u, w, b), [0, 1, 2, 3], which)
    for name, g, e in zip("zuwb", got, exp, strict=True):
        torch.testing.assert_close(g, e, msg=lambda m, name=name: f"grad {name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("which", [0, 1], ids=["only_y", "only_logdet"])
def test_coupling_single_output_grads_match_reference(device, reverse, which):
    """Only y (grad_logdet None) or only logdet (grad_y None) in the loss, both directions:
    the gradients of x, s, t equal the reference's."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64)
    s = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64) * 0.5
    t = torch.randn(3, 1, 4, 4, generator=g, dtype=torch.float64)  # broadcast over channels
    mask = checkerboard(4, 4, dtype=torch.float64)
    args = [a.to(device) for a in (x, s, t, mask)] + [reverse]
    got = _single_output_grads(ops.affine_coupling, args, [0, 1, 2], which)
    exp = _single_output_grads(reference.affine_coupling, args, [0, 1, 2], which)
    for name, gr, e in zip("xst", got, exp, strict=True):
        torch.testing.assert_close(gr, e, msg=lambda m, name=name: f"grad {name}: {m}")


# ------------------------------------------------------------------------------ per-row planar flow
# planar_flow_rows: z (*S, N, d), u and w (N, K, d), b (N, K); row n of every sample uses the
# parameters n. The generic coverage (independent reference, dgm_ext reference, gradcheck,
# opcheck, empty/broadcast/non-contiguous samples, both CPU kernel tables) comes from its
# sample_inputs in _helpers.py; here: what is particular to this op.
def _rows_inputs(samples=(3,), n=5, k=3, d=4, dtype=torch.float64, seed=0, scale=0.5):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(*samples, n, d, generator=g, dtype=torch.float64)
    u = torch.randn(n, k, d, generator=g, dtype=torch.float64) * scale
    w = torch.randn(n, k, d, generator=g, dtype=torch.float64) * scale
    b = torch.randn(n, k, generator=g, dtype=torch.float64) * scale
    return [t.to(dtype) for t in (z, u, w, b)]


def _rows_loop_reference(z, u, w, b):
    """Row by row with explicit indices (sample s, row i -> parameters i), scalar dot products:
    independent of both the kernels and reference.py. Differentiable by autograd."""
    n, d = z.shape[-2], z.shape[-1]
    flat = z.reshape(-1, n, d)
    outs, lds = [], []
    for s in range(flat.shape[0]):
        for i in range(n):
            zi, ld = flat[s, i], z.new_zeros(())
            for k in range(u.shape[1]):
                h = torch.tanh(torch.dot(w[i, k], zi) + b[i, k])
                ld = ld + torch.log(torch.abs(1 + (1 - h * h) * torch.dot(u[i, k], w[i, k])))
                zi = zi + u[i, k] * h
            outs.append(zi)
            lds.append(ld)
    return torch.stack(outs).reshape(z.shape), torch.stack(lds).reshape(z.shape[:-1])


def _outputs_and_grads(fn, args, seed=0):
    """Outputs of fn and the gradients of a fixed random linear functional of both outputs."""
    leaves = [a.detach().requires_grad_() for a in args]
    zk, ld = fn(*leaves)
    g = torch.Generator().manual_seed(seed)
    wz = torch.randn(zk.shape, generator=g, dtype=torch.float64).to(zk.device, zk.dtype)
    wl = torch.randn(ld.shape, generator=g, dtype=torch.float64).to(ld.device, ld.dtype)
    grads = torch.autograd.grad((zk * wz).sum() + (ld * wl).sum(), leaves)
    return [zk.detach(), ld.detach(), *grads]


_ROWS_NAMES = ["z_K", "logdet", "grad z", "grad u", "grad w", "grad b"]
_ROWS_TOL = {torch.float32: {"rtol": 1e-4, "atol": 1e-4}, torch.float64: {}}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("samples", [(), (3,), (2, 3)], ids=["no_samples", "samples", "samples_2d"])
def test_planar_rows_matches_float64_autograd_reference(device, dtype, samples):
    """z_K, logdet and all four gradients against the row-by-row loop in float64 under
    autograd; with *S the parameter gradients are sums over every sample."""
    args = _rows_inputs(samples)
    exp = _outputs_and_grads(_rows_loop_reference, args)
    got = _outputs_and_grads(ops.planar_flow_rows, [a.to(device, dtype) for a in args])
    for name, g, e in zip(_ROWS_NAMES, got, exp, strict=True):
        assert g.dtype == dtype and g.shape == e.shape, name
        torch.testing.assert_close(
            g.cpu().double(), e, **_ROWS_TOL[dtype], msg=lambda m, name=name: f"{name}: {m}"
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_planar_rows_equal_parameters_match_shared_op(device, dtype):
    """Every row with the same (u, w, b): the per-row op is the shared-parameter planar_flow
    on the flattened rows, values and gradients (u, w, b expanded over the rows, so autograd
    adds their per-row gradients up)."""
    z = _rows_inputs((2, 3), n=4, k=3, d=5)[0].to(device, dtype)
    g = torch.Generator().manual_seed(1)
    u, w, b = (
        (torch.randn(*s, generator=g, dtype=torch.float64) * 0.5).to(device, dtype)
        for s in ((3, 5), (3, 5), (3,))
    )
    n = z.shape[-2]

    def rows(z, u, w, b):
        return ops.planar_flow_rows(z, u.expand(n, *u.shape), w.expand(n, *w.shape), b.expand(n, 3))

    def shared(z, u, w, b):
        zk, ld = ops.planar_flow(z.reshape(-1, z.shape[-1]), u, w, b)
        return zk.reshape(z.shape), ld.reshape(z.shape[:-1])

    got = _outputs_and_grads(rows, [z, u, w, b])
    exp = _outputs_and_grads(shared, [z, u, w, b])
    for name, a, e in zip(_ROWS_NAMES, got, exp, strict=True):
        assert_close(a, e, dtype, scale=10, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("which", [0, 1], ids=["only_z", "only_logdet"])
def test_planar_rows_single_output_grads_match_reference(device, which):
    """Only z_K (grad_logdet None) or only logdet (grad_z None) in the loss: the gradients
    equal the reference's (a None treated as anything but zeros shows up)."""
    args = [t.to(device) for t in _rows_inputs((2,))]
    got = _single_output_grads(ops.planar_flow_rows, args, [0, 1, 2, 3], which)
    exp = _single_output_grads(reference.planar_flow_rows, args, [0, 1, 2, 3], which)
    for name, g, e in zip("zuwb", got, exp, strict=True):
        torch.testing.assert_close(g, e, msg=lambda m, name=name: f"grad {name}: {m}")


def test_planar_rows_needs_mask_returns_only_what_is_asked():
    """The backward op computes only the requested gradients (empty tensors for the others),
    and a requested one is bit-identical whatever else is requested."""
    z, u, w, b = _rows_inputs((3,), dtype=torch.float32)
    z_out, logdet, act = torch.ops.dgm_ext.planar_flow_rows(z, u, w, b)
    gz, gl = torch.randn_like(z_out), torch.randn_like(logdet)
    full = torch.ops.dgm_ext.planar_flow_rows_backward(gz, gl, z_out, act, u, w, b, [True] * 4)
    for i in range(4):
        needs = [j == i for j in range(4)]
        part = torch.ops.dgm_ext.planar_flow_rows_backward(gz, gl, z_out, act, u, w, b, needs)
        for j, t in enumerate(part):
            if j == i:
                assert torch.equal(t, full[j]), (i, j)
            else:
                assert t.numel() == 0, (i, j)


def _rows_param_grads(samples=(700,), n=3, k=4, d=9):
    """float32 gradients with 700 samples: three blocks of the CPU reduction over *S."""
    args = _rows_inputs(samples, n, k, d, dtype=torch.float32, seed=5, scale=0.3)
    return _outputs_and_grads(ops.planar_flow_rows, args, seed=9)[2:]


def test_planar_rows_backward_deterministic():
    """Gradients are bit-identical run to run and at 1 and 2 threads (sample blocks of a fixed
    size summed in a fixed order), and right (float64 loop reference)."""
    first = _rows_param_grads()
    for a, b in zip(first, _rows_param_grads(), strict=True):
        assert torch.equal(a, b)
    old = torch.get_num_threads()
    try:
        results = {}
        for nt in (1, 2):
            torch.set_num_threads(nt)
            results[nt] = _rows_param_grads()
    finally:
        torch.set_num_threads(old)
    for a, b in zip(results[1], results[2], strict=True):
        assert torch.equal(a, b)
    args = _rows_inputs((700,), 3, 4, 9, seed=5, scale=0.3)
    exp = _outputs_and_grads(reference.planar_flow_rows, args, seed=9)[2:]
    for name, g, e in zip("zuwb", first, exp, strict=True):
        torch.testing.assert_close(
            g.double(), e, rtol=1e-4, atol=1e-3, msg=lambda m, name=name: f"grad {name}: {m}"
        )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_planar_rows_extreme_inputs(device, dtype):
    """Saturated tanh (|w·z + b| ~ 1e3: h = ±1, det = 1), a determinant near 0 (u·w = -1 + 1e-3
    at h = 0) and a negative one (u·w = -3 at h = 0): finite values and gradients equal to the
    float64 reference's."""
    d = 3
    z = torch.tensor([[[1e3, -1e3, 2.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    w = torch.zeros(3, 1, d, dtype=torch.float64)
    w[0, 0] = torch.tensor([1.0, -1.0, 0.5])
    w[1, 0, 0] = w[2, 0, 0] = 1.0
    u = torch.zeros(3, 1, d, dtype=torch.float64)
    u[0, 0] = torch.tensor([0.3, 0.2, -0.1])
    u[1, 0, 0] = -1.0 + 1e-3
    u[2, 0, 0] = -3.0
    b = torch.zeros(3, 1, dtype=torch.float64)
    args = [z, u, w, b]
    exp = _outputs_and_grads(_rows_loop_reference, args)
    got = _outputs_and_grads(ops.planar_flow_rows, [a.to(device, dtype) for a in args])
    torch.testing.assert_close(
        exp[1], torch.tensor([[0.0, math.log(1e-3), math.log(2.0)]], dtype=torch.float64)
    )
    for name, g, e in zip(_ROWS_NAMES, got, exp, strict=True):
        assert torch.isfinite(g).all(), name
        # the near-singular row's gradients are ~1e3: relative tolerance of float32 rounding
        tol = {"rtol": 1e-3, "atol": 1e-3} if dtype == torch.float32 else {}
        torch.testing.assert_close(
            g.cpu().double(), e, **tol, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_planar_rows_parameters_are_not_expanded_over_samples():
    """No allocation inside the forward or backward op is as large as the parameters expanded
    over the samples (S N K d); the largest is the output z_K / grad_z (S N d)."""
    from torch.profiler import ProfilerActivity, profile

    S, n, k, d = 64, 8, 16, 32
    z, u, w, b = _rows_inputs((S,), n, k, d)
    lib = torch.ops.dgm_ext
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        z_out, logdet, act = lib.planar_flow_rows(z, u, w, b)
        lib.planar_flow_rows_backward(
            torch.ones_like(z_out), torch.ones_like(logdet), z_out, act, u, w, b, [True] * 4
        )
    ops_seen = {e.name for e in prof.events()}
    assert {"dgm_ext::planar_flow_rows", "dgm_ext::planar_flow_rows_backward"} <= ops_seen
    largest = max(e.cpu_memory_usage for e in prof.events() if not e.name.startswith("dgm_ext::"))
    assert largest <= z.numel() * z.element_size() < S * n * k * d * 8


def _rows_compile_fn(mod):
    def f(z, u, w, b):
        zk, ld = mod.planar_flow_rows(z, u, w, b)
        return (zk**2).sum(-1) + ld

    return f


def test_planar_rows_compile_fullgraph():
    torch._dynamo.reset()
    args = _rows_inputs((2,), dtype=torch.float32)
    eager_in = [a.clone().requires_grad_() for a in args]
    comp_in = [a.clone().requires_grad_() for a in args]
    exp = _rows_compile_fn(ops)(*eager_in)
    exp.sum().backward()
    got = torch.compile(_rows_compile_fn(ops), fullgraph=True)(*comp_in)
    got.sum().backward()
    torch.testing.assert_close(got, exp)
    for a, e in zip(comp_in, eager_in, strict=True):
        torch.testing.assert_close(a.grad, e.grad)
    torch._dynamo.reset()


@pytest.mark.parametrize("device", DEVICES)
def test_planar_rows_compile_dynamic_sizes(device):
    """fullgraph, dynamic=True, forward and backward, for three (S, N) sizes: the fake kernels
    keep S and N symbolic (no recompilation) and the results equal the reference's."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    f = torch.compile(_rows_compile_fn(ops), backend=counter, fullgraph=True, dynamic=True)
    f_ref = _rows_compile_fn(reference)
    frames = 0
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for s, n in ((5, 7), (6, 9), (11, 13)):
                args = [a.to(device) for a in _rows_inputs((s,), n, 3, 4, dtype=torch.float32)]
                got_in = [a.clone().requires_grad_() for a in args]
                exp_in = [a.clone().requires_grad_() for a in args]
                got, exp = f(*got_in), f_ref(*exp_in)
                torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-4)
                got.sum().backward()
                exp.sum().backward()
                for a, e in zip(got_in, exp_in, strict=True):
                    torch.testing.assert_close(a.grad, e.grad, rtol=1e-4, atol=1e-4)
                frames = frames or counter.frame_count
        assert counter.frame_count == frames, f"{counter.frame_count - frames} recompilations"
    finally:
        torch._dynamo.reset()
