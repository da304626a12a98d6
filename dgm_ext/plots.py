"""Figures (PNG, matplotlib Agg backend) shared by the experiments."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

__all__ = ["image_grid", "plot_curves", "plot_image_rows", "save_image_grid", "scatter_by_label"]


def image_grid(images: Tensor, nrow: int, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile images in [0, 1] into one array: ``(N, 1, H, W)`` or ``(N, H, W)`` give a 2-D
    (grey) array, ``(N, 3, H, W)`` an RGB array of shape ``(rows, cols, 3)``."""
    imgs = images.detach().float().cpu()
    rgb = imgs.ndim == 4 and imgs.shape[1] == 3
    if rgb:
        imgs = imgs.permute(0, 2, 3, 1)
    elif imgs.ndim == 4:
        imgs = imgs[:, 0]
    if imgs.ndim != 3 + rgb:
        raise ValueError(
            f"images must be (N, 1, H, W), (N, 3, H, W) or (N, H, W), got {tuple(images.shape)}"
        )
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    n, h, w = imgs.shape[:3]
    ncol = int(np.ceil(n / nrow))
    shape = (nrow * (h + padding) + padding, ncol * (w + padding) + padding)
    grid = np.full(shape + ((3,) if rgb else ()), pad_value)
    for k in range(n):
        r, c = divmod(k, ncol)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[y : y + h, x : x + w] = imgs[k].clamp(0, 1).numpy()
    return grid


def _show(ax: plt.Axes, grid: np.ndarray) -> None:
    """``imshow`` of a grid from :func:`image_grid`: grey levels or RGB, both in [0, 1]."""
    if grid.ndim == 3:
        ax.imshow(grid, interpolation="nearest")
    else:
        ax.imshow(grid, cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def save_image_grid(
    images: Tensor, path: str | Path, nrow: int, title: str | None = None, scale: float = 0.6
) -> Path:
    """Save a grid of images as a PNG (grey ``(N, 1, H, W)`` / ``(N, H, W)`` or RGB
    ``(N, 3, H, W)``, values in [0, 1])."""
    grid = image_grid(images, nrow)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = grid.shape[:2]
    width = max(2.0, scale * w / 30)
    fig, ax = plt.subplots(figsize=(width, max(2.0, scale * h / 30) + 0.6))
    _show(ax, grid)
    ax.axis("off")
    if title:  # wrapped to the figure width
        ax.set_title("\n".join(textwrap.wrap(title, max(20, int(width * 13)))), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_image_rows(rows: Mapping[str, Tensor], path: str | Path, title: str | None = None) -> Path:
    """One labelled row of images per entry (e.g. original / observed / completion)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(rows)
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(names), 1, figsize=(0.9 * n + 1.5, 1.1 * len(names) + 0.4))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        ax.imshow(image_grid(rows[name], nrow=1), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | Path,
    xlabel: str = "epoch",
    ylabel: str = "",
    title: str | None = None,
) -> Path:
    """Line plot of named ``(x, y)`` curves."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (x, y) in curves.items():
        ax.plot(list(x), list(y), marker="o", ms=3, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def scatter_by_label(
    points: Tensor,
    labels: Tensor,
    path: str | Path,
    title: str | None = None,
    xlabel: str = "z1",
    ylabel: str = "z2",
) -> Path:
    """2-D scatter coloured by integer class label (tab10)."""
    pts = torch.as_tensor(points).detach().cpu().numpy()
    lab = torch.as_tensor(labels).detach().cpu().numpy()
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) != len(lab):
        raise ValueError(
            f"points must be (N, 2) matching labels (N,), got {pts.shape}, {lab.shape}"
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 5))
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=lab, cmap="tab10", vmin=-0.5, vmax=9.5, s=8)
    fig.colorbar(sc, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
