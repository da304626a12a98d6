"""The training engine shared by all dgm_ext models (see :mod:`dgm_ext.train.trainer` for
the model contract, run-directory layout, resume and distributed behaviour)."""

from .checkpoint import (
    atomic_copy,
    atomic_save,
    get_rng_state,
    load_checkpoint,
    seed_everything,
    set_rng_state,
)
from .config import TrainerConfig
from .ema import ModelEMA
from .resume import ModelMismatchError
from .trainer import (
    NonFiniteLossError,
    StepContext,
    Trainer,
    TrainingInterrupted,
    build_optimizer,
    make_adam,
    resolve_device,
)

__all__ = [
    "ModelEMA",
    "ModelMismatchError",
    "NonFiniteLossError",
    "StepContext",
    "Trainer",
    "TrainerConfig",
    "TrainingInterrupted",
    "atomic_copy",
    "atomic_save",
    "build_optimizer",
    "get_rng_state",
    "load_checkpoint",
    "make_adam",
    "resolve_device",
    "seed_everything",
    "set_rng_state",
]
