"""Batches for training and evaluation, with the paper's CIFAR augmentation.

The CIFAR setup of the paper (after He et al.): pad each 32x32 image with 4 zero pixels on every
side, cut a random 32x32 window out of the 40x40 result, flip it left-right with probability 1/2,
then normalise each channel with the training set's mean and standard deviation:

    x̂_c = (x_c / 255 − μ_c) / σ_c

All of it works on a whole batch at once (one gather, no loop over images) and on whichever
device the images live on: keep the uint8 data set on the GPU and the batches are made there.
The random numbers (window offsets, flips, the shuffle) are drawn on the host from one NumPy
``Generator``, so a seed gives the same batches on the CPU and the GPU, and the generator's state
can be saved in a checkpoint and restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from ..backend import get_array_module, to_device

__all__ = ["channel_stats", "normalize", "crop_flip", "random_crop_flip", "BatchLoader"]


def channel_stats(images: np.ndarray, chunk: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of uint8 images (N, 3, H, W), on the 0..1 scale.

    Sums are taken in int64, in chunks, so they are exact and need little memory.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {images.shape}")
    channels = images.shape[1]
    total = np.zeros(channels, dtype=np.int64)
    total_sq = np.zeros(channels, dtype=np.int64)
    for start in range(0, len(images), chunk):
        block = images[start:start + chunk].astype(np.int64)
        total += block.sum(axis=(0, 2, 3))
        total_sq += (block * block).sum(axis=(0, 2, 3))
    count = images.shape[0] * images.shape[2] * images.shape[3]
    mean = total / count
    var = total_sq / count - mean * mean
    return mean / 255.0, np.sqrt(np.maximum(var, 0.0)) / 255.0


def normalize(images: Any, mean: np.ndarray, std: np.ndarray) -> Any:
    """uint8 (N, C, H, W) -> float32 (x / 255 − μ_c) / σ_c, on the images' device."""
    xp = get_array_module(images)
    scale = xp.asarray((1.0 / (255.0 * np.asarray(std))).astype(np.float32)).reshape(1, -1, 1, 1)
    shift = xp.asarray((np.asarray(mean) / np.asarray(std)).astype(np.float32)).reshape(1, -1, 1, 1)
    return images.astype(xp.float32) * scale - shift


def crop_flip(images: Any, offsets: Any, flips: Any, padding: int = 4) -> Any:
    """Zero-pad by ``padding``, cut an (H, W) window at ``offsets`` (N, 2) = (row, column) of the
    padded image, and mirror the images where ``flips`` (N,) is true. One gather for the batch.

    ``offsets`` lie in 0..2·padding; ``offsets = (padding, padding)`` with no flip returns the image.
    """
    xp = get_array_module(images, offsets, flips)
    n, c, h, w = images.shape
    padded = xp.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    r = xp.arange(h)
    s = xp.arange(w)
    rows = offsets[:, 0:1] + r[None, :]                                   # (N, H)
    cols = offsets[:, 1:2] + xp.where(flips[:, None], w - 1 - s[None, :], s[None, :])  # (N, W)
    batch = xp.arange(n)[:, None, None, None]
    chan = xp.arange(c)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_crop_flip(images: Any, rng: np.random.Generator, padding: int = 4) -> Any:
    """:func:`crop_flip` with window offsets uniform in 0..2·padding and flips with probability 1/2."""
    n = images.shape[0]
    offsets = rng.integers(0, 2 * padding + 1, size=(n, 2))
    flips = rng.random(n) < 0.5
    xp = get_array_module(images)
    return crop_flip(images, xp.asarray(offsets), xp.asarray(flips), padding)


class BatchLoader:
    """Iterate over (images float32 (B, 3, 32, 32), labels int64 (B,)) on ``device``.

    ``shuffle``: a new order every epoch, drawn from ``rng``; ``augment``: random crop and flip;
    ``drop_last``: skip a final batch smaller than ``batch_size``. The uint8 images are moved to
    the device once (pass device arrays to share them between loaders), so each batch is cut,
    augmented and normalised there.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, *, mean: np.ndarray,
                 std: np.ndarray, shuffle: bool = False, augment: bool = False, drop_last: bool = False,
                 rng: np.random.Generator | None = None, device: str = "cpu", padding: int = 4) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if (shuffle or augment) and rng is None:
            raise ValueError("shuffle and augment need a random generator (rng)")
        self.images = to_device(images, device)  # no copy when they are there already
        self.labels = to_device(labels, device)
        if self.labels.dtype != np.int64:
            self.labels = self.labels.astype(np.int64)
        self.batch_size = batch_size
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.shuffle, self.augment, self.drop_last = shuffle, augment, drop_last
        self.rng, self.device, self.padding = rng, device, padding

    @property
    def num_samples(self) -> int:
        return len(self.labels)

    def __len__(self) -> int:
        full, rest = divmod(self.num_samples, self.batch_size)
        return full if (self.drop_last or rest == 0) else full + 1

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        xp = get_array_module(self.images)
        n = self.num_samples
        order = self.rng.permutation(n) if self.shuffle else None
        order_dev = xp.asarray(order) if order is not None else None
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order_dev is None:
                x, y = self.images[lo:hi], self.labels[lo:hi]
            else:
                idx = order_dev[lo:hi]
                x, y = self.images[idx], self.labels[idx]
            if self.augment:
                x = random_crop_flip(x, self.rng, self.padding)
            yield normalize(x, self.mean, self.std), y
