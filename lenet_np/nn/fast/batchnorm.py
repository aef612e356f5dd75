"""BatchNorm's fast forms for batch statistics, "sums" on the CPU and "fused" on a GPU: the same
statistics and gradients as nn/batchnorm.py, tested against it. Unlike the other fast forms
they keep the book's record, (xhat, inv_std, count), so that ``saved()`` reads the same on
every path and any backward can follow any forward: they compute the same formulas.

What "sums" changes is how the per-channel sums are taken and how many passes there are:

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

"fused", the GPU's form, takes the same statistics in few kernels (``backend.fused``: one
``cupy.fuse`` kernel each; the plain NumPy operations on the CPU): the mean, the centred sum
and the centred sum of squares (one reduction each), the mean and variance, 1/sqrt(var + eps),
the running statistics in place, and xhat with y in one elementwise kernel; the backward
sum(G), sum(G * xhat) and dL/dx, the book's formula in its order. About 8 launches forward
and 3 backward where the book's version takes 21 and 10.

``choose`` is "auto": for batch statistics, "sums" on the CPU for inputs with axes after the
channels and "fused" on a GPU; else the book's version (an (N, C) input on the CPU;
evaluation with running statistics, which is elementwise only).
"""

from __future__ import annotations

from math import prod
from typing import NamedTuple

import numpy as np

from ... import backend
from . import memory_order

FORMS = ("sums", "fused")


def choose(layer, x) -> str:
    """"auto"'s form for input x, for batch statistics: "fused" on a GPU, "sums" for (N, C, ...)
    inputs on the CPU; else "reference". An (N, C) input is summed over its rows by NumPy as
    well as by BLAS, and there the book's version, with fewer calls, was faster (measured, one thread, forward and
    backward: 0.18 against 0.27 ms at 64 x 120; 64 x 6 x 24 x 24 laid out as a convolution
    leaves it: 5.3 against 2.0 ms; 64 x 16 x 8 x 8: 1.5 against 0.47 ms)."""
    batch_stats = layer.training or not layer.track_running_stats
    if not batch_stats:
        return "reference"
    if backend.on_gpu(backend.get_array_module(x)):
        return "fused"
    return "sums" if x.ndim > 2 else "reference"


def choose_backward(layer, xhat) -> str:
    """The backward's form for a record of batch statistics: "sums" where "auto" (or ``impl``)
    would have run it on this xhat and its memory is one block, else "reference"."""
    if layer.impl == "reference":
        return "reference"
    if layer.impl == "fused" or backend.on_gpu(backend.get_array_module(xhat)):
        return "fused" if layer.impl in ("auto", "fast", "fused") else "reference"
    if layer.impl == "sums" or xhat.ndim > 2:
        return "sums" if as_rows(xhat) is not None else "reference"
    return "reference"


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


def parameter_grads(layer, sum_g, sum_gx, input_grad):
    """Adds dL/dbeta = sum(G) and dL/dgamma = sum(G * xhat), this slice's (C,), into the layer's
    parameters; returns the whole batch's two sums, which dL/dx needs (the other replicas'
    added, if any), or None with input_grad=False."""
    if layer.affine:
        layer.weight.accumulate(sum_gx)
    if layer.bias is not None:
        layer.bias.accumulate(sum_g)
    if not input_grad:
        return None
    return layer.whole_batch_sums(sum_g, sum_gx)


def sums_backward(layer, xhat, inv_std, m, grad_out, input_grad):
    """dL/dx (None with input_grad=False) from the book's record: xhat, inv_std (C,), count m;
    dL/dgamma and dL/dbeta added into the layer's parameters."""
    r = as_rows(xhat)
    g = as_rows(grad_out)
    if g is None or g.order != r.order:                  # lay dL/dy out as xhat, once
        g = as_rows(r.back(np.empty_like(r.rows)))
        g.back(g.rows)[...] = grad_out
    sums = parameter_grads(layer, r.channel_sums(g.rows), r.channel_dots(g.rows, r.rows), input_grad)
    if sums is None:
        return None
    sum_g, sum_gx = sums
    scale = inv_std * layer.weight.data if layer.affine else inv_std
    dx = g.rows - r.per_channel(sum_g / m)
    dx -= r.rows * r.per_channel(sum_gx / m)
    dx *= r.per_channel(scale)
    return r.back(dx)


# -- "fused": the GPU's form ------------------------------------------------------------------
def _channel_sum(xp, axes):
    def bn_channel_sum(x):
        return xp.sum(x, axis=axes)
    return bn_channel_sum


def _centred_sum(xp, axes):
    def bn_centred_sum(x, total, count):
        """sum(x - mean1) per channel, mean1 = total / count (a reduction's result takes no
        kernel argument after it in cupy.fuse, so each kernel divides for itself)."""
        return xp.sum(x - total / count, axis=axes)
    return bn_centred_sum


def _centred_square(xp, axes):
    def bn_centred_square(x, total, count):
        d = x - total / count
        return xp.sum(d * d, axis=axes)
    return bn_centred_square


def _mean_var(xp):
    def bn_mean_var(total, centred, square, count):
        """mean1 = total / count, the shift mean(x - mean1), the mean mean1 + shift and the
        biased variance mean((x - mean1)^2) - shift^2."""
        mean1 = total / count
        shift = centred / count
        return mean1, shift, mean1 + shift, xp.maximum(square / count - shift * shift, 0)
    return bn_mean_var


def _inv_std(xp):
    def bn_inv_std(var, eps):
        return 1 / xp.sqrt(var + eps)
    return bn_inv_std


def _running(xp):
    def bn_running(running_mean, running_var, mean, var, factor, keep, correction):
        """The book's update (_update_running_stats), in place: one kernel. ``keep`` = 1 - factor
        comes from the host: in cupy.fuse an operation between two Python numbers takes the
        smallest type that holds them (float16 for 1 - 0.1)."""
        running_mean *= keep
        running_mean += factor * mean
        running_var *= keep
        running_var += factor * (var * correction)
    return bn_running


def _normalize(xp, affine, bias):
    def bn_normalize(x, mean1, delta, inv_std, *params):
        """xhat = (x - mean1 - delta) * inv_std, where mean1 + delta is the mean: x - mean1 is
        exact for x near mean1, and mean1 + delta rounded to float32 would lose what delta
        carries (activations far from 0 with a small spread)."""
        xhat = ((x - mean1) - delta) * inv_std
        y = xhat * params[0] if affine else xhat * 1
        if bias:
            y += params[1]
        return xhat, y
    return bn_normalize


def _channel_dot(xp, axes):
    def bn_channel_dot(g, xhat):
        return xp.sum(g * xhat, axis=axes)
    return bn_channel_dot


def _input_grad(xp, affine):
    def bn_input_grad(g, xhat, sum_g, sum_gx, m, inv_std, *weight):
        """The book's dL/dx, in its order: (G m - sum(G) - xhat sum(G xhat)) scale / m, with
        scale = inv_std * gamma."""
        dx = g * m
        dx -= sum_g
        dx -= xhat * sum_gx
        dx *= (inv_std * weight[0] if affine else inv_std) / m
        return dx
    return bn_input_grad


def fused_forward(layer, x):
    """(y, xhat, inv_std (C,), count of the whole batch) of a forward with batch statistics."""
    xp = backend.get_array_module(x)
    axes = (0, *range(2, x.ndim))
    shape = (1, layer.num_features) + (1,) * (x.ndim - 2)
    count = x.size // layer.num_features
    total = backend.fused(_channel_sum, axes)(x)
    centre = total.reshape(shape)
    centred = backend.fused(_centred_sum, axes)(x, centre, count)      # float32 sums lose digits ...
    square = backend.fused(_centred_square, axes)(x, centre, count)    # ... which the shift gives back
    mean1, shift, mean, var = backend.fused(_mean_var)(total, centred, square, count)
    delta = shift                                                      # the mean is mean1 + delta
    if layer.sync is None:
        whole = count
    else:             # a DataParallel replica (on the CPU): the whole batch's, combined in float64
        here = np.asarray(mean1, dtype=np.float64) + shift              # mean1 + shift unrounded
        whole, mean, var = layer.whole_batch(count, here, var)
        delta = xp.asarray(mean - np.asarray(mean1, dtype=np.float64), dtype=x.dtype)
        mean, var = (xp.asarray(a, dtype=x.dtype) for a in (mean, var))
    layer.check_count(whole, x.shape)
    inv_std = backend.fused(_inv_std)(var, layer.eps)
    if layer.training and layer.track_running_stats and layer.updates_buffers():
        if layer.momentum is None:                    # a cumulative average: the book's update
            layer._update_running_stats(mean, var, whole)
        else:
            layer.num_batches_tracked += 1
            backend.fused(_running)(layer.running_mean, layer.running_var, mean, var, layer.momentum,
                                    1 - layer.momentum, whole / (whole - 1))
    params = [p.data.reshape(shape) for p in (layer.weight, layer.bias) if p is not None]
    xhat, y = backend.fused(_normalize, layer.affine, layer.bias is not None)(
        x, mean1.reshape(shape), delta.reshape(shape), inv_std.reshape(shape), *params)
    return y, xhat, inv_std, whole


def fused_backward(layer, xhat, inv_std, m, grad_out, input_grad):
    """dL/dx (None with input_grad=False) from the book's record, as ``sums_backward``."""
    axes = (0, *range(2, xhat.ndim))
    shape = (1, layer.num_features) + (1,) * (xhat.ndim - 2)
    sums = parameter_grads(layer, backend.fused(_channel_sum, axes)(grad_out),
                           backend.fused(_channel_dot, axes)(grad_out, xhat), input_grad)
    if sums is None:
        return None
    sum_g, sum_gx = sums
    xp = backend.get_array_module(xhat)
    sum_g, sum_gx = (xp.asarray(a, dtype=xhat.dtype).reshape(shape) for a in (sum_g, sum_gx))
    weight = [layer.weight.data.reshape(shape)] if layer.affine else []
    return backend.fused(_input_grad, layer.affine)(grad_out, xhat, sum_g, sum_gx, m, inv_std.reshape(shape), *weight)


FORWARD = {"sums": sums_forward, "fused": fused_forward}
BACKWARD = {"sums": sums_backward, "fused": fused_backward}
