"""Exercise: the backward pass of max pooling.

Check it with:  python -m lenet_np.exercises check DIR --layer maxpool

Shapes
    x   (N, C, H, W)
    y   (N, C, OH, OW)     OH = (H + 2*padding - K) // stride + 1, likewise OW

x is padded with -inf (padding on each side, at most K // 2, as in torch), and output (i, j)
is the maximum of the K x K window  x_pad[:, :, i*stride : i*stride + K, j*stride : j*stride + K].
"""

import numpy as np


class MaxPool2d:
    def __init__(self, kernel_size, stride=None, padding=0):
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding = padding
        self.cache = None

    def forward(self, x):
        """x (N, C, H, W) -> y (N, C, OH, OW), one window position at a time; keeps x_pad."""
        k, s, p = self.kernel_size, self.stride, self.padding
        n, c, h, w = x.shape
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
        y = np.empty((n, c, oh, ow), dtype=x.dtype)
        for i in range(oh):
            for j in range(ow):
                y[:, :, i, j] = x_pad[:, :, i * s:i * s + k, j * s:j * s + k].max(axis=(2, 3))
        self.cache = (x.shape, x_pad)
        return y

    def backward(self, grad_out):
        """grad_out = dL/dy, shape (N, C, OH, OW). Return dL/dx, shape (N, C, H, W).

        Each window sends its whole gradient grad_out[n, c, i, j] to ONE pixel: its maximum.
        With ties, to the FIRST maximum in row-major order (as torch; np.argmax finds it).
        Windows overlap when stride < K: a pixel that is the maximum of several windows gets
        the SUM of their gradients. Work on a zero array of x_pad's shape, cut the padding off.
        """
        # BEGIN SOLUTION
        (n, c, h, w), x_pad = self.cache
        k, s, p = self.kernel_size, self.stride, self.padding
        _, _, oh, ow = grad_out.shape
        dx_pad = np.zeros_like(x_pad)
        every_n, every_c = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")   # (N, C) each
        for i in range(oh):
            for j in range(ow):
                window = x_pad[:, :, i * s:i * s + k, j * s:j * s + k].reshape(n, c, k * k)
                first = window.argmax(axis=2)        # (N, C): the first maximum, row-major
                row, col = i * s + first // k, j * s + first % k                   # in x_pad
                # += : with overlapping windows this pixel may already hold another window's
                # gradient. (Within one (i, j) the indices (n, c, row, col) are all distinct.)
                dx_pad[every_n, every_c, row, col] += grad_out[:, :, i, j]
        return dx_pad[:, :, p:p + h, p:p + w]        # padding never wins: it is -inf
        # END SOLUTION
