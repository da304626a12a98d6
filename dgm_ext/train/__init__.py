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

Callbacks
---------
``Trainer(model, config, callbacks=[...])`` takes :class:`Callback` objects (hooks at fit
start and end, validation end and epoch end; their ``state_dict`` is saved in every
checkpoint and restored on resume): see :mod:`dgm_ext.train.callbacks`.

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

from .callbacks import Callback, LambdaCallback
from .checkpoint import (
    atomic_copy,
    atomic_save,
    atomic_write_text,
    get_rng_state,
    load_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config import TrainerConfig
from .distributed import resolve_device
from .ema import ModelEMA
from .optim import build_optimizer, make_adam
from .resume import ModelMismatchError
from .trainer import (
    NonFiniteLossError,
    StepContext,
    Trainer,
    TrainingInterrupted,
)

__all__ = [
    "Callback",
    "LambdaCallback",
    "ModelEMA",
    "ModelMismatchError",
    "NonFiniteLossError",
    "StepContext",
    "Trainer",
    "TrainerConfig",
    "TrainingInterrupted",
    "atomic_copy",
    "atomic_save",
    "atomic_write_text",
    "build_optimizer",
    "get_rng_state",
    "load_checkpoint",
    "make_adam",
    "resolve_device",
    "seed_everything",
    "set_rng_state",
]
