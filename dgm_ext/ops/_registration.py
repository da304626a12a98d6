"""Fake (meta) kernels and the autocast policy of the dgm_ext:: operators.

The C++ side holds the schemas (csrc/ops.cpp), the CPU/CUDA kernels and the autograd of every
op (csrc/common/autograd.cpp: each backward is the op's fused ``*_backward`` op); this module
teaches the dispatcher how to infer output shapes without data (torch.compile, FakeTensor),
with the same argument checks and messages as the C++ frontends.
"""

from __future__ import annotations

import torch
from torch import Tensor

_ops = torch.ops.dgm_ext


def _bshape(op: str, **tensors: Tensor) -> list[int]:
    try:
        return list(torch.broadcast_shapes(*(t.shape for t in tensors.values())))
    except RuntimeError as err:
        shapes = ", ".join(f"'{n}' {tuple(t.shape)}" for n, t in tensors.items())
        raise ValueError(f"dgm_ext.{op}: arguments do not broadcast: {shapes}") from err


# c10::ScalarType names, as the C++ frontends print them.
_SCALAR_NAMES = {
    torch.float16: "Half",
    torch.bfloat16: "BFloat16",
    torch.float32: "Float",
    torch.float64: "Double",
    torch.int64: "Long",
    torch.int32: "Int",
    torch.int16: "Short",
    torch.int8: "Char",
    torch.uint8: "Byte",
    torch.bool: "Bool",
}
_HALF = (torch.float16, torch.bfloat16)


def _scalar_name(dtype: torch.dtype) -> str:
    return _SCALAR_NAMES.get(dtype, str(dtype).removeprefix("torch."))


def _check_device(op: str, ref_name: str, ref: Tensor, **tensors: Tensor) -> None:
    """ValueError naming the argument that is not on ``ref``'s device (as the C++ check_device)."""
    for name, t in tensors.items():
        if t.device != ref.device:
            raise ValueError(
                f"dgm_ext.{op}: argument '{name}' is on {t.device} but '{ref_name}' is on "
                f"{ref.device}; all tensor arguments must be on the same device"
            )


def _check_float(op: str, ref_name: str, **tensors: Tensor) -> None:
    """The C++ check_floating + check_like: the reference argument must be float32/float64
    (float16/bfloat16 too, except on a CPU device, whose kernels reject them), every other
    argument on its device and of its dtype."""
    ref = tensors[ref_name]
    allow_half = ref.device.type != "cpu"  # CUDA computes them in float32; meta can't tell
    ok = ref.dtype in (torch.float32, torch.float64) or (allow_half and ref.dtype in _HALF)
    if not ok:
        kinds = "float16/bfloat16/float32/float64" if allow_half else "float32/float64"
        raise TypeError(
            f"dgm_ext.{op}: argument '{ref_name}' must be a {kinds} tensor, got "
            f"{_scalar_name(ref.dtype)}"
        )
    for name, t in tensors.items():
        _check_device(op, ref_name, ref, **{name: t})
        if t.dtype != ref.dtype:
            raise TypeError(
                f"dgm_ext.{op}: argument '{name}' must have the same dtype as '{ref_name}' "
                f"({_scalar_name(ref.dtype)}), got {_scalar_name(t.dtype)}"
            )


def _rows(op: str, ref: str, **tensors: Tensor) -> tuple[list[int], Tensor]:
    _check_float(op, ref, **tensors)
    full = _bshape(op, **tensors)
    if len(full) < 1:
        raise ValueError(f"dgm_ext.{op}: arguments must have at least 1 dimension")
    return full, tensors[ref]


def _grads(needs, full, like: Tensor) -> tuple[Tensor, ...]:
    return tuple(like.new_empty(full if n else (0,)) for n in needs)


# ------------------------------------------------------------------------------ fake kernels
@torch.library.register_fake("dgm_ext::bernoulli_log_prob")
def _(logits, x):
    full, ref = _rows("bernoulli_log_prob", "logits", logits=logits, x=x)
    return ref.new_empty(full[:-1])


@torch.library.register_fake("dgm_ext::bernoulli_log_prob_backward")
def _(grad, logits, x, needs):
    _check_device("bernoulli_log_prob_backward", "logits", logits, grad=grad)
    full, ref = _rows("bernoulli_log_prob_backward", "logits", logits=logits, x=x)
    return _grads(needs, full, ref)


@torch.library.register_fake("dgm_ext::gaussian_log_prob")
def _(x, mean, logvar):
    full, ref = _rows("gaussian_log_prob", "x", x=x, mean=mean, logvar=logvar)
    return ref.new_empty(full[:-1])


@torch.library.register_fake("dgm_ext::gaussian_log_prob_backward")
def _(grad, x, mean, logvar, needs):
    _check_device("gaussian_log_prob_backward", "x", x, grad=grad)
    full, ref = _rows("gaussian_log_prob_backward", "x", x=x, mean=mean, logvar=logvar)
    return _grads(needs, full, ref)


@torch.library.register_fake("dgm_ext::beta_log_prob")
def _(x, alpha, beta, eps):
    full, ref = _rows("beta_log_prob", "x", x=x, alpha=alpha, beta=beta)
    return ref.new_empty(full[:-1])


@torch.library.register_fake("dgm_ext::beta_log_prob_backward")
def _(grad, x, alpha, beta, eps, needs):
    _check_device("beta_log_prob_backward", "x", x, grad=grad)
    full, ref = _rows("beta_log_prob_backward", "x", x=x, alpha=alpha, beta=beta)
    return _grads(needs, full, ref)


def _categorical_shape(op: str, logits: Tensor, x: Tensor) -> list[int]:
    # same order of checks as the C++ categorical_prepare
    _check_float(op, "logits", logits=logits)
    _check_device(op, "logits", logits, x=x)
    if x.dtype != torch.int64:
        raise TypeError(
            f"dgm_ext.{op}: argument 'x' must be an int64 tensor of class indices, got "
            f"{_scalar_name(x.dtype)}"
        )
    if logits.dim() < 2:
        raise ValueError(f"dgm_ext.{op}: 'logits' must have shape (*B, D, K)")
    if x.dim() < 1:
        raise ValueError(f"dgm_ext.{op}: 'x' must have shape (*B, D), got a scalar")
    if logits.shape[-1] < 1:
        raise ValueError(f"dgm_ext.{op}: 'logits' must have at least one class (K >= 1)")
    return _bshape(op, logits=logits[..., 0], x=x)


@torch.library.register_fake("dgm_ext::categorical_log_prob")
def _(logits, x):
    full = _categorical_shape("categorical_log_prob", logits, x)
    return logits.new_empty(full[:-1]), logits.new_empty(full)


@torch.library.register_fake("dgm_ext::categorical_log_prob_backward")
def _(grad, logits, x, lse):
    _check_device("categorical_log_prob_backward", "logits", logits, grad=grad, lse=lse)
    full = _categorical_shape("categorical_log_prob_backward", logits, x)
    return logits.new_empty([*full, logits.shape[-1]])


@torch.library.register_fake("dgm_ext::kl_normal_std")
def _(mu, logvar):
    full, ref = _rows("kl_normal_std", "mu", mu=mu, logvar=logvar)
    return ref.new_empty(full[:-1])


@torch.library.register_fake("dgm_ext::kl_normal_std_backward")
def _(grad, mu, logvar, needs):
    _check_device("kl_normal_std_backward", "mu", mu, grad=grad)
    full, ref = _rows("kl_normal_std_backward", "mu", mu=mu, logvar=logvar)
    return _grads(needs, full, ref)


@torch.library.register_fake("dgm_ext::kl_normal")
def _(mu_q, logvar_q, mu_p, logvar_p):
    full, ref = _rows(
        "kl_normal", "mu_q", mu_q=mu_q, logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p
    )
    return ref.new_empty(full[:-1])


@torch.library.register_fake("dgm_ext::kl_normal_backward")
def _(grad, mu_q, logvar_q, mu_p, logvar_p, needs):
    _check_device("kl_normal_backward", "mu_q", mu_q, grad=grad)
    full, ref = _rows(
        "kl_normal_backward", "mu_q", mu_q=mu_q, logvar_q=logvar_q, mu_p=mu_p, logvar_p=logvar_p
    )
    return _grads(needs, full, ref)


@torch.library.register_fake("dgm_ext::reparameterize")
def _(mu, logvar, eps):
    full, ref = _rows("reparameterize", "mu", mu=mu, logvar=logvar, eps=eps)
    return ref.new_empty(full)


@torch.library.register_fake("dgm_ext::reparameterize_backward")
def _(grad, mu, logvar, eps, needs):
    _check_device("reparameterize_backward", "mu", mu, grad=grad)
    full, ref = _rows("reparameterize_backward", "mu", mu=mu, logvar=logvar, eps=eps)
    return _grads(needs, full, ref)


@torch.library.register_fake("dgm_ext::affine_coupling")
def _(x, s, t, mask, reverse):
    _rows("affine_coupling", "x", x=x, s=s, t=t, mask=mask)
    if x.dim() < 2:
        raise ValueError("dgm_ext.affine_coupling: 'x' must have shape (N, ...)")
    return x.new_empty(x.shape), x.new_empty(x.shape[:1])


@torch.library.register_fake("dgm_ext::affine_coupling_backward")
def _(grad_y, grad_logdet, x, s, t, mask, reverse, needs):
    _check_device("affine_coupling_backward", "x", x, grad_y=grad_y, grad_logdet=grad_logdet)
    full, ref = _rows("affine_coupling_backward", "x", x=x, s=s, t=t, mask=mask)
    return _grads(needs, full, ref)


def _planar_check(op: str, z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> None:
    _check_float(op, "z", z=z, u=u, w=w, b=b)
    if z.dim() != 2:
        raise ValueError(f"dgm_ext.{op}: 'z' must have shape (N, d), got {tuple(z.shape)}")
    if u.dim() != 2 or u.shape[1] != z.shape[1]:
        raise ValueError(
            f"dgm_ext.{op}: 'u' must have shape (K, d) with d = {z.shape[1]}, got {tuple(u.shape)}"
        )
    if w.shape != u.shape:
        raise ValueError(f"dgm_ext.{op}: 'w' must have the shape of 'u' {tuple(u.shape)}")
    if b.dim() != 1 or b.shape[0] != u.shape[0]:
        raise ValueError(f"dgm_ext.{op}: 'b' must have shape (K,) with K = {u.shape[0]}")


@torch.library.register_fake("dgm_ext::planar_flow")
def _(z, u, w, b):
    _planar_check("planar_flow", z, u, w, b)
    n, k = z.shape[0], u.shape[0]
    return z.new_empty(z.shape), z.new_empty((n,)), z.new_empty((n, k))


@torch.library.register_fake("dgm_ext::planar_flow_backward")
def _(grad_z, grad_logdet, z_out, act, u, w, b):
    _planar_check("planar_flow_backward", z_out, u, w, b)
    _check_device(
        "planar_flow_backward", "z_out", z_out, grad_z=grad_z, grad_logdet=grad_logdet, act=act
    )
    return (
        z_out.new_empty(z_out.shape),
        u.new_empty(u.shape),
        w.new_empty(w.shape),
        b.new_empty(b.shape),
    )


def _planar_rows_check(op: str, z_name: str, z: Tensor, u: Tensor, w: Tensor, b: Tensor) -> None:
    """The shape checks of the C++ check_planar_rows_shapes, with the same messages."""
    if z.dim() < 2:
        raise ValueError(
            f"dgm_ext.{op}: '{z_name}' must have shape (*S, N, d), got {tuple(z.shape)}"
        )
    n, d = z.shape[-2], z.shape[-1]
    if u.dim() != 3 or u.shape[0] != n or u.shape[2] != d:
        raise ValueError(
            f"dgm_ext.{op}: 'u' must have shape (N, K, d) with N = {n} and d = {d} from "
            f"'{z_name}', got {tuple(u.shape)}"
        )
    if w.shape != u.shape:
        raise ValueError(
            f"dgm_ext.{op}: 'w' must have the shape of 'u' {tuple(u.shape)}, got {tuple(w.shape)}"
        )
    if b.dim() != 2 or b.shape[0] != n or b.shape[1] != u.shape[1]:
        raise ValueError(
            f"dgm_ext.{op}: 'b' must have shape (N, K) = ({n}, {u.shape[1]}), got {tuple(b.shape)}"
        )


@torch.library.register_fake("dgm_ext::planar_flow_rows")
def _(z, u, w, b):
    op = "planar_flow_rows"
    _check_float(op, "z", z=z, u=u, w=w, b=b)
    _planar_rows_check(op, "z", z, u, w, b)
    rows = z.shape[:-1]
    return z.new_empty(z.shape), z.new_empty(rows), z.new_empty((*rows, u.shape[1]))


@torch.library.register_fake("dgm_ext::planar_flow_rows_backward")
def _(grad_z, grad_logdet, z_out, act, u, w, b, needs):
    op = "planar_flow_rows_backward"
    _check_float(
        op, "z_out", z_out=z_out, grad_z=grad_z, grad_logdet=grad_logdet, act=act, u=u, w=w, b=b
    )
    _planar_rows_check(op, "z_out", z_out, u, w, b)
    rows = tuple(z_out.shape[:-1])
    if grad_z.shape != z_out.shape:
        raise ValueError(
            f"dgm_ext.{op}: 'grad_z' must have the shape of 'z_out' {tuple(z_out.shape)}, got "
            f"{tuple(grad_z.shape)}"
        )
    if tuple(grad_logdet.shape) != rows:
        raise ValueError(
            f"dgm_ext.{op}: 'grad_logdet' must have shape {rows}, got {tuple(grad_logdet.shape)}"
        )
    if tuple(act.shape) != (*rows, u.shape[1]):
        raise ValueError(
            f"dgm_ext.{op}: 'act' must have shape {(*rows, u.shape[1])}, got {tuple(act.shape)}"
        )
    return tuple(
        t.new_empty(t.shape if n else (0,)) for t, n in zip((z_out, u, w, b), needs, strict=True)
    )


# Autocast: every forward op runs in float32 under torch.autocast (CPU and CUDA), as torch
# runs its own losses and log-densities (binary_cross_entropy_with_logits, log_softmax, ...):
# half-precision inputs (a bf16 Linear's output) are cast up, float64 stays float64, and the
# result is float32. The CPU kernels take float32/float64 only, and a likelihood summed over
# 784 pixels in bf16 would lose most of its digits.
AUTOCAST_FP32_OPS = (
    "bernoulli_log_prob",
    "gaussian_log_prob",
    "beta_log_prob",
    "categorical_log_prob",
    "kl_normal_std",
    "kl_normal",
    "reparameterize",
    "affine_coupling",
    "planar_flow",
    "planar_flow_rows",
)
for _name in AUTOCAST_FP32_OPS:
    for _device in ("cpu", "cuda"):
        torch.library.register_autocast(f"dgm_ext::{_name}", _device, torch.float32)
