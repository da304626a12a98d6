"""Reading dgm_ext model files: what a file is, and one-line errors for files that are not ours.

Every dgm_ext file is a ``torch.save`` dict read with ``weights_only=True``. When torch cannot
read a file that way, its error says to retry with ``weights_only=False`` -- advice that runs
arbitrary code from an untrusted file and that no dgm_ext file ever needs -- so the loaders
answer with :func:`read_model_file`'s message instead.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

__all__ = ["describe", "file_kind", "read_model_file"]

# the ``format`` entry of each file type (VAE files, the oldest, have none)
_FORMATS = {
    "dgm_ext.gan/1": "gan",
    "dgm_ext.realnvp/1": "realnvp",
    "dgm_ext.train/1": "checkpoint",
    "dgm_ext.flows.planar/1": "planar",
}
_DESCRIPTIONS = {
    "vae": "a dgm_ext VAE file (save_vae)",
    "gan": "a dgm_ext GAN file (save_gan)",
    "realnvp": "a dgm_ext RealNVP file (save_realnvp)",
    "checkpoint": "a dgm_ext training checkpoint (the Trainer's checkpoints/*.pt)",
    "planar": "a dgm_ext planar-flow fit (save_planar)",
}
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's default format is a zip archive


def _why_unreadable(path: Path, exc: BaseException) -> str:
    """What ``path`` is, judged from its first bytes, when torch cannot load it safely."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as err:
        return f"it cannot be read: {err.strerror or err}"
    if not head:
        return "an empty file"
    if head != _ZIP_MAGIC:
        return "not a PyTorch file"
    if isinstance(exc, pickle.UnpicklingError):
        # a complete archive whose objects are not plain tensors and containers
        return (
            "a PyTorch file holding Python objects, which the safe load (weights_only=True) "
            "refuses and dgm_ext files never contain"
        )
    return "a damaged or truncated PyTorch file"


def read_model_file(path: str | Path, what: str = "dgm_ext model") -> dict[str, Any]:
    """The dict saved in ``path`` (``torch.load(weights_only=True)`` on the CPU).

    Raises ``FileNotFoundError`` when ``path`` does not exist and ``ValueError`` with one line
    (``"<path> is not a <what> file (<why>)"``) when it is a folder or not a readable dict.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a {what} file")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here (pickle, zip, OSError, KeyError...)
        raise ValueError(f"{path} is not a {what} file ({_why_unreadable(path, exc)})") from None
    if not isinstance(blob, dict):
        raise ValueError(
            f"{path} is not a {what} file (a PyTorch file holding a {type(blob).__name__}, "
            "not a dgm_ext model)"
        )
    return blob


def file_kind(blob: dict[str, Any]) -> str | None:
    """``"vae"``, ``"gan"``, ``"realnvp"``, ``"checkpoint"`` or ``"planar"`` for a dict read
    from a dgm_ext file; ``None`` for any other dict."""
    fmt = blob.get("format")
    if fmt is None:
        return "vae" if isinstance(blob.get("config"), dict) and "state_dict" in blob else None
    return _FORMATS.get(fmt) if isinstance(fmt, str) else None


def describe(blob: dict[str, Any]) -> str:
    """A few words saying what the file holding ``blob`` is."""
    kind = file_kind(blob)
    if kind is None:
        return "a PyTorch file that is not a dgm_ext model"
    return _DESCRIPTIONS[kind]
