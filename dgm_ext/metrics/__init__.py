"""Sample-quality metrics: Fréchet distance, Inception Score and KID from a feature network.

Feature networks: the library's own MNIST / Fashion-MNIST classifier (trained and cached on
first use, :func:`mnist_feature_net`) and the FID Inception-v3 loaded from a local weights
file (:func:`fid_inception_v3`). Numbers from different feature networks are not comparable.
"""

from dgm_ext.metrics.evaluate import (
    METRICS,
    FeatureSpace,
    inception_feature_space,
    load_image_folder,
    mnist_feature_space,
    sample_quality,
)
from dgm_ext.metrics.frechet import frechet_distance, frechet_distance_from_stats
from dgm_ext.metrics.inception import FIDInceptionV3, fid_inception_v3, inception_outputs
from dgm_ext.metrics.mnist_net import FeatureNet, class_probs, features, mnist_feature_net
from dgm_ext.metrics.scores import inception_score, kernel_inception_distance
from dgm_ext.metrics.stats import feature_statistics, load_stats, save_stats

__all__ = [
    "METRICS",
    "FIDInceptionV3",
    "FeatureNet",
    "FeatureSpace",
    "class_probs",
    "feature_statistics",
    "features",
    "fid_inception_v3",
    "frechet_distance",
    "frechet_distance_from_stats",
    "inception_feature_space",
    "inception_outputs",
    "inception_score",
    "kernel_inception_distance",
    "load_image_folder",
    "load_stats",
    "mnist_feature_net",
    "mnist_feature_space",
    "sample_quality",
    "save_stats",
]
