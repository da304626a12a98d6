"""Tests shared by all the ops, driven by the per-op ``sample_inputs`` of ``_helpers``.

Values against independent references (torch.distributions / closed forms / autograd
Jacobians) and against ``dgm_ext.ops.reference``; float64 gradcheck; float32 gradient
agreement; ``torch.library.opcheck`` of the forward and backward operators;
``torch.compile(fullgraph=True)``; both CPU kernel tables; ``build_info``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributions as D
from _helpers import (
    DEVICES,
    DTYPES,
    LIB,
    OP_NAMES,
    SAMPLES,
    Sample,
    as_tuple,
    assert_close,
    call,
    device_dtype_params,
    grads_of,
    isa_payload,
    public,
    ref,
    tol,
)

import dgm_ext

# ------------------------------------------------------------------------------ independent refs


def _ind_bernoulli(logits, x):
    logits, x = torch.broadcast_tensors(logits, x)
    return D.Bernoulli(logits=logits, validate_args=False).log_prob(x).sum(-1)


def _ind_gaussian(x, mean, logvar):
    x, mean, logvar = torch.broadcast_tensors(x, mean, logvar)
    return D.Normal(mean, torch.exp(logvar).sqrt(), validate_args=False).log_prob(x).sum(-1)


def _ind_beta(x, alpha, beta, eps=1e-6):
    x, alpha, beta = torch.broadcast_tensors(x, alpha, beta)
    d = D.Beta(alpha, beta, validate_args=False)
    return d.log_prob(x.clamp(eps, 1 - eps)).sum(-1)


def _ind_categorical(logits, x):
    shape = torch.broadcast_shapes(logits.shape[:-1], x.shape)
    logits = logits.expand(*shape, logits.shape[-1])
    return D.Categorical(logits=logits, validate_args=False).log_prob(x.expand(shape)).sum(-1)


def _normal(mu, logvar):
    return D.Normal(mu, torch.exp(logvar).sqrt(), validate_args=False)


def _kl_independent(q, p):
    # kl of Independent(Normal, 1) (its _sum_rightmost cannot reshape 0-element tensors)
    if q.mean.numel() == 0:
        return q.mean.sum(-1)
    return D.kl_divergence(D.Independent(q, 1), D.Independent(p, 1))


def _ind_kl_std(mu, logvar):
    mu, logvar = torch.broadcast_tensors(mu, logvar)
    z = torch.zeros_like(mu)
    return _kl_independent(_normal(mu, logvar), _normal(z, z))


def _ind_kl(mu_q, logvar_q, mu_p, logvar_p):
    mu_q, logvar_q, mu_p, logvar_p = torch.broadcast_tensors(mu_q, logvar_q, mu_p, logvar_p)
    return _kl_independent(_normal(mu_q, logvar_q), _normal(mu_p, logvar_p))


def _ind_reparam(mu, logvar, eps):
    return mu + torch.exp(logvar).sqrt() * eps


def _ind_coupling(x, s, t, mask, reverse=False):
    keep = torch.broadcast_to(mask, x.shape) != 0
    s_full = torch.broadcast_to(s, x.shape)
    if reverse:
        y = torch.where(keep, x, (x - t) / torch.exp(s))
        ld = -torch.where(keep, torch.zeros_like(s_full), s_full).flatten(1).sum(1)
    else:
        y = torch.where(keep, x, x * torch.exp(s) + t)
        ld = torch.where(keep, torch.zeros_like(s_full), s_full).flatten(1).sum(1)
    return y, ld


def _planar_row(z, u, w, b):
    for k in range(u.shape[0]):
        z = z + u[k] * torch.tanh(torch.dot(w[k], z) + b[k])
    return z


def _ind_planar(z, u, w, b):
    """z_K by the plain recursion; logdet = log|det| of the autograd Jacobian per row."""
    if z.shape[0] == 0:
        return z.clone(), z.new_zeros(0)
    zk = torch.stack([_planar_row(r, u, w, b) for r in z])
    jac = torch.func.vmap(torch.func.jacrev(_planar_row), in_dims=(0, None, None, None))(z, u, w, b)
    return zk, torch.linalg.slogdet(jac).logabsdet


def _ind_planar_rows(z, u, w, b):
    """Row i of every sample through u[i], w[i], b[i] by the plain recursion; logdet = log|det|
    of the autograd Jacobian of each row."""
    n, d = z.shape[-2], z.shape[-1]
    if z.numel() == 0:
        return z.clone(), z.new_zeros(z.shape[:-1])
    flat = z.reshape(-1, n, d)
    zk = torch.stack(
        [torch.stack([_planar_row(zs[i], u[i], w[i], b[i]) for i in range(n)]) for zs in flat]
    )
    per_row = torch.func.vmap(torch.func.jacrev(_planar_row))  # over the N parameter rows
    jac = torch.func.vmap(per_row, in_dims=(0, None, None, None))(flat, u, w, b)
    return zk.reshape(z.shape), torch.linalg.slogdet(jac).logabsdet.reshape(z.shape[:-1])


INDEPENDENT = {
    "bernoulli_log_prob": _ind_bernoulli,
    "gaussian_log_prob": _ind_gaussian,
    "beta_log_prob": _ind_beta,
    "categorical_log_prob": _ind_categorical,
    "kl_normal_std": _ind_kl_std,
    "kl_normal": _ind_kl,
    "reparameterize": _ind_reparam,
    "affine_coupling": _ind_coupling,
    "planar_flow": _ind_planar,
    "planar_flow_rows": _ind_planar_rows,
}


def _samples(name, device, dtype, requires_grad=False):
    return list(SAMPLES[name](device, dtype, requires_grad))


def _ids(name):
    return [s.desc for s in _samples(name, "cpu", torch.float64)]


ALL_CASES = [(n, i) for n in OP_NAMES for i in _ids(n)]


def _get(name, desc, device, dtype, requires_grad):
    for s in SAMPLES[name](device, dtype, requires_grad):
        if s.desc == desc:
            return s
    raise KeyError(desc)


# ------------------------------------------------------------------------------ values
@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("name", OP_NAMES)
def test_matches_independent_reference(name, device, dtype):
    for s in _samples(name, device, dtype):
        got = as_tuple(call(public(name), s))
        with torch.no_grad():
            exp = as_tuple(call(INDEPENDENT[name], s))
        assert len(got) == len(exp), s
        for g, e in zip(got, exp, strict=True):
            assert g.shape == e.shape, (s, g.shape, e.shape)
            assert g.dtype == dtype and g.device.type == device
            assert_close(g, e, dtype, scale=20, msg=lambda m, s=s: f"{s}: {m}")


@pytest.mark.parametrize("device,dtype", device_dtype_params())
@pytest.mark.parametrize("name", OP_NAMES)
def test_matches_dgm_ext_reference(name, device, dtype):
    for s in _samples(name, device, dtype):
        got = as_tuple(call(public(name), s))
        exp = as_tuple(call(ref(name), s))
        for g, e in zip(got, exp, strict=True):
            assert g.shape == e.shape, (s, g.shape, e.shape)
            assert_close(g, e, dtype, scale=5, msg=lambda m, s=s: f"{s}: {m}")


@pytest.mark.parametrize("name", OP_NAMES)
def test_output_shapes(name):
    """Row ops return the broadcast batch shape; flows keep z's shape and give (N,) logdets."""
    for s in _samples(name, "cpu", torch.float32):
        outs = as_tuple(call(public(name), s))
        tensors = [a for a in s.args if isinstance(a, torch.Tensor)]
        if name == "categorical_log_prob":
            full = torch.broadcast_shapes(s.args[0].shape[:-1], s.args[1].shape)
            assert outs[0].shape == full[:-1], s
        elif name == "reparameterize":
            assert outs[0].shape == torch.broadcast_shapes(*(t.shape for t in tensors)), s
        elif name in ("affine_coupling", "planar_flow"):
            assert outs[0].shape == s.args[0].shape, s
            assert outs[1].shape == s.args[0].shape[:1], s
        elif name == "planar_flow_rows":  # z (*S, N, d) -> z_K (*S, N, d), logdet (*S, N)
            assert outs[0].shape == s.args[0].shape, s
            assert outs[1].shape == s.args[0].shape[:-1], s
        else:
            full = torch.broadcast_shapes(*(t.shape for t in tensors))
            assert outs[0].shape == full[:-1], s
        for o in outs:
            assert torch.isfinite(o).all(), s


# ------------------------------------------------------------------------------ gradients
def _gradcheck_sample(name, s: Sample):
    idx = s.diff_inputs()
    fn = public(name)

    def f(*diff):
        args = list(s.args)
        for i, t in zip(idx, diff, strict=True):
            args[i] = t
        return fn(*args, **s.kwargs)

    assert torch.autograd.gradcheck(f, tuple(s.args[i] for i in idx), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name,desc", ALL_CASES)
def test_gradcheck(name, desc, device):
    s = _get(name, desc, device, torch.float64, True)
    if not s.grad_ok:
        pytest.skip("overlapping-memory input: gradcheck cannot perturb it")
    if any(a.numel() == 0 for a in s.args if isinstance(a, torch.Tensor)):
        pytest.skip("empty input: covered by test_empty_gradients")
    _gradcheck_sample(name, s)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_gradcheck_partial_inputs(name, device):
    """Only one input requires grad at a time (exercises the `needs` masks)."""
    s = _get(
        name,
        "plain" if name not in ("affine_coupling",) else "plain_fwd",
        device,
        torch.float64,
        True,
    )
    for i in s.diff_inputs():
        args = tuple(
            a.detach().requires_grad_(j == i) if isinstance(a, torch.Tensor) else a
            for j, a in enumerate(s.args)
        )
        _gradcheck_sample(name, Sample(s.desc, args, s.kwargs))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_gradients_match_reference_float32(name, device):
    for s in _samples(name, device, torch.float32, True):
        _, got = grads_of(public(name), s)
        s2 = s.detached()
        _, exp = grads_of(ref(name), s2)
        for g, e, i in zip(got, exp, s.diff_inputs(), strict=True):
            assert g.shape == s.args[i].shape, (s, i, g.shape)
            assert_close(g, e, torch.float32, scale=10, msg=lambda m, s=s, i=i: f"{s} arg{i}: {m}")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_expanded_output_gradients(name, device):
    """The gradient of out.sum() / out.mean() reaches the backward expanded (stride 0), which
    the kernels read in place (and reparameterize's backward also writes mu's gradient in its
    pass): the input gradients equal those from the same values materialised."""
    for s in _samples(name, device, torch.float64, True):
        outs = as_tuple(public(name)(*s.args, **s.kwargs))
        if any(o.numel() == 0 for o in outs):
            continue
        inputs = [s.args[i] for i in s.diff_inputs()]
        expanded = [torch.tensor(0.5 + k, dtype=o.dtype, device=device).expand(o.shape)
                    for k, o in enumerate(outs)]  # fmt: skip
        got = torch.autograd.grad(outs, inputs, expanded, retain_graph=True)
        dense = [g.contiguous() for g in expanded]
        want = torch.autograd.grad(outs, inputs, dense)
        for g, w, i in zip(got, want, s.diff_inputs(), strict=True):
            assert g.shape == s.args[i].shape, (s, i)
            torch.testing.assert_close(g, w, msg=lambda m, s=s, i=i: f"{s} arg{i}: {m}")


@pytest.mark.parametrize("name", OP_NAMES)
def test_autograd_runs_in_cpp(name):
    """Every op's autograd is its C++ kernel (csrc/common/autograd.cpp): the graph node is a
    CppNode, not the Python node of torch.library.register_autograd, whose host cost (~0.2 ms
    per fwd+bwd) exceeded the kernels' at training sizes."""
    s = next(iter(_samples(name, "cpu", torch.float64, True)))
    out = public(name)(*s.args, **s.kwargs)
    first = out[0] if isinstance(out, tuple) else out
    assert first.grad_fn is not None
    assert first.grad_fn.name().startswith("torch::autograd::CppNode<dgm_ext::"), first.grad_fn


@pytest.mark.parametrize("name", OP_NAMES)
def test_empty_gradients(name):
    """Empty batch: zero-size outputs and gradients of the input shapes (zeros where an input
    is broadcast over the empty batch)."""
    for s in _samples(name, "cpu", torch.float64, True):
        if not any(a.numel() == 0 for a in s.args if isinstance(a, torch.Tensor)):
            continue
        _, gs = grads_of(public(name), s)
        _, exp = grads_of(ref(name), s.detached())
        for g, e, i in zip(gs, exp, s.diff_inputs(), strict=True):
            assert g.shape == s.args[i].shape, (s, i)
            torch.testing.assert_close(g, e)


# Regression: with an empty batch, an input that does not require grad gets the empty (0,)
# placeholder from the backward op; it must not be summed to the input's shape.
@pytest.mark.parametrize("name", ["gaussian_log_prob", "bernoulli_log_prob", "kl_normal"])
def test_empty_batch_backward_with_constant_input(name):
    s = _get(name, "empty_batch", "cpu", torch.float64, True)
    args = tuple(a.detach().requires_grad_(i != 0) for i, a in enumerate(s.args))
    out = public(name)(*args)
    out.sum().backward()
    for a in args[1:]:
        assert a.grad is not None and a.grad.shape == a.shape


# Regression: a parameter broadcast over an empty batch (mean (D,) with x (0, D)) gets
# zeros(D), not None.
def test_empty_batch_broadcast_param_grad_is_zero():
    x = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    mean = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    logvar = torch.zeros(0, 3, dtype=torch.float64, requires_grad=True)
    dgm_ext.ops.gaussian_log_prob(x, mean, logvar).sum().backward()
    assert mean.grad is not None, "expected zeros(3), got None"
    torch.testing.assert_close(mean.grad, torch.zeros(3, dtype=torch.float64))


# ------------------------------------------------------------------------------ opcheck
_OPCHECK_DESCS = {
    "plain",
    "bcast_D",
    "transposed",
    "empty_batch",
    "bcast_x_batch",
    "transposed_classes",
    "plain_fwd",
    "image_checker_rev",
    "image_channel_bcast_fwd",
    "no_layers",
    "samples",
    "samples_2d",
}


def _opcheck_samples(name, device):
    for dtype in (torch.float32,):
        for s in SAMPLES[name](device, dtype, True):
            if s.desc in _OPCHECK_DESCS:
                yield s


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_opcheck_forward(name, device):
    op = getattr(LIB, name).default
    for s in _opcheck_samples(name, device):
        args = list(s.args)
        if name == "beta_log_prob":
            args.append(float(s.kwargs.get("eps", 1e-6)))
        torch.library.opcheck(op, tuple(args))


def _backward_args(name, s: Sample, needs_pattern=None):
    """Arguments of the dgm_ext::<name>_backward op for sample s (inputs detached)."""
    g = torch.Generator().manual_seed(5)
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in s.args]
    fwd = as_tuple(getattr(LIB, name)(*args, *([1e-6] if name == "beta_log_prob" else [])))

    def like(t):
        return torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.device, t.dtype)

    if name == "categorical_log_prob":
        return (like(fwd[0]), args[0], args[1], fwd[1])
    if name == "planar_flow":
        return (like(fwd[0]), like(fwd[1]), fwd[0], fwd[2], *args[1:])
    if name == "planar_flow_rows":
        needs = list(needs_pattern or [True] * 4)[:4]
        return (like(fwd[0]), like(fwd[1]), fwd[0], fwd[2], *args[1:], needs)
    if name == "affine_coupling":
        needs = (needs_pattern or [True, True, True])[:3]
        return (like(fwd[0]), like(fwd[1]), *args[:5], needs)
    n = len(args)
    needs = needs_pattern[:n] if needs_pattern else [True] * n
    if name == "beta_log_prob":
        return (like(fwd[0]), *args, 1e-6, needs)
    return (like(fwd[0]), *args, needs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", OP_NAMES)
def test_opcheck_backward(name, device):
    op = getattr(LIB, f"{name}_backward").default
    for s in _opcheck_samples(name, device):
        torch.library.opcheck(op, _backward_args(name, s))
        if name not in ("categorical_log_prob", "planar_flow") and s.desc.startswith("plain"):
            torch.library.opcheck(op, _backward_args(name, s, [False, True, False, True]))


def test_backward_op_needs_mask_returns_empty_for_unrequested():
    s = _get("gaussian_log_prob", "plain", "cpu", torch.float64, False)
    gx, gm, glv = LIB.gaussian_log_prob_backward(
        *_backward_args("gaussian_log_prob", s, [False, True, False])
    )
    assert gx.numel() == 0 and glv.numel() == 0 and gm.shape == (4, 5)


# ------------------------------------------------------------------------------ torch.compile
def _compiled_matches_eager(fn, inputs):
    torch._dynamo.reset()
    eager_in = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    comp_in = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    exp = fn(*eager_in)
    exp.backward()
    got = torch.compile(fn, fullgraph=True)(*comp_in)
    got.backward()
    torch.testing.assert_close(got, exp)
    for a, b in zip(comp_in, eager_in, strict=True):
        if b.is_floating_point():
            torch.testing.assert_close(a.grad, b.grad)
    torch._dynamo.reset()


def test_compile_likelihoods():
    ops = dgm_ext.ops
    torch.manual_seed(0)

    def f(logits, x01, mean, logvar, xb, a, b, clog, cx):
        return (
            ops.bernoulli_log_prob(logits, x01).sum()
            + ops.gaussian_log_prob(x01, mean, logvar).sum()
            + ops.beta_log_prob(xb, a, b, eps=1e-5).sum()
            + ops.categorical_log_prob(clog, cx).sum()
        )

    ins = [
        torch.randn(3, 4),
        torch.rand(3, 4),
        torch.randn(4),
        torch.randn(3, 4) * 0.3,
        torch.rand(3, 4) * 0.8 + 0.1,
        torch.rand(3, 4) + 0.5,
        torch.rand(3, 1) + 0.5,
        torch.randn(3, 4, 5),
        torch.randint(0, 5, (3, 4)),
    ]
    _compiled_matches_eager(f, ins)


def test_compile_kl_reparam_flows():
    ops = dgm_ext.ops
    torch.manual_seed(0)

    def f(mu, logvar, mu_p, logvar_p, eps, x, s, t, mask, u, w, b):
        z = ops.reparameterize(mu, logvar, eps)
        y, ld = ops.affine_coupling(x, s, t, mask)
        x2, ld2 = ops.affine_coupling(y, s, t, mask, reverse=True)
        zk, ld3 = ops.planar_flow(z, u, w, b)
        return (
            ops.kl_normal_std(mu, logvar).sum()
            + ops.kl_normal(mu, logvar, mu_p, logvar_p).sum()
            + (zk**2).sum()
            + ld3.sum()
            + (x2 * y).sum()
            + ld.sum()
            + ld2.sum()
        )

    ins = [
        torch.randn(3, 4),
        torch.randn(3, 4) * 0.3,
        torch.randn(4),
        torch.randn(1, 4) * 0.3,
        torch.randn(3, 4),
        torch.randn(2, 6),
        torch.randn(2, 6) * 0.3,
        torch.randn(6),
        torch.tensor([1.0, 0, 1, 0, 1, 0]),
        torch.randn(2, 4) * 0.3,
        torch.randn(2, 4) * 0.3,
        torch.randn(2) * 0.3,
    ]
    _compiled_matches_eager(f, ins)


def _dynamic_batch_inputs(n: int, device: str) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(n)

    def rn(*shape, scale=1.0):
        return (torch.randn(shape, generator=g) * scale).to(device)

    def ru(*shape, lo=0.0, hi=1.0):
        return (torch.rand(shape, generator=g) * (hi - lo) + lo).to(device)

    return [
        rn(n, 3),  # bernoulli logits
        ru(n, 3),  # bernoulli x / gaussian x
        rn(3),  # gaussian mean (broadcast over the batch)
        rn(n, 3, scale=0.3),  # logvar
        ru(n, 3, lo=0.1, hi=0.9),  # beta x
        ru(n, 3, lo=0.5, hi=2.0),  # beta alpha
        rn(n, 3, 4),  # categorical logits
        torch.randint(0, 4, (n, 3), generator=g).to(device),  # categorical x
        rn(n, 4),  # coupling x / planar z
        rn(n, 4, scale=0.3),  # coupling s
        torch.tensor([1.0, 0.0, 1.0, 0.0], device=device),  # coupling mask
        rn(2, 4, scale=0.3),  # planar u
        rn(2, 4, scale=0.3),  # planar w
        rn(2, scale=0.3),  # planar b
    ]


def _dynamic_batch_fn(mod):
    def f(logits, x01, mean, logvar, xb, ab, clog, cx, z, s, mask, u, w, b):
        y, ld = mod.affine_coupling(z, s, s, mask)
        x2, ld2 = mod.affine_coupling(y, s, s, mask, reverse=True)
        zk, ld3 = mod.planar_flow(z, u, w, b)
        return (
            mod.bernoulli_log_prob(logits, x01)
            + mod.gaussian_log_prob(x01, mean, logvar)
            + mod.beta_log_prob(xb, ab, ab)
            + mod.categorical_log_prob(clog, cx)
            + mod.kl_normal_std(logits, logvar)
            + mod.kl_normal(logits, logvar, mean, logvar)
            + mod.reparameterize(logits, logvar, x01).sum(-1)
            + (x2 * y).sum(-1)
            + ld
            + ld2
            + (zk**2).sum(-1)
            + ld3
        )

    return f


@pytest.mark.parametrize("device", DEVICES)
def test_compile_dynamic_batch(device):
    """fullgraph compile with dynamic=True, forward and backward, then new batch sizes: the
    fake kernels keep the batch symbolic, so nothing is recompiled (a fake kernel that turns
    a size into a Python int specialises it and the second batch size recompiles)."""
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("aot_eager")
    f = torch.compile(_dynamic_batch_fn(dgm_ext.ops), backend=counter, fullgraph=True, dynamic=True)
    f_ref = _dynamic_batch_fn(dgm_ext.ops.reference)
    frames = 0
    try:
        with torch._dynamo.config.patch(error_on_recompile=True):
            for n in (5, 7, 9):  # batch sizes unequal to any other size (duck sizing)
                ins = _dynamic_batch_inputs(n, device)
                # every floating input but the coupling mask (a constant) requires grad
                rg = [t.is_floating_point() and i != 10 for i, t in enumerate(ins)]
                got_in = [t.requires_grad_(r) for t, r in zip(ins, rg, strict=True)]
                exp_in = [t.detach().requires_grad_(r) for t, r in zip(ins, rg, strict=True)]
                got, exp = f(*got_in), f_ref(*exp_in)
                torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-4)
                got.sum().backward()
                exp.sum().backward()
                for a, e in zip(got_in, exp_in, strict=True):
                    if e.requires_grad:
                        torch.testing.assert_close(a.grad, e.grad, rtol=1e-4, atol=1e-4)
                frames = frames or counter.frame_count  # graphs compiled for the first size
        assert counter.frame_count == frames, f"{counter.frame_count - frames} recompilations"
    finally:
        torch._dynamo.reset()


# ------------------------------------------------------------------------------ CPU ISA tables
def _cpu_has_avx2_fma() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx2" in flags and " fma" in flags


def test_cpu_isa_tables_agree(tmp_path):
    """The portable (DEFAULT) and AVX2 kernel tables give the same values and gradients."""
    here = Path(__file__).resolve().parent
    out = tmp_path / "default.pt"
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import _helpers; "
        "torch.save(_helpers.isa_payload(), sys.argv[2])"
    )
    env = dict(os.environ, DGM_EXT_CPU_ISA="default", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    proc = subprocess.run(
        [sys.executable, "-c", code, str(here), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    other = torch.load(out, weights_only=True)
    mine = isa_payload()
    assert "".join(map(chr, other.pop("_isa").tolist())) == "DEFAULT"
    my_isa = "".join(map(chr, mine.pop("_isa").tolist()))
    if "AVX2" in dgm_ext.build_info()["cpu_isa_compiled"] and _cpu_has_avx2_fma():
        assert my_isa == "AVX2"
    assert mine.keys() == other.keys()
    for k in mine:
        a, b = mine[k], other[k]
        t = (1e-6, 1e-6) if a.dtype == torch.float32 else (1e-12, 1e-12)
        torch.testing.assert_close(
            a,
            b,
            rtol=t[0],
            atol=t[1] * max(1.0, a.abs().max().item()),
            msg=lambda m, k=k: f"{k}: {m}",
        )


# ------------------------------------------------------------------------------ build info
def test_build_info():
    info = dgm_ext.build_info()
    assert isinstance(info, dict)
    assert isinstance(info["torch_version"], str)
    assert torch.__version__.startswith(info["torch_version"].split("+")[0])
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["cuda_archs"], str)
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["cpu_isa_compiled"], str)
    assert "DEFAULT" in info["cpu_isa_compiled"].split(",")
    assert info["cpu_isa"] in info["cpu_isa_compiled"].split(",")
    if info["cuda"]:
        assert info["cuda_archs"]
    # documented in dgm_ext.build_info's docstring
    assert isinstance(info.get("parallel_backend", info.get("num_threads")), (str, int))


def test_ops_registered_not_pybind():
    for name in OP_NAMES:
        assert hasattr(LIB, name) and hasattr(LIB, f"{name}_backward")
        assert not hasattr(dgm_ext._C, name)


# ------------------------------------------------------------------------------ devices
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", OP_NAMES)
def test_cpu_cuda_mix_raises_value_error(name):
    s = _get(
        name, "plain" if name != "affine_coupling" else "plain_fwd", "cpu", torch.float32, False
    )
    for i, a in enumerate(s.args):
        if not isinstance(a, torch.Tensor):
            continue
        args = list(s.args)
        args[i] = a.cuda()
        with pytest.raises(ValueError):
            call(public(name), Sample(s.desc, tuple(args), s.kwargs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", OP_NAMES)
def test_cuda_half_matches_float32(name, dtype):
    for s in _samples(name, "cuda", torch.float32):
        exp = as_tuple(call(public(name), s))
        got = as_tuple(call(public(name), s.detached(dtype=dtype)))
        rtol, atol = tol(dtype)["rtol"], tol(dtype)["atol"]
        for g, e in zip(got, exp, strict=True):
            assert g.dtype == dtype
            # |g - e| <= atol * max(1, max|e|) + rtol * |e|: only the absolute part grows with
            # the outputs' magnitude (inputs rounded to half shift a row sum by about that);
            # the relative part stays the dtype's own (scaling it too admitted 25-50 % errors
            # in bfloat16 at outputs of 5-10).
            mag = max(1.0, e.abs().max().item()) if e.numel() else 1.0
            assert_close(
                g.float(), e, dtype, rtol=rtol, atol=atol * mag, msg=lambda m, s=s: f"{s}: {m}"
            )


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtype_preserved(dtype):
    for name in OP_NAMES:
        s = next(iter(SAMPLES[name]("cpu", dtype, False)))
        for o in as_tuple(call(public(name), s)):
            assert o.dtype == dtype
