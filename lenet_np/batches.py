"""Mini-batches: the uint8 images and labels of a data set cut into float32 batches, in order
or in one permutation per epoch, on the device the arrays live on (NumPy or CuPy).

``lenet_np.data`` re-exports these names: ``from lenet_np.data import iterate_batches``.
"""

from __future__ import annotations

import numpy as np

from . import backend


def num_batches(n: int, batch_size: int, drop_last: bool = False) -> int:
    """How many mini-batches ``iterate_batches`` yields for ``n`` examples."""
    return n // batch_size if drop_last else -(-n // batch_size)


def iterate_batches(images, labels, batch_size: int, shuffle: bool = False, rng=None, device=None,
                    drop_last: bool = False):
    """Mini-batches ``(x, y)`` of ``images`` (N, rows, cols) uint8 and ``labels`` (N,).

    ``x`` is float32 (B, 1, rows, cols) in [0, 1] (the uint8 values divided by 255) and
    ``y`` int64 (B,); B is ``batch_size`` except for a smaller last batch, which is kept
    unless ``drop_last``. Without ``shuffle`` the examples come in order; with it, in the
    order of one permutation drawn from ``rng`` (a ``numpy.random.Generator``, or a seed)
    when this function is called, so each call is one epoch and visits every example
    exactly once. Batches are cut and converted on the device the arrays live on (NumPy
    or CuPy; both on the same one), or moved first to ``device`` ("cpu"/"cuda") if given.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if backend.device_of(images) != backend.device_of(labels):
        raise ValueError("images and labels must be on the same device")
    xp = backend.get_array_module(images)
    order = xp.asarray(np.random.default_rng(rng).permutation(len(images))) if shuffle else None
    return _batches(images, labels, batch_size, order, device, drop_last)


def _batches(images, labels, batch_size, order, device, drop_last):
    n = len(images)
    for start in range(0, num_batches(n, batch_size, drop_last) * batch_size, batch_size):
        index = slice(start, min(start + batch_size, n)) if order is None else order[start:start + batch_size]
        x, y = images[index], labels[index]
        if device is not None:
            x, y = backend.to_device(x, device), backend.to_device(y, device)
        yield to_float_images(x), y.astype(backend.get_array_module(y).int64)


def to_float_images(images):
    """uint8 images (N, rows, cols) or (N, 1, rows, cols) as the network takes them: float32
    (N, 1, rows, cols) in [0, 1], the values divided by 255, on the images' device."""
    xp = backend.get_array_module(images)
    x = images.astype(xp.float32).reshape(len(images), 1, *images.shape[-2:])
    x /= xp.float32(255)
    return x
