"""The fast forms of Conv2d (lenet_np/nn/fast/conv.py) against the book's reference path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lenet_np import nn

from ...conftest import to_np

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low


@pytest.mark.parametrize("impl", ["strided", "wide", "auto"])
@given(n=st.integers(1, 4), c=st.integers(1, 4), o=st.integers(1, 5), k=st.integers(1, 5),
       s=st.integers(1, 3), p=st.integers(0, 2), h=st.integers(5, 12), seed=st.integers(0, 2**16))
def test_conv_paths_match_reference(xp, impl, n, c, o, k, s, p, h, seed):
    """Every implementation, on every backend, against the reference (the wide form: stride 1)."""
    s = 1 if impl == "wide" else s
    rng = np.random.default_rng(seed)
    ref = nn.Conv2d(c, o, k, s, p, rng=np.random.default_rng(seed), impl="reference").double()
    fast = nn.Conv2d(c, o, k, s, p, rng=np.random.default_rng(seed), impl=impl).double()
    assert_conv_matches_reference(xp, fast, ref, rng.standard_normal((n, c, h, h + 1)), rng)


def assert_conv_matches_reference(xp, fast, ref, x, rng):
    """fast and ref (same weights, float64) on x: outputs and all three gradients agree."""
    dev = "cuda" if xp is not np else "cpu"
    ref.to(dev)
    fast.to(dev)
    x = xp.asarray(x)
    y_ref, y_fast = ref(x), fast(x)
    np.testing.assert_allclose(to_np(y_fast), to_np(y_ref), rtol=1e-12, atol=1e-12)
    g = xp.asarray(rng.standard_normal(y_ref.shape))
    np.testing.assert_allclose(to_np(fast.backward(g)), to_np(ref.backward(g)), rtol=1e-12, atol=1e-12)
    for a, b in zip(fast.parameters(), ref.parameters()):
        np.testing.assert_allclose(to_np(a.grad), to_np(b.grad), rtol=1e-12, atol=1e-12)
    return x, g


@given(n=st.integers(1, 4), c=st.integers(1, 4), o=st.integers(1, 7), kh=st.integers(1, 5), kw=st.integers(1, 5),
       p=st.integers(0, 2), h=st.integers(5, 30), w=st.integers(5, 30), seed=st.integers(0, 2**16))
def test_conv_band_form_matches_reference(xp, n, c, o, kh, kw, p, h, w, seed):
    """Stride 1: the band form (one product with the banded weights) against the reference,
    outputs and all three gradients, any number of channels; "auto" takes the band or the wide
    form on the CPU and the strided one on a GPU."""
    rng = np.random.default_rng(seed)
    ref = nn.Conv2d(c, o, (kh, kw), 1, p, rng=np.random.default_rng(seed), impl="reference").double()
    fast = nn.Conv2d(c, o, (kh, kw), 1, p, rng=np.random.default_rng(seed), impl="band").double()
    auto = nn.Conv2d(c, o, (kh, kw), 1, p, impl="auto")
    path = auto.path_for(xp.zeros((n, c, h, w), dtype=np.float32))
    assert path == "strided" if xp is not np else path in ("band", "wide")
    x, g = assert_conv_matches_reference(xp, fast, ref, rng.standard_normal((n, c, h, w)), rng)
    fast.zero_grad()
    fast(x)
    assert fast.backward(g, input_grad=False) is None and fast.weight.grad is not None


@pytest.mark.parametrize("c,o,k,width,padding,expected", [
    (1, 6, 5, 28, 0, "band"),        # LeNet's conv.0 (and d2l's, padded to 32)
    (1, 6, 5, 28, 2, "band"),
    (1, 6, 5, 36, 0, "wide"),        # wider than 32
    (1, 6, 3, 28, 0, "wide"),        # more than 7 kernel widths
    (1, 6, 1, 8, 0, "wide"),
    (6, 16, 5, 12, 0, "band"),       # LeNet's conv.3
    (6, 16, 5, 14, 0, "band"),       # d2l's conv.3
    (6, 16, 5, 16, 0, "wide"),       # more than 3 kernel widths
    (16, 33, 5, 12, 0, "wide"),      # more than 32 output channels
    (64, 32, 5, 12, 0, "band"),
    (512, 32, 5, 12, 0, "wide"),     # the banded weights would pass 4M entries
])
def test_auto_takes_the_band_form_where_it_was_measured_faster(c, o, k, width, padding, expected):
    layer = nn.Conv2d(c, o, k, padding=padding)
    assert layer.path_for(np.zeros((2, c, width, width), dtype=np.float32)) == expected
    assert nn.Conv2d(c, o, k, stride=2).path_for(np.zeros((2, c, width, width), dtype=np.float32)) == "strided"


def test_one_layer_forward_from_two_threads_at_once(monkeypatch):
    """A band layer in evaluation mode may run in several threads at once (as a model shared
    by threads for inference): each forward's output is its own input's, whatever the other
    thread does with the layer's buffers. The interleaving is forced, not hoped for: thread A
    stops right after it has written its band into the layer's spare buffer, thread B runs a
    whole forward on another input, then A finishes."""

    from lenet_np.nn.fast import conv

    rng = np.random.default_rng(11)
    layer = nn.Conv2d(1, 6, 5, rng=np.random.default_rng(1)).eval()
    xs = [rng.random((64, 1, 28, 28), dtype=np.float32) for _ in range(2)]
    want = [nn.Conv2d(1, 6, 5, rng=np.random.default_rng(1))(x) for x in xs]
    assert layer.path_for(xs[0]) == "band"
    layer(xs[1])                                     # the spare buffers exist: the next forward reuses them
    a_has_band, b_done = threading.Event(), threading.Event()
    real = conv.image_bands

    def image_bands(*args, **kwargs):
        band = real(*args, **kwargs)
        if threading.current_thread().name == "A":
            a_has_band.set()
            assert b_done.wait(30), "thread B did not finish its forward"
        return band

    monkeypatch.setattr(conv, "image_bands", image_bands)
    got = {}

    def run(name, i):
        if name == "B":
            assert a_has_band.wait(30), "thread A never reached its band"
        got[name] = layer(xs[i])
        if name == "B":
            b_done.set()

    threads = [threading.Thread(target=run, args=(name, i), name=name) for name, i in (("A", 0), ("B", 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert a_has_band.is_set() and b_done.is_set() and set(got) == {"A", "B"}
    np.testing.assert_array_equal(got["A"], want[0])
    np.testing.assert_array_equal(got["B"], want[1])
    np.testing.assert_array_equal(layer(xs[0]), want[0])      # and the buffers left behind still work


@pytest.mark.parametrize("c", [1, 3])
def test_band_buffers_are_reused_and_never_alias(xp, c):
    """The band form writes each forward's band and banded weights over the last forward's
    (same shape): the result of forward, forward, backward is the second forward's alone;
    another shape gets new buffers; the band never views the input, the output never views the
    cache, and the weights written over T are the current ones. Compared with a new layer for
    each call, which has nothing to reuse."""
    rng = np.random.default_rng(7)
    device = "cpu" if xp is np else "cuda"
    layer = nn.Conv2d(c, 4, 3, padding=1, rng=np.random.default_rng(1), impl="band").double().to(device)

    def fresh():
        new = nn.Conv2d(c, 4, 3, padding=1, impl="band").double().to(device)
        new.weight.data, new.bias.data = layer.weight.data.copy(), layer.bias.data.copy()
        return new

    x1, x2 = (xp.asarray(rng.standard_normal((2, c, 6, 5))) for _ in range(2))
    g = xp.asarray(rng.standard_normal((2, 4, 6, 5)))
    y1 = to_np(layer(x1)).copy()
    band, t = layer.saved().saved.band, layer.saved().saved.t
    y2 = layer(x2)
    assert layer.saved().saved.band is band and layer.saved().saved.t is t          # written over, not new
    np.testing.assert_array_equal(to_np(layer(x1)), y1)              # nothing left over from x2
    layer(x2)
    ref = fresh()
    np.testing.assert_array_equal(to_np(y2), to_np(ref(x2)))
    np.testing.assert_array_equal(to_np(layer.backward(g)), to_np(ref.backward(g)))
    np.testing.assert_array_equal(to_np(layer.weight.grad), to_np(ref.weight.grad))
    if xp is np:
        assert not np.shares_memory(layer.saved().saved.band, x2) and not np.shares_memory(y2, layer.saved().saved.band)
    layer.weight.data = layer.weight.data * 2                          # new weights: T follows
    np.testing.assert_array_equal(to_np(layer(x2)), to_np(fresh()(x2)))
    layer(xp.asarray(rng.standard_normal((3, c, 7, 5))))               # more rows: a new band,
    assert layer.saved().saved.band is not band and layer.saved().saved.t is t      # T depends on the width only
    x3 = xp.asarray(rng.standard_normal((3, c, 7, 6)))                 # another width: a new T
    np.testing.assert_array_equal(to_np(layer(x3)), to_np(fresh()(x3)))
    assert layer.saved().saved.t is not t
