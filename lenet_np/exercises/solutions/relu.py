"""Exercise: the backward pass of ReLU.

Check it with:  python -m lenet_np.exercises check DIR --layer relu

Shapes: x and y alike, any shape.   y = max(x, 0)
"""

import numpy as np


class ReLU:
    def __init__(self):
        self.cache = None

    def forward(self, x):
        """y = max(x, 0), elementwise; keeps x for the backward."""
        self.cache = x
        return np.maximum(x, 0)

    def backward(self, grad_out):
        """grad_out = dL/dy, the shape of x. Return dL/dx, the same shape:

            dL/dx = grad_out where x > 0, and 0 where x <= 0

        At x == 0 exactly the derivative does not exist; use 0 there (as torch does).
        """
        # BEGIN SOLUTION
        x = self.cache
        # dy/dx is 1 where x > 0 and 0 elsewhere (0 also at x == 0, torch's choice).
        return grad_out * (x > 0)                       # the boolean mask counts as 1 and 0
        # END SOLUTION
