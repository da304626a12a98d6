"""What the Trainer records: per-epoch metric means (batch-size weighted, summed on the
device without a host sync per step, reduced over ranks), ``metrics.jsonl``/``metrics.csv``,
the run's ``config.json``, the progress bar and the one-line epoch summary (console, log,
TensorBoard)."""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from tqdm.auto import tqdm

from dgm_ext._console import CONSOLE_DONE

from .checkpoint import atomic_write_text

__all__ = [
    "MetricAccumulator",
    "batch_size_of",
    "epoch_line",
    "is_terminal",
    "log_epoch",
    "progress_bar",
    "to_device",
    "write_metrics",
    "write_run_config",
]

log = logging.getLogger("dgm_ext.train")


def batch_size_of(batch: Any) -> int:
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)) and batch:
        return batch_size_of(batch[0])
    return 1


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, tuple):
        return tuple(to_device(b, device) for b in batch)
    if isinstance(batch, list):
        return [to_device(b, device) for b in batch]
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


class MetricAccumulator:
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
    def from_state(cls, state: Mapping[str, Any], device: torch.device) -> MetricAccumulator:
        acc = cls()
        acc.sums = {k: v.to(device) for k, v in state["sums"].items()}
        acc.counts = {k: int(v) for k, v in state["counts"].items()}
        return acc


def write_metrics(run_dir: Path, history: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` / ``metrics.csv`` of ``run_dir`` from ``history`` (atomic;
    consistent with the checkpoint after a resume)."""
    keys: list[str] = []
    for r in history:
        keys += [k for k in r if k not in keys]
    jsonl = "".join(json.dumps(r) + "\n" for r in history)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=keys, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(run_dir / "metrics.jsonl", jsonl)
    atomic_write_text(run_dir / "metrics.csv", buf.getvalue())


def epoch_line(row: Mapping[str, Any]) -> str:
    """``epoch=3 step=1200 train_loss=101.2 ...`` (floats to 5 significant digits)."""
    return " ".join(f"{k}={v:.5g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


def write_run_config(
    run_dir: Path, config: Any, model: torch.nn.Module, world_size: int, device: torch.device
) -> None:
    """``run_dir/config.json``: the trainer's settings, the model's class and size, the
    world size, device and torch version."""
    info = {
        "trainer": config.to_dict(),
        "model": {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "parameters": sum(p.numel() for p in model.parameters()),
        },
        "world_size": world_size,
        "global_batch_size": config.batch_size * world_size,
        "device": str(device),
        "torch_version": torch.__version__,
    }
    atomic_write_text(Path(run_dir) / "config.json", json.dumps(info, indent=2, default=str) + "\n")


def is_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal (False for files, pipes, None)."""
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(total: int | None, initial: int, desc: str, enabled: bool) -> Any:
    """The epoch's tqdm bar; drawn only on an interactive stderr (a bar redrawn into a log
    file is thousands of lines: there, the epoch line only)."""
    return tqdm(total=total, initial=initial, desc=desc, leave=False, dynamic_ncols=True,
                disable=not (enabled and is_terminal(sys.stderr)))  # fmt: skip


def log_epoch(row: dict[str, float], progress: bool, tb: Any = None) -> None:
    """The epoch's one-line summary: above the progress bar (``progress``), to the
    ``dgm_ext.train`` logger, and to TensorBoard (``tb``, a SummaryWriter)."""
    text = epoch_line(row)
    if progress:
        tqdm.write(text)
    log.info(text, extra={CONSOLE_DONE: progress})
    if tb is not None:
        for k, v in row.items():
            if k != "epoch":
                tb.add_scalar(f"epoch/{k}", v, int(row["epoch"]))
        tb.flush()
