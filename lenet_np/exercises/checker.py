"""The machinery of ``python -m lenet_np.exercises check``: load a student's file, run its
backward, compare it, and explain a wrong gradient.

A layer is checked in four stages, each on float64 arrays unless it says otherwise:

1. **A first run** on a small case: a backward that raises NotImplementedError is "not
   implemented"; one that raises something else, returns None or the wrong shape fails here.
2. **Finite differences**: L = sum(forward(x) * G) for a fixed random G (the mean loss itself
   for the loss layer); every element of x and of each parameter is moved by +-h and
   (L(u + h) - L(u - h)) / 2h is compared with the student's gradient. This uses the
   student's own forward, so it needs nothing but the definition of the derivative.
3. **lenet_np's layer** on random configurations (shapes, strides, paddings) drawn by
   Hypothesis with a fixed seed; a failure is shrunk to the smallest configuration that fails.
4. **Traps**: the cases that catch real mistakes (overlapping windows, ties, batch size 1,
   non-square inputs, gradients that must accumulate, float32 in and out).

The error of a tensor is ``lenet_np.gradcheck.rel_error`` (max|got - want| / max|want|); a
wrong gradient is then compared with the usual mistakes (``diagnose``) to name the one made.

This module runs the stages (``check``) and prints their result (``format_result``); the rest
lives beside it: cases.py (what is checked), loading.py (a student's file), running.py (the
layers, finite differences), diagnose.py (the hints). Their names are importable from here.
"""

from __future__ import annotations

from collections.abc import Callable
from random import Random

import numpy as np

from ..gradcheck import rel_error
from .cases import PARAM_GRADS, STEP, TOL, TOL32, Case, Exercise, Failure, InPlace, LoadError, Raised, Result
from .diagnose import close, diagnose, explain_raised
from .loading import load, qualname, student_frame
from .running import numeric, reference, student

__all__ = ["NAME_WIDTH", "PARAM_GRADS", "STEP", "TOL", "TOL32", "Case", "Exercise", "Failure", "InPlace",
           "LoadError", "Raised", "Result", "check", "close", "compare", "diagnose", "explain_raised",
           "format_result", "load", "numeric", "qualname", "reference", "search", "student", "student_frame"]


# -- one stage: compare the student's gradients with lenet_np's -------------------------------------------
def compare(ex: Exercise, module, case: Case, stage: str, fd: dict | None = None,
            errors: dict | None = None) -> list[Failure]:
    """Failures of the student's layer on one case (none: it passes), each holding the case. With
    ``fd`` the error is measured against these finite differences; the hint always comes from
    lenet_np's exact gradients. ``errors``, when given, receives the error of every tensor that passes."""
    failures = _compare(ex, module, case, stage, fd, errors)
    for f in failures:
        f.source = case
    return failures


def _compare(ex: Exercise, module, case: Case, stage: str, fd: dict | None, errors: dict | None) -> list[Failure]:
    try:
        out, got = student(ex, module, case)
    except Raised as raised:
        return [explain_raised(ex, raised, case, stage)]
    want_out, want = reference(ex, case)
    float32 = case.x.dtype == np.float32
    failures = []
    if not close(np.asarray(out, dtype=np.float64) if out is not None else None, want_out, TOL32 if float32 else TOL):
        failures.append(Failure(stage, "forward", float("inf"), "the forward's output differs from lenet_np's: the "
                                "forward is given, put it back as it was (new writes a fresh copy)", case.label, 2,
                                "a changed forward"))
        return failures
    per_example = {}
    for name in ex.tensors():
        g, w = got[name], want[name]
        if g is not None and not isinstance(g, np.ndarray):
            failures.append(Failure(stage, name, float("inf"), f"{name} is a {type(g).__name__}, expected a NumPy "
                                    "array", case.label, 2, "not an array"))
            continue
        if float32 and g is not None and np.asarray(g).dtype != np.float32:
            failures.append(Failure(stage, name, float("inf"), f"{name} is {np.asarray(g).dtype} for float32 input: "
                                    "float32 in, float32 out (np.zeros(shape) is float64: pass dtype=x.dtype, or use "
                                    "np.zeros_like)", case.label, 2, "a float64 result"))
            continue
        target = fd[name] if fd is not None else w
        tol = TOL32 if float32 else TOL
        if close(g, target, tol) and (fd is None or close(g, w, tol)):
            if errors is not None:
                errors[name] = max(errors.get(name, 0.0), rel_error(g, target))
            continue
        err = rel_error(g, target) if g is not None and np.shape(g) == np.shape(target) else float("inf")
        if name != ex.dx and ex.per_example and case.batch > 1 and case.then is None and not per_example:
            for n in range(case.batch):
                for k, v in reference(ex, case.example(n))[1].items():
                    per_example.setdefault(k, []).append(v)
        hint, rank = diagnose(ex, name, None if g is None else np.asarray(g, dtype=np.float64), w, case,
                              per_example.get(name))
        if case.then is not None and name != ex.dx and close(g, reference(ex, case.then)[1][name], tol):
            hint, rank = (f"{name} keeps only the last backward's gradient: = where += belongs; add into "
                          f"{ex.grad_of(name)} (gradients accumulate over backward calls until they are zeroed, "
                          "as in torch)"), 2
        what = "a wrong shape" if err == float("inf") else ""
        failures.append(Failure(stage, name, err, hint, case.label, rank, what))
    return failures


def search(random_case: Callable, fails: Callable, examples: int):
    """The smallest failing case among ``examples`` random ones (None: none fails). Hypothesis draws
    them with a fixed seed and shrinks a failure; without Hypothesis, NumPy draws them (no shrinking)."""
    try:
        from hypothesis import HealthCheck, Phase, find, settings
        from hypothesis import strategies as st
        from hypothesis.errors import NoSuchExample
    except ImportError:
        rng = np.random.default_rng(0)
        for _ in range(examples):
            case = random_case(lambda lo, hi: int(rng.integers(lo, hi + 1)))
            if fails(case):
                return case
        return None

    strategy = st.composite(lambda draw: random_case(lambda lo, hi: draw(st.integers(lo, hi))))()
    config = settings(max_examples=examples, derandomize=True, database=None, deadline=None,
                      phases=(Phase.generate, Phase.shrink), suppress_health_check=list(HealthCheck))
    try:
        return find(strategy, fails, settings=config, random=Random(0))
    except NoSuchExample:
        return None


def check(ex: Exercise, module, examples: int = 15) -> Result:
    """Every stage for one layer; the Result's failures are sorted by stage."""
    if not isinstance(getattr(module, ex.cls, None), type):
        return Result("FAIL", f"{ex.file} defines no class {ex.cls}")
    rng = np.random.default_rng(0)
    fd_cases = ex.fd_cases(rng)

    # 1. a first run: implemented at all? the right shapes?
    try:
        student(ex, module, fd_cases[0])
    except Raised as raised:
        if isinstance(raised.exc, NotImplementedError):
            return Result("not implemented", f"{raised.function or ex.cls} in {raised.where.split(':')[0]} "
                                             "raises NotImplementedError: write it")
        failure = explain_raised(ex, raised, fd_cases[0], "first run")
        failure.source = fd_cases[0]
        return Result("FAIL", failures=[failure])
    failures = []
    stats = {"fd": 0.0, "ref": 0.0, "shapes": 0, "traps": 0}

    # 2. finite differences, with the student's own forward
    for case in fd_cases:
        try:
            fd = numeric(ex, module, case)
        except Exception:                   # the forward itself fails: compare() reports it
            fd = None
        errors = {}
        failures += compare(ex, module, case, "finite differences", fd, errors)
        stats["fd"] = max(stats["fd"], *errors.values(), 0.0)

    # 3. lenet_np's layer on random configurations
    worst = {}

    def fails(case):
        stats["shapes"] += 1
        errors = {}
        found = compare(ex, module, case, "lenet_np", errors=errors)
        for f in found:
            worst[f.tensor] = max(worst.get(f.tensor, 0.0), f.error)
        stats["ref"] = max(stats["ref"], *errors.values(), 0.0)
        return bool(found)

    smallest = search(ex.random_case, fails, examples)
    if smallest is not None:
        for f in compare(ex, module, smallest, "lenet_np"):
            f.error = max(f.error, worst.get(f.tensor, 0.0))
            failures.append(f)

    # 4. the traps, and checks of helper functions
    for case in ex.traps(rng):
        stats["traps"] += 1
        failures += compare(ex, module, case, f"trap: {case.trap}")
    if ex.extra is not None:
        stats["traps"] += 1
        failures += ex.extra(module)
    # a trap's own explanation holds only when the ordinary cases pass: a tensor that fails them
    # too has a mistake the trap is not about
    ordinary = {f.tensor for f in failures if not f.stage.startswith("trap: ")}
    for f in failures:
        if f.rank == 1 and f.stage.startswith("trap: ") and f.tensor in ordinary:
            f.rank = 0
    return Result("FAIL" if failures else "pass", failures=failures, stats=stats)


# -- printing ------------------------------------------------------------------------------------------
NAME_WIDTH = 23


def format_result(ex: Exercise, result: Result) -> list[str]:
    """One line for a layer; a failure adds a hint line for each wrong gradient."""
    head = f"{ex.name:<{NAME_WIDTH}}{result.status:<17}"
    if result.status == "pass":
        s = result.stats
        def err(e):
            return f"{e:.0e}" if e else "0"
        return [f"{head}finite differences {err(s['fd'])}, lenet_np {err(s['ref'])} on {s['shapes']} random shapes, "
                f"{s['traps']} traps"]
    if not result.failures:
        return [head + result.detail]
    by_tensor = {}
    for f in result.failures:
        by_tensor.setdefault(f.tensor, []).append(f)
    finite = [f.error for f in result.failures if f.error != float("inf")]
    what = f"worst error {max(finite):.1e}" if finite else result.failures[0].what or "wrong"
    stages = list(dict.fromkeys(f.stage for f in result.failures))
    traps = sum(s.startswith("trap: ") for s in stages)
    stages = [s for s in stages if not s.startswith("trap: ")] + ([f"{traps} trap{'s' * (traps > 1)}"] if traps else [])
    lines = [f"{head}{', '.join(t for t in by_tensor if t)}: {what} (fails: {', '.join(stages)})"]
    for found in by_tensor.values():
        best = max(found, key=lambda f: f.rank)          # the first failure with the most specific hint
        lines.append(f"{'':<{NAME_WIDTH}}hint: {best.hint} [{best.stage}: {best.case}]")
    return lines
