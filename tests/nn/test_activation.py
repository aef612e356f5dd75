"""Sigmoid and ReLU (lenet_np/nn/activation.py): stable at the extremes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from lenet_np import nn


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
