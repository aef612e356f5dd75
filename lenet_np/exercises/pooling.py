"""The two pooling exercises (avgpool, maxpool): cases, traps and the usual mistakes (the rules
for ties among them)."""

from __future__ import annotations

import numpy as np

from .. import nn
from ..nn.im2col import conv_output_size
from .cases import Case, Exercise, coverage, float32, shape_str, unique
from .conv import cut_on_the_wrong_side


def pool_case(rng, x_shape, k, s=None, p=0, x=None, trap="", hint="") -> Case:
    s = k if s is None else s
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    x = unique(rng, x_shape) if x is None else x
    return Case(f"x {shape_str(x_shape)}, kernel {k}, stride {s}, padding {p}", x, rng.standard_normal((n, c, oh, ow)),
                config={"kernel_size": k, "stride": s, "padding": p}, coverage=coverage(h, w, k, k, s, p),
                trap=trap, hint=hint)


def pool_random(pick):
    n, c, k, s = pick(1, 3), pick(1, 3), pick(1, 4), pick(1, 3)
    p = pick(0, k // 2)
    h, w = pick(max(1, k - 2 * p), max(1, k - 2 * p) + 5), pick(max(1, k - 2 * p), max(1, k - 2 * p) + 5)
    return pool_case(np.random.default_rng(pick(0, 9999)), (n, c, h, w), k, s, p)


def pool_student(cls, case):
    return cls(case.config["kernel_size"], stride=case.config["stride"], padding=case.config["padding"])


def pool_padded(cls, case):
    """lenet_np's pooling layer of the case without padding (it runs on x_pad)."""
    return cls(case.config["kernel_size"], case.config["stride"], 0)


def pool_tiny(rng):
    """The smallest cases of the traps, for check --show."""
    return [pool_case(rng, (1, 1, 2, 2), 2), pool_case(rng, (2, 1, 2, 2), 2), pool_case(rng, (1, 2, 2, 2), 2),
            pool_case(rng, (1, 1, 3, 3), 2, 1, trap="overlapping windows (kernel 2, stride 1)"),
            pool_case(rng, (1, 1, 2, 2), 2, 2, 1, trap="padding 1"),
            pool_case(rng, (1, 1, 3, 3), 3, 2, 1, trap="overlapping windows with padding"),
            pool_case(rng, (1, 1, 2, 4), 2, trap="non-square input"), float32(pool_case(rng, (1, 1, 2, 2), 2))]


def tie_rules(case, want):
    """What three wrong rules for ties give: every maximum, an equal split, the last maximum."""
    k, s, p = case.config["kernel_size"], case.config["stride"], case.config["padding"]
    x_pad = np.pad(case.x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=-np.inf)
    rules = {"every": np.zeros_like(x_pad), "split": np.zeros_like(x_pad), "last": np.zeros_like(x_pad)}
    n, c, oh, ow = case.grad.shape
    h, w = case.x.shape[2:]
    for i in range(oh):
        for j in range(ow):
            rows, cols = slice(i * s, i * s + k), slice(j * s, j * s + k)
            win = x_pad[:, :, rows, cols]
            top = win == win.max(axis=(2, 3), keepdims=True)
            g = case.grad[:, :, i, j, None, None]
            rules["every"][:, :, rows, cols] += g * top
            rules["split"][:, :, rows, cols] += g * top / top.sum(axis=(2, 3), keepdims=True)
            flat = top.reshape(n, c, k * k)
            last = k * k - 1 - flat[..., ::-1].argmax(axis=-1)
            one = np.zeros_like(flat, dtype=np.float64)
            np.put_along_axis(one, last[..., None], 1.0, axis=-1)
            rules["last"][:, :, rows, cols] += g * one.reshape(n, c, k, k)
    cut = {name: a[:, :, p:p + h, p:p + w] for name, a in rules.items()}
    return [("dx", "dx gives a tied window's gradient to every maximum: only the FIRST maximum in "
                   "row-major order gets it (as torch; np.argmax finds it)", cut["every"]),
            ("dx", "dx splits a tied window's gradient among its maxima (as cs231n): torch gives it all to the FIRST "
                   "maximum in row-major order (np.argmax finds it)", cut["split"]),
            ("dx", "dx gives a tied window's gradient to its LAST maximum: torch gives it to the first in row-major "
                   "order (np.argmax finds it; a strict > when scanning keeps the first)", cut["last"])]


MAXPOOL = Exercise(
    name="maxpool", cls="MaxPool2d", student=pool_student,
    reference=lambda case: nn.MaxPool2d(case.config["kernel_size"], case.config["stride"], case.config["padding"]),
    fd_cases=lambda rng: [pool_case(rng, (2, 2, 4, 6), 2), pool_case(rng, (1, 2, 5, 6), 3, 2, 1)],
    random_case=pool_random,
    traps=lambda rng: [
        pool_case(rng, (1, 2, 5, 6), 3, 1, trap="overlapping windows (kernel 3, stride 1)",
                  hint="windows overlap: a pixel that is the maximum of several windows gets the sum of their "
                       "gradients (+=)"),
        pool_case(rng, (2, 1, 7, 6), 3, 2, 1, trap="overlapping windows with padding (kernel 3, stride 2, padding 1)",
                  hint="windows overlap: a pixel that is the maximum of several windows gets the sum (+=)"),
        pool_case(rng, (2, 2, 4, 6), 2, x=rng.integers(0, 3, (2, 2, 4, 6)).astype(np.float64), trap="ties",
                  hint="on ties the whole gradient of a window goes to its FIRST maximum in row-major order (as "
                       "torch and np.argmax)"),
        pool_case(rng, (1, 3, 4, 4), 2, trap="batch size 1"),
        pool_case(rng, (2, 2, 5, 8), 2, trap="non-square input (5 x 8)",
                  hint="with H != W, rows and columns must not be swapped; an odd H leaves its last row out"),
        float32(pool_case(rng, (2, 2, 4, 4), 2)),
    ],
    mistakes=lambda case, want: [*(tie_rules(case, want) if case.trap == "ties" else []),
                                 *cut_on_the_wrong_side(case, pool_padded(nn.MaxPool2d, case), -np.inf)],
    tiny=lambda rng: [*pool_tiny(rng),
                      pool_case(rng, (1, 1, 2, 4), 2, x=np.array([[[[1.0, 1, 0, 2], [0, 1, 2, 2]]]]), trap="ties")])


AVGPOOL = Exercise(
    name="avgpool", cls="AvgPool2d", student=pool_student,
    reference=lambda case: nn.AvgPool2d(case.config["kernel_size"], case.config["stride"], case.config["padding"]),
    fd_cases=lambda rng: [pool_case(rng, (2, 2, 4, 6), 2, x=rng.standard_normal((2, 2, 4, 6))),
                          pool_case(rng, (1, 2, 5, 6), 3, 2, 1, x=rng.standard_normal((1, 2, 5, 6)))],
    random_case=pool_random,
    traps=lambda rng: [
        pool_case(rng, (1, 2, 5, 6), 3, 1, trap="overlapping windows (kernel 3, stride 1)",
                  hint="windows overlap: a pixel in several windows gets the sum of their shares (+=)"),
        pool_case(rng, (1, 2, 5, 5), 3, 2, 1, trap="padding counted in the mean",
                  hint="the padding's zeros count in the mean (as torch): every share is grad / (K*K), also at the "
                       "border"),
        pool_case(rng, (1, 3, 4, 4), 2, trap="batch size 1"),
        pool_case(rng, (2, 1, 4, 7), 2, trap="non-square input (4 x 7)",
                  hint="with H != W, rows and columns must not be swapped; an odd W leaves its last column out"),
        float32(pool_case(rng, (2, 2, 4, 4), 2)),
    ],
    mistakes=lambda case, want: [
        ("dx", f"dx is K*K = {case.config['kernel_size'] ** 2} times too large: each pixel of a window gets "
               "grad / (K*K)", want * case.config["kernel_size"] ** 2),
        *cut_on_the_wrong_side(case, pool_padded(nn.AvgPool2d, case))],
    tiny=pool_tiny)
