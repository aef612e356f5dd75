"""Elementwise activations: Sigmoid and ReLU. Shapes: y and x alike, any shape.

Sigmoid
    forward   y = 1 / (1 + exp(-x)), torch's formula, with -x clipped at the
              largest argument whose exp is finite (88 in float32, 709 in float64):
              below that clip sigmoid(x) < 1e-38 and the clipped result is the
              same tiny number, so nothing overflows and nothing warns.
    backward  dL/dx = dL/dy * y * (1 - y)       (only y is cached)

ReLU
    forward   y = max(x, 0)
    backward  dL/dx = dL/dy * [x > 0]           (the gradient at 0 is 0, as torch)
"""

from __future__ import annotations

import numpy as np

from .. import backend
from .checks import check_grad, check_input
from .module import Module

EXP_LIMIT = {np.dtype(np.float32): 88.0, np.dtype(np.float64): 709.0}


def sigmoid(x):
    """Numerically stable logistic function, same dtype and memory order as x.

    Written as in-place passes over one new array: each pass streams through
    memory once and nothing else is allocated."""
    xp = backend.get_array_module(x)
    y = xp.negative(x)
    xp.minimum(y, EXP_LIMIT[y.dtype], out=y)   # exp(88) < float32 max: never inf
    xp.exp(y, out=y)
    y += 1
    xp.reciprocal(y, out=y)
    return y


class Sigmoid(Module):
    def forward(self, x):
        check_input(self, x, "(*)")
        y = sigmoid(x)
        self._cache = y
        return y

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError("Sigmoid(): backward called before forward")
        y = self._cache
        check_grad(self, grad_out, y.shape)
        if not input_grad:
            return None
        dx = 1 - y          # dL/dx = dL/dy * y * (1 - y), in place on one new array
        dx *= y
        dx *= grad_out
        return dx


class ReLU(Module):
    def forward(self, x):
        check_input(self, x, "(*)")
        xp = backend.get_array_module(x)
        self._cache = x > 0
        return xp.maximum(x, 0)

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError("ReLU(): backward called before forward")
        check_grad(self, grad_out, self._cache.shape)
        if not input_grad:
            return None
        return grad_out * self._cache
