"""The two convolution exercises (conv_naive, conv_im2col): cases, traps, the usual mistakes,
and the adjoint check of the student's col2im."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import nn
from ..gradcheck import rel_error
from ..nn.im2col import col2im, conv_output_size
from .cases import Case, Exercise, Failure, Raised, coverage, float32, shape_str
from .diagnose import close, diagnose, explain_raised
from .loading import qualname, student_frame


def conv_case(rng, x_shape, w_shape, s=1, p=0, trap="", hint="", then=False) -> Case:
    (n, _, h, w), (o, _, kh, kw) = x_shape, w_shape
    case = Case(f"x {shape_str(x_shape)}, weight {shape_str(w_shape)}, stride {s}, padding {p}",
                rng.standard_normal(x_shape), None,
                {"weight": rng.standard_normal(w_shape), "bias": rng.standard_normal(o)},
                {"stride": s, "padding": p}, coverage(h, w, kh, kw, s, p), trap=trap, hint=hint)
    oh, ow = conv_output_size(h, kh, s, p), conv_output_size(w, kw, s, p)
    case.grad = rng.standard_normal((n, o, oh, ow))
    if then:
        case.then = Case(case.label, rng.standard_normal(x_shape), rng.standard_normal(case.grad.shape),
                         case.params, case.config)
    return case


def conv_random(pick):
    n, c, o, kh, kw, s, p = pick(1, 3), pick(1, 3), pick(1, 3), pick(1, 4), pick(1, 4), pick(1, 3), pick(0, 2)
    h, w = pick(max(1, kh - 2 * p), max(1, kh - 2 * p) + 5), pick(max(1, kw - 2 * p), max(1, kw - 2 * p) + 5)
    return conv_case(np.random.default_rng(pick(0, 9999)), (n, c, h, w), (o, c, kh, kw), s, p)


def conv_reference(case):
    o, c, kh, kw = case.params["weight"].shape
    layer = nn.Conv2d(c, o, (kh, kw), stride=case.config["stride"], padding=case.config["padding"],
                      dtype=np.float64)
    layer.weight.data, layer.bias.data = case.params["weight"].copy(), case.params["bias"].copy()
    return layer


def cut_on_the_wrong_side(case, layer, fill=0.0):
    """What dx is when the padded gradient dL/dx_pad is cut on the wrong side: the first H rows
    and W columns, or the last. ``layer`` is lenet_np's layer with padding 0, run on x_pad
    (padded with ``fill``): its dx is dL/dx_pad. Empty without padding."""
    p = case.config["padding"]
    if p == 0:
        return []
    x_pad = np.pad(case.x, ((0, 0), (0, 0), (p, p), (p, p)), constant_values=fill)
    layer(x_pad)
    dx_pad = np.asarray(layer.backward(case.grad))
    h, w = case.x.shape[2:]
    hint = (f"dx is dL/dx_pad cut on the wrong side: x_pad has the padding ({p}) on EACH side, so dL/dx is "
            f"dx_pad[:, :, {p}:{p} + H, {p}:{p} + W]")
    return [("dx", hint, dx_pad[:, :, :h, :w]), ("dx", hint, dx_pad[:, :, 2 * p:, 2 * p:])]


def conv_run(case, weight=None, grad=None):
    """lenet_np's (dx, dW, db) for a conv case, with another weight or grad_out if given."""
    changed = Case(case.label, case.x, case.grad if grad is None else grad,
                   {**case.params, **({} if weight is None else {"weight": np.ascontiguousarray(weight)})},
                   case.config)
    layer = conv_reference(changed)
    layer(changed.x)
    dx = layer.backward(changed.grad)
    return {"dx": np.asarray(dx), "dW": np.asarray(layer.weight.grad), "db": np.asarray(layer.bias.grad)}


def conv_mistakes(case, want):
    if "weight" not in case.params:             # col2im checked alone
        return []
    w = case.params["weight"]
    s, p = case.config["stride"], case.config["padding"]
    o, c, kh, kw = w.shape
    x_pad = np.pad(case.x, ((0, 0), (0, 0), (p, p), (p, p)))
    n, _, oh, ow = case.grad.shape
    i, j = oh - 1, ow - 1
    flipped = conv_run(case, weight=w[:, :, ::-1, ::-1])["dx"]
    # grad_out (N, O, OH, OW).reshape(-1, O) without moving O last: the right layout of this G
    scrambled = conv_run(case, grad=case.grad.reshape(n, oh, ow, o).transpose(0, 3, 1, 2))
    same = nn.Conv2d(c, o, (kh, kw), stride=s, padding=0, dtype=np.float64)
    same.weight.data, same.bias.data = w.copy(), case.params["bias"].copy()
    last = x_pad[:, :, i * s:i * s + kh, j * s:j * s + kw]
    found = [("dW", "dW is the gradient of the flipped kernel: this layer is a cross-correlation, nothing is "
                    "flipped", want[..., ::-1, ::-1] if want.ndim == 4 else None),
             ("dW", "dW holds only the last output position's share: = where += belongs inside the loop over "
                    "positions", np.einsum("no,nckl->ockl", case.grad[:, :, i, j], last)),
             ("db", "db holds only the last output position's share: sum over the batch AND the positions",
              case.grad[:, :, i, j].sum(axis=0)),
             ("db", "db is summed over the positions but not over the batch: sum over axes (0, 2, 3)",
              case.grad[0].sum(axis=(1, 2))),
             ("dx", "dx uses the flipped kernel: each window's share is sum over o of grad_out[:, o, r, c] * "
                    "weight[o] as it is (the rotated kernel belongs only to dL/dx written as one full convolution)",
              flipped),
             *cut_on_the_wrong_side(case, same)]
    for name in ("dx", "dW", "db"):
        found.append((name, f"{name}: grad_out was reshaped to (N*OH*OW, O) without moving O last; its rows "
                            "must be the positions (n, r, c) and its columns the O channels: "
                            "grad_out.transpose(0, 2, 3, 1).reshape(-1, O)", scrambled[name]))
    for name in ("dW", "db"):
        found.append((name, f"{name} is the mean over the batch and the positions where the sum belongs: it is "
                            f"1/(N*OH*OW) = 1/{n * oh * ow} of the sum (the 1/N of the mean loss is already in "
                            "grad_out)", want / (n * oh * ow) if oh * ow > 1 else None))
    if o == c and want.ndim == 4:
        found.append(("dW", "dW is off by a transpose: the output channels O and the input channels C are "
                            "swapped", want.transpose(1, 0, 2, 3)))
    return found


def conv_traps(rng):
    return [
        conv_case(rng, (1, 2, 5, 5), (3, 2, 3, 3), trap="batch size 1"),
        conv_case(rng, (2, 2, 4, 7), (3, 2, 2, 3), trap="non-square input and kernel",
                  hint="with H != W and KH != KW, swapped axes show: rows go with KH and H, columns with KW and W"),
        conv_case(rng, (2, 1, 5, 6), (2, 1, 3, 3), trap="overlapping windows (kernel 3, stride 1)",
                  hint="windows overlap: a pixel in several windows gets the sum of their shares (+=)"),
        conv_case(rng, (1, 2, 5, 4), (2, 2, 3, 3), 2, 2, "stride 2, padding 2",
                  hint="with padding, work on the padded shape and cut the padding off the gradient at the end"),
        conv_case(rng, (2, 2, 4, 4), (2, 2, 2, 2), trap="two backward calls", then=True),
        float32(conv_case(rng, (2, 2, 4, 5), (2, 2, 3, 3), 1, 1)),
    ]


def conv_tiny(rng):
    """The smallest cases of the traps, for check --show."""
    return [conv_case(rng, (1, 1, 2, 2), (1, 1, 1, 1)), conv_case(rng, (2, 1, 2, 2), (1, 1, 1, 1)),
            conv_case(rng, (1, 2, 2, 2), (2, 2, 1, 1)), conv_case(rng, (1, 1, 2, 3), (1, 1, 1, 2)),
            conv_case(rng, (1, 1, 3, 3), (1, 1, 2, 2), trap="overlapping windows (kernel 2, stride 1)"),
            conv_case(rng, (1, 1, 2, 2), (1, 1, 2, 2), 2, 2, "stride 2, padding 2"),
            conv_case(rng, (1, 1, 2, 2), (1, 1, 2, 2), 1, 1, "padding 1"),
            conv_case(rng, (1, 1, 2, 2), (1, 1, 1, 1), trap="two backward calls", then=True),
            float32(conv_case(rng, (1, 1, 2, 2), (1, 1, 1, 1)))]


def conv_student(cls, case):
    return cls(case.params["weight"].copy(), case.params["bias"].copy(), stride=case.config["stride"],
               padding=case.config["padding"])


def conv_fd_cases(rng):
    return [conv_case(rng, (2, 2, 5, 6), (3, 2, 3, 2), 1, 1), conv_case(rng, (1, 1, 6, 5), (2, 1, 3, 3), 2, 0)]


CONV_NAIVE = Exercise(
    name="conv_naive", cls="Conv2d", params=("weight", "bias"), student=conv_student, reference=conv_reference,
    fd_cases=conv_fd_cases, random_case=conv_random, traps=conv_traps, mistakes=conv_mistakes, tiny=conv_tiny)


def col2im_check(module) -> list[Failure]:
    """col2im on its own: it must be the adjoint of im2col, <im2col(x), c> == <x, col2im(c)>."""
    stage, name = "trap: col2im is the adjoint of im2col", "col2im"
    for fn in ("im2col", "col2im"):
        if not callable(getattr(module, fn, None)):
            return [Failure(stage, name, float("inf"), f"conv_im2col.py defines no function {fn}", "", 2)]
    rng = np.random.default_rng(1)
    n, c, hp, wp, kh, kw, s = 2, 2, 6, 5, 3, 2, 1
    x_pad = rng.standard_normal((n, c, hp, wp))
    oh, ow = (hp - kh) // s + 1, (wp - kw) // s + 1
    cols = rng.standard_normal((n * oh * ow, c * kh * kw))
    label = f"x_pad {shape_str(x_pad.shape)}, kernel {kh}x{kw}, stride {s}"
    case = Case(label, x_pad, coverage=coverage(hp, wp, kh, kw, s, 0))
    want = col2im(cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 4, 5, 1, 2), x_pad.shape, s, s, 0, 0)
    try:
        with np.errstate(all="ignore"):
            got = module.col2im(cols.copy(), x_pad.shape, kh, kw, s)
            seen = module.im2col(x_pad, kh, kw, s)
    except Exception as exc:
        frame = student_frame(exc, Path(module.__file__).parent)
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else "conv_im2col.py"
        raised = Raised(exc, where, (frame.line or "").strip() if frame else "",
                        qualname(exc, Path(module.__file__).parent) or "col2im")
        failure = explain_raised(CONV_IM2COL, raised, case, stage)
        failure.tensor = name
        return [failure]
    if close(got, want):
        return []
    if not isinstance(got, np.ndarray):
        return [Failure(stage, name, float("inf"), f"col2im returns {type(got).__name__}: return an array of shape "
                        "x_pad_shape", label, 2, "not an array")]
    lhs = float(np.sum(seen * cols))
    rhs = float(np.sum(x_pad * got)) if np.shape(got) == x_pad.shape else float("nan")
    hint, rank = diagnose(CONV_IM2COL, "dx", np.asarray(got, dtype=np.float64), want, case)
    hint = hint.replace("dx", "col2im(c)", 1)
    err = float("inf") if np.shape(got) != want.shape else rel_error(got, want)
    return [Failure(stage, name, err, f"{hint}; <im2col(x), c> = {lhs:.6g} but <x, col2im(c)> = {rhs:.6g}",
                    label, rank)]


CONV_IM2COL = Exercise(
    name="conv_im2col", cls="Conv2d", params=("weight", "bias"), student=conv_student, reference=conv_reference,
    fd_cases=conv_fd_cases, random_case=conv_random, traps=conv_traps, mistakes=conv_mistakes,
    extra=col2im_check, tiny=conv_tiny)
