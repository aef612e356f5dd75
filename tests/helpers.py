"""What the tools' tests share: tiny self-made checkpoints and data sets, and a command's exit status."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lenet_np import LeNet, checkpoint

ROOT = Path(__file__).resolve().parent.parent


HISTORY = [
    {"epoch": 1, "loss": 1.8, "train_acc": 0.33, "test_acc": 0.58, "time_sec": 10.0, "examples_per_sec": 6000.0},
    {"epoch": 2, "loss": 0.95, "train_acc": 0.63, "test_acc": 0.69, "time_sec": 10.0, "examples_per_sec": 6000.0},
]


def save_checkpoint(path, activation="sigmoid", pool="max", seed=0, history=HISTORY):
    net = LeNet(activation=activation, pool=pool, seed=seed)
    checkpoint.save(path, net, None, {"epoch": len(history), "settings": {"activation": activation, "pool": pool,
                                                                           "seed": seed}, "history": history})
    return net


def exit_status(main, argv):
    """main(argv)'s exit status, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# -- a tiny Fashion-MNIST on disk -----------------------------------------------------------------
def write_fake_fashion_mnist(directory, n_test=40):
    """A tiny data set in the real files' format (IDX, gzipped)."""
    data = pytest.importorskip("lenet_np.data")
    rng = np.random.default_rng(0)
    directory.mkdir()
    arrays = {"train_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test).astype(np.uint8)}
    for field, name in data.FILES.items():
        data.write_idx(directory / f"{name}.gz", arrays[field])
    return directory
