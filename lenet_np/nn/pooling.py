"""MaxPool2d and AvgPool2d, as the book computes them.

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

    Below: the window view (N, C, OH, OW, KH*KW), ``argmax`` over the last axis, and a
    scatter-add (``xp.add.at``) of the gradient to the winning positions. Faster forms live
    in nn/fast/pooling.py: "offsets" (with the backward of an activation and the max pooling
    after it in one step), which "auto", the default, runs on the CPU; "fused" (one kernel
    each way), which it runs on a GPU where the windows neither overlap nor reach into
    padding (the code here elsewhere). ``impl`` picks one; the tests hold each to this one.

Average pooling (torch's defaults: zero padding counted in the average)
    forward   y = mean of the window of x_pad
    backward  every element of a window receives grad / (KH*KW)

    Below: the mean over the window view, and col2im of the shares. The fast forms, in
    nn/fast/pooling.py: "sums" (with the backward of an activation and the average pooling
    after it in one step), which "auto" runs on the CPU, and "fused", which it runs on a GPU
    where max pooling's does.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from .checks import check_grad, check_impl, check_input, check_spatial, pair
from .fast import Fast, run_forward
from .fast import pooling as fast
from .im2col import col2im, conv_output_size, pad2d, windows
from .module import Module


class Winners(NamedTuple):
    x_shape: tuple
    arg: object           # (N, C, OH, OW) the winner's offset k = i*KW + j in each window


class Shape(NamedTuple):
    x_shape: tuple


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

    @property
    def impl(self) -> str:
        """The form that runs: see ``IMPLS``: "auto" (per backend; "fast" is the same: ``FAST`` on
        the CPU, "offsets" for max and "sums" for average pooling), "reference" (the code
        below), or max pooling's fast form by name."""
        return self._impl

    @impl.setter
    def impl(self, impl):
        impl = check_impl(type(self).__name__, impl, self.IMPLS)
        if impl == "fused" and not fast.fusable(self):
            raise ValueError(f"{type(self).__name__}: impl='fused' needs windows that do not overlap and no "
                             f"padding (stride >= kernel_size, padding=0), got kernel_size={self.kernel_size}, "
                             f"stride={self.stride}, padding={self.padding}; use impl='auto'")
        self._impl = impl

    def path_for(self, x) -> str:
        """The form that runs for input x: ``impl``, or the choice of "auto" (nn/fast/pooling.py)."""
        if self.impl not in ("auto", "fast"):
            return self.impl
        return fast.choose(self, x)

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

    def _first_real(self, xp, oh, ow):
        """(OH, OW): the offset k of each window's first pixel that is not padding."""
        (kw, (sh, sw), (ph, pw)) = self.kernel_size[1], self.stride, self.padding
        i0 = xp.maximum(ph - xp.arange(oh) * sh, 0)
        j0 = xp.maximum(pw - xp.arange(ow) * sw, 0)
        return i0[:, None] * kw + j0[None, :]


class MaxPool2d(_Pool2d):
    IMPLS = ("auto", "fast", "reference", "offsets", "fused")
    FAST = "offsets"                                  # the fast form "auto" runs on the CPU

    def forward(self, x):
        self._check(x)
        path = self.path_for(x)
        if path != "reference":                                         # nn/fast/pooling.py
            return run_forward(self, fast.FORMS[path], x)
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
        self.save_for_backward(Winners(x.shape, arg))
        return y

    def backward(self, grad_out, input_grad=True):
        saved = self.saved()
        x_shape = saved.saved.x_shape if isinstance(saved, Fast) else saved.x_shape
        check_grad(self, grad_out, x_shape[:2] + self._out_size(x_shape))
        if isinstance(saved, Fast):                                     # nn/fast/pooling.py
            return saved.form.backward(self, saved.saved, grad_out, input_grad)
        if not input_grad:
            return None
        xp = backend.get_array_module(grad_out)
        (sh, sw), (ph, pw), kw = self.stride, self.padding, self.kernel_size[1]
        n, c, h, w = x_shape
        oh, ow = saved.arg.shape[-2:]
        rows = xp.arange(oh)[:, None] * sh + saved.arg // kw            # each winner's row and
        cols = xp.arange(ow)[None, :] * sw + saved.arg % kw             # column in the padded image
        dx_pad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=grad_out.dtype)
        nn_, cc = xp.ogrid[:n, :c]
        xp.add.at(dx_pad, (nn_[..., None, None], cc[..., None, None], rows, cols), grad_out)   # += on overlaps
        return dx_pad[:, :, ph:ph + h, pw:pw + w]


class AvgPool2d(_Pool2d):
    """Average pooling; zero padding counts in the average (torch's count_include_pad=True)."""

    IMPLS = ("auto", "fast", "reference", "sums", "fused")   # "auto" and "fast": "sums" on the CPU
    FAST = "sums"

    def forward(self, x):
        self._check(x)
        path = self.path_for(x)
        if path != "reference":                                         # nn/fast/pooling.py
            return run_forward(self, fast.FORMS[path], x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        win = windows(pad2d(x, ph, pw), kh, kw, sh, sw)             # (N, C, KH, KW, OH, OW)
        self.save_for_backward(Shape(x.shape))
        return win.mean(axis=(2, 3))

    def backward(self, grad_out, input_grad=True):
        saved = self.saved()
        x_shape = saved.x_shape if not isinstance(saved, Fast) else saved.saved.x_shape
        check_grad(self, grad_out, x_shape[:2] + self._out_size(x_shape))
        if isinstance(saved, Fast):                                     # nn/fast/pooling.py
            return saved.form.backward(self, saved.saved, grad_out, input_grad)
        if not input_grad:
            return None
        xp = backend.get_array_module(grad_out)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        share = grad_out / (kh * kw)                                 # (N, C, OH, OW)
        n, c, oh, ow = share.shape
        cols = xp.broadcast_to(share[:, :, None, None], (n, c, kh, kw, oh, ow))
        return col2im(cols, x_shape, sh, sw, ph, pw)
