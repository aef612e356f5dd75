"""The pooling layers' fast forms: MaxPool2d's "offsets", AvgPool2d's "sums", and the backward
of an activation and the pooling after it in one step (see __init__.py for the interface).
Tested against the plain MaxPool2d and AvgPool2d of nn/pooling.py.

* ``"offsets"``: a loop over the KH*KW kernel offsets, each a strided slice of the input the
  size of the output. The forward keeps a running maximum and the offset that first reached
  it; the backward adds the gradient into the slice of each offset where that offset won.
  No (.., KH*KW) copy, no scatter: the choice on the CPU, where each pass stays in the
  cache. In eval mode the forward keeps only the maximum (one ufunc per offset, not four)
  and the winners are found from the kept input if a backward comes after all. The input
  gradient is laid out in memory as the input was, so the layer before reads it without a
  copy.

* ``"sums"`` (AvgPool2d): the same loop over kernel offsets, adding the strided slices into
  the output (no (..., KH, KW, OH, OW) window view to reduce, which NumPy walks in short
  inner loops: measured 4.4 against 0.3 ms for 64 x 6 x 28 x 28 float32), then one
  division. The backward writes each window's share onto its pixels one offset at a time,
  in the input's memory order (where the windows tile the input every pixel is written
  once: no zero fill and no addition).

* ``backward_through(pool, activation, g)``: after an activation (training order:
  activation, then pooling). Max pooling: each window's gradient goes to its winner only,
  and the activation's value there is the window's output p, so its derivative (Sigmoid's
  p * (1 - p), ReLU's [p > 0]) is applied to the N*C*OH*OW outputs before routing instead
  of to KH*KW times as many pixels after it. Average pooling: every pixel gets its window's
  share, so the activation's derivative is needed at every pixel, but the share multiplies
  it in place, one offset at a time: no full-size gradient of the pooling to write and read
  again. Sequential and LeNet use it where it applies (``chain_backward`` in nn/module.py).

* ``"fused"`` (both layers, on a GPU): where the windows neither overlap nor reach into
  padding, each layer is one elementwise kernel forward and one backward (``backend.fused``:
  ``cupy.fuse`` on a GPU, the same NumPy operations on the CPU), over the KH*KW strided
  slices of the input, one per kernel offset. Max pooling: the running maximum and its
  offset with torch's rule ``take = (c > best) | isnan(c)`` (the first maximum, the last
  NaN), the offset kept as uint8; the backward writes ``where(arg == k, g, 0)`` into the
  slice of each offset k. Average pooling: the sum of the slices divided by KH*KW; the
  backward writes the share into each slice. Pixels outside every window (stride larger
  than the kernel, rows or columns left over) are zeroed first. The plain forms take
  about 40 (max) and 10 (average) kernel launches per layer and step where these take 2
  to 3.

``choose`` is "auto": ``offsets`` (max) and ``sums`` (average) on the CPU; on a GPU
``fused`` where it applies (``fusable``), else the plain forms.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ... import backend
from ..checks import check_grad
from ..im2col import pad2d
from . import Fast, Form, memory_order


class OffsetsSaved(NamedTuple):
    x_shape: tuple
    arg: object           # (N, C, OH, OW) winners, or None after an eval-mode forward ...
    x_pad: object         # ... which keeps the padded input instead, to route if asked
    order: tuple          # the input's axes from the largest stride to the smallest
    y: object             # the output (training mode), for backward_through
    nan: bool             # the output holds a NaN (training mode, CPU), or None if not known


class SumsSaved(NamedTuple):
    x_shape: tuple
    order: tuple          # the input's axes from the largest stride to the smallest


def choose(layer, x) -> str:
    """"auto"'s form for input x: the layer's fast form (``FAST``: "offsets" for max, "sums" for
    average pooling) on the CPU; on a GPU "fused" where the windows allow it, else "reference"."""
    if not backend.on_gpu(backend.get_array_module(x)):
        return layer.FAST
    return "fused" if fusable(layer) else "reference"


def fusable(layer) -> bool:
    """The "fused" form applies: no padding, and windows that do not overlap (stride at
    least the kernel, so that each pixel has one writer in the backward's kernel)."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    return layer.padding == (0, 0) and sh >= kh and sw >= kw


def kernel_offsets(layer, oh, ow):
    """(k, slice of the padded input read by kernel offset k = i*KW + j), row-major."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    for i in range(kh):
        for j in range(kw):
            yield i * kw + j, (Ellipsis, slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw))


def offsets_forward(layer, x):
    xp = backend.get_array_module(x)
    ph, pw = layer.padding
    oh, ow = layer._out_size(x.shape)
    x_pad = pad2d(x, ph, pw, -np.inf)
    offsets = list(kernel_offsets(layer, oh, ow))
    if not layer.training:
        # Evaluation rarely needs a backward: keep the input and find the winners only if
        # backward asks (it then gets the same routing as in training).
        y = x_pad[offsets[0][1]].copy(order="K")
        for _, sl in offsets[1:]:
            xp.maximum(y, x_pad[sl], out=y)
        return y, OffsetsSaved(x.shape, None, x_pad, memory_order(x), None, None)
    y, arg, nan = max_and_arg(layer, x_pad, offsets)
    return y, OffsetsSaved(x.shape, arg, None, memory_order(x), y, nan)


def max_and_arg(layer, x_pad, offsets):
    """The running maximum over the kernel offsets, the offset that first reached it, and
    whether the maximum holds a NaN (None on a GPU, where reading that back would wait)."""
    xp = backend.get_array_module(x_pad)
    kh, kw = layer.kernel_size
    gpu = backend.on_gpu(xp)
    y = x_pad[offsets[0][1]].copy(order="K")   # running maximum, same memory order as x
    arg = xp.zeros_like(y, dtype=np.uint8 if kh * kw <= 256 else np.int32)
    better = xp.empty_like(y, dtype=bool)
    won = xp.empty_like(arg)
    for k, sl in offsets[1:]:
        candidate = x_pad[sl]
        xp.greater(candidate, y, out=better)     # strictly greater: the first maximum stays
        if gpu:                                  # torch's rule: (c > best) | isnan(c)
            better |= xp.isnan(candidate)
        xp.maximum(y, candidate, out=y)          # (NaN propagates, as in torch)
        # offsets come in increasing k, so the latest winner is the largest k that won
        xp.multiply(better, arg.dtype.type(k), out=won)
        xp.maximum(arg, won, out=arg)
    # On the CPU, where reading a flag back is free, torch's NaN rule runs only for the
    # rare output that holds a NaN: replay the winners with (c > best) | isnan(c).
    nan = None if gpu else bool(xp.isnan(y).any())
    if nan:
        best = x_pad[offsets[0][1]].copy(order="K")
        arg[...] = 0
        for k, sl in offsets[1:]:
            candidate = x_pad[sl]
            take = (candidate > best) | xp.isnan(candidate)
            xp.copyto(best, candidate, where=take)
            xp.copyto(arg, k, where=take)
    if layer.padding != (0, 0):           # a window of -inf: its first real pixel, as torch
        oh, ow = y.shape[-2:]
        xp.copyto(arg, layer._first_real(xp, oh, ow).astype(arg.dtype), where=y == -np.inf)
    return y, arg, nan


def offsets_backward(layer, saved, grad_out, input_grad):
    if not input_grad:
        return None
    if saved.arg is None:                    # forward ran in eval mode: route now
        _, arg, _ = max_and_arg(layer, saved.x_pad, list(kernel_offsets(layer, *grad_out.shape[-2:])))
        saved = saved._replace(arg=arg, x_pad=None)
        layer.save_for_backward(Fast(FORMS["offsets"], saved))
    return route(layer, saved, grad_out)


def route(layer, saved, grad_out):
    """dL/dx: each window's gradient added onto its winner, one kernel offset at a time."""
    xp = backend.get_array_module(grad_out)
    x_shape, arg, order = saved.x_shape, saved.arg, saved.order
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    n, c, h, w = x_shape
    oh, ow = grad_out.shape[-2:]
    overlap = sh < kh or sw < kw
    dx_pad = padded_like(layer, x_shape, order, grad_out.dtype, xp)
    # 1.0 where offset k holds its window's maximum, else 0.0; a float mask, because a
    # float * bool product goes through a slow casting loop (measured 2.7x slower)
    won = xp.empty_like(grad_out)
    for k, sl in kernel_offsets(layer, oh, ow):
        xp.equal(arg, k, out=won)
        if overlap:                          # a pixel may win several windows: add
            dx_pad[sl] += grad_out * won
        else:                                # each pixel is in one window at most
            xp.multiply(grad_out, won, out=dx_pad[sl])
    return dx_pad[:, :, ph:ph + h, pw:pw + w]


def padded_like(layer, x_shape, order, dtype, xp):
    """A new (N, C, H + 2PH, W + 2PW) array laid out in memory as the input was (axes in
    ``order``), so that the layer before reads its gradient without a copy; zeros unless
    the windows tile the input (then every pixel is written once)."""
    n, c, h, w = x_shape
    (ph, pw) = layer.padding
    alloc = xp.empty if tiles(layer, x_shape) else xp.zeros
    padded = (n, c, h + 2 * ph, w + 2 * pw)
    return alloc(tuple(padded[a] for a in order), dtype=dtype).transpose([order.index(a) for a in range(4)])


# -- AvgPool2d: "sums" ---------------------------------------------------------------------------
def sums_forward(layer, x):
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    oh, ow = layer._out_size(x.shape)
    x_pad = pad2d(x, ph, pw)                        # zeros count in the average (torch's default)
    offsets = [sl for _, sl in kernel_offsets(layer, oh, ow)]
    if len(offsets) == 1:
        y = x_pad[offsets[0]].copy(order="K")       # laid out as x
    else:
        y = x_pad[offsets[0]] + x_pad[offsets[1]]   # laid out as x
        for sl in offsets[2:]:
            y += x_pad[sl]
    y /= kh * kw
    return y, SumsSaved(x.shape, memory_order(x))


def sums_backward(layer, saved, grad_out, input_grad):
    if not input_grad:
        return None
    return spread(layer, saved, share_of(layer, grad_out))


def share_of(layer, grad_out):
    """Each window's gradient divided among its KH*KW pixels; + 0.0 as the plain form's
    0 + share (col2im adds into zeros: -0.0 becomes +0.0 there too)."""
    kh, kw = layer.kernel_size
    share = grad_out / (kh * kw)
    share += 0.0
    return share


def spread(layer, saved, share, into=None):
    """dL/dx of average pooling: each window's share onto each of its pixels, one kernel offset
    at a time (adding where windows overlap), in the input's memory order. With ``into`` (a
    (N, C, H, W) array, windows tiling the input): multiplied into it in place instead."""
    xp = backend.get_array_module(share)
    ph, pw = layer.padding
    n, c, h, w = saved.x_shape
    oh, ow = share.shape[-2:]
    if into is not None:
        for _, sl in kernel_offsets(layer, oh, ow):
            into[sl] *= share
        return into
    dx_pad = padded_like(layer, saved.x_shape, saved.order, share.dtype, xp)
    if tiles(layer, saved.x_shape):
        for _, sl in kernel_offsets(layer, oh, ow):
            dx_pad[sl] = share
    else:
        for _, sl in kernel_offsets(layer, oh, ow):
            dx_pad[sl] += share
    return dx_pad[:, :, ph:ph + h, pw:pw + w]


def tiles(layer, x_shape) -> bool:
    """The windows tile the input: every pixel lies in exactly one window (no padding)."""
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    oh, ow = layer._out_size(x_shape)
    return (layer.padding == (0, 0) and (sh, sw) == (kh, kw)
            and x_shape[2] == oh * sh and x_shape[3] == ow * sw)


def backward_through(layer, activation, grad_out):
    """dL/dx of ``activation`` and the pooling ``layer`` (max or average), which forward ran one
    after the other, in one step; None where the two steps must run (the caller then runs them).

    ``activation`` must be the layer whose output this pooling's last forward took (as in
    Sequential and in LeNet's training order). Max pooling: the activation's derivative
    (``grad_from_output``) at a window's winner is taken at the window's output, on the
    N*C*OH*OW outputs instead of the inputs, before the routing. Average pooling: the
    activation's derivative at every pixel (``local_derivative``, from its own saved
    record) is multiplied in place by its window's share. Where the windows tile the input,
    each pixel receives at most one window's gradient, and the result equals the two
    steps' bit for bit. Otherwise (overlapping windows, padding, pixels outside every
    window), and for max pooling an output that holds a NaN (whose non-winning pixels the
    two steps would also set to NaN), after an evaluation-mode forward of the max pooling,
    on the reference path and on a GPU (where the NaN check is not read back), it returns
    None; and so it does for an activation class that overrides ``backward`` (or
    ``grad_from_output``) without its own derivative, whose ``backward`` would otherwise be
    skipped. (A ``backward`` replaced on the instance is skipped: wrap ``backward_through``
    as well to see every call.)

    The output this pooling returned (max) or the activation's saved record (average) is
    what it uses: changing those arrays in place before the backward changes the gradient,
    as it would for Sigmoid, whose backward reads its own output."""
    record = layer.__dict__.get("_saved")
    if not isinstance(record, Fast):
        return None
    if record.form is FORMS["sums"]:
        return _avg_backward_through(layer, activation, record.saved, grad_out)
    grad_from_output = getattr(activation, "grad_from_output", None)
    cache = record.saved if record.form is FORMS["offsets"] else None
    if (grad_from_output is None or cache is None or cache.y is None
            or cache.nan is not False or not tiles(layer, cache.x_shape)
            or not _derivative_is_backwards(type(activation))):
        return None
    check_grad(layer, grad_out, cache.y.shape)
    return route(layer, cache, grad_from_output(grad_out, cache.y))


def _avg_backward_through(layer, activation, saved, grad_out):
    local_derivative = getattr(activation, "local_derivative", None)
    if (local_derivative is None or not tiles(layer, saved.x_shape) or not activation.has_saved()
            or not _derivative_is_backwards(type(activation), "local_derivative")):
        return None
    check_grad(layer, grad_out, saved.x_shape[:2] + layer._out_size(saved.x_shape))
    d = local_derivative(grad_out.dtype)             # dy/dx of the activation, a new array
    if tuple(d.shape) != tuple(saved.x_shape):
        return None
    return spread(layer, saved, share_of(layer, grad_out), into=d)


def _derivative_is_backwards(cls, name="grad_from_output") -> bool:
    """The class's ``backward`` (and ``grad_from_output``, which it calls) are defined where its
    derivative ``name`` is, or above it: a subclass that overrides ``backward`` (or
    ``grad_from_output``) alone must have that run."""
    def owner(attr):
        return next(k for k in cls.__mro__ if attr in k.__dict__)
    derivative_owner = owner(name)
    return all(issubclass(derivative_owner, owner(attr)) for attr in ("backward", "grad_from_output")
               if any(attr in k.__dict__ for k in cls.__mro__))


# -- "fused": one kernel each way (a GPU's form) -----------------------------------------------------
class FusedSaved(NamedTuple):
    x_shape: tuple
    arg: object           # (N, C, OH, OW) the winning offset (max pooling), None for average pooling


def _max_pool_forward(xp, arg_dtype):
    def max_pool_forward(*slices):
        """The maximum over the kernel offsets' slices and the offset that holds it."""
        best = slices[0]
        # zeros of the output's shape and arg_dtype, with no Python-int operation (cupy.fuse types
        # one between two Python numbers by the smallest type that holds them: int8)
        arg = ((best != best) & (best == best)).astype(arg_dtype)
        for k, c in enumerate(slices[1:], 1):
            take = (c > best) | xp.isnan(c)             # torch: the first maximum, the last NaN
            best = xp.where(take, c, best)
            arg = xp.where(take, k, arg)
        return best, arg.astype(arg_dtype)
    return max_pool_forward


def _max_pool_route(xp):
    def max_pool_route(arg, g, *slices):
        """Each window's gradient into the slice of its winning offset, 0 into the others."""
        for k, d in enumerate(slices):
            d[...] = xp.where(arg == k, g, 0)
    return max_pool_route


def _avg_pool_forward(xp, area):
    def avg_pool_forward(*slices):
        """The mean over the kernel offsets' slices."""
        total = slices[0]
        for c in slices[1:]:
            total = total + c
        return total / area
    return avg_pool_forward


def _avg_pool_spread(xp, area):
    def avg_pool_spread(g, *slices):
        """Each window's share, G / (KH*KW), into every kernel offset's slice."""
        share = g / area + 0.0                          # + 0.0: the plain form's 0 + share
        for d in slices:
            d[...] = share
    return avg_pool_spread


def _slices(layer, a, oh, ow):
    return [a[sl] for _, sl in kernel_offsets(layer, oh, ow)]


def fused_forward(layer, x):
    oh, ow = layer._out_size(x.shape)
    slices = _slices(layer, x, oh, ow)
    area = len(slices)
    if _is_max_pool(layer):
        arg_dtype = np.uint8 if area <= 256 else np.int32
        y, arg = backend.fused(_max_pool_forward, np.dtype(arg_dtype).name)(*slices)
        if y is slices[0]:                  # a 1x1 kernel on NumPy: the function returns its argument
            y = y.copy()
        return y, FusedSaved(x.shape, arg)
    return backend.fused(_avg_pool_forward, area)(*slices), FusedSaved(x.shape, None)


def fused_backward(layer, saved, grad_out, input_grad):
    if not input_grad:
        return None
    xp = backend.get_array_module(grad_out)
    oh, ow = grad_out.shape[-2:]
    dx = (xp.empty if tiles(layer, saved.x_shape) else xp.zeros)(saved.x_shape, dtype=grad_out.dtype)
    slices = _slices(layer, dx, oh, ow)
    if saved.arg is not None:
        backend.fused(_max_pool_route)(saved.arg, grad_out, *slices)
    else:
        backend.fused(_avg_pool_spread, len(slices))(grad_out, *slices)
    return dx


def _is_max_pool(layer) -> bool:
    from ..pooling import MaxPool2d  # nn/pooling.py imports this module
    return isinstance(layer, MaxPool2d)


FORMS = {"offsets": Form("offsets", offsets_forward, offsets_backward),
         "sums": Form("sums", sums_forward, sums_backward),
         "fused": Form("fused", fused_forward, fused_backward)}
