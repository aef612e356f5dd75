"""Evaluate a checkpoint on the Fashion-MNIST test set: ``python -m lenet_np.evaluate``.

Prints the test accuracy, the accuracy of each class by name, and the confusion
matrix (rows: true class, columns: predicted class).

``predict(net, images)`` (and ``predict_logits``, ``accuracy``) is the package's one way to
classify a set of images, batch by batch in evaluation mode: training measures its test
accuracy with it, and visualize its probabilities.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import backend, checkpoint, cli
from .data import CLASS_NAMES, DataError, load_fashion_mnist, to_float_images


def predict_logits(net, images, batch_size: int = 1000):
    """The logits (N, 10) of ``images``, batch by batch, in evaluation mode, on the images'
    device; the network is left in the mode it was in.

    ``images``: uint8 (N, 28, 28) or (N, 1, 28, 28), scaled to [0, 1] as training does
    (``data.to_float_images``: divided by 255), or floats (N, 1, 28, 28), taken as they are."""
    if batch_size < 1:
        raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
    if len(images) == 0:
        raise ValueError("predict: no images")
    xp = backend.get_array_module(images)
    was_training = net.training
    net.eval()
    try:
        logits = []
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size]
            logits.append(net(to_float_images(x) if x.dtype == np.uint8 else x))
    finally:
        net.train(was_training)
    return xp.concatenate(logits)


def predict(net, images, batch_size: int = 1000):
    """The predicted classes (N,) of ``images`` (as ``predict_logits`` takes them), on their device."""
    return predict_logits(net, images, batch_size).argmax(axis=1)


def accuracy(net, images, labels, batch_size: int = 1000) -> float:
    """The share of ``images`` whose predicted class is their label."""
    return float((predict(net, images, batch_size) == labels).mean())


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
        net, _ = checkpoint.load_network(args.checkpoint, args.device)
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
