"""Data sets for dgm_ext: MNIST / Fashion-MNIST (IDX files), CIFAR-10 (python batches),
held in memory with a fast, resumable, shardable batch iterator.

Data root: the ``root`` argument, else ``$DGM_EXT_DATA``, else ``~/.cache/dgm_ext``
(``$DGM_EXT_CACHE`` / ``$XDG_CACHE_HOME`` move the cache). Set ``DGM_EXT_NO_DOWNLOAD=1``
to forbid downloads.
"""

from .cifar import CIFAR10_CLASSES, find_cifar10, load_cifar10, read_cifar_batch
from .dataset import (
    VARIANTS,
    BatchLoader,
    ImageDataset,
    ShardedBatchSampler,
    epoch_permutation,
    fetch_batch,
)
from .files import (
    ChecksumError,
    ChecksumWarning,
    DatasetNotFoundError,
    cache_dir,
    data_root,
    md5_file,
)
from .idx import IDXFormatError, decode_idx, read_idx, write_idx
from .mnist import SPLITS, find_mnist_files, load_mnist, load_mnist_arrays

__all__ = [
    "CIFAR10_CLASSES",
    "SPLITS",
    "VARIANTS",
    "BatchLoader",
    "ChecksumError",
    "ChecksumWarning",
    "DatasetNotFoundError",
    "IDXFormatError",
    "ImageDataset",
    "ShardedBatchSampler",
    "cache_dir",
    "data_root",
    "decode_idx",
    "epoch_permutation",
    "fetch_batch",
    "find_cifar10",
    "find_mnist_files",
    "load_cifar10",
    "load_mnist",
    "load_mnist_arrays",
    "md5_file",
    "read_cifar_batch",
    "read_idx",
    "write_idx",
]
