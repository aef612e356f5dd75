"""LeNet's evaluation order and its evaluation-mode shortcuts.

* ``swap_for_eval``: each max pooling runs before the monotone activation in front of it.
  max(act(z)) == act(max(z)) bit for bit, because Sigmoid and ReLU never decrease, so the
  output is the same and the activation runs on a quarter of the values (the sigmoid's exp
  is the costliest elementwise step on the CPU). Training keeps the book's order: its
  backward must send each window's gradient to the first maximum *of the activations*, as
  torch does, and two values whose sigmoids round to the same float32 would route
  differently. Average pooling never moves: mean(act(z)) is not act(mean(z)) for a
  sigmoid, and in the book's networks every average pooling follows an activation.

* ``fold_for_eval``: a BatchNorm with running statistics after a Conv2d or a Linear is a fixed
  per-channel affine map, s * z + t with s = gamma / sqrt(running_var + eps) and
  t = beta - s * running_mean, so the two are one layer of weights s * W and bias
  s * (b - running_mean) + beta (``Folded``): the BatchNorm's four passes over the
  convolution's output are gone. Not bit for bit the two layers' result (the scaling
  happens before the sums instead of after): within the float64 floor of the two
  (tests/nn/fast/test_order.py). A backward after such a forward replays the two layers'
  own forwards from the kept input and goes back through them (as max pooling finds its
  winners only when asked): their own backward, on the gradient that reaches them.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

from ... import backend
from ..activation import ReLU, Sigmoid
from ..batchnorm import BatchNorm1d, BatchNorm2d
from ..conv import Conv2d
from ..linear import Linear
from ..module import Module, Parameter
from ..pooling import MaxPool2d


def is_monotone_activation(layer) -> bool:
    return isinstance(layer, (Sigmoid, ReLU))


def swap_for_eval(layers: list) -> list:
    """``layers`` with every (monotone activation, MaxPool2d) pair that sits side by side
    swapped to (MaxPool2d, activation). Nothing else moves (a BatchNorm with a negative
    weight is not monotone increasing, an average does not commute with a sigmoid)."""
    layers = list(layers)
    i = 0
    while i < len(layers) - 1:
        if is_monotone_activation(layers[i]) and isinstance(layers[i + 1], MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
            i += 2
        else:
            i += 1
    return layers


class Replay(NamedTuple):
    x: object             # the input: a backward runs the two layers' forwards again from it


class Folded(Module):
    """Evaluation only: ``layer`` (Conv2d or Linear) and the BatchNorm ``norm`` after it, which
    uses its running statistics, as one layer with folded weights. Neither is a child module:
    they stay where they are in the network (state_dict, print, the tools' walk)."""

    def __init__(self, layer, norm):
        super().__init__()
        object.__setattr__(self, "layer", layer)
        object.__setattr__(self, "norm", norm)
        shadow = copy.deepcopy(layer)      # the layer's settings, with its own parameters and records
        shadow.clear_cache()
        if shadow.bias is None:
            shadow.bias = Parameter(shadow.weight.data.reshape(len(shadow.weight.data), -1)[:, 0].copy())
        object.__setattr__(self, "shadow", shadow)

    def folded(self):
        """(weight, bias) of the one layer: s * W and s * (b - running_mean) + beta."""
        layer, norm = self.layer, self.norm
        xp = backend.get_array_module(layer.weight.data)
        s = 1 / xp.sqrt(norm.running_var + norm.eps)
        if norm.affine:
            s = s * norm.weight.data
        weight = layer.weight.data * s.reshape((-1,) + (1,) * (layer.weight.data.ndim - 1))
        bias = -norm.running_mean if layer.bias is None else layer.bias.data - norm.running_mean
        bias = bias * s
        if norm.bias is not None:
            bias += norm.bias.data
        return weight, bias

    def forward(self, x):
        shadow = self.shadow
        shadow.weight.data, shadow.bias.data = self.folded()
        if hasattr(self.layer, "impl"):
            shadow.impl = self.layer.impl
        y = shadow(x)
        shadow.clear_cache()                 # its backward never runs: the two layers' does
        self.save_for_backward(Replay(x))
        return y

    def backward(self, grad_out, input_grad=True):
        x = self.saved().x
        self.norm(self.layer(x))
        return self.layer.backward(self.norm.backward(grad_out), input_grad=input_grad)


def foldable(layer, norm) -> bool:
    """``norm`` is a BatchNorm after the Conv2d or Linear ``layer`` that uses running statistics."""
    pairs = ((Conv2d, BatchNorm2d), (Linear, BatchNorm1d))
    return (any(isinstance(layer, a) and type(norm) is b for a, b in pairs)
            and not norm.training and norm.track_running_stats
            and norm.num_features == getattr(layer, "out_channels", getattr(layer, "out_features", None)))


def fold_for_eval(layers: list, cache: dict) -> list:
    """``layers`` with each foldable (layer, BatchNorm) pair side by side replaced by its
    ``Folded`` layer, taken from ``cache`` (keyed by the pair, so that each keeps its buffers
    from call to call) or made there."""
    out, i = [], 0
    while i < len(layers):
        if i + 1 < len(layers) and foldable(layers[i], layers[i + 1]):
            key = (id(layers[i]), id(layers[i + 1]))
            folded = cache.get(key)
            if folded is None or folded.layer is not layers[i] or folded.norm is not layers[i + 1]:
                folded = cache[key] = Folded(layers[i], layers[i + 1])
            out.append(folded)
            i += 2
        else:
            out.append(layers[i])
            i += 1
    return out
