"""Train a tiny model with dgm_ext.train.Trainer; used by the resume and DDP tests.

Run directly (single process) or under ``python -m torch.distributed.run``. With
``--kill-at-step K`` the process SIGKILLs itself at the start of its K-th training step
(counted within this process), simulating a crash. At the end rank 0 saves the final
model state dict to ``--out`` (as CPU tensors). ``--device`` is passed to the trainer
(default: its own choice, ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU).

With ``--report-dir DIR`` every rank writes ``DIR/<kind>-rank<R>.json``: the rank and world
size the trainer saw, whether a process group was still initialised after ``fit`` (it must
not be when the trainer created it), the random numbers each training step drew (Python
loss scale, first numpy noise value, number of dropped units) and the message of a
:class:`NonFiniteLossError`, if one stopped training. ``--nan-at-step K`` makes the loss NaN
at the K-th step of this process (on rank ``--nan-rank`` only, if given).

``main(argv)`` can also be called in a process that sets ``WORLD_SIZE``/``RANK``/
``MASTER_ADDR``/``MASTER_PORT`` itself (see ``tests/_train_helpers.run_ranks``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from dgm_ext.data import ImageDataset
from dgm_ext.train import NonFiniteLossError, Trainer, TrainerConfig

_calls = 0


def _maybe_die(kill_at: int | None) -> None:
    global _calls
    _calls += 1
    if kill_at is not None and _calls == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


class NoisyMLP(nn.Module):
    """Classifier whose training uses all three RNGs (torch dropout and dynamic
    binarisation, numpy input noise, Python ``random`` loss scaling)."""

    def __init__(self, kill_at: int | None, stochastic: bool, nan_at: int | None = None) -> None:
        super().__init__()
        p = 0.2 if stochastic else 0.0
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.Tanh(), nn.Dropout(p),
                                 nn.Linear(32, 4))  # fmt: skip
        self.kill_at, self.stochastic, self.nan_at = kill_at, stochastic, nan_at
        self.draws: list[list[float]] = []  # per step: loss scale, noise[0], dropped units
        self.steps = 0

    def training_step(self, batch):
        _maybe_die(self.kill_at)
        self.steps += 1
        x, y = batch
        scale, first_noise = 1.0, 0.0
        if self.stochastic:
            noise = np.random.standard_normal(x.shape).astype("float32")  # noqa: NPY002
            x = x + 0.01 * torch.from_numpy(noise).to(x.device)
            scale = 1.0 + 0.01 * random.random()
            first_noise = float(noise.flat[0])
        hidden = self.net[:4](x)  # flatten, linear, tanh, dropout
        self.draws.append([scale, first_noise, int((hidden == 0).sum())])
        loss = nn.functional.cross_entropy(self.net[4](hidden), y) * scale
        if self.steps == self.nan_at:
            loss = loss * float("nan")
        return {"loss": loss}

    def validation_step(self, batch):
        x, y = batch
        logits = self.net(x)
        acc = (logits.argmax(-1) == y).float().mean()
        return {"loss": nn.functional.cross_entropy(logits, y), "acc": acc}


class TwoPlayer(nn.Module):
    """A two-optimiser toy (custom train_step), like a GAN's critic/generator updates."""

    def __init__(self, kill_at: int | None) -> None:
        super().__init__()
        self.g = nn.Linear(16, 4)
        self.d = nn.Linear(16, 4)
        # in the generator's optimiser but never used: it has no gradient, which the manual
        # DDP gradient average must leave as it is (None)
        self.g_unused = nn.Parameter(torch.zeros(3))
        self.kill_at = kill_at

    def configure_optimizers(self, config):
        from dgm_ext.train import build_optimizer

        # a large eps on one of them: Adam is otherwise nearly invariant to the gradients'
        # scale, and the DDP tests must see a wrong gradient average
        return [
            build_optimizer(self.d.parameters(), config, lr=2 * config.lr),
            build_optimizer(
                [*self.g.parameters(), self.g_unused], config, betas=(0.5, 0.99), eps=0.1
            ),
        ]

    def train_step(self, batch, ctx):
        _maybe_die(self.kill_at)
        x, y = batch
        d_opt, g_opt = ctx.optimizers
        x = x.flatten(1)
        d_loss = nn.functional.cross_entropy(self.d(x) + self.g(x).detach(), y)
        ctx.step(d_opt, d_loss, name="d_loss")
        g_loss = nn.functional.cross_entropy(self.g(x) + self.d(x), y)
        ctx.step(g_opt, g_loss, name="g_loss")
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach()}

    def validation_step(self, batch):
        x, y = batch
        x = x.flatten(1)
        return {"loss": nn.functional.cross_entropy(self.g(x) + self.d(x), y)}


def make_gan(kill_at: int | None) -> nn.Module:
    """The library's MLP GAN on 4×4 images: R1, two critic steps per generator step,
    dropout in the critic, BatchNorm in the generator (plain BatchNorm, also under DDP:
    SyncBatchNorm needs GPUs; the trainer broadcasts rank 0's buffers before each step)."""
    from dgm_ext.gan import GAN, GANConfig

    class KillableGAN(GAN):
        def train_step(self, batch, ctx):
            _maybe_die(kill_at)
            return super().train_step(batch, ctx)

    cfg = GANConfig(image_shape=(1, 4, 4), critic_steps=2, penalty="r1", penalty_weight=0.1,
                    lr_generator=1e-3, lr_critic=2e-3)  # fmt: skip
    return KillableGAN(cfg)


def make_data(n: int, variant: str) -> tuple[ImageDataset, ImageDataset]:
    g = torch.Generator().manual_seed(1234)
    images = torch.rand(n, 1, 4, 4, generator=g)
    labels = (images.flatten(1)[:, :4].argmax(1)).long()
    k = n // 4
    return (
        ImageDataset(images[k:], labels[k:], variant=variant),
        ImageDataset(images[:k], labels[:k], variant=variant),
    )


def train_one(kind: str, run_dir: str, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Train model ``kind`` in ``run_dir``; returns its final state (and EMA, if any)."""
    rank = int(os.environ.get("RANK", "0"))
    # model initialisation; --rank-init: different on every rank (training must start from
    # rank 0's weights, which the Trainer broadcasts)
    torch.manual_seed(rank if getattr(args, "rank_init", False) else 0)
    stochastic = not args.deterministic
    nan_at = args.nan_at_step if args.nan_rank in (None, rank) else None
    if kind == "mlp":
        model: nn.Module = NoisyMLP(args.kill_at_step, stochastic, nan_at)
    elif kind == "gan":
        model = make_gan(args.kill_at_step)
    else:
        model = TwoPlayer(args.kill_at_step)
    train_set, val_set = make_data(args.num_examples, "dynamic" if stochastic else "grey")
    cfg = TrainerConfig(
        run_dir=run_dir,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=1e-2,
        seed=7,
        ema_decay=args.ema,
        checkpoint_every=args.checkpoint_every,
        progress=False,
        device=args.device,
    )
    if kind == "gan":
        val_set = None  # a GAN has no validation loss
    trainer = Trainer(model, cfg)
    report = {"rank": rank, "error": None}
    try:
        trainer.fit(train_set, val_set)
    except NonFiniteLossError as exc:
        report["error"] = str(exc)
        raise
    finally:
        if args.report_dir:
            report.update(
                trainer_rank=trainer.rank,
                world_size=trainer.world_size,
                process_group_after_fit=dist.is_available() and dist.is_initialized(),
                draws=getattr(model, "draws", []),
                # every rank must end with the same weights and buffers
                state_checksum=[float(v.double().sum()) for v in model.state_dict().values()],
            )
            path = os.path.join(args.report_dir, f"{kind}-rank{rank}.json")
            with open(path, "w") as f:
                json.dump(report, f)
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    if trainer.ema is not None:
        state.update({f"ema.{k}": v.to("cpu", copy=True) for k, v in trainer.ema.shadow.items()})
    return state


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--out", required=True, help="torch file {model kind: final state}")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--num-examples", type=int, default=160)
    ap.add_argument("--kill-at-step", type=int, default=None)
    ap.add_argument("--checkpoint-every", type=int, default=None)
    ap.add_argument("--models", default="mlp", help="comma-separated: mlp, two, gan")
    ap.add_argument("--deterministic", action="store_true", help="no dropout/noise, grey data")
    ap.add_argument("--ema", type=float, default=None)
    ap.add_argument("--device", default=None, help="TrainerConfig.device (e.g. cpu)")
    ap.add_argument("--report-dir", default=None, help="per-rank JSON reports go here")
    ap.add_argument("--nan-at-step", type=int, default=None)
    ap.add_argument("--nan-rank", type=int, default=None, help="default: every rank")
    ap.add_argument("--rank-init", action="store_true", help="initialise with seed = rank")
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    kinds = args.models.split(",")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if distributed and len(kinds) > 1:
        # several trainings in one process group (the Trainer then leaves it alone); the
        # backend the Trainer would pick for its device: NCCL on CUDA, gloo on the CPU
        device = Trainer._resolve_device(args.device)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    states = {k: train_one(k, os.path.join(args.run_dir, k), args) for k in kinds}
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save(states, args.out)
    if dist.is_initialized():
        # every rank reaches this point before any tears the group down: a rank that
        # destroys its gloo group while a peer is still busy (rank 0 saving the states
        # above) was seen to abort ('terminate called without an active exception') in CI
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
