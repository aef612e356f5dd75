"""SciPy as a second, independent oracle for Conv2d: forward, dL/dx, dL/dW and dL/db.

The oracle shares no code with im2col.py: it is built from ``scipy.signal.correlate``
and ``scipy.signal.convolve`` on plain 2-D NumPy arrays, the textbook statements of
a convolution layer and its backward:

    y[n, o]   = b[o] + sum_c correlate(x_pad[n, c], W[o, c], "valid")[::s, ::s]
    dx_pad[n, c] = sum_o convolve(dilate(G[n, o], s), W[o, c], "full")   (zero-filled to the padded size)
    dW[o, c]  = sum_n correlate(x_pad[n, c], dilate(G[n, o], s), "valid")[:KH, :KW]
    db[o]     = sum over n, rows, columns of G[n, o]

Every Conv2d implementation (auto, reference, strided, and wide and band where they
apply) is compared with it on every backend (the ``xp`` fixture), on shapes, paddings
and strides drawn by Hypothesis.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lenet_np import nn

from ..conftest import to_np
from ..numerics import sum_bound

signal = pytest.importorskip("scipy.signal")

IMPLS = ("auto", "reference", "strided", "wide", "band")


def dilate(g, s):
    """Insert s - 1 zeros between the rows and the columns of a 2-D array."""
    if s == 1:
        return g
    out = np.zeros(((g.shape[0] - 1) * s + 1, (g.shape[1] - 1) * s + 1), dtype=g.dtype)
    out[::s, ::s] = g
    return out


def oracle_forward(x, w, b, s, p):
    n, c, _, _ = x.shape
    o = w.shape[0]
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ys = [[b[oo] + sum(signal.correlate(x_pad[nn_, cc], w[oo, cc], mode="valid") for cc in range(c))[::s, ::s]
           for oo in range(o)] for nn_ in range(n)]
    return np.array(ys)


def oracle_backward(x, w, g, s, p):
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    x_pad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    hp, wp = x_pad.shape[2:]
    dx_pad = np.zeros_like(x_pad)
    dw = np.zeros_like(w)
    for nn_ in range(n):
        for oo in range(o):
            gd = dilate(g[nn_, oo], s)
            for cc in range(c):
                full = signal.convolve(gd, w[oo, cc], mode="full")    # rows the stride skipped stay 0
                dx_pad[nn_, cc, :full.shape[0], :full.shape[1]] += full
                dw[oo, cc] += signal.correlate(x_pad[nn_, cc], gd, mode="valid")[:kh, :kw]
    assert dx_pad.shape == (n, c, hp, wp)
    return dx_pad[:, :, p:p + h, p:p + wd], dw, g.sum(axis=(0, 2, 3))


def valid(impl, c, s):
    return not (impl in ("wide", "band") and s != 1)


@pytest.mark.parametrize("impl", IMPLS)
@given(n=st.integers(1, 3), c=st.integers(1, 3), o=st.integers(1, 3), kh=st.integers(1, 4),
       kw=st.integers(1, 4), p=st.integers(0, 2), s=st.integers(1, 2), h=st.integers(4, 9), w=st.integers(4, 9),
       one_channel=st.booleans(), seed=st.integers(0, 2**16))
def test_conv_against_scipy(xp, impl, n, c, o, kh, kw, p, s, h, w, one_channel, seed):
    """Forward and all three gradients of Conv2d equal SciPy's, float64, every implementation."""
    if one_channel:
        c = 1                                    # LeNet's first layer, and the band form's simplest case
    if impl in ("wide", "band"):
        s = 1
    assert valid(impl, c, s)
    rng = np.random.default_rng(seed)
    layer = nn.Conv2d(c, o, (kh, kw), stride=s, padding=p, rng=rng, impl=impl).double()
    layer.to("cpu" if xp is np else "cuda")
    x = rng.standard_normal((n, c, h, w))
    weight, bias = to_np(layer.weight.data), to_np(layer.bias.data)

    y = to_np(layer(xp.asarray(x)))
    y_oracle = oracle_forward(x, weight, bias, s, p)
    assert y.shape == y_oracle.shape
    np.testing.assert_allclose(y, y_oracle, rtol=1e-12, atol=1e-12)

    g = rng.standard_normal(y.shape)
    dx = to_np(layer.backward(xp.asarray(g)))
    dx_oracle, dw_oracle, db_oracle = oracle_backward(x, weight, g, s, p)
    np.testing.assert_allclose(dx, dx_oracle, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(layer.weight.grad), dw_oracle, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(to_np(layer.bias.grad), db_oracle, rtol=1e-12, atol=1e-12)


def test_lenet_layers_against_scipy(xp):
    """LeNet's two convolutions in float32, on the paths impl='auto' picks for them on this backend."""
    rng = np.random.default_rng(7)
    for c, o, size in ((1, 6, 28), (6, 16, 12)):
        layer = nn.Conv2d(c, o, 5, rng=rng)
        layer.to("cpu" if xp is np else "cuda")
        x = rng.standard_normal((2, c, size, size)).astype(np.float32)
        g = rng.standard_normal((2, o, size - 4, size - 4)).astype(np.float32)
        y = to_np(layer(xp.asarray(x)))
        dx = to_np(layer.backward(xp.asarray(g)))
        assert y.dtype == dx.dtype == np.float32
        w64, b64 = to_np(layer.weight.data).astype(np.float64), to_np(layer.bias.data).astype(np.float64)
        x64, g64 = x.astype(np.float64), g.astype(np.float64)
        # float32 sums in any order: at most gamma_{N+1} sum|terms| from the exact result (the
        # float64 oracle), the sums of |terms| being the oracle on absolute values
        results = {"y": (y, oracle_forward(x64, w64, b64, 1, 0), oracle_forward(abs(x64), abs(w64), abs(b64), 1, 0),
                         c * 25 + 1),
                   **{name: (ours, exact, size, n) for name, ours, exact, size, n in zip(
                       ("dx", "dW", "db"), (dx, to_np(layer.weight.grad), to_np(layer.bias.grad)),
                       oracle_backward(x64, w64, g64, 1, 0), oracle_backward(abs(x64), abs(w64), abs(g64), 1, 0),
                       (o * 25, 2 * (size - 4) ** 2, 2 * (size - 4) ** 2))}}
        for name, (ours, exact, abs_sum, n_terms) in results.items():
            err = np.abs(ours.astype(np.float64) - exact)
            assert (err <= sum_bound(n_terms + 1, abs_sum)).all(), f"{name}: max error {err.max():.2e}"


def test_oracle_is_not_the_code():
    """The oracle itself: a hand-computed 1x1 example and a rotated kernel that it must reject."""
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    w = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    y = oracle_forward(x, w, np.zeros(1), 1, 0)
    assert y[0, 0].tolist() == [[0 + 2 + 9 + 16, 1 + 4 + 12 + 20], [3 + 8 + 18 + 28, 4 + 10 + 21 + 32]]
    assert not np.allclose(oracle_forward(x, w[..., ::-1, ::-1], np.zeros(1), 1, 0), y)
