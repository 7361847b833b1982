"""Data for training: CIFAR-10/100 (download, verify, parse), augmentation and batching.

    from minise.data import load_cifar, channel_stats, BatchLoader
    data = load_cifar("cifar10", data_dir="~/data")       # uint8 (N, 3, 32, 32), int64 labels
    mean, std = channel_stats(data.train_images)
    loader = BatchLoader(data.train_images, data.train_labels, 128, mean=mean, std=std,
                         shuffle=True, augment=True, rng=np.random.default_rng(0))
"""

from .cifar import (
    CIFAR,
    SPECS,
    DataError,
    DataNotFound,
    default_data_dir,
    fetch_url,
    load_cifar,
    md5_of,
    read_cifar_folder,
)
from .loader import BatchLoader, channel_stats, crop_flip, normalize, random_crop_flip
from .synthetic import cifar_or_generated, make_synthetic, write_cifar_archive, write_cifar_folder

__all__ = [
    "CIFAR", "SPECS", "DataError", "DataNotFound", "default_data_dir", "fetch_url", "load_cifar", "md5_of",
    "read_cifar_folder",
    "BatchLoader", "channel_stats", "crop_flip", "normalize", "random_crop_flip",
    "make_synthetic", "cifar_or_generated", "write_cifar_archive", "write_cifar_folder",
]
