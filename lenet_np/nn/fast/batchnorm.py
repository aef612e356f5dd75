"""BatchNorm's fast form, "sums", for batch statistics on the CPU: the same statistics and
gradients as nn/batchnorm.py, tested against it. Unlike the other fast forms it keeps the
book's record, (xhat, inv_std, count), so that ``saved()`` reads the same on either path
and either backward can follow either forward: the two compute the same formulas.

What it changes is how the per-channel sums are taken and how many passes there are:

* **In memory order.** A convolution's output is an (N, C, H, W) view of (N, H, C, W) memory
  (nn/fast/conv.py), and NumPy walks such a view in short inner loops: ``x.sum(axis=(0, 2,
  3))`` took 0.43 ms for 64 x 6 x 24 x 24 float32, ``x - mean`` with mean of shape
  (1, C, 1, 1) 0.38 ms against 0.10 for a copy. Read as the 2-D array (rows, C * inner) that
  its memory is (``Rows``), the per-channel sum is one matrix-vector product with ones
  (BLAS, 0.04 ms) and a short sum over ``inner``; a sum of products (sum(G * xhat)) one
  ``einsum`` over the rows, without the product array; and a per-channel constant is laid
  along one row (``np.repeat``) so that every elementwise pass runs in long inner loops.
* **Fewer passes.** The forward's mean correction (the second pass of the book's version)
  is taken from the same array as the sum of squares, and the backward is
  dL/dx = scale * (G - mean(G) - xhat * mean(G * xhat)) in four passes instead of five.

The statistics are exchanged with the other replicas of ``lenet_np.DataParallel`` where
``layer.sync`` is set, as in the book's version (``_BatchNorm.whole_batch``).

``choose`` is "auto": "sums" on the CPU for batch statistics of inputs with axes after the
channels, else the book's version (an (N, C) input; a GPU; evaluation with running
statistics, which is elementwise only).
"""

from __future__ import annotations

from math import prod
from typing import NamedTuple

import numpy as np

from ... import backend

FORMS = ("sums",)


def choose(layer, x) -> str:
    """"auto"'s form for input x: "sums" for batch statistics of (N, C, ...) inputs on the CPU;
    else "reference". An (N, C) input is summed over its rows by NumPy as well as by BLAS, and
    there the book's version, with fewer calls, was faster (measured, one thread, forward and
    backward: 0.18 against 0.27 ms at 64 x 120; 64 x 6 x 24 x 24 laid out as a convolution
    leaves it: 5.3 against 2.0 ms; 64 x 16 x 8 x 8: 1.5 against 0.47 ms)."""
    batch_stats = layer.training or not layer.track_running_stats
    cpu = not backend.on_gpu(backend.get_array_module(x))
    return "sums" if batch_stats and cpu and x.ndim > 2 else "reference"


def choose_backward(layer, xhat) -> str:
    """The backward's form for a record of batch statistics: "sums" where "auto" (or ``impl``)
    would have run it on this xhat and its memory is one block, else "reference"."""
    if layer.impl == "reference" or backend.on_gpu(backend.get_array_module(xhat)):
        return "reference"
    if layer.impl == "sums" or xhat.ndim > 2:
        return "sums" if as_rows(xhat) is not None else "reference"
    return "reference"


def memory_order(a) -> tuple:
    """a's axes from the largest stride to the smallest (axes of length 1 last: their strides
    mean nothing)."""
    return tuple(sorted(range(a.ndim), key=lambda ax: -abs(a.strides[ax]) if a.shape[ax] > 1 else 1))


class Rows(NamedTuple):
    """A (N, C, ...) array read as the 2-D array its memory is: (rows, C * inner), each row
    holding ``inner`` values of every channel in turn (a view)."""
    rows: object
    inner: int
    order: tuple          # the array's axes in memory order
    shape: tuple          # the array's shape

    def per_channel(self, v):
        """(C,) -> (C * inner,): v laid along a row, to broadcast over the rows (long inner loops)."""
        return np.repeat(v, self.inner)

    def channel_sums(self, rows):
        """(C,): each channel's sum of a (rows, C * inner) array laid out as this one."""
        s = rows[0] if len(rows) == 1 else np.ones(len(rows), dtype=rows.dtype) @ rows     # BLAS: one pass
        return s.reshape(-1, self.inner).sum(axis=1)

    def channel_dots(self, a, b):
        """(C,): each channel's sum(a * b), without the product array."""
        return np.einsum("ij,ij->j", a, b).reshape(-1, self.inner).sum(axis=1)

    def back(self, rows):
        """A (rows, C * inner) array as an array of the original shape, laid out as the original (a view)."""
        m = rows.reshape(tuple(self.shape[a] for a in self.order))
        return m.transpose([self.order.index(a) for a in range(len(self.order))])


def as_rows(a):
    """``Rows`` of a, or None when its memory is not one block in some order of its axes."""
    order = memory_order(a)
    m = a.transpose(order)
    if not m.flags.c_contiguous:
        return None
    p = order.index(1)
    inner = prod(m.shape[p + 1:])
    return Rows(m.reshape(prod(m.shape[:p]), a.shape[1] * inner), inner, order, a.shape)


def sums_forward(layer, x):
    """(y, xhat, inv_std (C,), count of the whole batch) of a forward with batch statistics."""
    r = as_rows(x)
    if r is None:                                        # not one block: lay it out as one first
        x = x.copy(order="C")
        r = as_rows(x)
    count = x.size // layer.num_features
    mean1 = r.channel_sums(r.rows) / count               # first pass: float32 sums lose digits ...
    xc = r.rows - r.per_channel(mean1)                   # (rows, C * inner), ours
    shift = r.channel_sums(xc) / count                   # ... which the mean of x - mean1 gives back
    m2 = r.channel_dots(xc, xc)                          # sum (x - mean1)^2 = M2 + count * shift^2
    mean = mean1.astype(np.float64) + shift
    var = np.maximum(m2.astype(np.float64) / count - shift.astype(np.float64) ** 2, 0.0)   # biased
    total, mean, var = layer.whole_batch(count, mean, var)       # other replicas' too, if any
    layer.check_count(total, x.shape)
    inv_std = (1 / np.sqrt(var + layer.eps)).astype(x.dtype)
    xc -= r.per_channel((mean - mean1).astype(x.dtype))  # x - the whole batch's mean
    xhat = xc
    xhat *= r.per_channel(inv_std)
    if layer.training and layer.track_running_stats and layer.updates_buffers():
        layer._update_running_stats(mean.astype(x.dtype), var.astype(x.dtype), total)
    y = xhat * r.per_channel(layer.weight.data) if layer.affine else xhat.copy()
    if layer.bias is not None:
        y += r.per_channel(layer.bias.data)
    return r.back(y), r.back(xhat), inv_std, total


def sums_backward(layer, xhat, inv_std, m, grad_out, input_grad):
    """dL/dx (None with input_grad=False) from the book's record: xhat, inv_std (C,), count m;
    dL/dgamma and dL/dbeta added into the layer's parameters."""
    r = as_rows(xhat)
    g = as_rows(grad_out)
    if g is None or g.order != r.order:                  # lay dL/dy out as xhat, once
        g = as_rows(r.back(np.empty_like(r.rows)))
        g.back(g.rows)[...] = grad_out
    sum_g = r.channel_sums(g.rows)                                  # dL/dbeta (this slice's)
    sum_gx = r.channel_dots(g.rows, r.rows)                         # dL/dgamma
    if layer.affine:
        layer.weight.accumulate(sum_gx)
    if layer.bias is not None:
        layer.bias.accumulate(sum_g)
    if not input_grad:
        return None
    sum_g, sum_gx = layer.whole_batch_sums(sum_g, sum_gx)           # the whole batch's
    scale = inv_std * layer.weight.data if layer.affine else inv_std
    dx = g.rows - r.per_channel(sum_g / m)
    dx -= r.rows * r.per_channel(sum_gx / m)
    dx *= r.per_channel(scale)
    return r.back(dx)
