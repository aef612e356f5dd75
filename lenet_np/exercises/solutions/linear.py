"""Exercise: the backward pass of a fully connected layer.

Check it with:  python -m lenet_np.exercises check DIR --layer linear

Shapes
    x       (N, IN)       a batch of N row vectors
    weight  (OUT, IN)     torch's layout
    bias    (OUT,)
    y       (N, OUT)      y = x @ weight.T + bias
"""

import numpy as np


class Parameter:
    """An array and the gradient accumulated for it (as lenet_np.nn.Parameter and torch)."""

    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)     # backward ADDS into this (+=), as torch does


class Linear:
    def __init__(self, weight, bias):
        self.weight = Parameter(weight)     # (OUT, IN)
        self.bias = Parameter(bias)         # (OUT,)
        self.cache = None

    def forward(self, x):
        """x (N, IN) -> y (N, OUT); keeps x for the backward."""
        self.cache = x
        return x @ self.weight.data.T + self.bias.data

    def backward(self, grad_out):
        """grad_out = dL/dy, shape (N, OUT). Compute, with x = self.cache:

            dL/dweight = grad_out.T @ x           (OUT, IN)   add it into self.weight.grad
            dL/dbias   = grad_out summed over N   (OUT,)      add it into self.bias.grad
            dL/dx      = grad_out @ weight        (N, IN)     return it

        Add (+=) into the .grad arrays: gradients accumulate over backward calls.
        """
        # BEGIN SOLUTION
        x = self.cache
        # y[n, o] = sum_i x[n, i] * W[o, i] + b[o], so W[o, i] touches every y[n, o]:
        # its gradient sums G[n, o] * x[n, i] over the batch n, a matrix product.
        self.weight.grad += grad_out.T @ x              # (OUT, N) @ (N, IN) -> (OUT, IN)
        # b[o] is added to y[n, o] for every n: the gradient sums G over the batch.
        self.bias.grad += grad_out.sum(axis=0)          # (N, OUT) -> (OUT,)
        # x[n, i] touches y[n, o] for every o, with weight W[o, i].
        return grad_out @ self.weight.data              # (N, OUT) @ (OUT, IN) -> (N, IN)
        # END SOLUTION
