"""The training engine shared by all dgm_ext models.

Model contract
--------------
A model is an ``nn.Module`` with

* ``training_step(batch) -> dict[str, Tensor]`` containing a scalar ``"loss"`` to minimise;
  every scalar entry is logged as ``train_<name>`` (epoch mean weighted by batch size);
* optionally ``validation_step(batch) -> dict[str, Tensor]`` of per-batch means, logged as
  ``val_<name>`` (``val_loss`` from ``"loss"``); without it, ``training_step`` is run
  under ``torch.no_grad()`` in eval mode on the validation set.

``batch`` is what the dataset yields (for :class:`dgm_ext.data.ImageDataset`: a tuple
``(images, labels)``), already moved to the trainer's device.

Extension points (all optional methods of the model):

* ``configure_optimizers(config) -> Optimizer | list[Optimizer]``: default is one Adam/AdamW
  over all parameters built from ``config`` (see :func:`build_optimizer`).
* ``train_step(batch, ctx: StepContext) -> dict[str, Tensor]``: replaces the default step
  (needed with several optimisers, e.g. GANs). Call ``ctx.step(optimizer, loss)`` for each
  update: it checks the loss is finite, zeroes that optimiser's gradients, backpropagates,
  averages gradients across processes, clips and steps. Return detached scalars to log.
* ``ema_module() -> nn.Module``: the sub-module whose EMA is kept when
  ``config.ema_decay`` is set (default: the whole model), e.g. a GAN generator.
* ``configure_ema(decay) -> ModelEMA``: build the EMA object yourself (e.g. a GAN's
  :class:`dgm_ext.gan.GeneratorEMA`, which copies BatchNorm buffers instead of averaging).
  The EMA is updated after each training step in which an optimiser holding one of its
  module's parameters stepped, so with several critic steps per generator step a generator
  EMA advances once per generator update.
* ``on_epoch_end(trainer, epoch) -> dict[str, float] | None``: called on every process
  after validation; returned numbers are added to the epoch's metrics row (rank 0's are
  logged). Use ``trainer.is_main`` / ``trainer.run_dir`` to write figures.

Run directory
-------------
``config.json``, ``metrics.jsonl`` / ``metrics.csv`` (one row per epoch: ``epoch``,
``step``, ``train_*``, ``val_*``, ``lr``, ``time_s``), ``checkpoints/last.pt`` (every
epoch, and every ``checkpoint_every`` steps), ``checkpoints/best.pt`` (best ``monitor``),
optional ``checkpoints/epoch-XXXX.pt`` and ``tb/`` (TensorBoard).

Reproducibility: at the start of a fresh run the Python, numpy and torch RNGs are seeded
with ``config.seed + rank``; data order is a pure function of ``(seed, epoch)``; a run
resumed from ``last.pt`` restores model, optimisers, EMA, RNG states, counters and metric
history, so it continues bit-identically (single process, deterministic kernels,
``num_workers=0``, same ``batch_size``/``seed``). To train longer, rerun with a larger
``epochs``/``max_steps``; a run that stopped early stays stopped (start a new ``run_dir``,
or pass ``resume=False`` to start over in the same one). Nothing is written after a
:class:`NonFiniteLossError`, so ``last.pt`` remains the last good state.

``resume=False`` never deletes anything: if ``run_dir`` holds an earlier run, its
``checkpoints/``, ``metrics.jsonl``/``metrics.csv``, ``config.json`` and ``tb/`` are moved
into ``<run_dir>/old-<YYYYmmdd-HHMMSS>/`` (a warning names it) and training starts from
scratch.

A ``last.pt`` that cannot be read (truncated by a full disk, a copy that stopped half way)
is never overwritten or deleted: the trainer resumes from the newest intact checkpoint it
wrote besides it (``epoch-XXXX.pt`` with ``keep_last``, or ``best.pt``, compared by training
step), with a warning that names the unreadable file and the one used, and renames the
unreadable file to ``last.pt.corrupt-<YYYYmmdd-HHMMSS>`` just before writing the next
``last.pt``. If no intact checkpoint exists it raises a one-line ``RuntimeError`` naming the
unreadable file and every checkpoint it tried, and leaves the files as they are; start
fresh with ``resume=False`` (which moves them aside, see above) or another ``run_dir``.

Distributed: under ``torchrun`` (``WORLD_SIZE > 1``) the trainer initialises the process
group (NCCL on CUDA, gloo on CPU) unless already initialised (and then destroys it when
``fit`` returns or raises), wraps the model in ``DistributedDataParallel`` (for custom
``train_step`` models gradients are averaged by ``ctx.step`` instead), shards every epoch
like ``DistributedSampler`` (global batch = ``world_size * batch_size``), averages metrics
over all ranks with ``all_reduce`` and writes files from rank 0 only. A non-finite loss on
any rank stops every rank at the same step with the same :class:`NonFiniteLossError` (naming
the rank(s) and value(s)). Checkpoints hold every rank's RNG states and running epoch sums,
so a resume with the same number of processes is exact; with another number the RNGs are
reseeded (a warning says so). On CUDA each process uses ``cuda:<LOCAL_RANK>``; a process
whose ``LOCAL_RANK`` has no visible GPU is refused with a ``RuntimeError`` (use
``device="cpu"`` to run the processes on the CPU with gloo).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from dgm_ext._console import CONSOLE_DONE
from dgm_ext.data.dataset import BatchLoader

from .checkpoint import (
    _fsync_dir,
    atomic_copy,
    atomic_save,
    get_rng_state,
    load_checkpoint,
    seed_everything,
    set_rng_state,
)
from .compiled import CompiledStep
from .config import TrainerConfig
from .ema import ModelEMA
from .resume import (
    ModelMismatchError,
    apply_optimizer_hyperparameters,
    changed_settings,
    check_same_model,
    describe_changes,
    optimizer_hyperparameters,
)

__all__ = [
    "NonFiniteLossError",
    "StepContext",
    "Trainer",
    "TrainingInterrupted",
    "build_optimizer",
]

log = logging.getLogger("dgm_ext.train")

CHECKPOINT_FORMAT = "dgm_ext.train/1"


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (``KeyboardInterrupt``) during :meth:`Trainer.fit`, with where training stood
    and the checkpoint a rerun resumes from; ``str()`` is a one-line report.

    A ``KeyboardInterrupt`` subclass, so code that stops on Ctrl-C still does.
    """

    def __init__(
        self, epoch: int, step: int, batch_in_epoch: int, checkpoint: tuple[Path, int, int] | None
    ) -> None:
        self.epoch, self.step, self.batch_in_epoch = epoch, step, batch_in_epoch
        self.checkpoint = checkpoint
        if batch_in_epoch:
            where = f"interrupted in epoch {epoch + 1} after {batch_in_epoch} of its batches"
        elif epoch:
            where = f"interrupted after epoch {epoch}"  # e.g. while its checkpoint was written
        else:
            where = "interrupted in epoch 1"
        where += f" (step {step})"
        if checkpoint is None:
            tail = "no checkpoint was written yet; rerunning starts over"
        else:
            path, ck_epoch, ck_step = checkpoint
            tail = (
                f"the last checkpoint is {path} (epoch {ck_epoch}, step {ck_step}); rerun "
                "the same command (or fit() with the same run_dir) to resume from it"
            )
        super().__init__(f"{where}; {tail}")


class NonFiniteLossError(FloatingPointError):
    """A loss (or gradient norm) became NaN/Inf; training stopped before applying the step.

    Attributes: ``name`` (what was non-finite), ``epoch`` (1-based), ``step`` (1-based
    global step), ``checkpoint`` (path of the last good checkpoint, or ``None``).
    """

    def __init__(
        self, message: str, *, name: str, epoch: int, step: int, checkpoint: Path | None
    ) -> None:
        super().__init__(message)
        self.name, self.epoch, self.step, self.checkpoint = name, epoch, step, checkpoint


def make_adam(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    adamw: bool = False,
    fused: bool = True,
    **kwargs: Any,
) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` (``AdamW`` with ``adamw``) over ``params`` with ``kwargs``.

    ``fused`` (default) asks for torch's fused kernel (``fused=True``: one pass over all
    parameters instead of ~10 tensor ops each; on a 2-core CPU ~8x faster for the vae-mlp
    model, whose default Adam update is a fifth of its step) when every parameter is a
    floating tensor on a CPU or CUDA device; otherwise, or when this torch build refuses it,
    the default implementation. Results match the default to rounding, not bit for bit.
    """
    cls = torch.optim.AdamW if adamw else torch.optim.Adam
    params = [dict(g, params=list(g["params"])) if isinstance(g, dict) else g for g in params]
    if fused and "fused" not in kwargs and "foreach" not in kwargs:
        tensors = [p for g in params for p in (g["params"] if isinstance(g, dict) else [g])]
        if tensors and all(
            isinstance(p, Tensor) and p.is_floating_point() and p.device.type in ("cpu", "cuda")
            for p in tensors
        ):
            with contextlib.suppress(RuntimeError, ValueError, TypeError):
                return cls(params, fused=True, **kwargs)
    return cls(params, **kwargs)


def build_optimizer(
    params: Iterable[Tensor] | Iterable[dict[str, Any]],
    config: TrainerConfig,
    **overrides: Any,
) -> torch.optim.Optimizer:
    """Adam or AdamW (``config.optimizer``) with ``config.lr``, ``betas``, ``weight_decay`` and
    ``eps``, fused when ``config.fused_optimizer`` (see :func:`make_adam`); keyword
    ``overrides`` (e.g. ``lr=4e-4, betas=(0.0, 0.99)``) take precedence."""
    kwargs = {
        "lr": config.lr,
        "betas": tuple(config.betas),
        "weight_decay": config.weight_decay,
        "eps": config.eps,
    }
    kwargs.update(overrides)
    return make_adam(
        params, adamw=config.optimizer == "adamw", fused=config.fused_optimizer, **kwargs
    )


def _batch_size(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and batch:
        return _batch_size(batch[0])
    return 1


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, tuple):
        return tuple(_to_device(b, device) for b in batch)
    if isinstance(batch, list):
        return [_to_device(b, device) for b in batch]
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class _Accumulator:
    """Batch-size-weighted sums of scalar metrics (kept on device: no sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, metrics: Mapping[str, Any], n: int, where: str) -> None:
        if not isinstance(metrics, Mapping):
            raise TypeError(f"{where} must return a dict of scalar tensors, got "
                            f"{type(metrics).__name__}")  # fmt: skip
        for k, v in metrics.items():
            t = v.detach() if isinstance(v, Tensor) else torch.tensor(float(v))
            if t.numel() != 1:
                raise ValueError(
                    f"{where} returned {k!r} with shape {tuple(t.shape)}; metrics must be scalars"
                )
            # float64 sums (float32 where the device has no float64, e.g. Apple MPS)
            acc_dtype = torch.float32 if t.device.type == "mps" else torch.float64
            t = t.reshape(()).to(acc_dtype) * n
            self.sums[k] = self.sums[k] + t if k in self.sums else t
            self.counts[k] = self.counts.get(k, 0) + n

    def reduce(self, prefix: str, world_size: int, device: torch.device) -> dict[str, float]:
        names = sorted(self.sums)
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, names)
            names = sorted(set().union(*gathered))
        if not names:
            return {}
        vals = torch.zeros(2 * len(names), dtype=torch.float64, device=device)
        for i, k in enumerate(names):
            if k in self.sums:
                vals[i] = self.sums[k].to(device, torch.float64)
                vals[len(names) + i] = self.counts[k]
        if world_size > 1:
            dist.all_reduce(vals)
        vals = vals.cpu().tolist()
        out = {}
        for i, k in enumerate(names):
            count = vals[len(names) + i]
            out[prefix + k] = vals[i] / count if count else float("nan")
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: v.cpu() for k, v in self.sums.items()}, "counts": dict(self.counts)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], device: torch.device) -> _Accumulator:
        acc = cls()
        acc.sums = {k: v.to(device) for k, v in state["sums"].items()}
        acc.counts = {k: int(v) for k, v in state["counts"].items()}
        return acc


class _StepModule(nn.Module):
    """Routes ``forward(method, batch)`` to ``model.<method>(batch)`` so that DDP's
    gradient synchronisation (set up in ``forward``) covers ``training_step``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, method: str, batch: Any) -> Any:
        return getattr(self.model, method)(batch)


class StepContext:
    """What a custom ``train_step(batch, ctx)`` uses to update parameters."""

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The optimisers returned by ``configure_optimizers``, in order."""
        return self._trainer.optimizers

    @property
    def global_step(self) -> int:
        """Number of completed training steps before this one."""
        return self._trainer.global_step

    @property
    def epoch(self) -> int:
        """0-based index of the current epoch."""
        return self._trainer.epoch

    @property
    def config(self) -> TrainerConfig:
        """The trainer's configuration."""
        return self._trainer.config

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        loss: Tensor,
        *,
        name: str = "loss",
        retain_graph: bool = False,
    ) -> None:
        """One update of ``optimizer`` on ``loss``: finite check (raises
        :class:`NonFiniteLossError`), ``zero_grad``, ``backward``, cross-process gradient
        averaging, clipping to ``config.grad_clip``, optional gradient check, ``step``."""
        t = self._trainer
        t._check_finite(loss, name)
        optimizer.zero_grad(set_to_none=True)
        loss.backward(retain_graph=retain_graph)
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if t._reduce_grads_manually:
            t._all_reduce_grads(params)
        cfg = t.config
        if cfg.grad_clip is not None or cfg.check_grads:
            max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
            norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            if cfg.check_grads:
                t._check_finite(norm, f"gradient norm of {name}")
        optimizer.step()
        if id(optimizer) in t._ema_optimizers:
            t._ema_due = True


def resolve_device(device: str | None) -> torch.device:
    """``config.device``, or ``cuda:<LOCAL_RANK>`` when CUDA is available, else the CPU
    (``"cuda"`` without an index also means ``cuda:<LOCAL_RANK>``). Refuses a CUDA
    ordinal that is not visible, before any CUDA call is made with it."""
    local_rank = os.environ.get("LOCAL_RANK")
    if device is None:
        if not torch.cuda.is_available():
            return torch.device("cpu")
        dev = torch.device("cuda", int(local_rank or 0))
    else:
        dev = torch.device(device)
        if dev.type != "cuda":
            return dev
    from_rank = dev.index is None or device is None
    if dev.index is None:
        dev = torch.device("cuda", int(local_rank or 0))
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if dev.index >= count:
        if from_rank and local_rank is not None:
            what = f"LOCAL_RANK={local_rank}, so this process would use cuda:{dev.index},"
        else:
            what = f"TrainerConfig.device={device!r} asks for cuda:{dev.index}"
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        shown = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        gpus = f"{count} CUDA device is" if count == 1 else f"{count} CUDA devices are"
        cpu = (
            "to train on the CPU with the gloo backend instead, pass "
            "TrainerConfig(device='cpu') (on the command line: dgm-ext train/reproduce "
            "--device cpu)."
        )
        if count:
            cpu = (
                "Start at most one process per visible GPU (torchrun "
                f"--nproc_per_node={count}), or, {cpu}"
            )
        else:
            cpu = cpu[0].upper() + cpu[1:]
        raise RuntimeError(f"{what} but only {gpus} visible{shown}. {cpu}")
    return dev


class Trainer:
    """Train a model following the contract of this module (see the module docstring:
    run directory, resume, ``resume=False``, unreadable checkpoints, distributed runs)."""

    def __init__(self, model: nn.Module, config: TrainerConfig) -> None:
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
        self._acc: _Accumulator | None = None
        # distributed
        self.rank, self.world_size = 0, 1
        self._owns_process_group = False
        self._ddp: DistributedDataParallel | None = None
        self._reduce_grads_manually = False
        self._tb = None
        self._last_good: tuple[Path, int, int] | None = None
        self._corrupt_last: tuple[Path, Path] | None = None  # (unreadable last.pt, its new name)
        self._started = False  # fit() has run once: resume=False no longer sets files aside
        self._ctx = StepContext(self)
        self._compiled: CompiledStep | None = None
        if config.compile_step and self._custom_step:
            raise ValueError(
                f"TrainerConfig.compile_step compiles the default step around "
                f"training_step; {type(model).__name__} defines its own train_step(batch, "
                "ctx) (compile inside it instead)"
            )

    # ------------------------------------------------------------------ setup
    _resolve_device = staticmethod(resolve_device)

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
        if dist.is_available() and dist.is_initialized():
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            if not dist.is_available():
                raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
            self._owns_process_group = True
            self.rank, self.world_size = dist.get_rank(), dist.get_world_size()
        else:
            self.rank, self.world_size = 0, 1

    def _comm_device(self) -> torch.device:
        if self.world_size > 1 and dist.get_backend() == "nccl":
            return self.device
        return torch.device("cpu")

    def _setup_parallel(self) -> None:
        self._ddp, self._reduce_grads_manually = None, False
        if self.world_size == 1:
            return
        if self._custom_step:
            # the model drives its own backward passes: average gradients in ctx.step and
            # start from rank 0's weights (as DDP would)
            self._reduce_grads_manually = True
            with torch.no_grad():
                for t in self.model.state_dict().values():
                    dist.broadcast(t, 0)
        else:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._ddp = DistributedDataParallel(
                _StepModule(self.model),
                device_ids=ids,
                find_unused_parameters=self.config.find_unused_parameters,
            )
        if self.ema is not None:
            # the EMA was copied from this rank's own weights before rank 0's were broadcast
            # (or loaded from the same checkpoint on every rank): every rank starts from rank
            # 0's shadow, so validation under the EMA sees one model
            with torch.no_grad():
                for t in self.ema.shadow.values():
                    dist.broadcast(t, 0)

    # ------------------------------------------------------------- checkpoints
    def _state(self, acc: _Accumulator | None) -> dict[str, Any]:
        rng = get_rng_state()
        acc_state = acc.state_dict() if acc is not None else None
        if self.world_size > 1:
            gathered: list[Any] = [None] * self.world_size
            dist.all_gather_object(gathered, (rng, acc_state))
            all_rng = [g[0] for g in gathered]
            all_acc = [g[1] for g in gathered] if acc is not None else None
        else:
            all_rng = [rng]
            all_acc = [acc_state] if acc is not None else None
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizers": [o.state_dict() for o in self.optimizers],
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "trainer": {
                "epoch": self.epoch,
                "global_step": self.global_step,
                "batch_in_epoch": self.batch_in_epoch,
                "best": self.best,
                "best_epoch": self.best_epoch,
                "bad_epochs": self.bad_epochs,
                "stopped_early": self.stopped_early,
                "epoch_time": self._epoch_time,
                "world_size": self.world_size,
            },
            "accumulator": acc_state,  # rank 0's (what checkpoints before "accumulators" held)
            "accumulators": all_acc,  # every rank's running sums of a mid-epoch checkpoint
            "history": self.history,
            "rng": all_rng,
            "config": self.config.to_dict(),
        }

    def _save(self, acc: _Accumulator | None, improved: bool = False) -> None:
        state = self._state(acc)  # collective under DDP: every rank calls it
        if self.is_main:
            last = self.checkpoint_dir / "last.pt"
            if self._corrupt_last is not None:
                bad, aside = self._corrupt_last
                if bad.is_file():  # keep the unreadable file for inspection, never overwrite it
                    os.rename(bad, _unused_path(aside))
            atomic_save(state, last)
            if improved:
                atomic_copy(last, self.checkpoint_dir / "best.pt")
            if self.config.keep_last and acc is None:
                atomic_copy(last, self.checkpoint_dir / f"epoch-{self.epoch:04d}.pt")
                kept = sorted(self.checkpoint_dir.glob("epoch-*.pt"))
                for old in kept[: -self.config.keep_last]:
                    old.unlink(missing_ok=True)
        self._corrupt_last = None
        self._last_good = (self.checkpoint_dir / "last.pt", self.epoch, self.global_step)

    def _resume(self) -> bool:
        last = self.checkpoint_dir / "last.pt"
        if not (self.config.resume and last.is_file()):
            return False
        path, ck = self._load_for_resume(last)
        fmt = ck.get("format")
        if fmt != CHECKPOINT_FORMAT:
            raise ValueError(
                f"{path}: unknown checkpoint format {fmt!r} (this trainer reads "
                f"{CHECKPOINT_FORMAT!r}); resume it with the dgm_ext version that wrote it, or "
                "start fresh with TrainerConfig(resume=False) or another run_dir"
            )
        # everything that can be checked is checked before any state is changed
        check_same_model(ck["model"], self.model, path, self.run_dir)
        if len(ck["optimizers"]) != len(self.optimizers):
            raise ModelMismatchError(
                f"{self.run_dir} holds a run of a different model: {path} holds "
                f"{len(ck['optimizers'])} optimiser states but this model configures "
                f"{len(self.optimizers)}. Train it in a new run_dir (--out), or pass "
                "resume=False (--fresh) to move the earlier run aside and start over."
            )
        fresh_hyper = optimizer_hyperparameters(self.optimizers)
        self.model.load_state_dict(ck["model"])
        for opt, sd in zip(self.optimizers, ck["optimizers"], strict=True):
            opt.load_state_dict(sd)
        # the settings of this run are the ones in force: load_state_dict brought back the
        # checkpoint's learning rate (and betas, eps, weight decay)
        optimizer_notes = apply_optimizer_hyperparameters(self.optimizers, fresh_hyper)
        if self.ema is not None:
            if ck["ema"] is None:
                log.warning("%s has no EMA state; the EMA restarts from the weights", path)
                self.ema = ModelEMA(self.ema.module, self.ema.decay)
            else:
                self.ema.load_state_dict(ck["ema"])
        t = ck["trainer"]
        self.epoch, self.global_step = int(t["epoch"]), int(t["global_step"])
        self.batch_in_epoch = int(t["batch_in_epoch"])
        self.best, self.best_epoch = t["best"], t["best_epoch"]
        self.bad_epochs, self.stopped_early = int(t["bad_epochs"]), bool(t["stopped_early"])
        self._epoch_time = float(t["epoch_time"])
        self.history = [dict(r) for r in ck["history"]]
        self._acc = self._restore_accumulator(ck)
        changes = changed_settings(ck.get("config") or {}, self.config)
        optimizer_notes = [n for n in optimizer_notes if not _implied(n, changes)]
        if changes or optimizer_notes:
            log.warning(
                "%s was written with different settings: %s: the run continues with the "
                "current ones, but not as an exact continuation of the interrupted one",
                path, "; ".join(filter(None, [describe_changes(changes), *optimizer_notes])),
            )  # fmt: skip
        rng = ck["rng"]
        if len(rng) == self.world_size:
            set_rng_state(rng[self.rank])
        else:
            log.warning(
                "%s was written by %d processes, now %d: RNG streams are reseeded, the "
                "continuation is not bit-identical",
                path, len(rng), self.world_size,
            )  # fmt: skip
            seed_everything(self.config.seed + self.rank + 7919 * (self.global_step + 1))
        self._last_good = (path, self.epoch, self.global_step)
        if self.is_main:
            log.info("resumed from %s (epoch %d, step %d)", path, self.epoch, self.global_step)
        return True

    def _restore_accumulator(self, ck: Mapping[str, Any]) -> _Accumulator | None:
        """This rank's running sums of a mid-epoch checkpoint. Written by as many processes:
        each rank takes its own; by a different number: rank 0 takes the sum of all of them
        (the epoch means stay right, as they are sums over all ranks)."""
        per_rank = ck.get("accumulators")
        if per_rank is None:  # written before the per-rank list existed: rank 0's sums only
            per_rank = [ck.get("accumulator")]
        if not any(per_rank):
            return None
        if len(per_rank) == self.world_size:
            own = per_rank[self.rank]
            return _Accumulator.from_state(own, self.device) if own else _Accumulator()
        merged = _Accumulator()
        if self.rank == 0:
            for state in per_rank:
                if not state:
                    continue
                part = _Accumulator.from_state(state, self.device)
                for k, v in part.sums.items():
                    merged.sums[k] = merged.sums[k] + v if k in merged.sums else v
                    merged.counts[k] = merged.counts.get(k, 0) + part.counts[k]
        return merged

    def _load_for_resume(self, last: Path) -> tuple[Path, dict[str, Any]]:
        """``last.pt``, or, when it cannot be read (e.g. truncated by a full disk), the newest
        intact ``epoch-XXXX.pt`` / ``best.pt`` (with a warning); a clear error if none is."""
        try:
            return last, load_checkpoint(last)
        except Exception as exc:  # torch's zip reader / unpickler errors on a damaged file
            reason = _short_error(exc)
        found: list[str] = []
        newest: tuple[tuple[int, int], Path, dict[str, Any]] | None = None
        candidates = sorted(self.checkpoint_dir.glob("epoch-*.pt"), reverse=True)
        candidates.append(self.checkpoint_dir / "best.pt")
        for cand in candidates:
            if not cand.is_file():
                continue
            try:
                ck = load_checkpoint(cand)
            except Exception as exc:
                found.append(f"{cand.name} (unreadable: {_short_error(exc)})")
                continue
            if ck.get("format") != CHECKPOINT_FORMAT or not isinstance(ck.get("trainer"), dict):
                found.append(f"{cand.name} (unknown format {ck.get('format')!r})")
                continue
            t = ck["trainer"]
            key = (int(t["global_step"]), int(t["epoch"]))
            found.append(f"{cand.name} (intact: epoch {key[1]}, step {key[0]})")
            if newest is None or key > newest[0]:
                newest = (key, cand, ck)
        if newest is None:
            checked = "; ".join(found) if found else "no epoch-XXXX.pt or best.pt"
            raise RuntimeError(
                f"cannot resume: {last} is unreadable ({reason}) and no intact checkpoint was "
                f"found in {self.checkpoint_dir} ({checked}). {last} is left as it is. To start "
                "fresh, pass TrainerConfig(resume=False) (the earlier run's files are moved "
                "into <run_dir>/old-<time>/) or use another run_dir."
            )
        (step, epoch), used, ck = newest
        aside = _unused_path(last.with_name(f"{last.name}.corrupt-{_timestamp()}"))
        self._corrupt_last = (last, aside)
        log.warning(
            "%s is unreadable (%s); resuming from %s (epoch %d, step %d), the newest intact "
            "checkpoint. The unreadable file is kept: it is renamed to %s before the next "
            "checkpoint is written.",
            last, reason, used, epoch, step, aside.name,
        )  # fmt: skip
        return used, ck

    def _set_aside_earlier_run(self) -> None:
        """``resume=False`` in a run_dir that holds an earlier run: move its files (never
        delete them) into ``<run_dir>/old-<time>/`` so the new run starts from a clean slate."""
        names = ("checkpoints", "metrics.jsonl", "metrics.csv", "config.json", "tb")
        present = [n for n in names if (self.run_dir / n).exists()]
        if not present:
            return
        dest = _unused_path(self.run_dir / f"old-{_timestamp()}")
        dest.mkdir(parents=True)
        for n in present:
            os.replace(self.run_dir / n, dest / n)
        _fsync_dir(self.run_dir)
        log.warning(
            "resume=False: %s held an earlier run; its %s were moved to %s (nothing was "
            "deleted) and training starts from scratch",
            self.run_dir, ", ".join(present), dest,
        )  # fmt: skip

    # ---------------------------------------------------------------- guards
    def _check_finite(self, value: Tensor, name: str) -> None:
        v = value.detach()
        bad = (~torch.isfinite(v)).any()
        scalar = v.numel() == 1
        if self.world_size > 1:
            # every rank learns which ranks (and, for scalars, which values) were non-finite,
            # so that all of them stop at the same step with the same message
            w = self.world_size
            flags = torch.zeros(2 * w, dtype=torch.float64, device=self._comm_device())
            flags[self.rank] = bad.to(flags.device, torch.float64)
            if scalar:
                flags[w + self.rank] = v.to(flags.device, torch.float64).reshape(())
            dist.all_reduce(flags)
            got = flags.tolist()
            ranks = [r for r in range(w) if got[r] > 0]
            if not ranks:
                return
            shown = (
                ", ".join(
                    f"{got[w + r]} on rank {r}" if scalar else f"non-finite entries on rank {r}"
                    for r in ranks
                )
                + f" of {w}"
            )
        else:
            if not bool(bad):
                return
            shown = f"{v.item()}" if scalar else "non-finite entries"
        self._raise_non_finite(name, shown, self.global_step)

    def _raise_non_finite(self, name: str, shown: str, step: int) -> None:
        """Raise :class:`NonFiniteLossError` for 0-based global ``step`` of this epoch."""
        epoch, step = self.epoch + 1, step + 1
        if self._last_good is not None:
            path, e, s = self._last_good
            where = (
                f"The last good checkpoint, {path} (after epoch {e}, step {s}), is untouched; "
                "rerunning resumes from it (lower the learning rate or enable grad_clip)."
            )
        else:
            path = None
            where = "No checkpoint had been written yet."
        raise NonFiniteLossError(
            f"Non-finite {name} ({shown}) at epoch {epoch}, step {step}; training stopped "
            f"before applying this step{' on every rank' if self.world_size > 1 else ''}. "
            f"{where}",
            name=name,
            epoch=epoch,
            step=step,
            checkpoint=path,
        )

    def _all_reduce_grads(self, params: Sequence[Tensor]) -> None:
        """Average ``.grad`` of ``params`` over ranks (one flat buffer per dtype)."""
        dev = self._comm_device()
        by_dtype: dict[torch.dtype, list[Tensor]] = {}
        for p in params:
            by_dtype.setdefault(p.dtype, []).append(p)
        for ps in by_dtype.values():
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps]
            has = [float(p.grad is not None) for p in ps]
            flags_t = torch.tensor(has, dtype=ps[0].dtype, device=ps[0].device)
            flat = torch.cat([g.reshape(-1) for g in grads] + [flags_t]).to(dev)
            dist.all_reduce(flat)
            flags = flat[-len(ps) :]
            flat = flat[: -len(ps)] / self.world_size
            offset = 0
            for p, f in zip(ps, flags.tolist(), strict=True):
                n = p.numel()
                if f > 0:
                    p.grad = flat[offset : offset + n].view_as(p).to(p.device).clone()
                offset += n

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

    def _check_deferred(self) -> None:
        """Raise for a non-finite step the compiled step recorded on the device."""
        if self._compiled is not None:
            self._compiled.check()

    def _train_step(self, batch: Any) -> Mapping[str, Tensor]:
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
                with torch.no_grad():
                    for b in self.model.buffers():
                        dist.broadcast(b, 0)
            out = self.model.train_step(batch, self._ctx)
            if not isinstance(out, Mapping):
                raise TypeError(
                    f"{type(self.model).__name__}.train_step must return a dict of scalars"
                )
            return out
        if self._ddp is not None:
            out = self._ddp("training_step", batch)
        else:
            out = self.model.training_step(batch)
        if not isinstance(out, Mapping) or "loss" not in out:
            raise TypeError(
                f"{type(self.model).__name__}.training_step must return a dict with a scalar "
                f"'loss', got {type(out).__name__}"
                + (f" with keys {sorted(out)}" if isinstance(out, Mapping) else "")
            )
        self._ctx.step(self.optimizers[0], out["loss"])
        return out

    @torch.no_grad()
    def _validate(self, val_set: Any) -> dict[str, float]:
        model = self.model
        fn = getattr(model, "validation_step", None)
        if not callable(fn):
            fn = model.training_step
        loader = BatchLoader(
            val_set,
            self.config.val_batch_size or self.config.batch_size,
            shuffle=False,
            rank=self.rank,
            world_size=self.world_size,
            num_workers=self.config.num_workers,
            pad=False,
        )
        acc = _Accumulator()
        was_training = model.training
        model.eval()
        ema_ctx = self.ema.applied() if self.ema is not None else contextlib.nullcontext()
        try:
            with ema_ctx:
                for batch in loader:
                    batch = _to_device(batch, self.device)
                    acc.add(fn(batch), _batch_size(batch), "validation_step")
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

    def _run_epoch(self, loader: BatchLoader, val_set: Any) -> None:
        cfg = self.config
        e = self.epoch
        loader.set_epoch(e, start_batch=self.batch_in_epoch)
        n_batches = len(loader.sampler)
        if n_batches == 0:
            raise ValueError(
                f"train_set yields no batch per process (size {len(loader.dataset)}, "
                f"batch_size {cfg.batch_size}, world_size {self.world_size}, "
                f"drop_last {cfg.drop_last})"
            )
        if self.batch_in_epoch == 0 or self._acc is None:
            acc, self._epoch_time = _Accumulator(), 0.0
        else:
            acc = self._acc
        self._acc = None
        total = f"/{cfg.epochs}" if cfg.epochs is not None else ""
        bar = tqdm(
            total=n_batches,
            initial=self.batch_in_epoch,
            desc=f"epoch {e + 1}{total}",
            # a bar redrawn into a log file is thousands of lines: there, the epoch line only
            disable=not (cfg.progress and self.is_main and _is_terminal(sys.stderr)),
            leave=False,
            dynamic_ncols=True,
        )
        t0 = time.perf_counter()
        self.model.train()
        try:
            for batch in loader:
                batch = _to_device(batch, self.device)
                out = self._train_step(batch)
                acc.add(out, _batch_size(batch), "training_step")
                self.global_step += 1
                self.batch_in_epoch += 1
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
                    and self.batch_in_epoch < n_batches
                ):
                    self._epoch_time += time.perf_counter() - t0
                    t0 = time.perf_counter()
                    self._check_deferred()
                    self._save(acc)
        finally:
            bar.close()
        self._check_deferred()
        row: dict[str, float] = {"epoch": e + 1, "step": self.global_step}
        row.update(acc.reduce("train_", self.world_size, self._comm_device()))
        if val_set is not None:
            row.update(self._validate(val_set))
        hook = getattr(self.model, "on_epoch_end", None)
        if callable(hook):
            extra = hook(self, e)
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
        self._save(None, improved=improved)
        if self.is_main:
            self._write_metrics()
            self._log_epoch(row)

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

    def _log_epoch(self, row: dict[str, float]) -> None:
        text = " ".join(
            f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()
        )
        if self.config.progress:
            tqdm.write(text)
        log.info(text, extra={CONSOLE_DONE: self.config.progress})
        if self._tb is not None:
            for k, v in row.items():
                if k != "epoch":
                    self._tb.add_scalar(f"epoch/{k}", v, int(row["epoch"]))
            self._tb.flush()

    def _write_metrics(self) -> None:
        """Rewrite metrics.jsonl / metrics.csv from the history (atomic; consistent with the
        checkpoint after a resume)."""
        keys: list[str] = []
        for r in self.history:
            keys += [k for k in r if k not in keys]
        jsonl = "".join(json.dumps(r) + "\n" for r in self.history)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=keys, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.history)
        _atomic_write_text(self.run_dir / "metrics.jsonl", jsonl)
        _atomic_write_text(self.run_dir / "metrics.csv", buf.getvalue())

    def _write_config(self) -> None:
        info = {
            "trainer": self.config.to_dict(),
            "model": {
                "class": f"{type(self.model).__module__}.{type(self.model).__qualname__}",
                "parameters": sum(p.numel() for p in self.model.parameters()),
            },
            "world_size": self.world_size,
            "global_batch_size": self.config.batch_size * self.world_size,
            "device": str(self.device),
            "torch_version": torch.__version__,
        }
        _atomic_write_text(
            self.run_dir / "config.json", json.dumps(info, indent=2, default=str) + "\n"
        )

    # ----------------------------------------------------------------- fit
    def fit(self, train_set: Any, val_set: Any = None) -> list[dict[str, float]]:
        """Train; resumes automatically from ``<run_dir>/checkpoints/last.pt`` if present.

        ``train_set`` / ``val_set`` are map-style datasets (``__len__``/``__getitem__``);
        :class:`dgm_ext.data.ImageDataset` and ``TensorDataset`` use the fast in-memory path.
        Returns the per-epoch metrics rows (including those of earlier, resumed sessions).
        """
        for name, ds in (("train_set", train_set), ("val_set", val_set)):
            if ds is None and name == "val_set":
                continue
            if isinstance(ds, torch.utils.data.DataLoader):
                raise TypeError(
                    f"{name} must be a Dataset, not a DataLoader: the Trainer builds its own "
                    "batches (config.batch_size) so that data order is resumable"
                )
            if not (hasattr(ds, "__len__") and hasattr(ds, "__getitem__")):
                raise TypeError(f"{name} must be a map-style Dataset, got {type(ds).__name__}")
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
                self._set_aside_earlier_run()
            self._started = True
            if not self._resume():
                seed_everything(self.config.seed + self.rank)
            if self.is_main:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                self._write_config()
                if self.history:
                    self._write_metrics()
                if self.config.tensorboard:
                    from torch.utils.tensorboard import SummaryWriter

                    self._tb = SummaryWriter(log_dir=str(self.run_dir / "tb"))
            self._setup_parallel()
            if self.config.compile_step and self._compiled is None:
                self._build_compiled_step()
            loader = BatchLoader(
                train_set,
                self.config.batch_size,
                shuffle=True,
                seed=self.config.seed,
                drop_last=self.config.drop_last,
                rank=self.rank,
                world_size=self.world_size,
                num_workers=self.config.num_workers,
            )
            try:
                while not self._finished():
                    self._run_epoch(loader, val_set)
            except KeyboardInterrupt as exc:
                if isinstance(exc, TrainingInterrupted):
                    raise
                raise TrainingInterrupted(
                    self.epoch, self.global_step, self.batch_in_epoch, self._last_good
                ) from exc
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


def _implied(note: str, changes: Sequence[tuple[str, Any, Any]]) -> bool:
    """An optimiser note ("optimizer 0 lr 0.0003 -> 0.001") that only restates a changed
    TrainerConfig field of the same name."""
    return any(f" {k} " in note for k, _, _ in changes)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _is_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal (False for files, pipes, None)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _short_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line messages."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def _timestamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _unused_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist."""
    n, out = 1, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}-{n}")
    return out
