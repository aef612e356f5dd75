"""How close a float32 result must be to float64: the one tolerance rule of the suite.

A float32 result differs from the exact one by rounding, and how much depends on the CPU:
SIMD width, FMA and the BLAS kernels change the order of every sum. So no test may use a
constant that passed on one machine. Every bound comes from a float64 computation in the
same test:

    bound = SAFETY * spread + ROUND * u * max|ref|        (u = eps32 / 2, the unit roundoff)

``spread`` is the conditioning floor: the largest move (max abs, per result) of the float64
result when every input, every weight and the result of every elementary operation,
forward and backward, is multiplied by (1 + u * r), r uniform in [-1, 1], over TRIALS draws:
the standard model of floating-point rounding, fl(a op b) = (a op b)(1 + d), |d| <= u, run in
float64 (for torch models by ``rounding_mode``; for one layer, on its inputs and weights).
A sum of N terms also gets the rounding of its partial sums, about u * sqrt(N * sum of the
squared terms), so its rounding grows with its terms, not with its result, as in float32
summed one term after another: where values cancel (batch norm on two values a channel, a
bias that a batch norm follows) the spread is large and so is the bound; where nothing
cancels it is a few u of the result.

SAFETY = 8 covers what a few random draws do not: the draws are a sample, not the maximum,
and rounding errors of one sign (a long sum of positive terms) add up faster than random
ones. ROUND = 4 is the last rounding of the result itself and a few ulps of an elementwise
function on it. Measured, lenet_np's errors on this suite's cases are about a tenth of the
bound at the AVX-512, AVX2 and x86-64-v2 levels; a relative error of 1e-4 in one term of the
batch-norm backward already exceeds it.

Torch's own float32 error is a cross-check, never the bound: a test checks that torch's
float32 result, one sample of a correct computation's rounding, is within the bound too.
"""

from __future__ import annotations

import numpy as np

EPS32 = float(np.finfo(np.float32).eps)       # 2**-23: the spacing of float32 numbers at 1
U32 = EPS32 / 2                               # unit roundoff: the largest relative rounding error
SAFETY = 8.0
ROUND = 4.0
TRIALS = 3


def as_float64(a) -> np.ndarray:
    """A NumPy float64 copy of a NumPy, CuPy (or stand-in) array, torch tensor or scalar."""
    if hasattr(a, "detach"):
        return a.detach().cpu().double().numpy()
    if hasattr(a, "get"):
        a = a.get()
    return np.array(a, dtype=np.float64)


class Jitter:
    """Multiplies what it is given by (1 + eps * u), u uniform in [-1, 1], a fresh draw per
    call; with eps = 0 it returns its argument unchanged (the unperturbed run). Works on
    NumPy arrays and torch tensors (same dtype and device out as in)."""

    def __init__(self, eps: float = 0.0, seed: int = 0):
        self.eps = eps
        self.rng = np.random.default_rng(seed)

    def noise(self, a):
        """eps * u in a's shape, as a's type (NumPy array or torch tensor)."""
        u = self.eps * self.rng.uniform(-1.0, 1.0, tuple(a.shape))
        if hasattr(a, "detach"):                 # a torch tensor
            import torch
            return torch.as_tensor(u, dtype=a.dtype, device=a.device)
        return u.astype(np.asarray(a).dtype, copy=False)

    def __call__(self, a):
        if not self.eps:
            return a
        return a * (1 + self.noise(a))


class Floor:
    """The float64 results of one computation and, per result, its conditioning spread."""

    def __init__(self, ref: dict, spread: dict, eps: float):
        self.ref, self.spread, self.eps = ref, spread, eps

    def bound(self, key) -> float:
        return SAFETY * self.spread[key] + ROUND * self.eps * self.scale(key)

    def scale(self, key) -> float:
        """max|ref| over the finite values (NaN and inf must match exactly)."""
        finite = np.abs(self.ref[key][np.isfinite(self.ref[key])])
        return float(finite.max()) if finite.size else 0.0


    def error(self, ours, key) -> float:
        a, b = as_float64(ours), self.ref[key]
        assert a.shape == b.shape, f"{key}: shape {a.shape} != {b.shape}"
        finite = np.isfinite(b)
        np.testing.assert_array_equal(a[~finite], b[~finite], err_msg=f"{key}: NaN or inf differ")
        return float(np.abs(a[finite] - b[finite]).max()) if finite.any() else 0.0

    def check(self, ours, key, what: str = "", paths: int = 1):
        """ours is within the bound of the float64 result ``key``. ``paths = 2`` when ours is
        itself one float32 result minus another (each within the bound)."""
        err, bound = self.error(ours, key), paths * self.bound(key)
        assert err <= bound, (f"{what or key}: max error {err:.3e} > bound {bound:.3e} "
                              f"(spread {self.spread[key]:.2e}, max|ref| {self.scale(key):.2e})")
        return err

    def check_pair(self, ours, theirs, key, what: str = ""):
        """Two float32 results, each allowed the bound, within twice the bound of each other:
        for results where float32 itself decides something float64 does not (values that
        round to a tie in float32 route a max-pool gradient to the first of them)."""
        a, b = as_float64(ours), as_float64(theirs)
        assert a.shape == b.shape, f"{what or key}: shape {a.shape} != {b.shape}"
        err, bound = float(np.abs(a - b).max()) if a.size else 0.0, 2 * self.bound(key)
        assert err <= bound, f"{what or key}: max difference {err:.3e} > twice the bound, {bound:.3e}"
        return err


def conditioning_floor(run, eps: float = U32, trials: int = TRIALS, seed: int = 0) -> Floor:
    """run(jitter) -> {name: result}: a float64 computation that passes every input, weight
    and intermediate it wants perturbed through ``jitter``. Returns its unperturbed results
    and their spread over ``trials`` perturbed runs."""
    ref = {k: as_float64(v) for k, v in run(Jitter()).items()}
    spread = dict.fromkeys(ref, 0.0)
    for t in range(trials):
        out = run(Jitter(eps, seed + 1 + t))
        for k, v in out.items():
            finite = np.isfinite(ref[k])                 # NaN and inf are compared exactly
            d = np.abs(as_float64(v)[finite] - ref[k][finite])
            spread[k] = max(spread[k], float(d.max()) if d.size else 0.0)
    return Floor(ref, spread, eps)


def rounding_mode(jitter):
    """A torch dispatch mode that rounds like float32 in a float64 run: every floating result
    of every aten operation, forward and backward, is passed through ``jitter`` (in place for
    in-place operations; views are left alone). Fused operations that hide a cancellation
    (batch norm, log-softmax, the NLL loss, forward and backward) run as their decompositions
    into elementary operations, so each of those rounds too."""
    import torch
    from torch._decomp import decomposition_table
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_map

    aten = torch.ops.aten
    fused = {op for op in decomposition_table
             if getattr(op, "overloadpacket", None) in (aten.native_batch_norm, aten.native_batch_norm_backward,
                                      aten._native_batch_norm_legit, aten._log_softmax,
                                      aten._log_softmax_backward_data, aten._softmax,
                                      aten._softmax_backward_data, aten.nll_loss_forward,
                                      aten.nll_loss_backward)}

    sums = (aten.sum, aten.mean, aten.mm, aten.addmm, aten.bmm, aten.convolution, aten.convolution_backward,
            aten.avg_pool2d, aten.avg_pool2d_backward)

    class Rounding(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in fused:
                with self:
                    return decomposition_table[func](*args, **kwargs)
            out = func(*args, **kwargs)
            if func.is_view or not jitter.eps:
                return out
            if getattr(func, "overloadpacket", None) in sums:
                # Summed one term after another, a sum of N terms of random sign rounds by
                # about eps * sqrt(sum of the squared partial sums) ~ eps * sqrt(N) *
                # sqrt(sum of squared terms): the same operation on squared inputs gives the
                # sum of squared terms, on ones gives N (padding and edges included).
                def mapped(f):
                    return tree_map(lambda t: f(t) if isinstance(t, torch.Tensor) and t.is_floating_point() else t,
                                    (args, kwargs))
                (a, k), (o, ko) = mapped(torch.square), mapped(torch.ones_like)
                squares, count = func(*a, **k), func(*o, **ko)
                if func.overloadpacket is aten.mean:
                    n = args[0].numel()
                    squares = tree_map(lambda t: t * (n / max(t.numel(), 1)), squares)
                    count = tree_map(lambda t: torch.full_like(t, n / max(t.numel(), 1)), count)
                out = tree_map(lambda r, q, n: r if not isinstance(r, torch.Tensor) else
                               r + jitter.noise(r) * (n.clamp(min=1) * q.abs()).sqrt() / n.clamp(min=1) ** (
                                   1 if func.overloadpacket is aten.mean else 0), out, squares, count)

            def one(t):
                if not (isinstance(t, torch.Tensor) and t.is_floating_point()):
                    return t
                if func._schema.is_mutable:
                    with torch.no_grad():
                        return t.copy_(jitter(t))
                return jitter(t)

            return tree_map(one, out)

    return Rounding()


def _tensor(a, device, grad=False):
    import torch
    return torch.tensor(as_float64(a), device=device, requires_grad=grad)


def function_floor(fn, inputs, g=None, device="cpu", trials: int = TRIALS) -> Floor:
    """The floor of y = fn(*inputs) and of its backward with output gradient g (torch float64
    under ``rounding_mode``; fn takes and returns torch tensors). The inputs are the layer's
    exact float32 data, shared by every side, so only the operations round. Results: "out" and
    "grad:i" for each input i (None where an input gets no gradient is left out)."""
    def run(jitter):
        ts = [_tensor(a, device, grad=True) for a in inputs]
        with rounding_mode(jitter):
            out = fn(*ts)
            out.backward(_tensor(g, device) if g is not None else None)
        return dict(out=out, **{f"grad:{i}": t.grad for i, t in enumerate(ts) if t.grad is not None})

    return conditioning_floor(run, trials=trials)


def torch_floor(model, batches, make_optimizer=None, device="cpu", trials: int = TRIALS) -> Floor:
    """The floor of training a torch model (a float64 copy, under ``rounding_mode``) on
    ``batches`` of (x, y) integer labels, or (x, None, g) an output gradient, with the mean
    cross-entropy loss; after each backward ``make_optimizer(params)``'s step, if given.
    Results, as of the last batch: "out", "loss" (with labels), "input" (dL/dx), "grad:<name>"
    for every parameter, every floating buffer under its state_dict name, and with an
    optimizer "param:<name>", the parameters after the last step."""
    import copy

    import torch

    def run(jitter):
        m = copy.deepcopy(model).double().to(device)
        with torch.no_grad():
            for t in list(m.parameters()) + [b for b in m.buffers() if b.is_floating_point()]:
                t.copy_(jitter(t))
        opt = make_optimizer(m.parameters()) if make_optimizer else None
        for batch in batches:
            x, y, g = (*batch, None)[:3]
            m.zero_grad()
            tx = torch.tensor(jitter(as_float64(x)), device=device, requires_grad=True)
            with rounding_mode(jitter):
                out = m(tx)
                res = {"out": out}
                if y is not None:
                    loss = torch.nn.functional.cross_entropy(out, torch.as_tensor(y, device=device))
                    loss.backward()
                    res["loss"] = loss
                else:
                    out.backward(torch.tensor(jitter(as_float64(g)), device=device))
                if opt:
                    opt.step()
        res["input"] = tx.grad
        res.update({"grad:" + n: p.grad for n, p in m.named_parameters()})
        res.update({n: b for n, b in m.named_buffers() if b.is_floating_point()})
        if opt:
            res.update({"param:" + n: p for n, p in m.named_parameters()})
        return res

    return conditioning_floor(run, trials=trials)


def torch_step_floor(model, x, y=None, g=None, device="cpu", trials: int = TRIALS) -> Floor:
    """``torch_floor`` of one forward and backward, no optimizer."""
    return torch_floor(model, [(x, y, g)], device=device, trials=trials)


def sum_bound(n_terms, abs_sum, u: float = U32):
    """The worst-case rounding of a float32 sum of n_terms terms, in any order:
    gamma_n * sum|terms|, gamma_n = n u / (1 - n u) (Higham, Accuracy and Stability of
    Numerical Algorithms, 3.1). For where the terms are few and known: a rigorous bound."""
    n = np.asarray(n_terms, dtype=np.float64)
    return n * u / (1 - n * u) * np.asarray(abs_sum, dtype=np.float64)


# -- finite differences in float64 ----------------------------------------------------------------
FD_TOL = 1e-6   # central differences in float64 agree to ~1e-8 or better; see docs/gradient-check.md


def assert_gradcheck(module, x, **kw) -> dict:
    """ln.gradcheck(module, x, **kw) checked something, and every relative error is below FD_TOL."""
    from lenet_np import gradcheck
    errors = gradcheck(module, x, **kw)
    assert errors, "gradcheck checked nothing"
    assert max(errors.values()) < FD_TOL, errors
    return errors
