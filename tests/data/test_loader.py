"""Augmentation and batching: exact crops and flips, normalisation, seeded shuffles, both devices."""

from __future__ import annotations

import numpy as np
import pytest

from minise.backend import to_numpy
from minise.data.loader import BatchLoader, channel_stats, crop_flip, normalize, random_crop_flip

from ..conftest import on


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    # values 1..255 so that the zero padding is told apart from every pixel
    return np.random.default_rng(seed).integers(1, 256, size=(n, 3, 32, 32)).astype(np.uint8)


def _crop_flip_loop(images: np.ndarray, offsets: np.ndarray, flips: np.ndarray, padding: int) -> np.ndarray:
    """The readable reference: one image at a time."""
    n, c, h, w = images.shape
    out = np.empty_like(images)
    for i in range(n):
        padded = np.zeros((c, h + 2 * padding, w + 2 * padding), images.dtype)
        padded[:, padding:padding + h, padding:padding + w] = images[i]
        r, s = offsets[i]
        window = padded[:, r:r + h, s:s + w]
        out[i] = window[:, :, ::-1] if flips[i] else window
    return out


def test_crop_flip_matches_per_image_reference(device: str) -> None:
    x = _images(8)
    offsets = np.array([[0, 0], [8, 8], [4, 4], [0, 8], [8, 0], [3, 5], [4, 4], [7, 1]])
    flips = np.array([False, False, False, True, True, False, True, True])
    got = crop_flip(on(device, x), on(device, offsets), on(device, flips), padding=4)
    assert got.shape == x.shape and got.dtype == np.uint8
    np.testing.assert_array_equal(to_numpy(got), _crop_flip_loop(x, offsets, flips, 4))


def test_centre_crop_without_flip_is_identity_and_flip_mirrors() -> None:
    x = _images(3)
    centre = np.full((3, 2), 4)
    np.testing.assert_array_equal(crop_flip(x, centre, np.zeros(3, bool)), x)
    np.testing.assert_array_equal(crop_flip(x, centre, np.ones(3, bool)), x[..., ::-1])


def test_corner_crop_brings_in_zero_padding() -> None:
    x = _images(1)
    out = crop_flip(x, np.array([[0, 0]]), np.array([False]))
    assert (out[0, :, :4, :] == 0).all() and (out[0, :, :, :4] == 0).all()
    np.testing.assert_array_equal(out[0, :, 4:, 4:], x[0, :, :28, :28])


def test_random_crop_flip_covers_offsets_and_flips_half() -> None:
    rng = np.random.default_rng(0)
    x = _images(1)
    n = 2000
    batch = np.repeat(x, n, axis=0)
    out = random_crop_flip(batch, rng)
    # recover each image's offset and flip by matching against all 81 x 2 candidates
    found = set()
    flipped = 0
    for i in range(0, n, 10):
        match = [(r, s, f) for r in range(9) for s in range(9) for f in (False, True)
                 if np.array_equal(out[i], crop_flip(x, np.array([[r, s]]), np.array([f]))[0])]
        assert match, "an output that is no crop of the padded image"
        r, s, f = match[0]
        found.add((r, s))
        flipped += f
    assert len(found) > 60  # offsets spread over the 9 x 9 grid
    assert 0.35 < flipped / (n // 10) < 0.65


def test_channel_stats_are_exact() -> None:
    x = _images(50)
    mean, std = channel_stats(x, chunk=7)  # chunking must not change the result
    ref = x.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(mean, ref.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, ref.std(axis=1), rtol=1e-12)


def test_normalize(device: str) -> None:
    x = _images(4)
    mean, std = np.array([0.4, 0.5, 0.6]), np.array([0.2, 0.25, 0.3])
    got = normalize(on(device, x), mean, std)
    assert got.dtype == np.float32
    ref = (x / 255.0 - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(to_numpy(got), ref, rtol=1e-5, atol=1e-5)


def _loader(n: int, batch: int, device: str = "cpu", **kw) -> BatchLoader:
    x = _images(n)
    x[:, 0, 0, 0] = np.arange(n)  # a tag to find each image again
    y = np.arange(n) % 10
    return BatchLoader(x, y, batch, mean=np.zeros(3), std=np.full(3, 1 / 255), device=device, **kw)


def test_loader_without_shuffle_keeps_order_and_last_batch(device: str) -> None:
    loader = _loader(10, 4, device)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    x0, y0 = batches[0]
    assert x0.dtype == np.float32 and x0.shape == (4, 3, 32, 32)
    np.testing.assert_array_equal(to_numpy(y0), [0, 1, 2, 3])
    np.testing.assert_array_equal(to_numpy(x0)[:, 0, 0, 0], [0, 1, 2, 3])  # std 1/255, mean 0: pixel values


def test_loader_drop_last() -> None:
    loader = _loader(10, 4, drop_last=True)
    assert len(loader) == 2 and [len(y) for _, y in loader] == [4, 4]


def test_shuffle_is_seeded_new_each_epoch_and_a_permutation(device: str) -> None:
    a = _loader(30, 8, device, shuffle=True, rng=np.random.default_rng(5))
    b = _loader(30, 8, "cpu", shuffle=True, rng=np.random.default_rng(5))
    epoch1 = np.concatenate([to_numpy(y) for _, y in a])
    epoch2 = np.concatenate([to_numpy(y) for _, y in a])
    tags = np.concatenate([to_numpy(x)[:, 0, 0, 0] for x, _ in b])  # same seed on the CPU: same order
    assert sorted(tags.astype(int)) == list(range(30))
    np.testing.assert_array_equal(tags.astype(int) % 10, epoch1)
    assert not np.array_equal(epoch1, epoch2)


def test_augmented_batch_labels_follow_their_images() -> None:
    loader = _loader(40, 16, shuffle=True, augment=True, rng=np.random.default_rng(1))
    for x, y in loader:
        assert x.shape[1:] == (3, 32, 32)
        assert np.isin(np.asarray(y), np.arange(10)).all()


def test_loader_needs_rng_for_randomness() -> None:
    with pytest.raises(ValueError, match="random generator"):
        _loader(10, 4, shuffle=True)
