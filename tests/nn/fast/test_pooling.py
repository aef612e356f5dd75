"""The fast max pooling (nn/fast/pooling.py): the offsets form against the reference, and
backward_through, an activation and the max pooling after it, back in one step.

Where it runs (the windows tile the input, training-mode forward on the CPU, no NaN), its
result must equal the two separate backwards bit for bit, ties included; everywhere else it
must decline (return None) so that the two steps run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lenet_np as ln
from lenet_np import nn
from lenet_np.nn.fast import pooling as fast_pooling
from lenet_np.nn.fast.pooling import backward_through
from lenet_np.nn.module import chain_backward

from ...conftest import tie_free, to_np
from ...numerics import sum_bound

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}


def two_step(act, pool, g):
    return act.backward(pool.backward(g))


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(n=st.integers(1, 3), c=st.integers(1, 4), k=st.integers(1, 3), oh=st.integers(1, 5), ow=st.integers(1, 5),
       ties=st.booleans(), layout=st.sampled_from(["nchw", "cnhw", "nhcw"]), special=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_one_step_equals_two_steps_bit_for_bit(name, n, c, k, oh, ow, ties, layout, special, dtype, seed):
    rng = np.random.default_rng(seed)
    shape = (n, c, oh * k, ow * k)
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    if ties:                                       # rounded values tie within windows, and
        z = np.round(z)                            # ReLU's zeros tie with each other
    if special:                                    # infinities and signed zeros in the input
        z.reshape(-1)[rng.integers(0, z.size, 3)] = rng.choice([np.inf, -np.inf, -0.0, 0.0], 3)
    perm = {"nchw": (0, 1, 2, 3), "cnhw": (1, 0, 2, 3), "nhcw": (0, 2, 1, 3)}[layout]
    z = np.ascontiguousarray(z.transpose(perm)).transpose(np.argsort(perm))   # that memory order
    act, pool = ACTIVATIONS[name](), nn.MaxPool2d(k)
    y = pool(act(z))
    g = rng.standard_normal(y.shape).astype(dtype)
    if special:                                    # and NaN, infinities, signed zeros in G
        g.reshape(-1)[rng.integers(0, g.size, 3)] = rng.choice([np.nan, np.inf, -np.inf, -0.0], 3)
    with np.errstate(invalid="ignore"):            # inf * 0 is NaN, in both forms alike
        fused = backward_through(pool, act, g)
        assert fused is not None
        expected = two_step(act, pool, g)
        again = backward_through(pool, act, g)      # a second call gives the same
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(expected))
    np.testing.assert_array_equal(again, fused)
    assert fused.shape == z.shape and fused.dtype == z.dtype
    def order(a):                                  # the memory order of the axes longer than 1
        return sorted((ax for ax in range(a.ndim) if a.shape[ax] > 1), key=lambda ax: -a.strides[ax])
    assert order(fused) == order(z)


@pytest.mark.parametrize("case", ["overlap", "padding", "leftover", "stride_gt_kernel", "nan", "eval"])
def test_declines_where_the_two_steps_differ_or_are_needed(case):
    rng = np.random.default_rng(0)
    pool = {"overlap": nn.MaxPool2d(3, 2), "padding": nn.MaxPool2d(2, 2, 1),
            "stride_gt_kernel": nn.MaxPool2d(2, 3)}.get(case, nn.MaxPool2d(2))
    z = rng.standard_normal((2, 3, 7 if case == "leftover" else 8, 8)).astype(np.float32)
    if case == "nan":
        z[0, 1, 2, 3] = np.nan
    if case == "eval":
        pool.eval()
    act = nn.Sigmoid()
    y = pool(act(z))
    g = rng.standard_normal(y.shape).astype(np.float32)
    assert backward_through(pool, act, g) is None
    dz = two_step(act, pool, g)                   # and the two steps still run
    assert dz.shape == z.shape


def test_declines_on_the_gpu_path(xp):
    """On a GPU the pooling runs its reference path (no NaN flag read back): two steps."""
    act, pool = nn.Sigmoid(), nn.MaxPool2d(2)
    z = xp.asarray(np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32))
    y = pool(act(z))
    fused = backward_through(pool, act, xp.ones_like(y))
    assert (fused is None) == (xp is not np)


def test_checks_the_gradient_shape():
    act, pool = nn.Sigmoid(), nn.MaxPool2d(2)
    pool(act(np.zeros((2, 3, 8, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match="shape"):
        backward_through(pool, act, np.zeros((1, 3, 4, 4), dtype=np.float32))


@pytest.mark.parametrize("variant,activation", [("classic", "sigmoid"), ("classic", "relu"), ("d2l", "sigmoid")])
def test_lenet_backward_takes_one_step_per_pair_with_the_same_gradients(variant, activation, monkeypatch):
    """LeNet's training backward goes through both (activation, pooling) pairs in one step
    each (the activations' own backward never runs there), max pooling (classic) and average
    pooling (d2l), with the gradients of the two steps, bit for bit."""
    rng = np.random.default_rng(2)
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    g = rng.standard_normal((8, 10)).astype(np.float32)
    grads = {}
    for fused in (True, False):
        net = ln.LeNet(activation, seed=0, variant=variant)
        if not fused:
            monkeypatch.setattr(fast_pooling, "backward_through", lambda pool, act, grad: None)
        calls = []
        cls = ACTIVATIONS[activation]

        def counted(self, *a, original=cls.backward, calls=calls, **k):
            calls.append(1)
            return original(self, *a, **k)
        monkeypatch.setattr(cls, "backward", counted)
        net(x)
        dx = net.backward(g)
        grads[fused] = [dx] + [p.grad.copy() for p in net.parameters()]
        assert len(calls) == (2 if fused else 4)          # the two in the dense block; and the conv block's two
        monkeypatch.undo()
    for a, b in zip(grads[True], grads[False]):
        np.testing.assert_array_equal(a, b)


def test_chain_backward_fuses_inside_sequential_and_keeps_input_grad(monkeypatch):
    """Sequential goes back through chain_backward too; a pair at the very front is not fused
    (the first layer decides on input_grad), and a Flatten after them goes back as usual."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    seq = nn.Sequential(nn.Sigmoid(), nn.MaxPool2d(2), nn.ReLU(), nn.MaxPool2d(2))
    y = seq(z)
    g = rng.standard_normal(y.shape).astype(np.float32)
    layers = list(seq)
    expected = g
    for m in reversed(layers):
        expected = m.backward(expected)
    relu_calls = []

    def counted(self, *a, original=nn.ReLU.backward, **k):
        relu_calls.append(1)
        return original(self, *a, **k)
    monkeypatch.setattr(nn.ReLU, "backward", counted)
    np.testing.assert_array_equal(seq.backward(g), expected)
    assert relu_calls == []                       # ReLU went back inside the last pool's step
    assert seq.backward(g, input_grad=False) is None
    flat = nn.Flatten()
    flat(y)
    np.testing.assert_array_equal(chain_backward(layers + [flat], g.reshape(2, -1)), expected)


@pytest.mark.parametrize("variant", ["classic", "d2l"])
def test_lenet_gradients_still_match_torch_with_the_one_step_path(variant):
    """The network's gradients through the fused pairs against torch's autograd (max pooling,
    so d2l is built with pool="max" here)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    net = ln.LeNet(variant=variant, pool="max", seed=0).double()
    x = rng.random((4, 1, 28, 28))
    g = rng.standard_normal((4, 10))
    net(x)
    dx = net.backward(g)
    tnet = torch.nn.Sequential(*[m for m in _torch_layers(torch, net)])
    tx = torch.tensor(x, requires_grad=True)
    tnet(tx).backward(torch.tensor(g))
    np.testing.assert_allclose(dx, to_np(tx.grad.numpy()), rtol=1e-9, atol=1e-12)


def _torch_layers(torch, net):
    """The torch twin of ``net`` (its layers in the book's order, its weights)."""
    out = []
    for _, m in net.named_layers():
        if isinstance(m, nn.Flatten):
            out.append(torch.nn.Flatten())
        elif isinstance(m, nn.Conv2d):
            t = torch.nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, padding=m.padding).double()
            t.weight.data = torch.tensor(m.weight.data)
            t.bias.data = torch.tensor(m.bias.data)
            out.append(t)
        elif isinstance(m, nn.Linear):
            t = torch.nn.Linear(m.in_features, m.out_features).double()
            t.weight.data = torch.tensor(m.weight.data)
            t.bias.data = torch.tensor(m.bias.data)
            out.append(t)
        elif isinstance(m, nn.Sigmoid):
            out.append(torch.nn.Sigmoid())
        elif isinstance(m, nn.ReLU):
            out.append(torch.nn.ReLU())
        else:
            out.append(torch.nn.MaxPool2d(m.kernel_size, m.stride))
    return out


class LoggedSigmoid(nn.Sigmoid):
    """Overrides backward alone: counts its calls (reset by the test that reads them)."""
    calls = 0

    def backward(self, grad_out, input_grad=True):
        type(self).calls += 1
        return super().backward(grad_out, input_grad)


class HalfSigmoid(nn.Sigmoid):
    """Overrides grad_from_output (which backward calls), not local_derivative."""
    @staticmethod
    def grad_from_output(grad_out, y):
        return nn.Sigmoid.grad_from_output(grad_out, y) / 2


class HalfBoth(HalfSigmoid):
    """Overrides both derivatives alike."""
    def local_derivative(self, dtype=None):
        return super().local_derivative(dtype) / 2


@pytest.mark.parametrize("pool_cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_an_activation_that_overrides_backward_keeps_it(pool_cls):
    """A subclass that overrides backward alone must see its backward run: the pool declines.
    Max pooling's joint step takes the derivative from grad_from_output, so it uses an
    override of that; average pooling's takes local_derivative, so it declines an override
    of grad_from_output alone (backward calls it) and uses one of both."""
    z = np.random.default_rng(5).standard_normal((2, 3, 4, 4)).astype(np.float32)
    g = np.ones((2, 3, 2, 2), dtype=np.float32)
    LoggedSigmoid.calls = 0
    seq = nn.Sequential(nn.ReLU(), LoggedSigmoid(), pool_cls(2))
    seq(z)
    seq.backward(g)
    assert LoggedSigmoid.calls == 1
    act, pool = HalfSigmoid(), pool_cls(2)
    pool(act(z))
    if pool_cls is nn.AvgPool2d:
        assert backward_through(pool, act, g) is None
        act, pool = HalfBoth(), pool_cls(2)
        pool(act(z))
    np.testing.assert_array_equal(backward_through(pool, act, g), act.backward(pool.backward(g)))


@pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low
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


# -- AvgPool2d: "sums", and the backward of an activation and the average pooling in one step --
@pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low
@given(n=st.integers(1, 3), c=st.integers(1, 3), k=st.integers(1, 4), s=st.integers(1, 4),
       h=st.integers(4, 11), layout=st.sampled_from(["nchw", "cnhw", "nhcw"]), seed=st.integers(0, 2**16),
       data=st.data())
def test_avgpool_sums_matches_reference(xp, n, c, k, s, h, layout, seed, data):
    """Forward within the rounding of a sum of KH*KW terms (the two forms add them in another
    order), backward bit for bit (the same shares, added in the same kernel order), and the
    input gradient laid out in memory as the input (the layer before reads it as it wrote it)."""
    p = data.draw(st.integers(0, k // 2))
    rng = np.random.default_rng(seed)
    perm = {"nchw": (0, 1, 2, 3), "cnhw": (1, 0, 2, 3), "nhcw": (0, 2, 1, 3)}[layout]
    x = rng.standard_normal((n, c, h, h + 2)).astype(np.float32)
    x = np.ascontiguousarray(x.transpose(perm)).transpose(np.argsort(perm))
    ref, fast = nn.AvgPool2d(k, s, p, impl="reference"), nn.AvgPool2d(k, s, p, impl="fast")
    y_ref, y = to_np(ref(xp.asarray(x))), to_np(fast(xp.asarray(x)))
    assert y.dtype == np.float32 and y.shape == y_ref.shape
    bound = 2 * sum_bound(k * k, to_np(nn.AvgPool2d(k, s, p, impl="reference")(xp.asarray(np.abs(x)))))
    assert (np.abs(y.astype(np.float64) - y_ref) <= bound + 4 * 2.0**-24 * np.abs(y_ref)).all()
    g = rng.standard_normal(y.shape).astype(np.float32)
    g.reshape(-1)[:2] = [-0.0, np.nan][:g.size]    # the zero's sign and NaN come out as the plain form's
    gx, gx_ref = to_np(fast.backward(xp.asarray(g))), to_np(ref.backward(xp.asarray(g)))
    np.testing.assert_array_equal(gx, gx_ref)
    np.testing.assert_array_equal(np.signbit(gx), np.signbit(gx_ref))
    if xp is np:
        assert fast.backward(g, input_grad=False) is None
        big = [ax for ax in range(4) if x.shape[ax] > 1]
        assert sorted(big, key=lambda ax: -gx.strides[ax]) == sorted(big, key=lambda ax: -x.strides[ax])


def test_auto_runs_the_cpu_forms_on_the_cpu_and_fused_on_a_gpu(xp):
    """"auto" and "fast" run "offsets" and "sums" on the CPU; on a GPU "fused" where the windows
    neither overlap nor reach into padding, else the plain form; "reference" the plain form
    everywhere."""
    x = xp.asarray(np.ones((1, 1, 6, 6), np.float32))
    for cls, cpu in ((nn.MaxPool2d, "offsets"), (nn.AvgPool2d, "sums")):
        for impl in ("auto", "fast"):
            assert cls(2, impl=impl).path_for(x) == (cpu if xp is np else "fused")
            assert cls(3, 2, impl=impl).path_for(x) == (cpu if xp is np else "reference")      # overlapping
            assert cls(3, 3, 1, impl=impl).path_for(x) == (cpu if xp is np else "reference")   # padded
            assert cls(2, 3, impl=impl).path_for(x) == (cpu if xp is np else "fused")          # gaps between
        assert cls(2, impl="reference").path_for(x) == "reference"
        assert cls(2, impl="fused").path_for(x) == "fused"
    assert nn.AvgPool2d.IMPLS == ("auto", "fast", "reference", "sums", "fused")
    with pytest.raises(ValueError, match="impl"):
        nn.AvgPool2d(2, impl="offsets")
    with pytest.raises(ValueError, match="impl"):
        nn.MaxPool2d(2, impl="sums")


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
def test_fused_refuses_windows_that_overlap_or_reach_into_padding(cls):
    for k, s, p in ((3, 2, 0), (2, 1, 0), (3, 3, 1), ((2, 3), (2, 2), 0)):
        with pytest.raises(ValueError, match=r"impl='fused' needs windows that do not overlap and no padding"):
            cls(k, s, p, impl="fused")

@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(n=st.integers(1, 3), c=st.integers(1, 4), k=st.integers(1, 3), oh=st.integers(1, 5), ow=st.integers(1, 5),
       layout=st.sampled_from(["nchw", "cnhw", "nhcw"]), special=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
def test_avg_one_step_equals_two_steps_bit_for_bit(name, n, c, k, oh, ow, layout, special, dtype, seed):
    """Average pooling after an activation, windows tiling the input: the activation's derivative
    times each pixel's share in place is the two backwards' result bit for bit, signs of zero,
    infinities and NaN included, laid out as the activation's input."""
    rng = np.random.default_rng(seed)
    shape = (n, c, oh * k, ow * k)
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    if special:
        z.reshape(-1)[rng.integers(0, z.size, 3)] = rng.choice([np.inf, -np.inf, -0.0, 0.0, 40.0], 3)
    perm = {"nchw": (0, 1, 2, 3), "cnhw": (1, 0, 2, 3), "nhcw": (0, 2, 1, 3)}[layout]
    z = np.ascontiguousarray(z.transpose(perm)).transpose(np.argsort(perm))
    act, pool = ACTIVATIONS[name](), nn.AvgPool2d(k)
    y = pool(act(z))
    g = rng.standard_normal(y.shape).astype(dtype)
    if special:
        g.reshape(-1)[rng.integers(0, g.size, 3)] = rng.choice([np.nan, np.inf, -np.inf, -0.0], 3)
    with np.errstate(invalid="ignore"):            # inf * 0 is NaN, in both forms alike
        fused = backward_through(pool, act, g)
        assert fused is not None
        expected = two_step(act, pool, g)
        again = backward_through(pool, act, g)
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_array_equal(np.signbit(fused), np.signbit(expected))
    np.testing.assert_array_equal(again, fused)
    assert fused.shape == z.shape and fused.dtype == z.dtype
    big = [ax for ax in range(4) if z.shape[ax] > 1]
    assert sorted(big, key=lambda ax: -fused.strides[ax]) == sorted(big, key=lambda ax: -z.strides[ax])


@pytest.mark.parametrize("case", ["overlap", "padding", "leftover", "stride_gt_kernel", "reference", "no_forward"])
def test_avg_declines_where_the_two_steps_are_needed(case):
    rng = np.random.default_rng(6)
    pool = {"overlap": nn.AvgPool2d(3, 2), "padding": nn.AvgPool2d(2, 2, 1), "stride_gt_kernel": nn.AvgPool2d(2, 3),
            "reference": nn.AvgPool2d(2, impl="reference")}.get(case, nn.AvgPool2d(2))
    z = rng.standard_normal((2, 3, 7 if case == "leftover" else 8, 8)).astype(np.float32)
    act = nn.Sigmoid()
    y = pool(act(z))
    g = rng.standard_normal(y.shape).astype(np.float32)
    if case == "no_forward":
        act.clear_cache()                          # the activation has nothing to go back from
    assert backward_through(pool, act, g) is None
    if case != "no_forward":
        assert two_step(act, pool, g).shape == z.shape
