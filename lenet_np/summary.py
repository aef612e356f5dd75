"""A torchinfo-like table of LeNet: ``python -m lenet_np.summary``.

For each layer: its name in ``state_dict`` terms (conv.0 ... fc.4, or net.0 ... net.N for
the d2l and batchnorm variants), its type, the shape of its output for a batch of the given
size, its parameter count and its multiply-adds.

The shapes are computed, not measured: each layer's output shape follows from its input
shape and its settings (kernel size, stride and padding of a convolution or pooling, out
features of a linear layer), walking the layers in the order ``LeNet.forward`` does
(``LeNet.named_layers``, in the book's order). Nothing is allocated, so any
batch size is cheap; the tests check the formulas against a real forward pass.

Multiply-adds count the multiply-accumulate operations of the weights only:
``N * O * OH * OW * C * KH * KW`` for a convolution and ``N * in * out`` for a linear
layer; bias additions, batch normalization, activations and pooling are not counted (as
torchinfo does). Parameters are the trainable ones; BatchNorm's running statistics are
buffers and are not counted.
"""

from __future__ import annotations

import argparse
import math
import sys

import numpy as np

from . import cli
from .model import ACTIVATIONS, POOLS, VARIANT_ALIASES, VARIANTS, LeNet
from .nn import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Sigmoid
from .nn.im2col import conv_output_size
from .nn.module import Module

INPUT_SHAPE = (1, 28, 28)


def _mult_adds(layer, out_shape) -> int:
    """Weight multiply-accumulates of one layer for one forward pass of the batch."""
    if isinstance(layer, Conv2d):
        n, o, oh, ow = out_shape
        kh, kw = layer.kernel_size
        return n * o * oh * ow * layer.in_channels * kh * kw
    if isinstance(layer, Linear):
        return out_shape[0] * layer.in_features * layer.out_features
    return 0


def _stages(net):
    """(name, layer) pairs in forward order (``LeNet.named_layers``, Flatten included)."""
    if isinstance(net, LeNet):                                 # every variant
        yield from net.named_layers()
    elif isinstance(net, Sequential):
        yield from ((str(i), m) for i, m in enumerate(net))
    else:
        raise TypeError(f"summary: expected a LeNet or a Sequential, got {type(net).__name__}")


def output_shape(layer, in_shape: tuple) -> tuple:
    """The shape of ``layer``'s output for an input of ``in_shape``, from the layer's settings."""
    if isinstance(layer, (Conv2d, MaxPool2d, AvgPool2d)):
        if len(in_shape) != 4:
            raise ValueError(f"summary: {type(layer).__name__} takes (N, C, H, W) inputs, got shape {in_shape}")
        n, c, h, w = in_shape
        (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
        oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
        if oh < 1 or ow < 1:
            raise ValueError(f"summary: {type(layer).__name__} with kernel {layer.kernel_size} does not fit "
                             f"an input of {h}x{w}")
        if isinstance(layer, Conv2d):
            if c != layer.in_channels:
                raise ValueError(f"summary: Conv2d takes {layer.in_channels} channels, got {c}")
            c = layer.out_channels
        return (n, c, oh, ow)
    if isinstance(layer, Linear):
        if in_shape[-1] != layer.in_features:
            raise ValueError(f"summary: Linear takes {layer.in_features} features, got shape {in_shape}")
        return (*in_shape[:-1], layer.out_features)
    if isinstance(layer, Flatten):
        return (in_shape[0], math.prod(in_shape[1:]))
    if isinstance(layer, (Sigmoid, ReLU)):
        return tuple(in_shape)
    if isinstance(layer, (BatchNorm1d, BatchNorm2d)):
        ndim = 4 if isinstance(layer, BatchNorm2d) else 2
        if len(in_shape) != ndim or in_shape[1] != layer.num_features:
            raise ValueError(f"summary: {type(layer).__name__}({layer.num_features}) takes "
                             f"{'(N, C, H, W)' if ndim == 4 else '(N, C)'} inputs with C = {layer.num_features}, "
                             f"got shape {in_shape}")
        return tuple(in_shape)
    raise TypeError(f"summary: cannot compute the output shape of a {type(layer).__name__}")


def summary(net: Module, batch_size: int = 1, input_shape=INPUT_SHAPE) -> list[dict]:
    """One dict per layer: name, type, output_shape, params, mult_adds (forward order).

    ``input_shape`` is the shape of one example, (1, 28, 28) for LeNet. The shapes are
    computed from the layers' settings (``output_shape``); nothing runs through the network.
    """
    if batch_size < 1:
        raise ValueError(f"summary: batch_size must be >= 1, got {batch_size}")
    shape = (batch_size, *input_shape)
    rows = []
    for name, layer in _stages(net):
        shape = output_shape(layer, shape)
        rows.append(dict(name=name, type=type(layer).__name__, output_shape=shape,
                         params=sum(p.size for p in layer.parameters()), mult_adds=_mult_adds(layer, shape)))
    return rows


def _mb(n_bytes: float) -> str:
    return f"{n_bytes / 1e6:.2f}"


def format_summary(rows: list[dict], batch_size: int | None = None, input_shape=INPUT_SHAPE,
                   dtype=np.float32) -> str:
    """The rows of ``summary`` as a text table with totals (torchinfo's layout)."""
    if batch_size is None:
        batch_size = rows[0]["output_shape"][0] if rows else 1
    itemsize = np.dtype(dtype).itemsize
    width = 76
    head = f"{'Layer (name: type)':<28}{'Output Shape':<22}{'Param #':>12}{'Mult-Adds':>14}"
    lines = ["=" * width, head, "=" * width]
    for r in rows:
        shape = "[" + ", ".join(str(s) for s in r["output_shape"]) + "]"
        params = f"{r['params']:,}" if r["params"] else "--"
        macs = f"{r['mult_adds']:,}" if r["mult_adds"] else "--"
        lines.append(f"{r['name'] + ': ' + r['type']:<28}{shape:<22}{params:>12}{macs:>14}")
    total_params = sum(r["params"] for r in rows)
    total_macs = sum(r["mult_adds"] for r in rows)
    # every layer's output is kept for backward (the flatten is a view, it costs nothing)
    activations = sum(math.prod(r["output_shape"]) for r in rows if not r["type"].startswith("Flatten"))
    input_elems = batch_size * math.prod(input_shape)
    lines += [
        "=" * width,
        f"Total params: {total_params:,}",
        f"Trainable params: {total_params:,}",
        f"Total mult-adds: {total_macs:,} (weights only, for a batch of {batch_size})",
        "=" * width,
        f"Input size (MB): {_mb(input_elems * itemsize)}",
        f"Layer outputs, forward (MB): {_mb(activations * itemsize)}",
        f"Params size (MB): {_mb(total_params * itemsize)}",
        "=" * width,
    ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m lenet_np.summary",
                                description="Print LeNet as a table: output shapes, parameters, multiply-adds.")
    p.add_argument("--batch-size", type=cli.positive_int, default=1,
                   help="batch size of the output shapes, >= 1 (default 1)")
    p.add_argument("--variant", choices=(*VARIANTS, *VARIANT_ALIASES), default="classic",
                   help="classic (the default; seed is its earlier name), d2l (today's book) or batchnorm (d2l's "
                   "LeNet with batch normalization)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None,
                   help="relu or sigmoid (default sigmoid)")
    p.add_argument("--pool", choices=sorted(POOLS), default=None,
                   help="avg or max pooling (default max; avg for d2l and batchnorm)")
    return p


def run(args) -> int:
    net = LeNet(activation=args.activation, pool=args.pool, seed=0, variant=args.variant)
    print(f"LeNet(variant={net.variant!r}, activation={net.activation!r}, pool={net.pool!r}), input "
          f"[{args.batch_size}, {', '.join(map(str, INPUT_SHAPE))}]")
    print(format_summary(summary(net, args.batch_size), args.batch_size))
    return 0


def main(argv=None) -> int:
    return cli.guard(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
