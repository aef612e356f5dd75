"""``check --show``: the smallest failing case of a layer, every number printed, to work through
by hand.

The case is the smallest (fewest numbers in x, G and the parameters) among the cases the check
found failing and the exercise's tiny cases (``Exercise.tiny``: small versions of its traps,
tried only here), preferring one where a gradient has wrong values over one where it has the
wrong shape or dtype or raises. It prints x, the parameters, G = dL/dy, and for every wrong
gradient the student's, lenet_np's (expected) and their difference, rounded to DECIMALS places.
"""

from __future__ import annotations

import numpy as np

from .cases import Case, Exercise, Failure, Result, shape_str
from .checker import NAME_WIDTH, compare
from .running import reference, student

DECIMALS = 3
INDENT = " " * NAME_WIDTH


def size(case: Case) -> int:
    """How many numbers a case shows: x, G and the parameters, and those of a second call."""
    n = case.x.size + (0 if case.grad is None else case.grad.size) + sum(v.size for v in case.params.values())
    return n + (size(case.then) - sum(v.size for v in case.params.values()) if case.then is not None else 0)


def _values_wrong(failures: list[Failure]) -> bool:
    """Some gradient is a number array of the right shape, with wrong values."""
    return any(f.error != float("inf") for f in failures)


def smallest(ex: Exercise, module, result: Result) -> tuple[Case, list[Failure]] | None:
    """The smallest failing case and its failures (None: no case of the layer fails)."""
    seen, candidates = set(), []
    for case in [f.source for f in result.failures] + (ex.tiny(np.random.default_rng(0)) if ex.tiny else []):
        if case is not None and id(case) not in seen:
            seen.add(id(case))
            candidates.append(case)
    failing = []
    for case in sorted(candidates, key=size):
        found = compare(ex, module, case, "show")
        if found and _values_wrong(found):
            return case, found
        if found:
            failing.append((case, found))
    return failing[0] if failing else None


def fmt(a, decimals: int = DECIMALS) -> list[str]:
    """An array as lines of text, every number with a fixed number of decimals; when that would
    round every entry to zero, in scientific notation instead."""
    a = np.asarray(a)
    if a.dtype.kind != "f":
        return np.array2string(a, max_line_width=10 ** 6, threshold=10 ** 6).splitlines()
    finite = a[np.isfinite(a)]
    tiny = finite.size and 0 < np.abs(finite).max() < 0.5 * 10.0 ** -decimals
    if not tiny:
        a = np.round(a.astype(np.float64), decimals) + 0.0      # no -0.000 for a rounding error
    formatter = {"float_kind": (lambda v: f"{v: .2e}") if tiny else (lambda v: f"{v: .{decimals}f}")}
    return np.array2string(a, formatter=formatter, max_line_width=10 ** 6, threshold=10 ** 6).splitlines()


def flat(a: np.ndarray) -> np.ndarray:
    """(A, B, 1, 1) as (A, B) and (1, 1, H, W) as (H, W): the same numbers on fewer lines."""
    if a.ndim == 4 and a.shape[2:] == (1, 1):
        return a.reshape(a.shape[:2])
    if a.ndim == 4 and a.shape[:2] == (1, 1):
        return a.reshape(a.shape[2:])
    return a


def block(label: str, a, width: int) -> list[str]:
    """``label`` and the array beside it; an array of more than two axes one (H, W) plane at a
    time (see ``flat`` for the exceptions)."""
    a = flat(np.asarray(a))
    if a.ndim <= 2:
        first, *rest = fmt(a)
        return [f"{INDENT}  {label:<{width}}{first}"] + [f"{INDENT}  {'':<{width}}{line}" for line in rest]
    axes = "oc" if label.startswith(("weight", "dW")) else "nc"
    lines = [f"{INDENT}  {label}, one plane per [{', '.join(axes[:a.ndim - 2])}]:"]
    for idx in np.ndindex(*a.shape[:-2]):
        lines += block(f"  [{', '.join(str(i) for i in idx)}]", a[idx], width)
    return lines


def _inputs(ex: Exercise, case: Case) -> list[tuple[str, object]]:
    """(label, array) of what one call gets: x, labels or G, and the arrays of the configuration."""
    rows = [("logits" if ex.loss else "x", case.x)]
    rows += [(p, case.params[p]) for p in ex.params if p in case.params]
    for key, value in case.config.items():
        if isinstance(value, np.ndarray) and not (key.startswith("running_") and case.config.get("training")):
            rows.append((key, value))
    if case.grad is not None:
        rows.append(("G", case.grad))
    return rows


def show(ex: Exercise, module, result: Result) -> list[str]:
    """The lines ``check --show`` prints under a failing layer."""
    found = smallest(ex, module, result)
    if found is None:
        return [f"{INDENT}show: no case of the layer fails; the failure is in a check of its own (the hint above)"]
    case, failures = found
    calls = [case] if case.then is None else [case, case.then]
    rows = []
    for k, call in enumerate(calls):
        if len(calls) > 1:
            rows.append((f"call {k + 1} of 2 (the gradients add up over both)", None))
        rows += [(label, a) for label, a in _inputs(ex, call) if k == 0 or label not in ex.params]
    try:
        _, got = student(ex, module, case)
    except Exception:                       # raised: compare() already said how
        got = {}
    _, want = reference(ex, case)
    wrong = [name for name in [*ex.tensors(), "forward"] if any(f.tensor == name for f in failures)]
    notes = []
    for name in wrong:
        if name == "forward":
            notes.append(f"the forward's output differs from lenet_np's: {failures[0].hint}")
            continue
        mine, theirs = got.get(name), want[name]
        if mine is None or not isinstance(mine, np.ndarray):
            reason = next(f for f in failures if f.tensor == name)
            notes.append(f"{name}: {reason.what or 'wrong'} (the hint above says more)")
            rows.append((f"{name} expected", theirs))
            continue
        rows.append((f"{name} yours", mine))
        rows.append((f"{name} expected", theirs))
        if mine.shape != theirs.shape:
            notes.append(f"{name}: yours has shape {mine.shape}, expected {theirs.shape}")
            continue
        if mine.dtype != theirs.dtype and case.x.dtype == np.float32 and np.allclose(mine, theirs, rtol=1e-4):
            notes.append(f"{name}: the values agree; yours is {mine.dtype} where float32 belongs")
            continue
        diff = mine.astype(np.float64) - theirs
        rows.append(("difference", diff))
        i = np.unravel_index(np.argmax(np.abs(diff)), diff.shape)
        where = f"[{', '.join(str(int(k)) for k in i)}]"
        notes.append(f"largest difference at {name}{where}: yours {mine[i] + 0.0:.6g}, expected {theirs[i] + 0.0:.6g}")
    width = max([len(label) for label, a in rows if a is not None] + [8]) + 2
    squeezed = {np.shape(a) for _, a in rows if a is not None and flat(np.asarray(a)).ndim < np.ndim(a)}
    shapes = sorted(squeezed)
    notes_shape = ", ".join(f"{shape_str(s)} as {shape_str(flat(np.empty(s)).shape)}" for s in shapes)
    lines = [f"{INDENT}show: the smallest case that fails, {case.label}{f' ({case.trap})' if case.trap else ''}",
             f"{INDENT}  ({'' if ex.loss else 'G = dL/dy; '}difference = yours - expected; {DECIMALS} decimals"
             + (f"; shapes {notes_shape})" if shapes else ")")]
    for label, a in rows:
        lines += [f"{INDENT}  {label}:"] if a is None else block(label, a, width)
    lines += [f"{INDENT}  {note}" for note in notes]
    return lines
