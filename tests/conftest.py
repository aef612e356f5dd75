"""Shared test machinery: Hypothesis profiles, the backend fixture, helpers.

Device "cuda" is real CuPy where a GPU is present. Elsewhere it is the NumPy-backed
stand-in of ``cupy_standin.py``, registered here for the whole session, so every test
parametrised over ``xp`` runs the CuPy code paths on every machine.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from lenet_np import backend

from . import cupy_standin

# Reproducible CI: derandomised examples, no per-example deadline (2 shared cores).
settings.register_profile("ci", derandomize=True, deadline=None, max_examples=25, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", deadline=None, max_examples=100)
# make test-numerics-low: the same derandomised examples, fewer of them (the second pass checks
# the bounds at another rounding, not more shapes), so make test stays within its time
settings.register_profile("numerics-low", derandomize=True, deadline=None, max_examples=8, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
STANDIN_EXAMPLES = 8       # drawn cases of a test on the CuPy stand-in, where it has its own (tests/nn/test_layers.py)

REAL_GPU = backend.cupy_available()
if not REAL_GPU:
    backend.use_cuda_module(cupy_standin.module)

def simd_level() -> str:
    """The SIMD level NumPy dispatches to and OpenBLAS's kernels: they set the rounding of
    every float32 sum (make test-numerics-low holds them one level lower)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:                                  # NumPy 1.x
        from numpy.core._multiarray_umath import __cpu_features__ as feats
    level = next((lv for lv in ("X86_V4", "X86_V3", "X86_V2") if feats.get(lv)), "baseline")
    from threadpoolctl import threadpool_info
    blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '?')}" for i in threadpool_info()) or "none loaded"
    return f"NumPy {level}, BLAS {blas}"


def pytest_report_header(config):
    return f"numerics: {simd_level()}"


requires_gpu = pytest.mark.skipif(not REAL_GPU, reason="needs CuPy and a CUDA device (the stand-in runs elsewhere)")


@pytest.fixture(params=["numpy", "cupy"], scope="session")
def xp(request):
    """The array module under test: numpy, and cupy (real on a GPU, else the stand-in)."""
    return np if request.param == "numpy" else backend.require_cupy()


def tie_free(rng, shape, low=-1.0, high=1.0, dtype=np.float64):
    """Distinct values, evenly spaced and shuffled: no ties and no value near a kink
    closer than the spacing, so finite differences never cross a max or a ReLU corner."""
    n = int(np.prod(shape))
    step = (high - low) / n
    values = low + (np.arange(n) + 0.5) * step     # bin midpoints: 0 is a midpoint or an edge
    if low < 0 < high:
        values += step / 4                          # so every value is >= step/4 away from 0
    return rng.permutation(values).reshape(shape).astype(dtype)


def hide_data(monkeypatch, tmp_path):
    """No Fashion-MNIST anywhere on the search path (as on a fresh machine)."""
    from lenet_np import data
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("XDG_CACHE_HOME", data.DATA_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "no-system-data")


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """Without --data-dir the tools find no data set (random images), as on a fresh machine."""
    hide_data(monkeypatch, tmp_path)


def to_np(a):
    return backend.as_numpy(a)
