"""The fake (meta) kernels agree with the real CPU kernels.

The fake kernels run under FakeTensorMode (torch.compile tracing) and for meta tensors; their
checks must raise the exception type *and message* of the C++ checks, and their output shapes
must be the real ones, including the edge shapes (2-D categorical logits without a batch).
(The flows' backward with only one output used is tested in test_ops_flows.py.)
"""

from __future__ import annotations

import pytest
import torch
from _helpers import LIB
from torch._subclasses.fake_tensor import FakeTensorMode

f32, f64 = torch.float32, torch.float64


def r(*shape, dtype=f32):
    return torch.randn(shape, dtype=dtype)


def idx(*shape, k=4):
    return torch.randint(0, k, shape)


def _call_real(name, args):
    return getattr(LIB, name).default(*args)


def _call_fake(name, args):
    with FakeTensorMode() as mode:
        fargs = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        return _call_real(name, fargs)


def _call_meta(name, args):
    return _call_real(name, [a.to("meta") if isinstance(a, torch.Tensor) else a for a in args])


def _shapes(out):
    return [tuple(t.shape) for t in (out if isinstance(out, tuple) else (out,))]


# (id, op, args, exception, argument the message names). The C++ message may add a
# ", got <shape>" tail that the fake kernel leaves out; everything before it must be equal.
ERROR_CASES = [
    ("planar_f64_w", "planar_flow", (r(5, 3), r(2, 3), r(2, 3, dtype=f64), r(2)), TypeError, "w"),
    ("planar_f64_b", "planar_flow", (r(5, 3), r(2, 3), r(2, 3), r(2, dtype=f64)), TypeError, "b"),
    ("planar_int_b", "planar_flow", (r(5, 3), r(2, 3), r(2, 3), idx(2)), TypeError, "b"),
    ("planar_f64_u", "planar_flow", (r(5, 3), r(2, 3, dtype=f64), r(2, 3), r(2)), TypeError, "u"),
    ("planar_u_1d", "planar_flow", (r(5, 3), r(3), r(3), r(1)), ValueError, "u"),
    ("planar_u_3d", "planar_flow", (r(5, 3), r(2, 3, 1), r(2, 3, 1), r(2)), ValueError, "u"),
    ("planar_u_d", "planar_flow", (r(5, 3), r(2, 4), r(2, 4), r(2)), ValueError, "u"),
    ("planar_z_3d", "planar_flow", (r(5, 3, 1), r(2, 3), r(2, 3), r(2)), ValueError, "z"),
    ("planar_z_1d", "planar_flow", (r(3), r(2, 3), r(2, 3), r(2)), ValueError, "z"),
    ("planar_w_shape", "planar_flow", (r(5, 3), r(2, 3), r(3, 3), r(2)), ValueError, "w"),
    ("planar_b_len", "planar_flow", (r(5, 3), r(2, 3), r(2, 3), r(3)), ValueError, "b"),
    ("planar_b_2d", "planar_flow", (r(5, 3), r(2, 3), r(2, 3), r(2, 1)), ValueError, "b"),
    ("planar_b_k", "planar_flow", (r(5, 4), r(3, 4), r(3, 4), r(4)), ValueError, "b"),
    (
        "rows_f64_w",
        "planar_flow_rows",
        (r(2, 5, 3), r(5, 2, 3), r(5, 2, 3, dtype=f64), r(5, 2)),
        TypeError,
        "w",
    ),
    (
        "rows_int_b",
        "planar_flow_rows",
        (r(2, 5, 3), r(5, 2, 3), r(5, 2, 3), idx(5, 2)),
        TypeError,
        "b",
    ),
    (
        "rows_int_z",
        "planar_flow_rows",
        (idx(2, 5, 3), r(5, 2, 3), r(5, 2, 3), r(5, 2)),
        TypeError,
        "z",
    ),
    ("rows_z_1d", "planar_flow_rows", (r(3), r(1, 2, 3), r(1, 2, 3), r(1, 2)), ValueError, "z"),
    (
        "rows_u_n",
        "planar_flow_rows",
        (r(2, 5, 3), r(4, 2, 3), r(4, 2, 3), r(4, 2)),
        ValueError,
        "u",
    ),
    (
        "rows_u_d",
        "planar_flow_rows",
        (r(2, 5, 3), r(5, 2, 4), r(5, 2, 4), r(5, 2)),
        ValueError,
        "u",
    ),
    ("rows_u_2d", "planar_flow_rows", (r(5, 3), r(2, 3), r(2, 3), r(2)), ValueError, "u"),
    (
        "rows_w_shape",
        "planar_flow_rows",
        (r(5, 3), r(5, 2, 3), r(5, 3, 3), r(5, 2)),
        ValueError,
        "w",
    ),
    ("rows_b_1d", "planar_flow_rows", (r(5, 3), r(5, 2, 3), r(5, 2, 3), r(2)), ValueError, "b"),
    ("rows_b_k", "planar_flow_rows", (r(5, 3), r(5, 2, 3), r(5, 2, 3), r(5, 3)), ValueError, "b"),
    ("rows_b_n", "planar_flow_rows", (r(5, 3), r(5, 2, 3), r(5, 2, 3), r(4, 2)), ValueError, "b"),
    ("cat_int_logits", "categorical_log_prob", (idx(2, 3, 4), idx(2, 3)), TypeError, "logits"),
    ("cat_float_x", "categorical_log_prob", (r(2, 3, 4), r(2, 3)), TypeError, "x"),
    ("cat_1d_logits", "categorical_log_prob", (r(4), idx(4)), ValueError, "logits"),
    ("cat_scalar_x", "categorical_log_prob", (r(2, 3, 4), idx()), ValueError, "x"),
    ("cat_no_class", "categorical_log_prob", (r(2, 3, 0), idx(2, 3, k=1)), ValueError, "logits"),
]


def _same_message(fake: str, real: str) -> bool:
    return fake == real or (real.startswith(fake) and real[len(fake) :].startswith(", got "))


@pytest.mark.parametrize("run", [_call_fake, _call_meta], ids=["fake", "meta"])
@pytest.mark.parametrize("name,args,exc,arg", [pytest.param(*c[1:], id=c[0]) for c in ERROR_CASES])
def test_fake_kernel_raises_what_the_cpu_kernel_raises(run, name, args, exc, arg):
    with pytest.raises(exc, match=f"'{arg}'") as real:
        _call_real(name, args)
    with pytest.raises(exc) as fake:
        run(name, args)
    msg = str(fake.value)
    if run is _call_meta:  # a meta tensor may stand for CUDA, where half types are accepted
        msg = msg.replace("float16/bfloat16/float32/float64", "float32/float64")
    assert _same_message(msg, str(real.value)), (msg, str(real.value))


@pytest.mark.parametrize("run", [_call_fake, _call_meta], ids=["fake", "meta"])
def test_fake_categorical_broadcast_error_names_the_op_and_x(run):
    args = (r(2, 3, 4), idx(2, 5))
    with pytest.raises(ValueError, match="'x'"):
        _call_real("categorical_log_prob", args)
    with pytest.raises(ValueError, match=r"^dgm_ext\.categorical_log_prob: .*'x' \(2, 5\)"):
        run("categorical_log_prob", args)


@pytest.mark.parametrize("run", [_call_fake, _call_meta], ids=["fake", "meta"])
@pytest.mark.parametrize(
    "logits,x",
    [
        pytest.param((3, 4), (3,), id="2d_logits"),
        pytest.param((3, 1), (3,), id="2d_one_class"),
        pytest.param((2, 3, 4), (2, 3), id="3d"),
        pytest.param((3, 4), (2, 3), id="x_adds_batch"),
    ],
)
def test_fake_categorical_shapes_match_cpu(run, logits, x):
    k = logits[-1]
    args = (r(*logits), idx(*x, k=k))
    real = _call_real("categorical_log_prob", args)
    assert _shapes(run("categorical_log_prob", args)) == _shapes(real)
    out, lse = real
    bwd = (torch.ones_like(out), *args, lse)
    assert _shapes(run("categorical_log_prob_backward", bwd)) == _shapes(
        _call_real("categorical_log_prob_backward", bwd)
    )


@pytest.mark.parametrize("run", [_call_fake, _call_meta], ids=["fake", "meta"])
def test_fake_planar_shapes_match_cpu(run):
    args = (r(5, 3), r(2, 3) * 0.3, r(2, 3) * 0.3, r(2))
    real = _call_real("planar_flow", args)
    assert _shapes(run("planar_flow", args)) == _shapes(real)
    z_out, logdet, act = real
    bwd = (torch.ones_like(z_out), torch.ones_like(logdet), z_out, act, *args[1:])
    assert _shapes(run("planar_flow_backward", bwd)) == _shapes(
        _call_real("planar_flow_backward", bwd)
    )


@pytest.mark.parametrize("run", [_call_fake, _call_meta], ids=["fake", "meta"])
@pytest.mark.parametrize(
    "z,n,k,d",
    [
        pytest.param((4, 3), 4, 2, 3, id="no_samples"),
        pytest.param((2, 3, 4, 3), 4, 2, 3, id="samples_2d"),
        pytest.param((0, 4, 3), 4, 2, 3, id="empty_samples"),
        pytest.param((2, 3, 2), 3, 0, 2, id="no_layers"),
    ],
)
@pytest.mark.parametrize("needs", [[True] * 4, [False, True, False, True]], ids=["all", "uw"])
def test_fake_planar_rows_shapes_match_cpu(run, z, n, k, d, needs):
    args = (r(*z), r(n, k, d) * 0.3, r(n, k, d) * 0.3, r(n, k))
    real = _call_real("planar_flow_rows", args)
    assert _shapes(run("planar_flow_rows", args)) == _shapes(real)
    z_out, logdet, act = real
    bwd = (torch.ones_like(z_out), torch.ones_like(logdet), z_out, act, *args[1:], needs)
    assert _shapes(run("planar_flow_rows_backward", bwd)) == _shapes(
        _call_real("planar_flow_rows_backward", bwd)
    )


@pytest.mark.parametrize(
    "name,args,moved,arg",
    [
        pytest.param("categorical_log_prob", (r(2, 3, 4), idx(2, 3)), 1, "x", id="cat_x"),
        pytest.param("categorical_log_prob", (r(2, 3, 4), idx(2, 3)), 0, "x", id="cat_logits"),
        pytest.param("planar_flow", (r(5, 3), r(2, 3), r(2, 3), r(2)), 2, "w", id="planar_w"),
        pytest.param(
            "planar_flow_rows", (r(2, 5, 3), r(5, 2, 3), r(5, 2, 3), r(5, 2)), 3, "b", id="rows_b"
        ),
    ],
)
def test_fake_device_mix_message_names_the_op(name, args, moved, arg):
    """One argument on meta, the rest on CPU (routed to the fake kernel): the message has the
    C++ form ``dgm_ext.<op>: argument '<name>' is on meta but '<ref>' is on cpu``."""
    mixed = [a.to("meta") if i == moved else a for i, a in enumerate(args)]
    with pytest.raises(ValueError, match=rf"^dgm_ext\.{name}: argument '{arg}' is on "):
        _call_real(name, mixed)
