"""A NumPy-backed stand-in for CuPy, so that the CuPy code paths run on every machine.

``tests/conftest.py`` registers it as the array module of device "cuda" (with
``lenet_np.backend.use_cuda_module``) wherever no real GPU is present; where one is,
real CuPy runs instead. It behaves like CuPy (14.2) wherever that matters to lenet_np:

* Its ``ndarray`` is not a NumPy array: ``np.asarray`` and ``np.array`` on it raise
  TypeError, as CuPy's "implicit conversion" does. NumPy functions and ufuncs called on
  it dispatch to this module (``__array_function__``, ``__array_ufunc__``), as they do
  to CuPy's, and fail for a name CuPy does not have. Mixing it with a NumPy array in
  one ufunc raises TypeError, as in CuPy.
* The module offers only names that real CuPy has, each with only the keyword arguments
  that CuPy's accepts (``NAMES``; ``tests/test_cupy_standin.py`` checks both against the
  real package wherever it is installed).
* It refuses what CuPy refuses (each checked against CuPy 14.2.0's source, named where
  the refusal is made below): ``ufunc.at`` only for the ufuncs and dtypes CuPy's scatter
  kernels take, ``copy=False`` where CuPy cannot avoid a copy, ``astype(casting=...)``.
  Where CuPy silently computes something else than NumPy (``add.at`` without ``b``
  fills NaN), it refuses too.
* Elementwise results are C-contiguous, as CuPy allocates them. ``as_strided`` views are
  writable. Out-of-range integer indices wrap around instead of raising. Reductions
  return 0-d arrays, never Python or NumPy scalars.
* Every read back to the host is counted in ``HOST_READS``: ``float``, ``int``,
  ``bool``, ``.item()``, ``.get()``, ``.tolist()``, ``asnumpy``, printing, and device
  synchronisation. ``count_host_reads()`` lets a test see how many a piece of code made.
* Every kernel launch (and every copy CuPy queues on the stream) is counted in
  ``LAUNCHES``, by kind, weighted by the launches CuPy makes for the call (see "Kernel
  launches" below, each weight with the CuPy source it comes from). ``count_launches()``
  lets a test see them; a ``fuse``d call counts as one.
* ``cuda.Event``, ``cuda.Stream``, ``cuda.get_elapsed_time`` exist with CuPy's names and
  signatures, so timing code runs here (the times are host wall time). There is no
  ``cupyx.profiler.benchmark``: it lives in the separate ``cupyx`` package.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import itertools
import math
import time
import types

import numpy as np

__version__ = "0.0-standin"

HOST_READS = collections.Counter()   # kind of read -> how many
LAUNCHES = collections.Counter()     # kind of launch (the CuPy call) -> kernel launches


def _host_read(kind: str) -> None:
    HOST_READS[kind] += 1


def _counter_delta(counter, before, counted):
    counted.update(counter)
    counted.subtract(before)
    for kind in [k for k, v in counted.items() if v == 0]:
        del counted[kind]


@contextlib.contextmanager
def _counting(counter):
    """A Counter that, after the ``with`` block, holds what ``counter`` gained inside it."""
    before = counter.copy()
    delta = collections.Counter()
    try:
        yield delta
    finally:
        _counter_delta(counter, before, delta)


def count_host_reads():
    """``with count_host_reads() as reads: ...``; afterwards ``reads`` holds the reads made inside."""
    return _counting(HOST_READS)


# -- kernel launches --------------------------------------------------------------------------------
# Each call counts the launches CuPy 14.2 makes for it with its default CUPY_ACCELERATORS
# ("cub", cupy/_core/_accelerator.pyx), CUDA kernels and the copies it queues on the stream
# (cudaMemcpyAsync, cudaMemsetAsync) alike: each costs about one launch of host time.
# Sources are files of CuPy 14.2.0 (cupy/...). Where the count depends on a size CuPy does
# not expose (cuBLAS and CUB pick their kernels), the weight is an estimate and says so.
#
#   ufunc (add, exp, ... also a += b)  1; +1 per input overlapping a given ``out``
#                                      (_core/_kernel.pyx ufunc.__call__, _copy_in_args_if_needed);
#                                      0 for an empty result
#   fill, zeros, ones, full, *_like    1 (memset_async or the fill kernel; _creation/basic.py);
#   empty, empty_like                  0
#   arange                             1 (_creation/ranges.py: _arange_ufunc)
#   asarray/array of host data         1 (copy_from_host_async; a 0-d value: fill; _core/core.pyx
#                                      _array_default); of a device array: 0 or 1 (_astype)
#   copy, astype, ascontiguousarray,   1 when they copy, 0 when they return the array or a view
#   reshape, ravel, flatten            (core.pyx _astype, ascontiguousarray; _routines_manipulation
#                                      _reshape copies when no view is possible)
#   concatenate, stack                 one copy per array (<= 8 arrays); more than 8 small ones:
#                                      one kernel plus the H2D copies of its pointer tables
#                                      (_routines_manipulation.pyx _concatenate)
#   pad (constant)                     fill + copy for a zero value, else copy + one fill per
#                                      padded side (_padding/pad.py)
#   sum, prod, max, min, argmax,       CUB first (cuda/cub.pyx cub_reduction): a reduction over
#   argmin, mean                       all axes is DeviceReduce (ascontiguousarray, then one
#                                      single-tile kernel or, for more than one tile, two: an
#                                      estimate), argmax +1 (the key's astype), mean +1
#                                      (true_divide); contiguous trailing (C) / leading (F)
#                                      axes: one DeviceSegmentedReduce; else CuPy's reduction
#                                      kernel (_core/_reduction.pyx, _cub_reduction.pyx): 2
#                                      (two passes) over all axes of a contiguous array, else 1
#   var, std                           mean(keepdims) + 1 (+ astype, + sqrt for std)
#                                      (_routines_statistics.pyx _var, _std)
#   matmul, dot, tensordot, @          1 (cuBLAS gemm) + 1 per operand that tensordot_core must
#                                      copy first: another dtype, no reshape view, or a matrix
#                                      neither C- nor F-contiguous (_routines_linalg.pyx
#                                      tensordot_core, _mat_to_cublas_contiguous); batched: +1
#                                      per non-C-contiguous operand (+3 pointer kernels when
#                                      broadcasting)
#   a[int array], take                 1 (_routines_indexing.pyx _take)
#   a[i0, i1, ...] (k index arrays)    k + 2: fill + k index kernels + take
#                                      (_prepare_multiple_array_indexing, _getitem_multiple)
#   a[mask]                            scan(s) + 1 (_prepare_mask_indexing_single; scan:
#                                      _routines_math.pyx scan, 1 kernel per 512 items level)
#   a[...] = v                         scalar or basic: 1 (fill or copy, 0 for a self-assign);
#                                      index arrays: as getitem, the last kernel a scatter, +1 to
#                                      turn a non-device value into an array (_scatter_op)
#   add.at (and every ufunc.at)        as a[...] = v with index arrays: k + 2 for k >= 2 arrays,
#                                      1 for one, +1 for a scalar b (_scatter_op_single)
#   take_along_axis                    2 * ndim + 1 for ndim >= 2: ndim - 1 aranges, then an
#                                      ndim-array index (fill + ndim + take) (_indexing/indexing.py)
#   host index arrays, lists           +1 each (copied in: _prepare_slice_list)
#   where(c, x, y), clip, round        1;  where(c), nonzero: not_equal + scan + 1 (and a read)
#   allclose, array_equal              3: the elementwise test and .all() over all axes
#   fuse(f)(...)                       1, whatever f does inside (one fused kernel)
_FUSING = [0]          # > 0 while a fused function runs: its inner calls are one kernel


def _launch(kind: str, n: int = 1) -> None:
    if n and not _FUSING[0]:
        LAUNCHES[kind] += n


def count_launches():
    """``with count_launches() as launches: ...``; afterwards ``launches`` holds, by kind (the
    CuPy call: "add", "matmul", "add.at", "getitem[int]", ...), the kernel launches made inside."""
    return _counting(LAUNCHES)


def _nonempty(x) -> int:
    return 1 if np.size(x) else 0


def _view_as(x, shape):
    """x as ``shape`` without a copy, or None where a reshape must copy (the same rule as
    CuPy's _get_strides_for_nocopy_reshape)."""
    try:
        return np.reshape(x, shape, copy=False)
    except ValueError:
        return None
    except TypeError:                                    # NumPy < 2.1: no copy= in reshape
        v = x.view()
        try:
            v.shape = shape
        except (AttributeError, ValueError):
            return None
        return v


def _copied(result, source) -> int:
    """1 when ``result`` (of reshape, ravel, ...) is a copy of ``source``, 0 for a view."""
    return 0 if result.size == 0 or np.may_share_memory(result, source) else 1


def _scan_launches(n: int) -> int:
    """_routines_math.pyx scan (chunk 512): one kernel, or a block-sum kernel, the scan of
    the block sums and a scan kernel."""
    if n <= 512:
        return 1 if n else 0
    return 2 + _scan_launches(-(-n // 512))


def _argwhere_launches(a) -> int:
    """_routines_indexing.pyx _ndarray_argwhere: not_equal (non-bool), scan, nonzero kernel."""
    if a.size == 0:
        return 0
    return (a.dtype != bool) + _scan_launches(a.size) + (1 if np.count_nonzero(a) else 0)


# reductions ---------------------------------------------------------------------------------------
_CUB_DTYPES = tuple(np.dtype(t) for t in ("i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", "f2", "f4", "f8",
                                         "c8", "c16"))
_CUB_SUM_DTYPES = tuple(np.dtype(t) for t in ("i8", "u8", "f2", "f4", "f8", "c8", "c16"))


def _reduce_axes(a, axis):
    """(reduced axes, kept axes), sorted (_core/_reduction.pyx _get_axis)."""
    if axis is None:
        red = tuple(range(a.ndim))
    else:
        red = tuple(sorted(ax % a.ndim for ax in (axis if isinstance(axis, tuple) else (axis,))))
    return red, tuple(ax for ax in range(a.ndim) if ax not in red)


def _order(a):
    return "C" if a.flags.c_contiguous else "F" if a.flags.f_contiguous else None


def _trailing(red, ndim, order) -> bool:
    """cuda/cub.pyx _cub_device_segmented_reduce_axis_compatible: the reduced axes are
    consecutive and the last (C) or the first (F)."""
    if not red or list(red) != list(range(red[0], red[0] + len(red))):
        return False
    return red[-1] == ndim - 1 if order == "C" else red[0] == 0 if order == "F" else False


def _device_reduce_kernels(a) -> int:
    """CUB DeviceReduce: one single-tile kernel up to a tile (256 threads x 16 items of 4
    bytes: 16 KiB of input), else a reduce pass and a single-tile pass. An estimate."""
    return 1 if a.nbytes <= 16384 else 2


def _kernel_reduction(a, axis, out=None) -> int:
    """CuPy's own reduction kernel (_reduction.pyx), with its CUB block reduction
    (_cub_reduction.pyx): two passes over all axes of a C- or F-contiguous array, else one."""
    red, kept = _reduce_axes(a, axis)
    if a.size == 0:
        return 0 if (out is not None and out.size == 0) else 1
    return 2 if (_order(a) and not kept) else 1


def _routine_reduction(op, a, axis=None, dtype=None, out=None) -> int:
    """sum, prod, max, min, argmax, argmin: cub.cub_reduction first (cuda/cub.pyx), else
    CuPy's reduction kernel."""
    red, kept = _reduce_axes(a, axis)
    order = _order(a)
    arg = op in ("argmax", "argmin")
    if arg and dtype is not None:
        order = None                                     # CUB's argmax takes no dtype
    if dtype is None:
        supported = a.dtype in (_CUB_SUM_DTYPES if op in ("sum", "prod") else _CUB_DTYPES)
    else:
        supported = np.dtype(dtype) == a.dtype and a.dtype in _CUB_DTYPES
    if order and supported:
        if not kept:                                     # device_reduce
            n = (0 if a.flags.c_contiguous else 1) + _device_reduce_kernels(a)
            return n + arg + (out is not None)            # argmax: the key's astype; out: a copy
        if not arg and _trailing(red, a.ndim, order):     # device_segmented_reduce (a fill if empty)
            return 1 + (out is not None)
    return _kernel_reduction(a, axis, out)


def _mean_launches(a, axis=None, dtype=None, out=None) -> int:
    """_routines_statistics.pyx _ndarray_mean: CUB's sum and a true_divide, or the mean
    kernel; then an astype when the output dtype differs from the sum's (or is given)."""
    dtype_sum = dtype_out = dtype
    if dtype is None and a.dtype.char not in "dD":
        if a.dtype.kind in "iub":
            dtype_out = dtype_sum = np.float64
        elif a.dtype.char == "e":
            dtype_sum, dtype_out = np.float32, np.float16
    elif dtype is not None and np.dtype(dtype).kind in "iub":
        dtype_out, dtype_sum = dtype, np.float64
    n = None
    if a.size:
        red, kept = _reduce_axes(a, axis)
        order = _order(a)
        if dtype_sum is None:
            supported = a.dtype in _CUB_SUM_DTYPES
        else:
            supported = np.dtype(dtype_sum) == a.dtype and a.dtype in _CUB_DTYPES
        if order and supported and (not kept or _trailing(red, a.ndim, order)):
            n = _routine_reduction("sum", a, axis, dtype_sum, out) + 1
    if n is None:
        n = _kernel_reduction(a, axis, out)
    return n + (dtype_out is not None and out is None)


def _var_launches(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False, std=False) -> int:
    """_routines_statistics.pyx _var: the mean (keepdims, dtype given), the var kernel (two
    inputs: no CUB); _std adds a sqrt."""
    dtype_mean = np.float64 if (dtype is None and a.dtype.kind in "biu") else (dtype or a.dtype)
    return _mean_launches(a, axis, dtype_mean) + 1 + std


# matrix products ----------------------------------------------------------------------------------
def _gemm_operand(x, shape, dtype) -> int:
    """tensordot_core's copies of one operand before cuBLAS reads it: astype to the
    product's dtype, _reshape to 2-D (copies when no view is possible), then
    _mat_to_cublas_contiguous (copies a matrix neither C- nor F-contiguous)."""
    if x.dtype != dtype:
        return 1
    v = _view_as(x, shape)
    if v is None:
        return 1
    return 0 if (v.flags.c_contiguous or v.flags.f_contiguous) else 1


def _tensordot_core(a, b, n, m, k, dtype) -> int:
    if a.size == 0 or b.size == 0:
        return 1                                         # out.fill(0)
    if m == 1 and n == 1:                                # CUB: (a.ravel() * b.ravel()).sum(out=c)
        ravels = sum(0 if x.flags.c_contiguous else 1 for x in (a, b))
        return ravels + 1 + _device_reduce_kernels(np.empty(k, dtype)) + 1
    return _gemm_operand(a, (k, n), dtype) + _gemm_operand(b, (k, m), dtype) + 1


def _dot_launches(a, b, out=None) -> int:
    """_routines_linalg.pyx dot: a's last axis and b's second-to-last rolled to the front."""
    if a.ndim == 0 or b.ndim == 0:
        return 1                                         # a multiply
    a2 = a.reshape(1, a.size) if a.ndim == 1 else a
    b2 = b.reshape(b.size, 1) if b.ndim == 1 else b
    a_ = np.moveaxis(a2, -1, 0)
    b_ = np.moveaxis(b2, -2, 0)
    k = a_.shape[0]
    n, m = (a_.size // k, b_.size // k) if k else (0, 0)
    return _tensordot_core(a_, b_, n, m, k, np.promote_types(a.dtype, b.dtype))


def _matmul_launches(a, b, out=None) -> int:
    """_routines_linalg.pyx matmul: dot up to 2-D, else ascontiguousarray of each operand and
    one strided-batched gemm (three pointer-array kernels first when broadcasting)."""
    dtype = np.promote_types(a.dtype, b.dtype)
    if max(a.ndim, b.ndim) <= 2:
        n = _dot_launches(a, b)
        if out is not None and not (out.flags.c_contiguous and out.dtype == dtype):
            n += 1
        return n
    n = sum(0 if (x.flags.c_contiguous and x.dtype == dtype) else 1 for x in (a, b))
    a_batch = a.shape[:-2] if a.ndim > 1 else ()
    b_batch = b.shape[:-2] if b.ndim > 1 else ()
    nd = max(len(a_batch), len(b_batch))
    a_batch, b_batch = (1,) * (nd - len(a_batch)) + a_batch, (1,) * (nd - len(b_batch)) + b_batch
    broadcast = any(x != y for x, y in zip(a_batch, b_batch))
    if 0 in a.shape or 0 in b.shape:
        return 1                                         # cupy.zeros
    return n + 1 + (3 * (nd) if broadcast else 0) + (out is not None and not out.flags.c_contiguous)


def _tensordot_launches(a, b, axes=2) -> int:
    """linalg/_product.py tensordot: the summed axes moved to the front, then tensordot_core."""
    if a.ndim == 0 or b.ndim == 0:
        return 1
    if isinstance(axes, int):
        a_axes, b_axes = tuple(range(a.ndim - axes, a.ndim)), tuple(range(axes))
    else:
        a_axes, b_axes = axes
        a_axes = tuple(a_axes) if isinstance(a_axes, (list, tuple)) else (a_axes,)
        b_axes = tuple(b_axes) if isinstance(b_axes, (list, tuple)) else (b_axes,)

    def to_head(x, ax):
        ax = [i % x.ndim for i in ax]
        if ax == list(range(len(ax))):
            return x
        return x.transpose(ax + [i for i in range(x.ndim) if i not in ax])
    a_, b_ = to_head(a, a_axes), to_head(b, b_axes)
    k = math.prod(a_.shape[:len(a_axes)])
    n, m = (a.size // k, b.size // k) if k else (0, 0)
    return _tensordot_core(a_, b_, n, m, k, np.promote_types(a.dtype, b.dtype))


# indexing -----------------------------------------------------------------------------------------
def _mask_launches(a, mask, value_launches=0, result_size=1) -> int:
    """_prepare_mask_indexing_single: a scan of the mask, a second one of the mask broadcast
    to the array unless it covers the array, then one gather/scatter kernel."""
    if mask.size == 0:
        return 0
    n = _scan_launches(mask.size)
    if mask.shape != a.shape:
        n += _scan_launches(a.size)
    return n + ((value_launches + 1) if result_size else 0)


def _array_index_launches(arrays, result_size, value_launches=0) -> int:
    """Index arrays (no mask alone): one take/scatter kernel for one array; fill + one
    kernel per array + take/scatter for several (_prepare_multiple_array_indexing)."""
    if len(arrays) == 1:
        return (value_launches + 1) if result_size else 0
    n, k = 0, 0
    for s in arrays:
        if s.dtype == bool:
            n += _argwhere_launches(s)
            k += s.ndim
        else:
            k += 1
    return n + 1 + k + ((value_launches + 1) if result_size else 0)


def _value_launches(value, dtype) -> int:
    """What _scatter_op_single spends turning the value into an array of a's dtype: a
    non-device value is copied in (a 0-d one filled), a device one cast if it differs."""
    if isinstance(value, ndarray):
        return 1 if value.dtype != dtype else 0
    return 1


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


class _Index(types.SimpleNamespace):
    """An index as CuPy sees it: ``key`` for NumPy (integer arrays wrapped), ``arrays`` the
    advanced index arrays in order, ``host`` how many CuPy copies in from the host."""


def _parse_index(key, shape) -> _Index:
    """Integer index arrays taken modulo their axis' length (CuPy wraps); host arrays, lists
    and booleans become arrays, as CuPy's _prepare_slice_list copies them in."""
    key = key if isinstance(key, tuple) else (key,)
    parts, host = [], 0
    for k in key:
        if isinstance(k, ndarray):
            k = k._a
        elif isinstance(k, (np.ndarray, list, bool, np.bool_)):
            k = np.asarray(k)
            if k.size == 0 and k.dtype.kind not in "iub":
                k = k.astype(np.int32)                   # an empty list is an empty index, not a mask
            host += 1
        parts.append(k)

    def consumed(k):
        if k is None or k is Ellipsis:
            return 0
        if isinstance(k, np.ndarray) and k.dtype == bool:
            return k.ndim
        return 1

    used = sum(consumed(k) for k in parts)
    out, axis = [], 0
    for k in parts:
        if k is Ellipsis:
            axis += len(shape) - used
        elif isinstance(k, np.ndarray) and k.dtype.kind in "iu" and k.ndim > 0 and axis < len(shape):
            k = np.mod(k, shape[axis]) if shape[axis] else k
        out.append(k)
        axis += consumed(k)
    arrays = [k for k in out if isinstance(k, np.ndarray)]
    return _Index(key=tuple(out), arrays=arrays, host=host)


def _wrap_index(key, shape):
    """An index with every integer index array taken modulo its axis' length (CuPy wraps)."""
    return _parse_index(key, shape).key


def _count_mask_read(key):
    """A boolean mask index needs the number of True values on the host: a sync in CuPy."""
    if any(isinstance(k, np.ndarray) and k.dtype == bool for k in key):
        _host_read("boolean mask")


def _index_kind(index) -> str:
    if not index.arrays:
        return "basic"
    if len(index.arrays) == 1 and index.arrays[0].dtype == bool:
        return "mask"
    return "int"


# -- the array type -----------------------------------------------------------------------------
_METHODS = frozenset((
    "all", "any", "argmax", "argmin", "astype", "clip", "copy", "cumsum", "dot", "fill", "flatten",
    "max", "mean", "min", "nonzero", "prod", "ravel", "repeat", "reshape", "round", "squeeze", "std",
    "sum", "swapaxes", "take", "transpose", "var", "view",
))


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _astype_launches(a, args, kwargs, r):
    dtype = np.dtype(_arg(args, kwargs, 0, "dtype"))
    order = _arg(args, kwargs, 1, "order", "K") or "K"
    copy = _arg(args, kwargs, 4, "copy", True)
    if dtype == a.dtype and not copy and (
            order in "Kk" or order in "Aa" and (a.flags.c_contiguous or a.flags.f_contiguous)
            or order in "Cc" and a.flags.c_contiguous or order in "Ff" and a.flags.f_contiguous):
        return 0
    return _nonempty(a)


# launches of each method: (the array, args, kwargs, the NumPy result) -> launches
_METHOD_LAUNCHES = {
    "all": lambda a, args, kw, r: _kernel_reduction(a, _arg(args, kw, 0, "axis"), _arg(args, kw, 1, "out")),
    "any": lambda a, args, kw, r: _kernel_reduction(a, _arg(args, kw, 0, "axis"), _arg(args, kw, 1, "out")),
    "argmax": lambda a, args, kw, r: _routine_reduction("argmax", a, _arg(args, kw, 0, "axis"),
                                                        kw.get("dtype"), _arg(args, kw, 1, "out")),
    "argmin": lambda a, args, kw, r: _routine_reduction("argmin", a, _arg(args, kw, 0, "axis"),
                                                        kw.get("dtype"), _arg(args, kw, 1, "out")),
    "astype": _astype_launches,
    "clip": lambda a, args, kw, r: _nonempty(r),
    "copy": lambda a, args, kw, r: _nonempty(r),
    "cumsum": lambda a, args, kw, r: 2 if r.size else 0,           # CUB DeviceScan (an estimate)
    "dot": lambda a, args, kw, r: _dot_launches(a, args[0] if args else kw["b"]),
    "fill": lambda a, args, kw, r: _nonempty(a),
    "flatten": lambda a, args, kw, r: _nonempty(r),
    "max": lambda a, args, kw, r: _routine_reduction("max", a, _arg(args, kw, 0, "axis"), None,
                                                     _arg(args, kw, 1, "out")),
    "min": lambda a, args, kw, r: _routine_reduction("min", a, _arg(args, kw, 0, "axis"), None,
                                                     _arg(args, kw, 1, "out")),
    "mean": lambda a, args, kw, r: _mean_launches(a, _arg(args, kw, 0, "axis"), _arg(args, kw, 1, "dtype"),
                                                  _arg(args, kw, 2, "out")),
    "nonzero": lambda a, args, kw, r: _argwhere_launches(a),
    "prod": lambda a, args, kw, r: _routine_reduction("prod", a, _arg(args, kw, 0, "axis"),
                                                      _arg(args, kw, 1, "dtype"), _arg(args, kw, 2, "out")),
    "ravel": lambda a, args, kw, r: _copied(r, a),
    "repeat": lambda a, args, kw, r: _nonempty(r) + (0 if np.ndim(_arg(args, kw, 0, "repeats")) == 0 else 3),
    "reshape": lambda a, args, kw, r: _copied(r, a),
    "round": lambda a, args, kw, r: _nonempty(r),
    "std": lambda a, args, kw, r: _var_launches(a, _arg(args, kw, 0, "axis"), _arg(args, kw, 1, "dtype"),
                                                _arg(args, kw, 2, "out"), std=True),
    "sum": lambda a, args, kw, r: _routine_reduction("sum", a, _arg(args, kw, 0, "axis"),
                                                     _arg(args, kw, 1, "dtype"), _arg(args, kw, 2, "out")),
    "take": lambda a, args, kw, r: _nonempty(r),
    "var": lambda a, args, kw, r: _var_launches(a, _arg(args, kw, 0, "axis"), _arg(args, kw, 1, "dtype"),
                                                _arg(args, kw, 2, "out")),
}


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
            if name == "astype":                  # core.pyx _astype
                for kw in ("casting", "subok"):
                    if _arg(args, kwargs, 2 if kw == "casting" else 3, kw) is not None:
                        raise TypeError(f"{kw} is not supported yet")
            if name == "repeat" and np.ndim(_unwrap(_arg(args, kwargs, 0, "repeats"))) > 0:
                _host_read("repeat")              # _repeat_perelement: the total size is read back
            np_args, np_kwargs = _unwrap(args, False, name), _unwrap(kwargs, False, name)
            result = method(*np_args, **np_kwargs)
            _launch(name, _METHOD_LAUNCHES[name](self._a, np_args, np_kwargs, result)
                    if name in _METHOD_LAUNCHES else 0)
            return _wrap(result)
        return call

    # -- indexing: integer index arrays wrap around, as in CuPy ---------------------------------
    def __len__(self):
        return len(self._a)

    def __iter__(self):
        for i in range(len(self._a)):
            yield _wrap(self._a[i])

    def __getitem__(self, key):
        index = _parse_index(key, self._a.shape)
        _count_mask_read(index.key)
        result = self._a[index.key]
        kind = _index_kind(index)
        _launch("index(host)", index.host)
        if kind == "mask":
            _launch("getitem[mask]", _mask_launches(self._a, index.arrays[0], 0, result.size))
        elif kind == "int":
            _launch("getitem[int]", _array_index_launches(index.arrays, result.size))
        return _wrap(result)

    def __setitem__(self, key, value):
        index = _parse_index(key, self._a.shape)
        _count_mask_read(index.key)
        kind = _index_kind(index)
        if kind == "basic" and isinstance(value, np.ndarray) and value.ndim > 0:
            # CuPy (_scatter_op, "update"): a host array is no fill value (gh-2079)
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill; move it with cupy.asarray")
        target = self._a[index.key]                     # the elements written (a view or a copy)
        self._a[index.key] = _unwrap(value)
        _launch("index(host)", index.host)
        if kind == "basic":
            if target.size == 0:
                return
            if isinstance(value, ndarray):
                same = (value.shape == target.shape and value.strides == target.strides
                        and value._a.__array_interface__["data"][0] == target.__array_interface__["data"][0])
                _launch("setitem[copy]", 0 if same else 1)
            else:
                _launch("setitem[fill]", 1)
        elif kind == "mask":
            _launch("setitem[mask]", _mask_launches(self._a, index.arrays[0], _value_launches(value, self.dtype),
                                                    target.size))
        else:
            _launch("setitem[int]", _array_index_launches(index.arrays, target.size,
                                                          _value_launches(value, self.dtype)))

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
    """A NumPy function behind CuPy's name and keyword arguments; device arrays only.
    ``launches(args, kwargs, result)`` (on the NumPy arrays) says how many kernels CuPy launches."""

    def __init__(self, name, impl, kwargs, launches=None):
        self.__name__ = name
        self._impl, self._kwargs = impl, frozenset(kwargs)
        self._launches = launches

    def __call__(self, *args, **kwargs):
        unknown = set(kwargs) - self._kwargs
        if unknown:
            raise TypeError(f"cupy.{self.__name__}() got unexpected keyword argument(s) {sorted(unknown)}")
        np_args, np_kwargs = _unwrap(args, False, self.__name__), _unwrap(kwargs, False, self.__name__)
        result = self._impl(*np_args, **np_kwargs)
        if self._launches is not None:
            _launch(self.__name__, self._launches(np_args, np_kwargs, result))
        return _wrap(result)


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
        np_inputs, np_kwargs = self._args(inputs, kwargs)
        if out is None:
            np_kwargs.pop("out", None)
            np_kwargs["order"] = "C"                    # CuPy allocates C-contiguous outputs
        result = self._u(*np_inputs, **np_kwargs)
        # one elementwise kernel; an input that overlaps the given output is copied first
        # (_kernel.pyx _copy_in_args_if_needed); none for an empty result
        copies = sum(1 for x in inputs if isinstance(out, ndarray) and isinstance(x, ndarray)
                     and x is not out and np.may_share_memory(x._a, out._a))
        first = result[0] if isinstance(result, tuple) else result
        _launch(self.__name__, (1 + copies) if np.size(first) else 0)
        return out if isinstance(out, ndarray) else _wrap(result)

    # ufunc.at: CuPy's scatter ops (cupy/_core/_kernel.pyx ufunc.at -> _scatter_op; the
    # ufuncs created with scatter_op= in _routines_math.pyx and _routines_binary.pyx) and
    # the dtypes their atomics take (_routines_indexing.pyx _scatter_op_single, CuPy 14.2).
    AT_DTYPES = {
        "add": ("int32", "int64", "float16", "float32", "float64", "uint32", "uint64"),
        "subtract": ("int32", "uint32"),
        "maximum": ("int32", "int64", "float32", "float64", "uint32", "uint64"),
        "minimum": ("int32", "int64", "float32", "float64", "uint32", "uint64"),
        "bitwise_and": ("int32", "int64", "uint32", "uint64"),
        "bitwise_or": ("int32", "int64", "uint32", "uint64"),
    }
    AT = frozenset(AT_DTYPES)
    REDUCE = frozenset(("add", "multiply"))

    def at(self, a, indices, b=None):
        if self.__name__ not in self.AT:
            raise NotImplementedError(f"`cupy_{self.__name__}.at` is not supported yet")
        if not isinstance(a, ndarray):
            raise TypeError(f"cupy.{self.__name__}.at: the target must be a cupy.ndarray")
        if b is None:
            # CuPy turns b=None into cupy.array(None, dtype=a.dtype): NaN for a float a (the
            # scatter then writes NaN), TypeError for an integer one; NumPy raises ValueError
            raise TypeError(f"cupy.{self.__name__}.at(a, indices) without b: CuPy would scatter NaN "
                            "(cupy.array(None) of a float dtype) where NumPy raises; pass b")
        index = _parse_index(indices, a.shape)
        kind = _index_kind(index)
        if kind == "int" and a.dtype.name not in self.AT_DTYPES[self.__name__]:
            # _scatter_op_single checks v.dtype after v = value.astype(a.dtype): a's dtype
            raise TypeError(f"cupy.{self.__name__}.at only supports "
                            f"{', '.join(self.AT_DTYPES[self.__name__])} as data type")
        if kind == "basic" and isinstance(b, np.ndarray) and b.ndim > 0:
            raise TypeError(f"Unsupported type {type(b)}: cupy.{self.__name__}.at on a view takes a device "
                            "array or a scalar")
        _count_mask_read(index.key)
        size = a._a[index.key].size                     # the elements the scatter writes
        self._u.at(a._a, index.key, _unwrap(b))
        _launch("index(host)", index.host)
        name = f"{self.__name__}.at"
        if kind == "basic":
            _launch(name, 1 if size else 0)              # the plain ufunc on the view
        elif kind == "mask":
            _launch(name, _mask_launches(a._a, index.arrays[0], _value_launches(b, a.dtype), size))
        else:
            _launch(name, _array_index_launches(index.arrays, size, _value_launches(b, a.dtype)))

    def reduce(self, array, axis=0, dtype=None, out=None, keepdims=False):
        if self.__name__ not in self.REDUCE:
            raise NotImplementedError(f"cupy.{self.__name__}.reduce is not supported")
        a = _unwrap(array, False)
        result = self._u.reduce(a, axis=axis, dtype=dtype, out=_unwrap(out), keepdims=keepdims)
        op = "sum" if self.__name__ == "add" else "prod"    # _kernel.pyx ufunc.reduce: array.sum / prod
        _launch(op, _routine_reduction(op, a, axis, dtype, _unwrap(out)))
        return _wrap(result)


# -- array creation: copy= as CuPy 14.2 honours it -------------------------------------------------
def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A device array (cupy/_core/core.pyx ``array``). From a device array: ``obj`` itself
    when ``copy`` is not True and no cast or reordering is needed; a copy otherwise, and
    ValueError for ``copy=False`` then (``_astype``). From host data: always a copy (CuPy
    14.2's ``_array_default`` takes ``copy=False`` without complaint)."""
    if subok:
        raise NotImplementedError
    order = order or "K"
    if isinstance(obj, ndarray):
        a = obj._a
        dt = a.dtype if dtype is None else np.dtype(dtype)
        layout_ok = (order in "Kk" or order in "Aa" and (a.flags.c_contiguous or a.flags.f_contiguous)
                     or order in "Cc" and a.flags.c_contiguous or order in "Ff" and a.flags.f_contiguous)
        if dt == a.dtype and not copy and layout_ok:
            result = obj
        elif copy is False:
            raise ValueError("Unable to avoid copy while creating an array as requested.")
        else:
            result = ndarray._of(np.array(a, dtype=dt, order=order))
            _launch("array", _nonempty(a))
        if ndmin > result.ndim:
            result = ndarray._of(result._a.reshape((1,) * (ndmin - result.ndim) + result.shape))
        return result
    items = _flatten(obj) if isinstance(obj, (list, tuple)) else []
    if items and any(isinstance(x, ndarray) for x in items):
        if not all(isinstance(x, ndarray) and x.shape == items[0].shape for x in items):
            raise TypeError("Implicit conversion to a NumPy array is not allowed: a sequence mixing device "
                            "arrays with other values (or of unequal shapes)")
        # _array_from_nested_cupy_sequence: concatenated on the device, then astype
        result = np.array(_unwrap(obj), dtype=dtype, ndmin=ndmin)
        _launch("array", _concatenate_launches([np.expand_dims(x._a, 0) for x in items])
                + (dtype is not None and np.dtype(dtype) != items[0].dtype))
        return ndarray._of(result)
    host = np.array(_unwrap(obj), dtype=dtype, order="C" if order in "KkAa" else order, ndmin=ndmin)
    if host.dtype.char not in "?bhilqBHILQefdFD":
        raise ValueError(f"Unsupported dtype {host.dtype}")
    if isinstance(obj, np.ndarray) and order in "KkAa" and obj.flags.f_contiguous and not obj.flags.c_contiguous:
        host = np.asfortranarray(host)
    _launch("asarray(host)", 1)                       # copy_from_host_async; a 0-d value: fill
    if blocking:
        _host_read("asarray(blocking)")
    return ndarray._of(host)


def _flatten(obj):
    if isinstance(obj, (list, tuple)):
        return [x for item in obj for x in _flatten(item)]
    return [obj]


def asarray(a, dtype=None, order=None, *, copy=None, blocking=False):
    """A device array: ``a`` itself when it is one already (and dtype and order fit), else a
    copy (cupy/_creation/from_data.py: ``_core.array(a, dtype, copy, order)``)."""
    return array(a, dtype=dtype, copy=copy, order=order, blocking=blocking)


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


# -- fuse: one kernel for a function of elementwise operations and reductions --------------------
_FUSE_ARG_TYPES = (ndarray, np.ndarray, np.generic, int, float, complex, bool, type(None))


class _Fusion:
    """cupy/_core/fusion.pyx Fusion: called with device arrays, the function runs as one
    kernel; with none (NumPy arrays, scalars), it runs as plain Python."""

    def __init__(self, func, kernel_name=None):
        self.func = func
        self.name = kernel_name or func.__name__

    def __call__(self, *args):
        if _FUSING[0] or not any(isinstance(a, ndarray) for a in args):
            return self.func(*args)
        if not all(isinstance(a, _FUSE_ARG_TYPES) for a in args):
            raise TypeError(f"Invalid argument type for '{self.name}': ({', '.join(repr(type(a)) for a in args)})")
        _FUSING[0] += 1
        try:
            result = self.func(*args)
        finally:
            _FUSING[0] -= 1
        _launch(f"fuse:{self.name}", 1)
        return result


def fuse(*args, **kwargs):
    """``@cupy.fuse`` or ``@cupy.fuse(kernel_name=...)``: a fused call counts as one launch."""
    def wrapper(f, kernel_name=None):
        return _Fusion(f, kernel_name)
    if len(args) == 1 and not kwargs and callable(args[0]):
        return functools.update_wrapper(wrapper(args[0]), args[0])
    return lambda f: functools.update_wrapper(wrapper(f, *args, **kwargs), f)


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
    "fuse": ("kernel_name",),
}


def _where(condition, x=None, y=None):
    if x is None and y is None:
        _host_read("where(condition)")
        return np.where(condition)
    return np.where(condition, x, y)


def _allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    return np.asarray(np.allclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))   # a 0-d device array


def _array_equal(a1, a2, equal_nan=False):
    return np.asarray(np.array_equal(a1, a2, equal_nan=equal_nan))


def _concatenate_launches(arrays, axis=0):
    """_routines_manipulation.pyx _concatenate: a copy per array; more than 8 arrays of one
    dtype and under 2 MiB each on average: one kernel after copying in its pointer table
    (and the size and stride tables unless all are contiguous and equally long)."""
    arrays = [np.asarray(x) for x in arrays]
    if len(arrays) > 8 and len({x.dtype for x in arrays}) == 1 \
            and sum(x.nbytes for x in arrays) < 2 * 1024 * 1024 * len(arrays):
        axis = axis % arrays[0].ndim
        size = arrays[0].shape[axis]
        same = all(x.flags.c_contiguous and x.shape[axis] == size for x in arrays)
        return 2 if same else 4
    return sum(_nonempty(x) for x in arrays)


def _pad_launches(args, kw, r):
    """_padding/pad.py, mode "constant": a zero value (small arrays): fill + copy; else the
    copy and a fill of each padded side."""
    a, widths = args[0], args[1] if len(args) > 1 else kw["pad_width"]
    mode = args[2] if len(args) > 2 else kw.get("mode", "constant")
    value = kw.get("constant_values", 0)
    pairs = np.broadcast_to(np.asarray(widths), (a.ndim, 2))
    if mode == "constant" and np.ndim(value) == 0 and value == 0 and (a.ndim == 1 or a.size < 4e6):
        return _nonempty(r) + _nonempty(a)
    sides = int(np.count_nonzero(pairs)) if mode == "constant" else 2 * a.ndim
    return _nonempty(a) + sides


def _reduction_fn(op):
    def launches(args, kw, r):
        a = args[0]
        axis, dtype, out = _arg(args, kw, 1, "axis"), _arg(args, kw, 2, "dtype"), _arg(args, kw, 3, "out")
        if op == "mean":
            return _mean_launches(a, axis, dtype, out)
        return _routine_reduction(op, a, axis, dtype, out)
    return launches


def _ogrid_launches(key):
    """_creation/ranges.py nd_grid (sparse): an arange per axis, then * step and + start."""
    key = key if isinstance(key, tuple) else (key,)
    return 1 if len(key) == 1 else 3 * len(key)


# launches of each module function: (args, kwargs, the NumPy result) -> launches (on NumPy arrays)
LAUNCH_RULES = {
    "ascontiguousarray": lambda args, kw, r: 0 if r is args[0] or np.may_share_memory(r, args[0]) else 1,
    "zeros": lambda args, kw, r: _nonempty(r), "ones": lambda args, kw, r: _nonempty(r),
    "full": lambda args, kw, r: _nonempty(r), "empty": lambda args, kw, r: 0,
    "zeros_like": lambda args, kw, r: _nonempty(r), "ones_like": lambda args, kw, r: _nonempty(r),
    "full_like": lambda args, kw, r: _nonempty(r), "empty_like": lambda args, kw, r: 0,
    "arange": lambda args, kw, r: _nonempty(r),
    "indices": lambda args, kw, r: 2 * len(args[0]),          # an arange and a copy per axis
    "tensordot": lambda args, kw, r: _tensordot_launches(args[0], args[1], _arg(args, kw, 2, "axes", 2)),
    "matmul": lambda args, kw, r: _matmul_launches(args[0], args[1], kw.get("out")),
    "dot": lambda args, kw, r: _dot_launches(args[0], args[1], _arg(args, kw, 2, "out")),
    "concatenate": lambda args, kw, r: _concatenate_launches(args[0], _arg(args, kw, 1, "axis", 0)),
    "stack": lambda args, kw, r: _concatenate_launches([np.expand_dims(x, 0) for x in args[0]], 0),
    "take_along_axis": lambda args, kw, r: (1 if args[0].ndim == 1 else 2 * args[0].ndim + 1) if r.size else 0,
    "pad": _pad_launches,
    "repeat": lambda args, kw, r: _nonempty(r) + (0 if np.ndim(args[1]) == 0 else 3),
    "broadcast_to": lambda args, kw, r: 0,
    "argmax": _reduction_fn("argmax"),
    "copyto": lambda args, kw, r: _nonempty(args[0]),
    "sum": _reduction_fn("sum"),
    "mean": _reduction_fn("mean"),
    "where": lambda args, kw, r: (_nonempty(r) if len(args) == 3 else _argwhere_launches(np.asarray(args[0]))),
    "clip": lambda args, kw, r: _nonempty(r),
    "count_nonzero": lambda args, kw, r: _kernel_reduction(args[0], _arg(args, kw, 1, "axis")),
    "allclose": lambda args, kw, r: 3,
    "array_equal": lambda args, kw, r: 3 if np.shape(args[0]) == np.shape(args[1]) else 1,
    "shares_memory": lambda args, kw, r: 0,
    "may_share_memory": lambda args, kw, r: 0,
}

def _repeat(a, repeats, axis=None):
    if np.ndim(repeats) > 0:
        _host_read("repeat")                  # _repeat_perelement reads the total size back
    return np.repeat(a, repeats, axis)


IMPLS = {"take_along_axis": _take_along_axis, "where": _where, "allclose": _allclose,
         "array_equal": _array_equal, "repeat": _repeat}
DIRECT = ("asarray", "array", "asnumpy", "get_array_module", "fuse")   # defined above, called as they are
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
        result = np.ogrid[key]
        _launch("ogrid", _ogrid_launches(key))
        return _wrap(result)


# -- cuda: devices, streams, events -----------------------------------------------------------------
class CUDARuntimeError(RuntimeError):
    """cupy.cuda.runtime.CUDARuntimeError (a RuntimeError, as cupy_backends' is)."""


class _Device:
    def __init__(self, device=None):
        self.id = 0

    def synchronize(self):
        _host_read("synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


_STREAMS = []                       # the streams entered with ``with``, innermost last
_CURRENT = [None]                   # the stream made current with .use() (None: the null stream)


class Event:
    """cupy.cuda.Event (cupy/cuda/stream.pyx): ``record`` notes the host clock, since the
    stand-in's work is done as soon as it is queued."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        if interprocess and not disable_timing:
            raise ValueError("Timing must be disabled for interprocess events")
        self.block, self.disable_timing, self.interprocess = block, disable_timing, interprocess
        self.ptr = next(_HANDLES)
        self._time = None

    @property
    def done(self):
        return True

    def record(self, stream=None):
        self._time = time.perf_counter()

    def synchronize(self):
        _host_read("Event.synchronize")


def get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events (cudaEventElapsedTime: an error for an
    event never recorded or made with disable_timing)."""
    for e in (start_event, end_event):
        if e._time is None or e.disable_timing:
            raise CUDARuntimeError("cudaErrorInvalidResourceHandle: invalid resource handle")
    return (end_event._time - start_event._time) * 1000.0


class Stream:
    """cupy.cuda.Stream: ``Stream.null`` is the default stream; ``with stream:`` makes it
    current; everything queued on it is done at once on the stand-in."""

    null = None

    def __init__(self, null=False, non_blocking=False, ptds=False, priority=None):
        self.ptr = 0 if null else next(_HANDLES)
        self.device_id = -1 if null or ptds else 0
        self.non_blocking, self.ptds = non_blocking, ptds
        self.priority = 0 if priority is None else priority

    def __eq__(self, other):
        return isinstance(other, Stream) and self.ptr == other.ptr

    def __hash__(self):
        return self.ptr

    def __enter__(self):
        _STREAMS.append(self)
        return self

    def __exit__(self, *args):
        _STREAMS.pop()

    def __repr__(self):
        return f"<Stream {self.ptr} (device {self.device_id})>"

    @property
    def done(self):
        return True

    def synchronize(self):
        _host_read("Stream.synchronize")

    def record(self, event=None):
        event = Event() if event is None else event
        event.record(self)
        return event

    def wait_event(self, event):
        pass

    def use(self):
        _CURRENT[0] = self
        return self


_HANDLES = itertools.count(1)
Stream.null = Stream(null=True)


def get_current_stream(device_id=-1):
    if _STREAMS:
        return _STREAMS[-1]
    return _CURRENT[0] or Stream.null


def _build_module():
    mod = types.ModuleType("cupy", "A NumPy-backed stand-in for CuPy (tests only).")
    mod.__version__ = __version__
    mod.ndarray = ndarray
    for name, kwargs in NAMES.items():
        impl = IMPLS.get(name) or globals().get(name) or getattr(np, name)
        if name in DIRECT:
            setattr(mod, name, impl)
        else:
            setattr(mod, name, _Function(name, impl, kwargs, LAUNCH_RULES[name]))
    for name in UFUNCS:
        setattr(mod, name, _Ufunc(getattr(np, name)))
    for name in SCALARS:
        setattr(mod, name, getattr(np, name))
    mod.ogrid = _Grid()
    mod.lib = types.SimpleNamespace(stride_tricks=types.SimpleNamespace(as_strided=_as_strided))
    mod.cuda = types.SimpleNamespace(
        runtime=types.SimpleNamespace(getDeviceCount=lambda: 1, getDeviceProperties=lambda i: {
            "name": b"cupy stand-in (NumPy)", "totalGlobalMem": 0, "major": 0, "minor": 0,
            "multiProcessorCount": 0}, runtimeGetVersion=lambda: 0, driverGetVersion=lambda: 0,
            CUDARuntimeError=CUDARuntimeError),
        Device=_Device, Event=Event, Stream=Stream, get_elapsed_time=get_elapsed_time,
        get_current_stream=get_current_stream)
    return mod


_MODULE = _build_module()
module = _MODULE          # what tests register: backend.use_cuda_module(cupy_standin.module)
