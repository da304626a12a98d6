"""Planar flows (dgm_ext.flows): the flow API, û, log-dets against autograd Jacobians, the
numerical inverse, the 2-D densities (quadrature, exact samplers), fits and their
evaluation, ``reproduce planar-2d --quick`` and ``train planar``."""

from __future__ import annotations

import json
import math

import pytest
import torch

from dgm_ext import cli
from dgm_ext.flows import Flow, PlanarFlow, planar_inverse, planar_u_hat
from dgm_ext.flows import densities as D
from dgm_ext.flows.base import standard_normal_log_prob
from dgm_ext.flows.fit import (
    PlanarFitConfig,
    evaluate_kl,
    evaluate_nll,
    fit_planar,
    load_planar,
    save_planar,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
OPS = ["fused", "reference"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _random_flow(k: int, generative: bool, ops: str = "fused", scale: float = 1.0, seed=0):
    torch.manual_seed(seed)
    flow = PlanarFlow(2, k, generative=generative, ops=ops, init_scale=scale).double()
    with torch.no_grad():
        flow.b.normal_()
    return flow


def _grid(box, n):
    (a0, a1), (b0, b1) = box
    h1, h2 = (a1 - a0) / n, (b1 - b0) / n
    x = a0 + h1 * (torch.arange(n, dtype=torch.float64) + 0.5)
    y = b0 + h2 * (torch.arange(n, dtype=torch.float64) + 0.5)
    return torch.stack(torch.meshgrid(x, y, indexing="ij"), -1).reshape(-1, 2), h1 * h2


# -- the API --------------------------------------------------------------------------------
@pytest.mark.parametrize("generative", [False, True])
def test_api_shapes_and_the_two_directions_agree(generative):
    flow = _random_flow(4, generative)
    assert isinstance(flow, Flow) and flow.event_shape == (2,)
    torch.manual_seed(1)
    x, log_q = flow.sample_and_log_prob(300)
    assert x.shape == (300, 2) and log_q.shape == (300,) and x.dtype == torch.float64
    # log_prob (through forward) and sample_and_log_prob (through inverse) are the same density
    torch.testing.assert_close(flow.log_prob(x), log_q, rtol=1e-9, atol=1e-9)
    assert flow.sample(7).shape == (7, 2) and flow.sample(0).shape == (0, 2)
    z, logdet = flow(x)
    torch.testing.assert_close(log_q, standard_normal_log_prob(z) + logdet, rtol=0, atol=1e-9)


@pytest.mark.parametrize("generative", [False, True])
def test_log_prob_integrates_to_one(generative):
    """∫ q = 1 by quadrature over a box that holds the mass (q through the numerical inverse
    for a generative flow, explicit otherwise)."""
    flow = _random_flow(3, generative, scale=0.8)
    pts, cell = _grid(((-9.0, 9.0), (-9.0, 9.0)), 600)
    with torch.no_grad():
        mass = float(torch.exp(flow.log_prob(pts)).sum()) * cell
    assert mass == pytest.approx(1.0, abs=2e-3)


def test_sample_temperature_scales_the_base_draws():
    flow = _random_flow(3, generative=True)
    torch.manual_seed(5)
    z = torch.randn(50, 2, dtype=torch.float64) * 0.3
    torch.manual_seed(5)
    x = flow.sample(50, temperature=0.3)
    torch.testing.assert_close(x, flow.inverse(z)[0])
    x0 = flow.sample(4, temperature=0.0)  # every draw is the image of the base mode
    torch.testing.assert_close(x0, flow.inverse(torch.zeros(4, 2, dtype=torch.float64))[0])


def test_standard_normal_log_prob_sums_over_event_dims():
    z = torch.randn(3, 2, 4, dtype=torch.float64)
    want = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum((1, 2))
    torch.testing.assert_close(standard_normal_log_prob(z), want)


# -- û ---------------------------------------------------------------------------------------
def test_u_hat_keeps_every_layer_invertible():
    g = torch.Generator().manual_seed(0)
    u = (
        torch.randn(2000, 2, generator=g, dtype=torch.float64)
        * torch.logspace(-3, 3, 2000)[:, None]
    )
    w = torch.randn(2000, 2, generator=g, dtype=torch.float64)
    u[:10] = -50.0 * w[:10]  # w·u far below −1
    w[10:20] = 0.0  # degenerate w: û = u, w·û = 0
    uh = planar_u_hat(u, w)
    wu = (w * uh).sum(-1)
    assert bool((wu > -1).all())
    torch.testing.assert_close(uh[10:20], u[10:20])
    assert bool((1 + wu[:10] < 0.02).all())  # w·u ≪ 0: close to folding, but not folded
    # w·û = m(w·u) = −1 + softplus(w·u), and û only moves along w
    torch.testing.assert_close(wu[20:], -1 + torch.nn.functional.softplus((w * u).sum(-1))[20:])
    u32, w32 = u[:10].float(), w[:10].float()  # float32 rounds −1 + softplus(−17) to −1
    assert bool(((w32 * planar_u_hat(u32, w32)).sum(-1) > -1).all())
    perp = torch.stack([-w[:, 1], w[:, 0]], 1)
    torch.testing.assert_close((perp * uh).sum(-1), (perp * u).sum(-1))


# -- log-dets against autograd Jacobians ---------------------------------------------------
@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("k", [1, 3, 8])
def test_logdets_match_autograd_jacobian_determinants(ops, k):
    flow = _random_flow(k, generative=False, ops=ops, scale=1.5, seed=k)
    z = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(k)) * 2
    _, logdet = flow.transform(z)
    _, inv_logdet = flow.untransform(z)
    for i in range(z.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: flow.transform(v[None])[0][0], z[i])
        sign, want = torch.linalg.slogdet(jac)
        assert float(sign) > 0  # û: orientation preserving
        torch.testing.assert_close(logdet[i], want, rtol=1e-10, atol=1e-10)
        jac = torch.autograd.functional.jacobian(lambda v: flow.untransform(v[None])[0][0], z[i])
        torch.testing.assert_close(
            inv_logdet[i], torch.linalg.slogdet(jac)[1], rtol=1e-8, atol=1e-8
        )


# -- the numerical inverse -------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("generative", [False, True])
def test_inverse_of_forward_is_identity_and_logdets_cancel(device, generative):
    flow = _random_flow(32, generative, scale=0.7).to(device)
    x = torch.randn(2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2
    x = x.to(device)
    z, ld = flow(x)
    back, ld_back = flow.inverse(z)
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(ld + ld_back, torch.zeros_like(ld), rtol=0, atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("scale", [0.01, 0.7])
def test_inverse_in_float32(device, scale):
    """float32: the inverse is solved in float64, so ``transform(untransform(y)) = y`` and
    the log-dets cancel to 1e-5. (The other round trip amplifies the forward pass's float32
    rounding by the inverse's condition number: ~1e-3 for 32 layers at the SPEC
    initialisation, where every layer contracts by 0.69 along w; float64 is the dtype for
    that direction, see the tests above and below.)"""
    torch.manual_seed(0)
    flow = PlanarFlow(2, 32, init_scale=scale).to(device)
    y = (torch.randn(2000, 2, generator=torch.Generator().manual_seed(1)) * 2).to(device)
    z, ld_inv = flow.untransform(y)
    assert z.dtype == torch.float32
    want, _ = planar_inverse(y.double(), flow.u_hat().double(), flow.w.double(), flow.b.double())
    torch.testing.assert_close(z.double(), want, rtol=1e-6, atol=1e-6)
    y2, ld = flow.transform(z)
    torch.testing.assert_close(y2, y, rtol=0, atol=1e-5)
    torch.testing.assert_close(ld + ld_inv, torch.zeros_like(ld), rtol=0, atol=1e-5)


def _layers(wu: float, k: int = 6):
    """k layers with w·û = wu exactly (w random, û = wu w/‖w‖² + a perpendicular part)."""
    g = torch.Generator().manual_seed(2)
    w = torch.randn(k, 2, generator=g, dtype=torch.float64) * 3
    direction = w / (w * w).sum(-1, keepdim=True)
    perp = torch.stack([-w[:, 1], w[:, 0]], 1)
    u_hat = wu * direction + 0.5 * perp
    b = torch.randn(k, generator=g, dtype=torch.float64)
    z = torch.randn(3000, 2, generator=g, dtype=torch.float64) * 2
    z = torch.cat([z, -(b[0] / (w[0] @ w[0])) * w[0].expand(5, 2)])  # on layer 1's fold
    return z, u_hat, w, b


@pytest.mark.parametrize(
    "wu", [-1 + 1e-4, -1 + 1e-3, -0.99, 0.0, 4.0, 50.0, 1e3], ids=lambda v: f"w.u_hat={v:g}"
)
def test_inverse_near_degenerate_and_steep_layers(wu):
    """w·û close to −1 (a layer that almost folds) and large w·û (steep tanh, where plain
    Newton cycles): z back to 1e-5, log-dets cancel (to 1e-4: at the fold a layer's log-det
    is log(1 + w·û) = −9.2 for 1 − 1e-4, and 1e-4 of it is the forward pass's rounding)."""
    from dgm_ext.ops import planar_flow

    z, u_hat, w, b = _layers(wu)
    y, ld = planar_flow(z, u_hat, w, b)
    back, ld_back = planar_inverse(y, u_hat, w, b)
    torch.testing.assert_close(back, z, rtol=0, atol=1e-5)
    torch.testing.assert_close(ld + ld_back, torch.zeros_like(ld), rtol=0, atol=1e-4)


@pytest.mark.parametrize("wu", [-1 + 1e-6, -1 + 1e-8, -1 + 1e-4, 1e3], ids=lambda v: f"{v:g}")
def test_forward_of_inverse_at_almost_folded_layers(wu):
    """At w·û = −1 + 1e-6 the forward pass divides information by 1e6 at the fold, so
    inverse(forward(z)) can only be as good as 1e6 × rounding; the well-conditioned
    direction forward(inverse(y)) = y still holds to 1e-9 with cancelling log-dets."""
    from dgm_ext.ops import planar_flow

    z, u_hat, w, b = _layers(wu)
    y, _ = planar_flow(z, u_hat, w, b)
    back, ld_back = planar_inverse(y, u_hat, w, b)
    y2, ld = planar_flow(back, u_hat, w, b)
    torch.testing.assert_close(y2, y, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(ld + ld_back, torch.zeros_like(ld), rtol=0, atol=1e-6)


def test_inverse_is_differentiable_in_all_inputs():
    g = torch.Generator().manual_seed(3)
    u = torch.randn(3, 2, generator=g, dtype=torch.float64)
    w = torch.randn(3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    y = torch.randn(4, 2, generator=g, dtype=torch.float64)
    args = [t.clone().requires_grad_(True) for t in (y, u, w, b)]

    def f(y, u, w, b):
        z, ld = planar_inverse(y, planar_u_hat(u, w), w, b, tol=1e-12)
        return z, ld

    assert torch.autograd.gradcheck(f, args, atol=1e-6)


# -- bad inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, exc, message",
    [
        (lambda: PlanarFlow(2, 0), ValueError, "length must be an int >= 1"),
        (lambda: PlanarFlow(0, 2), ValueError, "dim must be an int >= 1"),
        (lambda: PlanarFlow(2, 2, ops="nope.module"), ModuleNotFoundError, "nope"),
        (lambda: PlanarFlow(2, 2, tol=0), ValueError, "tol must be > 0"),
        (lambda: PlanarFlow(2, 2).log_prob(torch.zeros(3, 3)), ValueError,
         "x must have shape (N, 2)"),
        (lambda: PlanarFlow(2, 2).log_prob(torch.zeros(3, 2, dtype=torch.int64)), TypeError,
         "x must be a floating-point tensor"),
        (lambda: PlanarFlow(2, 2).log_prob(torch.zeros(3, 2, dtype=torch.float64)), TypeError,
         "x has dtype torch.float64 but the flow's parameters are torch.float32"),
        (lambda: PlanarFlow(2, 2).inverse([[0.0, 0.0]]), TypeError, "z must be a torch.Tensor"),
        (lambda: PlanarFlow(2, 2).sample(-1), ValueError, "n must be an int >= 0"),
        (lambda: PlanarFlow(2, 2).sample(3, temperature=-1.0), ValueError, "temperature must"),
        (lambda: PlanarFlow(2, 2).sample(3, temperature=math.nan), ValueError, "temperature"),
        (lambda: planar_inverse(torch.zeros(2, 2), -torch.ones(1, 2), torch.ones(1, 2) / 2,
                                torch.zeros(1)), ValueError, "u_hat: every layer needs w·û > −1"),
        (lambda: planar_inverse(torch.tensor([[math.inf, 0.0]]), torch.zeros(1, 2),
                                torch.ones(1, 2), torch.zeros(1)), ValueError, "y: the planar"),
        (lambda: planar_inverse(torch.zeros(2, 3), torch.zeros(1, 2), torch.ones(1, 2),
                                torch.zeros(1)), ValueError, "y must be (N, 2)"),
        (lambda: PlanarFlow.from_parameters([1.0, 0.0], [1.0, 0.0], [0.0]), ValueError,
         "u, w must be (K, d)"),
        (lambda: D.get_density("moons"), ValueError, "target: unknown density 'moons'"),
        (lambda: D.TARGETS["u1"].sample(-2), ValueError, "n must be an int >= 0"),
        (lambda: PlanarFitConfig("mle", "arcs", 2), ValueError, "mode must be one of"),
        (lambda: PlanarFitConfig("ml", "moons", 2), ValueError, "target: unknown density"),
        (lambda: PlanarFitConfig("ml", "arcs", 0), ValueError, "k must be an int >= 1"),
        (lambda: PlanarFitConfig("ml", "arcs", 2, steps=-1), ValueError, "steps must be"),
        (lambda: PlanarFitConfig("ml", "arcs", 2, batch_size=0), ValueError, "batch_size must"),
        (lambda: PlanarFitConfig("ml", "arcs", 2, lr=0.0), ValueError, "lr must be"),
        (lambda: PlanarFitConfig("ml", "arcs", 2, ops="eager"), ValueError, "ops must be"),
    ],
)  # fmt: skip
def test_bad_inputs_raise_errors_naming_the_argument(make, exc, message):
    with pytest.raises(exc, match=None) as info:
        make()
    assert message in str(info.value)


# -- densities -------------------------------------------------------------------------------
def test_entropy_of_restricted_u2_matches_its_closed_form():
    closed = math.log(8.0) + 0.5 * math.log(2 * math.pi * math.e * 0.16)
    assert abs(D.TARGETS["u2"].entropy() - closed) < 1e-4
    assert abs(D.TARGETS["sine"].entropy() - closed) < 1e-4


def test_entropy_of_u1_and_the_floors_of_the_issue():
    assert D.TARGETS["u1"].entropy() == pytest.approx(2.660, abs=5e-4)
    assert D.TARGETS["arcs"].entropy() == D.TARGETS["u1"].entropy()
    # halving the cell changes nothing that matters (the grid is fine enough)
    assert D.TARGETS["u1"].log_z(h=0.005) == pytest.approx(D.TARGETS["u1"].log_z(), abs=1e-9)


@pytest.mark.parametrize(
    "name, z2_mass",
    [("u2", math.sqrt(2 * math.pi) * 0.4), ("u3", 2 * math.sqrt(2 * math.pi) * 0.35),
     ("u4", math.sqrt(2 * math.pi) * (0.4 + 0.35))],
)  # fmt: skip
def test_log_z_of_the_strip_densities_in_closed_form(name, z2_mass):
    """∫ exp(−U) dz2 does not depend on z1 for U2–U4, so Z = (strip length) × that integral;
    the wall adds two half-Gaussian tails of length 0.1·√(π/2) each."""
    d = D.TARGETS[name]
    assert d.log_z() == pytest.approx(math.log(8.0 * z2_mass), abs=1e-9)
    tails = 2 * D.WALL_SCALE * math.sqrt(math.pi / 2)
    assert d.log_z(wall=True) == pytest.approx(math.log((8.0 + tails) * z2_mass), abs=1e-9)


def test_densities_restriction_and_wall():
    d = D.TARGETS["u3"]
    z = torch.tensor([[3.9, 0.0], [4.1, 0.0], [-4.2, 0.0]], dtype=torch.float64)
    lp = d.log_prob(z)
    assert math.isfinite(lp[0]) and lp[1] == -math.inf and lp[2] == -math.inf
    wall = d.energy(z) - d.base_energy(z)
    torch.testing.assert_close(wall, torch.tensor([0.0, 0.5, 2.0], dtype=torch.float64))
    u1 = D.TARGETS["u1"]
    torch.testing.assert_close(u1.energy(z), u1.base_energy(z))  # U1 needs no wall


def _chi_square(d: D.Density2D, n: int, bins: int = 24, sub: int = 12, seed: int = 0):
    """Pearson chi-square of a 2-D histogram of ``n`` samples against the bin masses of the
    normalised density (sub-grid midpoint quadrature), bins with >= 10 expected counts;
    returns (statistic, degrees of freedom, mass outside those bins seen in the samples)."""
    x = d.sample(n, torch.Generator().manual_seed(seed))
    (a0, a1), (b0, b1) = ((-4.8, 4.8), (-6.0, 3.6)) if d.restricted else ((-4.8, 4.8),) * 2
    e1 = torch.linspace(a0, a1, bins + 1, dtype=torch.float64)
    e2 = torch.linspace(b0, b1, bins + 1, dtype=torch.float64)
    pts, cell = _grid(((a0, a1), (b0, b1)), bins * sub)
    p = torch.exp(d.log_prob(pts)).reshape(bins, sub, bins, sub).sum((1, 3)) * cell
    counts = torch.histogramdd(x, bins=[e1, e2]).hist
    expected = p * n
    keep = expected >= 10
    stat = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    return stat, int(keep.sum()) - 1, x


@pytest.mark.parametrize("name", ["arcs", "sine", "u3", "u4"])
def test_exact_samplers_match_their_densities(name):
    d = D.TARGETS[name]
    stat, df, x = _chi_square(d, 100_000)
    # chi-square with df degrees of freedom: mean df, sd sqrt(2 df); 5 sd is p < 1e-5
    assert stat < df + 5 * math.sqrt(2 * df), (stat, df)
    assert x.dtype == torch.float64 and x.shape == (100_000, 2)
    if d.restricted:
        assert float(x[:, 0].abs().max()) <= D.STRIP
    # both halves of the mirror-symmetric arcs, each with half the mass
    if name == "arcs":
        assert float((x[:, 0] > 0).double().mean()) == pytest.approx(0.5, abs=0.01)


# -- fits and their evaluation --------------------------------------------------------------
def _identity_flow(mode: str) -> PlanarFlow:
    flow = PlanarFitConfig(mode, "arcs", 2).build().double()
    with torch.no_grad():
        flow.w.zero_()  # w = 0 gives û = u, and b = 0: z + u tanh(0) = z
        flow.b.zero_()
    return flow


def test_evaluate_nll_of_the_identity_flow_against_quadrature():
    ev = evaluate_nll(_identity_flow("ml").float(), "sine", n=40_000, seed=3)
    pts, cell = _grid(((-4.0, 4.0), (-6.0, 6.0)), 800)
    p = torch.exp(D.TARGETS["sine"].log_prob(pts))
    want = float((p * -standard_normal_log_prob(pts)).sum() * cell)
    assert abs(ev["nll"] - want) < 4 * ev["se"]
    assert ev["se"] == pytest.approx(float(ev["values"].std()) / math.sqrt(40_000), rel=1e-9)
    assert ev["floor"] == D.TARGETS["sine"].entropy() and ev["gap"] == ev["nll"] - ev["floor"]


def test_evaluate_kl_of_the_identity_flow_against_quadrature():
    torch.manual_seed(0)
    ev = evaluate_kl(_identity_flow("kl").float(), "u2", n=40_000)
    d = D.TARGETS["u2"]
    pts, cell = _grid(((-7.0, 7.0), (-7.0, 7.0)), 700)
    log_q = standard_normal_log_prob(pts)
    want = float((log_q.exp() * (log_q + d.energy(pts))).sum() * cell) + d.log_z(wall=True)
    assert abs(ev["kl"] - want) < 4 * ev["se"], (ev, want)
    assert ev["log_z"] == d.log_z(wall=True)
    assert ev["kl"] == pytest.approx(ev["expectation"] + ev["log_z"])


def test_fit_lowers_the_loss_and_fused_matches_reference():
    runs = {}
    for ops in OPS:
        cfg = PlanarFitConfig("kl", "u1", 4, steps=60, log_every=20, seed=3, ops=ops,
                              init_scale=0.3)  # fmt: skip
        runs[ops] = fit_planar(cfg)
    a, b = runs["fused"], runs["reference"]
    assert a.curve_steps == [20, 40, 60]
    assert a.curve_loss == pytest.approx(b.curve_loss, rel=1e-4, abs=1e-4)
    torch.testing.assert_close(a.flow.u, b.flow.u, rtol=1e-4, atol=1e-5)
    ml = fit_planar(PlanarFitConfig("ml", "arcs", 2, steps=300, log_every=100, seed=1, lr=1e-2))
    assert ml.curve_loss[-1] < ml.curve_loss[0] - 0.2


@pytest.mark.parametrize("mode, target", [("ml", "arcs"), ("kl", "u3")])
def test_training_loss_is_the_nll_and_the_reverse_kl_objective(mode, target):
    """With a learning rate too small to move the parameters, the mean training loss over
    the steps estimates the initial flow's NLL (ml) or E_q[log q + U] = KL − log Z (kl)."""
    cfg = PlanarFitConfig(mode, target, 3, steps=100, log_every=100, lr=1e-30, init_scale=0.5)
    fit = fit_planar(cfg)
    flow = cfg.build()  # the same initial parameters
    torch.testing.assert_close(fit.flow.u, flow.u, rtol=0, atol=1e-20)
    torch.manual_seed(0)
    ev = evaluate_nll(flow, target, n=50_000) if mode == "ml" else evaluate_kl(flow, target, 50_000)
    want = ev["nll"] if mode == "ml" else ev["expectation"]
    # 12 800 training samples: SE about 1.6 x the evaluation's; 5 combined SE
    assert fit.final_loss == pytest.approx(want, abs=5 * ev["se"] * math.sqrt(1 + 50_000 / 12_800))


def test_save_and_load_round_trip(tmp_path):
    r = fit_planar(PlanarFitConfig("ml", "arcs", 3, steps=5, log_every=1))
    path = save_planar(r, tmp_path / "f" / "flow.pt")
    back = load_planar(path)
    assert back.config == r.config and back.curve_loss == r.curve_loss
    for name in ("u", "w", "b"):
        torch.testing.assert_close(getattr(back.flow, name), getattr(r.flow, name))
    assert load_planar(path, ops="reference").flow.ops.__name__ == "dgm_ext.ops.reference"
    torch.save({"x": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a planar-flow file"):
        load_planar(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="path: no planar-flow file"):
        load_planar(tmp_path / "missing.pt")


def test_a_diverging_fit_names_its_step():
    cfg = PlanarFitConfig("kl", "u1", 2, steps=10, lr=1e30, log_every=5, init_scale=1.0)
    with pytest.raises(FloatingPointError, match="kl-u1-K2: non-finite training loss"):
        fit_planar(cfg)


# -- the experiment --------------------------------------------------------------------------
def test_checks_judge_falling_with_k_within_two_standard_errors():
    from dgm_ext.experiments.planar_2d import _checks

    def rows(nll8, se8, nll32, gap32):
        return [
            {"data": "arcs", "k": 2, "nll": 3.5},
            {"data": "arcs", "k": 8, "nll": nll8, "change": nll8 - 3.5, "change_se": se8},
            {"data": "arcs", "k": 32, "nll": nll32, "change": nll32 - nll8, "change_se": 0.01,
             "reference": 2.72, "gap": gap32},
        ]  # fmt: skip

    c = _checks(rows(2.8, 0.01, 2.81, 0.15))["arcs"]  # +0.01 with SE 0.01: within 2 SE
    assert c == {"k32_at_or_below_reference": False, "k32_gap": 0.15,
                 "stretch_within_0.05": False, "falling_with_k": True}  # fmt: skip
    c = _checks(rows(2.8, 0.01, 2.83, 0.04))["arcs"]  # +0.03 > 2 SE: not falling
    assert c["falling_with_k"] is False and c["stretch_within_0.05"] is True
    assert _checks(rows(2.8, 0.01, 2.70, 0.04))["arcs"]["k32_at_or_below_reference"] is True


def test_reproduce_planar_2d_quick(tmp_path, capsys):
    out = tmp_path / "run"
    assert cli.main(["reproduce", "planar-2d", "--quick", "--out", str(out), "--no-progress"]) == 0
    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert res["settings"]["steps"] == 200 and res["settings"]["ks"] == [2, 8, 32]
    assert [(r["data"], r["k"]) for r in res["ml"]] == [
        (d, k) for d in ("arcs", "sine") for k in (2, 8, 32)
    ]
    assert [(r["target"], r["k"]) for r in res["kl"]] == [
        (t, k) for t in ("u1", "u2", "u3", "u4", "arcs", "sine") for k in (2, 8, 32)
    ]
    closed = math.log(8.0) + 0.5 * math.log(2 * math.pi * math.e * 0.16)
    assert res["targets"]["sine"]["entropy"] == pytest.approx(closed, abs=1e-4)
    for r in res["ml"]:
        assert r["n"] == 5000 and r["floor"] == res["targets"][r["data"]]["entropy"]
        assert r["gap"] == pytest.approx(r["nll"] - r["floor"])
        reference = {"arcs": {2: 3.46, 8: 2.73, 32: 2.72}, "sine": {2: 3.55, 8: 3.04, 32: 2.91}}
        assert r["reference"] == reference[r["data"]][r["k"]]
        assert f"| {r['data']} | {r['k']} | {r['nll']:.3f} ± {r['se']:.3f} |" in md
        assert ("change" in r) == (r["k"] != 2)
    for r in res["kl"]:
        assert r["log_z"] == res["targets"][r["target"]]["log_z_wall"]
        assert f"| {r['target']} | {r['k']} | {r['kl']:.3f} ± {r['se']:.3f} |" in md
        assert math.isfinite(r["kl"]) and r["se"] > 0
    assert set(res["checks"]) == {"arcs", "sine"} and res["failed"] == {}
    figures = {p.name for p in (out / "figures").iterdir()}
    assert figures == {"single_layers.png", "targets.png", "losses-ml.png", "losses-kl.png",
                       "ml-arcs.png", "ml-sine.png", *(f"kl-{t}.png" for t in
                       ("u1", "u2", "u3", "u4", "arcs", "sine"))}  # fmt: skip
    assert len(list((out / "fits").glob("*/flow.pt"))) == 24
    assert "\\|z1\\| <= 4" in md  # the pipe of a table cell is escaped

    # a rerun into the same --out reuses the fits: same numbers, no training
    capsys.readouterr()
    assert cli.main(["reproduce", "planar-2d", "--quick", "--out", str(out), "--no-progress",
                     "--run", "ml", "--k", "8"]) == 0  # fmt: skip
    assert "reusing 2 fit(s)" in capsys.readouterr().out
    again = json.loads((out / "results.json").read_text())
    assert [(r["data"], r["k"]) for r in again["ml"]] == [("arcs", 8), ("sine", 8)]
    assert again["kl"] == [] and again["ml"][0]["nll"] == res["ml"][1]["nll"]
    assert (again["fits_reused"], again["fits_trained"]) == (2, 0)
    assert (res["fits_reused"], res["fits_trained"]) == (0, 24)


def test_reproduce_planar_2d_options(tmp_path, capsys):
    from dgm_ext.experiments import run_experiment

    res = run_experiment("planar-2d", out=tmp_path / "r", quick=True, k=2, progress=False,
                         extra={"run": "kl,u4", "steps": 30})  # fmt: skip
    assert [(r["target"], r["k"], r["steps"]) for r in res["kl"]] == [("u4", 2, 30)]
    assert res["ml"] == []
    for argv, message in [
        (["--epochs", "3"], "epochs: planar-2d trains for a number of steps"),
        (["--run", "moons"], "run: 'moons' must be a comma-separated selection"),
        (["--run", "ml,u3"], "run: 'ml,u3' selects no fit"),
        (["--k", "0"], "k: the number of planar layers must be an int >= 1"),
        (["--ema", "0.9"], "--ema: experiment 'planar-2d' does not take this option"),
    ]:
        assert cli.main(["reproduce", "planar-2d", "--quick", "--out", str(tmp_path / "x"),
                         *argv]) == 2  # fmt: skip
        assert message in capsys.readouterr().err, argv


# -- train planar ----------------------------------------------------------------------------
def test_train_planar_writes_a_run_and_refuses_other_settings(tmp_path, capsys):
    out = tmp_path / "p"
    base = ["train", "planar", "--out", str(out), "--steps", "60", "--k", "3",
            "--eval-samples", "2000", "--no-progress"]  # fmt: skip
    assert cli.main([*base, "--data", "sine"]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["fit"] == "ml-sine-K3" and res["n"] == 2000
    assert res["floor"] == pytest.approx(D.TARGETS["sine"].entropy())
    assert res["gap"] == pytest.approx(res["nll"] - res["floor"])
    fit = load_planar(out / "flow.pt")
    assert fit.config.steps == 60 and fit.config.k == 3 and not fit.flow.generative
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == fit.curve_steps and rows[-1]["loss"] == res["train_loss"]
    assert (out / "figures" / "fit.png").is_file() and (out / "figures" / "loss.png").is_file()
    assert json.loads((out / "planar_args.json").read_text())["target"] == "sine"

    capsys.readouterr()  # same settings: evaluated again, not retrained
    assert cli.main([*base, "--target", "sine"]) == 0
    assert "holds this fit already" in capsys.readouterr().out
    assert json.loads((out / "eval.json").read_text())["nll"] == res["nll"]
    assert cli.main([*base, "--target", "u3"]) == 2
    assert "--out: " in capsys.readouterr().err
    assert cli.main([*base, "--target", "u3", "--mode", "kl", "--fresh"]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["fit"] == "kl-u3-K3" and res["log_z"] == D.TARGETS["u3"].log_z(wall=True)
    assert len(list(tmp_path.glob("p.old-*"))) == 1  # moved aside, not deleted


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--k", "0"], "--k must be >= 1"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--eval-samples", "1"], "--eval-samples must be >= 2"),
        (["--lr", "0"], "--lr must be a finite number > 0"),
        (["--lr", "nan"], "--lr must be a finite number > 0"),
        (["--init-scale", "-1"], "--init-scale must be a finite number >= 0"),
        (["--target", "moons"], "--target: unknown density 'moons'"),
        (["--ops", "eager"], "--ops must be 'fused' or 'reference'"),
        (["--seed", "-1"], "--seed must be >= 0"),
    ],
)
def test_train_planar_bad_options_are_clear_errors(tmp_path, capsys, extra, message):
    assert cli.main(["train", "planar", "--out", str(tmp_path / "x"), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()  # refused before anything was written


def test_train_planar_bad_mode_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "planar", "--mode", "mle"])
    assert "argument --mode: invalid choice: 'mle'" in capsys.readouterr().err
