"""What a resume checks before it changes anything: the model in the checkpoint is the model
being trained, and which settings differ from the run being continued.

Kept out of the loop (as Lightning keeps its checkpoint connector out of its fit loop): the
Trainer calls :func:`check_same_model` before loading a checkpoint, :func:`changed_settings`
to report every training setting that differs from the checkpoint's, and
:func:`optimizer_hyperparameters` / :func:`apply_optimizer_hyperparameters` so that the
optimiser settings of the current run are the ones in force after ``load_state_dict``
(which would otherwise silently restore the checkpoint's learning rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "EXACTNESS_FIELDS",
    "TRAINING_FIELDS",
    "ModelMismatchError",
    "apply_optimizer_hyperparameters",
    "changed_settings",
    "check_same_model",
    "optimizer_hyperparameters",
]

# TrainerConfig fields whose change makes a resumed run differ from an uninterrupted one.
# Not listed (changing them is how a run is continued or watched): run_dir, epochs,
# max_steps, progress, tensorboard, log_every, checkpoint_every, keep_last, device, resume,
# num_workers, find_unused_parameters, val_batch_size, extra.
EXACTNESS_FIELDS = ("batch_size", "seed", "drop_last")
TRAINING_FIELDS = (
    *EXACTNESS_FIELDS,
    "optimizer",
    "lr",
    "weight_decay",
    "betas",
    "eps",
    "grad_clip",
    "ema_decay",
    "fused_optimizer",
    "compile_step",
    "compile_mode",
    "check_grads",
    "patience",
    "monitor",
    "monitor_mode",
    "min_delta",
)

# Optimiser hyperparameters a fresh run sets and load_state_dict overwrites.
_HYPER = ("lr", "betas", "weight_decay", "eps", "momentum", "alpha", "amsgrad", "maximize")


class ModelMismatchError(ValueError):
    """The run directory holds a checkpoint of a different model."""


def _shape(t: Any) -> str:
    return "x".join(str(s) for s in t.shape) if isinstance(t, Tensor) else type(t).__name__


def check_same_model(
    saved: Mapping[str, Any], model: torch.nn.Module, path: Path, run_dir: Path
) -> None:
    """Raise :class:`ModelMismatchError` (one line: what differs, what to do) when the state
    dict ``saved`` (from checkpoint ``path``) does not fit ``model``."""
    own = model.state_dict()
    diffs = [f"{k} is missing from the checkpoint" for k in own if k not in saved]
    diffs += [f"{k} is in the checkpoint only" for k in saved if k not in own]
    diffs += [
        f"{k} is {_shape(saved[k])} in the checkpoint, {_shape(own[k])} here"
        for k in own
        if k in saved and isinstance(own[k], Tensor) and isinstance(saved[k], Tensor)
        and own[k].shape != saved[k].shape
    ]  # fmt: skip
    if not diffs:
        return
    more = f" (and {len(diffs) - 1} more difference{'s' * (len(diffs) > 2)})" * (len(diffs) > 1)
    raise ModelMismatchError(
        f"{run_dir} holds a run of a different model: {diffs[0]}{more} ({path}). Train this "
        "model in a new run_dir (--out), or pass resume=False (--fresh) to move the earlier "
        "run aside and start over."
    )


def _show(v: Any) -> str:
    return "None" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))


def changed_settings(saved: Mapping[str, Any], config: Any) -> list[tuple[str, Any, Any]]:
    """``(field, saved value, current value)`` for every training setting of ``config`` (a
    :class:`TrainerConfig`) that differs from the checkpoint's ``saved`` config dict. A
    field the checkpoint does not record (an older file) is not compared."""
    current = config.to_dict()
    return [
        (k, saved[k], current[k])
        for k in TRAINING_FIELDS
        if k in saved and k in current and _norm(saved[k]) != _norm(current[k])
    ]


def _norm(v: Any) -> Any:
    """Comparable form: tuples as lists, tensors (a tensor learning rate) as numbers."""
    if isinstance(v, Tensor):
        return v.tolist()
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def describe_changes(changes: Sequence[tuple[str, Any, Any]]) -> str:
    """``"lr 0.0003 -> 0.001, grad_clip None -> 5"``."""
    return ", ".join(f"{k} {_show(_norm(a))} -> {_show(_norm(b))}" for k, a, b in changes)


def optimizer_hyperparameters(optimizers: Sequence[torch.optim.Optimizer]) -> list[list[dict]]:
    """The hyperparameters of every parameter group of every optimiser (a copy)."""

    def copy(v: Any) -> Any:
        return v.detach().clone() if isinstance(v, Tensor) else v

    return [
        [{k: copy(g[k]) for k in _HYPER if k in g} for g in opt.param_groups] for opt in optimizers
    ]


def apply_optimizer_hyperparameters(
    optimizers: Sequence[torch.optim.Optimizer], hyper: Sequence[Sequence[Mapping[str, Any]]]
) -> list[str]:
    """Put ``hyper`` (from :func:`optimizer_hyperparameters` before ``load_state_dict``)
    back into the optimisers; returns ``"optimizer 0 lr 0.0003 -> 0.001"`` for each value
    the checkpoint had changed."""
    notes = []
    for i, (opt, groups) in enumerate(zip(optimizers, hyper, strict=True)):
        for j, (group, want) in enumerate(zip(opt.param_groups, groups, strict=True)):
            for k, v in want.items():
                if _norm(group.get(k)) == _norm(v):
                    continue
                where = f"optimizer {i}" + (f" group {j}" if len(groups) > 1 else "")
                notes.append(f"{where} {k} {_show(_norm(group.get(k)))} -> {_show(_norm(v))}")
                if isinstance(group.get(k), Tensor):  # keep a tensor lr a tensor (in place)
                    group[k].fill_(v.item() if isinstance(v, Tensor) else v)
                else:
                    group[k] = v
    return notes
