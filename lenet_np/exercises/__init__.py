"""Backprop exercises checked by the machine: ``python -m lenet_np.exercises``.

    new DIR                       write one file per layer: the forward given, the backward to write
    check DIR [--layer NAME ...]  check each backward: finite differences, lenet_np's layers, traps
          [--show]                and print the smallest failing case, every number of it
    solutions DIR                 write the reference solutions

The layers, in the order to do them: linear, sigmoid, relu, softmax_cross_entropy, avgpool,
maxpool, conv_naive, conv_im2col, batchnorm. The engine never imports this package; it imports
the engine (lenet_np.nn) to compare with.
"""

from .command import build_parser, main
from .layers import EXERCISES

__all__ = ["EXERCISES", "build_parser", "main"]
