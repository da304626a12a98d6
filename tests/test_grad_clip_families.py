"""``TrainerConfig.grad_clip`` reaches every family's training path (issue 23): the VAE's and
RealNVP's default step (``training_step``) and the GAN's own ``train_step`` (both of its
optimisers, through ``ctx.step``).

Hooks record, for every optimiser step, the raw gradients of the backward pass (a
post-accumulate hook on each parameter, before any clipping) and the gradients the optimiser
steps with (a step pre-hook). The test computes the raw global norm itself, in float64: with a
limit below it, the stepped gradients are the raw ones scaled to norm ``grad_clip``; without a
limit they are the raw ones.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from dgm_ext.data import ImageDataset
from dgm_ext.flows.realnvp import build_realnvp
from dgm_ext.gan import GAN, GANConfig
from dgm_ext.train import Trainer, TrainerConfig
from dgm_ext.vae import build_vae

Step = tuple[list[Tensor], list[Tensor]]  # (raw gradients, gradients stepped with)


pytestmark = pytest.mark.usefixtures("one_thread")


def _model(family: str) -> tuple[nn.Module, ImageDataset]:
    """A small model of ``family`` and 16 training images for it (two batches of 8)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    labels = torch.zeros(16, dtype=torch.long)
    if family == "vae":
        model = build_vae(arch="mlp", latent_dim=2, hidden=8, flow_length=1)
        return model, ImageDataset(torch.rand(16, 1, 28, 28, generator=g), labels)
    if family == "gan":
        model = GAN(GANConfig(image_shape=(1, 4, 4), z_dim=4))
        return model, ImageDataset(torch.rand(16, 1, 4, 4, generator=g), labels)
    model = build_realnvp(arch="mlp", image_shape=(1, 2, 2), couplings=2, hidden=8)
    levels = torch.randint(0, 256, (16, 1, 2, 2), generator=g)
    return model, ImageDataset(levels, labels)


def _record(trainer: Trainer) -> list[Step]:
    """Install the hooks on the trainer's optimisers; the list fills during ``fit``."""
    raw: dict[int, Tensor] = {}
    steps: list[Step] = []

    def keep_raw(p: Tensor) -> None:
        raw[id(p)] = p.grad.detach().clone()

    for opt in trainer.optimizers:
        params = [p for group in opt.param_groups for p in group["params"]]
        for p in params:
            p.register_post_accumulate_grad_hook(keep_raw)

        def before_step(opt, args, kwargs, params=params) -> None:
            used = [p for p in params if p.grad is not None]
            steps.append(([raw.pop(id(p)) for p in used], [p.grad.detach().clone() for p in used]))

        opt.register_step_pre_hook(before_step)
    return steps


def _fit(family: str, tmp_path: Path, grad_clip: float | None) -> list[Step]:
    model, data = _model(family)
    config = TrainerConfig(
        run_dir=tmp_path / f"{family}-{grad_clip}",
        epochs=1,
        batch_size=8,
        grad_clip=grad_clip,
        progress=False,
        device="cpu",
    )
    trainer = Trainer(model, config)
    steps = _record(trainer)
    trainer.fit(data)
    return steps


def _norm(tensors: list[Tensor]) -> float:
    return math.sqrt(sum(float(t.double().pow(2).sum()) for t in tensors))


# optimiser steps in one epoch of two batches: the GAN takes a critic and a generator step
# per batch (critic_steps=1)
STEPS = {"vae": 2, "gan": 4, "realnvp": 2}
LIMIT = 1e-3


@pytest.mark.parametrize("family", ["vae", "gan", "realnvp"])
def test_grad_clip_scales_each_step_to_the_limit(tmp_path, family):
    steps = _fit(family, tmp_path, LIMIT)
    assert len(steps) == STEPS[family]
    for raw, stepped in steps:
        raw_norm = _norm(raw)
        assert raw_norm > 10 * LIMIT  # the limit binds
        assert _norm(stepped) == pytest.approx(LIMIT, rel=1e-4)
        for r, s in zip(raw, stepped, strict=True):  # same direction: a scaling, not a cut
            torch.testing.assert_close(s.double(), r.double() * (LIMIT / raw_norm))


@pytest.mark.parametrize("family", ["vae", "gan", "realnvp"])
def test_without_grad_clip_the_raw_gradients_are_stepped(tmp_path, family):
    steps = _fit(family, tmp_path, None)
    assert len(steps) == STEPS[family]
    for raw, stepped in steps:
        assert _norm(raw) > 10 * LIMIT
        for r, s in zip(raw, stepped, strict=True):
            assert torch.equal(r, s)
