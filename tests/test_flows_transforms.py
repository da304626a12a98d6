"""Composable flows (issue 25): every transform of dgm_ext.flows.transforms against brute-force
Jacobians (float64, small inputs), round trips, composition, inversion, base distributions
against torch.distributions, TransformedFlow against a closed-form Gaussian density,
conditional couplings and the conditional planar transform (against a per-row loop of the
unconditional one, and against the amortised VAE posterior), and a learnable base that
learns."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from torch import distributions as D

import dgm_ext.ops as fused
import dgm_ext.ops.reference as reference
from dgm_ext.flows import (
    AffineCouplingTransform,
    ComposedTransform,
    ConditionalPlanarTransform,
    DiagonalGaussian,
    FactorOutTransform,
    InverseTransform,
    LogitTransform,
    PermutationTransform,
    PlanarFlow,
    PlanarTransform,
    SqueezeTransform,
    StandardNormal,
    Transform,
    TransformedFlow,
)
from dgm_ext.flows.coupling import (
    ConvCouplingNet,
    MaskedMLPCouplingNet,
    MLPCouplingNet,
    channel_mask,
    checkerboard_mask,
)
from dgm_ext.vae import PlanarPosterior

pytestmark = pytest.mark.usefixtures("one_thread")

OPS = ["fused", "reference"]


def _perturb(module: nn.Module, scale: float, seed: int = 0) -> nn.Module:
    """Move every parameter off its initial value (zero-initialised last layers would make a
    fresh coupling the identity, and small planar parameters almost the identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _logabsdet(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """log|det ∂fn/∂x| of one example by the full autograd Jacobian (float64)."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view(1, *x.shape)).flatten(), x)
    return torch.linalg.slogdet(jac.reshape(x.numel(), x.numel()))[1]


def _row(context: Tensor | None, i: int) -> Tensor | None:
    if context is None or context.ndim == 1:
        return context
    return context[i : i + 1]


# -- the catalogue: (name, transform, x, context), float64 --------------------------------
def _mlp_coupling(ops: str, context_dim: int = 0) -> Transform:
    mask = checkerboard_mask(2, 3).reshape(6)
    return AffineCouplingTransform(mask, MLPCouplingNet(6, 8, context_dim), ops=ops)


def _cases(ops: str) -> list[tuple[str, Transform, Tensor, Tensor | None]]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    planar = _perturb(PlanarTransform(2, 3, ops=ops).double(), 1.0)
    masked = checkerboard_mask(2, 3, 1).reshape(6)
    cond_planar = ConditionalPlanarTransform(2, 3, context_dim=4, ops=ops).double()
    with torch.no_grad():
        cond_planar.head.weight.normal_(0.0, 0.5, generator=g)
        cond_planar.head.bias.normal_(0.0, 0.5, generator=g)
    pixels = torch.rand(3, 1, 2, 2, generator=g, dtype=torch.float64) * 0.9 + 0.05
    cases = [
        ("planar", planar, randn(3, 2), None),
        ("planar.inv", planar.inv, randn(3, 2), None),
        ("coupling-mlp", _perturb(_mlp_coupling(ops).double(), 0.3), randn(3, 6), None),
        (
            "coupling-masked-mlp",
            _perturb(
                AffineCouplingTransform(masked, MaskedMLPCouplingNet(masked, 8), ops=ops), 0.3
            ).double(),
            randn(3, 6),
            None,
        ),
        (
            "coupling-checkerboard-conv",
            _perturb(
                AffineCouplingTransform(
                    checkerboard_mask(2, 2), ConvCouplingNet(2, 4, 1), True, ops
                ).double(),
                0.3,
            ),
            randn(3, 2, 2, 2),
            None,
        ),
        (
            "coupling-channel-conv",
            _perturb(
                AffineCouplingTransform(
                    channel_mask(4), ConvCouplingNet(4, 4, 1), True, ops
                ).double(),
                0.3,
            ),
            randn(3, 4, 2, 2),
            None,
        ),
        ("squeeze", SqueezeTransform(), randn(3, 1, 2, 4), None),
        (
            "factor-out-conditional",  # the second half of the channels through a coupling
            FactorOutTransform(
                _perturb(
                    AffineCouplingTransform(
                        channel_mask(2), ConvCouplingNet(2, 4, 1, 3), True, ops
                    ).double(),
                    0.3,
                )
            ),
            randn(3, 4, 2, 2),
            randn(3, 3),
        ),
        ("permutation", PermutationTransform([2, 0, 3, 1]), randn(3, 4), None),
        ("reversal", PermutationTransform.reversal(5), randn(3, 5), None),
        ("logit", LogitTransform(0.05), pixels, None),
        ("conditional-planar", cond_planar, randn(3, 2), randn(3, 4)),
        (
            "conditional-coupling-mlp",
            _perturb(_mlp_coupling(ops, context_dim=3).double(), 0.3),
            randn(3, 6),
            randn(3, 3),
        ),
        (
            "conditional-coupling-masked",
            _perturb(
                AffineCouplingTransform(masked, MaskedMLPCouplingNet(masked, 8, 2), ops=ops), 0.3
            ).double(),
            randn(3, 6),
            randn(2),  # one context for every example
        ),
        (
            "conditional-coupling-conv",
            _perturb(
                AffineCouplingTransform(
                    checkerboard_mask(2, 2), ConvCouplingNet(1, 4, 1, 3), True, ops
                ).double(),
                0.3,
            ),
            randn(3, 1, 2, 2),
            randn(3, 3),
        ),
        (
            "composed-nested",
            ComposedTransform(
                _perturb(_mlp_coupling(ops, context_dim=3).double(), 0.3, seed=2),
                PermutationTransform([5, 3, 1, 0, 2, 4]),
                ComposedTransform(
                    _perturb(PlanarTransform(6, 2, ops=ops).double(), 0.5, seed=3),
                    _perturb(_mlp_coupling(ops).double(), 0.3, seed=4).inv,
                ),
            ),
            randn(3, 6),
            randn(3, 3),
        ),
    ]
    return cases


CASE_NAMES = [c[0] for c in _cases("reference")]


def _case(name: str, ops: str) -> tuple[Transform, Tensor, Tensor | None]:
    for n, t, x, c in _cases(ops):
        if n == name:
            return t, x, c
    raise KeyError(name)


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("name", CASE_NAMES)
def test_round_trips_and_logdets_match_the_jacobian(name: str, ops: str) -> None:
    t, x, context = _case(name, ops)
    y, ld = t(x, context)
    assert ld.shape == (x.shape[0],) and ld.dtype == torch.float64
    x_back, ld_back = t.inverse(y, context)
    # forward ∘ inverse = identity, and the inverse's log-det is minus the forward one
    torch.testing.assert_close(x_back, x, rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(ld_back, -ld, rtol=1e-7, atol=1e-7)
    y_other = y.flip(0) + 0.1  # another point of the output space: inverse ∘ forward too
    y2, _ = t(t.inverse(y_other, context)[0], context)
    torch.testing.assert_close(y2, y_other, rtol=1e-7, atol=1e-7)
    for i in range(x.shape[0]):
        c = _row(context, i)
        want = _logabsdet(lambda v, c=c: t(v, c)[0], x[i])
        torch.testing.assert_close(ld[i], want, rtol=1e-7, atol=1e-7)
        want_inv = _logabsdet(lambda v, c=c: t.inverse(v, c)[0], y[i])
        torch.testing.assert_close(ld_back[i], want_inv, rtol=1e-7, atol=1e-7)


def test_composed_logdet_is_the_sum_and_the_inverse_runs_backwards() -> None:
    torch.manual_seed(0)
    a = _perturb(_mlp_coupling("fused").double(), 0.3, seed=1)
    b = PermutationTransform([1, 4, 0, 5, 2, 3])
    c = _perturb(PlanarTransform(6, 2).double(), 0.5, seed=2)
    x = torch.randn(4, 6, dtype=torch.float64)
    composed = ComposedTransform(a, b, c)
    y, ld = composed(x)
    ya, lda = a(x)
    yb, ldb = b(ya)
    yc, ldc = c(yb)
    torch.testing.assert_close(y, yc, rtol=0, atol=0)
    torch.testing.assert_close(ld, lda + ldb + ldc, rtol=0, atol=1e-12)
    # inverse: c⁻¹, then b⁻¹, then a⁻¹
    xc, ic = c.inverse(y)
    xb, ib = b.inverse(xc)
    xa, ia = a.inverse(xb)
    x_back, ld_back = composed.inverse(y)
    torch.testing.assert_close(x_back, xa, rtol=0, atol=0)
    torch.testing.assert_close(ld_back, ic + ib + ia, rtol=0, atol=1e-12)
    # a nested composition is the same map
    nested = ComposedTransform(ComposedTransform(a, b), ComposedTransform(c))
    y_n, ld_n = nested(x)
    torch.testing.assert_close(y_n, y, rtol=0, atol=0)
    torch.testing.assert_close(ld_n, ld, rtol=0, atol=1e-12)
    # list behaviour and the empty composition (identity, log-det 0)
    assert len(composed) == 3 and composed[1] is b and list(composed) == [a, b, c]
    assert list(composed[1:]) == [b, c]
    y0, ld0 = ComposedTransform()(x)
    assert torch.equal(y0, x) and torch.equal(ld0, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(TypeError, match=r"transforms\[1\] must be a Transform"):
        ComposedTransform(a, nn.Linear(2, 2))


def test_inverse_transform_swaps_the_directions() -> None:
    t = _perturb(_mlp_coupling("fused").double(), 0.3)
    x = torch.randn(3, 6, dtype=torch.float64)
    inv = t.inv
    assert isinstance(inv, InverseTransform) and inv.inv is t
    y, ld = t.inverse(x)
    y2, ld2 = inv(x)
    assert torch.equal(y, y2) and torch.equal(ld, ld2)
    assert torch.equal(inv.inverse(x)[0], t(x)[0])


# -- base distributions -------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3,), (2, 2, 3)])
def test_base_distributions_match_torch_distributions(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(0)
    base = DiagonalGaussian(shape).double()
    with torch.no_grad():
        base.loc.normal_(generator=g)
        base.log_scale.normal_(0.0, 0.5, generator=g)
    z = torch.randn(5, *shape, generator=g, dtype=torch.float64)
    want = D.Normal(base.loc, base.log_scale.exp()).log_prob(z).flatten(1).sum(-1)
    torch.testing.assert_close(base.log_prob(z), want, rtol=1e-12, atol=1e-12)
    std = StandardNormal(shape).double()
    want = D.Normal(0.0, 1.0).log_prob(z).flatten(1).sum(-1)
    torch.testing.assert_close(std.log_prob(z), want, rtol=1e-12, atol=1e-12)
    # samples: shape, dtype, and the moments at a temperature
    torch.manual_seed(0)
    s = base.sample(20_000, temperature=0.5)
    assert s.shape == (20_000, *shape) and s.dtype == torch.float64
    torch.testing.assert_close(s.mean(0), base.loc.detach(), rtol=0, atol=0.05)
    torch.testing.assert_close(s.std(0), 0.5 * base.log_scale.detach().exp(), rtol=0.05, atol=0)
    assert std.sample(7, 0.0).abs().max() == 0 and std.sample(7).dtype == torch.float64
    with pytest.raises(ValueError, match="temperature must be"):
        base.sample(3, temperature=-1.0)


# -- TransformedFlow ----------------------------------------------------------------------
class _LinearNet(nn.Module):
    """A coupling net with constant log-scale and a shift linear in the kept half: the
    coupling is then an affine map of ℝ^D."""

    def __init__(self, dim: int, g: torch.Generator) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.randn(dim, generator=g))
        self.lin = nn.Linear(dim, dim)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(dim, dim, generator=g))
            self.lin.bias.copy_(torch.randn(dim, generator=g))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.s.expand_as(x), self.lin(x)


def _affine_flow() -> TransformedFlow:
    g = torch.Generator().manual_seed(3)
    mask = torch.tensor([1.0, 0.0, 1.0])
    transform = ComposedTransform(
        AffineCouplingTransform(mask, _LinearNet(3, g)),
        PermutationTransform([2, 0, 1]),
        AffineCouplingTransform(1.0 - mask, _LinearNet(3, g)),
    )
    base = DiagonalGaussian(3)
    with torch.no_grad():
        base.loc.copy_(torch.randn(3, generator=g))
        base.log_scale.copy_(0.5 * torch.randn(3, generator=g))
    return TransformedFlow(transform, base).double()


def test_transformed_flow_log_prob_is_the_closed_form_gaussian() -> None:
    flow = _affine_flow()
    # the transform is x ↦ A x + c: read A and c off the map itself (no log-det involved)
    with torch.no_grad():
        c = flow(torch.zeros(1, 3, dtype=torch.float64))[0][0]
        a = flow(torch.eye(3, dtype=torch.float64))[0] - c  # row j: A e_j
        a = a.T
        a_inv = torch.linalg.inv(a)
        sigma = torch.diag(torch.exp(2 * flow.base.log_scale))
        # z = A x + c ~ N(μ, Σ)  ⇒  x ~ N(A⁻¹(μ − c), A⁻¹ Σ A⁻ᵀ)
        want_dist = D.MultivariateNormal(a_inv @ (flow.base.loc - c), a_inv @ sigma @ a_inv.T)
    assert not torch.allclose(a, torch.triu(a)) and not torch.allclose(a, torch.tril(a))
    x = torch.randn(6, 3, dtype=torch.float64)
    torch.testing.assert_close(flow.log_prob(x), want_dist.log_prob(x), rtol=1e-10, atol=1e-10)
    torch.manual_seed(0)
    xs, log_q = flow.sample_and_log_prob(5)
    torch.testing.assert_close(log_q, want_dist.log_prob(xs), rtol=1e-10, atol=1e-10)
    torch.manual_seed(0)
    xs2 = flow.sample(5)
    torch.testing.assert_close(xs2, xs, rtol=0, atol=0)
    big = flow.sample(40_000)
    torch.testing.assert_close(big.mean(0), want_dist.mean, rtol=0, atol=0.1)


def test_transformed_flow_of_planar_transforms_with_a_learnable_base() -> None:
    torch.manual_seed(0)
    flow = TransformedFlow(
        ComposedTransform(PlanarTransform(2), PlanarTransform(2)), DiagonalGaussian((2,))
    )
    x = torch.randn(8, 2)
    z, ld = flow(x)
    assert flow.log_prob(x).shape == (8,) and flow.sample(4, temperature=0.7).shape == (4, 2)
    torch.testing.assert_close(flow.log_prob(x), flow.base.log_prob(z) + ld)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\)"):
        flow.log_prob(torch.zeros(3, 3))
    with pytest.raises(TypeError, match="base must be a Distribution"):
        TransformedFlow(PlanarTransform(2), nn.Linear(2, 2))


@pytest.mark.parametrize("transform", ["none", "planar"])
def test_a_learnable_base_learns_a_shifted_gaussian(transform: str) -> None:
    torch.manual_seed(0)
    shift, scale = torch.tensor([3.0, -2.0]), 0.5
    layers = PlanarTransform(2, 2) if transform == "planar" else ComposedTransform()
    flow = TransformedFlow(layers, DiagonalGaussian(2))
    opt = torch.optim.Adam(flow.parameters(), lr=0.05)
    data = shift + scale * torch.randn(4096, 2)
    start = float((flow.base.loc.detach() - shift).norm())
    for _ in range(300):
        batch = data[torch.randint(0, len(data), (256,))]
        loss = -flow.log_prob(batch).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = float((flow.base.loc.detach() - shift).norm())
    with torch.no_grad():
        samples = flow.sample(8000)
    torch.testing.assert_close(samples.mean(0), shift, rtol=0, atol=0.1)
    torch.testing.assert_close(samples.std(0), torch.full((2,), scale), rtol=0, atol=0.1)
    if transform == "none":  # the base alone: its maximum-likelihood fit
        assert start > 3.5 and end < 0.1, (start, end)
        torch.testing.assert_close(
            flow.base.log_scale.detach().exp(), torch.full((2,), scale), rtol=0, atol=0.05
        )
    else:  # the planar layers take part of the shift; the base's mean still moves
        assert start > 3.5 and end < 0.7 * start, (start, end)


# -- conditional transforms ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["mlp", "masked", "conv"])
def test_a_conditional_coupling_depends_on_the_context(kind: str) -> None:
    torch.manual_seed(0)
    if kind == "mlp":
        t = _mlp_coupling("fused", context_dim=3)
        x = torch.randn(1, 6, dtype=torch.float64)
    elif kind == "masked":
        m = checkerboard_mask(2, 3).reshape(6)
        t = AffineCouplingTransform(m, MaskedMLPCouplingNet(m, 8, context_dim=3))
        x = torch.randn(1, 6, dtype=torch.float64)
    else:
        t = AffineCouplingTransform(checkerboard_mask(2, 2), ConvCouplingNet(2, 4, 1, 3), True)
        x = torch.randn(1, 2, 2, 2, dtype=torch.float64)
    t = _perturb(t.double(), 0.3)
    contexts = torch.randn(3, 3, dtype=torch.float64)
    outs = [t(x, c) for c in contexts]
    for i in range(3):
        for j in range(i):
            assert (outs[i][0] - outs[j][0]).abs().max() > 1e-3
            assert (outs[i][1] - outs[j][1]).abs().max() > 1e-3
        want = _logabsdet(lambda v, c=contexts[i]: t(v, c)[0], x[0])
        torch.testing.assert_close(outs[i][1][0], want, rtol=1e-9, atol=1e-9)
        back, _ = t.inverse(outs[i][0], contexts[i])
        torch.testing.assert_close(back, x, rtol=1e-9, atol=1e-9)
    # per-row contexts = the rows one at a time
    xs = x.expand(3, *x.shape[1:])
    y, ld = t(xs, contexts)
    torch.testing.assert_close(y, torch.cat([o[0] for o in outs]), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld, torch.cat([o[1] for o in outs]), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="needs a context of size 3"):
        t(x)
    with pytest.raises(ValueError, match="context must have 3 features, got 2"):
        t(x, torch.zeros(2, dtype=torch.float64))


def test_unconditional_nets_refuse_a_context_and_are_unchanged() -> None:
    torch.manual_seed(0)
    a = MLPCouplingNet(6, 8)
    torch.manual_seed(0)
    b = MLPCouplingNet(6, 8, context_dim=0)
    assert a.net[0].in_features == 6 and all(
        torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )
    with pytest.raises(ValueError, match="takes no context"):
        a(torch.zeros(2, 6), torch.zeros(2, 3))


def test_a_conditional_flow_samples_and_scores_with_its_context() -> None:
    torch.manual_seed(0)
    transform = ComposedTransform(
        _perturb(_mlp_coupling("fused", context_dim=3).double(), 0.3, seed=1),
        PermutationTransform.reversal(6),
        _perturb(_mlp_coupling("fused").double(), 0.3, seed=2),  # unconditional member
        _conditional_planar_6d(),
    )
    flow = TransformedFlow(transform, StandardNormal(6).double())
    context = torch.randn(3, dtype=torch.float64)
    torch.manual_seed(1)
    x, log_q = flow.sample_and_log_prob(5, context=context)
    torch.testing.assert_close(flow.log_prob(x, context), log_q, rtol=1e-7, atol=1e-7)
    other = flow.log_prob(x, context + 1.0)
    assert (other - log_q).abs().min() > 1e-4
    torch.manual_seed(1)
    assert torch.equal(flow.sample(5, context=context.expand(5, 3)), x)
    with pytest.raises(ValueError, match="context has 2 rows but the input has 5"):
        flow.sample(5, context=torch.zeros(2, 3, dtype=torch.float64))


def _conditional_planar_6d() -> ConditionalPlanarTransform:
    t = ConditionalPlanarTransform(6, 2, context_dim=3).double()
    with torch.no_grad():
        t.head.weight.normal_(0.0, 0.3)
    return t


def _conditional_planar(ops: str, scale: float = 0.5) -> ConditionalPlanarTransform:
    t = ConditionalPlanarTransform(3, 4, context_dim=5, ops=ops).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        t.head.weight.normal_(0.0, scale, generator=g)
        t.head.bias.normal_(0.0, scale, generator=g)
    return t


@pytest.mark.parametrize("ops", OPS)
def test_conditional_planar_is_the_planar_transform_row_by_row(ops: str) -> None:
    t = _conditional_planar(ops)
    g = torch.Generator().manual_seed(8)
    context = torch.randn(6, 5, generator=g, dtype=torch.float64)
    z = torch.randn(4, 6, 3, generator=g, dtype=torch.float64)  # 4 samples of 6 examples
    y, ld = t(z, context)
    assert y.shape == z.shape and ld.shape == (4, 6)
    u, w, b = t.params(context)
    for i in range(6):
        row = PlanarTransform(3, 4, ops=ops).double()
        with torch.no_grad():
            row.u.copy_(u[i]), row.w.copy_(w[i]), row.b.copy_(b[i])
        y_i, ld_i = row(z[:, i])
        torch.testing.assert_close(y[:, i], y_i, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ld[:, i], ld_i, rtol=1e-12, atol=1e-12)
        x_i, ldx_i = row.inverse(y[:, i])
        x_all, ldx_all = t.inverse(y[:, i], context[i])
        torch.testing.assert_close(x_all, x_i, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ldx_all, ldx_i, rtol=1e-10, atol=1e-10)
    # the inverse with sample dimensions
    back, ld_back = t.inverse(y, context)
    torch.testing.assert_close(back, z, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(ld_back, -ld, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="needs a context"):
        t(z[0])


@pytest.mark.parametrize("ops", [fused, reference])
def test_the_amortised_vae_posterior_is_the_conditional_planar_transform(ops) -> None:
    torch.manual_seed(0)
    post = PlanarPosterior(3, 4, 5).double()
    t = ConditionalPlanarTransform(3, 4, context_dim=5).double()
    with torch.no_grad():
        post.head.weight.normal_(0.0, 0.5)
        post.head.bias.normal_(0.0, 0.5)
    t.head.load_state_dict(post.head.state_dict())
    h = torch.randn(2, 6, 5, dtype=torch.float64)  # batch dimensions (2, 6)
    z0 = torch.randn(3, 2, 6, 3, dtype=torch.float64)
    zk, logdet = post(z0, h, ops)
    zt, ldt = t(z0, h, ops=ops)
    assert torch.equal(zk, zt) and torch.equal(logdet, ldt)
    # same head construction: same shapes and initialisation
    torch.manual_seed(1)
    a = PlanarPosterior(3, 4, 5)
    torch.manual_seed(1)
    b = ConditionalPlanarTransform(3, 4, context_dim=5)
    assert torch.equal(a.head.weight, b.head.weight) and torch.equal(a.head.bias, b.head.bias)


# -- the flows built from transforms keep their state-dict keys ----------------------------
def test_planar_flow_keys_stay_u_w_b() -> None:
    torch.manual_seed(0)
    flow = PlanarFlow(2, 3)
    state = flow.state_dict()
    assert list(state) == ["u", "w", "b"]
    other = PlanarFlow(2, 3)
    other.load_state_dict(state)
    assert torch.equal(other.u, flow.u) and isinstance(other.layers, PlanarTransform)
    nested = nn.Sequential(nn.Linear(1, 1), flow, nn.Linear(1, 1))
    assert list(nested.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.u",
        "1.w",
        "1.b",
        "2.weight",
        "2.bias",
    ]
    nested.load_state_dict(nested.state_dict())
    # an already renamed (transform-layout) state dict loads too
    other.load_state_dict({"layers." + k: v for k, v in state.items()})
    assert torch.equal(other.b, flow.b)
