"""The finite-difference checker itself (lenet_np/gradcheck.py): it catches a wrong backward,
float32 is too coarse for it, its error measure, and it leaves a network as it found it."""

from __future__ import annotations

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import nn
from lenet_np.gradcheck import rel_error

from .numerics import FD_TOL


def test_gradcheck_catches_a_wrong_backward():
    """A check that cannot fail proves nothing: break a backward and watch it fail."""

    class Broken(nn.Sigmoid):
        def backward(self, grad_out, input_grad=True):
            return super().backward(grad_out) * 1.001

    x = np.random.default_rng(0).standard_normal((3, 4))
    assert max(ln.gradcheck(Broken(), x).values()) > 1e-4
    assert max(ln.gradcheck(nn.Sigmoid(), x).values()) < FD_TOL


def test_float32_is_too_coarse_for_finite_differences():
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(2, 3, 3, rng=rng)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    err32 = max(ln.gradcheck(layer, x, eps=1e-3).values())
    err64 = max(ln.gradcheck(layer.double(), x.astype(np.float64)).values())
    assert err64 < FD_TOL < err32


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
