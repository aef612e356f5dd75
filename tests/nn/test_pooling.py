"""MaxPool2d and AvgPool2d (lenet_np/nn/pooling.py): routing, ties, NaN and -inf windows."""

from __future__ import annotations

import numpy as np
import pytest

from lenet_np import nn

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low


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


# -- against torch where routing is delicate: saturated ties, NaN, windows of -inf ------------------
@pytest.fixture(scope="module")
def torch_ref():
    pytest.importorskip("torch", reason="the reference tests need torch==2.13.0 (pip install -e '.[test]')")
    from .. import torch_ref
    return torch_ref


@pytest.mark.parametrize("impl", ["reference", "offsets"])
def test_maxpool2d_saturated_sigmoid_ties(torch_ref, xp, impl):
    """Sigmoid outputs round to exactly 1.0 in float32: whole windows tie."""
    x = np.random.default_rng(0).uniform(15, 40, (4, 3, 8, 8)).astype(np.float32)
    x = nn.Sigmoid()(x)
    assert (x == 1.0).mean() > 0.5
    F = torch_ref.torch.nn.functional
    for k, s in [(2, 2), (3, 1), (3, 2)]:
        torch_ref.run_both(nn.MaxPool2d(k, s, impl=impl), lambda t, k=k, s=s: F.max_pool2d(t, k, s), x, xp)


@pytest.mark.parametrize("impl", ["reference", "offsets"])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_maxpool2d_nan_windows_route_as_torch(torch_ref, xp, impl, k, s, p):
    """A window holding NaN outputs NaN and sends its gradient to its last NaN, on both backends."""
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, 2, 6, 7)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan             # some windows hold one NaN, some several
    F = torch_ref.torch.nn.functional
    torch_ref.run_both(nn.MaxPool2d(k, s, p, impl=impl), lambda t: F.max_pool2d(t, k, s, p), x, xp)


@pytest.mark.parametrize("k,s", [(2, 2), (3, 3), ((2, 3), (3, 4))])
def test_maxpool2d_fused_routes_nan_and_ties_as_torch(torch_ref, xp, k, s):
    """The GPU's one-kernel form: NaN (one or several in a window), ties of small integers, and
    pixels outside every window (gaps where the stride is larger than the kernel)."""
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, (2, 3, 9, 11)).astype(np.float32)
    x[rng.random(x.shape) < 0.15] = np.nan
    F = torch_ref.torch.nn.functional
    torch_ref.run_both(nn.MaxPool2d(k, s, impl="fused"), lambda t: F.max_pool2d(t, k, s), x, xp)


@pytest.mark.parametrize("impl", ["reference", "offsets"])
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 1, 1), (3, 3, 1), ((3, 2), 1, (1, 0))])
def test_maxpool2d_windows_of_minus_inf_route_to_a_real_pixel(torch_ref, xp, impl, k, s, p):
    """Padded windows whose real pixels are all -inf: the gradient goes to the first real
    pixel, as torch's, never into the padding where it would be lost."""
    x = np.full((1, 2, 4, 5), -np.inf, dtype=np.float32)
    x[0, 1, 2:, 3:] = 1.0                              # channel 1: some windows hold a real maximum
    F = torch_ref.torch.nn.functional
    torch_ref.run_both(nn.MaxPool2d(k, s, p, impl=impl), lambda t: F.max_pool2d(t, k, s, p), x, xp)
