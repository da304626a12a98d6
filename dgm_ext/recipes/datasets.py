"""``--data``: what the ``train`` commands train on.

``mnist``, ``fashion-mnist`` and ``cifar10`` are the library's data sets (their published
splits; CIFAR-10's test split also serves as validation). ``folder:PATH`` is a folder of the
user's images (PNG, JPEG, WebP, BMP; subfolders included), decoded once into memory as 8-bit
pixels, converted to ``--image-channels`` (default: grey when the first image is grey, else
RGB) and resized to ``--image-size`` (default: the first image's size; PIL bicubic with
antialiasing on the 8-bit image). Undecodable files are skipped with one warning naming them.
When every image sits in a first-level subfolder, the subfolders are the classes (sorted names,
as torchvision's ``ImageFolder``), so ``--conditional`` works; otherwise every label is 0. A
seeded tenth of the files (``--data-seed``) is held out as the validation split (and the
reference images of the sample-quality metrics)."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dgm_ext.recipes.options import DATASETS

__all__ = ["DATA_HELP", "TrainingData", "add_data_options", "check_data", "load_training_data"]

DATA_HELP = (
    "training images: mnist, fashion-mnist, cifar10, or folder:PATH (a folder of PNG/JPEG/"
    "WebP files, subfolders included; first-level subfolders are the classes)"
)
VAL_FRACTION = 0.1


@dataclass
class TrainingData:
    """The splits of ``--data`` (datasets of the requested variant) and what describes them."""

    name: str
    train: Any
    val: Any
    test: Any
    image_shape: tuple[int, int, int]
    num_classes: int
    classes: list[str] = field(default_factory=list)

    @property
    def rgb(self) -> bool:
        return self.image_shape[0] == 3


def add_data_options(p: argparse.ArgumentParser) -> None:
    """``--data`` (also ``--dataset``), ``--image-channels`` and ``--image-size``."""
    p.add_argument("--data", "--dataset", dest="dataset", default="mnist", help=DATA_HELP)
    p.add_argument(
        "--image-channels",
        type=int,
        default=None,
        choices=[1, 3],
        help="folder data: 1 (grey) or 3 (RGB) (default: as the first image)",
    )
    p.add_argument(
        "--image-size",
        default=None,
        metavar="HxW",
        help="folder data: resize every image to H x W, e.g. 32x32 or 64 (default: the first "
        "image's size)",
    )


def _folder(spec: str) -> Path | None:
    return Path(spec[len("folder:") :]) if spec.startswith("folder:") else None


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    parts = str(text).lower().split("x")
    try:
        h, w = (int(parts[0]), int(parts[-1])) if len(parts) in (1, 2) else (0, 0)
    except ValueError:
        h = w = 0
    if h < 1 or w < 1:
        raise ValueError(f"--image-size must be H x W (e.g. 32x32) or one side, got {text!r}")
    return h, w


def check_data(args: argparse.Namespace) -> None:
    """Refuse a ``--data`` that names nothing (before anything is loaded)."""
    spec = args.dataset
    folder = _folder(spec)
    if folder is None:
        if spec not in DATASETS:
            raise ValueError(
                f"--data must be one of {', '.join(DATASETS)} or folder:PATH, got {spec!r}"
            )
        if args.image_channels is not None or args.image_size is not None:
            raise ValueError(f"--image-channels and --image-size apply to folder data, not {spec}")
        return
    if not folder.is_dir():
        raise ValueError(f"--data {spec}: {folder} is not a folder")
    _size(args.image_size)


def _folder_pixels(folder: Path, channels: int | None, size: tuple[int, int] | None):
    """(uint8 pixels (N, C, H, W), labels, class names) of a folder's decodable images;
    undecodable files are skipped with one warning naming them."""
    import numpy as np
    import torch
    from PIL import Image

    from dgm_ext.metrics.folder import FolderStream, ImageFolderDataset, list_images, peek_image

    files = list_images(folder)
    if not files:
        raise ValueError(f"--data folder:{folder}: no image files (PNG, JPEG, WebP, BMP) in it")
    c, h, w = peek_image(folder)
    channels = channels or c
    size = size or (h, w)
    decoded = ImageFolderDataset(files, channels)
    stream = FolderStream(files)
    pixels, kept = [], []
    for i in range(len(decoded)):
        image, _, error = decoded[i]
        if error is not None:
            stream.skipped.append((str(files[i]), error))
            continue
        a = image.numpy()
        if a.shape[1:] != size:  # PIL bicubic with antialiasing, on the 8-bit image
            pic = Image.fromarray(a[0] if channels == 1 else a.transpose(1, 2, 0))
            a = np.asarray(pic.resize((size[1], size[0]), Image.BICUBIC))
            a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        pixels.append(torch.from_numpy(np.ascontiguousarray(a)))
        kept.append(files[i])
    stream.warn()
    if not kept:
        raise ValueError(f"--data folder:{folder}: none of its {len(files)} images can be decoded")
    rel = [f.relative_to(folder).parts for f in kept]
    classes: list[str] = []
    labels = torch.zeros(len(kept), dtype=torch.long)
    if all(len(r) >= 2 for r in rel):
        classes = sorted({r[0] for r in rel})
        if len(classes) >= 2:
            index = {name: i for i, name in enumerate(classes)}
            labels = torch.tensor([index[r[0]] for r in rel], dtype=torch.long)
        else:
            classes = []
    return torch.stack(pixels), labels, classes


def load_training_data(
    args: argparse.Namespace, variant: str, *, cifar_variant: str | None = None
) -> TrainingData:
    """The train/val/test splits of ``--data`` as ``variant`` data sets (``--train-size`` /
    ``--val-size`` cut them when the options exist); with ``--conditional``, data without
    class labels is refused."""
    import torch

    from dgm_ext.data import ImageDataset, load_cifar10, load_mnist

    spec, root, verify = args.dataset, args.data_root, not args.no_verify
    seed = getattr(args, "data_seed", 0)
    folder = _folder(spec)
    if folder is not None:
        pixels, labels, classes = _folder_pixels(
            folder, args.image_channels, _size(args.image_size)
        )
        n = pixels.shape[0]
        n_val = min(max(1, math.ceil(VAL_FRACTION * n)), n - 1) if n > 1 else 0
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        tr, va = order[n_val:], order[:n_val] if n_val else order
        name = f"folder:{folder}"

        def part(idx: Any, what: str) -> ImageDataset:
            return ImageDataset.from_pixels(pixels[idx], labels[idx], variant, seed,
                                            name=f"{name}/{what}")  # fmt: skip

        train, val = part(tr, "train"), part(va, "val")
        test = val
        shape = tuple(int(v) for v in pixels.shape[1:])
        k = len(classes)
    elif spec == "cifar10":
        kw = {"root": root, "download": False, "verify": verify}
        v = cifar_variant or ("levels" if variant == "levels" else "float")
        train, test = load_cifar10("train", variant=v, **kw), load_cifar10("test", variant=v, **kw)
        val, shape, k, classes = test, (3, 32, 32), 10, []
    else:
        fashion = spec == "fashion-mnist"
        train, val, test = (
            load_mnist(s, variant, root=root, fashion=fashion, seed=seed, verify=verify)
            for s in ("train", "val", "test")
        )
        shape, k, classes = (1, 28, 28), 10, []
    if getattr(args, "conditional", False) and k < 2:
        raise ValueError(
            f"--conditional needs class labels; {spec} has none (put the images in one "
            "subfolder per class)"
        )
    train = _cut(train, getattr(args, "train_size", None))
    val = _cut(val, getattr(args, "val_size", None))
    return TrainingData(spec, train, val, test, shape, k, classes)  # type: ignore[arg-type]


def _cut(ds: Any, n: int | None) -> Any:
    from dgm_ext.data import ImageDataset

    if n is None or n >= len(ds):
        return ds
    return ImageDataset(ds.images[:n], ds.labels[:n], ds.variant, ds.transform, ds.name)
