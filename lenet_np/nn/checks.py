"""Input checks shared by the layers: a bad input raises a ValueError that names
the layer, the shape it expected and the shape it got."""

from __future__ import annotations

import os

import numpy as np

from .. import backend


def check_input(layer, x, expected: str, ndim: int | None = None, channels: int | None = None,
                dtype=None, params=None):
    """Validate x for ``layer``; ``expected`` describes the shape, e.g. "(N, 6, H, W)".

    ``params``: an array of the layer's parameters; x must live on the same device."""
    name = repr(layer)
    shape = getattr(x, "shape", None)
    if shape is None or not hasattr(x, "dtype"):
        raise ValueError(f"{name}: expected an array of shape {expected}, got {type(x).__name__}")
    if params is not None and backend.device_of(x) != backend.device_of(params):
        here, there = backend.device_of(x), backend.device_of(params)
        kind = "a CuPy array" if here == "cuda" else "a NumPy array"
        raise ValueError(f"{name}: the input is {kind} on {here}, but the layer's parameters are on "
                         f"{there}; move the network with net.to({here!r}), or the input with "
                         f"lenet_np.to_device(x, {there!r})")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected input of shape {expected} ({ndim} dimensions), "
                         f"got shape {tuple(shape)} ({x.ndim} dimensions)")
    if channels is not None and shape[1] != channels:
        raise ValueError(f"{name}: expected input of shape {expected} with {channels} channels "
                         f"(axis 1), got shape {tuple(shape)}")
    if x.dtype.kind != "f" or x.dtype not in (np.float32, np.float64):
        raise ValueError(f"{name}: expected a float32 or float64 array of shape {expected}, got "
                         f"dtype {x.dtype} with shape {tuple(shape)}; convert it, e.g. "
                         "x.astype(np.float32) / 255 for images")
    if dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name}: input dtype {x.dtype} does not match the layer's parameters "
                         f"({np.dtype(dtype)}); cast the input or the network "
                         "(net.double() / net.float())")


def check_grad(layer, grad_out, shape):
    """backward's G = dL/d(output) must have the shape of the last forward's output: a
    gradient of another shape would broadcast silently or fail deep inside a reshape."""
    got = getattr(grad_out, "shape", None)
    if got is None or not hasattr(grad_out, "dtype"):
        raise ValueError(f"{layer!r}: backward expected grad_out of shape {tuple(shape)} (an array, "
                         f"dL/d(output)), got {type(grad_out).__name__}")
    if tuple(got) != tuple(shape):
        raise ValueError(f"{layer!r}: backward expected grad_out of shape {tuple(shape)} (the output of the "
                         f"last forward), got shape {tuple(got)}; run forward on this batch first")


def check_spatial(layer, x, expected: str, kernel, stride, padding):
    """The padded input must hold at least one kernel window."""
    h, w = x.shape[-2], x.shape[-1]
    kh, kw = kernel
    ph, pw = padding
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ValueError(
            f"{layer!r}: expected input of shape {expected} with H + 2*padding >= {kh} and "
            f"W + 2*padding >= {kw}, got shape {tuple(x.shape)} (too small for the kernel)")


def pair(value, name: str):
    """An int or a pair of ints -> a pair of ints (torch's _pair)."""
    if isinstance(value, (int, np.integer)):
        value = (int(value), int(value))
    try:
        a, b = value
        a, b = int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    return a, b


DEFAULT_IMPL = os.environ.get("LENET_NP_IMPL", "auto")   # for every layer: auto, fast or reference


def check_impl(layer: str, impl, impls) -> str:
    """impl, or the default (``$LENET_NP_IMPL``, else "auto"), checked against ``impls``, the
    forms that layer has; a ValueError naming the layer and its choices otherwise."""
    if impl is None:
        if DEFAULT_IMPL not in ("auto", "fast", "reference"):
            raise ValueError(f"LENET_NP_IMPL={DEFAULT_IMPL!r}: use auto, fast or reference (the values "
                             "every layer has), or pass impl= to one layer")
        return DEFAULT_IMPL
    if impl not in impls:
        raise ValueError(f"{layer}: impl must be one of {', '.join(impls)}, got {impl!r}")
    return impl
