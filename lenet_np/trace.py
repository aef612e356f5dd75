"""Follow one mini-batch through LeNet and back: ``python -m lenet_np.trace``.

Forward, layer by layer, it prints each output's shape and statistics (mean, std, min,
max); then the loss; then backward, layer by layer in reverse, the gradient each
layer's ``backward`` returns (dL/d its input: shape, norm, largest entry) and the
gradients it stored in its parameters. With sigmoids the gradient shrinks on its way
down (each sigmoid multiplies it by y(1 - y) <= 1/4): the trace shows by how much.

``trace(net, x, y)`` walks the layers one by one in the book's order (``LeNet.walk``:
conv.0 ... flatten ... fc.4 for the classic network, net.0 ... net.N for the d2l and
batchnorm variants), then back through the same layers in reverse, and returns one record
(a dict) per step, so the numbers can be used in code.
The network runs in the mode it is in (a fresh or loaded one trains: BatchNorm uses the
batch's statistics).

The images are the first Fashion-MNIST test images: from ``--data-dir`` when given (an
error when the data is not there), else from the search path of ``lenet_np.data``, else,
when no data set is found anywhere, random images. The weights come from ``--checkpoint``
(a ``.npz`` written by ``lenet_np.train``, read by ``checkpoint.load_network``) or are
freshly initialised.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import backend, checkpoint, cli
from .backprop import backprop
from .data import CLASS_NAMES, DataError, find_data_dir, load_fashion_mnist
from .model import ACTIVATIONS, POOLS, VARIANT_ALIASES, VARIANTS, LeNet, resolve_variant
from .parallel import uses_batch_statistics


class ToolError(RuntimeError):
    """A problem the command line reports in one line (exit status 1, no traceback)."""


# -- the network and the data (shared with lenet_np.visualize) -------------------------------
def describe_weights(path, meta) -> str:
    """Where a checkpoint's weights come from, for the first line of a tool's output."""
    epoch = meta.get("epoch")
    return f"checkpoint {path}" + (f" (epoch {epoch})" if epoch is not None else "")


def build_network(path=None, activation=None, pool=None, seed=0, variant=None) -> tuple[LeNet, str]:
    """(net, description): the LeNet of a checkpoint (``checkpoint.load_network``), or a fresh one.

    The checkpoint decides the variant, the activation and the pooling; asking for another
    ``variant``, ``activation`` or ``pool`` raises ToolError (the weights belong to its network).
    """
    if path is None:
        try:
            net = LeNet(activation=activation, pool=pool, seed=seed, **({"variant": variant} if variant else {}))
        except ValueError as exc:
            raise ToolError(str(exc)) from None
        return net, f"freshly initialised (seed {seed})"
    net, meta = checkpoint.load_network(path)
    for key, asked in (("variant", variant), ("activation", activation), ("pool", pool)):
        held = getattr(net, key)
        if asked is not None and (resolve_variant(asked)[0] if key == "variant" else asked) != held:
            raise ToolError(f"checkpoint {path} holds a LeNet with {key}={held!r}, not {asked!r}; "
                            f"drop --{key} or pass --{key} {held}")
    return net, describe_weights(path, meta)


def load_test_set(data_dir=None):
    """(images float32 (N, 1, 28, 28) in [0, 1], labels int64 (N,)) of the Fashion-MNIST
    test set, and where they come from; or (None, reason) when no ``data_dir`` was given and
    no data set is found. A data set that is found but damaged, or a ``data_dir`` without the
    data, raises ToolError."""
    try:
        directory = find_data_dir(data_dir)
    except DataError as exc:
        if data_dir is not None:                                 # a path the user typed: no stand-in
            raise ToolError(str(exc)) from None
        return None, "Fashion-MNIST not found; pass --data-dir or run `make data`"
    try:
        data = load_fashion_mnist(directory)
    except DataError as exc:
        raise ToolError(str(exc)) from None
    images = data.test_images.astype(np.float32).reshape(-1, 1, 28, 28) / 255
    return (images, data.test_labels.astype(np.int64)), "the Fashion-MNIST test set"


def sample_batch(batch_size: int, data_dir=None, seed: int = 0):
    """(x, y, description): the first ``batch_size`` test images (all of them when the test
    set is smaller), or random ones when no data set is found."""
    test, why = load_test_set(data_dir)
    if test is not None:
        images, labels = test
        if batch_size >= len(images):
            what = f"all {len(images)} Fashion-MNIST test images"
            return images, labels, what + (f" (--batch-size {batch_size} asked for more)" if batch_size > len(images)
                                           else "")
        return images[:batch_size], labels[:batch_size], f"the first {batch_size} Fashion-MNIST test images"
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch_size)
    return x, y, f"{batch_size} random images with random labels (no data: {why})"


# -- the trace --------------------------------------------------------------------------------
def _stats(a) -> dict:
    a = backend.as_numpy(a).astype(np.float64)
    return dict(shape=tuple(a.shape), mean=float(a.mean()), std=float(a.std()), min=float(a.min()),
                max=float(a.max()))


def _grad(g) -> dict:
    g = backend.as_numpy(g).astype(np.float64)
    return dict(shape=tuple(g.shape), norm=float(np.linalg.norm(g)), max_abs=float(np.abs(g).max()))


def trace(net: LeNet, x, y, loss_fn=None) -> list[dict]:
    """Forward and backward through ``net`` layer by layer; one record per step.

    Forward records: {"phase": "forward", "name", "type", "shape", "mean", "std", "min",
    "max"} for the input and every layer's output; then {"phase": "loss", "value"}.
    Backward records: {"phase": "backward", "name", "type", "shape", "norm", "max_abs",
    "params": {param name: {"shape", "norm", "max_abs"}}}, where shape/norm/max_abs
    describe dL/d(the layer's input), what its ``backward`` returned; the first one
    ("loss") is dL/dlogits. The parameters' ``.grad`` are left filled, as after
    ``net.backward``.
    """
    bp = backprop(net, x, y, loss_fn)                            # the book's order, Flatten included
    records = [dict(phase="forward", name="input", type="", **_stats(x))]
    records += [dict(phase="forward", name=p.name, type=type(p.layer).__name__, **_stats(p.output)) for p in bp.layers]
    loss_type = type(loss_fn).__name__ if loss_fn is not None else "CrossEntropyLoss"
    records.append(dict(phase="loss", name="loss", type=loss_type, value=bp.loss))
    # dL/dlogits first, then what each layer's backward returned: dL/d(its input), which is
    # dL/d(the previous layer's output), or dL/d(image) for the first layer
    records.append(dict(phase="backward", name="loss", type=loss_type, params={}, **_grad(bp.layers[-1].grad)))
    below = [p.grad for p in bp.layers[:-1]][::-1] + [bp.input_grad]
    for p, grad_in in zip(reversed(bp.layers), below):
        params = {f"{p.name}.{k}": _grad(g) for k, g in p.param_grads.items()}
        records.append(dict(phase="backward", name=p.name, type=type(p.layer).__name__, params=params,
                            **_grad(grad_in)))
    return records


def format_trace(records: list[dict]) -> str:
    """The records of ``trace`` as two tables, forward and backward."""
    lines = ["FORWARD: each layer's output",
             f"{'layer':<9}{'type':<18}{'shape':<18}{'mean':>10}{'std':>10}{'min':>10}{'max':>10}"]
    for r in records:
        if r["phase"] == "forward":
            lines.append(f"{r['name']:<9}{r['type']:<18}{str(r['shape']):<18}{r['mean']:>10.4f}{r['std']:>10.4f}"
                         f"{r['min']:>10.4f}{r['max']:>10.4f}")
        elif r["phase"] == "loss":
            lines.append(f"{'loss':<9}{r['type']:<18}{'()':<18}{r['value']:>10.4f}")
    lines += ["", "BACKWARD: what each layer's backward returns, dL/d(its input), and its parameter gradients",
              f"{'layer':<9}{'type':<18}{'dL/d(input)':<18}{'norm':>10}{'max|.|':>10}   parameter gradients (norm)"]
    for r in records:
        if r["phase"] != "backward":
            continue
        params = ", ".join(f"{k.rsplit('.', 1)[1]} {tuple(v['shape'])} {v['norm']:.3e}" for k, v in r["params"].items())
        name = "loss" if r["name"] == "loss" else r["name"]
        lines.append(f"{name:<9}{r['type']:<18}{str(r['shape']):<18}{r['norm']:>10.3e}{r['max_abs']:>10.3e}   "
                     f"{params}")
    return "\n".join(lines)


MAX_BATCH = 10_000      # the size of the Fashion-MNIST test set


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m lenet_np.trace",
                                description="Trace one mini-batch through LeNet: shapes and statistics forward, "
                                            "gradient shapes and norms backward.")
    p.add_argument("--batch-size", type=cli.int_in_range(1, MAX_BATCH), default=4,
                   help=f"images in the batch, 1 to {MAX_BATCH:,} (the test set's size) (default 4)")
    p.add_argument("--variant", choices=(*VARIANTS, *VARIANT_ALIASES), default=None,
                   help="classic (default; seed is its earlier name), d2l or batchnorm; taken from the checkpoint "
                   "when one is given")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None,
                   help="sigmoid (default) or relu; taken from the checkpoint when one is given")
    p.add_argument("--pool", choices=sorted(POOLS), default=None,
                   help="max (default; avg for d2l and batchnorm) or avg; taken from the checkpoint when one "
                   "is given")
    p.add_argument("--checkpoint", type=cli.existing_file, default=None,
                   help="a .npz checkpoint of lenet_np.train (default: fresh weights)")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None,
                   help="directory of the Fashion-MNIST files (default: search; random images when none is found)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="seeds the initialisation (without --checkpoint) and the random images, >= 0 (default 0)")
    return p


def run(args) -> int:
    try:
        net, where = build_network(args.checkpoint, args.activation, args.pool, args.seed, args.variant)
        if args.batch_size < 2 and uses_batch_statistics(net):
            raise ToolError(f"--batch-size {args.batch_size}: LeNet(variant={net.variant!r}) normalises with the "
                            "batch's statistics in training mode, which needs a batch of at least 2; "
                            "pass --batch-size 2 or more")
        x, y, what = sample_batch(args.batch_size, args.data_dir, args.seed)
        records = trace(net, x, y)
    except (ToolError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    labels = ", ".join(f"{int(c)} {CLASS_NAMES[int(c)]}" for c in y[:8]) + (", ..." if len(y) > 8 else "")
    print(f"LeNet(variant={net.variant!r}, activation={net.activation!r}, pool={net.pool!r}), weights: {where}")
    print(f"batch: {what}; labels: {labels}\n")
    print(format_trace(records))
    return 0


def main(argv=None) -> int:
    return cli.guard(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
