"""Step-based fits of planar flows to the 2-D densities, and their evaluation.

``mode="ml"``: maximum likelihood on exact samples of the restricted density (a fresh batch
every step), the layers mapping data to the base: loss = ``−log N(f(x)) − log|det ∂f/∂x|``
per sample. ``mode="kl"``: reverse KL to the walled energy, the layers mapping base samples
to data: loss = ``energy(f(z0)) + log N(z0) − log|det ∂f/∂z0|``, ``z0 ~ N(0, I)``, whose
expectation is ``KL(q‖p) − log Z``. Both with RMSprop (SPEC §3: lr 5e-4, batch 128, 20 000
steps; u, w ~ N(0, 0.01²), b = 0).

The fit is a plain loop of optimiser steps, not the epoch/dataset ``Trainer``: the data are
an infinite exact sampler (no epochs, no validation split), a step costs about a millisecond
so per-step bookkeeping would dominate, and a whole fit takes tens of seconds, so resuming
is per fit (the experiment skips fits whose results are on disk), not per step.
Batches are drawn in blocks of steps from a seeded generator, so a fit is reproducible from
its seed (same torch, same thread count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dgm_ext.flows.base import standard_normal_log_prob
from dgm_ext.flows.densities import Density2D, get_density
from dgm_ext.flows.planar import PlanarFlow
from dgm_ext.persistence import PLANAR_FORMAT, read_family, write_model_file

__all__ = [
    "MODES",
    "FitResult",
    "PlanarFitConfig",
    "evaluate_kl",
    "evaluate_nll",
    "fit_planar",
    "load_planar",
    "save_planar",
]

MODES = ("ml", "kl")
_BLOCK = 200  # steps whose batches are drawn at once


def _int(name: str, v: object, low: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise ValueError(f"{name} must be an int >= {low}, got {v!r}")


@dataclass(frozen=True)
class PlanarFitConfig:
    """One fit: ``mode`` (``"ml"``/``"kl"``), ``target`` (a name of ``densities.TARGETS``),
    ``k`` layers, ``steps``, ``batch_size``, ``lr`` (RMSprop), ``seed`` (initialisation and
    batches), ``ops`` (``"fused"``/``"reference"``), ``init_scale`` (std of u, w),
    ``log_every`` (steps per point of the loss curve)."""

    mode: str
    target: str
    k: int
    steps: int = 20_000
    batch_size: int = 128
    lr: float = 5e-4
    seed: int = 0
    ops: str = "fused"
    init_scale: float = 0.01
    log_every: int = 100

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        get_density(self.target, "target")
        _int("k", self.k, 1)
        _int("steps", self.steps, 0)
        _int("batch_size", self.batch_size, 1)
        _int("seed", self.seed, 0)
        _int("log_every", self.log_every, 1)
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr!r}")
        if not (isinstance(self.init_scale, (int, float)) and self.init_scale >= 0):
            raise ValueError(f"init_scale must be a number >= 0, got {self.init_scale!r}")
        if self.ops not in ("fused", "reference"):
            raise ValueError(f"ops must be 'fused' or 'reference', got {self.ops!r}")

    @property
    def name(self) -> str:
        """``<mode>-<target>-K<k>``, the fit's folder name."""
        return f"{self.mode}-{self.target}-K{self.k}"

    def build(self) -> PlanarFlow:
        """The untrained flow (seeded by ``seed``)."""
        torch.manual_seed(self.seed)
        return PlanarFlow(
            2, self.k, generative=self.mode == "kl", ops=self.ops, init_scale=self.init_scale
        )


@dataclass
class FitResult:
    """A fitted flow, its loss curve (mean loss over each ``log_every`` steps, at the
    steps in ``curve_steps``) and the training time in seconds."""

    flow: PlanarFlow
    config: PlanarFitConfig
    curve_steps: list[int]
    curve_loss: list[float]
    seconds: float

    @property
    def final_loss(self) -> float:
        """Mean training loss over the last ``log_every`` steps (nan without steps)."""
        return self.curve_loss[-1] if self.curve_loss else math.nan


def _loss_fn(flow: PlanarFlow, density: Density2D, mode: str) -> Callable[[Tensor], Tensor]:
    """Per-sample loss of a batch: data (ml) or base draws (kl)."""
    if mode == "ml":

        def nll(x: Tensor) -> Tensor:
            z, logdet = flow.transform(x)
            return -(standard_normal_log_prob(z) + logdet)

        return nll

    def reverse_kl(z0: Tensor) -> Tensor:
        x, logdet = flow.transform(z0)
        return density.energy(x) + standard_normal_log_prob(z0) - logdet

    return reverse_kl


def fit_planar(
    config: PlanarFitConfig,
    progress: Callable[[int, float], None] | None = None,
) -> FitResult:
    """Train a fresh :class:`PlanarFlow` as ``config`` says; ``progress(step, loss)`` is
    called at every point of the loss curve. Raises ``FloatingPointError`` at the first
    non-finite loss (naming the step)."""
    flow = config.build()
    density = get_density(config.target)
    loss_fn = _loss_fn(flow, density, config.mode)
    opt = torch.optim.RMSprop(flow.parameters(), lr=config.lr)
    g = torch.Generator().manual_seed(config.seed + 1)
    n, bs = config.steps, config.batch_size
    steps: list[int] = []
    losses: list[float] = []
    running = torch.zeros((), dtype=torch.float64)
    t0 = time.perf_counter()
    block = torch.empty(0)
    for step in range(n):
        j = step % _BLOCK
        if j == 0:
            m = min(_BLOCK, n - step) * bs
            if config.mode == "ml":
                block = density.sample(m, g).to(torch.float32)
            else:
                block = torch.randn(m, 2, generator=g)
        batch = block[j * bs : (j + 1) * bs]
        loss = loss_fn(batch).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.detach()
        if (step + 1) % config.log_every == 0 or step + 1 == n:
            span = (step % config.log_every) + 1
            mean = float(running) / span
            if not math.isfinite(mean):
                raise FloatingPointError(
                    f"{config.name}: non-finite training loss ({mean}) by step {step + 1}"
                )
            steps.append(step + 1)
            losses.append(mean)
            running.zero_()
            if progress is not None:
                progress(step + 1, mean)
    return FitResult(flow, config, steps, losses, time.perf_counter() - t0)


def _per_sample(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)])


def evaluate_nll(
    flow: PlanarFlow,
    target: str,
    n: int = 100_000,
    seed: int = 12345,
    chunk: int = 20_000,
) -> dict:
    """NLL of ``n`` fresh exact samples of ``target`` under ``flow``: mean ± standard error
    (nats per sample), beside the entropy floor and the gap; ``"values"`` holds the per-sample
    NLLs (float64) for paired comparisons between fits on the same samples (same ``seed``)."""
    _int("n", n, 2)
    density = get_density(target, "target")
    x = density.sample(n, torch.Generator().manual_seed(seed)).to(flow.u.dtype)
    values = -_per_sample(flow.log_prob, x, chunk).double()
    floor = density.entropy()
    mean = float(values.mean())
    return {
        "nll": mean,
        "se": float(values.std() / math.sqrt(n)),
        "floor": floor,
        "gap": mean - floor,
        "n": n,
        "values": values,
    }


def evaluate_kl(flow: PlanarFlow, target: str, n: int = 100_000, chunk: int = 20_000) -> dict:
    """``KL(q‖p) = E_q[log q + energy] + log Z`` (the walled target) by Monte Carlo over
    ``n`` samples of ``flow``: mean ± standard error, with ``log Z`` and the expectation."""
    _int("n", n, 2)
    density = get_density(target, "target")
    parts = []
    with torch.no_grad():
        for i in range(0, n, chunk):
            x, log_q = flow.sample_and_log_prob(min(chunk, n - i))
            parts.append((log_q + density.energy(x)).double())
    values = torch.cat(parts)
    log_z = density.log_z(wall=True)
    e = float(values.mean())
    return {
        "kl": e + log_z,
        "se": float(values.std() / math.sqrt(n)),
        "expectation": e,
        "log_z": log_z,
        "n": n,
    }


def save_planar(result: FitResult, path: str | Path, **extra: object) -> Path:
    """Write the fitted flow, its config and loss curve to ``path`` (format
    ``dgm_ext.flows.planar/1``, atomically); ``extra``: plain values kept with them."""
    return write_model_file(
        path,
        PLANAR_FORMAT,
        asdict(result.config),
        state_dict=result.flow.state_dict(),
        curve_steps=list(result.curve_steps),
        curve_loss=list(result.curve_loss),
        seconds=result.seconds,
        extra=dict(extra),
    )


def planar_fit_from_blob(blob: dict[str, Any], ops: str | None = None) -> FitResult:
    """The fit of a dict read from a :func:`save_planar` file; ``ops`` overrides the saved
    backend."""
    cfg = dict(blob["config"])
    if ops is not None:
        cfg["ops"] = ops
    config = PlanarFitConfig(**cfg)
    flow = config.build()
    flow.load_state_dict(blob["state_dict"])
    return FitResult(
        flow, config, list(blob["curve_steps"]), list(blob["curve_loss"]), blob["seconds"]
    )


def planar_flow_from_blob(blob: dict[str, Any], ops: str | None = None) -> PlanarFlow:
    """The fitted :class:`PlanarFlow` of a :func:`save_planar` file (``dgm_ext.load``)."""
    return planar_fit_from_blob(blob, ops).flow


def load_planar(path: str | Path, ops: str | None = None) -> FitResult:
    """Read a file written by :func:`save_planar` (``weights_only=True``); ``ops`` overrides
    the saved backend."""
    return planar_fit_from_blob(read_family(path, PLANAR_FORMAT), ops)
