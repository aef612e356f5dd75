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

From the command line, ``python -m lenet_np.gradcheck [--layer conv|...|batchnorm|lenet|all]``
checks every layer of LeNet (BatchNorm in training and eval too) and the whole network, in float64 and, side by side,
in float32, and exits with status 1 when a float64 check fails (see ``main``).

``lenet_np.gradcheck`` is this module, and calling it calls ``gradcheck`` (the module is
callable): ``ln.gradcheck(layer, x)``, ``from lenet_np.gradcheck import gradcheck`` and
``import lenet_np.gradcheck as m`` all work.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
from dataclasses import dataclass, field

import numpy as np

from . import backend, cli


def _scalar_loss(module, x, r, loss_fn=None, labels=None):
    y = module(x)
    if loss_fn is not None:
        return float(loss_fn.forward(y, labels))
    xp = backend.get_array_module(y)
    return float(xp.sum(y * r))


def numeric_gradient(arr, loss, eps, idx=None, name="array"):
    """Central differences (loss() at arr[i] + eps, minus at arr[i] - eps) / (2 eps) for the
    flat indices ``idx`` of ``arr`` (every element when None), as a float64 NumPy array.
    Each element is nudged in place through a flat view and put back."""
    flat = arr.reshape(-1)
    if not backend.get_array_module(flat).shares_memory(flat, arr):
        raise RuntimeError(f"gradcheck: {name!r} is not contiguous")
    idx = range(arr.size) if idx is None else idx
    numeric = np.empty(len(idx))
    for k, i in enumerate(idx):
        old = flat[i].item()
        flat[i] = old + eps
        plus = loss()
        flat[i] = old - eps
        minus = loss()
        flat[i] = old
        numeric[k] = (plus - minus) / (2 * eps)
    return numeric


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
    # every forward below updates a BatchNorm's running statistics in training mode: keep
    # the buffers as they were, so that checking a network leaves it as it found it
    saved = [(buf, buf.copy()) for _, buf in module.named_buffers() if buf is not None]
    try:
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
            numeric = numeric_gradient(arr, loss, eps, idx, name)    # arrays here are contiguous copies
            analytic = flat_grad[idx]
            err = rel_error(analytic, numeric)
            results[name] = (err, analytic, numeric) if return_details else err
        return results
    finally:
        for buf, value in saved:
            buf[...] = value


# -- several steps at once: checking a whole network ---------------------------------------

# tried in this order: a large step (beats rounding; enough for a smooth network), a small
# one (crosses no kink), then the ones between
NET_STEPS = (1e-3, 1e-5, 1e-4, 1e-6, 3e-4, 3e-5, 3e-6)


def gradcheck_steps(module, x, steps=NET_STEPS, stop_below=None, **kwargs):
    """``gradcheck`` at several steps h, keeping for each element the step that agrees best.

    A whole network has kinks that no choice of input keeps away from every
    perturbation: max pooling switches winners where two values of a window come close,
    ReLU bends at 0. A large h may step over a kink (the difference then measures a mix
    of two slopes); a small h drowns a tiny gradient in rounding (eps_machine*|L|/h).
    For every element some step in between avoids both, while a wrong backward
    disagrees at every step. With one step this is exactly ``gradcheck``.

    steps       the steps h, tried in order
    stop_below  stop trying steps once every tensor's error is below this (None: try all)
    kwargs      go to ``gradcheck``; every run uses the same ``seed``, so every run
                samples the same elements
    returns     {name: max relative error} like ``gradcheck``
    """
    best, errors = {}, {}
    for h in steps:
        run = gradcheck(module, x, eps=h, return_details=True, **kwargs)
        for name, (_, analytic, numeric) in run.items():
            if name in best:
                closer = np.abs(numeric - analytic) < np.abs(best[name] - analytic)
                numeric = np.where(closer, numeric, best[name])
            best[name] = numeric
            errors[name] = rel_error(analytic, numeric)
        if stop_below is not None and max(errors.values()) < stop_below:
            break
    return errors


# -- the command line: python -m lenet_np.gradcheck ----------------------------------------

TOL = 1e-6          # a float64 error above this fails the check (exit status 1)
LAYERS = ("conv", "pool", "avgpool", "linear", "sigmoid", "relu", "flatten", "loss", "batchnorm", "lenet")
ALIASES = {"maxpool": "pool"}       # the exercises' name for max pooling
LENET_ELEMENTS = 25                 # the whole LeNet: at most this many elements per tensor


def tie_free(rng, shape, spacing=5e-3):
    """Distinct values ``spacing`` apart around 0, shuffled (as tests/conftest.py).

    The values are the odd multiples of spacing/2: no two tie and none lies closer to 0
    than spacing/2, so a finite-difference step below spacing/2 never crosses the kink
    of a max or a ReLU."""
    n = int(np.prod(shape))
    values = (np.arange(n) - n // 2 + 0.5) * spacing
    return rng.permutation(values).reshape(shape)


@dataclass
class Check:
    """One gradient check: a layer configured as in LeNet, and an input for it."""

    layer: str                      # the --layer option that selects it
    label: str                      # what the table shows
    make: object                    # () -> a fresh float32 module, the same weights every call
    x: np.ndarray                   # the float64 input
    steps64: tuple = (1e-6,)        # finite-difference step(s) in float64
    steps32: tuple = (1e-3,)        # and in float32 (about float32's best step)
    max_elements: int | None = 200  # elements sampled per tensor
    kwargs: dict = field(default_factory=dict)   # loss_fn and labels for gradcheck


def make_checks(seed: int = 0, max_elements: int | None = 200) -> list[Check]:
    """Every layer of LeNet with its LeNet configuration (batch 2), BatchNorm2d and BatchNorm1d
    (training and eval), then the whole LeNet."""
    from . import nn
    from .model import LeNet

    rng = np.random.default_rng(seed)

    def seeded(cls, *args):
        return lambda: cls(*args, rng=np.random.default_rng(seed))

    def plain(cls, *args):
        return lambda: cls(*args)

    def batchnorm(cls, c, training=True):
        """A BatchNorm with gamma, beta and running statistics away from 1, 0, 0, 1."""
        def make():
            r = np.random.default_rng(seed)
            layer = cls(c)
            layer.weight.data[...] = r.uniform(0.5, 2.0, c) * r.choice([-1, 1], c)
            layer.bias.data[...] = r.standard_normal(c)
            layer.running_mean[...] = r.standard_normal(c)
            layer.running_var[...] = r.uniform(0.5, 2.0, c)
            return layer.train(training)
        return make

    def net(activation, pool):
        return lambda: LeNet(activation, pool, seed=seed)

    def loss():
        return {"loss_fn": nn.CrossEntropyLoss(), "labels": rng.integers(0, 10, 2)}

    m = max_elements
    checks = [
        Check("conv", "conv.0 Conv2d(1, 6, 5)", seeded(nn.Conv2d, 1, 6, 5), rng.random((2, 1, 28, 28))),
        Check("conv", "conv.3 Conv2d(6, 16, 5)", seeded(nn.Conv2d, 6, 16, 5), rng.standard_normal((2, 6, 12, 12))),
        Check("sigmoid", "conv.1 Sigmoid()", plain(nn.Sigmoid), 2 * rng.standard_normal((2, 6, 24, 24))),
        Check("relu", "conv.1 ReLU(), tie-free x", plain(nn.ReLU), tie_free(rng, (2, 6, 24, 24))),
        Check("pool", "conv.2 MaxPool2d(2, 2), tie-free x", plain(nn.MaxPool2d, 2, 2), tie_free(rng, (2, 6, 24, 24))),
        Check("pool", "conv.5 MaxPool2d(2, 2), tie-free x", plain(nn.MaxPool2d, 2, 2), tie_free(rng, (2, 16, 8, 8))),
        Check("avgpool", "conv.2 AvgPool2d(2, 2)", plain(nn.AvgPool2d, 2, 2), rng.standard_normal((2, 6, 24, 24))),
        Check("flatten", "flatten (2, 16, 4, 4) -> (2, 256)", plain(nn.Flatten), rng.standard_normal((2, 16, 4, 4))),
        # training: mu and var depend on x (the compact form's two sums); eval: running statistics.
        # BatchNorm1d on batch 4: with 2 values a channel, xhat = +-1 whatever x is, and dL/dx ~ 0
        Check("batchnorm", "BatchNorm2d(6), training", batchnorm(nn.BatchNorm2d, 6),
              rng.standard_normal((2, 6, 24, 24)) * 2 + 1),
        Check("batchnorm", "BatchNorm2d(6), eval", batchnorm(nn.BatchNorm2d, 6, training=False),
              rng.standard_normal((2, 6, 24, 24)) * 2 + 1),
        Check("batchnorm", "BatchNorm1d(120), training, batch 4", batchnorm(nn.BatchNorm1d, 120),
              rng.standard_normal((4, 120)) * 2 + 1),
        Check("linear", "fc.0 Linear(256, 120)", seeded(nn.Linear, 256, 120), rng.standard_normal((2, 256))),
        Check("linear", "fc.2 Linear(120, 84)", seeded(nn.Linear, 120, 84), rng.standard_normal((2, 120))),
        Check("linear", "fc.4 Linear(84, 10)", seeded(nn.Linear, 84, 10), rng.standard_normal((2, 84))),
        # Flatten is the identity on (N, K) logits: this checks the loss alone
        Check("loss", "CrossEntropyLoss, logits (2, 10)", plain(nn.Flatten), 3 * rng.standard_normal((2, 10)),
              kwargs=loss()),
    ]
    for c in checks:
        c.max_elements = m
    # the whole net on an image-like input in (0, 1): kinks inside, so several steps
    # (gradcheck_steps); at most 25 elements per tensor keep it fast
    net_elements = LENET_ELEMENTS if m is None else min(m, LENET_ELEMENTS)
    x = tie_free(rng, (2, 1, 28, 28), 1 / (2 * 784)) + 0.5
    for activation, pool in (("sigmoid", "max"), ("relu", "max"), ("sigmoid", "avg")):
        checks.append(Check("lenet", f"LeNet({activation}, {pool}) + loss", net(activation, pool), x,
                            steps64=NET_STEPS, max_elements=net_elements, kwargs=loss()))
    return checks


def run_check(check: Check, seed: int = 0) -> list[dict]:
    """Run one check in float64 and in float32: one row per tensor with both errors."""
    def errors(dtype, steps):
        module = check.make().to(dtype=dtype)
        return gradcheck_steps(module, check.x.astype(dtype), steps, stop_below=TOL / 5,
                               max_elements=check.max_elements, seed=seed, **check.kwargs)

    e64 = errors(np.float64, check.steps64)
    e32 = errors(np.float32, check.steps32)
    sizes = {"input": check.x.size, **{name: p.size for name, p in check.make().named_parameters()}}
    rows = []
    for name, err in e64.items():
        size = sizes[name]
        rows.append(dict(check=check.label, tensor="logits" if check.layer == "loss" and name == "input" else name,
                         checked=size if check.max_elements is None else min(size, check.max_elements),
                         size=size, steps64=check.steps64, float64=err, steps32=check.steps32,
                         float32=e32[name], ok=err < TOL))
    return rows


def _steps(steps) -> str:
    return f"{steps[0]:.0e}" if len(steps) == 1 else f"{max(steps):.0e}..{min(steps):.0e}"


def format_rows(rows: list[dict]) -> str:
    """The rows of ``run_check`` as a table."""
    head = (f"{'check':<36}{'tensor':<15}{'checked':>11}   {'float64 h':<14}{'error':>8}   "
            f"{'float32 h':<14}{'error':>8}")
    lines = [head, "-" * len(head)]
    last = None
    for r in rows:
        label = r["check"] if r["check"] != last else ""
        last = r["check"]
        lines.append(f"{label:<36}{r['tensor']:<15}{r['checked']:>5}/{r['size']:<5}   "
                     f"{_steps(r['steps64']):<14}{r['float64']:>8.1e}   {_steps(r['steps32']):<14}"
                     f"{r['float32']:>8.1e}" + ("" if r["ok"] else "   FAIL"))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog="python -m lenet_np.gradcheck",
        description="Check every backward of LeNet against central finite differences: in float64 "
                    f"(each error must stay below {TOL:g}) and, side by side, in float32 (to see why "
                    "float64 is needed). Exit status 1 when a float64 check fails.")
    p.add_argument("--layer", choices=(*LAYERS, *ALIASES, "all"), default="all",
                   help="which layer to check (default: all; maxpool is pool)")
    p.add_argument("--seed", type=cli.non_negative_int, default=0,
                   help="seeds the weights, the inputs and the sampled elements, >= 0 (default 0)")
    p.add_argument("--max-elements", type=cli.positive_int, default=200,
                   help=f"elements checked per tensor, >= 1 (default 200; the whole LeNet: at most {LENET_ELEMENTS})")
    return p


def main(argv=None) -> int:
    """Print the table; return 0 when every float64 error is below TOL, else 1 (2: a bad argument)."""
    return cli.guard(run, build_parser().parse_args(argv))


def run(args) -> int:
    """The body of ``main``, on parsed arguments."""
    layer = ALIASES.get(args.layer, args.layer)
    checks = [c for c in make_checks(args.seed, args.max_elements) if layer in ("all", c.layer)]
    print("Max relative error per tensor, max|analytic - numeric| / max(|analytic|, |numeric|),\n"
          f"over the sampled elements, with the finite-difference step h (seed {args.seed}).\n"
          "A range of h: each element keeps the step that agrees best (gradcheck_steps), trying\n"
          f"steps until every error is below {TOL / 5:g}. That is a fifth of the pass mark: a float64\n"
          f"error must stay below {TOL:g}.\n")
    start = time.perf_counter()
    rows = []
    for check in checks:
        rows += run_check(check, args.seed)
    print(format_rows(rows))
    failed = [r for r in rows if not r["ok"]]
    print(f"\n{len(rows)} tensors checked in {time.perf_counter() - start:.1f} s.")
    if failed:
        print(f"FAILED: {len(failed)} float64 error(s) above {TOL:g}: "
              + "; ".join(f"{r['check']} / {r['tensor']}" for r in failed))
        return 1
    print(f"All float64 errors are below {TOL:g}: every backward agrees with finite differences.\n"
          "float32 cannot show this: its rounding error eps_machine*|L|/h (eps_machine = 1.2e-7)\n"
          "swamps the difference at a small h, and a large h brings truncation (~h^2) and kinks.")
    return 0


class _CallableModule(types.ModuleType):
    """This module, callable: ``lenet_np.gradcheck(module, x)`` is ``lenet_np.gradcheck.gradcheck(module, x)``,
    so ``ln.gradcheck`` is both the function users call and the module that holds it."""

    def __call__(self, *args, **kwargs):
        return gradcheck(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

if __name__ == "__main__":
    sys.exit(main())
