"""Learning-rate schedules of the Trainer, as a pure function of the optimisation step.

``lr(step) = base_lr * factor(step)`` for every parameter group of every optimiser, where
``base_lr`` is the group's learning rate as configured for this run (``TrainerConfig.lr``, or
what the model's ``configure_optimizers`` set) and ``step`` counts the optimisation steps
already taken (``Trainer.global_step``). Because the factor depends on nothing but the step
and the config, a resumed run follows the same schedule exactly: the step is in every
checkpoint (as are the base rates, so a resume can tell a changed rate from a scheduled one).

- warm-up (any schedule): ``factor *= (step + 1) / warmup_steps`` for the first
  ``warmup_steps`` steps, then 1;
- ``"cosine"``: from 1 down to ``lr_min_ratio`` over the steps after the warm-up, along half a
  cosine; the horizon is the run's last step (``epochs`` x steps per epoch, or ``max_steps``
  when that comes first);
- ``"step"``: ``lr_gamma ** ((step - warmup_steps) // lr_step_size)``;
- ``None`` / ``"constant"``: 1 (with the warm-up, if any).
"""

from __future__ import annotations

import math

from .config import TrainerConfig

__all__ = ["lr_factor", "total_steps"]


def total_steps(config: TrainerConfig, steps_per_epoch: int) -> int | None:
    """The run's last optimisation step (None when neither limit is set)."""
    limits = []
    if config.epochs is not None:
        limits.append(config.epochs * steps_per_epoch)
    if config.max_steps is not None:
        limits.append(config.max_steps)
    return min(limits) if limits else None


def lr_factor(config: TrainerConfig, step: int, total: int | None) -> float:
    """The multiplier of the base learning rate for the optimisation step ``step`` (0-based)
    of a run of ``total`` steps."""
    warm = config.warmup_steps
    factor = (step + 1) / warm if step < warm else 1.0
    after = max(step - warm, 0)
    if config.lr_schedule == "cosine":
        horizon = max((total or 1) - warm, 1)
        progress = min(after / horizon, 1.0)
        r = config.lr_min_ratio
        factor *= r + (1 - r) * 0.5 * (1 + math.cos(math.pi * progress))
    elif config.lr_schedule == "step":
        assert config.lr_step_size is not None  # checked by TrainerConfig
        factor *= config.lr_gamma ** (after // config.lr_step_size)
    return factor
