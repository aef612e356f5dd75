"""im2col and col2im (lenet_np/nn/im2col.py): adjoint pairs, the output size."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks.ablation import col2im_wide
from lenet_np.nn.im2col import col2im, col2im_gather, conv_output_size, conv_transpose_wide, im2col, im2col_wide

from ..conftest import to_np

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low


@pytest.mark.parametrize("back", [col2im, col2im_gather])
@given(n=st.integers(1, 3), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
       k=st.integers(1, 4), s=st.integers(1, 3), p=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_col2im_is_the_adjoint_of_im2col(xp, back, n, c, h, w, k, s, p, seed):
    """Both forms: the loop of strided additions and the gather (the GPU's)."""
    if h + 2 * p < k or w + 2 * p < k:
        return
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((n, c, h, w)))
    cols = im2col(x, k, k, s, s, p, p)
    assert cols.shape == (n, c, k, k, conv_output_size(h, k, s, p), conv_output_size(w, k, s, p))
    r = xp.asarray(rng.standard_normal(cols.shape))
    lhs = float((cols * r).sum())
    rhs = float((x * back(r, x.shape, s, s, p, p)).sum())
    assert lhs == pytest.approx(rhs, rel=1e-10, abs=1e-10)


@given(lead=st.sampled_from([(), (2,), (2, 3)]), h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 5),
       kw=st.integers(1, 5), sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 6),
       pw=st.integers(0, 6), transposed=st.booleans(), seed=st.integers(0, 2**16))
def test_col2im_gather_is_col2im(xp, lead, h, w, kh, kw, sh, sw, ph, pw, transposed, seed):
    """The gather sums what the loop adds, the same value into every pixel (also where the
    padding is wider than the kernel, or a stride skips pixels), for any leading axes and
    columns that are a transposed view (as conv's backward passes them)."""
    if h + 2 * ph < kh or w + 2 * pw < kw:
        return
    rng = np.random.default_rng(seed)
    oh, ow = conv_output_size(h, kh, sh, ph), conv_output_size(w, kw, sw, pw)
    if transposed:                                   # (lead..., KH, KW, ...) read from (KH, KW, lead..., ...)
        order = (*range(2, 2 + len(lead)), 0, 1, len(lead) + 2, len(lead) + 3)
        stored = rng.standard_normal((kh, kw, *lead, oh, ow))
        cols, dev_cols = stored.transpose(order), xp.asarray(stored).transpose(order)
    else:
        cols = rng.standard_normal((*lead, kh, kw, oh, ow))
        dev_cols = xp.asarray(cols)
    expected = col2im(cols, (*lead, h, w), sh, sw, ph, pw)
    got = col2im_gather(dev_cols, (*lead, h, w), sh, sw, ph, pw)
    assert got.shape == expected.shape
    np.testing.assert_allclose(to_np(got), expected, rtol=1e-13, atol=1e-13)


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
