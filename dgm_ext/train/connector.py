"""Checkpoints of a Trainer run, kept out of the loop (as Lightning's checkpoint connector):
what a checkpoint holds (:meth:`CheckpointConnector.state`), how it is written
(``last.pt`` atomically every epoch and every ``checkpoint_every`` steps, ``best.pt``,
``epoch-XXXX.pt`` with ``keep_last``) and how a run is restored from one
(:meth:`CheckpointConnector.restore`: checks first, then model, optimisers with the current
run's settings, EMA, counters, history, running sums, callbacks, RNG states)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from .checkpoint import atomic_copy, atomic_save, get_rng_state, seed_everything, set_rng_state
from .ema import ModelEMA
from .guard import sigint_deferred
from .records import MetricAccumulator
from .resume import (
    CHECKPOINT_FORMAT,
    ModelMismatchError,
    apply_optimizer_hyperparameters,
    changed_model_settings,
    changed_settings,
    check_same_model,
    describe_changes,
    implied_by_config,
    load_for_resume,
    model_settings,
    optimizer_hyperparameters,
    restore_accumulator,
    unused_path,
)

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["CheckpointConnector"]

log = logging.getLogger("dgm_ext.train")


class CheckpointConnector:
    """Writes and restores the checkpoints of one :class:`~dgm_ext.train.Trainer`."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        # the last checkpoint known to be good: (path, epoch, step), named by error messages
        self.last_good: tuple[Path, int, int] | None = None
        # an unreadable last.pt found at resume and the name it gets before the next write
        self.corrupt_last: tuple[Path, Path] | None = None

    def state(self, acc: MetricAccumulator | None) -> dict[str, Any]:
        t = self.trainer
        rng = get_rng_state()
        acc_state = acc.state_dict() if acc is not None else None
        if t.world_size > 1:
            gathered: list[Any] = [None] * t.world_size
            dist.all_gather_object(gathered, (rng, acc_state))
            all_rng = [g[0] for g in gathered]
            all_acc = [g[1] for g in gathered] if acc is not None else None
        else:
            all_rng = [rng]
            all_acc = [acc_state] if acc is not None else None
        return {
            "format": CHECKPOINT_FORMAT,
            "model": t.model.state_dict(),
            "optimizers": [o.state_dict() for o in t.optimizers],
            "ema": t.ema.state_dict() if t.ema is not None else None,
            "trainer": {
                "epoch": t.epoch,
                "global_step": t.global_step,
                "batch_in_epoch": t.batch_in_epoch,
                "best": t.best,
                "best_epoch": t.best_epoch,
                "bad_epochs": t.bad_epochs,
                "stopped_early": t.stopped_early,
                "epoch_time": t._epoch_time,
                "world_size": t.world_size,
                "base_lrs": t.base_lrs,  # what the lr schedule multiplies
            },
            "scaler": t._scaler.state_dict() if t._scaler is not None else None,
            "accumulator": acc_state,  # rank 0's (what checkpoints before "accumulators" held)
            "accumulators": all_acc,  # every rank's running sums of a mid-epoch checkpoint
            "history": t.history,
            "rng": all_rng,
            "config": t.config.to_dict(),
            "model_config": model_settings(t.model),  # None for a model without a config
            "callbacks": {c.state_key: c.state_dict() for c in t.callbacks},
        }

    def save(self, acc: MetricAccumulator | None, improved: bool = False) -> None:
        t = self.trainer
        state = self.state(acc)  # collective under DDP: every rank calls it
        if t.is_main:
            last = t.checkpoint_dir / "last.pt"
            if self.corrupt_last is not None:
                bad, aside = self.corrupt_last
                if bad.is_file():  # keep the unreadable file for inspection, never overwrite it
                    os.rename(bad, unused_path(aside))
            # a Ctrl-C during the write waits for it and for its record (a SIGINT between the
            # rename and the record once reported "no checkpoint" beside a good last.pt)
            with sigint_deferred():
                atomic_save(state, last)
                self.last_good = (last, t.epoch, t.global_step)
            if improved:
                atomic_copy(last, t.checkpoint_dir / "best.pt")
            if t.config.keep_last and acc is None:
                atomic_copy(last, t.checkpoint_dir / f"epoch-{t.epoch:04d}.pt")
                kept = sorted(t.checkpoint_dir.glob("epoch-*.pt"))
                for old in kept[: -t.config.keep_last]:
                    old.unlink(missing_ok=True)
        self.corrupt_last = None
        self.last_good = (t.checkpoint_dir / "last.pt", t.epoch, t.global_step)

    def restore(self) -> bool:
        t = self.trainer
        last = t.checkpoint_dir / "last.pt"
        if not (t.config.resume and last.is_file()):
            return False
        path, ck, self.corrupt_last = load_for_resume(last)
        fmt = ck.get("format")
        if fmt != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path}: unknown checkpoint format {fmt!r} (this trainer reads "
                f"{CHECKPOINT_FORMAT!r}); resume it with the dgm_ext version that wrote it, or "
                "start fresh with TrainerConfig(resume=False) or another run_dir"
            )
        # everything that can be checked is checked before any state is changed
        check_same_model(ck["model"], t.model, path, t.run_dir)
        if len(ck["optimizers"]) != len(t.optimizers):
            raise ModelMismatchError(
                f"{t.run_dir} holds a run of a different model: {path} holds "
                f"{len(ck['optimizers'])} optimiser states but this model configures "
                f"{len(t.optimizers)}. Train it in a new run_dir (--out), or pass "
                "resume=False (--fresh) to move the earlier run aside and start over."
            )
        fresh_hyper = optimizer_hyperparameters(t.optimizers)
        t.model.load_state_dict(ck["model"])
        for opt, sd in zip(t.optimizers, ck["optimizers"], strict=True):
            opt.load_state_dict(sd)
        saved_bases = ck["trainer"].get("base_lrs")
        if saved_bases is not None and len(saved_bases) == len(t.optimizers):
            # the saved groups hold a scheduled rate: compare the configured ones
            for opt, bases in zip(t.optimizers, saved_bases, strict=True):
                for g, base in zip(opt.param_groups, bases, strict=False):
                    g["lr"] = base
        # the settings of this run are the ones in force: load_state_dict brought back the
        # checkpoint's learning rate (and betas, eps, weight decay)
        optimizer_notes = apply_optimizer_hyperparameters(t.optimizers, fresh_hyper)
        if t._scaler is not None and ck.get("scaler"):
            t._scaler.load_state_dict(ck["scaler"])
        if t.ema is not None:
            if ck["ema"] is None:
                log.warning("%s has no EMA state; the EMA restarts from the weights", path)
                t.ema = ModelEMA(t.ema.module, t.ema.decay)
            else:
                t.ema.load_state_dict(ck["ema"])
        c = ck["trainer"]
        t.epoch, t.global_step = int(c["epoch"]), int(c["global_step"])
        t.batch_in_epoch = int(c["batch_in_epoch"])
        t.best, t.best_epoch = c["best"], c["best_epoch"]
        t.bad_epochs, t.stopped_early = int(c["bad_epochs"]), bool(c["stopped_early"])
        t._epoch_time = float(c["epoch_time"])
        t.history = [dict(r) for r in ck["history"]]
        t._acc = restore_accumulator(ck, t.rank, t.world_size, t.device)
        saved = ck.get("callbacks") or {}
        for cb in t.callbacks:
            if cb.state_key in saved:
                cb.load_state_dict(saved[cb.state_key])
            else:
                log.warning(
                    "%s holds no state of callback %s; it starts afresh", path, cb.state_key
                )
        changes = changed_model_settings(ck.get("model_config"), model_settings(t.model))
        changes += changed_settings(ck.get("config") or {}, t.config)
        optimizer_notes = [n for n in optimizer_notes if not implied_by_config(n, changes)]
        if changes or optimizer_notes:
            log.warning(
                "%s was written with different settings: %s: the run continues with the "
                "current ones, but not as an exact continuation of the interrupted one",
                path, "; ".join(filter(None, [describe_changes(changes), *optimizer_notes])),
            )  # fmt: skip
        rng = ck["rng"]
        if len(rng) == t.world_size:
            set_rng_state(rng[t.rank])
        else:
            log.warning(
                "%s was written by %d processes, now %d: RNG streams are reseeded, the "
                "continuation is not bit-identical",
                path, len(rng), t.world_size,
            )  # fmt: skip
            seed_everything(t.config.seed + t.rank + 7919 * (t.global_step + 1))
        self.last_good = (path, t.epoch, t.global_step)
        if t.is_main:
            log.info("resumed from %s (epoch %d, step %d)", path, t.epoch, t.global_step)
        return True
