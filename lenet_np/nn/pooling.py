"""MaxPool2d and AvgPool2d.

Shapes (notation of im2col.py)
    x   (N, C, H, W)
    y   (N, C, OH, OW)      OH = (H + 2*PH - KH) // SH + 1, likewise OW

Max pooling
    forward   y[n,c,oh,ow] = max over the window of x_pad (padding is -inf)
    backward  each window sends its whole gradient to ONE element: the first
              maximum in row-major order (as torch does, also on ties). Where
              windows overlap, a pixel that wins several windows sums their
              gradients (+=, never =). Torch's rule for the rare cases, on both
              backends: a window holding NaN outputs NaN and routes to its last
              NaN; a window of only -inf routes to its first real pixel, never
              into the padding.

Average pooling (torch's defaults: zero padding counted in the average)
    forward   y = mean of the window of x_pad
    backward  every element of a window receives grad / (KH*KW)

Two implementations of max pooling, both general, both on NumPy and CuPy:

* ``impl="reference"``: the window view (N, C, OH, OW, KH*KW), ``argmax`` over the
  last axis, and a scatter-add (``xp.add.at``) of the gradient to the winning positions.
  A few large operations: the choice on a GPU.
* ``impl="offsets"``: a loop over the KH*KW kernel offsets, each a strided
  slice of the input the size of the output. The forward keeps a running maximum
  and the offset that first reached it; the backward adds the gradient into the
  slice of each offset where that offset won. No (.., KH*KW) copy, no scatter: the
  choice on the CPU, where each pass stays in the cache.
  In eval mode the forward keeps only the maximum (one ufunc per offset, not four) and the
  winners are found from the kept input if a backward comes after all. The input gradient
  is laid out in memory as the input was, so the layer before reads it without a copy.

After an activation (training order: activation, then pooling), the backward of the two
can run as one step, ``backward_through``: each window's gradient goes to its winner only,
and the activation's value there is the window's output p, so its derivative (Sigmoid's
p * (1 - p), ReLU's [p > 0]) is applied to the N*C*OH*OW outputs before routing instead of
to KH*KW times as many pixels after it. Sequential and LeNet use it where it applies.

``impl="auto"`` (the default; ``"fast"`` is the same) picks ``offsets`` on the CPU and
``reference`` on a GPU.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from .checks import check_grad, check_input, check_spatial, pair
from .conv import check_impl
from .im2col import col2im, conv_output_size, pad2d, windows
from .module import Module

POOL_IMPLS = ("auto", "fast", "reference", "offsets")


class _WindowCache(NamedTuple):
    x_shape: tuple
    arg: object           # (N, C, OH, OW) the winner's offset k = i*KW + j in each window


class _OffsetsCache(NamedTuple):
    x_shape: tuple
    arg: object           # (N, C, OH, OW) winners, or None after an eval-mode forward ...
    x_pad: object         # ... which keeps the padded input instead, to route if asked
    order: tuple          # the input's axes from the largest stride to the smallest
    y: object             # the output (training mode), for backward_through
    nan: bool             # the output holds a NaN (training mode, CPU), or None if not known


class _Pool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0, impl=None):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride if stride is not None else kernel_size, "stride")
        self.padding = pair(padding, "padding")
        kh, kw = self.kernel_size
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"{type(self).__name__}: kernel_size and stride must be >= 1 and padding "
                             f">= 0, got kernel_size={kernel_size}, stride={stride}, padding={padding}")
        if self.padding[0] > kh // 2 or self.padding[1] > kw // 2:
            raise ValueError(f"{type(self).__name__}: padding should be at most half of kernel_size "
                             f"(as in torch), got padding={padding}, kernel_size={kernel_size}")
        self.impl = impl
        self._cache = None

    @property
    def impl(self) -> str:
        """Max pooling: "auto" (per backend), "reference" or "offsets"; average pooling has one form."""
        return self._impl

    @impl.setter
    def impl(self, impl):
        self._impl = check_impl(type(self).__name__, impl, POOL_IMPLS)

    def extra_repr(self):
        def show(v):
            return v[0] if v[0] == v[1] else v
        return (f"kernel_size={show(self.kernel_size)}, stride={show(self.stride)}, "
                f"padding={show(self.padding)}")

    def _check(self, x):
        check_input(self, x, "(N, C, H, W)", ndim=4)
        check_spatial(self, x, "(N, C, H, W)", self.kernel_size, self.stride, self.padding)

    def _out_size(self, x_shape):
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (conv_output_size(x_shape[2], kh, sh, ph), conv_output_size(x_shape[3], kw, sw, pw))

    def _offsets(self, oh, ow):
        """(k, slice of the padded input read by kernel offset k = i*KW + j), row-major."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        for i in range(kh):
            for j in range(kw):
                yield i * kw + j, (Ellipsis, slice(i, i + sh * oh, sh), slice(j, j + sw * ow, sw))

    def _first_real(self, xp, oh, ow):
        """(OH, OW): the offset k of each window's first pixel that is not padding."""
        (kw, (sh, sw), (ph, pw)) = self.kernel_size[1], self.stride, self.padding
        i0 = xp.maximum(ph - xp.arange(oh) * sh, 0)
        j0 = xp.maximum(pw - xp.arange(ow) * sw, 0)
        return i0[:, None] * kw + j0[None, :]


class MaxPool2d(_Pool2d):
    def forward(self, x):
        self._check(x)
        if self.path_for(x) == "reference":
            return self._forward_reference(x)
        return self._forward_offsets(x)

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        check_grad(self, grad_out, self._cache.x_shape[:2] + self._out_size(self._cache.x_shape))
        if not input_grad:
            return None
        if isinstance(self._cache, _WindowCache):
            return self._backward_reference(grad_out)
        return self._backward_offsets(grad_out)

    def path_for(self, x) -> str:
        """The implementation that runs for input x: ``impl``, or the backend's choice for "auto"."""
        if self.impl in ("reference", "offsets"):
            return self.impl
        return "reference" if backend.on_gpu(backend.get_array_module(x)) else "offsets"

    # -- reference: argmax over the window view, scatter-add back ------------------------
    def _forward_reference(self, x):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        win = windows(pad2d(x, ph, pw, -np.inf), kh, kw, sh, sw)   # (N, C, KH, KW, OH, OW)
        oh, ow = win.shape[-2:]
        win = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c, oh, ow, kh * kw)
        arg = win.argmax(axis=-1)                                   # the first maximum
        nan = xp.isnan(win)                                         # torch: the last NaN wins
        last_nan = kh * kw - 1 - nan[..., ::-1].argmax(axis=-1)
        arg = xp.where(nan.any(axis=-1), last_nan, arg)
        y = xp.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
        if ph or pw:                       # a window of -inf: its first real pixel, as torch
            arg = xp.where(y == -np.inf, self._first_real(xp, oh, ow), arg)
        self._cache = _WindowCache(x.shape, arg)
        return y

    def _backward_reference(self, grad_out):
        xp = backend.get_array_module(grad_out)
        x_shape, arg = self._cache
        (sh, sw), (ph, pw) = self.stride, self.padding
        kw = self.kernel_size[1]
        n, c, h, w = x_shape
        oh, ow = arg.shape[-2:]
        # row and column of each winner in the padded image
        rows = xp.arange(oh)[:, None] * sh + arg // kw
        cols = xp.arange(ow)[None, :] * sw + arg % kw
        dx_pad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype)
        nn_, cc = xp.ogrid[:n, :c]
        xp.add.at(dx_pad, (nn_[..., None, None], cc[..., None, None], rows, cols), grad_out)
        return dx_pad[:, :, ph:ph + h, pw:pw + w]

    # -- offsets: a loop over kernel offsets on strided slices ---------------------------
    def _forward_offsets(self, x):
        xp = backend.get_array_module(x)
        ph, pw = self.padding
        oh, ow = self._out_size(x.shape)
        x_pad = pad2d(x, ph, pw, -np.inf)
        offsets = list(self._offsets(oh, ow))
        if not self.training:
            # Evaluation rarely needs a backward: keep the input and find the winners only if
            # backward asks (it then gets the same routing as in training).
            y = x_pad[offsets[0][1]].copy(order="K")
            for _, sl in offsets[1:]:
                xp.maximum(y, x_pad[sl], out=y)
            self._cache = _OffsetsCache(x.shape, None, x_pad, memory_order(x), None, None)
            return y
        y, arg, nan = self._max_and_arg(x_pad, offsets)
        self._cache = _OffsetsCache(x.shape, arg, None, memory_order(x), y, nan)
        return y

    def _max_and_arg(self, x_pad, offsets):
        """The running maximum over the kernel offsets, the offset that first reached it, and
        whether the maximum holds a NaN (None on a GPU, where reading that back would wait)."""
        xp = backend.get_array_module(x_pad)
        kh, kw = self.kernel_size
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
        if self.padding != (0, 0):           # a window of -inf: its first real pixel, as torch
            oh, ow = y.shape[-2:]
            xp.copyto(arg, self._first_real(xp, oh, ow).astype(arg.dtype), where=y == -np.inf)
        return y, arg, nan

    def _backward_offsets(self, grad_out):
        xp = backend.get_array_module(grad_out)
        c = self._cache
        if c.arg is None:                        # forward ran in eval mode: route now
            _, arg, _ = self._max_and_arg(c.x_pad, list(self._offsets(*grad_out.shape[-2:])))
            self._cache = c = c._replace(arg=arg, x_pad=None)
        return self._route(xp, grad_out)

    def _route(self, xp, grad_out):
        """dL/dx: each window's gradient added onto its winner, one kernel offset at a time."""
        x_shape, arg, order = self._cache.x_shape, self._cache.arg, self._cache.order
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = x_shape
        oh, ow = grad_out.shape[-2:]
        overlap = sh < kh or sw < kw
        alloc = xp.empty if self._tiles(x_shape) else xp.zeros   # every pixel written once?
        padded = (n, c, h + 2 * ph, w + 2 * pw)                    # laid out as the input was:
        dx_pad = alloc(tuple(padded[a] for a in order), dtype=grad_out.dtype)
        dx_pad = dx_pad.transpose([order.index(a) for a in range(4)])
        # 1.0 where offset k holds its window's maximum, else 0.0; a float mask, because a
        # float * bool product goes through a slow casting loop (measured 2.7x slower)
        won = xp.empty_like(grad_out)
        for k, sl in self._offsets(oh, ow):
            xp.equal(arg, k, out=won)
            if overlap:                          # a pixel may win several windows: add
                dx_pad[sl] += grad_out * won
            else:                                # each pixel is in one window at most
                xp.multiply(grad_out, won, out=dx_pad[sl])
        return dx_pad[:, :, ph:ph + h, pw:pw + w]

    def _tiles(self, x_shape) -> bool:
        """The windows tile the input: every pixel lies in exactly one window (no padding)."""
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        oh, ow = self._out_size(x_shape)
        return (self.padding == (0, 0) and (sh, sw) == (kh, kw)
                and x_shape[2] == oh * sh and x_shape[3] == ow * sw)

    def backward_through(self, activation, grad_out):
        """dL/dx of ``activation`` and this pooling, which forward ran one after the other, in
        one step; None where the two steps must run (the caller then runs them).

        ``activation`` must be the layer whose output this pooling's last forward took (as in
        Sequential and in LeNet's training order) and offer ``grad_from_output``. Its
        derivative at a window's winner is taken at the window's output, on the N*C*OH*OW
        outputs instead of the inputs, before the routing. Where the windows tile the input,
        each pixel receives at most one window's gradient, and the result equals the two
        steps' bit for bit. Otherwise (overlapping windows, padding, pixels outside every
        window), and for an output that holds a NaN (whose non-winning pixels the two steps
        would also set to NaN), after an evaluation-mode forward, on the reference path and on
        a GPU (where the NaN check is not read back), it returns None; and so it does for an
        activation class that overrides ``backward`` without its own ``grad_from_output``,
        whose ``backward`` would otherwise be skipped. (A ``backward`` replaced on the
        instance is skipped: wrap ``backward_through`` as well to see every call.)

        The output this pooling returned is what it uses: changing that array in place before
        the backward changes the gradient, as it would for Sigmoid, whose backward reads its
        own output."""
        grad_from_output = getattr(activation, "grad_from_output", None)
        cache = self._cache
        if (grad_from_output is None or not isinstance(cache, _OffsetsCache) or cache.y is None
                or cache.nan is not False or not self._tiles(cache.x_shape)
                or not _derivative_is_backwards(type(activation))):
            return None
        check_grad(self, grad_out, cache.y.shape)
        xp = backend.get_array_module(grad_out)
        return self._route(xp, grad_from_output(grad_out, cache.y))


def _derivative_is_backwards(cls) -> bool:
    """The class's ``backward`` is defined where its ``grad_from_output`` is, or above it: a
    subclass that overrides ``backward`` alone must have that ``backward`` run."""
    backward_owner = next(k for k in cls.__mro__ if "backward" in k.__dict__)
    derivative_owner = next(k for k in cls.__mro__ if "grad_from_output" in k.__dict__)
    return issubclass(derivative_owner, backward_owner)


def memory_order(x) -> tuple:
    """x's axes from the largest stride to the smallest: (0, 1, 2, 3) for a C-contiguous
    array, (1, 0, 2, 3) for an (N, C, H, W) view of (C, N, H, W) memory."""
    return tuple(sorted(range(x.ndim), key=lambda a: -abs(x.strides[a])))


class AvgPool2d(_Pool2d):
    """Average pooling; zero padding counts in the average (torch's count_include_pad=True)."""

    def forward(self, x):
        self._check(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        win = windows(pad2d(x, ph, pw), kh, kw, sh, sw)             # (N, C, KH, KW, OH, OW)
        self._cache = x.shape
        return win.mean(axis=(2, 3))

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        check_grad(self, grad_out, self._cache[:2] + self._out_size(self._cache))
        if not input_grad:
            return None
        xp = backend.get_array_module(grad_out)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        share = grad_out / (kh * kw)                                 # (N, C, OH, OW)
        n, c, oh, ow = share.shape
        cols = xp.broadcast_to(share[:, :, None, None], (n, c, kh, kw, oh, ow))
        return col2im(cols, self._cache, sh, sw, ph, pw)
