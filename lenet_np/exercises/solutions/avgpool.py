"""Exercise: the backward pass of average pooling.

Check it with:  python -m lenet_np.exercises check DIR --layer avgpool

Shapes
    x   (N, C, H, W)
    y   (N, C, OH, OW)     OH = (H + 2*padding - K) // stride + 1, likewise OW

x is padded with zeros (padding on each side, at most K // 2), and output (i, j) is the mean
of the K x K window  x_pad[:, :, i*stride : i*stride + K, j*stride : j*stride + K]; the
padding's zeros count in the mean (torch's default).
"""

import numpy as np


class AvgPool2d:
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.cache = None

    def forward(self, x):
        """x (N, C, H, W) -> y (N, C, OH, OW), one window position at a time; keeps x's shape."""
        k, s, p = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
        y = np.empty((n, c, oh, ow), dtype=x.dtype)
        for i in range(oh):
            for j in range(ow):
                y[:, :, i, j] = x_pad[:, :, i * s:i * s + k, j * s:j * s + k].mean(axis=(2, 3))
        self.cache = (x.shape, x_pad.shape)
        return y

    def backward(self, grad_out):
        """grad_out = dL/dy, shape (N, C, OH, OW). Return dL/dx, shape (N, C, H, W).

        Every pixel of window (i, j) receives grad_out[n, c, i, j] / (K*K). Windows overlap when
        stride < K: a pixel in several windows gets the SUM of their shares. Work on a zero array
        of x_pad's shape and cut the padding off at the end.
        """
        # BEGIN SOLUTION
        (n, c, h, w), x_pad_shape = self.cache
        k, s, p = self.kernel_size, self.stride, self.padding
        _, _, oh, ow = grad_out.shape
        dx_pad = np.zeros(x_pad_shape, dtype=grad_out.dtype)
        for i in range(oh):
            for j in range(ow):
                share = grad_out[:, :, i, j] / (k * k)          # (N, C): one share per pixel
                # broadcast the share over the K x K window; += where windows overlap
                dx_pad[:, :, i * s:i * s + k, j * s:j * s + k] += share[:, :, None, None]
        return dx_pad[:, :, p:p + h, p:p + w]                   # the padding's share is dropped
        # END SOLUTION
