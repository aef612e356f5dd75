"""The array-module abstraction: NumPy on the CPU, CuPy on CUDA.

Layers never ask "which device am I on?" through a global flag. They call
``get_array_module(x)`` on the arrays they were given and use the module it
returns (``xp``), so one code path serves both libraries. The few places where
NumPy and CuPy differ live in this file and nowhere else:

* ``sliding_windows`` ``as_strided``: read-only views on the CPU; CuPy's have no
                      ``writeable=False``, so nothing may ever write through them
* ``synchronize``     a no-op on the CPU, a device sync on CUDA
* ``on_gpu``          layers choose their implementation per backend by it: on a GPU,
                      every small call is a kernel launch, and reading a value back
                      (``float(x)``, ``bool(x)``) waits for the whole queue
* ``fused``           a function of elementwise operations: one fused kernel on CUDA
                      (``cupy.fuse``), the plain function on NumPy
* moving arrays       ``to_device``, ``as_numpy``

The CUDA array module is CuPy when it is installed. ``use_cuda_module`` puts
another module with CuPy's interface in its place (the test suite registers a
NumPy-backed stand-in this way, so the CuPy code paths run on machines without a
GPU). CuPy is optional: importing this module without it works, and asking for
``"cuda"`` without it raises an error that says what to install.
"""

from __future__ import annotations

import numpy as np

_CUPY_IMPORT_ERROR = None
try:  # CuPy is an optional extra: pip install lenet_np[cuda]
    import cupy as _cuda
except ImportError:  # not installed: the common case on a CPU machine
    _cuda = None
except Exception as exc:  # pragma: no cover - installed but broken (CUDA libraries)
    _cuda = None
    _CUPY_IMPORT_ERROR = exc

DEVICES = ("cpu", "cuda")
CUPY_PACKAGE = "cupy-cuda13x"     # the CuPy wheel for CUDA 13; cupy-cuda12x for CUDA 12 drivers


def use_cuda_module(module):
    """Make ``module`` the array module of device "cuda" and return the previous one.

    ``module`` must offer CuPy's interface where lenet_np uses it: ``ndarray``,
    ``asnumpy``, ``cuda.runtime.getDeviceCount()``, ``cuda.Device().synchronize()``,
    ``lib.stride_tricks.as_strided`` and NumPy's array functions. None removes it."""
    global _cuda
    previous, _cuda = _cuda, module
    return previous


def cuda_module():
    """The array module of device "cuda" (CuPy, or what ``use_cuda_module`` set), or None."""
    return _cuda


def cupy_available() -> bool:
    """True when the CUDA array module is there and sees at least one CUDA device."""
    if _cuda is None:
        return False
    try:
        return _cuda.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device
        return False


def require_cupy():
    """Return the CUDA array module, or raise a RuntimeError that says how to get it."""
    if _cuda is None:
        why = f" (importing it failed: {_CUPY_IMPORT_ERROR})" if _CUPY_IMPORT_ERROR else ""
        raise RuntimeError(
            "device 'cuda' needs the package 'cupy', which is not installed" + why + ". "
            f"Install the CuPy build for your CUDA version with the CUDA toolkit's libraries "
            f"(`pip install '{CUPY_PACKAGE}[ctk]'` for CUDA 13, which `pip install lenet_np[cuda]` does; "
            "`pip install 'cupy-cuda12x[ctk]'` for CUDA 12), "
            "or use device 'cpu'."
        )
    if not cupy_available():
        raise RuntimeError(
            "device 'cuda' was asked for, CuPy is installed, but no CUDA device is visible; "
            "check `nvidia-smi` (and that the CuPy build matches the driver's CUDA version), "
            "or use device 'cpu'."
        )
    return _cuda


def is_cupy_array(x) -> bool:
    """True for an array of the CUDA array module."""
    return _cuda is not None and isinstance(x, _cuda.ndarray)


def get_array_module(*arrays):
    """The array module (numpy or cupy) that the given arrays belong to."""
    if any(is_cupy_array(a) for a in arrays):
        return _cuda
    return np


def on_gpu(xp) -> bool:
    """True for the CUDA array module. There, code that runs every step must not read values
    back to Python (each read waits for every queued kernel), and fewer, larger operations
    beat the CPU's cache-sized loops."""
    return xp is not np


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
        return _cuda.asnumpy(x)
    return np.asarray(x)


def to_device(x, device: str):
    """Move an array to "cpu" or "cuda"; returns x itself when it is already there."""
    device = parse_device(device)
    if device == "cuda":
        cp = require_cupy()
        return x if isinstance(x, cp.ndarray) else cp.asarray(x)
    return as_numpy(x)


def sliding_windows(x, shape, strides):
    """A strided view of x with the given shape and strides (in bytes), without copying.

    Used by im2col and pooling to see every kernel window. Read-only on the CPU; on CUDA
    the view is writable (CuPy's ``as_strided`` has no ``writeable=False``), and a write
    would land on every window that shares the element. Callers only ever read from it.
    """
    if is_cupy_array(x):
        return _cuda.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)
    return np.lib.stride_tricks.as_strided(x, shape=shape, strides=strides, writeable=False)


def synchronize(x=None) -> None:
    """Wait for queued GPU work (a no-op on the CPU); use before reading a clock."""
    if _cuda is not None and (x is None or is_cupy_array(x)):
        if cupy_available():
            _cuda.cuda.Device().synchronize()


_FUSED: dict = {}       # (build, options) -> the dispatching function


def fused(build, *options):
    """The elementwise function ``build(xp, *options)``, for the arrays it is called with
    (xp: the array module of its first argument, an array).

    ``build(xp, ...)`` returns a function of arrays and Python numbers made only of xp's
    ufuncs and arithmetic (``xp.exp``, ``+``, ``*=`` on an argument, ``xp.where``), with at
    most one ``xp.sum`` over an axis, and no keepdims; ``options`` are fixed Python values
    that pick its form (``decay=True``). Called with CUDA arrays, it runs as ONE kernel:
    ``cupy.fuse`` traces it once per set of argument dtypes and compiles one elementwise (or
    reduction) kernel; in-place operators on its arguments write them, Python numbers
    become kernel arguments (so a learning rate that changes every step compiles nothing
    new). Called with NumPy arrays, the function runs as written (cupy.fuse itself does the
    same: it calls the plain function when no argument is a CuPy array), so the in-place
    operators keep NumPy's speed there. Built once per module and options (cached).

    Between the first argument's module and the others there is no check: a NumPy array
    among CUDA ones raises TypeError in CuPy, as everywhere, and a CUDA array passed to the
    NumPy form raises it in the stand-in and in CuPy (implicit conversion)."""
    call = _FUSED.get((build, options))
    if call is None:
        call = _FUSED[build, options] = _Fused(build, options)
    return call


class _Fused:
    """``backend.fused``'s function: runs the form of its first argument's array module (built
    on first use). Kept lean: an optimizer calls it once per parameter and step."""

    def __init__(self, build, options):
        self.build, self.options = build, options
        self.numpy_form, self.device_forms = build(np, *options), {}

    def __call__(self, *args):
        if _cuda is None or not isinstance(args[0], _cuda.ndarray):
            return self.numpy_form(*args)
        f = self.device_forms.get(_cuda)
        if f is None:
            f = self.device_forms[_cuda] = _cuda.fuse(kernel_name=self.build.__name__.lstrip("_"))(
                self.build(_cuda, *self.options))
        return f(*args)
