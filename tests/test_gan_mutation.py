"""dgm_ext.gan behaviours that mutation testing (tools/mutation.sh, docs/MUTATION.md) found
untested, each value computed another way: the networks' forward passes written out layer by
layer from their documented architecture (slopes, strides, BatchNorm placement), the width
check's smallest width, the generators' attributes, what save_gan/load_gan write and say, and
the op backend a caller passes reaching every JSD term."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dgm_ext import gan

DT = torch.float64


def _layers(m: nn.Module, kind: type) -> list[nn.Module]:
    return [x for x in m.modules() if type(x) is kind]


def _bn(h: torch.Tensor, bn: nn.Module) -> torch.Tensor:
    """Eval-mode BatchNorm written out: (h - mean) / sqrt(var + eps) · w + b per channel."""
    shape = (1, -1) + (1,) * (h.dim() - 2)
    mean, var = bn.running_mean.view(shape), bn.running_var.view(shape)
    return (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(shape) + bn.bias.view(shape)


def _randomise_bn(m: nn.Module, g: torch.Generator) -> None:
    """Running statistics and affine parameters away from their 0/1 defaults, so that a
    BatchNorm in the wrong place or left out changes the output."""
    with torch.no_grad():
        for bn in m.modules():
            if isinstance(bn, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = bn.num_features
                bn.running_mean.copy_(torch.randn(n, generator=g, dtype=DT) * 0.3)
                bn.running_var.copy_(torch.rand(n, generator=g, dtype=DT) + 0.5)
                bn.weight.copy_(torch.rand(n, generator=g, dtype=DT) + 0.5)
                bn.bias.copy_(torch.randn(n, generator=g, dtype=DT) * 0.3)


def test_mlp_generator_forward_written_out() -> None:
    """SPEC §2: Linear(z, 128), LeakyReLU(0.2); for 256, 512, 1024: Linear, BatchNorm1d,
    LeakyReLU(0.2); Linear(1024, out), Tanh; reshaped to image_shape."""
    torch.manual_seed(0)
    g = gan.MLPGenerator(5, (1, 3, 4)).to(DT)
    assert g.z_dim == 5 and g.image_shape == (1, 3, 4)
    gen = torch.Generator().manual_seed(1)
    _randomise_bn(g, gen)
    g.eval()
    lin, bns = _layers(g, nn.Linear), _layers(g, nn.BatchNorm1d)
    assert [(m.in_features, m.out_features) for m in lin] == [
        (5, 128),
        (128, 256),
        (256, 512),
        (512, 1024),
        (1024, 12),
    ]
    z = torch.randn(4, 5, generator=gen, dtype=DT) * 2
    h = F.leaky_relu(F.linear(z, lin[0].weight, lin[0].bias), 0.2)
    for layer, bn in zip(lin[1:4], bns, strict=True):
        h = F.leaky_relu(_bn(F.linear(h, layer.weight, layer.bias), bn), 0.2)
    want = torch.tanh(F.linear(h, lin[4].weight, lin[4].bias)).view(4, 1, 3, 4)
    with torch.no_grad():
        torch.testing.assert_close(g(z), want)


def test_mlp_discriminator_forward_written_out() -> None:
    """SPEC §2: Flatten; Linear(in, 512), LeakyReLU(0.2), Dropout(p); Linear(512, 256),
    LeakyReLU(0.2), Dropout(p); Linear(256, 1); logits (N,). Dropout is off in eval mode."""
    torch.manual_seed(0)
    d = gan.MLPDiscriminator(12, dropout=0.25).to(DT)
    assert [m.p for m in _layers(d, nn.Dropout)] == [0.25, 0.25]
    assert [m.p for m in _layers(gan.MLPDiscriminator(12), nn.Dropout)] == [0.3, 0.3]
    lin = _layers(d, nn.Linear)
    assert [(m.in_features, m.out_features) for m in lin] == [(12, 512), (512, 256), (256, 1)]
    x = torch.randn(3, 1, 3, 4, dtype=DT) * 2
    h = F.leaky_relu(F.linear(x.flatten(1), lin[0].weight, lin[0].bias), 0.2)
    h = F.leaky_relu(F.linear(h, lin[1].weight, lin[1].bias), 0.2)
    want = F.linear(h, lin[2].weight, lin[2].bias).squeeze(-1)
    with torch.no_grad():
        torch.testing.assert_close(d.eval()(x), want)
        # in training mode dropout zeroes about p of the hidden units: outputs differ
        torch.manual_seed(1)
        assert not torch.allclose(d.train()(x), want)


def test_dcgan_generator_forward_written_out() -> None:
    """Miyato et al. Table 3: Linear(z, 4·4·4w), BN, ReLU, (4w, 4, 4); three
    ConvTranspose(4, s2, p1) + BN + ReLU (4w→2w→w→w/2); Conv(w/2→C, 3, s1, p1), Tanh."""
    torch.manual_seed(0)
    w, c, zd = 4, 2, 6
    g = gan.DCGANGenerator(zd, w, c).to(DT)
    assert g.z_dim == zd and g.width == w
    gen = torch.Generator().manual_seed(2)
    _randomise_bn(g, gen)
    g.eval()
    (fc,) = _layers(g, nn.Linear)
    (bn1,) = _layers(g, nn.BatchNorm1d)
    convt, bns, (last,) = (
        _layers(g, nn.ConvTranspose2d),
        _layers(g, nn.BatchNorm2d),
        _layers(g, nn.Conv2d),
    )
    assert (fc.in_features, fc.out_features) == (zd, 16 * 4 * w)
    assert [tuple(m.weight.shape) for m in convt] == [
        (4 * w, 2 * w, 4, 4),
        (2 * w, w, 4, 4),
        (w, w // 2, 4, 4),
    ]
    assert tuple(last.weight.shape) == (c, w // 2, 3, 3)
    z = torch.randn(3, zd, generator=gen, dtype=DT)
    h = F.relu(_bn(F.linear(z, fc.weight, fc.bias), bn1)).view(3, 4 * w, 4, 4)
    for m, bn in zip(convt, bns, strict=True):
        h = F.relu(_bn(F.conv_transpose2d(h, m.weight, m.bias, stride=2, padding=1), bn))
    want = torch.tanh(F.conv2d(h, last.weight, last.bias, stride=1, padding=1))
    assert want.shape == (3, c, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(g(z), want)


def test_dcgan_critic_forward_written_out() -> None:
    """Miyato et al. Table 3: convs (k, stride) = (3,1) (4,2) (3,1) (4,2) (3,1) (4,2) (3,1),
    padding 1, channels C→w/2→w/2→w→w→2w→2w→4w, each + LeakyReLU(0.1); Linear(4·4·4w, 1)."""
    torch.manual_seed(0)
    w, c = 4, 2
    crit = gan.DCGANCritic(w, c).to(DT)
    assert crit.width == w
    convs, (fc,) = _layers(crit, nn.Conv2d), _layers(crit, nn.Linear)
    chans = [c, w // 2, w // 2, w, w, 2 * w, 2 * w, 4 * w]
    kernels, strides = [3, 4, 3, 4, 3, 4, 3], [1, 2, 1, 2, 1, 2, 1]
    assert [tuple(m.weight.shape) for m in convs] == [
        (b, a, k, k) for a, b, k in zip(chans[:-1], chans[1:], kernels, strict=True)
    ]
    assert [m.stride for m in convs] == [(s, s) for s in strides]
    assert (fc.in_features, fc.out_features) == (16 * 4 * w, 1)
    x = torch.randn(3, c, 32, 32, dtype=DT)
    h = x
    for m, s in zip(convs, strides, strict=True):
        h = F.leaky_relu(F.conv2d(h, m.weight, m.bias, stride=s, padding=1), 0.1)
    want = F.linear(h.flatten(1), fc.weight, fc.bias).squeeze(-1)
    with torch.no_grad():
        torch.testing.assert_close(crit(x), want)


def test_dcgan_default_channels_are_rgb() -> None:
    assert gan.DCGANGenerator(width=4).net[-2].out_channels == 3
    assert _layers(gan.DCGANCritic(width=4), nn.Conv2d)[0].in_channels == 3


@pytest.mark.parametrize("width", [-2, 0, 1, 3])
def test_dcgan_width_check(width: int) -> None:
    msg = f"width must be an even integer >= 2, got {width}"
    with pytest.raises(ValueError, match=f"^{msg}$"):
        gan.DCGANGenerator(width=width)
    with pytest.raises(ValueError, match=f"^{msg}$"):
        gan.DCGANCritic(width=width)


def test_dcgan_smallest_width_two_builds_and_runs() -> None:
    torch.manual_seed(0)
    g, c = gan.DCGANGenerator(4, 2, 1), gan.DCGANCritic(2, 1)
    x = g(torch.randn(2, 4))
    assert x.shape == (2, 1, 32, 32) and c(x).shape == (2,)


# -- files ------------------------------------------------------------------------------
def test_save_gan_records_whether_the_generator_is_the_ema(tmp_path) -> None:
    torch.manual_seed(0)
    model = gan.GAN(gan.GANConfig(z_dim=3, image_shape=(1, 2, 2)))
    ema = gan.GeneratorEMA(model.generator, 0.5)
    with torch.no_grad():
        for p in model.generator.parameters():
            p.add_(1.0)  # live weights now differ from the EMA's shadow
    plain, averaged = tmp_path / "plain.pt", tmp_path / "ema.pt"
    gan.save_gan(model, plain)
    gan.save_gan(model, averaged, ema=ema)
    a = torch.load(plain, weights_only=True)
    b = torch.load(averaged, weights_only=True)
    assert a["generator_is_ema"] is False and b["generator_is_ema"] is True
    for k, v in model.generator.state_dict().items():
        torch.testing.assert_close(a["generator"][k], v)
        torch.testing.assert_close(b["generator"][k], ema.shadow[k])
    for k, v in model.critic.state_dict().items():
        torch.testing.assert_close(b["critic"][k], v)


def test_load_gan_names_the_gan_format_for_a_file_that_is_not_one(tmp_path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("not a model")
    with pytest.raises(ValueError) as err:
        gan.load_gan(path)
    assert str(err.value) == f"{path} is not a dgm_ext GAN file (not a PyTorch file)"


# -- op backend -------------------------------------------------------------------------
def _counting_ops() -> tuple[types.ModuleType, list[tuple[int, ...]]]:
    """An op backend whose ``bernoulli_log_prob`` (written out with logsigmoid) records the
    shape of every call, to see which backend each loss term runs on."""
    calls: list[tuple[int, ...]] = []
    mod = types.ModuleType("counting_ops")

    def bernoulli_log_prob(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        calls.append(tuple(logits.shape))
        return (x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).sum(-1)

    mod.bernoulli_log_prob = bernoulli_log_prob  # type: ignore[attr-defined]
    return mod, calls


def test_jsd_terms_all_run_on_the_given_ops_backend() -> None:
    from dgm_ext.gan import losses as L

    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(5, generator=g, dtype=DT), torch.randn(5, generator=g, dtype=DT)
    bce = F.binary_cross_entropy_with_logits
    want_critic = bce(real, torch.ones_like(real)) + bce(fake, torch.zeros_like(fake))
    for kind in ("jsd-saturating", "jsd-nonsaturating"):
        ops, calls = _counting_ops()
        torch.testing.assert_close(L.critic_loss(kind, real, fake, ops=ops), want_critic)
        assert calls == [(5, 1), (5, 1)]  # the real and the fake term
    ops, calls = _counting_ops()
    torch.testing.assert_close(L.jsd_critic_loss(real, fake, ops=ops), want_critic)
    torch.testing.assert_close(
        L.generator_loss("jsd-saturating", fake, ops=ops), -bce(fake, torch.zeros_like(fake))
    )
    torch.testing.assert_close(
        L.generator_loss("jsd-nonsaturating", fake, ops=ops), bce(fake, torch.ones_like(fake))
    )
    torch.testing.assert_close(
        L.jsd_estimate(real, fake, ops=ops),
        0.5 * -want_critic + torch.log(torch.tensor(2.0, dtype=DT)),
    )
    assert len(calls) == 2 + 1 + 1 + 2


class _Ctx:
    """The part of the trainer's step context that ``GAN.train_step`` uses."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], global_step: int = 0) -> None:
        self.optimizers, self.global_step = optimizers, global_step
        self.names: list[str] = []

    def step(self, opt: torch.optim.Optimizer, loss: torch.Tensor, name: str = "loss") -> None:
        opt.zero_grad()
        loss.backward()
        opt.step()
        self.names.append(name)


def test_gan_train_step_runs_every_jsd_term_on_its_ops_backend() -> None:
    torch.manual_seed(0)
    ops, calls = _counting_ops()
    cfg = gan.GANConfig(z_dim=3, image_shape=(1, 2, 2), loss="jsd-saturating", dropout=0.0)
    model = gan.GAN(cfg, ops=ops)
    assert model.ops is ops
    opts = [torch.optim.SGD(model.critic.parameters(), lr=0.1)]
    opts.append(torch.optim.SGD(model.generator.parameters(), lr=0.1))
    ctx = _Ctx(opts)
    out = model.train_step(torch.rand(6, 1, 2, 2), ctx)
    # critic loss (real, fake), the logged JSD estimate (real, fake), the generator loss
    assert calls == [(6, 1)] * 5
    assert ctx.names == ["critic loss", "generator loss"]
    assert set(out) == {"critic_loss", "jsd", "generator_loss"}


# -- construction and sampling ----------------------------------------------------------
def test_gan_optimisers_follow_the_trainer_config() -> None:
    """Adam for the critic and the generator with the GAN's rates and betas, the trainer's
    ``eps``, and torch's fused kernel unless ``fused_optimizer`` is off."""
    from types import SimpleNamespace

    cfg = gan.GANConfig(z_dim=3, image_shape=(1, 2, 2), lr_critic=3e-4, lr_generator=1e-4)
    cfg.betas = (0.1, 0.2)
    model = gan.GAN(cfg)
    for fused in (False, True):
        crit, gen = model.configure_optimizers(SimpleNamespace(eps=1e-5, fused_optimizer=fused))
        for opt, params, lr in ((crit, model.critic, 3e-4), (gen, model.generator, 1e-4)):
            assert type(opt) is torch.optim.Adam
            assert opt.param_groups[0]["params"] == list(params.parameters())
            d = opt.defaults
            assert (d["lr"], d["betas"], d["eps"], bool(d["fused"])) == (
                lr,
                (0.1, 0.2),
                1e-5,
                fused,
            )
    # a config without the settings: eps 1e-8 and fused, as TrainerConfig's defaults
    crit, _ = model.configure_optimizers(object())
    assert crit.defaults["eps"] == 1e-8 and crit.defaults["fused"] is True


def test_dcgan_gan_with_one_channel_images() -> None:
    torch.manual_seed(0)
    model = gan.GAN(gan.GANConfig(arch="dcgan", z_dim=4, image_shape=(1, 32, 32), width=2))
    x = model.sample(3)
    assert x.shape == (3, 1, 32, 32)
    assert model.critic(model.to_model_space(x)).shape == (3,)


def test_sample_z_follows_the_reference_tensor() -> None:
    model = gan.GAN(gan.GANConfig(z_dim=3, image_shape=(1, 2, 2)))
    z = model.sample_z(4, like=torch.empty(0, dtype=DT, device="meta"))
    assert (z.shape, z.dtype, z.device.type) == ((4, 3), DT, "meta")
    z = model.sample_z(2)  # no reference: the generator's parameters
    assert (z.shape, z.dtype, z.device.type) == ((2, 3), torch.float32, "cpu")


# -- Dirac-GAN lab ----------------------------------------------------------------------
def test_dirac_simulate_zero_iterations_is_the_initial_point() -> None:
    from dgm_ext.gan import dirac as D

    runs = D.simulate([D.DiracConfig("w1", ema=True)], [5], 0)
    assert runs.theta.shape == (1, 1, 1) and runs.iterations == 0
    g = torch.Generator().manual_seed(5)
    theta, psi0, psi1 = (0.7 * torch.randn(3, generator=g, dtype=DT)).tolist()
    assert (runs.theta.item(), runs.psi0.item(), runs.psi1.item()) == (theta, psi0, psi1)
    assert runs.theta_ema.item() == theta  # the EMA starts at the generator's θ
    with pytest.raises(ValueError, match=r"^iterations must be >= 0, got -1$"):
        D.simulate([D.DiracConfig("w1")], [5], -1)
    for configs, seeds in (([], [0]), ([D.DiracConfig("w1")], [])):
        with pytest.raises(ValueError, match=r"^need at least one configuration and one seed$"):
            D.simulate(configs, seeds, 1)


def test_dirac_convergence_window_of_one_reads_the_last_iterate() -> None:
    from dgm_ext.gan import dirac as D

    theta = torch.tensor([[1.0, 0.0], [0.5, -0.2], [0.01, -0.03]], dtype=DT)
    psi0 = torch.tensor([[2.0, 0.0], [0.0, 0.3], [-0.02, 0.06]], dtype=DT)
    th, ps, ok = D.convergence(theta, psi0, window=1)
    assert th.tolist() == [0.01, 0.03] and ps.tolist() == [0.02, 0.06]
    assert ok.tolist() == [True, False]  # the second run's |ψ₀| = 0.06 > 0.05
    with pytest.raises(ValueError, match=r"^window must be >= 1, got 0$"):
        D.convergence(theta, psi0, window=0)


def test_dirac_vector_field_leaves_the_global_random_stream_alone() -> None:
    """GP's ε is fixed (``eps``), so drawing a field consumes no random numbers: figures drawn
    between seeded simulations do not change them."""
    from dgm_ext.gan import dirac as D

    grid = torch.linspace(-1, 1, 5, dtype=DT)
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    D.vector_field(D.DiracConfig("w1", "gp", 0.1), grid, grid.flip(0))
    torch.testing.assert_close(torch.rand(3), want)


def test_dirac_simulate_runs_on_the_given_ops_and_its_own_random_stream() -> None:
    """Every JSD term of the simulation runs on the caller's op backend, and GP's ε comes
    from the simulation's own generator (``gp_seed``), not from the global stream."""
    from dgm_ext.gan import dirac as D

    ops, calls = _counting_ops()
    cfgs = [D.DiracConfig("jsd", "gp", 0.1), D.DiracConfig("jsd", nonsaturating=True)]
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    runs = D.simulate(cfgs, [1], 2, ops=ops)
    torch.testing.assert_close(torch.rand(3), want)
    # per iteration: the critic's JSD estimate (real, fake), the saturating and the
    # non-saturating generator terms
    assert calls == [(2, 1), (2, 1), (1, 1), (1, 1)] * 2
    torch.testing.assert_close(runs.theta, D.simulate(cfgs, [1], 2, ops="reference").theta)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(loss="js"), "loss must be one of ('jsd', 'w1'), got 'js'"),
        (dict(loss="w1", penalty="l2"), "penalty must be one of ('none', 'r1', 'gp'), got 'l2'"),
        (dict(loss="w1", weight=0.1), "penalty 'none' takes weight 0, got 0.1"),
        (dict(loss="w1", penalty="r1"), "penalty 'r1' needs a weight > 0, got 0.0"),
        (dict(loss="w1", nonsaturating=True), "nonsaturating applies to the JSD loss only"),
    ],
)
def test_dirac_config_messages(kwargs: dict, message: str) -> None:
    from dgm_ext.gan import dirac as D

    with pytest.raises(ValueError) as err:
        D.DiracConfig(**kwargs)
    assert str(err.value) == message


def test_gradient_penalty_names_both_shapes() -> None:
    from dgm_ext.gan import losses as L

    with pytest.raises(ValueError) as err:
        L.gradient_penalty(lambda x: x.sum(1), torch.zeros(3, 2), torch.zeros(3, 4))
    assert str(err.value) == "real (3, 2) and fake (3, 4) differ"
