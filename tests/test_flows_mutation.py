"""dgm_ext.flows behaviours that mutation testing (tools/mutation.sh, docs/MUTATION.md) found
untested, each value computed another way."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgm_ext.flows import PlanarFlow


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        (
            dict(dim=2, length=3, ops="reference"),
            "dim=2, length=3, generative=False, ops=dgm_ext.ops.reference",
        ),
        (
            dict(dim=4, length=1, generative=True),
            "dim=4, length=1, generative=True, ops=dgm_ext.ops",
        ),
    ],
)
def test_planar_flow_repr_names_its_settings(kwargs: dict, text: str) -> None:
    flow = PlanarFlow(**kwargs)
    assert repr(flow) == f"PlanarFlow({text})"
    assert flow.extra_repr() == text


def test_evaluate_nll_defaults_to_100k_samples() -> None:
    from dgm_ext.flows import fit

    flow = PlanarFlow(2, 1, ops="reference")
    res = fit.evaluate_nll(flow, "u2")
    assert res["n"] == 100_000 and res["values"].shape == (100_000,)
    assert res["values"].dtype == torch.float64


@pytest.mark.parametrize("evaluate", ["evaluate_nll", "evaluate_kl"])
def test_evaluations_name_the_target_argument_of_an_unknown_density(evaluate: str) -> None:
    from dgm_ext.flows import fit
    from dgm_ext.flows.densities import TARGETS

    with pytest.raises(ValueError) as err:
        getattr(fit, evaluate)(PlanarFlow(2, 1), "u9", n=10)
    names = ", ".join(TARGETS)
    assert str(err.value) == f"target: unknown density 'u9'; choose one of {names}"


@pytest.mark.parametrize("evaluate", ["evaluate_nll", "evaluate_kl"])
@pytest.mark.parametrize("n", [1, 0, 2.0, True])
def test_evaluations_refuse_fewer_than_two_samples(evaluate: str, n: object) -> None:
    from dgm_ext.flows import fit

    with pytest.raises(ValueError) as err:
        getattr(fit, evaluate)(PlanarFlow(2, 1), "u2", n=n)
    assert str(err.value) == f"n must be an int >= 2, got {n!r}"


def _energies_by_hand(z: np.ndarray) -> dict[str, np.ndarray]:
    """Rezende & Mohamed (2015), Table 1, in numpy; the wall ½((|z1| − 4)₊ / 0.1)² of the
    restricted densities U2–U4 added as the library documents it."""
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    r = np.hypot(z1, z2)
    u1 = 0.5 * ((r - 2) / 0.4) ** 2 - np.log(
        np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2)
    )
    u2 = 0.5 * ((z2 - w1) / 0.4) ** 2
    u3 = -np.log(
        np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2)
    )
    u4 = -np.log(
        np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2)
    )
    wall = 0.5 * (np.maximum(np.abs(z1) - 4, 0) / 0.1) ** 2
    return {"u1": u1, "u2": u2 + wall, "u3": u3 + wall, "u4": u4 + wall}


def test_target_energies_match_the_paper() -> None:
    from dgm_ext.flows.densities import TARGETS

    rng = np.random.default_rng(0)
    z = rng.uniform(-4.3, 4.3, size=(400, 2))
    z[:, 1] = rng.uniform(-2.5, 2.5, size=400)  # where the terms are not all underflowed
    want = _energies_by_hand(z)
    for name, e in want.items():
        got = TARGETS[name].energy(torch.from_numpy(z)).numpy()
        np.testing.assert_allclose(got, e, rtol=1e-10, atol=1e-10, err_msg=name)


@pytest.mark.parametrize(("shape", "scales"), [((1, 6, 8), 3), ((1, 8, 6), 3), ((2, 3, 4), 2)])
def test_multiscale_realnvp_needs_sides_divisible_by_its_squeezes(shape, scales) -> None:
    from dgm_ext.flows.realnvp import MultiScaleRealNVP

    with pytest.raises(ValueError) as err:
        MultiScaleRealNVP(shape, scales=scales, channels=2, blocks=0)
    k = 2 ** (scales - 1)
    want = f"event_shape {shape}: H and W must be divisible by 2^(scales-1) = {k}"
    assert str(err.value) == want


def test_multiscale_realnvp_channel_masks_alternate() -> None:
    """Each scale's three channel-wise couplings keep the first, the second, then again the
    first half of the squeezed channels (Dinh et al.'s alternating pattern)."""
    from dgm_ext.flows.realnvp import MultiScaleRealNVP

    flow = MultiScaleRealNVP((1, 4, 4), scales=2, channels=2, blocks=0)
    first = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(4, 1, 1)
    masks = [layer.mask for layer in flow.channel[0]]
    torch.testing.assert_close(masks, [first, 1 - first, first])


@pytest.mark.parametrize(("channels", "blocks"), [(0, 2), (4, -1)])
def test_conv_coupling_net_sizes_checked(channels: int, blocks: int) -> None:
    from dgm_ext.flows.coupling import ConvCouplingNet

    with pytest.raises(ValueError) as err:
        ConvCouplingNet(2, channels, blocks)
    want = f"channels must be >= 1 and blocks >= 0, got {channels}, {blocks}"
    assert str(err.value) == want


def test_conv_coupling_net_without_residual_blocks() -> None:
    """blocks=0: input conv, ReLU, zero-initialised output conv, so (s, t) start at zero."""
    from dgm_ext.flows.coupling import ConvCouplingNet

    net = ConvCouplingNet(2, 1, 0)
    assert len(net.blocks) == 0
    s, t = net(torch.randn(3, 2, 4, 4), torch.ones(1, 4, 4))
    assert s.shape == t.shape == (3, 2, 4, 4) and not s.any() and not t.any()


def test_u1_sampler_returns_exactly_n_samples_for_every_n() -> None:
    """The rejection loop stops once it has n accepted draws, for every n (including the n
    where the first batch of 1024 proposals accepts exactly n − 1)."""
    from dgm_ext.flows.densities import TARGETS

    for n in range(1, 700):
        x = TARGETS["u1"].sample(n, torch.Generator().manual_seed(0))
        assert x.shape == (n, 2), n


def test_u1_samples_are_float64_draws() -> None:
    """Both coordinates come from float64 normals: float32 draws promoted to float64 would all
    be float32 numbers."""
    from dgm_ext.flows.densities import TARGETS

    x = TARGETS["u1"].sample(200, torch.Generator().manual_seed(1))
    assert x.dtype == torch.float64
    for col in (x[:, 0], x[:, 1]):
        assert (col.float().double() != col).float().mean() > 0.9


def test_u1_rejection_bound_is_the_maximum_of_its_envelope() -> None:
    """log M = max over t >= 2 of h(t) = −(t − 2)²/0.32 + t²/(2s²) (the bound of the arcs
    sampler, see _u1_log_bound's derivation), found here on a fine grid."""
    from dgm_ext.flows.densities import _u1_log_bound

    for s in (2.0, 1.0, 0.5):
        t = np.linspace(2.0, 8.0, 600_001)
        h = -((t - 2.0) ** 2) / 0.32 + t * t / (2 * s * s)
        assert _u1_log_bound(s) == pytest.approx(h.max(), abs=1e-9)
        assert _u1_log_bound(s) >= 2.0 / s**2


def test_planar_inverse_names_the_shapes_it_got() -> None:
    from dgm_ext.flows.planar import planar_inverse

    y, u = torch.zeros(3, 2), torch.zeros(2, 2)
    with pytest.raises(ValueError) as err:
        planar_inverse(y, u, torch.zeros(2, 3), torch.zeros(2))
    assert str(err.value) == ("u_hat, w must be (K, d) and b (K,), got (2, 2), (2, 3), (2,)")


@pytest.mark.parametrize("mode", ["ml", "kl"])
def test_fit_planar_draws_its_batches_from_its_own_seeded_stream(mode: str) -> None:
    """A fit is fixed by its config's seed whatever the global random state, and its batches
    come from its own generator: after the fit the global stream is where the seeded
    initialisation (``config.build()``) left it."""
    from dgm_ext.flows.fit import PlanarFitConfig, fit_planar

    cfg = PlanarFitConfig(mode, "u2", k=2, steps=6, batch_size=8, seed=3, log_every=2)
    cfg.build()
    after_init = torch.rand(3)
    torch.manual_seed(0)
    a = fit_planar(cfg)
    torch.testing.assert_close(torch.rand(3), after_init, rtol=0, atol=0)
    torch.manual_seed(123)
    b = fit_planar(cfg)
    assert a.curve_loss == b.curve_loss
    for (k, v), w in zip(a.flow.state_dict().items(), b.flow.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)


def test_planar_fit_config_init_scale_zero_is_allowed() -> None:
    """init_scale 0 starts every layer at u = w = 0 (the identity); negative is refused."""
    from dgm_ext.flows.fit import PlanarFitConfig

    flow = PlanarFitConfig("ml", "u2", k=2, init_scale=0.0).build()
    assert not flow.u.any() and not flow.w.any()
    for bad in (-0.1, "0.1"):
        with pytest.raises(ValueError) as err:
            PlanarFitConfig("ml", "u2", k=2, init_scale=bad)
        assert str(err.value) == f"init_scale must be a number >= 0, got {bad!r}"


def test_image_flow_training_step_takes_a_tensor_or_an_images_labels_pair() -> None:
    from dgm_ext.flows.image import ImageFlow
    from dgm_ext.flows.realnvp import MultiScaleRealNVP

    torch.manual_seed(0)
    model = ImageFlow(MultiScaleRealNVP((1, 4, 4), scales=1, channels=2, blocks=0))
    x = torch.randint(0, 256, (3, 1, 4, 4))  # int64 pixel levels
    out = []
    for batch in (x, (x, torch.zeros(3)), [x]):
        torch.manual_seed(1)  # the same dequantisation noise each time
        out.append(model.training_step(batch))
    for o in out:
        assert set(o) == {"loss", "bpd"} and o["loss"].shape == ()
        torch.testing.assert_close(o["bpd"], out[0]["loss"].detach(), rtol=0, atol=0)


def test_mlp_realnvp_sizes() -> None:
    """Default hidden width 1024 (2 kept pixels → 1024 → 1024 → s, t for 2 pixels each);
    one coupling of width 1 is the smallest model; fewer is refused."""
    from torch import nn

    from dgm_ext.flows.realnvp import MLPRealNVP

    def widths(m: MLPRealNVP) -> list[tuple[int, int]]:
        return [
            (x.in_features, x.out_features) for x in m.layers[0].modules() if type(x) is nn.Linear
        ]

    assert widths(MLPRealNVP((1, 2, 2), couplings=2)) == [(2, 1024), (1024, 1024), (1024, 4)]
    small = MLPRealNVP((1, 2, 2), couplings=1, hidden=1)
    assert len(small.layers) == 1 and widths(small) == [(2, 1), (1, 1), (1, 4)]
    x = torch.randn(3, 1, 2, 2)
    torch.testing.assert_close(small.inverse(small(x)[0])[0], x)
    for couplings, hidden in ((0, 4), (2, 0)):
        with pytest.raises(ValueError) as err:
            MLPRealNVP((1, 2, 2), couplings=couplings, hidden=hidden)
        assert str(err.value) == f"couplings and hidden must be >= 1, got {couplings}, {hidden}"


def test_checkerboard_mask_of_one_row_and_sizes_checked() -> None:
    from dgm_ext.flows.coupling import checkerboard_mask

    torch.testing.assert_close(checkerboard_mask(1, 4), torch.tensor([[[1.0, 0.0, 1.0, 0.0]]]))
    torch.testing.assert_close(checkerboard_mask(1, 3, 1), torch.tensor([[[0.0, 1.0, 0.0]]]))
    for h, w in ((0, 3), (3, 0)):
        with pytest.raises(ValueError) as err:
            checkerboard_mask(h, w)
        assert str(err.value) == f"height and width must be >= 1, got {h}x{w}"


def test_affine_coupling_learned_scale_is_per_channel() -> None:
    """learn_scale: s = scale_c · tanh(s_raw) with one learnable scale per channel (Dinh et
    al.); y = m·x + (1 − m)·(x·eˢ + t) and log|det| = Σ (1 − m)·s, written out here."""
    from dgm_ext.flows.coupling import AffineCoupling, ConvCouplingNet, channel_mask

    torch.manual_seed(0)
    mask = channel_mask(4)
    net = ConvCouplingNet(4, 3, 1)
    with torch.no_grad():
        net.out.weight.normal_(0, 0.3)  # away from the zero start: s_raw, t not 0
    layer = AffineCoupling(mask, net, learn_scale=True, ops="reference")
    assert layer.scale.shape == (4, 1, 1)
    assert any(p is layer.scale for p in layer.parameters())
    assert torch.equal(layer.scale.detach(), torch.ones(4, 1, 1))
    with torch.no_grad():
        layer.scale.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0]).view(4, 1, 1))
        x = torch.randn(2, 4, 3, 3)
        s_raw, t = net(x * mask, mask)
        s = layer.scale * torch.tanh(s_raw)
        want_y = mask * x + (1 - mask) * (x * torch.exp(s) + t)
        want_ld = ((1 - mask) * s).sum((1, 2, 3))
        y, ld = layer(x)
    torch.testing.assert_close(y, want_y)
    torch.testing.assert_close(ld, want_ld)
    plain = AffineCoupling(mask, net, ops="reference")
    assert plain.scale is None
    assert AffineCoupling(torch.ones(1, 3, 3), net, learn_scale=True).scale.shape == (1, 1, 1)


def test_base_sample_on_the_flows_device_and_dtype() -> None:
    flow = PlanarFlow(2, 1).to(device="meta", dtype=torch.float64)
    z = flow.base_sample(3, 0.5)
    assert (z.shape, z.dtype, z.device.type) == ((3, 2), torch.float64, "meta")


def test_standard_normal_log_prob_of_a_batch_of_scalars() -> None:
    from dgm_ext.flows.base import standard_normal_log_prob

    z = torch.tensor([0.0, 1.0, -2.0], dtype=torch.float64)
    want = torch.tensor([-0.5 * np.log(2 * np.pi) - 0.5 * v * v for v in (0.0, 1.0, -2.0)])
    torch.testing.assert_close(standard_normal_log_prob(z), want.double())
    with pytest.raises(ValueError) as err:
        standard_normal_log_prob(torch.tensor(1.0))
    assert str(err.value) == "z must have a batch dimension, got a 0-d tensor"
