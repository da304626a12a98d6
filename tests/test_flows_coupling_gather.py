"""The MLP couplings of RealNVP compute only what they use (issue 25): the kept half goes in,
the transformed half's s and t come out. The same function as the full-layout MLP coupling
(MLPCouplingNet over the masked input) on the same weights; full-layout files load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dgm_ext.flows.coupling import AffineCoupling, MaskedMLPCouplingNet, MLPCouplingNet
from dgm_ext.flows.realnvp import MLPRealNVP


def _full_twin(layer: AffineCoupling) -> AffineCoupling:
    """The full-layout coupling with the compact net's weights spread out: zero columns for
    the masked (zero) inputs, arbitrary rows for the s, t the coupling discards."""
    net: MaskedMLPCouplingNet = layer.net
    d, hidden = net.dim, net.net[0].out_features
    full = MLPCouplingNet(d, hidden).to(net.net[0].weight.dtype)
    with torch.no_grad():
        full.net[0].weight.zero_()
        full.net[0].weight[:, net.kept] = net.net[0].weight
        full.net[0].bias.copy_(net.net[0].bias)
        full.net[2].load_state_dict(net.net[2].state_dict())
        full.net[4].weight.normal_()  # the rows of kept entries: never used
        full.net[4].bias.normal_()
        rows = torch.cat([net.moved, d + net.moved])
        full.net[4].weight[rows] = net.net[4].weight
        full.net[4].bias[rows] = net.net[4].bias
    return AffineCoupling(layer.mask.clone(), full).to(net.net[0].weight.dtype)


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = MLPRealNVP((1, 6, 6), couplings=3, hidden=16).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    return m


def test_same_function_as_the_full_layout(model):
    x = torch.randn(5, 36, dtype=torch.float64, requires_grad=True)
    for layer in model.layers:
        twin = _full_twin(layer).double()
        assert layer.net.kept.numel() == 18 and layer.net.moved.numel() == 18
        y, ld = layer(x)
        y2, ld2 = twin(x)
        torch.testing.assert_close(y, y2, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ld, ld2, rtol=1e-12, atol=1e-12)
        (g,) = torch.autograd.grad((y.sin().sum() + ld.sum()), x)
        (g2,) = torch.autograd.grad((y2.sin().sum() + ld2.sum()), x)
        torch.testing.assert_close(g, g2, rtol=1e-12, atol=1e-12)
        back, ld_inv = layer.inverse(y.detach())
        torch.testing.assert_close(back, x.detach(), rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(ld_inv, -ld.detach(), rtol=1e-10, atol=1e-10)


def test_full_layout_state_dicts_load(model):
    """A file of the full layout (as written before) loads into the compact nets."""
    full_state = {}
    twins = [_full_twin(layer) for layer in model.layers]
    for k, twin in enumerate(twins):
        for name, v in twin.net.state_dict().items():
            full_state[f"layers.{k}.net.{name}"] = v
    fresh = MLPRealNVP((1, 6, 6), couplings=3, hidden=16).double()
    missing = fresh.load_state_dict(full_state, strict=False)
    assert not missing.unexpected_keys
    x = torch.randn(4, 1, 6, 6, dtype=torch.float64)
    z, ld = fresh(x)
    z2, ld2 = model(x)
    torch.testing.assert_close(z, z2, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld, ld2, rtol=1e-12, atol=1e-12)


def test_parameters_are_the_used_ones():
    m = MLPRealNVP((1, 28, 28), couplings=8, hidden=1024)
    full = sum((784 + 1) * 1024 + (1024 + 1) * 1024 + (1024 + 1) * 1568 for _ in range(8))
    used = sum((392 + 1) * 1024 + (1024 + 1) * 1024 + (1024 + 1) * 784 for _ in range(8))
    assert sum(p.numel() for p in m.parameters()) == used
    assert used / full == pytest.approx(0.652, abs=1e-3)  # the matrix products too
    with pytest.raises(ValueError, match="0/1 vector"):
        MaskedMLPCouplingNet(torch.full((4,), 0.5))
    with pytest.raises(ValueError, match="keep some entries"):
        MaskedMLPCouplingNet(torch.ones(4))
    assert isinstance(m.layers[0].net.net[-1], nn.Linear)


@pytest.mark.parametrize("shape, classes", [((1, 6, 6), 0), ((3, 3, 5), 4)])
def test_the_model_runs_its_couplings_on_two_blocks_as_the_composition(shape, classes) -> None:
    """MLPRealNVP runs its couplings on the two halves of one permutation (no per-coupling
    gather/scatter of full rows): the function of its ComposedTransform ``layers`` on the
    flat rows, both directions, with a context too; odd sizes split unevenly. A coupling net
    swapped for another kind falls back to ``layers``."""
    torch.manual_seed(0)
    d = int(torch.tensor(shape).prod())
    m = MLPRealNVP(shape, couplings=5, hidden=16, context_dim=classes).double()
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(4, *shape, dtype=torch.float64)
    c = torch.randn(4, classes, dtype=torch.float64) if classes else None
    z, ld = m(x, c)
    z_want, ld_want = m.layers(x.flatten(1), c)
    torch.testing.assert_close(z.flatten(1), z_want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld, ld_want, rtol=1e-12, atol=1e-12)
    x_back, ld_back = m.inverse(z, c)
    x_want, ld_back_want = m.layers.inverse(z_want, c)
    torch.testing.assert_close(x_back.flatten(1), x_want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ld_back, ld_back_want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    kept = int(m.layers[0].mask.sum())
    assert m.split == (kept, d - kept)  # 24 + 21 for 3x3x5: uneven halves
    if not classes:
        m.layers.add_module("2", _full_twin(m.layers[2]))
        z_swapped, _ = m(x)
        torch.testing.assert_close(z_swapped, z, rtol=1e-10, atol=1e-10)
