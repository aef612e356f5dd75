"""Every backward against central finite differences in float64 (Hypothesis shapes)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lenet_np as ln
from lenet_np import nn
from lenet_np.gradcheck import gradcheck_steps, rel_error

from .conftest import tie_free

TOL = 1e-6


def check(module, x, **kw):
    errors = ln.gradcheck(module, x, **kw)
    assert errors, "gradcheck checked nothing"
    assert max(errors.values()) < TOL, errors
    return errors


@st.composite
def conv_case(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 9))
    w = draw(st.integers(max(1, kw - 2 * pw), 9))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), o=draw(st.integers(1, 3)),
                kernel=(kh, kw), stride=(sh, sw), padding=(ph, pw), hw=(h, w),
                bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("impl", ["reference", "fast"])
@given(case=conv_case())
def test_conv2d(xp, impl, case):
    rng = np.random.default_rng(case["seed"])
    layer = nn.Conv2d(case["c"], case["o"], case["kernel"], case["stride"], case["padding"],
                      bias=case["bias"], rng=rng, impl=impl).to(dtype=np.float64)
    layer.to("cuda" if xp is not np else "cpu")
    x = xp.asarray(rng.standard_normal((case["n"], case["c"], *case["hw"])))
    check(layer, x)


@st.composite
def pool_case(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h = draw(st.integers(max(1, kh - 2 * ph), 8))
    w = draw(st.integers(max(1, kw - 2 * pw), 8))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 3)), kernel=(kh, kw),
                stride=(draw(st.integers(1, 3)), draw(st.integers(1, 3))), padding=(ph, pw),
                hw=(h, w), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("impl", ["reference", "fast"])
@given(case=pool_case())
def test_maxpool2d(xp, impl, case):
    rng = np.random.default_rng(case["seed"])
    layer = nn.MaxPool2d(case["kernel"], case["stride"], case["padding"], impl=impl)
    # spacing of the tie-free values is far above the finite-difference step
    x = xp.asarray(tie_free(rng, (case["n"], case["c"], *case["hw"])))
    check(layer, x)


@given(case=pool_case())
def test_avgpool2d(xp, case):
    rng = np.random.default_rng(case["seed"])
    layer = nn.AvgPool2d(case["kernel"], case["stride"], case["padding"])
    check(layer, xp.asarray(rng.standard_normal((case["n"], case["c"], *case["hw"]))))


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)


@given(shape=shapes, seed=st.integers(0, 2**16), scale=st.sampled_from([1.0, 5.0, 20.0]))
def test_sigmoid(xp, shape, seed, scale):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    check(nn.Sigmoid(), xp.asarray(x))


@given(shape=shapes, seed=st.integers(0, 2**16))
def test_relu(xp, shape, seed):
    check(nn.ReLU(), xp.asarray(tie_free(np.random.default_rng(seed), shape)))


@given(n=st.integers(1, 4), fin=st.integers(1, 12), fout=st.integers(1, 12), bias=st.booleans(),
       seed=st.integers(0, 2**16))
def test_linear(xp, n, fin, fout, bias, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fin, fout, bias=bias, rng=rng).double().to("cuda" if xp is not np else "cpu")
    check(layer, xp.asarray(rng.standard_normal((n, fin))))


@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4).map(tuple), seed=st.integers(0, 2**16))
def test_flatten(xp, shape, seed):
    check(nn.Flatten(), xp.asarray(np.random.default_rng(seed).standard_normal(shape)))


@given(n=st.integers(1, 6), k=st.integers(2, 10), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1.0, 10.0, 50.0]))
def test_cross_entropy(xp, n, k, seed, scale):
    rng = np.random.default_rng(seed)
    logits = xp.asarray(rng.standard_normal((n, k)) * scale)
    labels = xp.asarray(rng.integers(0, k, n))
    # Flatten of an (N, K) array is the identity: the check is on the loss alone
    check(nn.Flatten(), logits, loss_fn=nn.CrossEntropyLoss(), labels=labels)


@pytest.mark.parametrize("activation,pool", [("sigmoid", "max"), ("relu", "max"), ("sigmoid", "avg")])
@pytest.mark.parametrize("with_loss", [False, True])
def test_lenet(xp, activation, pool, with_loss):
    rng = np.random.default_rng(7)
    net = ln.LeNet(activation=activation, pool=pool, seed=3).double()
    net.to("cuda" if xp is not np else "cpu")
    x = xp.asarray(tie_free(rng, (2, 1, 28, 28), 0.0, 1.0))
    kw = dict(loss_fn=nn.CrossEntropyLoss(), labels=xp.asarray([3, 8])) if with_loss else {}
    if pool == "avg" and activation == "sigmoid":
        # smooth everywhere: one step. Input gradients of the whole net are ~1e-5, so the
        # step must be large enough that rounding (eps_machine * |L| / h) stays below them
        check(net, x, eps=3e-4, max_elements=25, **kw)
    else:
        # max pooling and ReLU put kinks near some perturbations whatever the input, and
        # no single step suits every element: keep, per element, the step that agrees best
        # (a wrong backward disagrees at every step; see docs/gradient-check.md)
        errors = gradcheck_steps(net, x, max_elements=25, **kw)
        assert max(errors.values()) < TOL, errors


def test_gradcheck_catches_a_wrong_backward():
    """A check that cannot fail proves nothing: break a backward and watch it fail."""

    class Broken(nn.Sigmoid):
        def backward(self, grad_out, input_grad=True):
            return super().backward(grad_out) * 1.001

    x = np.random.default_rng(0).standard_normal((3, 4))
    assert max(ln.gradcheck(Broken(), x).values()) > 1e-4
    assert max(ln.gradcheck(nn.Sigmoid(), x).values()) < TOL


def test_float32_is_too_coarse_for_finite_differences():
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(2, 3, 3, rng=rng)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    err32 = max(ln.gradcheck(layer, x, eps=1e-3).values())
    err64 = max(ln.gradcheck(layer.double(), x.astype(np.float64)).values())
    assert err64 < TOL < err32


def test_rel_error():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([0.0], [0.0]) == 0.0
    assert rel_error([1.0, 0.0], [1.0, 0.5]) == pytest.approx(0.5)


def test_gradcheck_leaves_batch_norm_running_statistics_as_it_found_them(xp):
    """Each finite-difference forward of a BatchNorm in training updates its running statistics;
    gradcheck puts them back, so a trained network checked this way evaluates as before."""
    bn = nn.BatchNorm2d(3).double().to("cuda" if xp is not np else "cpu")
    x = xp.asarray(np.random.default_rng(7).standard_normal((4, 3, 5, 5)) * 3 + 1)   # not gradcheck's stream
    bn(x)                                                        # one real step: stats away from the defaults
    before = {k: ln.as_numpy(v).copy() for k, v in bn.state_dict().items()}
    errors = ln.gradcheck(bn, x, max_elements=10)
    assert max(errors.values()) < 1e-6
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(ln.as_numpy(v), before[k], err_msg=k)
