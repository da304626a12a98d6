"""How training stops: a non-finite loss or gradient (on any rank: every rank stops at the
same step with the same message) and Ctrl-C, each reported with the checkpoint to resume."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "NonFiniteLossError",
    "TrainingInterrupted",
    "describe_non_finite",
    "non_finite_message",
    "sigint_deferred",
]


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold back SIGINT (Ctrl-C) inside the block and act on it right after: a checkpoint
    written and recorded in the block is never reported as missing because the interrupt
    landed between the file's rename and the bookkeeping. The SIGINT handler is swapped for
    one that only notes the signal (a signal mask would not do: torch's threads would take the
    signal); after the block the previous handler gets it. Main thread only (signal handlers
    live there); elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            if callable(previous):  # Python's default raises KeyboardInterrupt here
                previous(signal.SIGINT, None)
            elif previous == signal.SIG_DFL:
                os.kill(os.getpid(), signal.SIGINT)


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


def describe_non_finite(
    value: Tensor, rank: int, world_size: int, comm_device: torch.device
) -> str | None:
    """None when ``value`` is finite on every rank; otherwise what to show: the value (a
    scalar) or "non-finite entries", naming the ranks under several processes. Collective
    when ``world_size > 1``: every rank must call it."""
    v = value.detach()
    bad = (~torch.isfinite(v)).any()
    scalar = v.numel() == 1
    if world_size > 1:
        # every rank learns which ranks (and, for scalars, which values) were non-finite,
        # so that all of them stop at the same step with the same message
        w = world_size
        flags = torch.zeros(2 * w, dtype=torch.float64, device=comm_device)
        flags[rank] = bad.to(flags.device, torch.float64)
        if scalar:
            flags[w + rank] = v.to(flags.device, torch.float64).reshape(())
        dist.all_reduce(flags)
        got = flags.tolist()
        ranks = [r for r in range(w) if got[r] > 0]
        if not ranks:
            return None
        return (
            ", ".join(
                f"{got[w + r]} on rank {r}" if scalar else f"non-finite entries on rank {r}"
                for r in ranks
            )
            + f" of {w}"
        )
    if not bool(bad):
        return None
    return f"{v.item()}" if scalar else "non-finite entries"


def non_finite_message(
    name: str,
    shown: str,
    epoch: int,
    step: int,
    last_good: tuple[Path, int, int] | None,
    world_size: int,
) -> tuple[str, Path | None]:
    """The one-paragraph message of :class:`NonFiniteLossError` for 1-based ``epoch`` and
    ``step``, and the checkpoint it names (``last_good``: path, epoch, step)."""
    if last_good is not None:
        path, e, s = last_good
        where = (
            f"The last good checkpoint, {path} (after epoch {e}, step {s}), is untouched; "
            "rerunning resumes from it (lower the learning rate or enable grad_clip)."
        )
    else:
        path = None
        where = "No checkpoint had been written yet."
    return (
        f"Non-finite {name} ({shown}) at epoch {epoch}, step {step}; training stopped "
        f"before applying this step{' on every rank' if world_size > 1 else ''}. {where}",
        path,
    )
