"""One critic step of ``GAN.train_step`` end to end, recomputed in the test with torch.func.

The unit tests of ``r1_penalty``/``gradient_penalty`` cannot see *which* points the training
step hands them. Here one real critic step (the Trainer's own step context and optimisers)
runs on a known batch with a known random stream, and the logged penalty, the logged training
metric and the critic's parameter gradient are compared with a second computation in float64:
the critic as a function of its parameters (``functional_call``), per-sample input gradients
with ``vmap(grad)`` (not the library's summed ``autograd.grad``), the losses written out with
``logsigmoid``, R1 on the real batch, GP on ``ε·real + (1 - ε)·fake`` with the ε that the
step draws from the global stream right after the latent codes.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from dgm_ext.gan import GAN, GANConfig
from dgm_ext.train import Trainer, TrainerConfig

WEIGHT = 0.7  # not 1: a penalty step that drops the weight shows
N = 8


pytestmark = pytest.mark.usefixtures("one_thread")


def _expected(
    model: GAN, images: torch.Tensor, seed: int
) -> tuple[float, float | None, dict[str, torch.Tensor]]:
    """(metric, penalty, critic gradient) of one critic step from ``model``'s current weights."""
    cfg = model.config
    real = (images * 2.0 - 1.0).double()
    torch.manual_seed(seed)  # the step's draws, in its order: z, then GP's ε
    z = torch.randn(N, cfg.z_dim)
    eps = torch.rand(N).double()
    gen = copy.deepcopy(model.generator)  # train mode: BatchNorm on batch statistics
    with torch.no_grad():
        fake = gen(z).double()
    critic = copy.deepcopy(model.critic).double().eval()  # dropout=0: eval is the same function
    params = {k: v.detach() for k, v in critic.named_parameters()}

    def c(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(critic, p, (x,)).reshape(x.shape[0])

    def input_grads(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        one = grad(lambda xi: c(p, xi.unsqueeze(0)).squeeze(0))  # ∇ₓ C(x) of one sample
        return vmap(one)(x).flatten(1)

    def objective(p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, tuple]:
        r, f = c(p, real), c(p, fake)
        if cfg.loss.startswith("jsd"):
            log_real, log_not_fake = F.logsigmoid(r).mean(), F.logsigmoid(-f).mean()
            loss = -(log_real + log_not_fake)
            metric = 0.5 * (log_real + log_not_fake) + math.log(2.0)
        else:
            metric = r.mean() - f.mean()
            loss = -metric if cfg.loss == "w1" else F.relu(1 - r).mean() + F.relu(1 + f).mean()
        pen = torch.zeros((), dtype=torch.float64)
        if cfg.penalty == "r1":
            pen = cfg.penalty_weight * input_grads(p, real).pow(2).sum(1).mean()
        elif cfg.penalty == "gp":
            e = eps.reshape(N, 1, 1, 1)
            norms = input_grads(p, e * real + (1 - e) * fake).pow(2).sum(1).sqrt()
            pen = cfg.penalty_weight * (norms - 1).pow(2).mean()
        return loss + pen, (metric.detach(), pen.detach())

    grads, (metric, pen) = grad(objective, has_aux=True)(params)
    return float(metric), (float(pen) if cfg.penalty else None), grads


@pytest.mark.parametrize("penalty", [None, "r1", "gp"])
@pytest.mark.parametrize("loss", ["jsd-nonsaturating", "w1", "hinge"])
def test_critic_step_penalty_metric_and_gradient(tmp_path, loss, penalty) -> None:
    torch.manual_seed(0)
    cfg = GANConfig(image_shape=(1, 4, 4), loss=loss, penalty=penalty,
                    penalty_weight=WEIGHT if penalty else 0.0, critic_steps=2,
                    dropout=0.0)  # fmt: skip
    model = GAN(cfg)
    trainer = Trainer(
        model,
        TrainerConfig(run_dir=tmp_path / "run", batch_size=N, progress=False, device="cpu"),
    )
    images = torch.rand(N, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    metric, pen, grads = _expected(model, images, seed=5)

    torch.manual_seed(5)
    out = model.train_step((images,), trainer._ctx)
    assert "generator_loss" not in out  # step 0 of 2 critic steps: the critic alone moved
    assert float(out[model.metric_name]) == pytest.approx(metric, rel=1e-5, abs=1e-6)
    if penalty is None:
        assert "penalty" not in out
    else:
        assert float(out["penalty"]) == pytest.approx(pen, rel=1e-4, abs=1e-7)
    for name, p in model.critic.named_parameters():
        # the critic step's gradient is still in .grad (the optimiser leaves it there)
        torch.testing.assert_close(p.grad.double(), grads[name], rtol=1e-4, atol=1e-6, msg=name)
    assert all(p.grad is None for p in model.generator.parameters())
