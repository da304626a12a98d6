"""Shared plumbing of the GAN experiments: training through the Trainer with per-epoch
sample grids and sample-quality metrics, the metric-against-FID figure, rank correlations."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dgm_ext.experiments.common import RunContext, _is_main_process, resume_message
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


class GANTraining:
    """One GAN training run in ``run_dir`` with figures and metrics at chosen epochs.

    Per chosen epoch (rank 0 only, with the EMA generator when EMA is on, and a dedicated
    seeded ``torch.Generator`` so that evaluation never changes the training's random
    stream): a 5×5 grid of the same 25 latent codes (``figures/samples-epoch-XXXX.png``) and
    the numbers of ``evaluate``, which join the epoch's row in ``metrics.jsonl`` (and so
    survive a resume) with the seconds they took (``grid_s``, ``eval_s``: the trainer's
    ``time_s`` includes them).
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
        self.ctx, self.model, self.run_dir = ctx, model, Path(run_dir)
        self.epochs, self.batch_size, self.ema_decay = epochs, batch_size, ema_decay
        self.evaluate, self.evaluate_at = evaluate, set(evaluate_at)
        self.grids_at, self.title, self.seed = set(grids_at), title, seed
        self.z_grid = torch.randn(
            25, model.config.z_dim, generator=torch.Generator().manual_seed(seed)
        )
        self.trainer: Any = None
        self.rows: list[dict] = []

    def grid_path(self, epoch: int) -> Path:
        """Where the sample grid of ``epoch`` goes."""
        return self.run_dir / "figures" / f"samples-epoch-{epoch:04d}.png"

    def sampler(self, seed: int) -> Callable[[int], Tensor]:
        """``sample(n)`` from the current (EMA) generator with its own seeded stream."""

        def sample(n: int) -> Tensor:
            return self.model.sample(n, generator=torch.Generator(self._device()).manual_seed(seed))

        return sample

    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _grid(self, epoch: int) -> None:
        from dgm_ext.plots import save_image_grid

        images = self.model.decode(self.z_grid.to(self._device())).cpu()
        tag = "untrained generator" if epoch == 0 else f"epoch {epoch}"
        ema = " (EMA generator)" if self.ema_decay else ""
        save_image_grid(images, self.grid_path(epoch), 5, f"{self.title}: {tag}{ema}")

    def _on_epoch_end(self, trainer: Any, epoch0: int) -> dict[str, float]:
        epoch = epoch0 + 1
        if not trainer.is_main:
            return {}
        out: dict[str, float] = {}
        with using_ema(self.model, trainer):
            if epoch in self.grids_at:
                t0 = time.perf_counter()
                self._grid(epoch)
                out["grid_s"] = time.perf_counter() - t0
            if self.evaluate is not None and epoch in self.evaluate_at:
                t0 = time.perf_counter()
                numbers = dict(self.evaluate(self.sampler(self.seed + 1), epoch))
                self.ctx.log(
                    f"{self.run_dir.name} epoch {epoch}: "
                    + ", ".join(f"{k}={v:.4g}" for k, v in numbers.items())
                )
                out.update(numbers, eval_s=time.perf_counter() - t0)
        return out

    def fit(self, train_set: Any) -> list[dict]:
        """Train (resuming ``run_dir`` when it holds a checkpoint); returns the epoch rows."""
        from dgm_ext.train import Trainer, TrainerConfig

        msg = resume_message(self.run_dir, self.epochs)
        if msg is not None and _is_main_process():
            self.ctx.log(msg)
        cfg = TrainerConfig(
            run_dir=str(self.run_dir),
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.ctx.seed,
            ema_decay=self.ema_decay,
            progress=self.ctx.progress,
            device=self.ctx.device,
            extra={"gan": self.model.config.to_dict(), "ops": self.model.ops.__name__},
        )
        self.trainer = trainer = Trainer(self.model, cfg)
        fresh = not (self.run_dir / "checkpoints" / "last.pt").is_file()
        if fresh and 0 in self.grids_at and _is_main_process():
            with torch.no_grad():
                self.model.to(trainer.device)
                self._grid(0)
        self.model.on_epoch_end = self._on_epoch_end  # the trainer's per-epoch hook
        try:
            rows = trainer.fit(train_set)
        finally:
            del self.model.on_epoch_end
        if trainer.is_main:
            save_gan(self.model, self.run_dir / "generator.pt", ema=trainer.ema)
        return rows


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
