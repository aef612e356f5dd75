"""LeNet, exactly the seed's network (Dive into Deep Learning), and its variants.

    input (N, 1, 28, 28)
    conv.0 Conv2d(1, 6, 5)      -> (N, 6, 24, 24)      conv.1 Sigmoid
    conv.2 MaxPool2d(2, 2)      -> (N, 6, 12, 12)
    conv.3 Conv2d(6, 16, 5)     -> (N, 16, 8, 8)       conv.4 Sigmoid
    conv.5 MaxPool2d(2, 2)      -> (N, 16, 4, 4)
    flatten, as the seed's feature.view(N, -1)         -> (N, 256)
    fc.0 Linear(256, 120)  fc.1 Sigmoid  fc.2 Linear(120, 84)  fc.3 Sigmoid
    fc.4 Linear(84, 10)                                -> (N, 10) logits

44,426 parameters; ``state_dict()`` keys and array layouts are those of the seed's
torch model, so weights move between the two with ``load_state_dict``.
"""

from __future__ import annotations

import numpy as np

from .nn import AvgPool2d, Conv2d, Linear, MaxPool2d, ReLU, Sequential, Sigmoid
from .nn.checks import check_input
from .nn.init import make_rng
from .nn.module import Module

ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU}
POOLS = {"max": MaxPool2d, "avg": AvgPool2d}


class LeNet(Module):
    """The book's LeNet. ``activation``: "sigmoid" | "relu"; ``pool``: "max" | "avg".

    Weights are initialised as torch's defaults from ``rng`` (a numpy Generator)
    or from ``seed``; the same seed gives the same network.

    ``pool_first`` (default True): in evaluation mode (``eval()``), run each max pooling
    of the convolutional block *before* the activation that precedes it in the seed.
    Sigmoid and ReLU never decrease, so max(act(z)) == act(max(z)) bit for bit: the
    output is the same, and the activation runs on a quarter of the values (the
    sigmoid's exp is the costliest elementwise step on the CPU). In training mode the
    seed's order runs, because the backward must send each window's gradient to the
    first maximum *of the activations*, as torch does: where two values of a window
    differ but their sigmoids round to the same float32, pooling first would pick the
    larger value instead (measured: 4 of 40 random initialisations then differed from
    torch's input gradient by more than 2e-5). A backward after an evaluation-mode
    forward routes such near-ties by the values before the activation. False runs the
    seed's order always. Average pooling always runs in the seed's order.
    """

    def __init__(self, activation="sigmoid", pool="max", seed=None, rng=None, dtype=np.float32,
                 pool_first=True):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"LeNet: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if pool not in POOLS:
            raise ValueError(f"LeNet: pool must be one of {sorted(POOLS)}, got {pool!r}")
        if seed is not None and rng is not None:
            raise ValueError("LeNet: pass seed or rng, not both")
        self.activation = activation
        self.pool = pool
        rng = make_rng(rng if rng is not None else seed)
        act, pool_cls = ACTIVATIONS[activation], POOLS[pool]
        self.conv = Sequential(
            Conv2d(1, 6, 5, rng=rng, dtype=dtype), act(), pool_cls(2, 2),
            Conv2d(6, 16, 5, rng=rng, dtype=dtype), act(), pool_cls(2, 2),
        )
        self.fc = Sequential(
            Linear(16 * 4 * 4, 120, rng=rng, dtype=dtype), act(),
            Linear(120, 84, rng=rng, dtype=dtype), act(),
            Linear(84, 10, rng=rng, dtype=dtype),
        )
        self.pool_first = bool(pool_first)
        self._cache = None

    def conv_order(self):
        """The convolutional block's layers in the order forward runs them (in this mode)."""
        layers = list(self.conv)
        if self.pool_first and self.pool == "max" and not self.training:
            for i in (1, 4):             # (activation, max pool) -> (max pool, activation)
                layers[i], layers[i + 1] = layers[i + 1], layers[i]
        return layers

    def forward(self, img):
        check_input(self.conv[0], img, "(N, 1, 28, 28)", ndim=4, channels=1,
                    dtype=self.conv[0].weight.dtype, params=self.conv[0].weight.data)
        if img.shape[2:] != (28, 28):
            raise ValueError(f"LeNet: expected input of shape (N, 1, 28, 28), got shape {tuple(img.shape)}")
        feature = img
        order = self.conv_order()
        for layer in order:
            feature = layer(feature)                    # ends as (N, 16, 4, 4)
        self._cache = (feature.shape, order)            # backward retraces this order
        return self.fc(feature.reshape(img.shape[0], -1))   # flatten: (N, 256)

    def backward(self, grad_out, input_grad=True):
        """dL/dlogits (N, 10) -> dL/dimg (N, 1, 28, 28), or None with input_grad=False
        (training does not need the image gradient, so the first conv skips it)."""
        if self._cache is None:
            raise RuntimeError("LeNet: backward called before forward")
        feature_shape, order = self._cache
        grad = self.fc.backward(grad_out).reshape(feature_shape)
        first, *rest = order
        for layer in reversed(rest):
            grad = layer.backward(grad)
        return first.backward(grad, input_grad=input_grad)

    def extra_repr(self):
        return ""
