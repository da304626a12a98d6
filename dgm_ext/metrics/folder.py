"""A folder of image files, streamed: what users evaluate (samples written by any tool).

* :func:`list_images` -- every PNG/JPEG/WebP/BMP file below a folder, subfolders included,
  sorted by relative path (so ``--n`` takes the same files on every machine).
* :class:`ImageFolderDataset` -- a ``torch.utils.data.Dataset`` that decodes one file at a
  time with Pillow, converts it to the network's channels (grey → RGB by repetition, colour →
  grey with PIL's luma weights, alpha dropped) and, when sizes differ within a batch, resizes it
  to the network's input with the chosen convention (:mod:`dgm_ext.metrics.resize`).
* :func:`iter_folder` -- batches through a ``DataLoader`` (``workers`` processes), so only a
  few batches are in memory at a time whatever the folder's size.

Unreadable files are **skipped with a warning and counted**, never fatal: a truncated or
undecodable file, or one over Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``,
honoured: such a file is refused before it is decoded) is left out, the warning names it and
says why, and :attr:`FolderStream.skipped` lists ``(path, reason)`` for the result. The rest of
the folder is evaluated.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .resize import check_resize, resize_images

__all__ = [
    "IMAGE_SUFFIXES",
    "FolderStream",
    "ImageFolderDataset",
    "SkippedImageWarning",
    "iter_folder",
    "list_images",
    "peek_image",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_GREY_MODES = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I", "F")
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I")  # 16-bit grey files open in these modes
_SHOW = 5  # skipped files named in one warning


class SkippedImageWarning(UserWarning):
    """An image file could not be decoded (or is over Pillow's size limit) and was skipped."""


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files (:data:`IMAGE_SUFFIXES`, any case) below ``folder``, recursively, sorted by
    their path relative to it. ``FileNotFoundError`` / ``NotADirectoryError`` / ``ValueError``
    (no image files) name the folder."""
    root = Path(folder)
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder")
    files = [
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.name.startswith(".")
    ]
    if not files:
        raise ValueError(
            f"image folder {root} holds no {'/'.join(IMAGE_SUFFIXES)} files (subfolders included)"
        )
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _decode(path: Path, channels: int | None) -> np.ndarray:
    """(C, H, W) uint8 of one file; raises on any decoding problem."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decode now: a truncated file raises here, not later
        if channels is None:
            grey = im.mode in _GREY_MODES
        else:
            grey = channels == 1
        if im.mode in _WIDE_MODES:
            # 16-bit grey (PNG): scale to 8 bits; convert() would clip everything above 255
            a = np.asarray(im, dtype=np.float64)
            a = np.clip(np.round(a / 257.0), 0, 255).astype(np.uint8)
            if not grey:
                a = np.repeat(a[..., None], 3, axis=2)
        else:
            a = np.array(im.convert("L" if grey else "RGB"), dtype=np.uint8)
    return a[None] if a.ndim == 2 else a.transpose(2, 0, 1)


def peek_image(folder: str | os.PathLike) -> tuple[int, int, int]:
    """(channels, height, width) of the first decodable image of ``folder``, channels 1 for
    grey files and 3 for colour ones (used to pick a feature network)."""
    for path in list_images(folder):
        try:
            a = _decode(path, None)
        except Exception:  # an unreadable file: look at the next one
            continue
        return int(a.shape[0]), int(a.shape[1]), int(a.shape[2])
    raise ValueError(f"no image in {folder} can be decoded")


class ImageFolderDataset(Dataset):
    """Decoded images of ``files``: item ``i`` is ``(image, i, error)``.

    ``image`` is a (C, H, W) uint8 tensor (``channels`` of them: 1 grey, 3 RGB, None: as the
    file is), or None with ``error`` the reason when the file cannot be decoded. Resizing to
    ``size`` happens in :func:`collate_images` (in the worker processes), only for batches whose
    images differ in size; uniform batches are resized in the main process, where it is batched.
    """

    def __init__(
        self,
        files: list[Path],
        channels: int | None = None,
        size: tuple[int, int] | None = None,
        resize: str = "pytorch-fid",
    ) -> None:
        self.files = list(files)
        self.channels = channels
        self.size = size
        self.resize = check_resize(resize)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor | None, int, str | None]:
        try:
            a = _decode(self.files[i], self.channels)
        except Exception as exc:  # Pillow raises many types (OSError, SyntaxError, bomb error)
            return None, i, f"{type(exc).__name__}: {exc}"
        return torch.from_numpy(np.ascontiguousarray(a)), i, None

    def collate(self, items: list) -> tuple[Tensor | None, list[int], list[tuple[int, str]]]:
        """``(batch, indices, failures)``: the decoded images stacked (uint8 when all share one
        size, else each resized to ``size`` as float32 in [0, 1]), their indices, and
        ``(index, reason)`` for the files that failed."""
        good = [(t, i) for t, i, e in items if e is None]
        failed = [(i, e) for _, i, e in items if e is not None]
        if not good:
            return None, [], failed
        shapes = {tuple(t.shape) for t, _ in good}
        if len(shapes) > 1 and len({s[0] for s in shapes}) > 1:
            raise ValueError(
                "images of one folder have different channel counts and no feature network "
                "fixes them; pass channels"
            )
        if len(shapes) == 1:
            batch = torch.stack([t for t, _ in good])
        elif self.size is None:
            names = sorted({f"{s[1]}x{s[2]}" for s in shapes})
            raise ValueError(
                f"images differ in size ({', '.join(names)}) and no input size is set to "
                "resize them to"
            )
        else:
            batch = torch.cat([resize_images(t[None], self.size, self.resize) for t, _ in good])
        return batch, [i for _, i in good], failed


@dataclass
class FolderStream:
    """What :func:`iter_folder` went through: the files and the ones it skipped."""

    files: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def warn(self) -> None:
        """One :class:`SkippedImageWarning` naming the skipped files (a few) and their count."""
        if not self.skipped:
            return
        shown = "; ".join(f"{p} ({why})" for p, why in self.skipped[:_SHOW])
        more = f"; and {len(self.skipped) - _SHOW} more" if len(self.skipped) > _SHOW else ""
        warnings.warn(
            f"skipped {len(self.skipped)} of {len(self.files)} image files that could not be "
            f"decoded: {shown}{more}",
            SkippedImageWarning,
            stacklevel=3,
        )


def iter_folder(
    files: list[Path],
    stream: FolderStream,
    *,
    channels: int | None,
    size: tuple[int, int] | None,
    resize: str = "pytorch-fid",
    batch_size: int = 50,
    workers: int = 0,
) -> Iterator[Tensor]:
    """Batches of ``files`` (uint8, or float32 when resized in a worker), in file order;
    failures are appended to ``stream.skipped``. ``workers`` > 0 decodes in that many processes
    (each holds at most two batches in flight)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    ds = ImageFolderDataset(files, channels, size, resize)
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=ds.collate,
        prefetch_factor=2 if workers > 0 else None,
    )
    for batch, _, failed in loader:
        stream.skipped.extend((str(files[i]), why) for i, why in failed)
        if batch is not None:
            yield batch
