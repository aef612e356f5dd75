"""Layers with hand-written backward passes (names and arguments as torch.nn)."""

from .activation import ReLU, Sigmoid
from .batchnorm import BatchNorm1d, BatchNorm2d
from .conv import Conv2d
from .linear import Flatten, Linear
from .loss import CrossEntropyLoss
from .module import Module, Parameter, Sequential
from .pooling import AvgPool2d, MaxPool2d

__all__ = [
    "AvgPool2d", "BatchNorm1d", "BatchNorm2d", "Conv2d", "CrossEntropyLoss", "Flatten", "Linear", "MaxPool2d", "Module",
    "Parameter", "ReLU", "Sequential", "Sigmoid",
]
