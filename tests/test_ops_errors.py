"""Bad inputs raise a clear Python exception naming the argument, never crash.

TypeError for dtype problems, ValueError for shapes, devices and class indices; both through
the public wrappers and through the raw ``torch.ops.dgm_ext`` operators (incl. backward ops).
"""

from __future__ import annotations

import pytest
import torch
from _helpers import LIB

from dgm_ext import ops

f32, f64 = torch.float32, torch.float64


def r(*shape, dtype=f32):
    return torch.randn(shape, dtype=dtype)


def u01(*shape, dtype=f32):
    return torch.rand(shape, dtype=dtype) * 0.8 + 0.1


def idx(*shape, k=4):
    return torch.randint(0, k, shape)


# (id, op name, args, kwargs, exception, argument name that the message must contain)
CASES = [
    ("bern_int_logits", "bernoulli_log_prob", (idx(2, 3), u01(2, 3)), {}, TypeError, "'logits'"),
    ("bern_f64_x", "bernoulli_log_prob", (r(2, 3), u01(2, 3, dtype=f64)), {}, TypeError, "'x'"),
    ("bern_int_x", "bernoulli_log_prob", (r(2, 3), idx(2, 3, k=2)), {}, TypeError, "'x'"),
    ("bern_shape", "bernoulli_log_prob", (r(2, 3), u01(2, 4)), {}, ValueError, "'x'"),
    ("bern_scalar", "bernoulli_log_prob", (r(), u01()), {}, ValueError, "logits"),
    (
        "gauss_f64_logvar",
        "gaussian_log_prob",
        (r(2, 3), r(2, 3), r(2, 3, dtype=f64)),
        {},
        TypeError,
        "'logvar'",
    ),
    (
        "gauss_shape_mean",
        "gaussian_log_prob",
        (r(2, 3), r(4, 3), r(2, 3)),
        {},
        ValueError,
        "'mean'",
    ),
    ("gauss_int_x", "gaussian_log_prob", (idx(2, 3), r(2, 3), r(2, 3)), {}, TypeError, "'x'"),
    (
        "beta_int_alpha",
        "beta_log_prob",
        (u01(2, 3), idx(2, 3), u01(2, 3)),
        {},
        TypeError,
        "'alpha'",
    ),
    (
        "beta_f64_beta",
        "beta_log_prob",
        (u01(2, 3), u01(2, 3), u01(2, 3, dtype=f64)),
        {},
        TypeError,
        "'beta'",
    ),
    ("beta_shape", "beta_log_prob", (u01(2, 3), u01(2, 3), u01(5)), {}, ValueError, "'beta'"),
    (
        "beta_eps_half",
        "beta_log_prob",
        (u01(2, 3), u01(2, 3), u01(2, 3)),
        {"eps": 0.5},
        ValueError,
        "'eps'",
    ),
    (
        "beta_eps_neg",
        "beta_log_prob",
        (u01(2, 3), u01(2, 3), u01(2, 3)),
        {"eps": -1e-3},
        ValueError,
        "'eps'",
    ),
    (
        "beta_eps_nan",
        "beta_log_prob",
        (u01(2, 3), u01(2, 3), u01(2, 3)),
        {"eps": float("nan")},
        ValueError,
        "'eps'",
    ),
    (
        "cat_int_logits",
        "categorical_log_prob",
        (idx(2, 3, 4), idx(2, 3)),
        {},
        TypeError,
        "'logits'",
    ),
    ("cat_float_x", "categorical_log_prob", (r(2, 3, 4), u01(2, 3)), {}, TypeError, "'x'"),
    ("cat_int32_x", "categorical_log_prob", (r(2, 3, 4), idx(2, 3).int()), {}, TypeError, "'x'"),
    (
        "cat_oob",
        "categorical_log_prob",
        (r(2, 3, 4), torch.tensor([[0, 1, 4], [0, 0, 0]])),
        {},
        ValueError,
        "'x'",
    ),
    (
        "cat_negative",
        "categorical_log_prob",
        (r(2, 3, 4), torch.tensor([[0, -1, 3], [0, 0, 0]])),
        {},
        ValueError,
        "'x'",
    ),
    (
        "cat_huge",
        "categorical_log_prob",
        (r(2, 3, 4), torch.tensor([[0, 2**40, 0], [0, 0, 0]])),
        {},
        ValueError,
        "'x'",
    ),
    (
        "cat_int64_min",
        "categorical_log_prob",
        (r(1, 2, 4), torch.tensor([[-(2**63), 0]])),
        {},
        ValueError,
        "'x'",
    ),
    ("cat_1d_logits", "categorical_log_prob", (r(4), idx(4)), {}, ValueError, "'logits'"),
    ("cat_shape", "categorical_log_prob", (r(2, 3, 4), idx(2, 5)), {}, ValueError, "'x'"),
    (
        "cat_no_classes",
        "categorical_log_prob",
        (r(2, 3, 0), idx(2, 3, k=1)),
        {},
        ValueError,
        "'logits'",
    ),
    ("klstd_int_mu", "kl_normal_std", (idx(2, 3), r(2, 3)), {}, TypeError, "'mu'"),
    ("klstd_shape", "kl_normal_std", (r(2, 3), r(3, 2)), {}, ValueError, "'logvar'"),
    (
        "kl_f64_logvar_p",
        "kl_normal",
        (r(2, 3), r(2, 3), r(2, 3), r(2, 3, dtype=f64)),
        {},
        TypeError,
        "'logvar_p'",
    ),
    ("kl_shape_mu_p", "kl_normal", (r(2, 3), r(2, 3), r(2, 4), r(2, 3)), {}, ValueError, "'mu_p'"),
    (
        "reparam_f64_eps",
        "reparameterize",
        (r(2, 3), r(2, 3), r(2, 3, dtype=f64)),
        {},
        TypeError,
        "'eps'",
    ),
    ("reparam_shape_eps", "reparameterize", (r(2, 3), r(2, 3), r(2, 4)), {}, ValueError, "'eps'"),
    (
        "coupling_mask_bcast",
        "affine_coupling",
        (r(5, 3, 4), r(5, 3, 4), r(5, 3, 4), r(3, 3)),
        {},
        ValueError,
        "'mask'",
    ),
    (
        "coupling_s_bigger",
        "affine_coupling",
        (r(5, 4), r(2, 5, 4), r(5, 4), r(4)),
        {},
        ValueError,
        "'s'",
    ),
    ("coupling_1d_x", "affine_coupling", (r(4), r(4), r(4), r(4)), {}, ValueError, "'x'"),
    (
        "coupling_int_mask",
        "affine_coupling",
        (r(2, 4), r(2, 4), r(2, 4), idx(4, k=2)),
        {},
        TypeError,
        "'mask'",
    ),
    (
        "coupling_f64_t",
        "affine_coupling",
        (r(2, 4), r(2, 4), r(2, 4, dtype=f64), r(4)),
        {},
        TypeError,
        "'t'",
    ),
    ("planar_u_dim", "planar_flow", (r(5, 3), r(2, 4), r(2, 3), r(2)), {}, ValueError, "'u'"),
    ("planar_w_shape", "planar_flow", (r(5, 3), r(2, 3), r(3, 3), r(2)), {}, ValueError, "'w'"),
    ("planar_b_shape", "planar_flow", (r(5, 3), r(2, 3), r(2, 3), r(3)), {}, ValueError, "'b'"),
    ("planar_z_3d", "planar_flow", (r(5, 3, 1), r(2, 3), r(2, 3), r(2)), {}, ValueError, "'z'"),
    ("planar_u_1d", "planar_flow", (r(5, 3), r(3), r(3), r(1)), {}, ValueError, "'u'"),
    (
        "planar_f64_u",
        "planar_flow",
        (r(5, 3), r(2, 3, dtype=f64), r(2, 3), r(2)),
        {},
        TypeError,
        "'u'",
    ),
    ("planar_int_z", "planar_flow", (idx(5, 3), r(2, 3), r(2, 3), r(2)), {}, TypeError, "'z'"),
    # per-row planar: z (*S, N, d), u and w (N, K, d), b (N, K)
    (
        "rows_u_n",
        "planar_flow_rows",
        (r(2, 5, 3), r(4, 2, 3), r(4, 2, 3), r(4, 2)),
        {},
        ValueError,
        "'u'",
    ),
    (
        "rows_u_d",
        "planar_flow_rows",
        (r(2, 5, 3), r(5, 2, 4), r(5, 2, 4), r(5, 2)),
        {},
        ValueError,
        "'u'",
    ),
    ("rows_u_shared", "planar_flow_rows", (r(5, 3), r(2, 3), r(2, 3), r(2)), {}, ValueError, "'u'"),
    (
        "rows_w_shape",
        "planar_flow_rows",
        (r(5, 3), r(5, 2, 3), r(5, 3, 3), r(5, 2)),
        {},
        ValueError,
        "'w'",
    ),
    (
        "rows_b_shape",
        "planar_flow_rows",
        (r(5, 3), r(5, 2, 3), r(5, 2, 3), r(2)),
        {},
        ValueError,
        "'b'",
    ),
    (
        "rows_b_k_shape",
        "planar_flow_rows",
        (r(5, 3), r(5, 2, 3), r(5, 2, 3), r(5, 3)),
        {},
        ValueError,
        "'b'",
    ),
    (
        "rows_z_1d",
        "planar_flow_rows",
        (r(3), r(1, 2, 3), r(1, 2, 3), r(1, 2)),
        {},
        ValueError,
        "'z'",
    ),
    (
        "rows_f64_w",
        "planar_flow_rows",
        (r(5, 3), r(5, 2, 3), r(5, 2, 3, dtype=f64), r(5, 2)),
        {},
        TypeError,
        "'w'",
    ),
    (
        "rows_int_z",
        "planar_flow_rows",
        (idx(5, 3), r(5, 2, 3), r(5, 2, 3), r(5, 2)),
        {},
        TypeError,
        "'z'",
    ),
    (
        "rows_int_b",
        "planar_flow_rows",
        (r(5, 3), r(5, 2, 3), r(5, 2, 3), idx(5, 2)),
        {},
        TypeError,
        "'b'",
    ),
]


@pytest.mark.parametrize(
    "name,args,kwargs,exc,arg", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_public_raises(name, args, kwargs, exc, arg):
    with pytest.raises(exc, match=arg):
        getattr(ops, name)(*args, **kwargs)


@pytest.mark.parametrize(
    "name,args,kwargs,exc,arg", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_raw_op_raises(name, args, kwargs, exc, arg):
    """The raw operator (no Python wrapper) raises the same exception type."""
    args = list(args)
    if name == "beta_log_prob":
        args.append(float(kwargs.get("eps", 1e-6)))
    elif name == "affine_coupling":
        args.append(False)
    with pytest.raises(exc, match=arg):
        getattr(LIB, name).default(*args)


# The fake kernels (FakeTensor / torch.compile tracing) must raise what the real kernels raise.
_FAKE_CASES = [
    pytest.param(*c[1:], id=c[0])
    for c in CASES
    if c[4] is TypeError or "shape" in c[0] or "bcast" in c[0] or c[0] == "planar_u_dim"
]


@pytest.mark.parametrize("name,args,kwargs,exc,arg", _FAKE_CASES)
def test_fake_kernel_raises_same_type(name, args, kwargs, exc, arg):
    """Under FakeTensorMode (torch.compile tracing) the same exception type is raised."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = list(args)
    if name == "beta_log_prob":
        args.append(float(kwargs.get("eps", 1e-6)))
    elif name == "affine_coupling":
        args.append(False)
    with FakeTensorMode() as mode:
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(exc):
            getattr(LIB, name).default(*fargs)


# ------------------------------------------------------------------------------ backward ops
def test_categorical_backward_out_of_range_index_raises():
    logits = r(2, 3, 4)
    x = idx(2, 3)
    out, lse = LIB.categorical_log_prob(logits, x)
    bad = x.clone()
    bad[1, 2] = 7
    with pytest.raises(ValueError, match="'x'"):
        LIB.categorical_log_prob_backward(torch.ones_like(out), logits, bad, lse)
    bad[1, 2] = -3
    with pytest.raises(ValueError, match="'x'"):
        LIB.categorical_log_prob_backward(torch.ones_like(out), logits, bad, lse)


def test_categorical_backward_wrong_lse_shape_raises():
    logits, x = r(2, 3, 4), idx(2, 3)
    out, lse = LIB.categorical_log_prob(logits, x)
    with pytest.raises(ValueError, match="'lse'"):
        LIB.categorical_log_prob_backward(torch.ones_like(out), logits, x, lse[:, :2])


@pytest.mark.parametrize(
    "name,args",
    [
        ("bernoulli_log_prob_backward", (r(3), r(2, 3), u01(2, 3), [True, True])),
        ("gaussian_log_prob_backward", (r(2, 1), r(2, 3), r(2, 3), r(2, 3), [True] * 3)),
        ("beta_log_prob_backward", (r(5), u01(2, 3), u01(2, 3), u01(2, 3), 1e-6, [True] * 3)),
        ("kl_normal_std_backward", (r(3), r(2, 3), r(2, 3), [True, True])),
        ("kl_normal_backward", (r(4), r(2, 3), r(2, 3), r(2, 3), r(2, 3), [True] * 4)),
        ("reparameterize_backward", (r(2), r(2, 3), r(2, 3), r(2, 3), [True] * 3)),
    ],
)
def test_backward_wrong_grad_shape_raises(name, args):
    with pytest.raises(ValueError, match="'grad'"):
        getattr(LIB, name)(*args)


def test_backward_grad_dtype_mismatch_raises():
    with pytest.raises(TypeError, match="'grad'"):
        LIB.bernoulli_log_prob_backward(r(2, dtype=f64), r(2, 3), u01(2, 3), [True, True])


def test_coupling_backward_wrong_grad_logdet_raises():
    x, s, t, m = r(2, 4), r(2, 4), r(2, 4), r(4)
    with pytest.raises(ValueError, match="'grad"):
        LIB.affine_coupling_backward(r(2, 4), r(3), x, s, t, m, False, [True] * 3)
    with pytest.raises(ValueError):
        LIB.affine_coupling_backward(r(3, 4), r(2), x, s, t, m, False, [True] * 3)


@pytest.mark.parametrize(
    "bad,arg",
    [("act", "'act'"), ("grad_z", "'grad_z'"), ("grad_logdet", "'grad_logdet'")],
)
def test_planar_backward_wrong_shapes_raise(bad, arg):
    z, u, w, b = r(5, 3), r(2, 3) * 0.3, r(2, 3) * 0.3, r(2) * 0.3
    z_out, logdet, act = LIB.planar_flow(z, u, w, b)
    kw = {
        "grad_z": torch.ones_like(z_out),
        "grad_logdet": torch.ones_like(logdet),
        "act": act,
    }
    kw[bad] = kw[bad][:-1]
    with pytest.raises(ValueError, match=arg):
        LIB.planar_flow_backward(kw["grad_z"], kw["grad_logdet"], z_out, kw["act"], u, w, b)


def test_planar_backward_wrong_u_shape_raises():
    z, u, w, b = r(5, 3), r(2, 3) * 0.3, r(2, 3) * 0.3, r(2) * 0.3
    z_out, logdet, act = LIB.planar_flow(z, u, w, b)
    with pytest.raises(ValueError, match="'u'"):
        LIB.planar_flow_backward(
            torch.ones_like(z_out), torch.ones_like(logdet), z_out, act, r(2, 4), w, b
        )


def _rows_backward_args(**bad):
    z, u, w, b = r(2, 5, 3), r(5, 2, 3) * 0.3, r(5, 2, 3) * 0.3, r(5, 2) * 0.3
    z_out, logdet, act = LIB.planar_flow_rows(z, u, w, b)
    kw = {"grad_z": torch.ones_like(z_out), "grad_logdet": torch.ones_like(logdet), "act": act}
    kw.update(z_out=z_out, u=u, w=w, b=b)
    for name, fn in bad.items():
        kw[name] = fn(kw[name])
    order = ("grad_z", "grad_logdet", "z_out", "act", "u", "w", "b")
    return [kw[k] for k in order] + [[True] * 4]


@pytest.mark.parametrize(
    "bad,exc,arg",
    [
        ("act", ValueError, "'act'"),
        ("grad_z", ValueError, "'grad_z'"),
        ("grad_logdet", ValueError, "'grad_logdet'"),
        ("u", ValueError, "'u'"),
        ("b", ValueError, "'b'"),
    ],
)
def test_planar_rows_backward_wrong_shapes_raise(bad, exc, arg):
    """Each tensor of the backward op cut short along its last dimension: the real and the fake
    kernel raise the same message naming it."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    args = _rows_backward_args(**{bad: lambda t: t[..., :-1]})
    with pytest.raises(exc, match=arg) as real:
        LIB.planar_flow_rows_backward(*args)
    with FakeTensorMode() as mode:
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        with pytest.raises(exc, match=arg) as fake:
            LIB.planar_flow_rows_backward(*fargs)
    assert str(fake.value) == str(real.value)


@pytest.mark.parametrize("bad", ["grad_z", "grad_logdet", "act", "b"])
def test_planar_rows_backward_dtype_mismatch_raises(bad):
    args = _rows_backward_args(**{bad: lambda t: t.double()})
    with pytest.raises(TypeError, match=f"'{bad}'"):
        LIB.planar_flow_rows_backward(*args)


def test_categorical_index_check_sees_broadcast_and_strided_x():
    """An out-of-range index hidden in a non-contiguous / broadcast x is still caught."""
    logits = r(3, 4, 5)
    x = torch.full((4, 3), 1, dtype=torch.long)
    x[3, 1] = 5
    with pytest.raises(ValueError, match="'x'"):
        ops.categorical_log_prob(logits, x.t())
    with pytest.raises(ValueError, match="'x'"):
        ops.categorical_log_prob(r(4, 5), torch.tensor([0, 1, 2, 5]).expand(3, 4))


# ------------------------------------------------------------------------------ CPU half, meta mix
def _valid_args(name: str, dtype=f32) -> tuple[list, dict]:
    """Valid positional arguments of the raw operator ``name`` (CPU) and the public kwargs."""
    if name == "categorical_log_prob":
        return [r(2, 3, 4, dtype=dtype), idx(2, 3)], {}
    if name == "affine_coupling":
        return [r(2, 4, dtype=dtype), r(2, 4, dtype=dtype), r(2, 4, dtype=dtype), u01(4)], {}
    if name == "planar_flow":
        return [r(5, 3, dtype=dtype), r(2, 3, dtype=dtype), r(2, 3, dtype=dtype), r(2)], {}
    if name == "planar_flow_rows":
        return [r(2, 5, 3, dtype=dtype), r(5, 2, 3, dtype=dtype), r(5, 2, 3), r(5, 2)], {}
    n = {
        "bernoulli_log_prob": 2,
        "gaussian_log_prob": 3,
        "beta_log_prob": 3,
        "kl_normal_std": 2,
        "kl_normal": 4,
        "reparameterize": 3,
    }[name]
    return [u01(2, 3, dtype=dtype) for _ in range(n)], {}


_ARG_NAMES = {
    "bernoulli_log_prob": ("logits", "x"),
    "gaussian_log_prob": ("x", "mean", "logvar"),
    "beta_log_prob": ("x", "alpha", "beta"),
    "categorical_log_prob": ("logits", "x"),
    "kl_normal_std": ("mu", "logvar"),
    "kl_normal": ("mu_q", "logvar_q", "mu_p", "logvar_p"),
    "reparameterize": ("mu", "logvar", "eps"),
    "affine_coupling": ("x", "s", "t", "mask"),
    "planar_flow": ("z", "u", "w", "b"),
    "planar_flow_rows": ("z", "u", "w", "b"),
}
_OPS = list(_ARG_NAMES)


def _raw_args(name: str, args: list) -> list:
    if name == "beta_log_prob":
        return [*args, 1e-6]
    if name == "affine_coupling":
        return [*args, False]
    return args


def _cast_floats(args: list, dtype) -> list:
    return [a.to(dtype) if a.is_floating_point() else a for a in args]


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", _OPS)
def test_cpu_half_raises_type_error_real_and_fake(name, half):
    """float16/bfloat16 on CPU: the CPU kernel raises TypeError naming the first argument, and
    so must the fake kernel (FakeTensorMode, i.e. torch.compile tracing) with the same text."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    args, _ = _valid_args(name)
    args = _raw_args(name, _cast_floats(args, half))
    first = f"'{_ARG_NAMES[name][0]}'"
    op = getattr(LIB, name).default
    with pytest.raises(TypeError, match=first) as real:
        op(*args)
    with pytest.raises(TypeError, match=first):
        getattr(ops, name)(*args[: len(_ARG_NAMES[name])])
    with FakeTensorMode() as mode:
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        assert all(a.device.type == "cpu" for a in fargs if isinstance(a, torch.Tensor))
        with pytest.raises(TypeError, match=first) as fake:
            op(*fargs)
    assert str(fake.value) == str(real.value)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16], ids=["f16", "bf16"])
@pytest.mark.parametrize("name", _OPS)
def test_fake_kernel_accepts_half_off_cpu(name, half):
    """The fake kernels keep accepting float16/bfloat16 where the device may be CUDA (meta
    tensors; FakeTensorMode over CUDA tensors when CUDA exists)."""
    args, _ = _valid_args(name)
    args = _raw_args(name, _cast_floats(args, half))
    op = getattr(LIB, name).default
    meta = [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args]
    outs = op(*meta)
    for o in outs if isinstance(outs, tuple) else (outs,):
        assert o.device.type == "meta" and o.dtype == half
    if torch.cuda.is_available():
        from torch._subclasses.fake_tensor import FakeTensorMode

        cuda = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
        with FakeTensorMode() as mode:
            fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in cuda]
            op(*fargs)


@pytest.mark.parametrize("name", _OPS)
def test_meta_device_mix_raises_value_error(name):
    """One argument on ``meta``, the others on CPU: a ValueError naming that argument (the
    dispatcher routes mixed CPU/meta calls to the fake kernel), from the raw op and the
    public wrapper, instead of an output on the wrong device."""
    args, _ = _valid_args(name)
    names = _ARG_NAMES[name]
    for i, arg_name in enumerate(names):
        mixed = list(args)
        mixed[i] = mixed[i].to("meta")
        with pytest.raises(ValueError, match=f"'{arg_name}' is on meta") as e:
            getattr(LIB, name).default(*_raw_args(name, mixed))
        assert "meta" in str(e.value) and "cpu" in str(e.value)
        with pytest.raises(ValueError, match=f"'{arg_name}'"):
            getattr(ops, name)(*mixed)
