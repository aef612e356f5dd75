"""Finite-difference gradient checking.

For a module f and an input x, take the scalar L = sum(f(x) * r) with a fixed
random r, so that dL/dy = r. Backprop gives dL/dx and dL/dparam; central
differences give, for each checked element u,

    dL/du ~ (L(u + h) - L(u - h)) / (2h)

with an error of order h^2 (truncation) plus eps_machine * |L| / h (rounding).
In float64 (eps ~ 1e-16, h = 1e-6) both are ~1e-10 or smaller; in float32
(eps ~ 1e-7) the rounding term alone is ~0.1: that is why checks run in float64.

The error of a tensor is the normwise relative error

    max_i |analytic_i - numeric_i| / max_i max(|analytic_i|, |numeric_i|)

so a single wrong element shows up as an error of order 1, while entries whose
gradient is ~0 (common deep in a sigmoid network) do not turn rounding noise
into a false alarm.

Functions with kinks (max, ReLU) need inputs away from the kinks: the tests draw
tie-free inputs (a shuffled linspace).
"""

from __future__ import annotations

import numpy as np

from . import backend


def _scalar_loss(module, x, r, loss_fn=None, labels=None):
    y = module(x)
    if loss_fn is not None:
        return float(loss_fn.forward(y, labels))
    xp = backend.get_array_module(y)
    return float(xp.sum(y * r))


def rel_error(analytic, numeric) -> float:
    """Normwise relative error: max|a - n| / max(max|a|, max|n|); 0 when both are 0."""
    a = np.asarray(backend.as_numpy(analytic), dtype=np.float64).ravel()
    n = np.asarray(backend.as_numpy(numeric), dtype=np.float64).ravel()
    if a.size == 0:
        return 0.0
    scale = max(np.abs(a).max(), np.abs(n).max())
    if scale == 0:
        return 0.0
    return float(np.abs(a - n).max() / scale)


def gradcheck(module, x, eps=1e-6, max_elements=None, seed=0, input_grad=True,
              loss_fn=None, labels=None, return_details=False):
    """Compare a module's backward with central finite differences.

    module        any Module; it is run in the dtype of x (use float64, see above)
    x             an input array of that module
    eps           the finite-difference step h
    max_elements  check at most this many elements per tensor (a random sample);
                  None checks every element
    loss_fn       optional loss module (e.g. CrossEntropyLoss) with ``labels``: checks
                  L = loss_fn(module(x), labels) instead of sum(module(x) * r)
    returns       {"input": err, "<param name>": err, ...}, the max relative error
                  per tensor; with return_details=True, {name: (err, analytic, numeric)}
    """
    xp = backend.get_array_module(x)
    rng = np.random.default_rng(seed)
    x = x.copy()

    y = module(x)
    r = xp.asarray(rng.standard_normal(y.shape)).astype(y.dtype)
    module.zero_grad()
    if loss_fn is not None:
        loss_fn.forward(y, labels)
        grad_y = loss_fn.backward()
    else:
        grad_y = r
    grad_x = module.backward(grad_y, input_grad=input_grad)

    tensors = []
    if input_grad:
        tensors.append(("input", x, grad_x))
    for name, p in module.named_parameters():
        tensors.append((name, p.data, p.grad))

    def loss():
        return _scalar_loss(module, x, r, loss_fn, labels)

    results = {}
    for name, arr, grad in tensors:
        if grad is None:
            raise RuntimeError(f"gradcheck: backward produced no gradient for {name!r}")
        flat_grad = backend.as_numpy(grad).reshape(-1)
        size = arr.size
        idx = np.arange(size)
        if max_elements is not None and size > max_elements:
            idx = np.sort(rng.choice(size, max_elements, replace=False))
        numeric = np.empty(len(idx))
        # index the array in place through a flat view (arrays here are contiguous copies)
        flat = arr.reshape(-1)
        if not backend.get_array_module(flat).shares_memory(flat, arr):
            raise RuntimeError(f"gradcheck: {name!r} is not contiguous")
        for k, i in enumerate(idx):
            old = flat[i].item()
            flat[i] = old + eps
            plus = loss()
            flat[i] = old - eps
            minus = loss()
            flat[i] = old
            numeric[k] = (plus - minus) / (2 * eps)
        analytic = flat_grad[idx]
        err = rel_error(analytic, numeric)
        results[name] = (err, analytic, numeric) if return_details else err
    return results
