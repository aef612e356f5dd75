"""Explaining a wrong gradient: set beside lenet_np's exact one and beside what each usual
mistake would have produced from it (``diagnose``), or, for an exception in the student's code,
where it came from and what the shapes in its message say (``explain_raised``)."""

from __future__ import annotations

import re

import numpy as np

from ..gradcheck import rel_error
from .cases import TOL, Case, Exercise, Failure, InPlace, Raised, shape_str
from .loading import first_line


def close(got, want, tol=TOL) -> bool:
    return got is not None and np.shape(got) == np.shape(want) and rel_error(got, want) < tol


def diagnose(ex: Exercise, name: str, got, want, case: Case, per_example=None) -> tuple[str, int]:
    """A hint for a wrong gradient ``got`` (lenet_np's is ``want``) and its rank: 2 when it names a
    mistake, 1 when it is the trap's explanation, 0 when it only says where the two differ."""
    n = case.batch
    grad_of = ex.grad_of(name)
    if got is None:
        if grad_of:
            return f"{name} is missing: {grad_of} is None", 2
        return f"{name} is None: backward must return dL/d{'logits' if ex.loss else 'x'}", 2
    got = np.asarray(got)
    if got.shape != want.shape:
        shapes = f"{name} has shape {shape_str(got.shape)}, expected {shape_str(want.shape)}"
        if got.ndim == 2 and got.shape == want.shape[::-1]:
            return f"{shapes}: off by a transpose", 2
        if got.shape == (n, *want.shape) or (got.ndim > want.ndim and got.shape[0] == n):
            return f"{shapes}: it still has the batch axis; sum over the batch", 2
        grow = np.subtract(got.shape, want.shape) if got.ndim == want.ndim == 4 else None
        if (grow is not None and not grow[:2].any() and grow[2] == grow[3] > 0
                and grow[2] == 2 * case.config.get("padding", 0)):
            return f"{shapes}: the padding is still on; cut the padding ({grow[2] // 2}) off each side", 2
        if got.size == want.size:
            return f"{shapes}: the right number of entries in the wrong layout (a transpose or reshape)", 2
        return shapes, 2
    if not np.all(np.isfinite(got)):
        return (f"{name} holds NaN or inf (overflow? exp of a large number: use what the forward cached)"
                + (f"; {case.hint}" if case.hint else ""), 2)
    candidates = [(f"{name} has the wrong sign", -want)]
    if want.ndim >= 2:
        flat = want.reshape(want.shape[0], -1)
        rows, cols = flat.shape
        candidates.append((f"{name} is off by a transpose" if want.shape == (rows, rows) else
                           f"{name} is off by a transpose: it was computed as a ({cols}, {rows}) matrix and reshaped; "
                           f"the ({rows}, {cols}) one is its transpose", flat.T.reshape(want.shape)))
    if want.ndim == 1 and want.size > 1:
        candidates.append((f"{name} holds the sum over every axis in each entry: sum over the batch (and the "
                           "positions) only, one value per output", np.full_like(want, want.sum())))
    if n > 1:
        candidates.append((f"{name} is N = {n} times too large" + ("; the loss is the MEAN over the batch: divide "
                           "by N" if ex.loss else ""), want * n))
        candidates.append((f"{name} is N = {n} times too small: it is averaged over the batch where the sum "
                           "belongs (the 1/N of the mean loss is already in grad_out)", want / n))
        if per_example is not None:
            candidates.append((f"{name} holds only the first example's share: the sum over the batch is missing",
                               per_example[0]))
            candidates.append((f"{name} holds only the last example's share: the sum over the batch is missing "
                               "(or a loop over the batch has = where += belongs)", per_example[-1]))
    if ex.mistakes is not None:
        candidates += [(hint, arr) for tensor, hint, arr in ex.mistakes(case, want) if tensor == name]
    for hint, arr in candidates:            # a mistake speaks only where it changes the gradient
        if arr is not None and np.shape(arr) == want.shape and not close(arr, want) and close(got, arr):
            return hint, 2
    if np.abs(got).max() == 0:
        if grad_of:
            return f"{name} is all zeros: nothing was added into {grad_of}", 2
        return f"{name} is all zeros on this case, lenet_np's is not", 0
    # = for +=: right at every pixel inside exactly one window, wrong only where windows overlap.
    # It needs pixels of both kinds, and a gradient that is not zero at the single ones.
    if case.coverage is not None and name == ex.dx:
        single = np.broadcast_to(case.coverage == 1, want.shape)
        shared = np.broadcast_to(case.coverage > 1, want.shape)
        if (single.any() and shared.any() and np.abs(want[single]).max() > 0
                and close(got[single], want[single]) and not close(got[shared], want[shared])
                and close(got[~single & ~shared], want[~single & ~shared])):
            note = (" (a fancy-index += keeps only one of repeated indices: loop over the windows, or use np.add.at)"
                    if ex.name == "maxpool" else "")
            return (f"{name} is right at pixels inside one window and wrong where windows overlap: = where += "
                    f"belongs; a pixel in several windows gets the sum of their shares{note}"), 2
    ratio = float(np.vdot(got, want) / np.vdot(want, want)) if np.any(want) else 0.0
    if ratio and want.size > 1 and close(got, ratio * want):
        return f"{name} is off by a factor {ratio:.4g}", 2
    if case.hint:
        return f"{name} fails this trap: {case.hint}", 1
    i = np.unravel_index(np.argmax(np.abs(got - want)), want.shape)
    return (f"{name} differs most at index {tuple(int(k) for k in i)}: yours {got[i]:.6g}, "
            f"lenet_np's {want[i]:.6g}"), 0


def _shapes_in(text: str) -> list[tuple]:
    return [tuple(int(s) for s in m.replace(" ", "").split(",") if s) for m in re.findall(r"\(([\d, ]*)\)", text)]


def explain_raised(ex: Exercise, raised: Raised, case: Case, stage: str) -> Failure:
    """A Failure for an exception in the student's code: where, what, and the likely mistake."""
    exc, line = raised.exc, raised.line
    message = first_line(exc)
    tensor = ex.tensor_of(line)
    hint = ""
    shapes = _shapes_in(message)
    if "non-broadcastable output operand" in message and len(shapes) == 2:
        target, result = shapes
        if len(result) > len(target) and (result[-len(target):] == target or result[0] == case.batch):
            hint = (f": an array with a batch axis {shape_str(result)} was added into {shape_str(target)}; sum over "
                    "the batch")
    elif "could not be broadcast" in message and len(shapes) >= 2:
        a, b = shapes[0], shapes[1]
        if len(a) == 2 and a == b[::-1]:
            hint = f": {shape_str(a)} against {shape_str(b)} is off by a transpose"
        elif len(a) == len(b) + 1 and a[1:] == b:
            hint = f": {shape_str(a)} still has the batch axis; sum over the batch"
    elif "mismatch in its core dimension" in message or "shapes" in message and "not aligned" in message:
        hint = ": a matrix product of mismatched shapes; which operand needs a .T?"
    code = re.sub(r"\s+#.*$", "", line)                  # the line without its comment
    code = f" `{code}`" if code else ""
    text, what = f"{raised.where}{code} raised {type(exc).__name__}: {message}{hint}", "an exception"
    if isinstance(exc, NotImplementedError):
        text = f"{raised.where}{code}: {raised.function or ex.cls} raises NotImplementedError for this case"
    elif isinstance(exc, InPlace):
        text, what = message, "an input changed in place"
    return Failure(stage, tensor, float("inf"), text, case.label, 2, what)
