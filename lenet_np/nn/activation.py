"""Elementwise activations: Sigmoid and ReLU. Shapes: y and x alike, any shape.

Sigmoid
    forward   y = 1 / (1 + exp(-x)), torch's formula. For x below about -88.7 in float32
              (-709.8 in float64) exp(-x) overflows to inf, silently, and y = 1/inf = 0:
              torch's value there too.
    backward  dL/dx = dL/dy * y * (1 - y)       (only y is saved)

Both derivatives are functions of the output y, so ``grad_from_output(dL/dy, y)`` gives
dL/dx from y alone: a max pooling that follows uses it on its outputs, which are the
activation's values at the winning pixels (nn/fast/pooling.py, ``backward_through``).
An average pooling that follows needs the derivative at every pixel: ``local_derivative()``
gives dy/dx of the last forward as a new array, which it multiplies by each window's share
in place (the same operations, in the same order, as ``backward``: bit for bit).

ReLU
    forward   y = max(x, 0)
    backward  dL/dx = dL/dy * [x > 0]           (the gradient at 0 is 0, as torch)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from .checks import check_grad, check_input
from .module import Module


def sigmoid(x):
    """The logistic function, same dtype as x (and memory order, on the CPU), without a warning.

    Written as four in-place passes over one new array: each pass streams through
    memory once and nothing else is allocated. On a GPU the four are one kernel
    (``backend.fused``: every small call there is a kernel launch)."""
    with np.errstate(over="ignore"):           # exp(-x) = inf for x < -88.7: y = 1/inf = 0
        return backend.fused(_sigmoid)(x)


def _sigmoid(xp):
    def sigmoid(x):
        y = xp.negative(x)
        xp.exp(y, out=y)
        y += 1
        xp.reciprocal(y, out=y)
        return y
    return sigmoid


def _sigmoid_grad(xp):
    def sigmoid_grad(grad_out, y):
        dx = 1 - y
        dx *= y
        dx *= grad_out
        return dx
    return sigmoid_grad


class Output(NamedTuple):
    y: object             # the activation's output: both derivatives are functions of it


class Positive(NamedTuple):
    mask: object          # x > 0


class Sigmoid(Module):
    def forward(self, x):
        check_input(self, x, "(*)")
        y = sigmoid(x)
        self.save_for_backward(Output(y))
        return y

    def backward(self, grad_out, input_grad=True):
        y = self.saved().y
        check_grad(self, grad_out, y.shape)
        if not input_grad:
            return None
        return self.grad_from_output(grad_out, y)

    @staticmethod
    def grad_from_output(grad_out, y):
        """dL/dx = dL/dy * y * (1 - y), in place on one new array (one kernel on a GPU):

            dx = 1 - y;  dx *= y;  dx *= grad_out
        """
        return backend.fused(_sigmoid_grad)(grad_out, y)

    def local_derivative(self, dtype=None):
        """dy/dx = (1 - y) * y of the last forward, a new array (``backward`` multiplies it by dL/dy)."""
        y = self.saved().y
        d = 1 - y
        d *= y
        return d


class ReLU(Module):
    def forward(self, x):
        check_input(self, x, "(*)")
        xp = backend.get_array_module(x)
        self.save_for_backward(Positive(x > 0))
        return xp.maximum(x, 0)

    def backward(self, grad_out, input_grad=True):
        mask = self.saved().mask
        check_grad(self, grad_out, mask.shape)
        if not input_grad:
            return None
        return grad_out * mask

    @staticmethod
    def grad_from_output(grad_out, y):
        """dL/dx = dL/dy * [y > 0]: y = max(x, 0) > 0 exactly where x > 0."""
        return grad_out * (y > 0)

    def local_derivative(self, dtype):
        """dy/dx = [x > 0] of the last forward as a new array of ``dtype`` (1.0 or 0.0: times
        dL/dy it is ``backward``'s dL/dy * [x > 0], bit for bit)."""
        mask = self.saved().mask
        return backend.get_array_module(mask).asarray(mask, dtype=dtype)
