"""RealNVP training-step timings (realnvp-mnist models), fused vs reference coupling ops.

    pytest benchmarks/bench_realnvp.py --benchmark-json=benchmarks/realnvp.json
    python benchmarks/report.py benchmarks/realnvp.json

A step is what the Trainer does per batch for :func:`dgm_ext.flows.build_realnvp` models:
dequantise a batch of 8-bit MNIST-like pixels, bits/dim (logit transform, the couplings,
N(0, I) base), mean, backward and an Adam update (lr 1e-3). Models:

* ``mlp``: the reference model of realnvp-mnist (8 couplings, MLP 784-1024-1024-1568),
  batch 128;
* ``multiscale``: the bounded multi-scale run's model (2 scales, 32 channels, 2 residual
  blocks per coupling), batch 64.

Providers, same process, inputs and initial weights: ``fused`` (couplings on the fused
``affine_coupling`` op) and ``reference`` (``dgm_ext.ops.reference.affine_coupling``, plain
PyTorch with autograd). Before timing, one step of each from the same weights must give the
same loss and gradients. The coupling nets' matrix products and convolutions dominate a
step; the coupling op's share is what the two providers differ in.

Every benchmark runs on each device of ``cases.DEVICES``. DGM_EXT_BENCH_QUICK=1 (CI smoke):
small models (hidden 64, 8 channels) and batches (16, 8), 3 rounds.
"""

from __future__ import annotations

import pytest
import torch
from cases import DEVICES, QUICK, device_name
from torch import Tensor

import dgm_ext
from dgm_ext.flows.realnvp import build_realnvp

PROVIDERS = ["fused", "reference"]
MODELS = {
    "mlp": ({"arch": "mlp", "couplings": 8, "hidden": 64 if QUICK else 1024}, 16 if QUICK else 128),
    "multiscale": (
        {"arch": "multiscale", "scales": 2, "channels": 8 if QUICK else 32, "blocks": 2},
        8 if QUICK else 64,
    ),
}
ROUNDS = 3 if QUICK else 30


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def _batch(arch: str, device: str) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    n = MODELS[arch][1]
    x = torch.randint(0, 256, (n, 1, 28, 28), generator=g)
    x = x * (torch.rand(n, 1, 28, 28, generator=g) > 0.8)  # mostly black, like MNIST
    return x.to(device), torch.rand(n, 1, 28, 28, generator=g).to(device)


def _make_step(arch: str, provider: str, device: str):
    """``(step, model)``: ``step(x, noise)`` does one Adam step and returns the loss."""
    torch.manual_seed(0)
    model = build_realnvp(ops=provider, **MODELS[arch][0])
    with torch.no_grad():  # move the zero-initialised last layers off zero
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x: Tensor, noise: Tensor) -> Tensor:
        loss = model.bits_per_dim(x, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, model


_checked: set[tuple[str, str]] = set()


def _check_steps_agree(arch: str, device: str) -> None:
    """One step of each provider from the same weights: same loss and gradients."""
    if (arch, device) in _checked:
        return
    x, noise = _batch(arch, device)
    got = {}
    for provider in PROVIDERS:
        if provider == "fused" and device == "cuda" and not dgm_ext.build_info()["cuda"]:
            continue
        step, model = _make_step(arch, provider, device)
        loss = step(x, noise)
        got[provider] = (loss, [p.grad.clone() for p in model.parameters()])
    want = got["reference"]
    for loss, grads in got.values():
        torch.testing.assert_close(loss, want[0], rtol=1e-5, atol=1e-5)
        for a, b in zip(grads, want[1], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)
    _checked.add((arch, device))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("arch", list(MODELS))
@pytest.mark.parametrize("device", DEVICES)
def test_realnvp_train_step(benchmark, device: str, arch: str, provider: str) -> None:
    if device == "cuda" and provider == "fused" and not dgm_ext.build_info()["cuda"]:
        pytest.skip("dgm_ext was built without CUDA kernels")
    _check_steps_agree(arch, device)
    step, _ = _make_step(arch, provider, device)
    x, noise = _batch(arch, device)

    def run() -> Tensor:
        out = step(x, noise)
        _sync(device)
        return out

    run()
    benchmark.group = f"realnvp train step | {arch}, batch {MODELS[arch][1]}" + (
        "" if device == "cpu" else f" | {device}"
    )
    benchmark.extra_info.update(
        suite="flows",
        provider=provider,
        device=device,
        device_name=device_name(device),
        calls_per_round=1,
        quick=QUICK,
        data="8-bit pixels, 80 % black",
    )
    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert torch.isfinite(out).all()


# -- the MLP couplings' layout: only the used half (gathered) vs the full masked MLP ----------
LAYOUTS = ["gathered", "full"]


def _to_full_layout(model) -> None:
    """Replace every gathered MLP coupling net by the full-layout MLP of the same function
    (zero columns for the masked inputs; rows for the discarded s, t): what realnvp-mnist
    computed before the couplings gathered their inputs."""
    from dgm_ext.flows.coupling import MLPCouplingNet

    for layer in model.inner.layers:
        net = layer.net
        d, hidden = net.dim, net.net[0].out_features
        full = MLPCouplingNet(d, hidden).to(net.net[0].weight)
        with torch.no_grad():
            full.net[0].weight.zero_()
            full.net[0].weight[:, net.kept] = net.net[0].weight
            full.net[0].bias.copy_(net.net[0].bias)
            full.net[2].load_state_dict(net.net[2].state_dict())
            rows = torch.cat([net.moved, d + net.moved])
            full.net[4].weight.zero_()
            full.net[4].bias.zero_()
            full.net[4].weight[rows] = net.net[4].weight
            full.net[4].bias[rows] = net.net[4].bias
        layer.net = full


def _make_layout_step(layout: str, device: str):
    torch.manual_seed(0)
    model = build_realnvp(**MODELS["mlp"][0])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    if layout == "full":
        _to_full_layout(model)
    model = model.to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)

    def step(x: Tensor, noise: Tensor) -> Tensor:
        loss = model.bits_per_dim(x, noise).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("device", DEVICES)
def test_realnvp_mlp_coupling_layout(benchmark, device: str, layout: str) -> None:
    """A realnvp-mnist training step (fused ops, fused Adam) with the couplings' MLPs reading
    only the kept half and writing only the transformed half, against the full masked MLP
    (784-1024-1024-1568 per coupling). Same loss first."""
    x, noise = _batch("mlp", device)
    losses = [_make_layout_step(lay, device)(x, noise) for lay in LAYOUTS]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=1e-5)
    step = _make_layout_step(layout, device)

    def run() -> Tensor:
        out = step(x, noise)
        _sync(device)
        return out

    run()
    benchmark.group = f"realnvp mlp coupling layout | batch {MODELS['mlp'][1]}" + (
        "" if device == "cpu" else f" | {device}"
    )
    benchmark.extra_info.update(
        suite="flows", provider=layout, device=device, device_name=device_name(device),
        calls_per_round=1, quick=QUICK,
    )  # fmt: skip
    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert torch.isfinite(out).all()
