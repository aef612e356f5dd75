"""BatchNorm's fast form, "sums" (nn/fast/batchnorm.py): in memory order, against the torch
function's float64 floor, whatever the memory layout of the input and of the gradient."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lenet_np import nn
from lenet_np.nn.fast.batchnorm import as_rows

from ...numerics import function_floor, sum_bound

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low

LAYOUTS = {"nchw": (0, 1, 2, 3), "nhcw": (0, 2, 1, 3), "cnhw": (1, 0, 2, 3), "hwnc": (2, 3, 0, 1)}


def laid_out(a, perm):
    """a with the same values, in the memory order ``perm`` (axes from outermost)."""
    return np.ascontiguousarray(a.transpose(perm)).transpose(np.argsort(perm))


def layer_pair(c, rng, **kwargs):
    ref, fast = nn.BatchNorm2d(c, impl="reference", **kwargs), nn.BatchNorm2d(c, impl="sums", **kwargs)
    for layer in (ref, fast):
        if layer.affine:
            layer.weight.data[...] = np.linspace(-2, 2, c) + 0.1
        if layer.bias is not None:
            layer.bias.data[...] = np.linspace(1, -1, c)
    return ref, fast


@given(n=st.integers(1, 4), c=st.integers(1, 4), h=st.integers(1, 5), w=st.integers(1, 6),
       layout=st.sampled_from(sorted(LAYOUTS)), glayout=st.sampled_from(sorted(LAYOUTS)),
       scale=st.sampled_from([0.1, 1.0, 30.0]), shift=st.floats(-50, 50), seed=st.integers(0, 2**16))
def test_sums_within_the_floor_in_any_layout(n, c, h, w, layout, glayout, scale, shift, seed):
    """Output, input and parameter gradients, running statistics: within the float64 floor of
    torch's batch_norm; the output and dL/dx laid out as the input; a gradient laid out
    otherwise gives the same result bit for bit."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    if n * h * w < 2:
        n = 2
    rng = np.random.default_rng(seed)
    x = laid_out((rng.standard_normal((n, c, h, w)) * scale + shift).astype(np.float32), LAYOUTS[layout])
    g = rng.standard_normal(x.shape).astype(np.float32)
    _, layer = layer_pair(c, rng)
    assert layer.path_for(x) == "sums"
    y = layer(x)
    dx = layer.backward(laid_out(g, LAYOUTS[layout]))
    eps = layer.eps
    floor = function_floor(lambda t, wt, b: F.batch_norm(t, None, None, wt, b, True, 0.0, eps),
                           [x, layer.weight.data, layer.bias.data], g)
    floor.check(y, "out", what="forward")
    floor.check(dx, "grad:0", what="input grad")
    floor.check(layer.weight.grad, "grad:1", what="weight grad")
    floor.check(layer.bias.grad, "grad:2", what="bias grad")
    big = [ax for ax in range(4) if x.shape[ax] > 1]
    for out in (y, dx):
        assert sorted(big, key=lambda ax: -out.strides[ax]) == sorted(big, key=lambda ax: -x.strides[ax])
    again = nn.BatchNorm2d(c, impl="sums")
    again.load_state_dict({k: v for k, v in layer.state_dict().items() if "running" not in k and "num" not in k},
                          strict=False)
    again(x)
    np.testing.assert_array_equal(again.backward(laid_out(g, LAYOUTS[glayout])), dx)


def test_input_that_is_not_one_block_in_memory():
    """A strided view (every other row): laid out as one block first, same results as a copy."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 10, 5)).astype(np.float32)[:, :, ::2]
    assert as_rows(x) is None
    g = rng.standard_normal(x.shape).astype(np.float32)
    a, b = nn.BatchNorm2d(3, impl="sums"), nn.BatchNorm2d(3, impl="sums")
    np.testing.assert_array_equal(a(x), b(x.copy()))
    np.testing.assert_array_equal(a.backward(g), b.backward(g))
    np.testing.assert_array_equal(a.running_var, b.running_var)


@pytest.mark.parametrize("shape", [(7, 5), (3, 5, 4), (1, 4, 3)])
def test_batchnorm1d_both_forms_within_the_floor(shape):
    """(N, C) and (N, C, L), far from 0: the fast form and the book's version each within the
    float64 floor of torch's batch_norm (output, every gradient)."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    x = (rng.standard_normal(shape) * 3 + 10).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    floor = None
    for impl in ("reference", "sums"):
        layer = nn.BatchNorm1d(shape[1], impl=impl)
        layer.weight.data[...] = np.linspace(-2, 2, shape[1]) + 0.1
        if floor is None:
            floor = function_floor(lambda t, wt, b, eps=layer.eps: F.batch_norm(t, None, None, wt, b, True, 0.0, eps),
                                   [x, layer.weight.data, layer.bias.data], g)
        floor.check(layer(x), "out", what=f"{impl} forward")
        floor.check(layer.backward(g), "grad:0", what=f"{impl} input grad")
        floor.check(layer.weight.grad, "grad:1", what=f"{impl} weight grad")
        floor.check(layer.bias.grad, "grad:2", what=f"{impl} bias grad")


def test_channel_sums_in_memory_order():
    """Rows: the (rows, C*inner) view of an array's memory, its per-channel sums within the
    rounding of a float32 sum of their terms, and back to the array's shape and layout."""
    rng = np.random.default_rng(3)
    for perm in LAYOUTS.values():
        x = laid_out(rng.random((5, 3, 4, 6)).astype(np.float32), perm)
        r = as_rows(x)
        assert r is not None and np.shares_memory(r.rows, x)
        exact = x.astype(np.float64).sum(axis=(0, 2, 3))
        assert (np.abs(r.channel_sums(r.rows) - exact) <= sum_bound(x.size // 3, exact)).all()
        assert (np.abs(r.channel_dots(r.rows, r.rows) - (x.astype(np.float64) ** 2).sum(axis=(0, 2, 3)))
                <= sum_bound(x.size // 3 + 1, (x.astype(np.float64) ** 2).sum(axis=(0, 2, 3)))).all()
        back = r.back(r.rows * 2)
        np.testing.assert_array_equal(back, 2 * x)
        assert back.strides == x.strides


def test_the_record_is_the_books_on_either_path():
    """The fast form saves the book's record (xhat, inv_std shaped to broadcast, count), so
    ``saved()`` reads the same on either path, and either backward follows either forward:
    all four pairings within the float64 floor of torch's batch_norm."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(4)
    x = laid_out(rng.standard_normal((4, 3, 5, 6)).astype(np.float32), LAYOUTS["nhcw"])
    g = rng.standard_normal(x.shape).astype(np.float32)
    floor = None
    for forward in ("sums", "fused", "reference"):
        for backward in ("sums", "fused", "reference"):
            layer = nn.BatchNorm2d(3, impl=forward)
            layer.weight.data[...] = [1.5, -0.5, 2.0]
            if floor is None:
                floor = function_floor(lambda t, wt, b, eps=layer.eps: F.batch_norm(t, None, None, wt, b, True, 0.0,
                                                                                    eps),
                                       [x, layer.weight.data, layer.bias.data], g)
            layer(x)
            record = layer.saved()
            assert record._fields == ("xhat", "inv_std", "count") and record.inv_std.shape == (1, 3, 1, 1)
            assert record.count == 4 * 5 * 6
            layer.impl = backward
            what = f"forward {forward}, backward {backward}"
            floor.check(layer.backward(g), "grad:0", what=f"{what}: input grad")
            floor.check(layer.weight.grad, "grad:1", what=f"{what}: weight grad")
            floor.check(layer.bias.grad, "grad:2", what=f"{what}: bias grad")
