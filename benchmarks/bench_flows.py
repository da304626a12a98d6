"""Planar-flow timings: one fit step of planar-2d (K = 32, batch 128), fused vs reference ops.

    pytest benchmarks/bench_flows.py --benchmark-json=benchmarks/flows.json
    python benchmarks/report.py benchmarks/flows.json

Two providers, same process, inputs and initial weights:

* ``fused``: :class:`dgm_ext.flows.PlanarFlow` on the fused ``planar_flow`` op;
* ``reference``: the same flow on ``dgm_ext.ops.reference.planar_flow`` (a Python loop over
  the K layers, autograd through it).

A step is what ``dgm_ext.flows.fit.fit_planar`` does per iteration: û from (u, w), the K
layers forward, the per-sample loss, its mean, backward and an RMSprop update (lr 5e-4),
for both fits of SPEC §3:

* ``ml``: ``−log N(f(x)) − log|det ∂f/∂x|`` on a batch of exact "arcs" samples;
* ``kl``: ``U3(f(z0)) + log N(z0) − log|det ∂f/∂z0|`` on N(0, I) draws (the walled U3).

The batch is fixed (drawn once, outside the timing); the parameters move between rounds as
in a fit. Before timing, two steps of each provider from the same weights are checked to
give the same losses and gradients. Flow parameters are u, w ~ N(0, 0.3²) and b ~ N(0, 1)
rather than the SPEC's N(0, 0.01²) initialisation, so that no layer is near the identity
(the cost does not depend on the values).

Every benchmark runs on each device of ``cases.DEVICES``; a round is one step, then a
``torch.cuda.synchronize`` on CUDA. Records carry ``extra_info["suite"] = "flows"`` and the
provider; report.py has no flows table yet, so they print in its fused/reference table
(headed "VAE end to end"). DGM_EXT_BENCH_QUICK=1 (CI smoke run): 3 rounds each.
"""

from __future__ import annotations

import pytest
import torch
from cases import DEVICES, QUICK, device_name
from torch import Tensor

import dgm_ext
from dgm_ext.flows import PlanarFlow
from dgm_ext.flows.base import standard_normal_log_prob
from dgm_ext.flows.densities import get_density

PROVIDERS = ["fused", "reference"]
MODES = ["ml", "kl"]
K, BATCH, LR = 32, 128, 5e-4
ROUNDS = 3 if QUICK else 200


def _skip_unbuilt(device: str, provider: str) -> None:
    if device == "cuda" and provider == "fused" and not dgm_ext.build_info()["cuda"]:
        pytest.skip("dgm_ext was built without CUDA kernels")


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def _batch(mode: str, device: str) -> Tensor:
    g = torch.Generator().manual_seed(0)
    if mode == "ml":
        x = get_density("arcs").sample(BATCH, g).float()
    else:
        x = torch.randn(BATCH, 2, generator=g)
    return x.to(device)


def _make_step(mode: str, provider: str, device: str):
    """``(step, flow)``: ``step(batch)`` does one RMSprop step and returns the loss."""
    torch.manual_seed(0)
    flow = PlanarFlow(2, K, generative=mode == "kl", ops=provider, init_scale=0.3)
    with torch.no_grad():
        flow.b.normal_()
    flow = flow.to(device)
    opt = torch.optim.RMSprop(flow.parameters(), lr=LR)
    u3 = get_density("u3")

    def step(batch: Tensor) -> Tensor:
        y, logdet = flow.transform(batch)
        if mode == "ml":
            loss = -(standard_normal_log_prob(y) + logdet).mean()
        else:
            loss = (u3.energy(y) + standard_normal_log_prob(batch) - logdet).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    return step, flow


_checked: set[tuple[str, str]] = set()


def _check_steps_agree(mode: str, device: str) -> None:
    """Two steps of each provider from the same weights: same losses and final gradients
    (so neither is fast by being wrong)."""
    if (mode, device) in _checked:
        return
    batch = _batch(mode, device)
    got = {}
    for provider in PROVIDERS:
        if provider == "fused" and device == "cuda" and not dgm_ext.build_info()["cuda"]:
            continue
        step, flow = _make_step(mode, provider, device)
        losses = torch.stack([step(batch) for _ in range(2)])
        got[provider] = (losses, [p.grad.clone() for p in (flow.u, flow.w, flow.b)])
    want = got["reference"]
    for provider, (losses, grads) in got.items():
        where = f"{mode} {provider}"
        torch.testing.assert_close(
            losses, want[0], rtol=1e-5, atol=1e-5, msg=lambda m, w=where: f"{w} losses: {m}"
        )
        for name, a, b in zip("uwb", grads, want[1], strict=True):
            torch.testing.assert_close(
                a, b, rtol=1e-4, atol=1e-5, msg=lambda m, w=where, n=name: f"{w} d{n}: {m}"
            )
    _checked.add((mode, device))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("device", DEVICES)
def test_planar_fit_step(benchmark, device: str, mode: str, provider: str) -> None:
    _skip_unbuilt(device, provider)
    _check_steps_agree(mode, device)
    step, _ = _make_step(mode, provider, device)
    batch = _batch(mode, device)

    def run() -> Tensor:
        out = step(batch)
        _sync(device)
        return out

    for _ in range(3):
        run()
    benchmark.group = f"planar fit step | {mode}, K={K}, batch {BATCH}" + (
        "" if device == "cpu" else f" | {device}"
    )
    benchmark.extra_info.update(
        suite="flows",
        provider=provider,
        device=device,
        device_name=device_name(device),
        calls_per_round=1,
        quick=QUICK,
        data="arcs samples" if mode == "ml" else "N(0, I) draws, U3 target",
    )
    out = benchmark.pedantic(run, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert torch.isfinite(out).all()
