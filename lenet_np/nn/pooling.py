"""MaxPool2d and AvgPool2d.

Shapes (notation of im2col.py)
    x   (N, C, H, W)
    y   (N, C, OH, OW)      OH = (H + 2*PH - KH) // SH + 1, likewise OW

Max pooling
    forward   y[n,c,oh,ow] = max over the window of x_pad (padding is -inf)
    backward  each window sends its whole gradient to ONE element: the first
              maximum in row-major order (as torch does, also on ties). Where
              windows overlap, a pixel that wins several windows sums their
              gradients (+=, never =).

Average pooling (torch's defaults: zero padding counted in the average)
    forward   y = mean of the window of x_pad
    backward  every element of a window receives grad / (KH*KW)

Two implementations of max pooling, both general:

* ``impl="reference"``: the window view (N, C, OH, OW, KH*KW), ``argmax`` over the
  last axis, and a scatter-add of the gradient to the winning positions.
* ``impl="fast"`` (default): a loop over the KH*KW kernel offsets, each a strided
  slice of the input the size of the output. The forward keeps a running maximum
  and the offset that first reached it; the backward adds the gradient into the
  slice of each offset where that offset won. No (.., KH*KW) copy, no scatter.
  In eval mode the forward keeps only the maximum (one ufunc per offset, not four) and the
  winners are found from the kept input if a backward comes after all.
"""

from __future__ import annotations

import numpy as np

from .. import backend
from .checks import check_input, check_spatial, pair
from .conv import DEFAULT_IMPL
from .im2col import col2im, conv_output_size, pad2d, windows
from .module import Module


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
        self.impl = impl or DEFAULT_IMPL
        self._cache = None

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


class MaxPool2d(_Pool2d):
    def forward(self, x):
        self._check(x)
        if self.impl == "reference":
            return self._forward_reference(x)
        return self._forward_fast(x)

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        if not input_grad:
            return None
        if self.impl == "reference":
            return self._backward_reference(grad_out)
        return self._backward_fast(grad_out)

    # -- reference: argmax over the window view, scatter-add back ------------------------
    def _forward_reference(self, x):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        win = windows(pad2d(x, ph, pw, -np.inf), kh, kw, sh, sw)   # (N, C, KH, KW, OH, OW)
        oh, ow = win.shape[-2:]
        win = win.transpose(0, 1, 4, 5, 2, 3).reshape(n, c, oh, ow, kh * kw)
        arg = win.argmax(axis=-1)                                   # first maximum, NaN wins
        y = xp.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
        self._cache = (x.shape, arg)
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
        backend.scatter_add(dx_pad, (nn_[..., None, None], cc[..., None, None], rows, cols), grad_out)
        return dx_pad[:, :, ph:ph + h, pw:pw + w]

    # -- fast: a loop over kernel offsets on strided slices ------------------------------
    def _forward_fast(self, x):
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
            self._cache = (x.shape, None, x_pad)
            return y
        y, arg = self._max_and_arg(x_pad, offsets)
        self._cache = (x.shape, arg, None)
        return y

    def _max_and_arg(self, x_pad, offsets):
        """The running maximum over the kernel offsets and the offset that first reached it."""
        xp = backend.get_array_module(x_pad)
        kh, kw = self.kernel_size
        y = x_pad[offsets[0][1]].copy(order="K")   # running maximum, same memory order as x
        arg = xp.zeros_like(y, dtype=np.uint8 if kh * kw <= 256 else np.int32)
        better = xp.empty_like(y, dtype=bool)
        won = xp.empty_like(arg)
        for k, sl in offsets[1:]:
            candidate = x_pad[sl]
            xp.greater(candidate, y, out=better)     # strictly greater: the first maximum stays
            xp.maximum(y, candidate, out=y)          # (NaN propagates, as in torch)
            # offsets come in increasing k, so the latest winner is the largest k that won
            xp.multiply(better, arg.dtype.type(k), out=won)
            xp.maximum(arg, won, out=arg)
        # Rare: a NaN in a window. Replay the winners with torch's rule (c > best) | isnan(c).
        # Only on the CPU: on CUDA, reading the flag back would sync the device every step
        # (there a NaN window still outputs NaN; its gradient goes to another element).
        if xp is np and xp.isnan(y).any():
            best = x_pad[offsets[0][1]].copy(order="K")
            arg[...] = 0
            for k, sl in offsets[1:]:
                candidate = x_pad[sl]
                take = (candidate > best) | xp.isnan(candidate)
                xp.copyto(best, candidate, where=take)
                xp.copyto(arg, k, where=take)
        return y, arg

    def _backward_fast(self, grad_out):
        xp = backend.get_array_module(grad_out)
        x_shape, arg, x_pad = self._cache
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        n, c, h, w = x_shape
        oh, ow = grad_out.shape[-2:]
        if arg is None:                          # forward ran in eval mode: route now
            _, arg = self._max_and_arg(x_pad, list(self._offsets(oh, ow)))
            self._cache = (x_shape, arg, None)
        overlap = sh < kh or sw < kw
        # (C, N, H, W) memory order, returned as an (N, C, H, W) view: matches the conv layout
        alloc = xp.zeros if (overlap or sh > kh or sw > kw or ph or pw
                             or (h + 2 * ph) != oh * sh or (w + 2 * pw) != ow * sw) else xp.empty
        dx_pad = alloc((c, n, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype).transpose(1, 0, 2, 3)
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
        if not input_grad:
            return None
        xp = backend.get_array_module(grad_out)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        share = grad_out / (kh * kw)                                 # (N, C, OH, OW)
        n, c, oh, ow = share.shape
        cols = xp.broadcast_to(share[:, :, None, None], (n, c, kh, kw, oh, ow))
        return col2im(cols, self._cache, sh, sw, ph, pw)
