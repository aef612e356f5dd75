"""Exercise: the backward pass of the sigmoid.

Check it with:  python -m lenet_np.exercises check DIR --layer sigmoid

Shapes: x and y alike, any shape.   y = 1 / (1 + exp(-x))
"""

import numpy as np


class Sigmoid:
    def __init__(self):
        self.cache = None

    def forward(self, x):
        """y = 1 / (1 + exp(-x)), written so that exp never overflows; keeps y for the backward."""
        z = np.exp(-np.abs(x))                          # in (0, 1]: never overflows
        y = np.where(x >= 0, 1 / (1 + z), z / (1 + z))
        self.cache = y
        return y

    def backward(self, grad_out):
        """grad_out = dL/dy, the shape of x. Return dL/dx, the same shape:

            dL/dx = grad_out * y * (1 - y)      with y = self.cache, the forward's OUTPUT

        Do not change grad_out in place: it belongs to the caller.
        """
        # BEGIN SOLUTION
        y = self.cache
        # dy/dx = sigmoid(x) * (1 - sigmoid(x)) = y * (1 - y), elementwise:
        # each y[k] depends on x[k] alone, so the chain rule is one product per element.
        return grad_out * y * (1 - y)                   # a new array; grad_out is left alone
        # END SOLUTION
