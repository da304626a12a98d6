"""Sample quality of a set of images: a feature network, then FID / KID / IS against a reference.

The numbers depend on the feature network: FID with the library's MNIST classifier (128-d
``penultimate`` layer) and FID with Inception-v3 (2048-d pool3) are different quantities,
and neither is comparable with the other, nor with numbers from another classifier. Every
result therefore names its network, layer, width and sample sizes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from dgm_ext.metrics.frechet import frechet_distance
from dgm_ext.metrics.scores import inception_score, kernel_inception_distance
from dgm_ext.metrics.stats import feature_statistics, load_stats, save_stats

METRICS = ("fid", "kid", "is")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class FeatureSpace:
    """A feature network: ``extract(images) -> (features, class probabilities)``."""

    name: str
    layer: str
    width: int
    extract: Callable[[Tensor], tuple[Tensor, Tensor]]


def mnist_feature_space(
    dataset: str = "mnist", *, root: str | os.PathLike | None = None, **kwargs: Any
) -> FeatureSpace:
    """The library's MNIST / Fashion-MNIST classifier (trained and cached on first use)."""
    from dgm_ext.metrics.mnist_net import class_probs, features, mnist_feature_net

    net = mnist_feature_net(dataset, root=root, **kwargs)

    def extract(images: Tensor) -> tuple[Tensor, Tensor]:
        return features(net, images), class_probs(net, images)

    return FeatureSpace(f"{net.dataset}-classifier", net.feature_layer, net.width, extract)


def inception_feature_space(
    weights_path: str | os.PathLike | None = None, device: torch.device | str | None = None
) -> FeatureSpace:
    """FID Inception-v3 from a local weights file (``$DGM_EXT_INCEPTION_WEIGHTS`` if None)."""
    from dgm_ext.metrics.inception import NUM_FEATURES, fid_inception_v3, inception_outputs

    net = fid_inception_v3(weights_path, device=device)
    return FeatureSpace(
        "fid-inception-v3", "pool3", NUM_FEATURES, lambda x: inception_outputs(net, x)
    )


def load_image_folder(path: str | os.PathLike, limit: int | None = None) -> Tensor:
    """Images of a folder (PNG/JPEG/BMP, sorted by name) as ``(N, C, H, W)`` float in [0, 1].

    Greyscale files give C = 1, colour files C = 3 (alpha dropped); all must share one size.
    """
    from PIL import Image

    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ValueError(f"image folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files")
    arrays = []
    for f in files:
        with Image.open(f) as im:
            grey = im.mode in ("1", "L", "LA", "I;16", "I", "F")
            a = np.asarray(im.convert("L" if grey else "RGB"), dtype=np.float32) / 255.0
        arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"images in {folder} differ in size or channels: {sorted(shapes)}")
    return torch.from_numpy(np.stack(arrays))


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"fid,kid"`` -> ``("fid", "kid")``; rejects unknown names."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise ValueError(f"metrics must be a comma-separated subset of {METRICS}, got {spec!r}")
    return tuple(dict.fromkeys(names))


def sample_quality(
    images: Tensor,
    space: FeatureSpace,
    reference: Tensor | None = None,
    *,
    ref_stats: str | os.PathLike | None = None,
    metrics: Sequence[str] = METRICS,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    is_splits: int = 10,
    save_stats_to: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """FID / KID / IS of ``images`` (``(N, C, H, W)`` in [0, 1]) in the feature ``space``.

    FID needs ``reference`` images or ``ref_stats`` (a pytorch-fid ``.npz`` of ``mu`` and
    ``sigma`` computed in the same feature space); KID needs ``reference`` images; IS needs
    neither. ``save_stats_to`` writes the images' own ``(mu, sigma)`` as such a file.
    """
    metrics = parse_metrics(metrics)
    if "kid" in metrics and reference is None:
        raise ValueError("KID needs reference images (a data split), not only --ref-stats")
    if "fid" in metrics and reference is None and ref_stats is None:
        raise ValueError("FID needs reference images or reference statistics (ref_stats)")
    feats, probs = space.extract(images)
    out: dict[str, Any] = {
        "n": int(images.shape[0]),
        "feature_net": space.name,
        "feature_layer": space.layer,
        "feature_width": space.width,
    }
    ref_feats = None
    if reference is not None and ("kid" in metrics or ("fid" in metrics and ref_stats is None)):
        ref_feats, _ = space.extract(reference)
        out["n_ref"] = int(reference.shape[0])
    if save_stats_to is not None:
        save_stats(save_stats_to, *feature_statistics(feats))
    if "fid" in metrics:
        if ref_stats is not None:
            mu, sigma = load_stats(ref_stats)
            if mu.shape[0] != space.width:
                raise ValueError(
                    f"reference statistics {ref_stats} have {mu.shape[0]} features but "
                    f"{space.name} ({space.layer}) has {space.width}: they come from another "
                    "feature network"
                )
            out["fid"] = frechet_distance(feats, (mu, sigma))
            out["ref_stats"] = str(ref_stats)
        else:
            out["fid"] = frechet_distance(feats, ref_feats)
    if "kid" in metrics:
        size = min(kid_subset_size, feats.shape[0], ref_feats.shape[0])
        out["kid_mean"], out["kid_std"] = kernel_inception_distance(
            feats, ref_feats, subsets=kid_subsets, subset_size=size
        )
        out["kid_subsets"], out["kid_subset_size"] = kid_subsets, size
    if "is" in metrics:
        splits = min(is_splits, probs.shape[0])
        out["is_mean"], out["is_std"] = inception_score(probs, splits=splits)
        out["is_splits"] = splits
    return out
