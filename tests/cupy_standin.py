"""A NumPy-backed stand-in for CuPy, so that the CuPy code paths run on every machine.

``tests/conftest.py`` registers it as the array module of device "cuda" (with
``lenet_np.backend.use_cuda_module``) wherever no real GPU is present; where one is,
real CuPy runs instead. It behaves like CuPy wherever that matters to lenet_np:

* Its ``ndarray`` is not a NumPy array: ``np.asarray`` and ``np.array`` on it raise
  TypeError, as CuPy's "implicit conversion" does. NumPy functions and ufuncs called on
  it dispatch to this module (``__array_function__``, ``__array_ufunc__``), as they do
  to CuPy's, and fail for a name CuPy does not have. Mixing it with a NumPy array in
  one ufunc raises TypeError, as in CuPy.
* The module offers only names that real CuPy has, each with only the keyword arguments
  that CuPy's accepts (``NAMES``; ``tests/test_cupy_standin.py`` checks both against the
  real package wherever it is installed).
* Elementwise results are C-contiguous, as CuPy allocates them. ``as_strided`` views are
  writable. Out-of-range integer indices wrap around instead of raising. Reductions
  return 0-d arrays, never Python or NumPy scalars.
* Every read back to the host is counted in ``HOST_READS``: ``float``, ``int``,
  ``bool``, ``.item()``, ``.get()``, ``.tolist()``, ``asnumpy``, printing, and device
  synchronisation. ``count_host_reads()`` lets a test see how many a piece of code made.
"""

from __future__ import annotations

import collections
import contextlib
import types

import numpy as np

__version__ = "0.0-standin"

HOST_READS = collections.Counter()   # kind of read -> how many


def _host_read(kind: str) -> None:
    HOST_READS[kind] += 1


@contextlib.contextmanager
def count_host_reads():
    """``with count_host_reads() as reads: ...``; afterwards ``reads`` holds the reads made inside."""
    before = HOST_READS.copy()
    reads = collections.Counter()
    try:
        yield reads
    finally:
        reads.update(HOST_READS)
        reads.subtract(before)
        for kind in [k for k, v in reads.items() if v == 0]:
            del reads[kind]


# -- wrapping and unwrapping --------------------------------------------------------------------
def _wrap(value):
    """NumPy results -> stand-in arrays (scalars become 0-d arrays, as CuPy returns them)."""
    if isinstance(value, np.ndarray):
        return ndarray._of(value)
    if isinstance(value, np.generic):
        return ndarray._of(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _unwrap(value, host_ok: bool = True, what: str = ""):
    """Stand-in arrays -> their NumPy arrays, recursively in tuples, lists and dicts.

    With ``host_ok=False`` a NumPy array among the arguments raises TypeError, as CuPy
    does for a host array passed where it expects device arrays."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        if not host_ok:
            raise TypeError(f"Unsupported type {type(value)} in {what}: a NumPy (host) array where "
                            "CuPy expects device arrays; move it with cupy.asarray first")
        return value
    if isinstance(value, tuple):
        return tuple(_unwrap(v, host_ok, what) for v in value)
    if isinstance(value, list):
        return [_unwrap(v, host_ok, what) for v in value]
    if isinstance(value, dict):
        return {k: _unwrap(v, host_ok, what) for k, v in value.items()}
    return value


def _wrap_index(key, shape):
    """An index with every integer index array taken modulo its axis' length (CuPy wraps)."""
    key = key if isinstance(key, tuple) else (key,)
    key = tuple(_unwrap(k) for k in key)

    def consumed(k):
        if k is None or k is Ellipsis:
            return 0
        if isinstance(k, np.ndarray) and k.dtype == bool:
            return k.ndim
        return 1

    used = sum(consumed(k) for k in key)
    out, axis = [], 0
    for k in key:
        if k is Ellipsis:
            axis += len(shape) - used
        elif isinstance(k, np.ndarray) and k.dtype.kind in "iu" and k.ndim > 0 and axis < len(shape):
            k = np.mod(k, shape[axis]) if shape[axis] else k
        out.append(k)
        axis += consumed(k)
    return tuple(out)


def _count_mask_read(key):
    """A boolean mask index needs the number of True values on the host: a sync in CuPy."""
    if any(isinstance(k, np.ndarray) and k.dtype == bool for k in key):
        _host_read("boolean mask")


# -- the array type -----------------------------------------------------------------------------
_METHODS = frozenset((
    "all", "any", "argmax", "argmin", "astype", "clip", "copy", "cumsum", "dot", "fill", "flatten",
    "max", "mean", "min", "nonzero", "prod", "ravel", "repeat", "reshape", "round", "squeeze", "std",
    "sum", "swapaxes", "take", "transpose", "var", "view",
))


class ndarray(np.lib.mixins.NDArrayOperatorsMixin):
    """An array "on the device": a NumPy array that NumPy itself will not convert."""

    __slots__ = ("_a",)

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, a):
        obj = object.__new__(cls)
        obj._a = a
        return obj

    # -- what NumPy sees ----------------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        fn = getattr(_MODULE, ufunc.__name__, None)
        if isinstance(fn, _Ufunc):
            return getattr(fn, method)(*inputs, **kwargs)
        if isinstance(fn, _Function) and method == "__call__":      # matmul: a gufunc in CuPy
            return fn(*inputs, **kwargs)
        return NotImplemented

    def __array_function__(self, func, types_, args, kwargs):
        fn = _MODULE.__dict__.get(func.__name__)
        if fn is None or func.__name__ not in NAMES:
            return NotImplemented
        return fn(*args, **kwargs)

    # -- attributes -----------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    T = property(lambda self: ndarray._of(self._a.T))

    @property
    def flags(self):
        f = self._a.flags
        return types.SimpleNamespace(c_contiguous=f.c_contiguous, f_contiguous=f.f_contiguous,
                                     owndata=f.owndata)

    def __getattr__(self, name):
        if name not in _METHODS:
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        method = getattr(self._a, name)

        def call(*args, **kwargs):
            if name == "nonzero":                 # the output's size needs a read back
                _host_read("nonzero")
            return _wrap(method(*_unwrap(args, False, name), **_unwrap(kwargs, False, name)))
        return call

    # -- indexing: integer index arrays wrap around, as in CuPy ---------------------------------
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield _wrap(self._a[i])

    def __getitem__(self, key):
        key = _wrap_index(key, self._a.shape)
        _count_mask_read(key)
        return _wrap(self._a[key])

    def __setitem__(self, key, value):
        key = _wrap_index(key, self._a.shape)
        _count_mask_read(key)
        if isinstance(value, np.ndarray) and value.ndim > 0:     # CuPy: "cannot be used for fill"
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill; move it with cupy.asarray")
        self._a[key] = _unwrap(value)

    # -- reads back to the host: each one counted ----------------------------------------------
    def get(self, stream=None, order="C", out=None, blocking=True):
        _host_read("get")
        return np.array(self._a, order=order)

    def item(self):
        _host_read("item")
        return self._a.item()

    def tolist(self):
        _host_read("tolist")
        return self._a.tolist()

    def __float__(self):
        _host_read("float")
        return float(self._a)

    def __int__(self):
        _host_read("int")
        return int(self._a)

    def __complex__(self):
        _host_read("complex")
        return complex(self._a)

    def __bool__(self):
        _host_read("bool")
        return bool(self._a)

    def __format__(self, spec):
        _host_read("format")
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def __repr__(self):
        _host_read("repr")
        return repr(self._a).replace("array(", "array(", 1)

    __str__ = __repr__
    __hash__ = None


# -- module functions ---------------------------------------------------------------------------
class _Function:
    """A NumPy function behind CuPy's name and keyword arguments; device arrays only."""

    def __init__(self, name, impl, kwargs):
        self.__name__ = name
        self._impl, self._kwargs = impl, frozenset(kwargs)

    def __call__(self, *args, **kwargs):
        unknown = set(kwargs) - self._kwargs
        if unknown:
            raise TypeError(f"cupy.{self.__name__}() got unexpected keyword argument(s) {sorted(unknown)}")
        return _wrap(self._impl(*_unwrap(args, False, self.__name__), **_unwrap(kwargs, False, self.__name__)))


class _Ufunc:
    """A NumPy ufunc with CuPy's calling convention: out, dtype, casting; C-contiguous results."""

    KWARGS = frozenset(("out", "dtype", "casting"))

    def __init__(self, ufunc):
        self._u = ufunc
        self.__name__ = ufunc.__name__
        self.nin, self.nout = ufunc.nin, ufunc.nout

    def _args(self, inputs, kwargs):
        unknown = set(kwargs) - self.KWARGS
        if unknown:
            raise TypeError(f"Wrong arguments {sorted(unknown)} to cupy.{self.__name__}")
        if "out" in kwargs and isinstance(kwargs["out"], tuple):
            kwargs = dict(kwargs, out=kwargs["out"][0] if len(kwargs["out"]) == 1 else kwargs["out"])
        return _unwrap(inputs, False, self.__name__), _unwrap(kwargs, False, self.__name__)

    def __call__(self, *inputs, **kwargs):
        out = kwargs.get("out")
        out = out[0] if isinstance(out, tuple) and len(out) == 1 else out
        inputs, kwargs = self._args(inputs, kwargs)
        if out is None:
            kwargs.pop("out", None)
            kwargs["order"] = "C"                       # CuPy allocates C-contiguous outputs
        result = self._u(*inputs, **kwargs)
        return out if isinstance(out, ndarray) else _wrap(result)

    AT = frozenset(("add", "subtract", "maximum", "minimum", "bitwise_and", "bitwise_or"))
    REDUCE = frozenset(("add", "multiply"))

    def at(self, a, indices, b=None):
        if self.__name__ not in self.AT:
            raise NotImplementedError(f"cupy.{self.__name__}.at is not supported")
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.{self.__name__}.at: the target must be a cupy.ndarray")
        key = _wrap_index(indices, a.shape)
        if b is None:
            self._u.at(a._a, key)
        else:
            self._u.at(a._a, key, _unwrap(b, False, self.__name__))

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        if self.__name__ not in self.REDUCE:
            raise NotImplementedError(f"cupy.{self.__name__}.reduce is not supported")
        return _wrap(self._u.reduce(_unwrap(array, False), axis=axis, dtype=dtype,
                                    out=_unwrap(out), keepdims=keepdims))


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """A device array: ``a`` itself when it is one already (and dtype and order fit), else a copy."""
    if isinstance(a, ndarray):
        b = np.asarray(a._a, dtype=dtype, order=order)
        return a if b is a._a else ndarray._of(b)
    return ndarray._of(np.array(_unwrap(a), dtype=dtype, order=order or "K"))   # host -> device


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A device array, a copy unless ``copy=False`` allows otherwise."""
    if isinstance(obj, ndarray) and not copy:
        return asarray(obj, dtype=dtype, order=None if order == "K" else order)
    return ndarray._of(np.array(_unwrap(obj), dtype=dtype, order=order, ndmin=ndmin))


def _take_along_axis(a, indices, axis):
    return np.take_along_axis(a, np.mod(indices, a.shape[axis]), axis)


def _as_strided(x, shape=None, strides=None):
    # writable, unlike NumPy's writeable=False views: CuPy has no read-only arrays
    return ndarray._of(np.lib.stride_tricks.as_strided(_unwrap(x), shape=shape, strides=strides,
                                                       writeable=True))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """Device -> host: a NumPy array (a counted read)."""
    if isinstance(a, ndarray):
        _host_read("asnumpy")
        return np.array(a._a, order=order)
    return np.asarray(a, order=order)


def get_array_module(*args):
    return _MODULE if any(isinstance(a, ndarray) for a in args) else np


# Module functions: name -> the keyword arguments CuPy's version takes (a subset is enough).
NAMES = {
    "asarray": ("dtype", "order", "copy", "blocking"),
    "array": ("dtype", "copy", "order", "subok", "ndmin", "blocking"),
    "ascontiguousarray": ("dtype",),
    "zeros": ("dtype", "order"), "empty": ("dtype", "order"), "ones": ("dtype", "order"),
    "full": ("dtype", "order"),
    "zeros_like": ("dtype", "order", "subok", "shape"), "empty_like": ("dtype", "order", "subok", "shape"),
    "ones_like": ("dtype", "order", "subok", "shape"), "full_like": ("dtype", "order", "subok", "shape"),
    "arange": ("stop", "step", "dtype"),
    "indices": ("dtype",),
    "tensordot": ("axes",),
    "matmul": ("out", "dtype", "casting"),
    "dot": ("out",),
    "concatenate": ("axis", "out", "dtype", "casting"),
    "stack": ("axis", "out", "dtype", "casting"),
    "take_along_axis": ("axis",),
    "pad": ("mode", "constant_values"),
    "repeat": ("axis",),
    "broadcast_to": ("shape",),
    "argmax": ("axis", "dtype", "out", "keepdims"),
    "copyto": ("casting", "where"),
    "sum": ("axis", "dtype", "out", "keepdims"),
    "mean": ("axis", "dtype", "out", "keepdims"),
    "where": (),
    "clip": ("out",),
    "count_nonzero": ("axis",),
    "allclose": ("rtol", "atol", "equal_nan"),
    "array_equal": ("equal_nan",),
    "shares_memory": ("max_work",),
    "may_share_memory": ("max_work",),
    "asnumpy": ("stream", "order", "out", "blocking"),
    "get_array_module": (),
}
def _where(condition, x=None, y=None):
    if x is None and y is None:
        _host_read("where(condition)")
        return np.where(condition)
    return np.where(condition, x, y)


IMPLS = {"take_along_axis": _take_along_axis, "where": _where}
DIRECT = ("asarray", "array", "asnumpy", "get_array_module")   # defined above, called as they are
UFUNCS = ("add", "subtract", "multiply", "divide", "true_divide", "floor_divide", "negative", "power",
          "remainder", "mod", "absolute", "abs", "exp", "log", "sqrt", "reciprocal", "maximum", "minimum",
          "equal", "not_equal", "greater", "greater_equal", "less", "less_equal", "logical_and",
          "logical_or", "logical_not", "invert", "bitwise_and", "bitwise_or", "isnan", "isfinite", "isinf",
          "sign", "positive", "square", "tanh", "log1p", "expm1")
SCALARS = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16",
           "uint32", "uint64", "bool_", "dtype", "newaxis", "inf", "nan", "pi", "e")


class _Grid:
    """``ogrid[...]``: NumPy's open grid, as device arrays."""

    def __getitem__(self, key):
        return _wrap(np.ogrid[key])


class _Device:
    def __init__(self, device=None):
        self.id = 0

    def synchronize(self):
        _host_read("synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _build_module():
    mod = types.ModuleType("cupy", "A NumPy-backed stand-in for CuPy (tests only).")
    mod.__version__ = __version__
    mod.ndarray = ndarray
    for name, kwargs in NAMES.items():
        impl = IMPLS.get(name) or globals().get(name) or getattr(np, name)
        if name in DIRECT:
            setattr(mod, name, impl)
        else:
            setattr(mod, name, _Function(name, impl, kwargs))
    for name in UFUNCS:
        setattr(mod, name, _Ufunc(getattr(np, name)))
    for name in SCALARS:
        setattr(mod, name, getattr(np, name))
    mod.ogrid = _Grid()
    mod.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=_as_strided))
    mod.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {
            "name": b"cupy stand-in (NumPy)", "totalGlobalMem": 0, "major": 0, "minor": 0,
            "multiProcessorCount": 0}, runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0),
        Device=_Device)
    return mod


_MODULE = _build_module()
module = _MODULE          # what tests register: backend.use_cuda_module(cupy_standin.module)
