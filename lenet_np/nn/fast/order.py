"""LeNet's evaluation order: each max pooling runs before the monotone activation in front
of it. max(act(z)) == act(max(z)) bit for bit, because Sigmoid and ReLU never decrease, so
the output is the same and the activation runs on a quarter of the values (the sigmoid's
exp is the costliest elementwise step on the CPU). Training keeps the book's order: its
backward must send each window's gradient to the first maximum *of the activations*, as
torch does, and two values whose sigmoids round to the same float32 would route
differently."""

from __future__ import annotations

from ..activation import ReLU, Sigmoid
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
