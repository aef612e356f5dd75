"""Mini-batches (lenet_np/batches.py): sizes, dtypes, one permutation per epoch, devices, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lenet_np import backend, data


# -- mini-batches -----------------------------------------------------------------------------
def test_num_batches():
    assert data.num_batches(60000, 256) == 235 and data.num_batches(60000, 256, drop_last=True) == 234
    assert data.num_batches(10000, 1000) == 10 and data.num_batches(0, 7) == 0 and data.num_batches(5, 7) == 1


def test_batch_sizes_for_the_training_set():
    images = np.zeros((60000, 2, 3), np.uint8)
    labels = np.zeros(60000, np.uint8)
    sizes = [len(y) for _, y in data.iterate_batches(images, labels, 256, shuffle=True, rng=0)]
    assert sizes == [256] * 234 + [96]
    sizes = [len(x) for x, _ in data.iterate_batches(images, labels, 256, drop_last=True)]
    assert sizes == [256] * 234


def indexed(n, xp=np, rows=3, cols=2):
    """Images whose pixels encode their index, labels = the index (int64): easy to follow."""
    index = np.arange(n)
    images = np.stack([index % 256, index // 256 % 256] * (rows * cols // 2), axis=1).astype(np.uint8)
    return xp.asarray(images.reshape(n, rows, cols)), xp.asarray(index)


def test_batches_dtype_shape_range_and_values(xp):
    images, labels = indexed(1000, xp)
    images[0] = 255
    batches = list(data.iterate_batches(images, labels, 64, shuffle=True, rng=np.random.default_rng(3)))
    assert len(batches) == 16
    for x, y in batches:
        assert backend.get_array_module(x) is xp and backend.get_array_module(y) is xp
        assert x.dtype == np.float32 and x.shape == (len(y), 1, 3, 2) and y.dtype == np.int64
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        expected = backend.as_numpy(images)[backend.as_numpy(y)].astype(np.float32) / np.float32(255)
        np.testing.assert_array_equal(backend.as_numpy(x)[:, 0], expected)     # each x goes with its y
    assert max(float(x.max()) for x, _ in batches) == 1.0


def test_every_example_once_per_epoch_and_epochs_differ(xp):
    images, labels = indexed(1000, xp)
    rng = np.random.default_rng(7)
    orders = [np.concatenate([backend.as_numpy(y) for _, y in data.iterate_batches(images, labels, 96, True, rng)])
              for _ in range(3)]
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(1000))
    assert not np.array_equal(orders[0], orders[1]) and not np.array_equal(orders[1], orders[2])
    assert not np.array_equal(orders[0], np.arange(1000))


def test_same_seed_same_order(xp):
    images, labels = indexed(500, xp)

    def order(rng):
        return np.concatenate([backend.as_numpy(y) for _, y in data.iterate_batches(images, labels, 64, True, rng)])

    np.testing.assert_array_equal(order(np.random.default_rng(11)), order(np.random.default_rng(11)))
    np.testing.assert_array_equal(order(11), order(11))
    assert not np.array_equal(order(np.random.default_rng(11)), order(np.random.default_rng(12)))


def test_one_permutation_drawn_per_call():
    """The permutation is drawn when iterate_batches is called, one rng.permutation(n) per epoch
    (a resumed run restores the rng state of the epoch start and gets the same order)."""
    images, labels = indexed(100)
    rng, twin = np.random.default_rng(5), np.random.default_rng(5)
    batches = data.iterate_batches(images, labels, 30, shuffle=True, rng=rng)
    expected = twin.permutation(100)
    assert rng.bit_generator.state == twin.bit_generator.state
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), expected)


def test_in_order_without_shuffle(xp):
    images, labels = indexed(250, xp)
    batches = list(data.iterate_batches(images, labels, 100))
    assert [len(y) for _, y in batches] == [100, 100, 50]
    np.testing.assert_array_equal(np.concatenate([backend.as_numpy(y) for _, y in batches]), np.arange(250))


def test_batches_moved_to_a_device():
    images, labels = indexed(10)
    x, y = next(data.iterate_batches(images, labels, 4, device="cpu"))
    assert isinstance(x, np.ndarray) and x.shape == (4, 1, 3, 2) and y.dtype == np.int64


def test_batches_reject_bad_arguments():
    images, labels = indexed(10)
    with pytest.raises(ValueError, match="batch_size"):
        data.iterate_batches(images, labels, 0)
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        data.iterate_batches(images, labels[:9], 4)
