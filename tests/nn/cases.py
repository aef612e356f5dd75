"""The one table of layer cases: every layer of lenet_np.nn, each way it can run.

A case names how to build the layer from drawn parameters, the input's shape, and torch's
function for the same layer. Four checks go through the whole table (tests/nn/test_layers.py):
finite differences in float64, torch in float32 within the float64 floor, no write into
the input, the gradient or what forward saved, and a wrong-shaped gradient refused; each
on NumPy and on the CuPy stand-in (the ``xp`` fixture). A new layer is one entry here.

``params`` draws a dict of shape parameters (Hypothesis); ``example`` is one fixed, small
draw for the checks that need no search.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st

import lenet_np as ln
from lenet_np import nn


class LayerCase(NamedTuple):
    name: str
    params: st.SearchStrategy             # draws a dict: shapes, options, a seed
    make: Callable                        # (params, rng) -> a float32 layer on the CPU
    shape: Callable                       # params -> the input's shape
    torch_fn: Callable | None             # (F, layer, params) -> fn(x, *layer parameters), or None
    example: dict                         # one small fixed draw
    kinks: bool = False                   # max or ReLU: finite differences need tie-free inputs
    ties: bool = False                    # torch parity also draws inputs with ties (and exact zeros)
    mode: str = "train"                   # "eval": the layer runs in evaluation mode


# -- the shape strategies, defined once ----------------------------------------------------
@st.composite
def conv_params(draw, stride_one=False):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (1, 1) if stride_one else (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    hw = (draw(st.integers(max(1, k[0] - 2 * p[0]), 12)), draw(st.integers(max(1, k[1] - 2 * p[1]), 12)))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), o=draw(st.integers(1, 4)), k=k, s=s, p=p,
                hw=hw, bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@st.composite
def pool_params(draw, disjoint=False):
    """Any pooling; ``disjoint``: windows that neither overlap nor reach into padding (the
    "fused" forms: stride >= kernel, no padding; rows and columns may be left over)."""
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = (0, 0) if disjoint else (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    s = (draw(st.integers(k[0] if disjoint else 1, 4)), draw(st.integers(k[1] if disjoint else 1, 4)))
    hw = (draw(st.integers(max(1, k[0] - 2 * p[0]), 10)), draw(st.integers(max(1, k[1] - 2 * p[1]), 10)))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), k=k, s=s, p=p, hw=hw,
                seed=draw(st.integers(0, 2**16)))


def any_shape(min_dims=1, max_dims=4, largest=6, scales=(1.0,)):
    return st.fixed_dictionaries(dict(shape=st.lists(st.integers(1, largest), min_size=min_dims, max_size=max_dims)
                                      .map(tuple), scale=st.sampled_from(scales), seed=st.integers(0, 2**16)))


linear_params = st.fixed_dictionaries(dict(n=st.integers(1, 6), fin=st.integers(1, 24), fout=st.integers(1, 24),
                                           bias=st.booleans(), seed=st.integers(0, 2**16)))


@st.composite
def norm_params(draw, dims):
    """(N, C, ...) of one of the ranks ``dims``, with at least 3 values per channel: N = 1 included. With two values per
    channel xhat is +-1 whatever x is and dL/dx is ~eps/var, all rounding."""
    n, c = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    tail = tuple(draw(st.integers(1, 4)) for _ in range(draw(st.sampled_from(dims)) - 2))
    if n * int(np.prod(tail)) < 3:
        n = 3
    return dict(shape=(n, c, *tail), scale=draw(st.sampled_from([0.1, 1.0, 30.0])), shift=draw(st.floats(-3, 3)),
                seed=draw(st.integers(0, 2**16)))


CONV_EXAMPLE = dict(n=2, c=2, o=3, k=(3, 3), s=(1, 1), p=(1, 1), hw=(7, 6), bias=True, seed=0)
POOL_EXAMPLE = dict(n=2, c=2, k=(3, 3), s=(2, 2), p=(1, 1), hw=(7, 6), seed=0)
DISJOINT_EXAMPLE = dict(POOL_EXAMPLE, k=(2, 2), s=(3, 2), p=(0, 0))     # a row left over, none padded


def _image_shape(q):
    return (q["n"], q["c"], *q["hw"])


def _conv(impl):
    def make(q, rng):
        return nn.Conv2d(q["c"], q["o"], q["k"], q["s"], q["p"], bias=q["bias"], rng=rng, impl=impl)
    return make


def _conv_torch(F, layer, q):
    if layer.bias is None:
        return lambda t, w: F.conv2d(t, w, None, stride=q["s"], padding=q["p"])
    return lambda t, w, b: F.conv2d(t, w, b, stride=q["s"], padding=q["p"])


def _linear_torch(F, layer, q):
    return (lambda t, w: F.linear(t, w)) if layer.bias is None else F.linear


def _batchnorm(cls, mode, impl=None):
    def make(q, rng):
        c = q["shape"][1]
        layer = cls(c, impl=impl)                   # weights away from the trivial 1 and 0, either sign
        layer.weight.data[...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
        layer.bias.data[...] = rng.standard_normal(c)
        if mode == "eval":
            layer.running_mean[...] = rng.standard_normal(layer.running_mean.shape)
            layer.running_var[...] = rng.uniform(0.5, 2.0, layer.running_var.shape)
        return layer

    def torch_fn(F, layer, q):
        if mode == "eval":
            import torch

            from ..conftest import to_np
            mean, var = (torch.tensor(to_np(a).astype(np.float64)) for a in (layer.running_mean, layer.running_var))
            return lambda t, w, b: F.batch_norm(t, mean.to(t.dtype), var.to(t.dtype), w, b, False, 0.0, layer.eps)
        return lambda t, w, b: F.batch_norm(t, None, None, w, b, True, 0.0, layer.eps)
    return make, torch_fn


def _cases():
    cases = []
    for impl in ("reference", "strided", "auto"):
        cases.append(LayerCase(f"conv-{impl}", conv_params(), _conv(impl), _image_shape, _conv_torch, CONV_EXAMPLE))
    for impl in ("wide", "band"):                                   # the stride-1 forms
        cases.append(LayerCase(f"conv-{impl}", conv_params(stride_one=True), _conv(impl), _image_shape,
                               _conv_torch, CONV_EXAMPLE))
    for impl in ("reference", "offsets", "fused"):
        cases.append(LayerCase(
            f"maxpool-{impl}", pool_params(disjoint=impl == "fused"),
            lambda q, rng, impl=impl: nn.MaxPool2d(q["k"], q["s"], q["p"], impl=impl),
            _image_shape, lambda F, layer, q: (lambda t: F.max_pool2d(t, q["k"], q["s"], q["p"])),
            DISJOINT_EXAMPLE if impl == "fused" else POOL_EXAMPLE,
            kinks=True, ties=True))
    cases.append(LayerCase(
        "maxpool-eval", pool_params(), lambda q, rng: nn.MaxPool2d(q["k"], q["s"], q["p"], impl="offsets"),
        _image_shape, lambda F, layer, q: (lambda t: F.max_pool2d(t, q["k"], q["s"], q["p"])),
        dict(POOL_EXAMPLE, k=(2, 2), s=(2, 2), p=(0, 0), hw=(6, 6)), kinks=True, ties=True, mode="eval"))
    for impl in ("reference", "sums", "fused"):
        cases.append(LayerCase(
            f"avgpool-{impl}", pool_params(disjoint=impl == "fused"),
            lambda q, rng, impl=impl: nn.AvgPool2d(q["k"], q["s"], q["p"], impl=impl), _image_shape,
            lambda F, layer, q: (lambda t: F.avg_pool2d(t, q["k"], q["s"], q["p"])),
            DISJOINT_EXAMPLE if impl == "fused" else POOL_EXAMPLE))
    cases.append(LayerCase("sigmoid", any_shape(scales=(1.0, 5.0)),       # beyond, finite differences see only rounding
                           lambda q, rng: nn.Sigmoid(), lambda q: q["shape"],
                           lambda F, layer, q: F.sigmoid, dict(shape=(2, 3, 4), seed=0)))
    cases.append(LayerCase("relu", any_shape(), lambda q, rng: nn.ReLU(), lambda q: q["shape"],
                           lambda F, layer, q: F.relu, dict(shape=(2, 3, 4), seed=0), kinks=True, ties=True))
    cases.append(LayerCase("linear", linear_params,
                           lambda q, rng: nn.Linear(q["fin"], q["fout"], bias=q["bias"], rng=rng),
                           lambda q: (q["n"], q["fin"]), _linear_torch,
                           dict(n=3, fin=6, fout=4, bias=True, seed=0)))
    cases.append(LayerCase("flatten", any_shape(min_dims=2), lambda q, rng: nn.Flatten(), lambda q: q["shape"],
                           lambda F, layer, q: (lambda t: t.flatten(1)), dict(shape=(2, 3, 2), seed=0)))
    for cls, dims, example in ((nn.BatchNorm2d, (4,), (2, 3, 4, 4)), (nn.BatchNorm1d, (2, 3), (4, 5))):
        for mode, impl in (("train", None), ("train", "fused"), ("eval", None)):    # fused: the GPU's form
            make, torch_fn = _batchnorm(cls, mode, impl)
            suffix = "-eval" if mode == "eval" else f"-{impl}" if impl else ""
            cases.append(LayerCase(f"{cls.__name__.lower()}{suffix}", norm_params(dims), make, lambda q: q["shape"],
                                   torch_fn, dict(shape=example, seed=0), mode=mode))
    return cases


LAYERS = _cases()
BY_NAME = {c.name: c for c in LAYERS}

# Whole networks for the checks that need no torch function (no write, shapes, guards)
NETWORKS = {
    "lenet": lambda: ln.LeNet(seed=0),
    "lenet-eval": lambda: ln.LeNet(seed=0).eval(),
    "lenet-d2l": lambda: ln.LeNet(variant="d2l", seed=0),
    "lenet-batchnorm": lambda: ln.LeNet(variant="batchnorm", seed=0),
}


def build(case: LayerCase, q: dict, xp=np, dtype=np.float32):
    """(layer, input) for the drawn parameters ``q``: the layer in the case's mode, in
    ``dtype``, on ``xp``'s device; the input a standard normal draw, scaled and shifted as
    ``q`` says (tie-free where the layer has kinks and ``dtype`` is float64, for finite
    differences)."""
    from ..conftest import tie_free
    rng = np.random.default_rng(q["seed"])
    layer = case.make(q, rng).to(dtype=dtype)
    if case.mode == "eval":
        layer.eval()
    layer.to("cuda" if xp is not np else "cpu")
    shape = case.shape(q)
    if case.kinks and dtype == np.float64:
        x = tie_free(rng, shape)
    else:
        x = rng.standard_normal(shape) * q.get("scale", 1.0) + q.get("shift", 0.0)
    return layer, xp.asarray(x.astype(dtype))
