"""The training loop: :class:`Trainer` (custom steps get a :class:`~.step.StepContext`).

The model contract, the run directory, resume and distributed behaviour are documented in
:mod:`dgm_ext.train` (the package docstring); checkpoints are written and restored by
:mod:`dgm_ext.train.connector`, devices and process groups set up by
:mod:`dgm_ext.train.distributed`, metric files written by :mod:`dgm_ext.train.records`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from . import distributed as parallel
from .callbacks import Callback
from .checkpoint import (
    seed_everything,
)
from .compiled import CompiledStep
from .config import TrainerConfig
from .connector import CheckpointConnector
from .ema import ModelEMA
from .guard import NonFiniteLossError, TrainingInterrupted, describe_non_finite, non_finite_message
from .loaders import IterableBatches, is_map_style, make_loader
from .optim import build_optimizer, make_adam
from .records import (
    MetricAccumulator,
    batch_size_of,
    log_epoch,
    progress_bar,
    to_device,
    write_metrics,
    write_run_config,
)
from .resume import (
    set_aside_earlier_run,
)
from .schedule import lr_factor, total_steps
from .step import StepContext

__all__ = [
    "NonFiniteLossError",
    "StepContext",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
    "make_adam",
]

log = logging.getLogger("dgm_ext.train")


class Trainer:
    """Train a model following the contract of this module (see the module docstring:
    run directory, resume, ``resume=False``, unreadable checkpoints, distributed runs)."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainerConfig,
        callbacks: Sequence[Callback] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(config, TrainerConfig):
            raise TypeError(f"config must be a TrainerConfig, got {type(config).__name__}")
        if not callable(getattr(model, "train_step", None)) and not callable(
            getattr(model, "training_step", None)
        ):
            raise TypeError(
                f"model {type(model).__name__} must define training_step(batch) -> dict with "
                "'loss' (or a custom train_step(batch, ctx))"
            )
        self.model = model
        self.config = config
        self.callbacks = list(callbacks or [])
        keys = [c.state_key for c in self.callbacks if isinstance(c, Callback)]
        if len(keys) != len(self.callbacks):
            raise TypeError("callbacks must be dgm_ext.train.Callback instances")
        if len(set(keys)) != len(keys):
            raise ValueError(
                f"two callbacks share a state_key ({sorted(keys)}): give each a distinct "
                "state_key so that their states do not overwrite each other in checkpoints"
            )
        self.run_dir = Path(config.run_dir)
        self.checkpoint_dir = self.run_dir / "checkpoints"
        self.device = self._resolve_device(config.device)
        self.model.to(self.device)
        self._custom_step = callable(getattr(model, "train_step", None))
        self.optimizers = self._configure_optimizers()
        self.ema: ModelEMA | None = None
        self._ema_optimizers: set[int] = set()  # ids of optimisers that move the EMA's module
        self._ema_due = False
        if config.ema_decay is not None:
            self.ema = self._configure_ema(config.ema_decay)
            tracked = {id(p) for p in self.ema.module.parameters()}
            self._ema_optimizers = {
                id(o)
                for o in self.optimizers
                if any(id(p) in tracked for g in o.param_groups for p in g["params"])
            }
        if config.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter  # noqa: F401
            except ImportError as exc:
                raise ImportError(
                    "TrainerConfig.tensorboard=True needs the optional 'tensorboard' package "
                    "(pip install tensorboard)"
                ) from exc
        # training state (saved in checkpoints)
        self.epoch = 0  # completed epochs
        self.global_step = 0
        self.batch_in_epoch = 0
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.history: list[dict[str, float]] = []
        self._epoch_time = 0.0
        self._acc: MetricAccumulator | None = None
        # distributed
        self.rank, self.world_size = 0, 1
        self._owns_process_group = False
        self._ddp: DistributedDataParallel | None = None
        self._reduce_grads_manually = False
        self._tb = None
        self._checkpoints = CheckpointConnector(self)
        self._started = False  # fit() has run once: resume=False no longer sets files aside
        self._ctx = StepContext(self)
        self._compiled: CompiledStep | None = None
        if self._custom_step and (config.accumulate_grad_batches > 1 or config.precision == "16"):
            raise ValueError(
                f"{type(model).__name__} defines its own train_step(batch, ctx): "
                "TrainerConfig.accumulate_grad_batches > 1 and precision='16' need the "
                "default step (training_step); use precision='bf16', or accumulate inside "
                "train_step"
            )
        # fp16: gradients scaled against underflow (its state is in every checkpoint)
        self._scaler: torch.amp.GradScaler | None = (
            torch.amp.GradScaler(self.device.type) if config.precision == "16" else None
        )
        # the configured learning rate of every group, which the schedule multiplies
        self.base_lrs = [[float(g["lr"]) for g in o.param_groups] for o in self.optimizers]
        self._total_steps: int | None = None
        self._scheduled = config.lr_schedule not in (None, "constant") or config.warmup_steps > 0
        if config.compile_step and self._custom_step:
            raise ValueError(
                f"TrainerConfig.compile_step compiles the default step around "
                f"training_step; {type(model).__name__} defines its own train_step(batch, "
                "ctx) (compile inside it instead)"
            )

    # ------------------------------------------------------------------ setup
    _resolve_device = staticmethod(parallel.resolve_device)

    def _configure_optimizers(self) -> list[torch.optim.Optimizer]:
        fn = getattr(self.model, "configure_optimizers", None)
        opts = (
            fn(self.config)
            if callable(fn)
            else build_optimizer(self.model.parameters(), self.config)
        )
        if isinstance(opts, torch.optim.Optimizer):
            opts = [opts]
        opts = list(opts)
        if not opts or not all(isinstance(o, torch.optim.Optimizer) for o in opts):
            raise TypeError("configure_optimizers must return an Optimizer or a list of them")
        if len(opts) > 1 and not self._custom_step:
            raise TypeError(
                f"{type(self.model).__name__}.configure_optimizers returned {len(opts)} "
                "optimisers; a model with several optimisers must define train_step(batch, ctx)"
            )
        return opts

    def _configure_ema(self, decay: float) -> ModelEMA:
        model = self.model
        build = getattr(model, "configure_ema", None)
        if callable(build):
            ema = build(decay)
            if not isinstance(ema, ModelEMA):
                raise TypeError(
                    f"{type(model).__name__}.configure_ema must return a ModelEMA, got "
                    f"{type(ema).__name__}"
                )
            return ema
        target = model.ema_module() if callable(getattr(model, "ema_module", None)) else model
        return ModelEMA(target, decay)

    @property
    def is_main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    def _init_distributed(self) -> None:
        self.rank, self.world_size, owns = parallel.init_process_group(self.device)
        self._owns_process_group = self._owns_process_group or owns

    def _comm_device(self) -> torch.device:
        return parallel.comm_device(self.world_size, self.device)

    def _setup_parallel(self) -> None:
        self._ddp, self._reduce_grads_manually = None, False
        if self.world_size == 1:
            return
        if self._custom_step:
            # the model drives its own backward passes: average gradients in ctx.step and
            # start from rank 0's weights (as DDP would)
            self._reduce_grads_manually = True
            parallel.broadcast_from_rank0(self.model.state_dict().values())
        else:
            self._ddp = parallel.wrap_ddp(
                self.model, self.device, self.config.find_unused_parameters
            )
        if self.ema is not None:
            # the EMA was copied from this rank's own weights before rank 0's were broadcast
            # (or loaded from the same checkpoint on every rank): every rank starts from rank
            # 0's shadow, so validation under the EMA sees one model
            parallel.broadcast_from_rank0(self.ema.shadow.values())

    # ---------------------------------------------------------------- guards
    def _check_finite(self, value: Tensor, name: str) -> None:
        shown = describe_non_finite(value, self.rank, self.world_size, self._comm_device())
        if shown is not None:
            self._raise_non_finite(name, shown, self.global_step)

    def _raise_non_finite(self, name: str, shown: str, step: int) -> None:
        """Raise :class:`NonFiniteLossError` for 0-based global ``step`` of this epoch."""
        epoch, step = self.epoch + 1, step + 1
        msg, path = non_finite_message(
            name, shown, epoch, step, self._checkpoints.last_good, self.world_size
        )
        raise NonFiniteLossError(msg, name=name, epoch=epoch, step=step, checkpoint=path)

    def _all_reduce_grads(self, params: Sequence[Tensor]) -> None:
        """Average ``.grad`` of ``params`` over ranks."""
        parallel.all_reduce_grads(params, self.world_size, self._comm_device())

    # ------------------------------------------------------------- the loop
    def _build_compiled_step(self) -> None:
        if self.world_size > 1:
            raise ValueError(
                "TrainerConfig.compile_step is not supported with several processes yet "
                f"(world size {self.world_size}); train without it under torchrun"
            )
        cfg = self.config
        self._compiled = CompiledStep(
            self.model,
            self.optimizers[0],
            mode=cfg.compile_mode,
            grad_clip=cfg.grad_clip,
            check_grads=cfg.check_grads,
            device=self.device,
            check_now=self._check_finite,
            raise_non_finite=lambda name, value, step: self._raise_non_finite(
                name, f"{value}", step
            ),
        )

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision of the forward pass (``config.precision``); the dgm_ext ops run in
        float32 under it (see :mod:`dgm_ext.ops`)."""
        p = self.config.precision
        if p == "32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if p == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def _backward(self, loss: Tensor, retain_graph: bool = False) -> None:
        if self._scaler is not None:
            loss = self._scaler.scale(loss)
        loss.backward(retain_graph=retain_graph)

    def _apply_lr_schedule(self) -> None:
        """Set every group's learning rate for the coming optimisation step."""
        f = lr_factor(self.config, self.global_step, self._total_steps)
        for opt, bases in zip(self.optimizers, self.base_lrs, strict=True):
            for g, base in zip(opt.param_groups, bases, strict=True):
                g["lr"] = base * f

    def _check_deferred(self) -> None:
        """Raise for a non-finite step the compiled step recorded on the device."""
        if self._compiled is not None:
            self._compiled.check()

    def _train_step(self, batch: Any, i: int = 0, n: int = 1) -> Mapping[str, Tensor]:
        """One batch: batch ``i`` of an accumulation window of ``n`` (the optimiser steps
        after the last one)."""
        if self._compiled is not None:
            out = self._compiled(batch, self.global_step)
            if id(self.optimizers[0]) in self._ema_optimizers:
                self._ema_due = True
            if not isinstance(out, Mapping) or "loss" not in out:
                raise TypeError(
                    f"{type(self.model).__name__}.training_step must return a dict with a "
                    f"scalar 'loss', got {type(out).__name__}"
                )
            return out
        if self._custom_step:
            if self._reduce_grads_manually:
                parallel.broadcast_from_rank0(self.model.buffers())
            with self._autocast():
                out = self.model.train_step(batch, self._ctx)
            if not isinstance(out, Mapping):
                raise TypeError(
                    f"{type(self.model).__name__}.train_step must return a dict of scalars"
                )
            return out
        # DDP averages gradients at the window's last backward only
        no_sync = self._ddp is not None and i < n - 1
        with self._ddp.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[union-attr]
            with self._autocast():
                if self._ddp is not None:
                    out = self._ddp("training_step", batch)
                else:
                    out = self.model.training_step(batch)
            if not isinstance(out, Mapping) or "loss" not in out:
                raise TypeError(
                    f"{type(self.model).__name__}.training_step must return a dict with a "
                    f"scalar 'loss', got {type(out).__name__}"
                    + (f" with keys {sorted(out)}" if isinstance(out, Mapping) else "")
                )
            opt = self.optimizers[0]
            if n == 1:
                self._ctx.step(opt, out["loss"])
                return out
            # accumulation: the window's gradient is the mean of its batches' gradients
            self._check_finite(out["loss"], "loss")
            if i == 0:
                opt.zero_grad(set_to_none=True)
            self._backward(out["loss"] / n)
        if i == n - 1:
            self._ctx._apply(opt, "loss")
        return out

    @torch.no_grad()
    def _validate(self, val_set: Any) -> dict[str, float]:
        model = self.model
        fn = getattr(model, "validation_step", None)
        if not callable(fn):
            fn = model.training_step
        loader = make_loader(val_set, self.config, self.rank, self.world_size, train=False)
        acc = MetricAccumulator()
        was_training = model.training
        model.eval()
        ema_ctx = self.ema.applied() if self.ema is not None else contextlib.nullcontext()
        try:
            with ema_ctx:
                for batch in loader:
                    batch = to_device(batch, self.device)
                    with self._autocast():
                        out = fn(batch)
                    acc.add(out, batch_size_of(batch), "validation_step")
        finally:
            model.train(was_training)
        return acc.reduce("val_", self.world_size, self._comm_device())

    def _finished(self) -> bool:
        cfg = self.config
        return (
            self.stopped_early
            or (cfg.epochs is not None and self.epoch >= cfg.epochs)
            or (cfg.max_steps is not None and self.global_step >= cfg.max_steps)
        )

    def _update_best(self, row: dict[str, float]) -> bool:
        cfg = self.config
        m = row.get(cfg.monitor)
        if m is None:
            if cfg.patience is not None:
                raise ValueError(
                    f"TrainerConfig.monitor={cfg.monitor!r} is not among the epoch metrics "
                    f"{sorted(row)} (early stopping needs it; pass val_set or change monitor)"
                )
            return False
        if not math.isfinite(m):
            self._check_finite(torch.tensor(m), cfg.monitor)
        if self.best is None:
            better = True
        elif cfg.monitor_mode == "min":
            better = m < self.best - cfg.min_delta
        else:
            better = m > self.best + cfg.min_delta
        if better:
            self.best, self.best_epoch, self.bad_epochs = float(m), int(row["epoch"]), 0
            return True
        self.bad_epochs += 1
        if cfg.patience is not None and self.bad_epochs >= cfg.patience:
            self.stopped_early = True
            log.info(
                "early stopping after epoch %d: %s has not improved for %d epochs (best %.6g "
                "at epoch %s)",
                row["epoch"], cfg.monitor, self.bad_epochs, self.best, self.best_epoch,
            )  # fmt: skip
        return False

    def _run_epoch(self, loader: Any, val_set: Any) -> None:
        cfg = self.config
        e = self.epoch
        loader.set_epoch(e, start_batch=self.batch_in_epoch)
        n_batches = _num_batches(loader)  # None: a loader without a length
        if n_batches == 0:
            if isinstance(loader, IterableBatches):
                raise ValueError("train_set has no batches (its len() is 0)")
            raise ValueError(
                f"train_set yields no batch per process (size {len(loader.dataset)}, batch_size "
                f"{cfg.batch_size}, world_size {self.world_size}, drop_last {cfg.drop_last})"
            )
        if self.batch_in_epoch == 0 or self._acc is None:
            acc, self._epoch_time = MetricAccumulator(), 0.0
        else:
            acc = self._acc
        self._acc = None
        total = f"/{cfg.epochs}" if cfg.epochs is not None else ""
        bar = progress_bar(n_batches, self.batch_in_epoch, f"epoch {e + 1}{total}",
                           cfg.progress and self.is_main)  # fmt: skip
        k = cfg.accumulate_grad_batches
        self._total_steps = total_steps(cfg, -(-n_batches // k) if n_batches else 0)
        seen = self.batch_in_epoch
        t0 = time.perf_counter()
        self.model.train()
        try:
            for batch in loader:
                # batch i of an accumulation window of n (windows start with the epoch)
                i = self.batch_in_epoch % k
                n = k if n_batches is None else min(k, n_batches - (self.batch_in_epoch - i))
                if i == 0 and self._scheduled:
                    self._apply_lr_schedule()
                batch = to_device(batch, self.device)
                out = self._train_step(batch, i, n)
                acc.add(out, batch_size_of(batch), "training_step")
                self.batch_in_epoch += 1
                if i < n - 1:
                    bar.update(1)
                    continue
                self.global_step += 1
                if self.ema is not None and self._ema_due:
                    self.ema.update()
                self._ema_due = False
                bar.update(1)
                if self.global_step % cfg.log_every == 0:
                    self._log_step(out, bar)
                if cfg.max_steps is not None and self.global_step >= cfg.max_steps:
                    break
                if (
                    cfg.checkpoint_every
                    and self.global_step % cfg.checkpoint_every == 0
                    and (n_batches is None or self.batch_in_epoch < n_batches)
                ):
                    self._epoch_time += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._check_deferred()
                    self._checkpoints.save(acc)
        finally:
            bar.close()
        if self.batch_in_epoch == seen == 0:
            raise ValueError("train_set yielded no batch in this epoch")
        self._check_deferred()
        row: dict[str, float] = {"epoch": e + 1, "step": self.global_step}
        row.update(acc.reduce("train_", self.world_size, self._comm_device()))
        if val_set is not None:
            val = self._validate(val_set)
            row.update(val)
            for cb in self.callbacks:
                cb.on_validation_end(self, dict(val))
        hook = getattr(self.model, "on_epoch_end", None)
        if callable(hook):
            extra = hook(self, e)
            if extra:
                row.update({k: float(v) for k, v in extra.items()})
        for cb in self.callbacks:
            extra = cb.on_epoch_end(self, row)
            if extra:
                row.update({k: float(v) for k, v in extra.items()})
        for i, opt in enumerate(self.optimizers):
            row["lr" if i == 0 else f"lr_{i}"] = float(opt.param_groups[0]["lr"])
        self._epoch_time += time.perf_counter() - t0
        row["time_s"] = self._epoch_time
        if not math.isfinite(row.get("val_loss", 0.0)):
            self._check_finite(torch.tensor(row["val_loss"]), "validation loss")
        improved = self._update_best(row)
        self.epoch += 1
        self.batch_in_epoch = 0
        self.history.append(row)
        self._checkpoints.save(None, improved=improved)
        if self.is_main:
            self._write_metrics()
            log_epoch(row, self.config.progress, self._tb)

    # -------------------------------------------------------------- logging
    def _log_step(self, out: Mapping[str, Any], bar: Any) -> None:
        self._check_deferred()
        key = "loss" if "loss" in out else next(iter(out), None)
        if key is None:
            return
        value = float(out[key].detach()) if isinstance(out[key], Tensor) else float(out[key])
        if self.is_main:
            bar.set_postfix({key: f"{value:.4g}"}, refresh=False)
            if self._tb is not None:
                self._tb.add_scalar(f"step/train_{key}", value, self.global_step)

    def _write_metrics(self) -> None:
        write_metrics(self.run_dir, self.history)

    def _check_unsized(self, loader: IterableBatches) -> None:
        """What needs the number of batches per epoch, refused for loaders without one."""
        if loader.num_batches is not None:
            return
        cfg = self.config
        if cfg.accumulate_grad_batches > 1:
            raise ValueError(
                "accumulate_grad_batches > 1 needs a train_set with a length (the last window "
                "of an epoch is averaged over its batches); this one has no len()"
            )
        if cfg.lr_schedule == "cosine" and cfg.max_steps is None:
            raise ValueError(
                "lr_schedule='cosine' over epochs needs a train_set with a length; this one "
                "has no len(): set TrainerConfig.max_steps"
            )

    # ----------------------------------------------------------------- fit
    def fit(self, train_set: Any, val_set: Any = None) -> list[dict[str, float]]:
        """Train; resumes automatically from ``<run_dir>/checkpoints/last.pt`` if present.

        ``train_set`` / ``val_set``: map-style data sets (``__len__``/``__getitem__``;
        :class:`dgm_ext.data.ImageDataset` and ``TensorDataset`` use the fast in-memory path),
        batched by the Trainer (resumable order, sharded across ranks), or a ``DataLoader``,
        an ``IterableDataset`` or any iterable of batches, used as given
        (:mod:`dgm_ext.train.loaders`). Returns the per-epoch metrics rows (including those of
        earlier, resumed sessions).
        """
        for name, ds in (("train_set", train_set), ("val_set", val_set)):
            if ds is not None or name == "train_set":
                make_loader(ds, self.config, 0, 1, train=name == "train_set")  # type check
        if not is_map_style(train_set):
            self._check_unsized(make_loader(train_set, self.config, 0, 1, train=True))
        if val_set is not None and not any(
            callable(getattr(self.model, m, None)) for m in ("validation_step", "training_step")
        ):
            raise TypeError(
                f"val_set was given but {type(self.model).__name__} defines neither "
                "validation_step(batch) nor training_step(batch)"
            )
        self._init_distributed()
        try:
            if not self.config.resume and not self._started and self.is_main:
                set_aside_earlier_run(self.run_dir)
            self._started = True
            if not self._checkpoints.restore():
                seed_everything(self.config.seed + self.rank)
            if self.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                write_run_config(self.run_dir, self.config, self.model, self.world_size,
                                 self.device)  # fmt: skip
                if self.history:
                    self._write_metrics()
                if self.config.tensorboard:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
            self._setup_parallel()
            if self.config.compile_step and self._compiled is None:
                self._build_compiled_step()
            loader = make_loader(train_set, self.config, self.rank, self.world_size, train=True)
            for cb in self.callbacks:
                cb.on_fit_start(self)
            try:
                while not self._finished():
                    self._run_epoch(loader, val_set)
            except KeyboardInterrupt as exc:
                if isinstance(exc, TrainingInterrupted):
                    raise
                raise TrainingInterrupted(
                    self.epoch, self.global_step, self.batch_in_epoch, self._checkpoints.last_good
                ) from exc
            for cb in self.callbacks:
                cb.on_fit_end(self)
            if self.world_size > 1:
                dist.barrier()
            return [dict(r) for r in self.history]
        finally:
            if self._tb is not None:
                self._tb.close()
                self._tb = None
            self._ddp = None
            if self._owns_process_group and dist.is_initialized():
                dist.destroy_process_group()
                self._owns_process_group = False


def _num_batches(loader: Any) -> int | None:
    """Batches per epoch of this process (``None``: a loader without a length)."""
    if isinstance(loader, IterableBatches):
        return loader.num_batches
    return len(loader.sampler)
