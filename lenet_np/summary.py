"""A torchinfo-like table of LeNet: ``python -m lenet_np.summary``.

For each layer: its name in ``state_dict`` terms (conv.0 ... fc.4), its type, the shape of
its output for a batch of the given size, its parameter count and its multiply-adds.

The shapes are not computed from formulas: a batch of zeros is run through the layers one
by one, exactly as ``LeNet.forward`` does (``net.conv``, then the flatten reshape, then
``net.fc``), and each output's shape is read off.

Multiply-adds count the multiply-accumulate operations of the weights only:
``N * O * OH * OW * C * KH * KW`` for a convolution and ``N * in * out`` for a linear
layer; bias additions, activations and pooling are not counted (as torchinfo does).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import backend
from .model import ACTIVATIONS, POOLS, LeNet
from .nn import Conv2d, Linear, Sequential
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
    """(name, layer) pairs in forward order; the layer None stands for the flatten reshape."""
    if hasattr(net, "conv") and hasattr(net, "fc"):           # LeNet and its variants
        yield from ((f"conv.{i}", m) for i, m in enumerate(net.conv))
        yield "flatten", None
        yield from ((f"fc.{i}", m) for i, m in enumerate(net.fc))
    elif isinstance(net, Sequential):
        yield from ((str(i), m) for i, m in enumerate(net))
    else:
        raise TypeError(f"summary: expected a LeNet or a Sequential, got {type(net).__name__}")


def summary(net: Module, batch_size: int = 1, input_shape=INPUT_SHAPE) -> list[dict]:
    """One dict per layer: name, type, output_shape, params, mult_adds (forward order).

    ``input_shape`` is the shape of one example, (1, 28, 28) for LeNet. The network's
    parameters are not changed; its cached forward state is overwritten.
    """
    if batch_size < 1:
        raise ValueError(f"summary: batch_size must be >= 1, got {batch_size}")
    params = net.parameters()
    dtype = params[0].dtype if params else np.float32
    xp = backend.get_array_module(params[0].data) if params else np
    x = xp.zeros((batch_size, *input_shape), dtype=dtype)
    rows = []
    for name, layer in _stages(net):
        if layer is None:                                      # the seed's feature.view(N, -1)
            x = x.reshape(x.shape[0], -1)
            rows.append(dict(name=name, type="Flatten (view)", output_shape=tuple(x.shape),
                             params=0, mult_adds=0))
            continue
        x = layer(x)
        rows.append(dict(name=name, type=type(layer).__name__, output_shape=tuple(x.shape),
                         params=sum(p.size for p in layer.parameters()),
                         mult_adds=_mult_adds(layer, x.shape)))
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
    activations = sum(int(np.prod(r["output_shape"])) for r in rows if not r["type"].startswith("Flatten"))
    input_elems = batch_size * int(np.prod(input_shape))
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
    p = argparse.ArgumentParser(prog="python -m lenet_np.summary",
                                description="Print LeNet as a table: output shapes, parameters, multiply-adds.")
    p.add_argument("--batch-size", type=int, default=1, help="batch size of the output shapes (default 1)")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default="sigmoid")
    p.add_argument("--pool", choices=sorted(POOLS), default="max")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        print(f"error: --batch-size must be at least 1, got {args.batch_size}", file=sys.stderr)
        return 1
    net = LeNet(activation=args.activation, pool=args.pool, seed=0)
    print(f"LeNet(activation={args.activation!r}, pool={args.pool!r}), input "
          f"[{args.batch_size}, {', '.join(map(str, INPUT_SHAPE))}]")
    print(format_summary(summary(net, args.batch_size), args.batch_size))
    return 0


if __name__ == "__main__":
    sys.exit(main())
