"""Reading dgm_ext model files: what a file is, and one-line errors for files that are not ours.

Every dgm_ext file is a ``torch.save`` dict read with ``weights_only=True``. When torch cannot
read a file that way, its error says to retry with ``weights_only=False`` -- advice that runs
arbitrary code from an untrusted file and that no dgm_ext file ever needs -- so the loaders
answer with :func:`read_model_file`'s message instead. It is the reader under
:func:`dgm_ext.persistence.read` (and so ``dgm_ext.load``); what a file is, is decided there
(:func:`file_kind`, :func:`describe`, re-exported here).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from dgm_ext.persistence import describe, file_kind

__all__ = ["describe", "file_kind", "read_model_file"]

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
