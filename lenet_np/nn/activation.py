"""Elementwise activations: Sigmoid and ReLU. Shapes: y and x alike, any shape.

Sigmoid
    forward   y = 1 / (1 + exp(-x)), computed from e = exp(-|x|) <= 1 so that it
              never overflows:  y = 1/(1+e) for x >= 0,  e/(1+e) for x < 0
    backward  dL/dx = dL/dy * y * (1 - y)       (only y is cached)

ReLU
    forward   y = max(x, 0)
    backward  dL/dx = dL/dy * [x > 0]           (the gradient at 0 is 0, as torch)
"""

from __future__ import annotations

from .. import backend
from .checks import check_input
from .module import Module


def sigmoid(x):
    """Numerically stable logistic function, same dtype and memory order as x."""
    xp = backend.get_array_module(x)
    e = xp.exp(-xp.abs(x))          # in (0, 1]: no overflow for any finite x
    r = 1 / (1 + e)
    return xp.where(x >= 0, r, e * r)


class Sigmoid(Module):
    def forward(self, x):
        check_input(self, x, "(*)")
        y = sigmoid(x)
        self._cache = y
        return y

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError("Sigmoid(): backward called before forward")
        if not input_grad:
            return None
        y = self._cache
        return grad_out * y * (1 - y)


class ReLU(Module):
    def forward(self, x):
        check_input(self, x, "(*)")
        xp = backend.get_array_module(x)
        self._cache = x > 0
        return xp.maximum(x, 0)

    def backward(self, grad_out, input_grad=True):
        if self._cache is None:
            raise RuntimeError("ReLU(): backward called before forward")
        if not input_grad:
            return None
        return grad_out * self._cache
