"""Conv2d: a 2-D convolution (cross-correlation, as in torch) by im2col.

Shapes (notation of im2col.py)
    x       (N, C, H, W)            input
    weight  (O, C, KH, KW)          O output channels
    bias    (O,)
    cols    (C, KH, KW, N, OH, OW)  every window of the padded input
    y       (N, O, OH, OW)

Forward, with the weight flattened to Wm (O, C*KH*KW) and the columns to
Cm (C*KH*KW, N*OH*OW), a convolution is one matrix product:

    Y = Wm @ Cm + bias            (O, N*OH*OW)

Backward, given G = dL/dY laid out the same way (O, N*OH*OW):

    dL/dWm   = G @ Cm.T           (O, C*KH*KW)
    dL/dbias = G.sum(over N, OH, OW)
    dL/dCm   = Wm.T @ G           (C*KH*KW, N*OH*OW)
    dL/dx    = col2im(dL/dCm)     each column entry goes back to its pixel

Four implementations compute the same thing (``impl=``); every one runs on NumPy and
CuPy, and the tests check each against the reference:

* ``"reference"``: DeZero's form: the 6-D column view (N, C, KH, KW, OH, OW)
  contracted with the weight by ``tensordot``. Short and easy to check.
* ``"strided"``: the columns are copied once in (C, KH, KW, N, OH, OW) order (one
  strided copy) so that the product lands directly in (O, N, OH, OW) memory order;
  the result is returned as an (N, O, OH, OW) *view* of that memory: no transpose copy.
  Its backward is one product ``Wm.T @ G`` and col2im.
* ``"wide"`` (stride 1): the same product on the "wide" columns of im2col.py: KH*KW long
  contiguous copies instead of KH*KW*OH short rows; the backward's input gradient goes
  one kernel row at a time (``conv_transpose_wide``). Elementwise layers and pooling on
  the CPU keep the (C, N, H, W) layout, and the next convolution reads its windows
  straight from it.
* ``"band"`` (stride 1): one product of the images' row bands with a banded weight
  matrix (im2col.py), whose output is an (N, O, OH, OW) view of (N, OH, O, OW) memory.
  LeNet's convolutions. Meant for narrow images: the banded matrix has KH*C*WP x O*OW
  entries.

``"auto"`` (the default; ``"fast"`` is the same) picks per backend: on the CPU, ``band``
where it pays (narrow images, few output channels: ``_use_band``), else ``wide`` for stride
1, else ``strided``; on a GPU, where every small call is a kernel launch, ``strided``: one
copy and one product.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

from .. import backend
from .checks import check_grad, check_input, check_spatial, pair
from .im2col import (
    band_index,
    col2im,
    conv_output_size,
    conv_transpose_wide,
    im2col,
    im2col_wide,
    image_bands,
    pad2d,
    reusable,
    windows,
)
from .init import make_rng, uniform_fan_in
from .module import Module, Parameter

DEFAULT_IMPL = os.environ.get("LENET_NP_IMPL", "auto")   # for every layer: auto, fast or reference
IMPLS = ("auto", "fast", "reference", "strided", "wide", "band")


class _ReferenceCache(NamedTuple):
    x_shape: tuple
    cols: object          # (N, C, KH, KW, OH, OW) window view of the padded input


class _ColumnsCache(NamedTuple):
    x_shape: tuple
    cols: object          # (C*KH*KW, N*OH*WP) columns; WP == OW unless wide
    wp: int
    wide: bool


class _BandCache(NamedTuple):
    x_shape: tuple
    band: object          # (N*OH, KH*WP) row bands of the padded images
    t: object             # (KH*WP, O*OW) banded weights
    index: tuple          # (rows, cols) of T where the weights sit


def check_impl(layer: str, impl, impls=IMPLS) -> str:
    """impl, or the default (``$LENET_NP_IMPL``, else "auto"), checked against impls."""
    if impl is None:
        if DEFAULT_IMPL not in ("auto", "fast", "reference"):
            raise ValueError(f"LENET_NP_IMPL={DEFAULT_IMPL!r}: use auto, fast or reference (the values "
                             "every layer has), or pass impl= to one layer")
        return DEFAULT_IMPL
    if impl not in impls:
        raise ValueError(f"{layer}: impl must be one of {', '.join(impls)}, got {impl!r}")
    return impl


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 bias=True, rng=None, dtype=np.float32, impl=None):
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError(f"Conv2d: kernel_size and stride must be >= 1 and padding >= 0, got "
                             f"kernel_size={kernel_size}, stride={stride}, padding={padding}")
        if self.in_channels < 1 or self.out_channels < 1:
            raise ValueError("Conv2d: in_channels and out_channels must be >= 1")
        kh, kw = self.kernel_size
        fan_in = self.in_channels * kh * kw
        rng = make_rng(rng)
        self.weight = Parameter(uniform_fan_in(rng, (self.out_channels, self.in_channels, kh, kw),
                                               fan_in, dtype))
        self.bias = Parameter(uniform_fan_in(rng, (self.out_channels,), fan_in, dtype)) if bias else None
        self.impl = impl
        self._cache = None

    @property
    def impl(self) -> str:
        """The implementation: "auto" (per backend), "reference", "strided", "wide" or "band"."""
        return self._impl

    @impl.setter
    def impl(self, impl):
        impl = check_impl("Conv2d", impl)
        if impl in ("wide", "band") and self.stride != (1, 1):
            raise ValueError(f"Conv2d: impl={impl!r} needs stride 1, got stride={self.stride}")
        self._impl = impl

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.bias is None:
            s += ", bias=False"
        return s

    def _output_shape(self, x_shape):
        """(N, O, OH, OW) for an input of shape (N, C, H, W)."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        return (x_shape[0], self.out_channels, conv_output_size(x_shape[2], kh, sh, ph),
                conv_output_size(x_shape[3], kw, sw, pw))

    def _check(self, x):
        expected = f"(N, {self.in_channels}, H, W)"
        check_input(self, x, expected, ndim=4, channels=self.in_channels, dtype=self.weight.dtype,
                    params=self.weight.data)
        check_spatial(self, x, expected, self.kernel_size, self.stride, self.padding)

    def forward(self, x):
        self._check(x)
        path = self.path_for(x)
        if path == "reference":
            return self._forward_reference(x)
        if path == "band":
            return self._forward_band(x)
        return self._forward_columns(x, wide=path == "wide")

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        check_grad(self, grad_out, self._output_shape(self._cache.x_shape))
        if isinstance(self._cache, _ReferenceCache):
            return self._backward_reference(grad_out, input_grad)
        if isinstance(self._cache, _BandCache):
            return self._backward_band(grad_out, input_grad)
        return self._backward_columns(grad_out, input_grad)

    def path_for(self, x) -> str:
        """The implementation that runs for input x: ``impl``, or the backend's choice for "auto"."""
        if self.impl not in ("auto", "fast"):
            return self.impl
        if backend.on_gpu(backend.get_array_module(x)):
            return "strided"
        if self._use_band(x.shape):
            return "band"
        return "wide" if self.stride == (1, 1) else "strided"

    def _use_band(self, x_shape):
        """The band form (im2col.py) for stride 1 where its WP/KW times the multiply-adds cost
        less than im2col's copies and its thin product (O rows). Measured at batch 128, one
        thread, forward and both gradients, band against wide: one input channel, 5x5: 1.27x
        at padded width 28 (LeNet's conv.0), 0.97x at 36; 3x3 at 28: 0.83x; 1x1: 0.68x.
        6 -> 16 channels, 5x5: 1.09x at width 12 (LeNet's conv.3), 1.27x at 14, 0.95x at 16 to
        24; 16 -> 32 channels, 5x5: 1.39x at 12, 0.98x at 16; 3x3 at 12: 0.64x; 64 -> 32, 5x5,
        at 12: 1.47x; 32 -> 64 channels, 3x3 at 8: 0.77x. Hence: one input channel and a
        padded width up to 32 and 7 kernel widths, or at most 32 output channels and a padded
        width up to 3 kernel widths; and never a banded weight matrix over 4M entries."""
        if self.stride != (1, 1):
            return False
        (kh, kw), c, o = self.kernel_size, self.in_channels, self.out_channels
        wp = x_shape[3] + 2 * self.padding[1]
        if kh * c * wp * o * (wp - kw + 1) > 1 << 22:
            return False
        if c == 1:
            return wp <= min(32, 7 * kw)
        return o <= 32 and wp <= 3 * kw

    # -- reference: 6-D columns and tensordot -------------------------------------------
    def _forward_reference(self, x):
        xp = backend.get_array_module(x)
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        cols = im2col(x, kh, kw, sh, sw, ph, pw)                    # (N, C, KH, KW, OH, OW)
        y = xp.tensordot(cols, self.weight.data, ((1, 2, 3), (1, 2, 3)))  # (N, OH, OW, O)
        if self.bias is not None:
            y = y + self.bias.data
        self._cache = _ReferenceCache(x.shape, cols)
        return xp.ascontiguousarray(y.transpose(0, 3, 1, 2))       # (N, O, OH, OW)

    def _backward_reference(self, grad_out, input_grad):
        xp = backend.get_array_module(grad_out)
        x_shape, cols = self._cache
        (sh, sw), (ph, pw) = self.stride, self.padding
        self.weight.accumulate(xp.tensordot(grad_out, cols, ((0, 2, 3), (0, 4, 5))))  # (O, C, KH, KW)
        if self.bias is not None:
            self.bias.accumulate(grad_out.sum(axis=(0, 2, 3)))
        if not input_grad:
            return None
        dcols = xp.tensordot(self.weight.data, grad_out, (0, 1))   # (C, KH, KW, N, OH, OW)
        dcols = dcols.transpose(3, 0, 1, 2, 4, 5)                   # (N, C, KH, KW, OH, OW)
        return col2im(dcols, x_shape, sh, sw, ph, pw)

    # -- band: stride 1, one well-shaped product (im2col.py, "band" form) -----------------
    def _forward_band(self, x):
        xp = backend.get_array_module(x)
        n, c, h, w = x.shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        o = self.out_channels
        oh, ow, wp = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1, w + 2 * pw
        # The last forward's band and T are written over when the shapes match. Fresh arrays of
        # this size had the kernel fault their pages in again on every call in a process that
        # has not yet freed larger blocks (glibc then returns such blocks to the kernel): the
        # evaluation forward of a batch of 256 on two threads took 5.8-5.9 ms instead of
        # 4.7-4.9, the training step 12.6-14.3 instead of 11.6-13.6 (alternating, fresh
        # processes). After a process has loaded the data set, the two are equal (4.66 and
        # 4.57-4.66 ms; 12.1-12.4 and 12.3). A forward takes the buffers with one dict.pop,
        # which no other thread can interleave with: a second forward running at the same time
        # on this layer finds none and allocates its own.
        spare = self.__dict__.pop("_cache_band_spare", None)
        band = image_bands(pad2d(x, ph, pw), kh, out=None if spare is None else spare[0])  # (N*OH, KH*C*WP)
        rows, cols = band_index(xp, c, kh, kw, wp, ow, o)            # cached per shape
        shape = (kh * c * wp, o * ow)
        if spare is not None and reusable(spare[1], xp, shape, x.dtype):
            t = spare[1]                    # same shape, so zero in the same places: rewrite W only
        else:
            t = xp.zeros(shape, dtype=x.dtype)                       # the banded weights
        t[rows, cols] = self.weight.data[..., None]
        y = band @ t                                                  # (N*OH, O*OW)
        if self.bias is not None:
            y += xp.repeat(self.bias.data, ow)
        self._cache = _BandCache(x.shape, band, t, (rows, cols))
        self._cache_band_spare = (band, t)    # for the next forward (clear_cache drops it too)
        return y.reshape(n, oh, o, ow).transpose(0, 2, 1, 3)          # view (N, O, OH, OW)

    def _backward_band(self, grad_out, input_grad):
        xp = backend.get_array_module(grad_out)
        x_shape, band, t, (rows, cols) = self._cache
        n, c, h, w = x_shape
        kh, (ph, pw) = self.kernel_size[0], self.padding
        _, o, oh, ow = grad_out.shape
        wp = w + 2 * pw
        g = xp.ascontiguousarray(grad_out.transpose(0, 2, 1, 3)).reshape(n * oh, o * ow)
        dt = band.T @ g                                               # dL/dT (KH*C*WP, O*OW)
        self.weight.accumulate(dt[rows, cols].sum(axis=-1))           # W's entries of T, summed
        if self.bias is not None:
            self.bias.accumulate(g.sum(axis=0).reshape(o, ow).sum(axis=1))
        if not input_grad:
            return None
        dband = (g @ t.T).reshape(n, oh, kh, c, wp)                   # dL/dband
        dx = xp.zeros((n, h + 2 * ph, c, wp), dtype=grad_out.dtype)   # (N, HP, C, WP) memory
        for i in range(kh):                                           # kernel row i of each band
            dx[:, i:i + oh] += dband[:, :, i]                         # back to the row it read
        return dx[:, ph:ph + h, :, pw:pw + w].transpose(0, 2, 1, 3)   # view (N, C, H, W)

    # -- strided and wide: one matrix product in (O, N, OH, OW) memory order ----------------
    def _forward_columns(self, x, wide):
        xp = backend.get_array_module(x)
        n, c, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        x_cnhw = x.transpose(1, 0, 2, 3)        # free when x already lives in that memory order
        if wide:
            cols, (oh, ow, wp) = im2col_wide(x_cnhw, kh, kw, ph, pw)   # (C*KH*KW, N*OH*WP)
        else:
            oh = conv_output_size(h, kh, sh, ph)
            ow = wp = conv_output_size(w, kw, sw, pw)
            win = windows(pad2d(x_cnhw, ph, pw), kh, kw, sh, sw)       # (C, N, KH, KW, OH, OW)
            cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
            cols[...] = win.transpose(0, 2, 3, 1, 4, 5)
            cols = cols.reshape(c * kh * kw, n * oh * ow)
        wm = self.weight.data.reshape(self.out_channels, -1)
        y = wm @ cols                                                   # (O, N*OH*WP)
        if self.bias is not None:
            y += self.bias.data[:, None]
        self._cache = _ColumnsCache(x.shape, cols, wp, wide)
        y = y.reshape(self.out_channels, n, oh, wp)[..., :ow]          # drop the junk columns
        return y.transpose(1, 0, 2, 3)                                 # view (N, O, OH, OW)

    def _backward_columns(self, grad_out, input_grad):
        xp = backend.get_array_module(grad_out)
        x_shape, cols, wp, wide = self._cache
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        g = grad_out.transpose(1, 0, 2, 3)                              # (O, N, OH, OW)
        o, _, oh, ow = g.shape
        if wp != ow:                           # wide layout: the junk columns get zero gradient
            g_wide = xp.empty((o, n, oh, wp), dtype=g.dtype)
            g_wide[..., ow:] = 0
            g_wide[..., :ow] = g
            g = g_wide
        g = g.reshape(o, -1)                                           # free if laid out (O, N, ...)
        self.weight.accumulate((g @ cols.T).reshape(self.weight.shape))
        if self.bias is not None:
            self.bias.accumulate(g.sum(axis=1))
        if not input_grad:
            return None
        if wide:                               # col2im_wide(Wm.T @ g), one kernel row at a time
            dx = conv_transpose_wide(self.weight.data, g, (c, n, h, w), ph, pw)
        else:
            dcols = self.weight.data.reshape(o, -1).T @ g              # (C*KH*KW, N*OH*OW)
            dcols = dcols.reshape(c, kh, kw, n, oh, ow).transpose(0, 3, 1, 2, 4, 5)
            dx = col2im(dcols, (c, n, h, w), sh, sw, ph, pw)           # (C, N, H, W)
        return dx.transpose(1, 0, 2, 3)                                # view (N, C, H, W)
