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
    saved = [to_np(a).copy() for a in loss_fn.saved()]
    loss_fn.backward()
    np.testing.assert_array_equal(to_np(z), z0)
    for before, after in zip(saved, loss_fn.saved()):
        np.testing.assert_array_equal(to_np(after), before)


def test_bad_labels_on_a_gpu_are_reported_by_check(xp):
    """On a GPU the forward cannot raise without waiting for the device: it keeps the smallest
    and largest label on the device, and check() (or calling the loss) raises the error the
    CPU raises at once, with the range of every batch since the last check."""
    if xp is np:
        pytest.skip("the CPU raises in the forward")
    z = xp.zeros((3, 4), dtype=np.float32)
    loss_fn = nn.CrossEntropyLoss()
    for labels in ([0, 1, 2], [3, 7, 1], [2, 2, 2]):
        loss_fn.forward(z, xp.asarray(np.array(labels)))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\), got values from 0 to 7"):
        loss_fn.check()
    loss_fn.check()                                         # settled: nothing left to report
    loss_fn.forward(z, xp.asarray(np.array([-2, 0, 3], dtype=np.int8)))   # any integer dtype
    with pytest.raises(ValueError, match="from -2 to 3"):
        loss_fn.check()
    for _ in range(70):                                     # many batches, no check between
        loss_fn.forward(z, xp.asarray(np.array([0, 3, 1])))
    loss_fn.check()
    loss_fn.forward(z, xp.asarray(np.array([0, 3, 1])))
    loss_fn.forward(xp.zeros((3, 2), dtype=np.float32), xp.asarray(np.array([0, 1, 1])))   # another K
    with pytest.raises(ValueError, match=r"\[0, 2\), got values from 0 to 3"):
        loss_fn(xp.zeros((3, 2), dtype=np.float32), xp.asarray(np.array([0, 3, 1])))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_and_gradient_keep_the_logits_dtype(xp, dtype):
    """Also for a grad_out that is a NumPy float64 (no silent float64 for float32 logits)."""
    z = xp.asarray(np.random.default_rng(0).standard_normal((5, 3)).astype(dtype))
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn.forward(z, xp.asarray(np.array([0, 2, 1, 1, 0])))
    assert loss.dtype == dtype
    for grad_out in (1.0, np.float64(2.0), 3):
        assert loss_fn.backward(grad_out).dtype == dtype
    np.testing.assert_allclose(to_np(loss_fn.backward(np.float64(2.0))), 2 * to_np(loss_fn.backward()),
                               rtol=1e-6 if dtype == np.float32 else 1e-15)


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
