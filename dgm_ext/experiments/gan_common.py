"""Shared plumbing of the GAN experiments: training through the Trainer with per-epoch
sample grids and sample-quality metrics, the metric-against-FID figure, rank correlations."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dgm_ext.experiments.callbacks import SampleGrid, SampleQualityEval, SaveModel, grid_path
from dgm_ext.experiments.common import RunContext
from dgm_ext.experiments.harness import TrainingRun
from dgm_ext.gan import GAN, save_gan

__all__ = [
    "GANTraining",
    "SampleQuality",
    "eval_epochs",
    "fit_gan",
    "grid_epochs",
    "plot_metric_and_fid",
    "spearman",
    "train_seconds",
    "using_ema",
]

Evaluate = Callable[[Callable[[int], Tensor], int], Mapping[str, float]]
"""``evaluate(sample, epoch) -> numbers``; ``sample(n)`` draws ``n`` images in [0, 1]."""


def eval_epochs(epochs: int, dense_until: int = 10, every: int = 5) -> list[int]:
    """Epochs at which sample quality is measured: every epoch up to ``dense_until``, then
    every ``every`` epochs, and always the last one."""
    chosen = {e for e in range(1, epochs + 1) if e <= dense_until or e % every == 0}
    return sorted(chosen | {epochs})


def grid_epochs(epochs: int) -> list[int]:
    """Sample-grid epochs: 0 (the untrained generator), 1, the middle and the last."""
    return sorted({0, min(1, epochs), epochs // 2 if epochs > 1 else epochs, epochs})


class SampleQuality:
    """IS, FID and KID of generated images against reference images in a feature space.

    The reference features are extracted once, at construction: their mean and covariance
    (for FID) and a fixed random subset of ``kid_reference`` of them (for KID) are kept; the
    reference images' own Inception Score is ``reference_is``. Called as GANTraining's
    ``evaluate(sample, epoch)``, it measures ``n`` images from ``sample(n)``.
    ``kid_reference=None`` keeps every reference feature for KID.
    """

    def __init__(
        self,
        space: Any,
        reference: Tensor,
        n: int,
        *,
        kid_reference: int | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        is_splits: int = 10,
        seed: int = 0,
    ) -> None:
        from dgm_ext.metrics import feature_statistics, inception_score

        self.space, self.n = space, n
        self.kid_subsets, self.kid_subset_size = kid_subsets, kid_subset_size
        self.is_splits = is_splits
        feats, probs = space.extract(reference)
        self.n_reference = int(feats.shape[0])
        self.mu, self.sigma = feature_statistics(feats)
        self.reference_is = inception_score(probs, splits=min(is_splits, probs.shape[0]))[0]
        del probs
        keep = torch.randperm(feats.shape[0], generator=torch.Generator().manual_seed(seed))
        self.kid_features = feats[keep[:kid_reference]].clone() if kid_reference else feats

    def __call__(self, sample: Callable[[int], Tensor], epoch: int) -> dict[str, float]:
        """Numbers of ``n`` images drawn by ``sample(n)``."""
        return self.measure(sample(self.n))

    def measure(self, images: Tensor) -> dict[str, float]:
        """``is``, ``is_std``, ``fid``, ``kid``, ``kid_std`` of ``images`` in [0, 1]."""
        from dgm_ext.metrics import frechet_distance, inception_score, kernel_inception_distance

        feats, probs = self.space.extract(images)
        size = min(self.kid_subset_size, feats.shape[0], self.kid_features.shape[0])
        kid, kid_std = kernel_inception_distance(
            feats, self.kid_features, subsets=self.kid_subsets, subset_size=size
        )
        is_mean, is_std = inception_score(probs, splits=min(self.is_splits, probs.shape[0]))
        return {
            "is": is_mean,
            "is_std": is_std,
            "fid": frechet_distance(feats, (self.mu, self.sigma)),
            "kid": kid,
            "kid_std": kid_std,
        }

    def probs(self, images: Tensor) -> Tensor:
        """Class probabilities of ``images`` under the feature network."""
        return self.space.extract(images)[1]


@contextlib.contextmanager
def using_ema(model: GAN, trainer: Any) -> Iterator[GAN]:
    """Within the block ``model.generator`` holds the EMA weights when the trainer keeps an
    EMA (evaluation and figures use it), else its own."""
    ema = getattr(trainer, "ema", None)
    with ema.applied() if ema is not None else contextlib.nullcontext():
        yield model


class GANTraining(TrainingRun):
    """One GAN training run in ``run_dir`` with figures and metrics at chosen epochs: the
    shared :class:`~dgm_ext.experiments.harness.TrainingRun` with a
    :class:`~dgm_ext.experiments.callbacks.SampleGrid` (a 5x5 grid of the same 25 latent
    codes, ``figures/samples-epoch-XXXX.png``), a
    :class:`~dgm_ext.experiments.callbacks.SampleQualityEval` (the numbers of ``evaluate``,
    which join the epoch's row in ``metrics.jsonl`` and so survive a resume) and the generator
    saved at the end (``generator.pt``, EMA weights included). Both run on rank 0, with the
    EMA generator when EMA is on, and draw with dedicated seeded ``torch.Generator`` objects,
    so they never change the training's random stream; the seconds they take are recorded
    (``grid_s``, ``eval_s``: the trainer's ``time_s`` includes them).
    """

    def __init__(
        self,
        ctx: RunContext,
        model: GAN,
        run_dir: Path,
        *,
        epochs: int,
        batch_size: int,
        ema_decay: float | None = None,
        evaluate: Evaluate | None = None,
        evaluate_at: Iterable[int] = (),
        grids_at: Iterable[int] = (),
        title: str = "",
        seed: int = 0,
    ) -> None:
        self.title, self.seed = title, seed
        self.z_grid = torch.randn(
            25, model.config.z_dim, generator=torch.Generator().manual_seed(seed)
        )
        callbacks: list[Any] = [
            SampleGrid(self._draw_grid, run_dir, grids_at, self._grid_title),
        ]
        if evaluate is not None:
            callbacks.append(
                SampleQualityEval(evaluate, self.sampler(seed + 1), evaluate_at, self._log)
            )
        callbacks.append(SaveModel(self._save))
        super().__init__(
            ctx, model, run_dir, epochs=epochs, batch_size=batch_size, ema_decay=ema_decay,
            compile=False, callbacks=callbacks,
            extra={"gan": model.config.to_dict(), "ops": model.ops.__name__},
        )  # fmt: skip
        self.ema_decay = ema_decay

    def grid_path(self, epoch: int) -> Path:
        """Where the sample grid of ``epoch`` goes."""
        return grid_path(self.run_dir, epoch)

    def sampler(self, seed: int) -> Callable[[int], Tensor]:
        """``sample(n)`` from the current (EMA) generator with its own seeded stream."""

        def sample(n: int) -> Tensor:
            return self.model.sample(n, generator=torch.Generator(self._device()).manual_seed(seed))

        return sample

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _draw_grid(self) -> Tensor:
        return self.model.decode(self.z_grid.to(self._device()))

    def _grid_title(self, epoch: int) -> str:
        tag = "untrained generator" if epoch == 0 else f"epoch {epoch}"
        return f"{self.title}: {tag}{' (EMA generator)' if self.ema_decay else ''}"

    def _log(self, epoch: int, numbers: Mapping[str, float]) -> None:
        self.ctx.log(
            f"{self.run_dir.name} epoch {epoch}: "
            + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items())
        )

    def _save(self, trainer: Any) -> None:
        save_gan(self.model, self.run_dir / "generator.pt", ema=trainer.ema)

    def fit(self, train_set: Any, val_set: Any = None) -> list[dict]:
        """Train (resuming ``run_dir`` when it holds a checkpoint); returns the epoch rows."""
        return super().fit(train_set, val_set)


def fit_gan(ctx: RunContext, model: GAN, train_set: Any, run_dir: Path, **kw: Any) -> GANTraining:
    """Build a :class:`GANTraining`, run it, and return it (rows in ``.rows``)."""
    run = GANTraining(ctx, model, run_dir, **kw)
    run.rows = run.fit(train_set)
    return run


def train_seconds(row: Mapping[str, float]) -> float:
    """Seconds of an epoch's training: the trainer's ``time_s`` minus the evaluation and grid
    time that :class:`GANTraining` records in the same row."""
    return row["time_s"] - row.get("eval_s", 0.0) - row.get("grid_s", 0.0)


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation (average ranks for ties); NaN with fewer than 3 points or a
    constant input."""
    from scipy.stats import spearmanr

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(spearmanr(x[keep], y[keep]).statistic)


def plot_metric_and_fid(
    rows: Sequence[Mapping[str, float]],
    metric: str,
    path: Path,
    title: str,
    fid_key: str = "fid",
) -> Path:
    """The training metric (per epoch, left axis) and FID (at evaluated epochs, right axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    ep = [r["epoch"] for r in rows if metric in r]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(ep, [r[metric] for r in rows if metric in r], "o-", ms=3, color="C0")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("train_", "training ") + " (per-epoch mean)", color="C0")
    ax2 = ax.twinx()
    fe = [(r["epoch"], r[fid_key]) for r in rows if fid_key in r]
    if fe:
        ax2.plot(*zip(*fe, strict=True), "s-", ms=4, color="C3")
    ax2.set_ylabel(fid_key.upper(), color="C3")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
