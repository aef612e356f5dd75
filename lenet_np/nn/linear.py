"""Linear and Flatten.

Linear (torch's layout: weight is (out_features, in_features))
    x       (N, in)          weight  (out, in)          bias (out,)
    forward   y = x @ weight.T + bias                    (N, out)
    backward  dL/dweight = dL/dy.T @ x                   (out, in)
              dL/dbias   = dL/dy summed over N           (out,)
              dL/dx      = dL/dy @ weight                (N, in)

Flatten (torch's nn.Flatten(): keep axis 0, merge the rest)
    forward   (N, C, H, W) -> (N, C*H*W)        a reshape, nothing computed
    backward  the gradient is reshaped back to (N, C, H, W)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .checks import check_grad, check_input
from .init import make_rng, uniform_fan_in
from .module import Module, Parameter


class Input(NamedTuple):
    x: object             # (N, in): dL/dweight = dL/dy.T @ x


class Shape(NamedTuple):
    x_shape: tuple        # Flatten's input shape, to reshape the gradient back


class Linear(Module):
    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=np.float32):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        if self.in_features < 1 or self.out_features < 1:
            raise ValueError("Linear: in_features and out_features must be >= 1")
        rng = make_rng(rng)
        self.weight = Parameter(uniform_fan_in(rng, (self.out_features, self.in_features),
                                               self.in_features, dtype))
        self.bias = Parameter(uniform_fan_in(rng, (self.out_features,), self.in_features, dtype)) if bias else None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"

    def forward(self, x):
        expected = f"(N, {self.in_features})"
        check_input(self, x, expected, ndim=2, dtype=self.weight.dtype, params=self.weight.data)
        if x.shape[1] != self.in_features:
            raise ValueError(f"{self!r}: expected input of shape {expected}, got shape {tuple(x.shape)}")
        self.save_for_backward(Input(x))
        y = x @ self.weight.data.T
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad_out, input_grad=True):
        x = self.saved().x
        check_grad(self, grad_out, (x.shape[0], self.out_features))
        self.weight.accumulate(grad_out.T @ x)
        if self.bias is not None:
            self.bias.accumulate(grad_out.sum(axis=0))
        if not input_grad:
            return None
        return grad_out @ self.weight.data


class Flatten(Module):
    def forward(self, x):
        check_input(self, x, "(N, *)")
        if x.ndim < 1:
            raise ValueError(f"{self!r}: expected input of shape (N, *), got a 0-d array")
        self.save_for_backward(Shape(x.shape))
        return x.reshape(x.shape[0], -1)

    def backward(self, grad_out, input_grad=True):
        x_shape = self.saved().x_shape
        check_grad(self, grad_out, (x_shape[0], int(np.prod(x_shape[1:]))))
        if not input_grad:
            return None
        return grad_out.reshape(x_shape)
