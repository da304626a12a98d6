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
from typing import Any

import torch
from torch import Tensor

from dgm_ext.metrics.resize import resize_images
from dgm_ext.metrics.stats import save_stats

METRICS = ("fid", "kid", "is")  # the default set
PRDC = ("precision", "recall", "density", "coverage")
# every name --metrics takes; "prdc" stands for the four of Kynkäänniemi / Naeem et al.
METRIC_NAMES = (*METRICS, "prdc", *PRDC)


@dataclass
class FeatureSpace:
    """A feature network: ``extract(images) -> (features, class probabilities)``.

    ``channels`` and ``input_size`` (height, width) are what ``extract`` expects; images of
    other channels or sizes are converted and resized before it (None: taken as they come).
    ``feature_dtype`` is how features are kept (float32 for networks that compute in float32:
    nothing is lost and 50 000 Inception features take 400 MB). ``ident`` names the network
    and its weights exactly, for cache keys (None: never cached). ``device``: where batches go.
    """

    name: str
    layer: str
    width: int
    extract: Callable[[Tensor], tuple[Tensor, Tensor]]
    channels: int | None = None
    input_size: tuple[int, int] | None = None
    feature_dtype: torch.dtype = torch.float64
    ident: str | None = None
    device: torch.device | str | None = None


def mnist_feature_space(
    dataset: str = "mnist",
    *,
    root: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> FeatureSpace:
    """The library's MNIST / Fashion-MNIST classifier: the shipped weights (sha256-checked)
    by default; a non-default ``train_config`` trains one on first use (``root``/``verify``:
    its data), named ``<dataset>-classifier-retrained-<key>`` in results."""
    from dgm_ext.metrics.mnist_net import class_probs, features, mnist_feature_net

    net = mnist_feature_net(dataset, root=root, device=device, **kwargs)

    def extract(images: Tensor) -> tuple[Tensor, Tensor]:
        return features(net, images), class_probs(net, images)

    return FeatureSpace(
        net.name,
        net.feature_layer,
        net.width,
        extract,
        channels=1,
        input_size=(28, 28),
        feature_dtype=torch.float32,
        ident=net.ident,
        device=device,
    )


def inception_feature_space(
    weights_path: str | os.PathLike | None = None, device: torch.device | str | None = None
) -> FeatureSpace:
    """FID Inception-v3 from a local weights file (``$DGM_EXT_INCEPTION_WEIGHTS`` if None)."""
    from dgm_ext.metrics.features import file_sha256
    from dgm_ext.metrics.inception import (
        INPUT_SIZE,
        NUM_FEATURES,
        fid_inception_v3,
        inception_outputs,
    )

    net = fid_inception_v3(weights_path, device=device)
    # On the CPU the activations of a 299x299 image take about 15 MB: passes of 10 images keep
    # them at 150 MB whatever the batch (50 000 images then evaluate in under 2 GB).
    inner = 10 if torch.device(device or "cpu").type == "cpu" else 50
    return FeatureSpace(
        "fid-inception-v3",
        "pool3",
        NUM_FEATURES,
        lambda x: inception_outputs(net, x, batch_size=inner),
        channels=3,
        input_size=(INPUT_SIZE, INPUT_SIZE),
        feature_dtype=torch.float32,
        ident=f"fid-inception-v3:{file_sha256(net.weights_path)}",
        device=device,
    )


def load_image_folder(
    path: str | os.PathLike,
    limit: int | None = None,
    *,
    channels: int | None = None,
    size: tuple[int, int] | None = None,
    resize: str = "pytorch-fid",
) -> Tensor:
    """Images below a folder (recursive, sorted by relative path; PNG/JPEG/WebP/BMP) as one
    ``(N, C, H, W)`` float tensor in [0, 1]: for small folders. Large ones stream through
    :func:`~dgm_ext.metrics.features.folder_features` instead.

    ``channels`` (1 or 3) converts grey and colour files alike; None keeps grey files at C = 1
    and colour ones at C = 3. ``size`` resizes every image with ``resize``; None requires one
    size. Undecodable files are skipped with a warning.
    """
    from dgm_ext.metrics.folder import FolderStream, iter_folder, list_images

    files = list_images(path)
    if limit is not None:
        files = files[:limit]
    stream = FolderStream(files)
    batches = [
        resize_images(b, size, resize) if size is not None else _float01(b)
        for b in iter_folder(files, stream, channels=channels, size=size, resize=resize)
    ]
    stream.warn()
    if not batches:
        raise ValueError(f"no image in {path} could be decoded")
    shapes = {tuple(b.shape[1:]) for b in batches}
    if len(shapes) != 1:
        raise ValueError(f"images in {path} differ in size or channels: {sorted(shapes)}")
    return torch.cat(batches)


def _float01(x: Tensor) -> Tensor:
    return x.float() / 255.0 if x.dtype == torch.uint8 else x


def parse_metrics(spec: str | Sequence[str]) -> tuple[str, ...]:
    """``"fid,kid"`` -> ``("fid", "kid")``; ``"prdc"`` -> the four precision, recall, density,
    coverage; rejects unknown names."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in METRIC_NAMES]
    if bad or not names:
        raise ValueError(
            f"metrics must be a comma-separated subset of {METRIC_NAMES}, got {spec!r}"
        )
    out: list[str] = []
    for n in names:
        out.extend(PRDC if n == "prdc" else (n,))
    return tuple(dict.fromkeys(out))


def describe_space(space: FeatureSpace, resize: str) -> dict[str, Any]:
    """The fields naming how features were made, recorded with every result."""
    return {
        "feature_net": space.name,
        "feature_layer": space.layer,
        "feature_width": space.width,
        "resize": resize,
    }


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
    resize: str = "pytorch-fid",
    batch_size: int = 50,
    nearest_k: int = 3,
) -> dict[str, Any]:
    """FID / KID / IS (and precision, recall, density, coverage) of ``images`` (``(N, C, H,
    W)`` in [0, 1]) in the feature ``space``, images resized to its input with ``resize``.

    FID needs ``reference`` images or ``ref_stats`` (a pytorch-fid ``.npz`` of ``mu`` and
    ``sigma`` computed in the same feature space); KID and precision/recall need ``reference``
    images; IS needs neither. ``save_stats_to`` writes the images' own ``(mu, sigma)`` as such a
    file.
    """
    from dgm_ext.metrics.features import compare, feature_statistics_blocked, tensor_features

    metrics = parse_metrics(metrics)
    if reference is None and ("kid" in metrics or any(m in metrics for m in PRDC)):
        what = "KID" if "kid" in metrics else "precision/recall/density/coverage"
        raise ValueError(f"{what} needs reference images (a data split), not only --ref-stats")
    if "fid" in metrics and reference is None and ref_stats is None:
        raise ValueError("FID needs reference images or reference statistics (ref_stats)")
    a = tensor_features(images, space, resize=resize, batch_size=batch_size, probs="is" in metrics)
    out: dict[str, Any] = {"n": a.n, **describe_space(space, resize)}
    b = None
    needs_ref = [m for m in metrics if m != "is" and not (m == "fid" and ref_stats is not None)]
    if reference is not None and needs_ref:
        b = tensor_features(reference, space, resize=resize, batch_size=batch_size, probs=False)
        out["n_ref"] = b.n
    if save_stats_to is not None:
        save_stats(save_stats_to, *feature_statistics_blocked(a.features))
    out.update(
        compare(
            a,
            b,
            metrics,
            ref_stats=ref_stats,
            kid_subsets=kid_subsets,
            kid_subset_size=kid_subset_size,
            is_splits=is_splits,
            nearest_k=nearest_k,
        )
    )
    return out
