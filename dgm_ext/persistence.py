"""The persistence contract of dgm_ext model files: one writer, one reader, one registry.

Every model file is a ``torch.save`` dict holding a ``format`` tag (``"dgm_ext.<family>/<n>"``),
the model's ``config`` (plain Python values) and its weights (tensors in plain containers), so
that it loads with ``torch.load(weights_only=True)``: reading a file never runs code from it.
:func:`write_model_file` checks that and writes atomically
(:func:`dgm_ext.train.checkpoint.atomic_save`); :func:`read` loads a file once, safely
(:func:`dgm_ext._model_files.read_model_file` words the error for anything that is not a
dgm_ext file), and :func:`load` returns the model whatever its family by looking the tag up in
:data:`FORMATS`, a dict from tag to :class:`ModelFormat` (the loader is imported when first
used: the model packages import this module).

VAE files written before the VAE tag existed (``{"config", "state_dict"}``, no ``format``)
are read as ``dgm_ext.vae/1``, their layout.
"""

from __future__ import annotations

import importlib
import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

__all__ = [
    "CHECKPOINT_FORMAT",
    "FORMATS",
    "GAN_FORMAT",
    "PLANAR_FORMAT",
    "REALNVP_FORMAT",
    "VAE_FORMAT",
    "ModelFile",
    "ModelFormat",
    "describe",
    "file_kind",
    "file_tag",
    "load",
    "read",
    "read_family",
    "write_model_file",
]

VAE_FORMAT = "dgm_ext.vae/1"
GAN_FORMAT = "dgm_ext.gan/1"
REALNVP_FORMAT = "dgm_ext.realnvp/1"
PLANAR_FORMAT = "dgm_ext.flows.planar/1"
CHECKPOINT_FORMAT = "dgm_ext.train/1"  # the Trainer's checkpoints: not a model file

Ops = ModuleType | str | None
Loader = Callable[[dict[str, Any], Ops], torch.nn.Module]


class _Lazy:
    """A loader named by module and function, imported at its first call."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, blob: dict[str, Any], ops: Ops) -> torch.nn.Module:
        return getattr(importlib.import_module(self.module), self.name)(blob, ops)

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(frozen=True)
class ModelFormat:
    """One file format: ``kind`` (short name), ``description`` (how messages name a file of
    it), ``name`` and ``saver`` (for the family loader's messages), the entries every file
    holds (``keys``) and ``loader(blob, ops) -> model`` (``None``: not a model file)."""

    kind: str
    description: str
    name: str
    saver: str
    keys: tuple[str, ...]
    loader: Loader | None


FORMATS: dict[str, ModelFormat] = {
    VAE_FORMAT: ModelFormat(
        "vae",
        "a dgm_ext VAE file (save_vae)",
        "VAE",
        "save_vae",
        ("config", "state_dict"),
        _Lazy("dgm_ext.vae.model", "vae_from_blob"),
    ),
    GAN_FORMAT: ModelFormat(
        "gan",
        "a dgm_ext GAN file (save_gan)",
        "dgm_ext GAN",
        "save_gan",
        ("config", "generator", "critic"),
        _Lazy("dgm_ext.gan.gan", "gan_from_blob"),
    ),
    REALNVP_FORMAT: ModelFormat(
        "realnvp",
        "a dgm_ext RealNVP file (save_realnvp)",
        "RealNVP",
        "save_realnvp",
        ("config", "state_dict"),
        _Lazy("dgm_ext.flows.realnvp", "realnvp_from_blob"),
    ),
    PLANAR_FORMAT: ModelFormat(
        "planar",
        "a dgm_ext planar-flow fit (save_planar)",
        "planar-flow",
        "save_planar",
        ("config", "state_dict", "curve_steps", "curve_loss", "seconds"),
        _Lazy("dgm_ext.flows.fit", "planar_flow_from_blob"),
    ),
    CHECKPOINT_FORMAT: ModelFormat(
        "checkpoint",
        "a dgm_ext training checkpoint (the Trainer's checkpoints/*.pt)",
        "training checkpoint",
        "Trainer",
        ("model",),
        None,
    ),
}


def file_tag(blob: dict[str, Any]) -> str | None:
    """The format tag of a dict read from a file: its ``format`` entry, ``VAE_FORMAT`` for
    an untagged VAE file of earlier versions, ``None`` when there is no tag."""
    fmt = blob.get("format")
    if fmt is None and isinstance(blob.get("config"), dict) and "state_dict" in blob:
        return VAE_FORMAT
    return fmt if isinstance(fmt, str) else None


def file_kind(blob: dict[str, Any]) -> str | None:
    """``"vae"``, ``"gan"``, ``"realnvp"``, ``"planar"`` or ``"checkpoint"`` for a dict read
    from a dgm_ext file; ``None`` for any other dict."""
    fmt = FORMATS.get(file_tag(blob) or "")
    return fmt.kind if fmt is not None else None


def describe(blob: dict[str, Any]) -> str:
    """A few words saying what the file holding ``blob`` is."""
    tag = file_tag(blob)
    fmt = FORMATS.get(tag or "")
    if fmt is not None:
        return fmt.description
    if tag is not None and tag.startswith("dgm_ext."):
        return f"a dgm_ext file of format {tag!r}, which this version does not read"
    return "a PyTorch file that is not a dgm_ext model"


_PLAIN = (str, int, float, bool, type(None))
_MAPPINGS = (dict, OrderedDict)  # state_dict() is an OrderedDict


def _check_plain(obj: Any, where: str) -> None:
    """Refuse values that ``torch.load(weights_only=True)`` would not read back (exact types:
    subclasses such as numpy's float64 are pickled as their own class and refused there)."""
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return
    if type(obj) in _MAPPINGS:
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}, not a str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(obj).__name__}: a model file holds only tensors, str, int, float, "
        "bool, None and lists, tuples and dicts of them (so that it loads with weights_only=True)"
    )


def write_model_file(
    path: str | os.PathLike, tag: str, config: dict[str, Any], **entries: Any
) -> Path:
    """Write ``{"format": tag, "config": config, **entries}`` to ``path`` atomically.

    ``tag`` must be a model format of :data:`FORMATS` and ``entries`` must hold its weights
    (its ``keys``); every value must be a tensor or a plain value (``TypeError`` otherwise,
    before anything is written). Returns ``path``.
    """
    from dgm_ext.train.checkpoint import atomic_save

    fmt = FORMATS.get(tag)
    if fmt is None or fmt.loader is None:
        raise ValueError(f"tag: {tag!r} is not a model file format ({sorted(FORMATS)})")
    blob = {"format": tag, "config": config, **entries}
    missing = [k for k in fmt.keys if k not in blob]
    if missing:
        raise ValueError(f"a {fmt.name} file needs the entries {missing}")
    _check_plain(blob, "model file")
    path = Path(path)
    atomic_save(blob, path)
    return path


@dataclass(frozen=True, eq=False)
class ModelFile:
    """A dgm_ext file read once: its ``path``, ``blob`` (the saved dict) and ``tag``."""

    path: Path
    blob: dict[str, Any]

    @property
    def tag(self) -> str | None:
        """The format tag (:func:`file_tag`)."""
        return file_tag(self.blob)

    @property
    def format(self) -> ModelFormat | None:
        """The registered format of the file, ``None`` when it has none."""
        return FORMATS.get(self.tag or "")

    @property
    def kind(self) -> str | None:
        """``"vae"``, ``"gan"``, ``"realnvp"``, ``"planar"``, ``"checkpoint"`` or ``None``."""
        fmt = self.format
        return fmt.kind if fmt is not None else None

    def check(self) -> ModelFormat:
        """The file's format; one-line ``ValueError`` when it lacks an entry of it."""
        fmt = self.format
        if fmt is None:
            raise ValueError(
                f"{self.path} is not a dgm_ext model file: it is {describe(self.blob)}"
            )
        missing = [k for k in fmt.keys if k not in self.blob]
        if missing:
            raise ValueError(
                f"{self.path} is a damaged {fmt.name} file: it has no {', '.join(missing)}"
            )
        return fmt

    def load(self, ops: Ops = None) -> torch.nn.Module:
        """The model of a model file (see :func:`load`); one-line ``ValueError`` otherwise."""
        fmt = self.check()
        if fmt.loader is None:
            loadable = ", ".join(f.saver for f in FORMATS.values() if f.loader is not None)
            raise ValueError(
                f"{self.path} is {fmt.description}, not a model file: dgm_ext.load reads the "
                f"files of {loadable}"
            )
        return fmt.loader(self.blob, ops)


def read(path: str | os.PathLike) -> ModelFile:
    """Read ``path`` once (``weights_only=True``, on the CPU).

    ``FileNotFoundError`` when it does not exist; one-line ``ValueError`` when it is a folder
    or not a dict saved by torch (:func:`dgm_ext._model_files.read_model_file`).
    """
    from dgm_ext._model_files import read_model_file

    path = Path(path)
    return ModelFile(path, read_model_file(path))


def load(path: str | os.PathLike, ops: Ops = None) -> torch.nn.Module:
    """The model saved in ``path``, whatever its family, after one safe load.

    ``VAE`` (``save_vae``; also untagged files of earlier versions), ``GAN`` in eval mode
    (``save_gan``; with the EMA generator when it was saved with one), RealNVP ``ImageFlow``
    (``save_realnvp``), ``PlanarFlow`` (``save_planar``; ``load_planar`` gives the whole
    fit). ``ops`` selects the op backend (``"fused"``, ``"reference"``; planar fits: the
    saved one by default). One-line ``ValueError`` for any other file.
    """
    return read(path).load(ops)


def read_family(path: str | os.PathLike, tag: str) -> dict[str, Any]:
    """The dict of ``path`` for a family loader that reads only ``tag`` files.

    ``FileNotFoundError("path: no <name> file at <path>")`` when it is missing; one-line
    ``ValueError`` when it is not a ``tag`` file, saying what it is instead.
    """
    from dgm_ext._model_files import read_model_file

    fmt = FORMATS[tag]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no {fmt.name} file at {path}")
    mf = ModelFile(path, read_model_file(path, fmt.name))
    if mf.tag != tag:
        raise ValueError(
            f"path: {path} is not a {fmt.name} file written by {fmt.saver}: "
            f"it is {describe(mf.blob)}"
        )
    mf.check()
    return mf.blob
