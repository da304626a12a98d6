"""GAN foundation: losses against their formulas, R1/GP against closed forms, generator EMA
(parameters averaged, buffers copied), and the MLP/DCGAN networks."""

from __future__ import annotations

import io
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from dgm_ext import gan
from dgm_ext.gan import losses as L

OPS = ["fused", "reference"]
DT = torch.float64


def _logits(shape: tuple[int, ...] = (6,)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    real = torch.randn(6, generator=g, dtype=DT) * 3
    fake = torch.randn(6, generator=g, dtype=DT) * 3
    real[0], real[1], fake[0], fake[1] = 100.0, -100.0, 100.0, -100.0  # extreme logits
    return real.reshape(shape).requires_grad_(), fake.reshape(shape).requires_grad_()


# Independent formulas: BCE-with-logits / logsigmoid / plain arithmetic.
def _bce(x: torch.Tensor, label: float) -> torch.Tensor:
    x = x.flatten()
    return F.binary_cross_entropy_with_logits(x, torch.full_like(x, label))


FORMULAS = {
    "jsd_critic": (
        lambda r, f, ops: L.jsd_critic_loss(r, f, ops=ops),
        lambda r, f: _bce(r, 1.0) + _bce(f, 0.0),
    ),
    "jsd_gen_saturating": (
        lambda r, f, ops: L.jsd_generator_loss_saturating(f, ops=ops),
        lambda r, f: F.logsigmoid(-f.flatten()).mean(),
    ),
    "jsd_gen_nonsaturating": (
        lambda r, f, ops: L.jsd_generator_loss_nonsaturating(f, ops=ops),
        lambda r, f: -F.logsigmoid(f.flatten()).mean(),
    ),
    "jsd_estimate": (
        lambda r, f, ops: L.jsd_estimate(r, f, ops=ops),
        lambda r, f: 0.5 * (F.logsigmoid(r).mean() - F.softplus(f).mean()) + math.log(2),
    ),
    "w1_estimate": (
        lambda r, f, ops: L.w1_estimate(r, f),
        lambda r, f: r.flatten().mean() - f.flatten().mean(),
    ),
    "w1_critic": (
        lambda r, f, ops: L.w1_critic_loss(r, f),
        lambda r, f: f.flatten().mean() - r.flatten().mean(),
    ),
    "w1_gen": (lambda r, f, ops: L.w1_generator_loss(f), lambda r, f: -f.flatten().mean()),
    "hinge_critic": (
        lambda r, f, ops: L.hinge_critic_loss(r, f),
        lambda r, f: (1 - r).clamp(min=0).mean() + (1 + f).clamp(min=0).mean(),
    ),
    "hinge_gen": (lambda r, f, ops: L.hinge_generator_loss(f), lambda r, f: -f.flatten().mean()),
}


@pytest.mark.parametrize("ops", OPS)
@pytest.mark.parametrize("shape", [(6,), (6, 1)])
@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_loss_matches_formula_and_gradient(name: str, shape: tuple[int, ...], ops: str) -> None:
    ours, formula = FORMULAS[name]
    r, f = _logits(shape)
    got = ours(r, f, ops)
    assert got.shape == () and torch.isfinite(got)
    r2, f2 = r.detach().clone().requires_grad_(), f.detach().clone().requires_grad_()
    want = formula(r2, f2)
    torch.testing.assert_close(got, want)
    got.backward()
    want.backward()
    for a, b in ((r, r2), (f, f2)):
        ga = torch.zeros_like(a) if a.grad is None else a.grad
        gb = torch.zeros_like(b) if b.grad is None else b.grad
        assert torch.isfinite(ga).all()
        torch.testing.assert_close(ga, gb)


def test_jsd_fused_matches_reference_and_float32_extremes() -> None:
    r, f = _logits((6, 1))
    for fn in (L.jsd_critic_loss, L.jsd_estimate):
        torch.testing.assert_close(fn(r, f), fn(r, f, ops="reference"))
    r32 = torch.tensor([100.0, -100.0], requires_grad=True)
    loss = L.jsd_critic_loss(r32, -r32) + L.jsd_generator_loss_nonsaturating(r32)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(r32.grad).all()


def test_loss_semantics_and_dispatch() -> None:
    good = torch.full((4,), 50.0, dtype=DT)  # a confident, correct critic
    assert L.jsd_critic_loss(good, -good) < 1e-12
    assert abs(L.jsd_estimate(good, -good) - math.log(2)) < 1e-12  # JSD of disjoint supports
    assert abs(L.jsd_estimate(torch.zeros(4), torch.zeros(4))) < 1e-7  # σ=½ everywhere
    r, f = _logits()
    for kind in ("jsd-saturating", "jsd-nonsaturating", "w1", "hinge"):
        assert torch.isfinite(L.critic_loss(kind, r, f))
        assert torch.isfinite(L.generator_loss(kind, f))
    torch.testing.assert_close(L.critic_loss("hinge", r, f), L.hinge_critic_loss(r, f))
    torch.testing.assert_close(
        L.generator_loss("jsd-saturating", f), L.jsd_generator_loss_saturating(f)
    )
    torch.testing.assert_close(
        L.generator_loss("jsd-nonsaturating", f, ops="reference"),
        L.jsd_generator_loss_nonsaturating(f),
    )
    with pytest.raises(ValueError, match="unknown GAN loss"):
        L.critic_loss("lsgan", r, f)
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, 1\)"):
        L.w1_generator_loss(torch.zeros(3, 2))


# -- penalties --------------------------------------------------------------------------
class Quadratic(nn.Module):
    """C(x) = ½‖M x‖² + bᵀx + c, so ∇ₓC = MᵀM x + b."""

    def __init__(self, d: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.m = nn.Parameter(torch.randn(d, d, generator=g, dtype=DT) * 0.5)
        self.b = nn.Parameter(torch.randn(d, generator=g, dtype=DT))
        self.c = nn.Parameter(torch.tensor(0.3, dtype=DT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x @ self.m.T).pow(2).sum(1) + x @ self.b + self.c

    def grad_closed(self, x: torch.Tensor) -> torch.Tensor:
        return x @ (self.m.T @ self.m) + self.b


def _linear_critic(d: int) -> nn.Module:
    critic = nn.Sequential(nn.Flatten(), nn.Linear(d, 1)).double()
    with torch.no_grad():
        critic[1].weight.copy_(torch.linspace(-0.4, 0.3, d, dtype=DT))
        critic[1].bias.fill_(2.0)
    return critic


@pytest.mark.parametrize("weight", [1.0, 0.1])
def test_penalties_linear_critic(weight: float) -> None:
    critic = _linear_critic(12)
    w = critic[1].weight.detach().flatten()
    x = torch.randn(5, 3, 2, 2, dtype=DT)  # image-shaped: the norm is per sample
    y = torch.randn(5, 3, 2, 2, dtype=DT)
    torch.testing.assert_close(L.r1_penalty(critic, x, weight), weight * w.pow(2).sum())
    want = weight * (w.norm() - 1) ** 2
    torch.testing.assert_close(L.gradient_penalty(critic, x, y, weight), want)


def test_penalties_quadratic_critic_value_and_parameter_gradient() -> None:
    critic = Quadratic(3)
    g = torch.Generator().manual_seed(2)
    real = torch.randn(4, 3, generator=g, dtype=DT)
    fake = torch.randn(4, 3, generator=g, dtype=DT) + 2
    eps = torch.tensor([0.1, 0.5, 0.9, 0.25], dtype=DT)
    mixed = eps[:, None] * real + (1 - eps[:, None]) * fake
    cases = [
        (L.r1_penalty(critic, real, 0.7), 0.7 * critic.grad_closed(real).pow(2).sum(1).mean()),
        (
            L.gradient_penalty(critic, real, fake, 0.3, eps=eps),
            0.3 * (critic.grad_closed(mixed).norm(dim=1) - 1).pow(2).mean(),
        ),
    ]
    for got, want in cases:
        torch.testing.assert_close(got, want)
        params = list(critic.parameters())
        ga = torch.autograd.grad(got, params, allow_unused=True)
        gb = torch.autograd.grad(want, params, allow_unused=True)
        assert ga[0] is not None and ga[1] is not None  # create_graph: trains the critic
        for a, b in zip(ga, gb, strict=True):
            if b is None:
                assert a is None or torch.all(a == 0)
            else:
                torch.testing.assert_close(a, b)


def test_gradient_penalty_rng_and_detached_inputs() -> None:
    critic = Quadratic(3)
    gen = nn.Linear(3, 3).double()
    real = torch.randn(8, 3, dtype=DT)
    fake = gen(torch.randn(8, 3, dtype=DT))

    def gp(seed: int) -> torch.Tensor:
        return L.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(seed))

    a, b, c = gp(0), gp(0), gp(1)
    assert a == b and a != c
    eps = torch.rand(8, generator=torch.Generator().manual_seed(0), dtype=DT)
    torch.testing.assert_close(a, L.gradient_penalty(critic, real, fake, eps=eps))
    (a + L.r1_penalty(critic, fake)).backward()
    assert gen.weight.grad is None  # the penalties train only the critic
    with pytest.raises(ValueError, match="eps must have shape"):
        L.gradient_penalty(critic, real, fake, eps=torch.rand(3))


def test_penalties_per_sample_weight_tensor() -> None:
    """``weight`` may be a Tensor (N,): ``E[w_i · penalty_i]`` (independent runs in a batch)."""
    critic = Quadratic(3)
    g = torch.Generator().manual_seed(3)
    real = torch.randn(4, 3, generator=g, dtype=DT)
    fake = torch.randn(4, 3, generator=g, dtype=DT) + 1
    eps = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=DT)
    w = torch.tensor([0.0, 0.5, 2.0, 1.0], dtype=DT)
    mixed = eps[:, None] * real + (1 - eps[:, None]) * fake
    r1_i = critic.grad_closed(real).pow(2).sum(1)
    gp_i = (critic.grad_closed(mixed).norm(dim=1) - 1).pow(2)
    cases = [
        (L.r1_penalty(critic, real, w), (w * r1_i).mean()),
        (L.gradient_penalty(critic, real, fake, w, eps=eps), (w * gp_i).mean()),
    ]
    for got, want in cases:
        torch.testing.assert_close(got, want)
        params = list(critic.parameters())
        ga = torch.autograd.grad(got, params, allow_unused=True)
        gb = torch.autograd.grad(want, params, allow_unused=True)
        for a, b in zip(ga, gb, strict=True):
            if b is not None:
                torch.testing.assert_close(a, b)
    # A constant weight vector, a 0-d tensor and a float agree.
    same = torch.full((4,), 0.7, dtype=DT)
    for weight in (same, torch.tensor(0.7, dtype=DT)):
        torch.testing.assert_close(
            L.r1_penalty(critic, real, weight), L.r1_penalty(critic, real, 0.7)
        )
        torch.testing.assert_close(
            L.gradient_penalty(critic, real, fake, weight, eps=eps),
            L.gradient_penalty(critic, real, fake, 0.7, eps=eps),
        )
    with pytest.raises(ValueError, match=r"weight must be a number or have shape \(4,\)"):
        L.r1_penalty(critic, real, torch.ones(3, dtype=DT))
    with pytest.raises(ValueError, match="weight must be"):
        L.gradient_penalty(critic, real, fake, torch.ones(4, 1, dtype=DT), eps=eps)


# -- EMA --------------------------------------------------------------------------------
def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2)).double()


def test_ema_parameters_follow_closed_form_buffers_copied() -> None:
    net, d, k = _bn_net(), 0.9, 4
    ema = gan.GeneratorEMA(net, decay=d)
    history = [{n: p.detach().clone() for n, p in net.named_parameters()}]
    for t in range(k):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        net(torch.randn(16, 3, dtype=DT) * (t + 1) + t)  # moves the BN statistics
        ema.update()
        history.append({n: p.detach().clone() for n, p in net.named_parameters()})
    for name in history[0]:
        want = d**k * history[0][name]
        for t in range(1, k + 1):
            want = want + (1 - d) * d ** (k - t) * history[t][name]
        torch.testing.assert_close(ema.shadow[name], want)
    bn = net[1]
    for buf in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(ema.shadow[f"1.{buf}"], getattr(bn, buf)), buf
    assert int(ema.shadow["1.num_batches_tracked"]) == k
    assert ema.num_updates == k


def test_ema_state_round_trip_and_averaged_module() -> None:
    net = _bn_net()
    ema = gan.GeneratorEMA(net, decay=0.5)
    for _ in range(2):
        with torch.no_grad():
            net[0].weight.add_(1.0)
        net(torch.randn(8, 3, dtype=DT))
        ema.update()
    buf = io.BytesIO()
    torch.save(ema.state_dict(), buf)
    buf.seek(0)
    other = gan.GeneratorEMA(_bn_net(), decay=0.9)
    other.load_state_dict(torch.load(buf, weights_only=True))
    assert other.decay == 0.5 and other.num_updates == 2
    for k, v in ema.shadow.items():
        assert torch.equal(other.shadow[k], v), k

    live_before = {k: v.clone() for k, v in net.state_dict().items()}
    avg = ema.averaged_module()
    assert not avg.training and not any(p.requires_grad for p in avg.parameters())
    for k, v in avg.state_dict().items():
        assert torch.equal(v, ema.shadow[k]), k
    assert not torch.equal(avg[0].weight, net[0].weight)
    for k, v in net.state_dict().items():
        assert torch.equal(v, live_before[k]), k  # the live generator is untouched
    z = torch.randn(5, 3, dtype=DT)
    with ema.applied() as m:
        torch.testing.assert_close(m.eval()(z), avg(z))


# -- models -----------------------------------------------------------------------------
def _doc_count(cls: type) -> int:
    match = re.search(r"([\d,]+) parameters", cls.__doc__ or "")
    assert match, cls
    return int(match.group(1).replace(",", ""))


def _count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_mlp_gan_shapes_range_and_counts() -> None:
    torch.manual_seed(0)
    g, d = gan.MLPGenerator(), gan.MLPDiscriminator()
    assert _count(g) == _doc_count(gan.MLPGenerator) and _count(d) == _doc_count(type(d))
    assert sum(isinstance(m, nn.BatchNorm1d) for m in g.modules()) == 3
    assert isinstance(g.net[-1], nn.Tanh)
    x = g(torch.randn(4, 100) * 50)
    assert x.shape == (4, 1, 28, 28) and x.min() >= -1 and x.max() <= 1
    out = d(x)
    assert out.shape == (4,)
    L.jsd_generator_loss_nonsaturating(out).backward()
    assert all(p.grad is not None for p in g.parameters())


@pytest.mark.parametrize("sn", [False, True])
def test_dcgan_shapes_counts_and_spectral_norm(sn: bool) -> None:
    torch.manual_seed(0)
    g, c = gan.DCGANGenerator(), gan.DCGANCritic(spectral_norm=sn)
    assert _count(g) == _doc_count(gan.DCGANGenerator)
    assert _count(c) == _doc_count(gan.DCGANCritic)
    layers = [m for m in c.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(layers) == 8
    assert all(parametrize.is_parametrized(m, "weight") == sn for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in g.modules())
    small_g, small_c = gan.DCGANGenerator(width=8), gan.DCGANCritic(width=8, spectral_norm=sn)
    x = small_g(torch.randn(3, 100) * 50)
    assert x.shape == (3, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    out = small_c(x)
    assert out.shape == (3,)
    L.hinge_generator_loss(out).backward()
    assert all(p.grad is not None for p in small_g.parameters())
    with pytest.raises(ValueError, match="even"):
        gan.DCGANGenerator(width=7)
