"""Feature statistics for the Fréchet distance: mean and covariance, and ``.npz`` files holding
them in pytorch-fid's layout (keys ``mu`` and ``sigma``).

A statistics file written here is read by pytorch-fid (``np.load(path)["mu"]``, ``["sigma"]``)
and files written by pytorch-fid (``np.savez_compressed``) or the original TTUR code are read by
:func:`load_stats`; extra keys in a file are ignored.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["as_float64_array", "feature_statistics", "load_stats", "save_stats"]


def as_float64_array(x: Any, name: str) -> np.ndarray:
    """``x`` (a torch tensor on any device, a numpy array or a nested sequence) as a float64
    numpy array; a ``ValueError`` naming ``name`` for complex or non-numeric input."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency of the package
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        if x.is_complex():
            raise ValueError(f"{name} must be real, got a complex tensor ({x.dtype})")
        x = x.detach().to(device="cpu", dtype=torch.float64).numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def check_features(features: Any, name: str) -> np.ndarray:
    f = as_float64_array(features, name)
    if f.ndim != 2:
        raise ValueError(f"{name} must be 2-D (samples, features), got shape {tuple(f.shape)}")
    if f.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for a covariance, got {f.shape[0]}")
    if f.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns (shape {tuple(f.shape)})")
    if not np.isfinite(f).all():
        raise ValueError(f"{name} contains NaN or Inf")
    return f


def feature_statistics(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``mu`` (F,) and covariance ``sigma`` (F, F) of ``features`` (N, F), as float64 numpy
    arrays. ``sigma`` uses ``ddof=1`` (``np.cov(features, rowvar=False)``, as pytorch-fid) and is
    exactly symmetric. Needs N >= 2; N < F is allowed (``sigma`` is then singular)."""
    return _feature_statistics(features, "features")


def _feature_statistics(features: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    f = check_features(features, name)
    mu = f.mean(axis=0)
    centred = f - mu
    sigma = centred.T @ centred
    sigma /= f.shape[0] - 1
    sigma = 0.5 * (sigma + sigma.T)
    return mu, sigma


def check_stats(mu: Any, sigma: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    mu = as_float64_array(mu, f"mu{where}")
    sigma = as_float64_array(sigma, f"sigma{where}")
    if mu.ndim != 1:
        raise ValueError(f"mu{where} must be 1-D (features,), got shape {tuple(mu.shape)}")
    f = mu.shape[0]
    if sigma.shape != (f, f):
        raise ValueError(
            f"sigma{where} must have shape ({f}, {f}) to match mu of shape ({f},), "
            f"got {tuple(sigma.shape)}"
        )
    return mu, sigma


def save_stats(path: str | os.PathLike, mu: Any, sigma: Any) -> None:
    """Write ``mu`` (F,) and ``sigma`` (F, F) to the ``.npz`` file ``path`` (exactly that name;
    no suffix is added) with keys ``mu`` and ``sigma`` in float64, as pytorch-fid does.

    The file appears atomically: written to a temporary file in the same folder, flushed to disk
    and renamed over ``path`` with ``os.replace``, so a reader never sees a partial file."""
    path = Path(path)
    mu, sigma = check_stats(mu, sigma, f" for {path}")
    folder = path.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, mu=mu, sigma=sigma)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(mu, sigma)`` as float64 arrays from the ``.npz`` file ``path`` (keys ``mu`` and
    ``sigma``: files from :func:`save_stats`, pytorch-fid or TTUR). ``ValueError`` naming the file
    when it is not an ``.npz`` archive, lacks a key, or ``mu``/``sigma`` shapes do not match."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{path}: cannot read it as an .npz statistics file ({exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{path}: expected an .npz archive with keys 'mu' and 'sigma', "
            f"got a single array (an .npy file?)"
        )
    with data:
        missing = [k for k in ("mu", "sigma") if k not in data.files]
        if missing:
            raise ValueError(
                f"{path}: missing key(s) {missing}; a statistics file needs 'mu' and 'sigma' "
                f"(keys present: {sorted(data.files)})"
            )
        mu, sigma = data["mu"], data["sigma"]
    return check_stats(mu, sigma, f" in {path}")
