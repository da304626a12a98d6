"""Resume, kept out of the training loop (as Lightning keeps its checkpoint connector out of
its fit loop): which checkpoint to resume from (:func:`load_for_resume`: ``last.pt``, or the
newest intact one when it is unreadable), what is checked before anything changes (the model
in the checkpoint is the model being trained: :func:`check_same_model`; which training
settings differ: :func:`changed_settings`; which settings of the model itself differ, e.g. a
GAN's loss: :func:`changed_model_settings`), the optimiser settings of the current run put
back after ``load_state_dict`` (:func:`apply_optimizer_hyperparameters`), each rank's running
sums (:func:`restore_accumulator`), and ``resume=False`` (:func:`set_aside_earlier_run`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .checkpoint import _fsync_dir, load_checkpoint
from .records import MetricAccumulator

log = logging.getLogger("dgm_ext.train")

# The "format" tag of every Trainer checkpoint.
CHECKPOINT_FORMAT = "dgm_ext.train/1"

__all__ = [
    "CHECKPOINT_FORMAT",
    "EXACTNESS_FIELDS",
    "TRAINING_FIELDS",
    "ModelMismatchError",
    "apply_optimizer_hyperparameters",
    "changed_model_settings",
    "changed_settings",
    "check_same_model",
    "describe_changes",
    "implied_by_config",
    "load_for_resume",
    "model_settings",
    "optimizer_hyperparameters",
    "restore_accumulator",
    "set_aside_earlier_run",
    "short_error",
    "unused_path",
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
    "lr_schedule",
    "warmup_steps",
    "lr_min_ratio",
    "lr_step_size",
    "lr_gamma",
    "accumulate_grad_batches",
    "precision",
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


def model_settings(model: Any) -> dict[str, Any] | None:
    """The settings of ``model`` as a plain dict: its ``config.to_dict()`` (the library's VAE,
    GAN and RealNVP configs, or any user config with ``to_dict`` returning plain values:
    strings, numbers, lists, dicts), else ``None``."""
    to_dict = getattr(getattr(model, "config", None), "to_dict", None)
    settings = to_dict() if callable(to_dict) else None
    # recorded only when plain values (checkpoints are read with weights_only=True)
    return settings if isinstance(settings, dict) and _plain(settings) else None


def _plain(v: Any) -> bool:
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return all(_plain(x) for x in v)
    return v is None or isinstance(v, (str, int, float, bool))


def changed_model_settings(
    saved: Mapping[str, Any] | None, current: Mapping[str, Any] | None
) -> list[tuple[str, Any, Any]]:
    """``("model.<field>", saved value, current value)`` for every model setting that differs
    between a checkpoint's recorded model config and the current model's (a field only one of
    them records is compared with ``None``); nothing when either side records none."""
    if not saved or not current:
        return []
    keys = list(dict.fromkeys([*saved, *current]))
    return [
        (f"model.{k}", saved.get(k), current.get(k))
        for k in keys
        if _norm(saved.get(k)) != _norm(current.get(k))
    ]


def _norm(v: Any) -> Any:
    """Comparable form: tuples as lists, tensors (a tensor learning rate) as numbers."""
    if isinstance(v, Tensor):
        return v.tolist()
    return [_norm(x) for x in v] if isinstance(v, (list, tuple)) else v


def describe_changes(changes: Sequence[tuple[str, Any, Any]]) -> str:
    """``"lr 0.0003 -> 0.001, grad_clip None -> 5"``."""
    return ", ".join(f"{k} {_show(_norm(a))} -> {_show(_norm(b))}" for k, a, b in changes)


def implied_by_config(note: str, changes: Sequence[tuple[str, Any, Any]]) -> bool:
    """An optimiser note ("optimizer 0 lr 0.0003 -> 0.001") that only restates a changed
    TrainerConfig field of the same name."""
    return any(f" {k} " in note for k, _, _ in changes)


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


def load_for_resume(
    last: Path,
) -> tuple[Path, dict[str, Any], tuple[Path, Path] | None]:
    """``(path, checkpoint, corrupt)``: ``last.pt``, or, when it cannot be read (e.g. truncated
    by a full disk), the newest intact ``epoch-XXXX.pt`` / ``best.pt`` beside it (with a
    warning; ``corrupt`` is then ``(last, the name to move it to before the next write)``); a
    one-line ``RuntimeError`` naming every file tried when none is intact."""
    folder = last.parent
    try:
        return last, load_checkpoint(last), None
    except Exception as exc:  # torch's zip reader / unpickler errors on a damaged file
        reason = short_error(exc)
    found: list[str] = []
    newest: tuple[tuple[int, int], Path, dict[str, Any]] | None = None
    candidates = sorted(folder.glob("epoch-*.pt"), reverse=True)
    candidates.append(folder / "best.pt")
    for cand in candidates:
        if not cand.is_file():
            continue
        try:
            ck = load_checkpoint(cand)
        except Exception as exc:
            found.append(f"{cand.name} (unreadable: {short_error(exc)})")
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
            f"found in {folder} ({checked}). {last} is left as it is. To start "
            "fresh, pass TrainerConfig(resume=False) (the earlier run's files are moved "
            "into <run_dir>/old-<time>/) or use another run_dir."
        )
    (step, epoch), used, ck = newest
    aside = unused_path(last.with_name(f"{last.name}.corrupt-{timestamp()}"))
    log.warning(
        "%s is unreadable (%s); resuming from %s (epoch %d, step %d), the newest intact "
        "checkpoint. The unreadable file is kept: it is renamed to %s before the next "
        "checkpoint is written.",
        last, reason, used, epoch, step, aside.name,
    )  # fmt: skip
    return used, ck, (last, aside)


def restore_accumulator(
    ck: Mapping[str, Any], rank: int, world_size: int, device: torch.device
) -> MetricAccumulator | None:
    """This rank's running sums of a mid-epoch checkpoint. Written by as many processes:
    each rank takes its own; by a different number: rank 0 takes the sum of all of them
    (the epoch means stay right, as they are sums over all ranks)."""
    per_rank = ck.get("accumulators")
    if per_rank is None:  # written before the per-rank list existed: rank 0's sums only
        per_rank = [ck.get("accumulator")]
    if not any(per_rank):
        return None
    if len(per_rank) == world_size:
        own = per_rank[rank]
        return MetricAccumulator.from_state(own, device) if own else MetricAccumulator()
    merged = MetricAccumulator()
    if rank == 0:
        for state in per_rank:
            if not state:
                continue
            part = MetricAccumulator.from_state(state, device)
            for k, v in part.sums.items():
                merged.sums[k] = merged.sums[k] + v if k in merged.sums else v
                merged.counts[k] = merged.counts.get(k, 0) + part.counts[k]
    return merged


def set_aside_earlier_run(run_dir: Path) -> None:
    """``resume=False`` in a run_dir that holds an earlier run: move its files (never
    delete them) into ``<run_dir>/old-<time>/`` so the new run starts from a clean slate."""
    names = ("checkpoints", "metrics.jsonl", "metrics.csv", "config.json", "tb")
    present = [n for n in names if (run_dir / n).exists()]
    if not present:
        return
    dest = unused_path(run_dir / f"old-{timestamp()}")
    dest.mkdir(parents=True)
    for n in present:
        os.replace(run_dir / n, dest / n)
    _fsync_dir(run_dir)
    log.warning(
        "resume=False: %s held an earlier run; its %s were moved to %s (nothing was "
        "deleted) and training starts from scratch",
        run_dir, ", ".join(present), dest,
    )  # fmt: skip


def short_error(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 200 characters), for one-line messages."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


def timestamp() -> str:
    """``YYYYmmdd-HHMMSS`` of now (local time), for the names of set-aside files."""
    return time.strftime("%Y%m%d-%H%M%S")


def unused_path(path: Path) -> Path:
    """``path``, or ``path-2``, ``path-3``, ... : the first that does not exist."""
    n, out = 1, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.name}-{n}")
    return out
