"""Sample-quality metrics: Fréchet distance, Inception Score and KID from a feature network.

Images: :func:`folder_features` streams a folder of PNG/JPEG/WebP files of any size (and
:func:`tensor_features` a tensor) through a feature network, with one of three resize
conventions (:mod:`dgm_ext.metrics.resize`); features of references are cached by content;
:func:`compare` gives FID, KID, IS and precision/recall/density/coverage (:func:`prdc`).

Feature networks: the library's own MNIST / Fashion-MNIST classifier (weights shipped in the
package, sha256-checked, :func:`mnist_feature_net`) and the FID Inception-v3 loaded from a
local weights file (:func:`fid_inception_v3`). Numbers from different feature networks are
not comparable.
"""

from dgm_ext.metrics.evaluate import (
    METRIC_NAMES,
    METRICS,
    FeatureSpace,
    inception_feature_space,
    load_image_folder,
    mnist_feature_space,
    sample_quality,
)
from dgm_ext.metrics.features import FeatureSet, compare, folder_features, tensor_features
from dgm_ext.metrics.folder import ImageFolderDataset, SkippedImageWarning, list_images
from dgm_ext.metrics.frechet import frechet_distance, frechet_distance_from_stats
from dgm_ext.metrics.inception import FIDInceptionV3, fid_inception_v3, inception_outputs
from dgm_ext.metrics.mnist_net import FeatureNet, class_probs, features, mnist_feature_net
from dgm_ext.metrics.prdc import knn_radii, prdc
from dgm_ext.metrics.resize import RESIZE_METHODS, resize_images
from dgm_ext.metrics.scores import inception_score, kernel_inception_distance
from dgm_ext.metrics.stats import feature_statistics, load_stats, save_stats

__all__ = [
    "METRICS",
    "METRIC_NAMES",
    "RESIZE_METHODS",
    "FIDInceptionV3",
    "FeatureNet",
    "FeatureSet",
    "FeatureSpace",
    "ImageFolderDataset",
    "SkippedImageWarning",
    "class_probs",
    "compare",
    "feature_statistics",
    "features",
    "fid_inception_v3",
    "folder_features",
    "frechet_distance",
    "frechet_distance_from_stats",
    "inception_feature_space",
    "inception_outputs",
    "inception_score",
    "kernel_inception_distance",
    "knn_radii",
    "list_images",
    "load_image_folder",
    "load_stats",
    "mnist_feature_net",
    "mnist_feature_space",
    "prdc",
    "resize_images",
    "sample_quality",
    "save_stats",
    "tensor_features",
]
