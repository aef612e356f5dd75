"""The benchmark data: Fashion-MNIST (or synthetic data of the same shapes) and its batches,
and the copy of it that travels to a lent GPU machine.

A lent GPU machine has no network and no Fashion-MNIST; it runs a copy of the working tree
and can carry ignored paths. ``stage()`` (``python benchmarks/gpu_check.py --stage``) copies
the four files, wherever ``lenet_np.data`` finds them here, into ``.gpu-data/fashion-mnist/``
(ignored by git, about 30 MB), and ``threadpoolctl.py`` (a dependency of lenet_np that such a
machine may lack; one file) into ``.gpu-data/python/``; the GPU check there reads them from
that folder (``staged_data_dir``).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BATCH_SIZE = 256
N_TRAIN, N_TEST = 60_000, 10_000

REPO = Path(__file__).resolve().parent.parent
STAGED = REPO / ".gpu-data"                 # what `gpu_check.py --stage` fills; ignored by git
STAGED_PYTHON = "python"                     # ... its folder of pure-Python modules
STAGED_DATA = "fashion-mnist"                # ... its folder of the four data files
STAGED_MODULES = ("threadpoolctl",)          # dependencies a bare GPU machine may lack, each one file


@dataclass
class Data:
    train_images: np.ndarray   # (N, 28, 28) uint8
    train_labels: np.ndarray   # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str                # "real" or "synthetic" (with the reason when real was asked for)


def synthetic_data(seed=0, n_train=N_TRAIN, n_test=N_TEST) -> Data:
    rng = np.random.default_rng(seed)
    return Data(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train),
                rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test),
                "synthetic (uniform random uint8)")


def load_data(kind="real", data_dir=None) -> Data:
    """Fashion-MNIST through lenet_np.data when kind == "real" and it loads (from ``data_dir``
    when given, else where lenet_np.data looks), else synthetic data of the same shapes and
    dtype. ``Data.source`` says which, and where the real data came from."""
    if kind == "synthetic":
        return synthetic_data()
    try:
        from lenet_np.data import find_data_dir, load_fashion_mnist

        where = find_data_dir(data_dir)
        ds = load_fashion_mnist(where)
    except Exception as exc:  # not written yet, not downloaded, damaged: fall back, say why
        data = synthetic_data()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        data.source += f"; the real data did not load: {type(exc).__name__}: {first}"
        return data
    return Data(np.ascontiguousarray(ds.train_images), ds.train_labels.astype(np.int64),
                np.ascontiguousarray(ds.test_images), ds.test_labels.astype(np.int64),
                f"real Fashion-MNIST ({where})")


def staged_data_dir(root=STAGED) -> Path | None:
    """The staged copy of the four data files (``stage``), or None where there is none."""
    folder = Path(root) / STAGED_DATA
    return folder if folder.is_dir() and any(folder.iterdir()) else None


def staged_python_dir(root=STAGED) -> Path | None:
    """The folder of staged pure-Python modules, or None."""
    folder = Path(root) / STAGED_PYTHON
    return folder if folder.is_dir() else None


def stage(root=STAGED, data_dir=None, verify=True, log=print) -> dict:
    """Copy what a GPU machine without network needs into ``root``: the four Fashion-MNIST files
    as ``lenet_np.data`` finds them (in ``data_dir`` when given), checked by their SHA-256
    (``verify``), into ``root/fashion-mnist``; each module of ``STAGED_MODULES`` that is one
    file into ``root/python``. Returns what was copied: {"data": [paths], "python": [paths],
    "bytes": total}."""
    import importlib

    from lenet_np.data import FILES, find_data_dir, load_fashion_mnist

    root = Path(root)
    src = find_data_dir(data_dir)
    dest = root / STAGED_DATA
    dest.mkdir(parents=True, exist_ok=True)
    copied = {"data": [], "python": [], "bytes": 0}
    for name in FILES.values():
        path = next(p for p in (src / f"{name}.gz", src / name) if p.is_file())   # as lenet_np.data reads it
        for stale in (dest / name, dest / f"{name}.gz"):      # one copy of each file, as found
            if stale.name != path.name and stale.exists():
                stale.unlink()
        target = dest / path.name
        shutil.copyfile(path, target)
        copied["data"].append(target)
        copied["bytes"] += target.stat().st_size
    load_fashion_mnist(dest, verify=verify)                   # what the device will read, read here once
    log(f"staged Fashion-MNIST from {src} into {dest} ({copied['bytes'] / 2 ** 20:.1f} MiB"
        f"{', SHA-256 checked' if verify else ''})")
    py = root / STAGED_PYTHON
    for module in STAGED_MODULES:
        path = Path(importlib.import_module(module).__file__)
        if path.name == "__init__.py":
            log(f"  {module} is a package, not one file: not staged")
            continue
        py.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, py / path.name)
        copied["python"].append(py / path.name)
        copied["bytes"] += path.stat().st_size
        log(f"staged {module} ({path}) into {py}")
    return copied


def batch_slices(n, batch_size=BATCH_SIZE, limit=None):
    """(start, stop) of each mini-batch of n examples (the last one may be short), at most ``limit``."""
    starts = range(0, n, batch_size)
    if limit is not None:
        starts = starts[:limit]
    return [(s, min(s + batch_size, n)) for s in starts]


def random_batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)
