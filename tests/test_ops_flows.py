"""Flow ops (affine coupling, planar flow): inverses, Jacobian determinants, determinism."""

from __future__ import annotations

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
