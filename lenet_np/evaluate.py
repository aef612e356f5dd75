"""Evaluate a checkpoint on the Fashion-MNIST test set: ``python -m lenet_np.evaluate``.

Prints the test accuracy, the accuracy of each class by name, and the confusion
matrix (rows: true class, columns: predicted class).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import backend, checkpoint, cli
from .data import CLASS_NAMES, DataError, load_fashion_mnist
from .model import LeNet, resolve_variant
from .train import predict


def network_kwargs(settings) -> dict:
    """The LeNet keyword arguments (variant, activation, pool) of a checkpoint's settings:
    ``LeNet(**network_kwargs(meta["settings"]))`` rebuilds its network. A setting that is
    absent takes the variant's default; a checkpoint without a variant holds the seed variant's network."""
    variant, activation, pool = resolve_variant(settings.get("variant", "seed"), settings.get("activation"),
                                                settings.get("pool"))
    return {"variant": variant, "activation": activation, "pool": pool}


def load_model(path, device="cpu") -> LeNet:
    """A LeNet of the checkpoint's architecture (its variant, activation, pooling) with its weights."""
    meta = checkpoint.load(path)["meta"]
    try:
        net = LeNet(**network_kwargs(meta.get("settings", {})))
    except ValueError as exc:
        raise checkpoint.CheckpointError(f"checkpoint {path}: {exc}") from None
    checkpoint.load_into(path, net)
    return net.to(device)


def confusion_matrix(true, pred, num_classes: int = 10) -> np.ndarray:
    """counts[t, p] = number of examples of class t predicted as p."""
    return np.bincount(true.astype(np.int64) * num_classes + pred, minlength=num_classes ** 2).reshape(
        num_classes, num_classes)


def format_report(cm: np.ndarray) -> str:
    total = cm.sum()
    lines = [f"test accuracy {np.trace(cm) / total:.4f} ({np.trace(cm)}/{total})", "", "per-class accuracy:"]
    width = max(len(n) for n in CLASS_NAMES)
    for i, name in enumerate(CLASS_NAMES):
        n = cm[i].sum()
        lines.append(f"  {i} {name:<{width}}  {cm[i, i] / n if n else float('nan'):.3f}  ({cm[i, i]}/{n})")
    lines += ["", "confusion matrix (rows: true class, columns: predicted class):"]
    lines.append("      " + "".join(f"{j:>6}" for j in range(len(cm))))
    for i, row in enumerate(cm):
        lines.append(f"  {i:>2}  " + "".join(f"{v:>6}" for v in row) + f"   {CLASS_NAMES[i]}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m lenet_np.evaluate",
        description="Evaluate a checkpoint on the Fashion-MNIST test set: the test accuracy, the accuracy of each "
                    "class, and the confusion matrix (rows: true class, columns: predicted class).")
    p.add_argument("--checkpoint", type=cli.existing_file, required=True,
                   help="a .npz checkpoint written by python -m lenet_np.train")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None,
                   help="directory with the four Fashion-MNIST IDX files (default: search the usual places)")
    p.add_argument("--device", type=cli.device, default="cpu",
                   help="auto, cpu or cuda; auto picks cuda when CuPy sees a GPU (default cpu)")
    p.add_argument("--batch-size", type=cli.positive_int, default=1000,
                   help="test images per forward pass; changes speed and memory, not the result (default 1000)")
    return p


def run(args) -> int:
    try:
        net = load_model(args.checkpoint, args.device)
        data = load_fashion_mnist(args.data_dir)
        xp = backend.xp_for(args.device)
        pred = backend.as_numpy(predict(net, xp.asarray(data.test_images), args.batch_size))
    except (DataError, checkpoint.CheckpointError, RuntimeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_report(confusion_matrix(data.test_labels, pred)))
    return 0


def main(argv=None) -> int:
    return cli.guard(run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
