"""The batch-normalization exercise (BatchNorm2d): training and eval mode, cases, traps, and the
usual mistakes of its backward, the hardest of the network: a path through the mean or the
variance dropped, the unbiased variance where the biased one normalises, the eval-mode
backward (mu and var as constants) in training, and the other way round.

Each channel is normalised over its m = N*H*W values; in training mu and var depend on x.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .cases import Case, Exercise, float32, shape_str

AXES = (0, 2, 3)
EPS = 1e-5


def bn_case(rng, x_shape, training=True, trap="", hint="", then=False) -> Case:
    """x drawn around a mean of its own per channel; gamma and beta away from 1 and 0."""
    n, c, h, w = x_shape
    x = rng.standard_normal(x_shape) * rng.uniform(0.5, 3, (1, c, 1, 1)) + rng.uniform(-2, 2, (1, c, 1, 1))
    params = {"weight": rng.uniform(0.5, 2, c) * rng.choice([-1, 1], c), "bias": rng.standard_normal(c)}
    config = {"training": training, "running_mean": rng.standard_normal(c), "running_var": rng.uniform(0.5, 4, c)}
    mode = "training" if training else "eval"
    case = Case(f"x {shape_str(x_shape)}, {mode}", x, rng.standard_normal(x_shape), params, config, trap=trap,
                hint=hint)
    if then:
        case.then = Case(case.label, rng.standard_normal(x_shape) + 1, rng.standard_normal(x_shape), params, config)
    return case


def bn_random(pick):
    """Training on (N, C, H, W) with at least 3 values per channel: batch statistics need 2, and
    with 2 xhat is +-1 whatever x is, so that dx is nearly 0 (a case that says little)."""
    n, c, h = pick(1, 3), pick(1, 3), pick(1, 4)
    w = pick(-(-3 // (n * h)), 4)
    return bn_case(np.random.default_rng(pick(0, 9999)), (n, c, h, w))


def bn_student(cls, case):
    dtype = case.params["weight"].dtype
    layer = cls(case.params["weight"].copy(), case.params["bias"].copy(),
                case.config["running_mean"].astype(dtype), case.config["running_var"].astype(dtype), eps=EPS)
    return layer if case.config["training"] else layer.eval()


def bn_reference(case):
    c = case.x.shape[1]
    layer = nn.BatchNorm2d(c, eps=EPS, dtype=np.float64)
    layer.weight.data[...] = case.params["weight"]
    layer.bias.data[...] = case.params["bias"]
    layer.running_mean[...] = case.config["running_mean"]
    layer.running_var[...] = case.config["running_var"]
    return layer if case.config["training"] else layer.eval()


def _sum(a):
    return a.sum(axis=AXES, keepdims=True)


def staged(case, inv_std, var_count, mean_count=None, mu=None):
    """dL/dx of the staged backward (docs/batchnorm.md) with the given inv_std and the counts that
    divide var = sum(xc^2) / m and mu = sum(x) / m (None: the path through mu left out); the
    right dx with the forward's inv_std, m and m. ``mu``: another mean than the batch's."""
    gamma = case.params["weight"].reshape(1, -1, 1, 1)
    xc = case.x - (case.x.mean(axis=AXES, keepdims=True) if mu is None else mu)
    dxhat = case.grad * gamma
    dvar = _sum(dxhat * xc) * -0.5 * inv_std ** 3
    dxc = dxhat * inv_std + dvar * 2 * xc / var_count
    return dxc if mean_count is None else dxc - _sum(dxc) / mean_count


def bn_mistakes(case, want):
    """What the usual mistakes give on this case: [(tensor, hint, array)]."""
    x, g = case.x, case.grad
    gamma = case.params["weight"].reshape(1, -1, 1, 1)
    m = x.size // x.shape[1]
    n = x.shape[0]
    if not case.config["training"]:
        rm = case.config["running_mean"].reshape(1, -1, 1, 1)
        inv_std = 1 / np.sqrt(case.config["running_var"].reshape(1, -1, 1, 1) + EPS)
        xhat = (x - rm) * inv_std
        hint = ("dx has the paths through mu and var in eval mode: there mu and var are the running statistics, "
                "constants, and only the direct path is left: dx = gamma * inv_std * G")
        return [("dx", hint, gamma * inv_std / m * (m * g - _sum(g) - xhat * _sum(g * xhat))),   # the one line
                ("dx", hint, staged(case, inv_std, m, m, mu=rm))]                                # step by step
    mu, var = x.mean(axis=AXES, keepdims=True), x.var(axis=AXES, keepdims=True)
    inv_std = 1 / np.sqrt(var + EPS)
    xhat = (x - mu) * inv_std
    inv_unbiased = 1 / np.sqrt(var * m / (m - 1) + EPS)
    unbiased = ("the layer normalises with the BIASED variance, sum((x - mu)^2) / m; m - 1 belongs only to "
                "running_var")
    found = [
        ("dx", "dx treats mu and var as constants: that is the eval-mode backward, gamma * inv_std * G; in training "
               "mu and var are computed from x, and dx needs the paths through both", g * gamma * inv_std),
        ("dx", "dx is missing the path through the mean: mu = sum(x) / m is subtracted from every x, so dx gets "
               "-sum(dxc) / m on top of dxc (in one line, the - sum(G) term)", staged(case, inv_std, m)),
        ("dx", "dx is missing the path through the variance: var = sum((x - mu)^2) / m depends on x too (in one "
               "line, the - xhat * sum(G * xhat) term)", gamma * inv_std * (g - _sum(g) / m)),
        ("dx", f"dx divides by m - 1 where var = sum(xc^2) / m hands dvar / m to every xc: {unbiased}",
         staged(case, inv_std, m - 1, m)),
        ("dx", f"dx uses the inv_std of the unbiased variance (divided by m - 1, ddof=1): {unbiased}; use the "
               "inv_std the forward cached", staged(case, inv_unbiased, m, m)),
        ("dx", f"dx uses the unbiased variance (divided by m - 1) in inv_std and in the path through var: "
               f"{unbiased}", staged(case, inv_unbiased, m - 1, m)),
        ("dx", f"dx divides by N = {n} where each channel has m = N*H*W = {m} values: the sums run over the "
               "batch AND the pixels", staged(case, inv_std, n, n)),
        ("dx", "dx is missing the factor gamma: y = gamma * xhat + beta, so dL/dxhat = gamma * G",
         want / gamma),
        ("dgamma", f"dgamma uses xhat of the unbiased variance (divided by m - 1): {unbiased}",
         (g * (x - mu) * inv_unbiased).sum(axis=AXES)),
        ("dgamma", "dgamma is sum(G * x): gamma multiplies xhat, so dL/dgamma = sum(G * xhat)",
         (g * x).sum(axis=AXES)),
    ]
    for name in ("dgamma", "dbeta"):
        found.append((name, f"{name} is the mean over the m = N*H*W = {m} values of each channel where the sum "
                            "belongs (the 1/N of the mean loss is already in grad_out)", want / m))
    return found


BATCHNORM = Exercise(
    name="batchnorm", cls="BatchNorm2d", params=("weight", "bias"), grad_names={"weight": "dgamma", "bias": "dbeta"},
    per_example=False, student=bn_student, reference=bn_reference,
    fd_cases=lambda rng: [bn_case(rng, (2, 3, 3, 4)), bn_case(rng, (3, 2, 1, 1))],
    random_case=bn_random,
    traps=lambda rng: [
        bn_case(rng, (2, 3, 2, 3), training=False, trap="eval mode (running statistics)",
                hint="in eval mode mu and var are the running statistics, constants: dx = gamma * inv_std * G"),
        bn_case(rng, (1, 2, 3, 4), trap="batch size 1",
                hint="with N = 1 a channel still has m = H*W values: the sums run over the batch AND the pixels"),
        bn_case(rng, (2, 2, 3, 3), trap="two backward calls", then=True),
        float32(bn_case(rng, (2, 3, 2, 2))),
    ],
    mistakes=bn_mistakes,
    tiny=lambda rng: [bn_case(rng, (3, 1, 1, 1)), bn_case(rng, (1, 1, 1, 3)),
                      bn_case(rng, (3, 1, 1, 1), training=False), bn_case(rng, (2, 1, 1, 2)),
                      bn_case(rng, (3, 1, 1, 1), then=True), bn_case(rng, (2, 2, 1, 2))])
