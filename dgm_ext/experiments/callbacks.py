"""Trainer callbacks of the experiments: sample grids, sample quality over training, a
function of the epoch, saving the model. Each runs on the process that writes files
(``trainer.is_main``), with the EMA weights applied when the trainer keeps an EMA, and
returns the seconds it took so that ``time_s`` can be split into training and side work
(``grid_s``, ``eval_s``). None keeps state between epochs: what they produce (figures, the
numbers in the metrics rows) is on disk, so a resume continues them exactly."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor

from dgm_ext.train import Callback

__all__ = ["EpochFunction", "SampleGrid", "SampleQualityEval", "SaveModel", "grid_path"]


def grid_path(run_dir: Path, epoch: int) -> Path:
    """Where the sample grid of ``epoch`` goes (epoch 0: the untrained model)."""
    return Path(run_dir) / "figures" / f"samples-epoch-{epoch:04d}.png"


def _ema(trainer: Any) -> contextlib.AbstractContextManager:
    ema = getattr(trainer, "ema", None)
    return ema.applied() if ema is not None else contextlib.nullcontext()


class _AtEpochs(Callback):
    """Work at chosen epochs (``self.at``), on the process that writes files, with the EMA
    weights applied; its seconds are recorded under ``seconds_key``."""

    at: set[int]
    seconds_key = "s"

    def work(self, trainer: Any, epoch: int) -> dict[str, float]:
        raise NotImplementedError

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> dict[str, float] | None:
        epoch = int(row["epoch"])
        if not trainer.is_main or epoch not in self.at:
            return None
        t0 = time.perf_counter()
        with _ema(trainer):
            out = self.work(trainer, epoch)
        return {**out, self.seconds_key: time.perf_counter() - t0}


class SampleGrid(_AtEpochs):
    """A 5x5 grid of ``draw()`` (25 images in [0, 1] from fixed codes) at the epochs ``at``
    (0: before the first step of a fresh run), titled ``title(epoch)``."""

    def __init__(
        self,
        draw: Callable[[], Tensor],
        run_dir: Path,
        at: Iterable[int],
        title: Callable[[int], str],
    ) -> None:
        self.draw, self.run_dir, self.at, self.title = draw, Path(run_dir), set(at), title

    def save(self, epoch: int) -> None:
        """Draw and save the grid of ``epoch``."""
        from dgm_ext.plots import save_image_grid

        save_image_grid(self.draw().cpu(), grid_path(self.run_dir, epoch), 5, self.title(epoch))

    def on_fit_start(self, trainer: Any) -> None:
        fresh = trainer.epoch == 0 and trainer.global_step == 0
        if fresh and 0 in self.at and trainer.is_main:
            self.save(0)

    seconds_key = "grid_s"

    def work(self, trainer: Any, epoch: int) -> dict[str, float]:
        self.save(epoch)
        return {}


class SampleQualityEval(_AtEpochs):
    """``evaluate(sample, epoch) -> numbers`` at the epochs ``at``, with ``sample(n)`` drawing
    from the (EMA) model; the numbers join the epoch's row (and the log via ``log``)."""

    def __init__(
        self,
        evaluate: Callable[[Callable[[int], Tensor], int], Mapping[str, float]],
        sample: Callable[[int], Tensor],
        at: Iterable[int],
        log: Callable[[int, Mapping[str, float]], None] | None = None,
    ) -> None:
        self.evaluate, self.sample, self.at, self.log = evaluate, sample, set(at), log

    seconds_key = "eval_s"

    def work(self, trainer: Any, epoch: int) -> dict[str, float]:
        numbers = dict(self.evaluate(self.sample, epoch))
        if self.log is not None:
            self.log(epoch, numbers)
        return numbers


class EpochFunction(Callback):
    """``fn(epoch)`` after every epoch (1-based), e.g. a figure of the model at that epoch."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        self.fn = fn

    def on_epoch_end(self, trainer: Any, row: dict[str, float]) -> dict[str, float] | None:
        if trainer.is_main:
            self.fn(int(row["epoch"]))
        return None


class SaveModel(Callback):
    """``save(trainer)`` when training finishes (all epochs, ``max_steps`` or early stop)."""

    def __init__(self, save: Callable[[Any], None]) -> None:
        self.save = save

    def on_fit_end(self, trainer: Any) -> None:
        if trainer.is_main:
            self.save(trainer)
