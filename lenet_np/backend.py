"""The array-module abstraction: NumPy on the CPU, CuPy on CUDA.

Layers never ask "which device am I on?" through a global flag. They call
``get_array_module(x)`` on the arrays they were given and use the module it
returns (``xp``), so one code path serves both libraries. The few places where
NumPy and CuPy differ live in this file and nowhere else:

* ``scatter_add``     ``np.add.at`` versus ``cupyx.scatter_add``
* ``sliding_windows`` ``numpy.lib.stride_tricks.as_strided`` versus CuPy's
* ``synchronize``     a no-op on the CPU, a device sync on CUDA
* moving arrays       ``to_device``, ``as_numpy``

CuPy is optional: importing this module without it works, and asking for
``"cuda"`` without it raises an error that names the missing package.
"""

from __future__ import annotations

import numpy as np

_CUPY_IMPORT_ERROR = None
try:  # CuPy is an optional extra: pip install lenet_np[cuda]
    import cupy as _cupy
except ImportError:  # not installed: the common case on a CPU machine
    _cupy = None
except Exception as exc:  # pragma: no cover - installed but broken (CUDA libraries)
    _cupy = None
    _CUPY_IMPORT_ERROR = exc

DEVICES = ("cpu", "cuda")


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device
        return False


def require_cupy():
    """Return the cupy module, or raise a RuntimeError that says how to get it."""
    if _cupy is None:
        why = f" (importing it failed: {_CUPY_IMPORT_ERROR})" if _CUPY_IMPORT_ERROR else ""
        raise RuntimeError(
            "device 'cuda' needs the package 'cupy', which is not installed" + why + ". "
            "Install the CuPy build for your CUDA version (for example "
            "`pip install cupy-cuda12x`, or `pip install lenet_np[cuda]`), or use device 'cpu'."
        )
    if not cupy_available():
        raise RuntimeError(
            "device 'cuda' was asked for, CuPy is installed, but no CUDA device is visible; "
            "check `nvidia-smi`, or use device 'cpu'."
        )
    return _cupy


def get_array_module(*arrays):
    """The array module (numpy or cupy) that the given arrays belong to."""
    if _cupy is not None:
        return _cupy.get_array_module(*arrays)
    return np


def is_cupy_array(x) -> bool:
    return _cupy is not None and isinstance(x, _cupy.ndarray)


def parse_device(device) -> str:
    """Normalise a torch-style device string: "cpu", "cuda", "cuda:0", "auto"."""
    if device is None:
        return "cpu"
    name = str(device).strip().lower()
    if name == "auto":
        return "cuda" if cupy_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name.startswith("cuda:"):
        require_cupy()
        if ":" in name:
            index = name.split(":", 1)[1]
            if not index.isdigit():
                raise ValueError(f"device {device!r}: expected 'cuda' or 'cuda:N' with N a number")
            if int(index) != 0:
                raise ValueError(
                    f"device {device!r}: only 'cuda' (the current device) is supported; "
                    "choose the GPU with CUDA_VISIBLE_DEVICES instead"
                )
        return "cuda"
    raise ValueError(f"unknown device {device!r}: use 'cpu', 'cuda' or 'auto'")


def device_of(x) -> str:
    """"cuda" for a CuPy array, "cpu" for anything else."""
    return "cuda" if is_cupy_array(x) else "cpu"


def xp_for(device: str):
    """The array module for a device string."""
    return require_cupy() if parse_device(device) == "cuda" else np


def as_numpy(x):
    """A NumPy array with the same contents (copies from the GPU when needed)."""
    if is_cupy_array(x):
        return _cupy.asnumpy(x)
    return np.asarray(x)


def to_device(x, device: str):
    """Move an array to "cpu" or "cuda"; returns x itself when it is already there."""
    device = parse_device(device)
    if device == "cuda":
        cp = require_cupy()
        return x if isinstance(x, cp.ndarray) else cp.asarray(x)
    return as_numpy(x)


def scatter_add(target, indices, values) -> None:
    """target[indices] += values, accumulating repeated indices (unbuffered)."""
    if is_cupy_array(target):
        import cupyx

        cupyx.scatter_add(target, indices, values)
    else:
        np.add.at(target, indices, values)


def sliding_windows(x, shape, strides):
    """A read-only strided view of x with the given shape and strides (in bytes).

    Used by im2col and pooling to see every kernel window without copying.
    """
    if is_cupy_array(x):
        return _cupy.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)
    return np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)


def synchronize(x=None) -> None:
    """Wait for queued GPU work (a no-op on the CPU); use before reading a clock."""
    if _cupy is not None and (x is None or is_cupy_array(x)):
        if cupy_available():
            _cupy.cuda.Device().synchronize()
