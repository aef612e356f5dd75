"""lenet_np: the LeNet of Dive into Deep Learning in NumPy (and CuPy), with
hand-written backprop."""

import importlib

from . import backend, nn, optim
from .backend import as_numpy, get_array_module, to_device
from .model import LeNet
from .parallel import DataParallel

__version__ = "0.1.0"

__all__ = ["DataParallel", "LeNet", "as_numpy", "backend", "get_array_module", "gradcheck", "nn", "optim", "to_device"]


def __getattr__(name):
    """``lenet_np.gradcheck``: the module lenet_np/gradcheck.py, which is callable
    (``ln.gradcheck(layer, x)`` checks a layer's backward). It is imported on first use, so
    that ``python -m lenet_np.gradcheck`` runs it without importing it twice."""
    if name == "gradcheck":
        return importlib.import_module(".gradcheck", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
