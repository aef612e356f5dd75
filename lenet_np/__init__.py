"""lenet_np: the LeNet of Dive into Deep Learning in NumPy (and CuPy), with
hand-written backprop."""

from . import backend, nn, optim
from .backend import as_numpy, get_array_module, to_device
from .gradcheck import gradcheck
from .model import LeNet
from .parallel import DataParallel

__version__ = "0.1.0"

__all__ = ["DataParallel", "LeNet", "as_numpy", "backend", "get_array_module", "gradcheck", "nn", "optim", "to_device"]
