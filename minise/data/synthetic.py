"""A small generated data set in CIFAR's format, and writers for CIFAR's on-disk layout.

``make_synthetic`` draws images that a small network can learn in seconds: each class has its
own smooth colour pattern, and every image is that pattern shifted by a few pixels, brightened or
darkened, with pixel noise on top. It is what ``minise train --quick`` trains on when no CIFAR can
be found, so a fresh machine without internet still runs something real. It is not CIFAR:
accuracy on it says nothing about accuracy on CIFAR.

``cifar_or_generated`` is that rule, written once: CIFAR when there is a copy, the generated set
only when there is no copy at all (a corrupt copy is an error, never silently replaced).

``write_cifar_folder`` and ``write_cifar_archive`` write a data set in the original "python
version" layout (pickled batches in ``cifar-10-batches-py/``, or a ``.tar.gz`` holding it), which
the tests use to build tiny archives and folders.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np

from .cifar import CIFAR, SPECS, DataNotFound, load_cifar

__all__ = ["make_synthetic", "cifar_or_generated", "write_cifar_folder", "write_cifar_archive"]


def make_synthetic(num_train: int = 2000, num_test: int = 500, num_classes: int = 10, seed: int = 0) -> CIFAR:
    """A learnable CIFAR-shaped data set: uint8 (N, 3, 32, 32) images, balanced int64 labels."""
    rng = np.random.default_rng(seed)
    # one pattern per class: a random 4x4 colour grid blown up to 32x32 (blocks of 8x8 pixels)
    coarse = rng.uniform(40, 215, size=(num_classes, 3, 4, 4)).astype(np.float32)
    templates = coarse.repeat(8, axis=2).repeat(8, axis=3)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(n) % num_classes
        rng.shuffle(labels)
        images = templates[labels]
        shifts = rng.integers(-3, 4, size=(n, 2))
        rows = (np.arange(32)[None, :] - shifts[:, :1]) % 32  # a cyclic shift of each image
        cols = (np.arange(32)[None, :] - shifts[:, 1:]) % 32
        images = images[np.arange(n)[:, None, None, None], np.arange(3)[None, :, None, None],
                        rows[:, None, :, None], cols[:, None, None, :]]
        images += 15 * rng.standard_normal((n, 1, 1, 1), dtype=np.float32)  # brightness
        images += 15 * rng.standard_normal(images.shape, dtype=np.float32)  # pixel noise
        return np.clip(np.rint(images), 0, 255).astype(np.uint8), labels.astype(np.int64)

    train_x, train_y = draw(num_train)
    test_x, test_y = draw(num_test)
    classes = [f"pattern{i}" for i in range(num_classes)]
    return CIFAR("synthetic", train_x, train_y, test_x, test_y, classes, source="generated", synthetic=True)


def cifar_or_generated(name: str = "cifar10", data_dir: str | os.PathLike | None = None, *, download: bool = True,
                       num_train: int = 2000, num_test: int = 500, seed: int = 0) -> tuple[CIFAR, str | None]:
    """(data, why): CIFAR ``name`` from ``data_dir`` (see :func:`load_cifar`) and None, or, when no
    copy of it exists at all, the generated set of :func:`make_synthetic` (10 classes) and the
    reason no CIFAR was found (one line, saying where to put it).

    A copy that exists but is corrupt, incomplete or doctored raises :class:`DataError`: falling
    back to other data would hide it.
    """
    try:
        return load_cifar(name, data_dir, download=download), None
    except DataNotFound as exc:
        return make_synthetic(num_train, num_test, num_classes=10, seed=seed), str(exc)


def _batches(spec_name: str, data: CIFAR) -> dict[str, dict]:
    """File name -> the pickled dict, split the way the official archive splits it."""
    spec = SPECS[spec_name]
    files: dict[str, dict] = {}
    for names, x, y in ((spec.train_files, data.train_images, data.train_labels),
                        (spec.test_files, data.test_images, data.test_labels)):
        parts = np.array_split(np.arange(len(y)), len(names))
        for name, idx in zip(names, parts):
            files[name] = {
                b"batch_label": name.encode(),
                spec.label_key: [int(v) for v in y[idx]],
                b"data": np.ascontiguousarray(x[idx].reshape(len(idx), -1), dtype=np.uint8),
                b"filenames": [f"{name}_{i}.png".encode() for i in idx],
            }
    files[spec.meta_file] = {spec.names_key: [c.encode() for c in data.classes]}
    return files


def write_cifar_folder(root: str | os.PathLike, data: CIFAR, spec_name: str = "cifar10") -> Path:
    """Write ``data`` as ``root/cifar-10-batches-py/`` (or ``cifar-100-python/``); returns the folder."""
    folder = Path(root) / SPECS[spec_name].folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in _batches(spec_name, data).items():
        with open(folder / name, "wb") as f:
            pickle.dump(content, f, protocol=2)
    return folder


def write_cifar_archive(path: str | os.PathLike, data: CIFAR, spec_name: str = "cifar10") -> Path:
    """Write ``data`` as a ``.tar.gz`` laid out like the official archive; returns its path."""
    spec = SPECS[spec_name]
    path = Path(path)
    with tarfile.open(path, "w:gz") as tar:
        for name, content in _batches(spec_name, data).items():
            blob = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{spec.folder}/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path
