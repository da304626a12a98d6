"""GAN timings: the JSD losses and whole training steps, fused vs reference vs plain PyTorch.

    pytest benchmarks/bench_gan.py --benchmark-json=benchmarks/gan.json
    python benchmarks/report.py benchmarks/gan.json       # "GAN" table per device

Three providers, same process, inputs and initial weights:

* ``fused``: dgm_ext's JSD losses on the fused ``bernoulli_log_prob`` (``ops=None``);
* ``reference``: the same losses on ``dgm_ext.ops.reference`` (``ops="reference"``);
* ``plain``: what a user writes without dgm_ext, ``F.binary_cross_entropy_with_logits``
  against ``ones_like`` / ``zeros_like`` targets.

Two groups of benchmarks:

* ``gan jsd {critic,generator} loss | N=64/128 | fwd/fwd_bwd``: ``jsd_critic_loss(real,
  fake)`` and ``jsd_generator_loss_nonsaturating(fake)`` on critic logits of shape (N, 1),
  the sizes of a GAN batch; forward under ``no_grad``, or forward + backward into the logits.
  Before timing, the three providers' values and logit gradients are checked to agree.
* ``gan train step | {mlp,dcgan-w32}, batch 64``: one critic step and one generator step
  (the default ``jsd-nonsaturating`` loss, no penalty). ``fused`` / ``reference`` call
  ``GAN.train_step`` with a minimal step context (``zero_grad``, ``backward``, ``step``: the
  trainer's finite checks, clipping, logging and data loading are not timed). ``plain`` is the
  loop a user writes: the same networks (``build_networks``, same seed), two Adam optimisers
  with the GAN's settings and BCE-with-logits losses, doing the same network work as
  ``GAN.train_step``: fake batch under ``no_grad``, critic on real and on fake, critic
  update; critic frozen, fresh z, generator and critic forward, generator update. It logs
  the same JSD estimate, derived from its critic loss (``log 2 - loss / 2``) where
  ``GAN.train_step`` recomputes it from the logits. Before timing, two steps of each
  provider from the same weights and random state are checked to log the same losses and
  to end with the same gradients and BatchNorm buffers. Images are random in [0, 1]:
  1×28×28 for the MLP GAN, 3×32×32 for the DCGAN (width 32, not in the quick run); the cost
  of a step does not depend on the data.

Every benchmark runs on each device of ``cases.DEVICES``. On CUDA a loss round is
``calls_per_round`` back-to-back calls then ``torch.cuda.synchronize`` (report.py divides by
``extra_info["calls_per_round"]``); a training-step round is one step then a synchronize.
DGM_EXT_BENCH_QUICK=1 (CI smoke run): losses forward + backward only, the MLP GAN step only,
3 rounds each.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from cases import DEVICES, QUICK, calls_per_round, device_name
from torch import Tensor

import dgm_ext
from dgm_ext.gan.gan import GAN, GANConfig, build_networks
from dgm_ext.gan.losses import jsd_critic_loss, jsd_generator_loss_nonsaturating

PROVIDERS = ["fused", "reference", "plain"]
OPS = {"fused": None, "reference": "reference"}
MODES = ["fwd_bwd"] if QUICK else ["fwd", "fwd_bwd"]
LOSSES = ["critic", "generator"]
BATCHES = [64, 128]
STEP_BATCH = 64
ARCHS = {
    "mlp": GANConfig(arch="mlp", image_shape=(1, 28, 28)),
    "dcgan-w32": GANConfig(arch="dcgan", width=32, image_shape=(3, 32, 32)),
}
# Timed rounds per architecture; the DCGAN (hundreds of ms per step on 2 CPU cores, over a
# second when they are shared) is left out of the quick run.
STEP_ROUNDS = {"mlp": 3, "dcgan-w32": 0} if QUICK else {"mlp": 20, "dcgan-w32": 10}
STEP_ARCHS = [a for a in ARCHS if STEP_ROUNDS[a]]
_LOG2 = math.log(2.0)


def _skip_unbuilt(device: str, provider: str) -> None:
    if device == "cuda" and provider == "fused" and not dgm_ext.build_info()["cuda"]:
        pytest.skip("dgm_ext was built without CUDA kernels")


def _sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(torch.device(device))


def _group(name: str, device: str, calls: int) -> str:
    if device == "cpu":
        return name
    return f"{name} | {device}, {calls} calls/round"


def _info(benchmark, provider: str, device: str, calls: int, **extra) -> None:
    benchmark.extra_info.update(
        suite="gan",  # report.py: the GAN table
        provider=provider,
        device=device,
        device_name=device_name(device),
        calls_per_round=calls,
        quick=QUICK,
        **extra,
    )


# -- the losses -------------------------------------------------------------------------
def _bce(logits: Tensor, label: float) -> Tensor:
    target = torch.ones_like(logits) if label == 1.0 else torch.zeros_like(logits)
    return F.binary_cross_entropy_with_logits(logits, target)


def _loss_fn(loss: str, provider: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``f(real_logits, fake_logits)`` -> the scalar loss (the generator's ignores real)."""
    if provider == "plain":
        if loss == "critic":
            return lambda real, fake: _bce(real, 1.0) + _bce(fake, 0.0)
        return lambda real, fake: _bce(fake, 1.0)
    ops = OPS[provider]
    if loss == "critic":
        return lambda real, fake: jsd_critic_loss(real, fake, ops=ops)
    return lambda real, fake: jsd_generator_loss_nonsaturating(fake, ops=ops)


def _logits(n: int, device: str) -> tuple[Tensor, Tensor]:
    """Critic logits (N, 1) for a real and a fake batch, spread over ±10 (CPU-generated)."""
    g = torch.Generator().manual_seed(n)
    real = torch.randn(n, 1, generator=g) * 3.0 + 1.0
    fake = torch.randn(n, 1, generator=g) * 3.0 - 1.0
    return real.to(device).requires_grad_(True), fake.to(device).requires_grad_(True)


def _value_and_grads(fn, real: Tensor, fake: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    real.grad = fake.grad = None
    out = fn(real, fake)
    out.backward()
    zero = torch.zeros_like(real)
    grads = (
        real.grad if real.grad is not None else zero,
        fake.grad if fake.grad is not None else zero,
    )
    real.grad = fake.grad = None
    return out.detach(), *grads


def _check_losses_agree(loss: str, n: int, device: str) -> None:
    """The three providers give the same loss and logit gradients (so none is fast by being
    wrong): fused and plain against the reference."""
    real, fake = _logits(n, device)
    expected = _value_and_grads(_loss_fn(loss, "reference"), real, fake)
    for provider in ("fused", "plain"):
        if provider == "fused" and device == "cuda" and not dgm_ext.build_info()["cuda"]:
            continue
        got = _value_and_grads(_loss_fn(loss, provider), real, fake)
        for what, a, b in zip(("value", "grad real", "grad fake"), got, expected, strict=True):
            torch.testing.assert_close(
                a, b, rtol=1e-5, atol=1e-7, msg=lambda m, p=provider, w=what: f"{p} {w}: {m}"
            )


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("n", BATCHES, ids=[f"N{n}" for n in BATCHES])
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("device", DEVICES)
def test_gan_loss(benchmark, device: str, loss: str, n: int, provider: str, mode: str) -> None:
    _skip_unbuilt(device, provider)
    _check_losses_agree(loss, n, device)
    fn = _loss_fn(loss, provider)
    real, fake = _logits(n, device)
    if mode == "fwd":

        def once() -> None:
            with torch.no_grad():
                fn(real, fake)

    else:

        def once() -> None:
            real.grad = fake.grad = None
            fn(real, fake).backward()

    calls = calls_per_round(device)
    if torch.device(device).type == "cuda":

        def run() -> None:
            for _ in range(calls):
                once()
            _sync(device)

    else:
        run = once
    for _ in range(2):
        run()
    benchmark.group = _group(f"gan jsd {loss} loss | N={n} | {mode}", device, calls)
    _info(benchmark, provider, device, calls, case=f"jsd {loss} loss", n=n, mode=mode)
    # Microseconds per call: many calls per round (pytest-benchmark reports per iteration).
    benchmark.pedantic(
        run, rounds=3 if QUICK else 50, iterations=1 if QUICK else 20, warmup_rounds=1
    )


# -- whole training steps ---------------------------------------------------------------
class _StepContext:
    """The part of ``dgm_ext.train.StepContext`` that ``GAN.train_step`` uses, reduced to
    ``zero_grad`` / ``backward`` / ``step`` (no finite check, clipping or all-reduce)."""

    global_step = 0

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def step(self, optimizer, loss: Tensor, *, name: str = "loss", retain_graph=False) -> None:
        optimizer.zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain_graph)
        optimizer.step()


def _images(config: GANConfig, device: str) -> Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(STEP_BATCH, *config.image_shape, generator=g).to(device)


def _dgm_ext_step(config: GANConfig, provider: str, device: str):
    """``(step, modules)``: ``step(images)`` runs ``GAN.train_step`` and returns its logged
    values; ``modules`` are the generator and critic (for the agreement check)."""
    torch.manual_seed(0)
    model = GAN(config, ops=OPS[provider]).to(device).train()
    ctx = _StepContext(model.configure_optimizers(None))

    def step(images: Tensor) -> dict[str, Tensor]:
        return model.train_step(images, ctx)

    return step, (model.generator, model.critic)


def _plain_step(config: GANConfig, device: str):
    """The same step as a user writes it in plain PyTorch (see the module docstring)."""
    torch.manual_seed(0)
    netG, netD = build_networks(config)
    netG, netD = netG.to(device).train(), netD.to(device).train()
    opt_d = torch.optim.Adam(netD.parameters(), lr=config.lr_critic, betas=config.betas)
    opt_g = torch.optim.Adam(netG.parameters(), lr=config.lr_generator, betas=config.betas)
    bce = F.binary_cross_entropy_with_logits
    z_dim = config.z_dim

    def step(images: Tensor) -> dict[str, Tensor]:
        real = images * 2.0 - 1.0  # [0, 1] -> [-1, 1]
        n = real.shape[0]
        # critic step
        with torch.no_grad():
            fake = netG(torch.randn(n, z_dim, device=real.device))
        real_out, fake_out = netD(real), netD(fake)
        d_loss = bce(real_out, torch.ones_like(real_out)) + bce(
            fake_out, torch.zeros_like(fake_out)
        )
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        # generator step, critic frozen
        netD.requires_grad_(False)
        fake = netG(torch.randn(n, z_dim, device=real.device))
        fake_out = netD(fake)
        g_loss = bce(fake_out, torch.ones_like(fake_out))
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        netD.requires_grad_(True)
        d = d_loss.detach()
        return {"critic_loss": d, "jsd": _LOG2 - 0.5 * d, "generator_loss": g_loss.detach()}

    return step, (netG, netD)


def _make_step(arch: str, provider: str, device: str):
    config = ARCHS[arch]
    if provider == "plain":
        return _plain_step(config, device)
    return _dgm_ext_step(config, provider, device)


_checked: set[tuple[str, str]] = set()


def _check_steps_agree(arch: str, device: str) -> None:
    """Two steps of each provider from the same weights and random state (z draws, dropout)
    log the same losses (the second step's depend on both networks' first updates), and end
    with the same gradients and BatchNorm buffers.

    Parameters are not compared: a bias followed by BatchNorm has a gradient of rounding
    noise (~1e-9, different for fused and reference), which Adam's first steps scale to
    updates of up to the learning rate; such a bias cannot change the outputs."""
    if (arch, device) in _checked:
        return
    images = _images(ARCHS[arch], device)
    results = {}
    for provider in PROVIDERS:
        if provider == "fused" and device == "cuda" and not dgm_ext.build_info()["cuda"]:
            continue
        step, modules = _make_step(arch, provider, device)
        torch.manual_seed(1)
        logged = [step(images) for _ in range(2)]
        grads = {
            f"{i}.{k}": v.grad.clone()
            for i, m in enumerate(modules)
            for k, v in m.named_parameters()
            if v.grad is not None
        }
        buffers = {
            f"{i}.{k}": v.clone() for i, m in enumerate(modules) for k, v in m.named_buffers()
        }
        results[provider] = (logged, grads, buffers)
    expected = results["reference"]
    # Gradients (~1e-3) to 1e-7, buffers to 1e-5 (see above); 10x looser on CUDA, where
    # cuDNN's convolutions (TF32 by default, atomics in some backward algorithms) and reduction
    # orders may differ between the providers' runs. A wrong loop differs by O(1).
    loose = 10.0 if torch.device(device).type == "cuda" else 1.0
    for provider, got in results.items():

        def close(a, b, atol, what, p=provider):
            torch.testing.assert_close(
                a,
                b,
                rtol=1e-4 * loose,
                atol=atol * loose,
                msg=lambda m: f"{arch} {p} {what}: {m}",
            )

        for i, (a, b) in enumerate(zip(got[0], expected[0], strict=True)):
            for key in ("critic_loss", "jsd", "generator_loss"):
                close(a[key], b[key], 1e-6, f"step {i + 1} {key}")
        for k in (1, 2):
            assert got[k].keys() == expected[k].keys(), provider
            for key, value in got[k].items():
                close(value, expected[k][key], 1e-7 if k == 1 else 1e-5, key)
    _checked.add((arch, device))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("arch", STEP_ARCHS)
@pytest.mark.parametrize("device", DEVICES)
def test_gan_train_step(benchmark, device: str, arch: str, provider: str) -> None:
    _skip_unbuilt(device, provider)
    _check_steps_agree(arch, device)
    step, _ = _make_step(arch, provider, device)
    images = _images(ARCHS[arch], device)

    def run() -> dict[str, Tensor]:
        out = step(images)
        _sync(device)
        return out

    for _ in range(2):
        run()
    benchmark.group = _group(f"gan train step | {arch}, batch {STEP_BATCH}", device, 1)
    _info(benchmark, provider, device, 1, case=f"train step {arch}", batch=STEP_BATCH)
    out = benchmark.pedantic(run, rounds=STEP_ROUNDS[arch], iterations=1, warmup_rounds=1)
    assert all(torch.isfinite(v).all() for v in out.values())
