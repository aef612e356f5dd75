"""Exercise: the backward pass of batch normalization, in training and in eval mode.

Check it with:  python -m lenet_np.exercises check DIR --layer batchnorm

Shapes
    x        (N, C, H, W)
    weight   gamma (C,)           bias  beta (C,)
    running_mean, running_var     (C,): the statistics eval mode normalises with
    y        (N, C, H, W)         y = gamma * xhat + beta

Each channel c is normalised over its m = N*H*W values (every pixel of every image). Below,
"sum" is the sum over those m values, one number per channel, kept as an array of shape
(1, C, 1, 1) that broadcasts against x: x.sum(axis=(0, 2, 3), keepdims=True).

    training (self.training is True): the statistics of this batch, functions of x
        mu      = sum(x) / m
        var     = sum((x - mu)^2) / m           biased: divided by m (m - 1 is only for running_var)
        inv_std = 1 / sqrt(var + eps)
        xhat    = (x - mu) * inv_std
    eval (after .eval()): mu = running_mean and var = running_var, constants
"""

import numpy as np


class Parameter:
    """An array and the gradient accumulated for it (as lenet_np.nn.Parameter and torch)."""

    def __init__(self, data):
        self.data = data
        self.grad = np.zeros_like(data)     # backward ADDS into this (+=), as torch does


class BatchNorm2d:
    def __init__(self, weight, bias, running_mean, running_var, eps=1e-5, momentum=0.1):
        self.weight = Parameter(weight)     # gamma (C,)
        self.bias = Parameter(bias)         # beta (C,)
        self.running_mean = running_mean    # (C,)
        self.running_var = running_var      # (C,)
        self.eps = eps
        self.momentum = momentum
        self.training = True
        self.cache = None

    def train(self):
        self.training = True
        return self

    def eval(self):
        self.training = False
        return self

    def forward(self, x):
        """x (N, C, H, W) -> y, the same shape; keeps x, mu, var, inv_std and xhat."""
        axes = (0, 2, 3)                                    # every axis but the channels
        m = x.size // x.shape[1]                            # values per channel
        if self.training:
            mu = x.mean(axis=axes, keepdims=True)                       # (1, C, 1, 1)
            var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)        # biased: / m
            # the running statistics move toward this batch's, with the UNBIASED variance
            # (/ (m - 1)), as in torch; only eval mode reads them
            self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mu.ravel()
            self.running_var = ((1 - self.momentum) * self.running_var
                                + self.momentum * var.ravel() * m / (m - 1))
        else:
            mu = self.running_mean.reshape(1, -1, 1, 1)
            var = self.running_var.reshape(1, -1, 1, 1)
        inv_std = 1 / np.sqrt(var + self.eps)
        xhat = (x - mu) * inv_std
        self.cache = (x, mu, var, inv_std, xhat)
        return self.weight.data.reshape(1, -1, 1, 1) * xhat + self.bias.data.reshape(1, -1, 1, 1)

    def backward(self, grad_out):
        """grad_out = G = dL/dy, shape (N, C, H, W). With x, mu, var, inv_std, xhat = self.cache
        (mu, var and inv_std of shape (1, C, 1, 1)) and gamma = self.weight.data as (1, C, 1, 1):

            dL/dgamma = sum(G * xhat)      (C,)            add it into self.weight.grad
            dL/dbeta  = sum(G)             (C,)            add it into self.bias.grad
            dL/dx                          (N, C, H, W)    return it:
                eval:      gamma * inv_std * G             mu and var are constants
                training:  x reaches y directly and through mu and var. Walk the forward's
                           steps backwards, one at a time:
                               mu = sum(x) / m,  xc = x - mu,  var = sum(xc^2) / m,
                               inv_std = 1 / sqrt(var + eps),  xhat = xc * inv_std,
                               y = gamma * xhat + beta
                           a value used in several places gets the SUM of their gradients
                           (docs/batchnorm.md derives it; the result fits on one line)
        """
        # BEGIN SOLUTION
        x, mu, var, inv_std, xhat = self.cache
        axes = (0, 2, 3)
        m = x.size // x.shape[1]
        gamma = self.weight.data.reshape(1, -1, 1, 1)
        # y = gamma * xhat + beta: gamma and beta touch every value of their channel
        self.weight.grad += (grad_out * xhat).sum(axis=axes)           # (C,)
        self.bias.grad += grad_out.sum(axis=axes)                       # (C,)
        dxhat = grad_out * gamma
        if not self.training:
            # mu and var are the running statistics, constants: only the direct path is left
            return dxhat * inv_std
        xc = x - mu
        # xhat = xc * inv_std, and inv_std = (var + eps)^(-1/2) is shared by all m values:
        # its gradient is a sum, and d inv_std / d var = -inv_std^3 / 2
        dvar = (dxhat * xc).sum(axis=axes, keepdims=True) * -0.5 * inv_std ** 3      # (1, C, 1, 1)
        # xc feeds xhat directly and var = sum(xc^2) / m, which hands 2 * xc / m of dvar to each
        dxc = dxhat * inv_std + dvar * 2 * xc / m
        # xc = x - mu: x directly, and through mu = sum(x) / m, which every xc subtracts
        dmu = -dxc.sum(axis=axes, keepdims=True)
        return dxc + dmu / m
        # END SOLUTION
