"""Torch as the reference: the device to compare on, and one layer run through both sides.

Import it after ``pytest.importorskip("torch")``. Torch runs in plain IEEE float32 on every
device (``benchmarks.torch_models.ieee_float32``: no TF32), as lenet_np does."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.torch_models import ieee_float32

from .conftest import to_np
from .numerics import function_floor

ieee_float32()
torch.set_num_threads(2)


def torch_device(xp) -> str:
    """"cuda" where the arrays under test are CuPy's on a real GPU, else "cpu"."""
    return "cuda" if xp is not np and torch.cuda.is_available() else "cpu"


def T(a, device="cpu", grad=True):
    return torch.tensor(to_np(a), device=device, requires_grad=grad)


def assert_close(ours, theirs, rtol=1e-5, what=""):
    """Normwise max|a - b| <= rtol * max|b|, with NaN and +-inf in the same places (for
    float64 runs, whose agreement is far inside any float32 bound)."""
    a = to_np(ours).astype(np.float64)
    b = theirs.detach().cpu().numpy().astype(np.float64) if hasattr(theirs, "detach") else np.asarray(theirs)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    finite = np.isfinite(b)
    np.testing.assert_array_equal(a[~finite], b[~finite], err_msg=f"{what}: NaN or inf differ")
    a, b = a[finite], b[finite]
    scale = max(np.abs(b).max(), 1e-30) if b.size else 1.0
    err = np.abs(a - b).max() / scale if b.size else 0.0
    assert err <= rtol, f"{what}: normwise error {err:.2e} > {rtol:.0e}"


def run_both(layer, torch_fn, x, xp, params=(), what=""):
    """Forward and backward through ``layer`` and through torch_fn(x, *params), in float32,
    with one random output gradient; every result of both sides within the float64 floor of
    torch_fn (tests/numerics.py). torch's own float32 result is a cross-check of the bound."""
    dev = torch_device(xp)
    y = layer(xp.asarray(x))
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(xp.asarray(g))
    tx = T(x, dev)
    tparams = [T(p.data, dev) for p in params]
    ty = torch_fn(tx, *tparams)
    ty.backward(torch.tensor(g, device=dev))
    assert y.dtype == np.float32 and gx.dtype == np.float32
    floor = function_floor(torch_fn, [to_np(x), *(to_np(p.data) for p in params)], g, device=dev)
    for name, ours, theirs, key in [("forward", y, ty, "out"), ("input grad", gx, tx.grad, "grad:0"),
                                    *((f"param {i} grad", p.grad, tp.grad, f"grad:{i + 1}")
                                      for i, (p, tp) in enumerate(zip(params, tparams)))]:
        floor.check(ours, key, what=f"{what}lenet_np {name}")
        floor.check(theirs, key, what=f"{what}torch float32 {name} (cross-check of the bound)")
