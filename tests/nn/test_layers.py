"""The four checks every layer passes, driven by the one table of tests/nn/cases.py.

1. backward against central finite differences in float64 (Hypothesis shapes);
2. forward and backward against torch in float32, within the float64 floor of tests/numerics.py;
3. nothing written into the input, the incoming gradient, the output or what forward saved;
4. a gradient of the wrong shape, or a backward before any forward, is one clear error.
Each on NumPy and on CuPy (the stand-in where no GPU is present: the ``xp`` fixture).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lenet_np import backend, nn

from ..conftest import REAL_GPU, STANDIN_EXAMPLES, to_np
from ..numerics import assert_gradcheck
from .cases import LAYERS, NETWORKS, build

IDS = [c.name for c in LAYERS]


# The stand-in computes with NumPy: on it the drawn cases check CuPy's API and the GPU's forms,
# not another rounding, and fewer of them do (a real GPU gets the profile's full count).
ON_CUPY = settings(max_examples=settings.default.max_examples if REAL_GPU
                   else min(settings.default.max_examples, STANDIN_EXAMPLES))


# -- 1. finite differences ------------------------------------------------------------------
def finite_differences(xp, case, data):
    q = data.draw(case.params, label="params")
    layer, x = build(case, q, xp, np.float64)
    assert_gradcheck(layer, x)


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
@given(data=st.data())
def test_backward_matches_finite_differences(case, data):
    finite_differences(np, case, data)


@pytest.mark.parametrize("case", LAYERS, ids=IDS)
@ON_CUPY
@given(data=st.data())
def test_backward_matches_finite_differences_on_cupy(case, data):
    finite_differences(backend.require_cupy(), case, data)


# -- 2. torch ---------------------------------------------------------------------------------
@pytest.mark.numerics       # run again at a lower SIMD level: make test-numerics-low
@pytest.mark.parametrize("case", LAYERS, ids=IDS)
@given(data=st.data())
def test_forward_and_backward_match_torch(case, data):
    against_torch(np, case, data)


@pytest.mark.numerics
@pytest.mark.parametrize("case", LAYERS, ids=IDS)
@ON_CUPY
@given(data=st.data())
def test_forward_and_backward_match_torch_on_cupy(case, data):
    against_torch(backend.require_cupy(), case, data)


def against_torch(xp, case, data):
    torch = pytest.importorskip("torch", reason="the reference tests need torch==2.13.0 (pip install -e '.[test]')")
    from ..torch_ref import run_both
    q = data.draw(case.params, label="params")
    layer, x = build(case, q, xp)
    if case.ties and data.draw(st.booleans(), label="ties"):     # few distinct values, exact zeros
        rng = np.random.default_rng(q["seed"] + 1)
        x = xp.asarray(rng.integers(-2, 3, x.shape).astype(np.float32))
    params = [p for _, p in layer.named_parameters()]
    run_both(layer, case.torch_fn(torch.nn.functional, layer, q), x, xp, params, what=f"{case.name}: ")


def test_the_reference_runs_in_ieee_float32_not_tf32():
    pytest.importorskip("torch", reason="the reference tests need torch==2.13.0 (pip install -e '.[test]')")
    from benchmarks.torch_models import tf32_flags

    from .. import torch_ref  # noqa: F401  (importing it turns TF32 off)
    assert not any(tf32_flags().values()), tf32_flags()


# -- 3. no writes -----------------------------------------------------------------------------
def saved_arrays(module):
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


def examples():
    """(name, make layer, input shape): every case at its fixed example, and the networks."""
    rows = [(c.name, lambda c=c: build(c, c.example)[0], c.shape(c.example)) for c in LAYERS]
    rows.append(("conv-unpadded", lambda: nn.Conv2d(2, 3, 3, rng=0, impl="reference"), (2, 2, 7, 6)))  # views of x
    return rows + [(name, make, (2, 1, 28, 28)) for name, make in NETWORKS.items()]


EXAMPLES = examples()


@pytest.mark.parametrize("name,make,shape", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_no_layer_writes_into_its_input_output_or_saved_arrays(xp, name, make, shape):
    """On CuPy the strided window views are writable: a write through one would change the
    input. Nothing may change the input, the output, the incoming gradient or what forward
    saved, until backward has finished."""
    rng = np.random.default_rng(0)
    layer = make().to("cuda" if xp is not np else "cpu")
    x = xp.asarray(rng.standard_normal(shape).astype(np.float32))
    x0 = to_np(x).copy()
    y = layer(x)
    kept = [(a, to_np(a).copy()) for a in [y, *saved_arrays(layer)]]
    g = xp.asarray(rng.standard_normal(y.shape).astype(np.float32))
    g0 = to_np(g).copy()
    layer.backward(g)
    np.testing.assert_array_equal(to_np(x), x0, err_msg=f"{name}: the input changed")
    np.testing.assert_array_equal(to_np(g), g0, err_msg=f"{name}: the incoming gradient changed")
    for i, (a, before) in enumerate(kept):
        np.testing.assert_array_equal(to_np(a), before, err_msg=f"{name}: saved array {i} changed")


# -- 4. clear errors --------------------------------------------------------------------------
@pytest.mark.parametrize("name,make,shape", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_backward_of_a_gradient_of_the_wrong_shape_is_a_clear_error(xp, name, make, shape):
    """G must have the shape of the last forward's output: one of another batch size, or one
    that would broadcast against it (batch 1), is named as such instead of broadcasting silently."""
    layer = make().to("cuda" if xp is not np else "cpu")
    x = xp.asarray(np.random.default_rng(0).standard_normal(shape).astype(np.float32))
    out = tuple(layer(x).shape)
    for bad in [(out[0] + 1,) + out[1:], (1,) + out[1:], out[:-1] + (out[-1] + 1,)]:
        with pytest.raises(ValueError, match=r"backward expected grad_out of shape " + re.escape(str(out))):
            layer.backward(xp.ones(bad, dtype=xp.float32))
    with pytest.raises(ValueError, match="backward expected grad_out"):
        layer.backward([[1.0]])
    layer.backward(xp.ones(out, dtype=xp.float32))                  # the right shape still works


BACKWARD_FIRST = [*[(e[0], e[1]) for e in EXAMPLES], ("loss", nn.CrossEntropyLoss),
                  ("sequential", lambda: nn.Sequential(nn.Linear(3, 2), nn.ReLU()))]


@pytest.mark.parametrize("name,make", BACKWARD_FIRST, ids=[c[0] for c in BACKWARD_FIRST])
def test_backward_before_forward_is_one_clear_error(name, make):
    """Every layer has the same guard (Module.saved): a backward before any forward, or after
    the layer moved (its saved record dropped), names the layer and what is wrong."""
    layer = make()
    with pytest.raises(RuntimeError, match=r"backward called before forward"):
        layer.backward(np.ones((2, 3), np.float32))
    assert not layer.has_saved()
