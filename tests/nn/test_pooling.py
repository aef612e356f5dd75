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
