"""CrossEntropyLoss (lenet_np/nn/loss.py): finite differences, torch, stability, bad labels."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lenet_np as ln
from lenet_np import nn

from ..conftest import to_np
from ..numerics import FD_TOL, function_floor

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low


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


def test_loss_backward_leaves_logits_and_cache_alone(xp):
    z = xp.asarray(np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32))
    z0 = to_np(z).copy()
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(z, xp.asarray(np.array([0, 1, 4, 2])))
    probs = to_np(loss_fn.saved().probs).copy()
    loss_fn.backward()
    np.testing.assert_array_equal(to_np(z), z0)
    np.testing.assert_array_equal(to_np(loss_fn.saved().probs), probs)


@given(n=st.integers(1, 6), k=st.integers(2, 10), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1.0, 10.0, 50.0]))
def test_cross_entropy_matches_finite_differences(xp, n, k, seed, scale):
    """dL/dz against central differences. L = logsumexp(z) - z_y is computed from numbers as
    large as max|z|, so each L carries a rounding error of a few u * max|z|, and the difference
    quotient u * max|z| / h; where a row saturates (its label the clear maximum) the true
    gradient can be smaller than that. The bound is FD_TOL normwise plus that rounding term
    (and h^2 for the truncation: the loss's third derivatives are below 1)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, k)) * scale
    labels = xp.asarray(rng.integers(0, k, n))
    h = 1e-6
    # Flatten of an (N, K) array is the identity: the check is on the loss alone
    details = ln.gradcheck(nn.Flatten(), xp.asarray(z), eps=h, loss_fn=nn.CrossEntropyLoss(), labels=labels,
                           return_details=True)
    _, analytic, numeric = details["input"]
    a, fd = to_np(analytic), to_np(numeric)
    rounding = 8 * np.finfo(np.float64).eps / 2 * (np.abs(z).max() + np.log(k)) / h + h**2
    assert np.abs(a - fd).max() <= FD_TOL * np.abs(a).max() + rounding, (np.abs(a - fd).max(), rounding)


@pytest.fixture(scope="module")
def torch_ref():
    pytest.importorskip("torch", reason="the reference tests need torch==2.13.0 (pip install -e '.[test]')")
    from .. import torch_ref
    return torch_ref


@pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low
@given(n=st.integers(1, 16), k=st.integers(2, 12), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1.0, 30.0, 1000.0]))
def test_cross_entropy_matches_torch(torch_ref, xp, n, k, seed, scale):
    torch, F = torch_ref.torch, torch_ref.torch.nn.functional
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    y = rng.integers(0, k, n)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(xp.asarray(z), xp.asarray(y))
    grad = loss_fn.backward()
    tz = torch_ref.T(z)
    tl = F.cross_entropy(tz, torch.tensor(y))
    tl.backward()
    assert isinstance(loss, float)
    floor = function_floor(lambda t: F.cross_entropy(t, torch.tensor(y)), [z])
    for what, ours, theirs, key in [("loss", loss, tl, "out"), ("logit grad", grad, tz.grad, "grad:0")]:
        floor.check(ours, key, what=f"lenet_np {what}")
        floor.check(theirs, key, what=f"torch float32 {what} (cross-check of the bound)")
