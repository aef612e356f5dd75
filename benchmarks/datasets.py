"""The benchmark data: Fashion-MNIST (or synthetic data of the same shapes) and its batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BATCH_SIZE = 256
N_TRAIN, N_TEST = 60_000, 10_000


@dataclass
class Data:
    train_images: np.ndarray   # (N, 28, 28) uint8
    train_labels: np.ndarray   # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str                # "real" or "synthetic" (with the reason when real was asked for)


def synthetic_data(seed=0, n_train=N_TRAIN, n_test=N_TEST) -> Data:
    rng = np.random.default_rng(seed)
    return Data(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train),
                rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test),
                "synthetic (uniform random uint8)")


def load_data(kind="real") -> Data:
    """Fashion-MNIST through lenet_np.data when kind == "real" and it loads, else synthetic data of
    the same shapes and dtype."""
    if kind == "synthetic":
        return synthetic_data()
    try:
        from lenet_np.data import load_fashion_mnist

        ds = load_fashion_mnist()
    except Exception as exc:  # not written yet, not downloaded, damaged: fall back, say why
        data = synthetic_data()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        data.source += f"; the real data did not load: {type(exc).__name__}: {first}"
        return data
    return Data(np.ascontiguousarray(ds.train_images), ds.train_labels.astype(np.int64),
                np.ascontiguousarray(ds.test_images), ds.test_labels.astype(np.int64), "real Fashion-MNIST")


def batch_slices(n, batch_size=BATCH_SIZE, limit=None):
    """(start, stop) of each mini-batch of n examples (the last one may be short), at most ``limit``."""
    starts = range(0, n, batch_size)
    if limit is not None:
        starts = starts[:limit]
    return [(s, min(s + batch_size, n)) for s in starts]


def random_batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)
