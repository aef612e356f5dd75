"""Exercise: the backward pass of a 2-D convolution, by loops over the output positions.

Check it with:  python -m lenet_np.exercises check DIR --layer conv_naive

Shapes
    x       (N, C, H, W)          input
    weight  (O, C, KH, KW)        O filters
    bias    (O,)
    y       (N, O, OH, OW)        OH = (H + 2*padding - KH) // stride + 1, likewise OW

The input is padded with zeros (padding on each side), then for every output position (i, j)
the window  x_pad[:, :, i*stride : i*stride + KH, j*stride : j*stride + KW]  (N, C, KH, KW)
is multiplied with each filter and summed (a cross-correlation, as in torch).
Where this file differs from the book: (i, j) here is an output position, which the book
writes (r, c), keeping (i, j) for the offsets inside the kernel (here (k, l)).
"""

import numpy as np


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
        """x (N, C, H, W) -> y (N, O, OH, OW), one output position at a time; keeps x_pad."""
        w, s, p = self.weight.data, self.stride, self.padding
        n, c, h, wd = x.shape
        o, _, kh, kw = w.shape
        oh, ow = (h + 2 * p - kh) // s + 1, (wd + 2 * p - kw) // s + 1
        x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        y = np.empty((n, o, oh, ow), dtype=x.dtype)
        for i in range(oh):
            for j in range(ow):
                window = x_pad[:, :, i * s:i * s + kh, j * s:j * s + kw]          # (N, C, KH, KW)
                # y[n, o] = sum over c, k, l of window[n, c, k, l] * w[o, c, k, l]
                y[:, :, i, j] = np.einsum("nckl,ockl->no", window, w) + self.bias.data
        self.cache = (x.shape, x_pad)
        return y

    def backward(self, grad_out):
        """grad_out = dL/dy, shape (N, O, OH, OW). With x_shape, x_pad = self.cache, compute

            dL/dweight  (O, C, KH, KW)   add into self.weight.grad
                        for each output position (i, j):
                        sum over the batch n of grad_out[n, :, i, j] times that position's window
            dL/dbias    (O,)             add into self.bias.grad
                        grad_out summed over N, OH and OW
            dL/dx       (N, C, H, W)     return it
                        each window receives sum over o of grad_out[:, o, i, j] * weight[o];
                        windows overlap when stride < KH or KW, and a pixel in several windows
                        gets the SUM of their shares. Work on a zero (N, C, H+2p, W+2p) array
                        and cut the padding off at the end.
        """
        # BEGIN SOLUTION
        x_shape, x_pad = self.cache
        w, s, p = self.weight.data, self.stride, self.padding
        _, _, h, wd = x_shape
        _, _, kh, kw = w.shape
        _, _, oh, ow = grad_out.shape
        dx_pad = np.zeros_like(x_pad)
        for i in range(oh):
            for j in range(ow):
                rows, cols = slice(i * s, i * s + kh), slice(j * s, j * s + kw)
                window = x_pad[:, :, rows, cols]                            # (N, C, KH, KW)
                g = grad_out[:, :, i, j]                                    # (N, O)
                # w[o] met this window in every example n: sum the products over the batch
                self.weight.grad += np.einsum("no,nckl->ockl", g, window)
                # the window's pixels met every filter o: += because windows may overlap
                dx_pad[:, :, rows, cols] += np.einsum("no,ockl->nckl", g, w)
        # bias[o] was added at every position of every example
        self.bias.grad += grad_out.sum(axis=(0, 2, 3))
        return dx_pad[:, :, p:p + h, p:p + wd]                              # drop the padding
        # END SOLUTION
