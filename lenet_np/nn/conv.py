"""Conv2d: a 2-D convolution (cross-correlation, as in torch), as the book computes it:
im2col, then ONE matrix product.

Notation (as in im2col.py)
    x       (N, C, H, W)            input
    weight  (O, C, KH, KW)          O output channels;  Wm = weight as (O, C*KH*KW)
    bias    (O,)
    Cm      (C*KH*KW, N*OH*OW)      every window of the padded input, one per column
    Y       (O, N*OH*OW)            the output before it is laid out as y
    y       (N, O, OH, OW)

Forward
    Y = Wm @ Cm + bias[:, None]

Backward, given G = dL/dY, dL/dy laid out as Y (O, N*OH*OW):
    dL/dWm   = G @ Cm.T             (O, C*KH*KW)
    dL/dbias = G summed over its columns
    dL/dCm   = Wm.T @ G             (C*KH*KW, N*OH*OW)
    dL/dx    = col2im(dL/dCm)       each column entry goes back to the pixel it was read from

That is all of Conv2d below. Faster forms of the same computation ("strided", "wide",
"band") live in nn/fast/conv.py; ``impl`` picks one (``"auto"``, the default, picks per
backend and shape; ``"reference"`` always runs the code here), and the tests hold every
form to this one.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checks import check_grad, check_impl, check_input, check_spatial, pair
from .fast import Fast, run_forward
from .fast import conv as fast
from .im2col import col2im, conv_output_size, im2col
from .init import make_rng, uniform_fan_in
from .module import Module, Parameter


class Columns(NamedTuple):
    x_shape: tuple        # (N, C, H, W)
    cm: object            # Cm (C*KH*KW, N*OH*OW)


class Conv2d(Module):
    IMPLS = ("auto", "fast", "reference", *fast.FORMS)

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

    def forward(self, x):
        self._check(x)
        path = self.path_for(x)
        if path != "reference":                                         # nn/fast/conv.py
            return run_forward(self, fast.FORMS[path], x)
        n, (kh, kw), (sh, sw), (ph, pw) = x.shape[0], self.kernel_size, self.stride, self.padding
        _, o, oh, ow = self._output_shape(x.shape)
        cols = im2col(x, kh, kw, sh, sw, ph, pw)                        # (N, C, KH, KW, OH, OW) view
        cm = cols.transpose(1, 2, 3, 0, 4, 5).reshape(-1, n * oh * ow)  # Cm (C*KH*KW, N*OH*OW)
        wm = self.weight.data.reshape(o, -1)                            # Wm (O, C*KH*KW)
        y = wm @ cm                                                     # Y  (O, N*OH*OW)
        if self.bias is not None:
            y += self.bias.data[:, None]
        self.save_for_backward(Columns(x.shape, cm))
        return y.reshape(o, n, oh, ow).transpose(1, 0, 2, 3)            # (N, O, OH, OW)

    def backward(self, grad_out, input_grad=True):
        saved = self.saved()
        if isinstance(saved, Fast):                                     # nn/fast/conv.py
            check_grad(self, grad_out, self._output_shape(saved.saved.x_shape))
            return saved.form.backward(self, saved.saved, grad_out, input_grad)
        check_grad(self, grad_out, self._output_shape(saved.x_shape))
        (n, c, h, w), cm = saved
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        o, oh, ow = grad_out.shape[1:]
        g = grad_out.transpose(1, 0, 2, 3).reshape(o, -1)               # G (O, N*OH*OW)
        self.weight.accumulate((g @ cm.T).reshape(self.weight.shape))   # dL/dWm = G @ Cm.T
        if self.bias is not None:
            self.bias.accumulate(g.sum(axis=1))
        if not input_grad:
            return None
        dcm = self.weight.data.reshape(o, -1).T @ g                     # dL/dCm = Wm.T @ G
        dcols = dcm.reshape(c, kh, kw, n, oh, ow).transpose(3, 0, 1, 2, 4, 5)
        return col2im(dcols, (n, c, h, w), sh, sw, ph, pw)              # (N, C, H, W)

    @property
    def impl(self) -> str:
        """The implementation: "auto" (per backend; "fast" is the same), "reference", "strided",
        "wide" or "band"."""
        return self._impl

    @impl.setter
    def impl(self, impl):
        impl = check_impl("Conv2d", impl, self.IMPLS)
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

    def path_for(self, x) -> str:
        """The form that runs for input x: ``impl``, or the choice of "auto" (nn/fast/conv.py)."""
        if self.impl not in ("auto", "fast"):
            return self.impl
        return fast.choose(self, x)
