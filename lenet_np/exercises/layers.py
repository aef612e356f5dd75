"""The eight exercises: for each layer, how the student's layer and lenet_np's are built, the
small cases of the finite-difference check, the random configurations drawn for the comparison
with lenet_np, the traps, and the layer's usual mistakes.

Random configurations are written against ``pick(lo, hi)``, which returns a whole number in
[lo, hi]: Hypothesis supplies it (and shrinks a failure), or NumPy when Hypothesis is missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import nn
from ..gradcheck import rel_error, tie_free
from ..nn.im2col import col2im, conv_output_size
from .checker import Case, Exercise, Failure, Raised, close, diagnose, explain_raised, qualname, student_frame


def _shape(a) -> str:
    return str(tuple(int(s) for s in a))


def _unique(rng, shape, scale=1.0):
    """Tie-free values (no two equal, none within spacing/2 of 0), about scale in size: finite
    differences never cross a max or a ReLU kink."""
    n = int(np.prod(shape))
    return tie_free(rng, shape, spacing=2 * scale / max(n, 1))


# -- Linear ----------------------------------------------------------------------------------------------
def linear_case(rng, n, fan_in, fan_out, trap="", hint="", then=False) -> Case:
    case = Case(f"x {_shape((n, fan_in))}, weight {_shape((fan_out, fan_in))}",
                rng.standard_normal((n, fan_in)), rng.standard_normal((n, fan_out)),
                {"weight": rng.standard_normal((fan_out, fan_in)), "bias": rng.standard_normal(fan_out)},
                trap=trap, hint=hint)
    if then:
        case.then = Case(case.label, rng.standard_normal((n, fan_in)), rng.standard_normal((n, fan_out)),
                         case.params)
    return case


def linear_reference(case):
    fan_out, fan_in = case.params["weight"].shape
    layer = nn.Linear(fan_in, fan_out, dtype=np.float64)
    layer.weight.data, layer.bias.data = case.params["weight"].copy(), case.params["bias"].copy()
    return layer


def float32(case: Case) -> Case:
    case = case.astype(np.float32)
    case.trap, case.hint = "float32 in, float32 out", ""
    return case


LINEAR = Exercise(
    name="linear", cls="Linear", params=("weight", "bias"),
    student=lambda cls, case: cls(case.params["weight"].copy(), case.params["bias"].copy()),
    reference=linear_reference,
    fd_cases=lambda rng: [linear_case(rng, 3, 4, 5)],
    random_case=lambda pick: linear_case(np.random.default_rng(pick(0, 9999)), pick(1, 4), pick(1, 6), pick(1, 6)),
    traps=lambda rng: [
        linear_case(rng, 1, 4, 3, "batch size 1"),
        linear_case(rng, 3, 4, 4, "square weight (IN = OUT)", "with IN = OUT a transposed dW has the right shape: "
                    "dW = grad_out.T @ x is (OUT, IN)"),
        linear_case(rng, 2, 3, 4, "two backward calls", then=True),
        float32(linear_case(rng, 3, 4, 5)),
    ])


# -- Sigmoid and ReLU ----------------------------------------------------------------------------------------
def elementwise_case(rng, shape, x, trap="", hint="") -> Case:
    return Case(f"x {_shape(shape)}", x, rng.standard_normal(shape), trap=trap, hint=hint)


def random_shape(pick):
    return tuple(pick(1, 4) for _ in range(pick(1, 4)))


def sigmoid_random(pick):
    shape, scale, rng = random_shape(pick), pick(1, 4), np.random.default_rng(pick(0, 9999))
    return elementwise_case(rng, shape, scale * rng.standard_normal(shape))


def sigmoid_mistakes(case, want):
    y = 1 / (1 + np.exp(-np.clip(case.x, -700, 700)))
    return [("dx", "dx uses x where the forward's output y belongs: dL/dx = grad_out * y * (1 - y), with y = "
             "self.cache", case.grad * case.x * (1 - case.x)),
            ("dx", "dx is missing the factor (1 - y): dL/dx = grad_out * y * (1 - y)", case.grad * y),
            ("dx", "dx is missing grad_out: dL/dx = grad_out * y * (1 - y)", y * (1 - y)),
            ("dx", "dx applies the sigmoid twice: self.cache already holds y = sigmoid(x)",
             case.grad * (1 / (1 + np.exp(-y))) * (1 - 1 / (1 + np.exp(-y))))]


def large_inputs(rng):
    x = rng.permutation(np.linspace(-1000, 1000, 40)).reshape(4, 10)
    return elementwise_case(rng, x.shape, x, "large inputs (|x| up to 1000)",
                            "for large |x| use the y the forward cached: exp(-x) overflows")


SIGMOID = Exercise(
    name="sigmoid", cls="Sigmoid",
    student=lambda cls, case: cls(), reference=lambda case: nn.Sigmoid(),
    fd_cases=lambda rng: [elementwise_case(rng, (2, 3, 4), 2 * rng.standard_normal((2, 3, 4)))],
    random_case=sigmoid_random,
    traps=lambda rng: [large_inputs(rng),
                       float32(elementwise_case(rng, (2, 5), rng.standard_normal((2, 5))))],
    mistakes=sigmoid_mistakes)


def relu_random(pick):
    shape, scale, rng = random_shape(pick), pick(1, 4), np.random.default_rng(pick(0, 9999))
    return elementwise_case(rng, shape, _unique(rng, shape, scale))


def relu_zeros(rng):
    x = rng.integers(-2, 3, (3, 6)).astype(np.float64)
    x[0, :3] = 0.0
    return elementwise_case(rng, x.shape, x, "x == 0 exactly",
                            "at x == 0 the gradient is 0 (as torch): the mask is x > 0")


RELU = Exercise(
    name="relu", cls="ReLU",
    student=lambda cls, case: cls(), reference=lambda case: nn.ReLU(),
    fd_cases=lambda rng: [elementwise_case(rng, (2, 3, 4), _unique(rng, (2, 3, 4)))],
    random_case=relu_random,
    traps=lambda rng: [relu_zeros(rng), float32(elementwise_case(rng, (2, 5), _unique(rng, (2, 5))))],
    mistakes=lambda case, want: [
        ("dx", "dx passes the gradient at x == 0: the derivative there is taken as 0 (as torch), so the mask is "
               "x > 0, not x >= 0", case.grad * (case.x >= 0)),
        ("dx", "dx is the mask alone: multiply it with grad_out", (case.x > 0).astype(np.float64))])


# -- softmax cross-entropy ----------------------------------------------------------------------------------
def loss_case(rng, n, k, scale=2.0, trap="", hint="") -> Case:
    return Case(f"logits {_shape((n, k))}", scale * rng.standard_normal((n, k)),
                config={"labels": rng.integers(0, k, n)}, trap=trap, hint=hint)


def loss_mistakes(case, want):
    z = case.x - case.x.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = case.batch
    onehot = np.zeros_like(p)
    onehot[np.arange(n), case.config["labels"]] = 1
    return [("dlogits", "dlogits is missing the one-hot: dL/dz = (p - onehot(labels)) / N", p / n),
            ("dlogits", "dlogits is missing the one-hot and the 1/N: dL/dz = (p - onehot(labels)) / N", p),
            ("dlogits", "dlogits is -onehot/N: the softmax's own gradient p is missing (dL/dz = (p - onehot) / N)",
             -onehot / n)]


SOFTMAX_CE = Exercise(
    name="softmax_cross_entropy", cls="SoftmaxCrossEntropy", loss=True,
    student=lambda cls, case: cls(), reference=lambda case: nn.CrossEntropyLoss(),
    fd_cases=lambda rng: [loss_case(rng, 3, 5)],
    random_case=lambda pick: loss_case(np.random.default_rng(pick(0, 9999)), pick(1, 5), pick(2, 6), pick(1, 5)),
    traps=lambda rng: [loss_case(rng, 1, 4, trap="batch size 1"),
                       loss_case(rng, 3, 4, 1000.0, "large logits (about 1000)",
                                 "large logits: use the p the forward cached (exp of a large logit overflows)"),
                       float32(loss_case(rng, 3, 5))],
    mistakes=loss_mistakes)


# -- convolution (both exercises) ---------------------------------------------------------------------------
def coverage(h, w, kh, kw, s, p):
    """(H, W): how many windows read each pixel."""
    oh, ow = conv_output_size(h, kh, s, p), conv_output_size(w, kw, s, p)
    return col2im(np.ones((kh, kw, oh, ow)), (h, w), s, s, p, p)


def conv_case(rng, x_shape, w_shape, s=1, p=0, trap="", hint="", then=False) -> Case:
    (n, _, h, w), (o, _, kh, kw) = x_shape, w_shape
    case = Case(f"x {_shape(x_shape)}, weight {_shape(w_shape)}, stride {s}, padding {p}",
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


def conv_student(cls, case):
    return cls(case.params["weight"].copy(), case.params["bias"].copy(), stride=case.config["stride"],
               padding=case.config["padding"])


def conv_fd_cases(rng):
    return [conv_case(rng, (2, 2, 5, 6), (3, 2, 3, 2), 1, 1), conv_case(rng, (1, 1, 6, 5), (2, 1, 3, 3), 2, 0)]


CONV_NAIVE = Exercise(
    name="conv_naive", cls="Conv2d", params=("weight", "bias"), student=conv_student, reference=conv_reference,
    fd_cases=conv_fd_cases, random_case=conv_random, traps=conv_traps, mistakes=conv_mistakes)


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
    label = f"x_pad {_shape(x_pad.shape)}, kernel {kh}x{kw}, stride {s}"
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
    extra=col2im_check)


# -- pooling ------------------------------------------------------------------------------------------------
def pool_case(rng, x_shape, k, s=None, p=0, x=None, trap="", hint="") -> Case:
    s = k if s is None else s
    n, c, h, w = x_shape
    oh, ow = conv_output_size(h, k, s, p), conv_output_size(w, k, s, p)
    x = _unique(rng, x_shape) if x is None else x
    return Case(f"x {_shape(x_shape)}, kernel {k}, stride {s}, padding {p}", x, rng.standard_normal((n, c, oh, ow)),
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
                                 *cut_on_the_wrong_side(case, pool_padded(nn.MaxPool2d, case), -np.inf)])


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
        *cut_on_the_wrong_side(case, pool_padded(nn.AvgPool2d, case))])


EXERCISES = {ex.name: ex for ex in (LINEAR, SIGMOID, RELU, SOFTMAX_CE, AVGPOOL, MAXPOOL, CONV_NAIVE, CONV_IM2COL)}
"""The exercises in the order to do them (the order of the docs, of check and of the README that new writes)."""
