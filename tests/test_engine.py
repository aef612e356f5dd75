"""im2col adjoint, fast paths against reference paths, modules, dtypes, stability, errors."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lenet_np as ln
from lenet_np import backend, nn
from lenet_np.nn.im2col import col2im, col2im_wide, conv_output_size, conv_transpose_wide, im2col, im2col_wide

from .conftest import tie_free, to_np
from .numerics import sum_bound

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low


@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(xp, n, c, h, w, k, s, p, seed):
    if h + 2 * p < k or w + 2 * p < k:
        return
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    cols = im2col(x, k, k, s, s, p, p)
    assert cols.shape == (n, c, k, k, conv_output_size(h, k, s, p), conv_output_size(w, k, s, p))
    r = xp.asarray(rng.standard_normal(cols.shape))
    lhs = float((cols * r).sum())
    rhs = float((x * col2im(r, x.shape, s, s, p, p)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@given(n=st.integers(1, 3), c=st.integers(1, 3), o=st.integers(1, 4), h=st.integers(1, 9),
       w=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4), p=st.integers(0, 2),
       seed=st.integers(0, 2**16))
def test_wide_forms_adjoint_and_fused_transpose(xp, n, c, o, h, w, kh, kw, p, seed):
    """The stride-1 "wide" im2col/col2im pair of the fast path is an adjoint pair too, and
    conv_transpose_wide is col2im_wide(Wm.T @ g) without the columns in between."""
    if h + 2 * p < kh or w + 2 * p < kw:
        return
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((c, n, h, w)))
    cols, (oh, ow, wp) = im2col_wide(x, kh, kw, p, p)
    assert (oh, ow) == (conv_output_size(h, kh, 1, p), conv_output_size(w, kw, 1, p))
    r = xp.asarray(rng.standard_normal(cols.shape))
    back = col2im_wide(r, x.shape, kh, kw, p, p)
    assert float((cols * r).sum()) == pytest.approx(float((x * back).sum()), rel=1e-10, abs=1e-10)
    weight = xp.asarray(rng.standard_normal((o, c, kh, kw)))
    g = xp.asarray(rng.standard_normal((o, cols.shape[1])))
    two_step = col2im_wide(weight.reshape(o, -1).T @ g, x.shape, kh, kw, p, p)
    np.testing.assert_allclose(to_np(conv_transpose_wide(weight, g, x.shape, p, p)), to_np(two_step),
                               rtol=1e-12, atol=1e-12)


def test_output_size_formula_of_the_seed():
    # floor((n - k + p_total + s) / s) with p_total = 2 * p
    for n, k, p, s in [(28, 5, 0, 1), (28, 5, 2, 1), (24, 2, 0, 2), (7, 3, 1, 2), (8, 3, 0, 3)]:
        assert conv_output_size(n, k, s, p) == (n - k + 2 * p + s) // s


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


@given(n=st.integers(1, 3), c=st.integers(1, 3), k=st.integers(1, 4), s=st.integers(1, 4),
       h=st.integers(4, 11), ties=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_maxpool_offsets_matches_reference(xp, n, c, k, s, h, ties, seed, data):
    p = data.draw(st.integers(0, k // 2))
    rng = np.random.default_rng(seed)
    shape = (n, c, h, h + 2)
    x = rng.integers(0, 2, shape).astype(np.float32) if ties else tie_free(rng, shape, dtype=np.float32)
    x = xp.asarray(x)
    ref, fast = nn.MaxPool2d(k, s, p, impl="reference"), nn.MaxPool2d(k, s, p, impl="offsets")
    lazy = nn.MaxPool2d(k, s, p, impl="offsets").eval()   # eval: the winners found only in backward
    y = ref(x)
    np.testing.assert_array_equal(to_np(fast(x)), to_np(y))
    np.testing.assert_array_equal(to_np(lazy(x)), to_np(y))
    g = xp.asarray(rng.standard_normal(y.shape).astype(np.float32))
    # same routing; overlapping windows may add their shares in another order: each pixel's
    # gradient sums at most ceil(k/s)^2 shares, so the two differ by at most twice that sum's
    # worst-case rounding (the shares' absolute values routed the same way give sum|terms|)
    gx = to_np(fast.backward(g))
    gx_ref = to_np(ref.backward(g))
    ref(x)
    abs_sum = to_np(ref.backward(xp.abs(g))).astype(np.float64)
    bound = 2 * sum_bound(math.ceil(k / s) ** 2, abs_sum)
    assert (np.abs(gx.astype(np.float64) - gx_ref) <= bound).all(), np.abs(gx - gx_ref).max()
    np.testing.assert_array_equal(to_np(lazy.backward(g)), gx)


def test_maxpool_routes_each_window_to_its_first_maximum():
    x = np.ones((1, 1, 2, 4), dtype=np.float32)      # every element ties
    pool = nn.MaxPool2d(2)
    pool(x)
    gx = pool.backward(np.array([[[[1.0, 2.0]]]], dtype=np.float32))
    np.testing.assert_array_equal(gx[0, 0], [[1, 0, 2, 0], [0, 0, 0, 0]])


def test_maxpool_overlapping_windows_accumulate():
    x = np.array([[[[0, 0, 0], [0, 9, 0], [0, 0, 0]]]], dtype=np.float32)
    pool = nn.MaxPool2d(2, stride=1)                 # all four windows pick the centre
    pool(x)
    gx = pool.backward(np.ones((1, 1, 2, 2), dtype=np.float32))
    assert gx[0, 0, 1, 1] == 4 and gx.sum() == 4


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_is_dtype_out(dtype):
    net = ln.LeNet(seed=0).to(dtype=dtype)
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(dtype)
    loss_fn = nn.CrossEntropyLoss()
    logits = net(x)
    loss_fn(logits, np.array([0, 1, 2]))
    gx = net.backward(loss_fn.backward())
    assert logits.dtype == dtype and gx.dtype == dtype
    for _, p in net.named_parameters():
        assert p.data.dtype == dtype and p.grad.dtype == dtype
    opt = ln.optim.Adam(net.parameters())
    opt.step()
    assert all(p.data.dtype == dtype for p in net.parameters())
    for layer in [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Sigmoid(), nn.ReLU(), nn.Flatten()]:
        y = layer(x)
        assert y.dtype == dtype and layer.backward(y).dtype == dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_and_softmax_stable_at_extremes(dtype):
    x = np.array([[-1000.0, -100.0, 0.0, 100.0, 1000.0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = nn.Sigmoid()(x)
        loss_fn = nn.CrossEntropyLoss()
        loss = loss_fn(x, np.array([0]))
        g = loss_fn.backward()
    # exp(-x) overflows to inf, unwarned, for x < -88.7 (-709.8): y is 0 there, as torch's
    assert np.all(np.isfinite(y)) and y[0, 0] == 0 and y[0, 2] == 0.5 and y[0, 4] == 1
    assert y[0, 1] == (0 if dtype == np.float32 else pytest.approx(3.72e-44, rel=1e-2))
    assert np.isfinite(loss) and loss == pytest.approx(2000, rel=1e-6)
    assert np.all(np.isfinite(g))


def test_gradients_accumulate_until_zero_grad():
    layer = nn.Linear(3, 2, rng=0)
    x = np.ones((1, 3), dtype=np.float32)
    g = np.ones((1, 2), dtype=np.float32)
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert layer.weight.grad is None


def test_first_layer_can_skip_its_input_gradient():
    net = ln.LeNet(seed=0)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(net(x), np.array([1, 2]))
    g = loss_fn.backward()
    assert net.backward(g, input_grad=False) is None
    grads = [p.grad.copy() for p in net.parameters()]
    net.zero_grad()
    assert net.backward(g).shape == x.shape
    for a, p in zip(grads, net.parameters()):
        np.testing.assert_array_equal(a, p.grad)


def test_seeded_initialisation_is_reproducible_and_in_torch_bounds():
    a, b, c = ln.LeNet(seed=0), ln.LeNet(seed=0), ln.LeNet(seed=1)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert not np.array_equal(p.data, r.data)
    for _, layer in a.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight.size // layer.weight.shape[0]
            bound = 1 / np.sqrt(fan_in)
            assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
            assert np.abs(layer.weight.data).max() > 0.8 * bound   # really uniform over the range


def test_state_dict_round_trip_and_strict_errors():
    a, b = ln.LeNet(seed=0), ln.LeNet(seed=1)
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert p.data is not q.data
    sd = dict(a.state_dict())
    del sd["fc.4.bias"]
    sd["fc.9.weight"] = np.zeros(3, dtype=np.float32)
    before = [p.data.copy() for p in b.parameters()]
    with pytest.raises(KeyError, match=r"missing keys: fc\.4\.bias.*unexpected keys: fc\.9\.weight"):
        b.load_state_dict(sd)
    sd = dict(ln.LeNet(seed=2).state_dict())
    sd["conv.3.weight"] = np.zeros((16, 6, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"conv\.3\.weight.*\(16, 6, 3, 3\).*\(16, 6, 5, 5\)"):
        b.load_state_dict(sd)
    for old, p in zip(before, b.parameters()):   # a failed load changes nothing
        np.testing.assert_array_equal(old, p.data)
    b.load_state_dict({"conv.0.weight": np.zeros((6, 1, 5, 5))}, strict=False)
    assert not b.conv[0].weight.data.any() and b.conv[0].weight.dtype == np.float32


def test_variants_and_modes():
    net = ln.LeNet(activation="relu", pool="avg", seed=0)
    assert isinstance(net.conv[1], nn.ReLU) and isinstance(net.conv[2], nn.AvgPool2d)
    assert net.num_parameters() == 44426
    assert net.eval() is net and not any(m.training for _, m in net.named_modules())
    net.train()
    assert all(m.training for _, m in net.named_modules())
    assert net(np.zeros((1, 1, 28, 28), dtype=np.float32)).shape == (1, 10)
    with pytest.raises(ValueError, match="activation"):
        ln.LeNet(activation="tanh")
    with pytest.raises(ValueError, match="pool"):
        ln.LeNet(pool="min")


def test_devices():
    net = ln.LeNet(seed=0)
    assert net.to("cpu") is net and net.device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        net.to("tpu")
    if not backend.cupy_available():
        with pytest.raises(RuntimeError, match="cupy"):
            net.to("cuda")
        assert backend.parse_device("auto") == "cpu"
    assert ln.get_array_module(np.zeros(2)) is np


# -- bad inputs: a ValueError naming the layer, the expected and the actual shape ----------
BAD_INPUTS = [
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 3, 8), np.float32), r"Conv2d\(3, 4.*\(N, 3, H, W\).*\(2, 3, 8\)"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 5, 8, 8), np.float32), r"Conv2d.*3 channels.*\(2, 5, 8, 8\)"),
    (lambda: nn.Conv2d(3, 4, 5), np.zeros((2, 3, 4, 8), np.float32), r"Conv2d.*>= 5.*\(2, 3, 4, 8\).*too small"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 3, 8, 8), np.uint8), r"Conv2d.*float32 or float64.*uint8"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 3, 8, 8), np.float64), r"Conv2d.*float64 does not match.*float32"),
    (lambda: nn.MaxPool2d(3), np.zeros((1, 1, 2, 2), np.float32), r"MaxPool2d.*>= 3.*\(1, 1, 2, 2\).*too small"),
    (lambda: nn.MaxPool2d(2), np.zeros((4, 4), np.float32), r"MaxPool2d.*\(N, C, H, W\).*\(4, 4\)"),
    (lambda: nn.AvgPool2d(2), np.zeros((1, 1, 4, 4), np.int64), r"AvgPool2d.*int64"),
    (lambda: nn.Linear(4, 2), np.zeros((3, 5), np.float32), r"Linear\(in_features=4.*\(N, 4\).*\(3, 5\)"),
    (lambda: nn.Linear(4, 2), np.zeros((3, 2, 2), np.float32), r"Linear.*\(N, 4\).*\(3, 2, 2\)"),
    (lambda: nn.Sigmoid(), np.zeros(3, np.int32), r"Sigmoid.*int32"),
    (lambda: nn.ReLU(), [1.0, 2.0], r"ReLU.*got list"),
    (lambda: ln.LeNet(), np.zeros((2, 1, 32, 32), np.float32), r"LeNet.*\(N, 1, 28, 28\).*\(2, 1, 32, 32\)"),
    (lambda: ln.LeNet(), np.zeros((2, 3, 28, 28), np.float32), r"Conv2d.*1 channels.*\(2, 3, 28, 28\)"),
]


@pytest.mark.parametrize("make,x,pattern", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(make, x, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()(x)


def test_bad_labels_and_constructor_arguments():
    loss_fn = nn.CrossEntropyLoss()
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\)"):
        loss_fn(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        loss_fn(z, np.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        loss_fn(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(1, 1, 0)
    with pytest.raises(ValueError, match="kernel_size must be an int or a pair"):
        nn.MaxPool2d("2")
    with pytest.raises(ValueError, match="padding should be at most half"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(RuntimeError, match="backward called before forward"):
        nn.Conv2d(1, 1, 1).backward(np.zeros((1, 1, 1, 1), np.float32))


def test_optimizer_state_dict_resumes_exactly():
    def run(steps, split=None):
        net = ln.LeNet(seed=0)
        opt = ln.optim.Adam(net.parameters(), lr=1e-2)
        loss_fn = nn.CrossEntropyLoss()
        rng = np.random.default_rng(0)
        for step in range(steps):
            if step == split:   # save, rebuild from scratch, load: as a resumed run does
                sd, osd = {k: v.copy() for k, v in net.state_dict().items()}, opt.state_dict()
                net = ln.LeNet(seed=99)
                net.load_state_dict(sd)
                opt = ln.optim.Adam(net.parameters(), lr=0.5)
                opt.load_state_dict(osd)
            x = rng.random((8, 1, 28, 28), dtype=np.float32)
            opt.zero_grad()
            loss_fn(net(x), rng.integers(0, 10, 8))
            net.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        return net

    for p, q in zip(run(6).parameters(), run(6, split=3).parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    with pytest.raises(ValueError, match="shape"):
        ln.optim.SGD(nn.Linear(2, 2).parameters(), momentum=0.9).load_state_dict(
            {"state.0.momentum_buffer": np.zeros(3)})


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_pool_first_matches_the_seeds_order(activation):
    """max(act(z)) == act(max(z)) for monotone activations: in eval mode LeNet pools first,
    with the same output bit for bit; in training mode it runs the seed's order."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    fast = ln.LeNet(activation=activation, seed=4)
    literal = ln.LeNet(activation=activation, seed=4, pool_first=False)
    seed_order = [type(m).__name__ for m in literal.conv]
    assert [type(m).__name__ for m in fast.conv_order()] == seed_order          # training
    fast.eval()
    literal.eval()
    assert [type(m).__name__ for m in fast.conv_order()][1:3] == ["MaxPool2d", type(fast.conv[1]).__name__]
    assert [type(m).__name__ for m in literal.conv_order()] == seed_order
    loss_fn = nn.CrossEntropyLoss()
    a = loss_fn(fast(x), y)
    ga = fast.backward(loss_fn.backward())
    b = loss_fn(literal(x), y)
    gb = literal.backward(loss_fn.backward())
    assert a == b
    np.testing.assert_array_equal(fast(x), literal(x))
    np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-9)
    for p, q in zip(fast.parameters(), literal.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_backward_follows_the_order_of_its_forward():
    """Switching mode between forward and backward must not change the layers retraced."""
    rng = np.random.default_rng(1)
    x, y = rng.random((4, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 4)
    net, ref = ln.LeNet(seed=2), ln.LeNet(seed=2)
    loss_fn = nn.CrossEntropyLoss()
    net.eval()
    loss_fn(net(x), y)
    net.train()                                  # forward ran pool-first; backward must too
    g = net.backward(loss_fn.backward())
    ref.eval()
    loss_fn(ref(x), y)
    np.testing.assert_array_equal(g, ref.backward(loss_fn.backward()))


def cached_arrays(module):
    """Every array a module (and its children) keeps for its backward, by reference."""
    found = []

    def walk(value):
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            found.append(value)
        elif isinstance(value, (tuple, list)):                 # records are NamedTuples
            for v in value:
                walk(v)
    for _, m in module.named_modules():
        walk(m.__dict__.get("_saved"))
    return found


NO_WRITE_CASES = [
    *[(f"conv-{impl}", lambda impl=impl: nn.Conv2d(1, 3, 3, padding=1, rng=0, impl=impl), (2, 1, 7, 6))
      for impl in ("reference", "strided", "wide", "band")],
    ("conv-stride2", lambda: nn.Conv2d(2, 3, 3, stride=2, padding=1, rng=0), (2, 2, 7, 6)),
    ("conv-unpadded", lambda: nn.Conv2d(2, 3, 3, rng=0, impl="reference"), (2, 2, 7, 6)),   # views of x
    *[(f"maxpool-{impl}", lambda impl=impl: nn.MaxPool2d(3, 2, 1, impl=impl), (2, 2, 7, 6))
      for impl in ("reference", "offsets")],
    ("maxpool-eval", lambda: nn.MaxPool2d(2, impl="offsets").eval(), (2, 2, 6, 6)),
    ("avgpool", lambda: nn.AvgPool2d(3, 1, 1), (2, 2, 5, 6)),
    ("sigmoid", nn.Sigmoid, (2, 3, 4)),
    ("relu", nn.ReLU, (2, 3, 4)),
    ("linear", lambda: nn.Linear(6, 4, rng=0), (3, 6)),
    ("flatten", nn.Flatten, (2, 3, 2)),
    ("lenet", lambda: ln.LeNet(seed=0), (2, 1, 28, 28)),
    ("lenet-eval", lambda: ln.LeNet(seed=0).eval(), (2, 1, 28, 28)),
    ("batchnorm2d", lambda: nn.BatchNorm2d(3), (2, 3, 4, 4)),
    ("batchnorm2d-eval", lambda: nn.BatchNorm2d(3).eval(), (2, 3, 4, 4)),
    ("batchnorm1d", lambda: nn.BatchNorm1d(5), (4, 5)),
]


@pytest.mark.parametrize("name,make,shape", NO_WRITE_CASES, ids=[c[0] for c in NO_WRITE_CASES])
def test_no_layer_writes_into_its_input_output_or_cache(xp, name, make, shape):
    """On CuPy the strided window views are writable: a write through one would change the
    input. Nothing may change the input, the output, the incoming gradient or what forward
    cached, until backward has finished."""
    rng = np.random.default_rng(0)
    layer = make().to("cuda" if xp is not np else "cpu")
    x = xp.asarray(rng.standard_normal(shape).astype(np.float32))
    x0 = to_np(x).copy()
    y = layer(x)
    kept = [(a, to_np(a).copy()) for a in [y, *cached_arrays(layer)]]
    g = xp.asarray(rng.standard_normal(y.shape).astype(np.float32))
    g0 = to_np(g).copy()
    layer.backward(g)
    np.testing.assert_array_equal(to_np(x), x0, err_msg=f"{name}: the input changed")
    np.testing.assert_array_equal(to_np(g), g0, err_msg=f"{name}: the incoming gradient changed")
    for i, (a, before) in enumerate(kept):
        np.testing.assert_array_equal(to_np(a), before, err_msg=f"{name}: cached array {i} changed")


def test_loss_backward_leaves_logits_and_cache_alone(xp):
    z = xp.asarray(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    z0 = to_np(z).copy()
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(z, xp.asarray(np.array([0, 1, 4, 2])))
    probs = to_np(loss_fn.saved().probs).copy()
    loss_fn.backward()
    np.testing.assert_array_equal(to_np(z), z0)
    np.testing.assert_array_equal(to_np(loss_fn.saved().probs), probs)


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
    import threading

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


def test_impl_names_are_checked():
    with pytest.raises(ValueError, match="impl must be one of"):
        nn.Conv2d(1, 2, 3, impl="fastest")
    with pytest.raises(ValueError, match="needs stride 1"):
        nn.Conv2d(1, 2, 3, stride=2, impl="wide")
    with pytest.raises(ValueError, match="needs stride 1"):
        nn.Conv2d(2, 2, 3, stride=(1, 2), impl="band")
    with pytest.raises(ValueError, match="impl must be one of"):
        nn.MaxPool2d(2, impl="wide")
    with pytest.raises(ValueError, match=r"AvgPool2d: impl must be one of auto, fast, reference, got 'offsets'"):
        nn.AvgPool2d(2, impl="offsets")          # average pooling has one form: "offsets" is max pooling's
    assert nn.AvgPool2d(2, impl="reference").impl == "reference"
    assert set(nn.Conv2d.IMPLS) >= {"reference", "strided", "wide", "band"}
    assert set(nn.MaxPool2d.IMPLS) >= {"reference", "offsets"}


BACKWARD_FIRST = [*[(case[0], case[1]) for case in NO_WRITE_CASES],
                  ("loss", nn.CrossEntropyLoss), ("sequential", lambda: nn.Sequential(nn.Linear(3, 2), nn.ReLU())),
                  ("lenet-d2l", lambda: ln.LeNet(variant="d2l"))]


@pytest.mark.parametrize("name,make", BACKWARD_FIRST, ids=[c[0] for c in BACKWARD_FIRST])
def test_backward_before_forward_is_one_clear_error(name, make):
    """Every layer has the same guard (Module.saved): a backward before any forward, or after
    the layer moved (its saved record dropped), names the layer and what is wrong."""
    layer = make()
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(np.ones((2, 3), np.float32))
    assert not layer.has_saved()


def test_saved_records_are_named_and_dropped_when_the_layer_moves():
    layer = nn.Sigmoid()
    y = layer(np.zeros((2, 2), np.float32))
    assert layer.saved().y is y and layer.saved()._fields == ("y",)
    conv = nn.Conv2d(1, 2, 3, rng=0, impl="reference")
    conv(np.zeros((1, 1, 5, 5), np.float32))
    assert conv.saved()._fields == ("x_shape", "cm") and conv.saved().cm.shape == (9, 9)
    conv.to("cpu")
    with pytest.raises(RuntimeError, match="Conv2d.*backward called before forward"):
        conv.backward(np.ones((1, 2, 3, 3), np.float32))


@pytest.mark.parametrize("variant", ["classic", "d2l", "batchnorm"])
def test_one_walk_names_every_layer_and_its_output(variant):
    """named_layers and walk: every layer of the book's order, Flatten included, with the
    output forward computes; the classic network's flatten is a layer but not a parameter key
    or a child module (state_dict and print(net) stay the book's)."""
    net = ln.LeNet(variant=variant, seed=0)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    walked = list(net.walk(x))
    assert [name for name, _, _ in walked] == [name for name, _ in net.named_layers()]
    assert sum(isinstance(m, nn.Flatten) for _, m, _ in walked) == 1
    flat = next(i for i, (_, m, _) in enumerate(walked) if isinstance(m, nn.Flatten))
    assert walked[flat][2].shape == (3, 400 if variant == "d2l" else 256)
    np.testing.assert_array_equal(walked[-1][2], net(x))
    assert all("flatten" not in k for k in net.state_dict())
    if variant == "classic":
        assert walked[flat][0] == "flatten" and "flatten" not in repr(net)
        assert [n for n, _, _ in walked][flat - 1:flat + 2] == ["conv.5", "flatten", "fc.0"]


def test_the_classic_network_keeps_its_earlier_name():
    """variant="seed", the name the book's first network had, still builds it (and so old
    checkpoints that carry that name load)."""
    old, new = ln.LeNet(variant="seed", seed=3), ln.LeNet(seed=3)
    assert old.variant == new.variant == "classic"
    for (k, a), (k2, b) in zip(old.state_dict().items(), new.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,make,shape", NO_WRITE_CASES, ids=[c[0] for c in NO_WRITE_CASES])
def test_backward_of_a_gradient_of_the_wrong_shape_is_a_clear_error(xp, name, make, shape):
    """G must have the shape of the last forward's output: one of another batch size, or one
    that would broadcast against it (batch 1), is named as such instead of broadcasting silently."""
    layer = make().to("cuda" if xp is not np else "cpu")
    x = xp.asarray(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    y = layer(x)
    out = tuple(y.shape)
    for bad in [(out[0] + 1,) + out[1:], (1,) + out[1:], out[:-1] + (out[-1] + 1,)]:
        with pytest.raises(ValueError, match=r"backward expected grad_out of shape " + re.escape(str(out))):
            layer.backward(xp.ones(bad, dtype=xp.float32))
    with pytest.raises(ValueError, match="backward expected grad_out"):
        layer.backward([[1.0]])
    layer.backward(xp.ones(out, dtype=xp.float32))                  # the right shape still works


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
