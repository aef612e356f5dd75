"""Exercise: the backward pass of a 2-D convolution by im2col, and col2im.

Check it with:  python -m lenet_np.exercises check DIR --layer conv_im2col

Shapes
    x       (N, C, H, W)          input; x_pad is x with `padding` zeros on each side
    weight  (O, C, KH, KW)        O filters; as a matrix w_mat (O, C*KH*KW), the book's Wm
    bias    (O,)
    cols    (N*OH*OW, C*KH*KW)    one row per window of x_pad, rows in (n, r, c) order
    y       (N, O, OH, OW)        OH = (H + 2*padding - KH) // stride + 1, likewise OW

As in the book, (r, c) is an output position (a window) and (i, j) an offset inside the kernel.
Where this file differs from the book: cols is the TRANSPOSE of the book's Cm (C*KH*KW, N*OH*OW),
one row per window instead of one column, so the forward is the book's Y = Wm @ Cm + b transposed:
y_mat = cols @ w_mat.T + bias,  (N*OH*OW, O).
"""

import numpy as np


def im2col(x_pad, kh, kw, stride):
    """(N, C, HP, WP) -> cols (N*OH*OW, C*KH*KW): row (n, r, c) is the window at output (r, c) of
    image n, flattened in (channel, kernel row, kernel column) order, as weight.reshape(O, -1)."""
    n, ch, hp, wp = x_pad.shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cols = np.empty((n, oh, ow, ch, kh, kw), dtype=x_pad.dtype)
    for i in range(kh):                  # kernel offset (i, j): one strided slice per offset
        for j in range(kw):
            patch = x_pad[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]   # (N, C, OH, OW)
            cols[:, :, :, :, i, j] = patch.transpose(0, 2, 3, 1)
    return cols.reshape(n * oh * ow, ch * kh * kw)


def col2im(cols, x_pad_shape, kh, kw, stride):
    """The adjoint of im2col: cols (N*OH*OW, C*KH*KW) -> an array of shape x_pad_shape
    (N, C, HP, WP). Every entry of cols goes back to the pixel of x_pad it was read from;
    a pixel read by several windows (they overlap when stride < KH or KW) gets the SUM.
    Check: for any x and c, (im2col(x) * c).sum() == (x * col2im(c)).sum().
    """
    # BEGIN SOLUTION
    n, ch, hp, wp = x_pad_shape
    oh, ow = (hp - kh) // stride + 1, (wp - kw) // stride + 1
    cols = cols.reshape(n, oh, ow, ch, kh, kw)
    x_pad = np.zeros(x_pad_shape, dtype=cols.dtype)
    for i in range(kh):                  # the same slices as im2col, written back
        for j in range(kw):
            # += : with overlapping windows, the offsets (i, j) of different windows
            # land on the same pixel, and each adds its share
            x_pad[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols[:, :, :, :, i, j].transpose(
                0, 3, 1, 2)
    return x_pad
    # END SOLUTION


class Parameter:
    """An array and the gradient accumulated for it (as lenet_np.nn.Parameter and torch)."""

    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)     # backward ADDS into this (+=), as torch does


class Conv2d:
    def __init__(self, weight, bias, stride=1, padding=0):
        self.weight = Parameter(weight)     # (O, C, KH, KW)
        self.bias = Parameter(bias)         # (O,)
        self.stride = stride
        self.padding = padding
        self.cache = None

    def forward(self, x):
        """x (N, C, H, W) -> y (N, O, OH, OW) as one matrix product; keeps the columns."""
        w, s, p = self.weight.data, self.stride, self.padding
        n = x.shape[0]
        o, _, kh, kw = w.shape
        x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        oh, ow = (x_pad.shape[2] - kh) // s + 1, (x_pad.shape[3] - kw) // s + 1
        cols = im2col(x_pad, kh, kw, s)                         # (N*OH*OW, C*KH*KW)
        y_mat = cols @ w.reshape(o, -1).T + self.bias.data      # (N*OH*OW, O)
        self.cache = (x.shape, x_pad.shape, cols)
        return y_mat.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)

    def backward(self, grad_out):
        """grad_out = dL/dy, shape (N, O, OH, OW). With x_shape, x_pad_shape, cols = self.cache:

            g          = grad_out laid out as y_mat: (N*OH*OW, O), rows in (n, r, c) order
            dL/dw_mat  = g.T @ cols              (O, C*KH*KW)   reshape to (O, C, KH, KW) and
                                                                add into self.weight.grad
            dL/dbias   = g summed over its rows  (O,)           add into self.bias.grad
            dL/dcols   = g @ w_mat               (N*OH*OW, C*KH*KW)
            dL/dx_pad  = col2im(dL/dcols, ...)   (N, C, H+2p, W+2p); return it without the padding,
                                                                (N, C, H, W)
        """
        # BEGIN SOLUTION
        x_shape, x_pad_shape, cols = self.cache
        w, s, p = self.weight.data, self.stride, self.padding
        o, _, kh, kw = w.shape
        h, wd = x_shape[2], x_shape[3]
        g = grad_out.transpose(0, 2, 3, 1).reshape(-1, o)      # (N*OH*OW, O), as y_mat
        # y_mat = cols @ w_mat.T: the gradients are the usual two products of a Linear layer,
        # with one row per window instead of one row per example
        self.weight.grad += (g.T @ cols).reshape(w.shape)      # (O, C*KH*KW) -> (O, C, KH, KW)
        self.bias.grad += g.sum(axis=0)                        # over all N*OH*OW rows
        dcols = g @ w.reshape(o, -1)                           # (N*OH*OW, C*KH*KW)
        dx_pad = col2im(dcols, x_pad_shape, kh, kw, s)         # windows back onto pixels
        return dx_pad[:, :, p:p + h, p:p + wd]
        # END SOLUTION
