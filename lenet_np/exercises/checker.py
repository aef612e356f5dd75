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
"""

from __future__ import annotations

import re
import sys
import traceback
import types
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

import numpy as np

from ..gradcheck import numeric_gradient, rel_error

TOL = 1e-6              # float64: a gradient is right when its relative error is below this
TOL32 = 1e-4            # float32 trap: rounding allows this much
STEP = 1e-6             # the finite-difference step h (float64)
PARAM_GRADS = {"weight": "dW", "bias": "db"}


# -- what is checked: cases and exercises ----------------------------------------------------------
@dataclass
class Case:
    """One configuration of a layer and the arrays to run it on."""

    label: str                          # "x (2, 3, 5, 6), weight (4, 3, 3, 2), stride 2, padding 1"
    x: np.ndarray                       # the input (the logits for the loss)
    grad: np.ndarray | None = None      # G = dL/dy (None for the loss)
    params: dict = field(default_factory=dict)      # "weight", "bias": arrays
    config: dict = field(default_factory=dict)      # stride, padding, kernel_size, labels
    coverage: np.ndarray | None = None  # (H, W): how many windows read each pixel of x (conv, pooling)
    then: Case | None = None            # a second forward and backward on the same layer
    trap: str = ""                      # the trap's name ("" outside the traps)
    hint: str = ""                      # what a trap is about: said when no mistake is recognised

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def astype(self, dtype) -> Case:
        return Case(self.label, self.x.astype(dtype), None if self.grad is None else self.grad.astype(dtype),
                    {k: v.astype(dtype) for k, v in self.params.items()}, self.config, self.coverage,
                    None if self.then is None else self.then.astype(dtype), self.trap, self.hint)

    def example(self, n: int) -> Case:
        """The case of example n alone (batch size 1), same parameters."""
        config = dict(self.config)
        if "labels" in config:
            config["labels"] = config["labels"][n:n + 1]
        return Case(self.label, self.x[n:n + 1], None if self.grad is None else self.grad[n:n + 1],
                    self.params, config, self.coverage)


@dataclass
class Exercise:
    """One layer of the exercises: its file, how to build the student's and lenet_np's layer,
    and the cases of each stage."""

    name: str                           # what --layer selects, and the file's stem
    cls: str                            # the class the student's file defines
    student: Callable                   # (cls, case) -> the student's layer
    reference: Callable                 # case -> lenet_np's layer, float64
    fd_cases: Callable                  # rng -> [Case], small: every element is checked
    random_case: Callable               # pick(lo, hi) -> Case, for Hypothesis
    traps: Callable                     # rng -> [Case]
    params: tuple = ()                  # ("weight", "bias")
    loss: bool = False                  # forward(logits, labels), backward()
    mistakes: Callable | None = None    # (case, want) -> [(tensor, hint, array)]: this layer's usual mistakes
    extra: Callable | None = None       # (module, path) -> [Failure]: checks of helper functions

    @property
    def file(self) -> str:
        return f"{self.name}.py"

    @property
    def dx(self) -> str:
        return "dlogits" if self.loss else "dx"

    def tensors(self) -> list[str]:
        return [self.dx] + [PARAM_GRADS[p] for p in self.params]


@dataclass
class Failure:
    stage: str                          # "first run", "finite differences", "lenet_np", "trap: ..."
    tensor: str                         # "dx", "dW", "db", "dlogits" ("" when it is the whole layer)
    error: float                        # the relative error (inf: an exception or a wrong shape)
    hint: str
    case: str = ""
    rank: int = 0                       # 2: a recognised mistake, 1: a trap's explanation, 0: a description
    what: str = ""                      # for an infinite error: "an exception", "a wrong shape", ...


@dataclass
class Result:
    status: str                         # "pass", "FAIL", "not implemented", "error", "missing"
    detail: str = ""
    failures: list = field(default_factory=list)
    stats: dict = field(default_factory=dict)


class LoadError(Exception):
    """A student's file that cannot be loaded; the message is one line naming file and line."""


class InPlace(Exception):
    """The student's code wrote into an array it was given."""


class Raised(Exception):
    """An exception from the student's code, with the place it came from."""

    def __init__(self, exc: BaseException, where: str, line: str, function: str):
        super().__init__(str(exc))
        self.exc, self.where, self.line, self.function = exc, where, line, function


# -- loading a student's file --------------------------------------------------------------------------
def student_frame(exc: BaseException, directory: Path):
    """The innermost traceback frame in a file of the student's directory, or None."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).parent == directory]
    return frames[-1] if frames else None


def qualname(exc: BaseException, directory: Path) -> str:
    """The qualified name (``Linear.backward``) of the innermost function of the student's that raised."""
    name, tb = "", exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if Path(code.co_filename).parent == directory:
            name = getattr(code, "co_qualname", code.co_name)       # co_qualname: Python 3.11+
        tb = tb.tb_next
    return name


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def load(path: Path) -> types.ModuleType:
    """Run a student's file as a module (without writing bytecode next to it: a file edited twice
    in one second must not be served from a stale cache). Raises LoadError."""
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise LoadError(f"{path.name}:{exc.lineno}: {type(exc).__name__}: {exc.msg}") from None
    module = types.ModuleType(f"lenet_np_exercise_{path.stem}")
    module.__file__ = str(path)
    sys.path.insert(0, str(path.parent))          # the student's files may import each other
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        frame = student_frame(exc, path.parent)
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else path.name
        raise LoadError(f"{where}: {type(exc).__name__}: {_first_line(exc)}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module


# -- running layers ----------------------------------------------------------------------------------
def _run(ex: Exercise, layer, case: Case):
    """forward then backward of one layer on one case (and on case.then after it): the output and
    {tensor: gradient}. The student's code runs with NumPy's warnings silenced."""
    out = dx = None
    for c in (case, case.then) if case.then is not None else (case,):
        if ex.loss:
            out = layer.forward(c.x, c.config["labels"])
            dx = layer.backward()
        else:
            out = layer.forward(c.x)
            dx = layer.backward(c.grad)
    grads = {ex.dx: dx}
    for p in ex.params:
        grads[PARAM_GRADS[p]] = getattr(layer, p).grad
    return out, grads


def reference(ex: Exercise, case: Case):
    """lenet_np's output and gradients for a case, in float64 (a second run adds, as torch)."""
    case = case.astype(np.float64)
    out, grads = _run(ex, ex.reference(case), case)
    return np.asarray(out), {k: np.array(v) for k, v in grads.items()}


def student(ex: Exercise, module, case: Case):
    """The student's output and gradients for a case, as copies; raises Raised for an exception in
    the student's code, and a Raised of its own for a backward that wrote into its inputs."""
    directory = Path(module.__file__).parent
    work = case.astype(case.x.dtype)                # copies: the case stays as it was
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            layer = ex.student(getattr(module, ex.cls), work)
            out, grads = _run(ex, layer, work)
    except (Exception, SystemExit) as exc:           # a student's sys.exit() is a failure, not an exit
        frame = student_frame(exc, directory)
        if frame is None:
            raise Raised(exc, ex.file, "", "") from exc
        raise Raised(exc, f"{Path(frame.filename).name}:{frame.lineno}", (frame.line or "").strip(),
                     qualname(exc, directory)) from exc
    for given, used in ((case, work), (case.then, work.then)):
        if given is None:
            continue
        if not np.array_equal(given.x, used.x):
            raise Raised(InPlace("the layer changed its input x in place; it belongs to the caller: compute into "
                                 "a new array"), ex.file, "", "")
        if given.grad is not None and not np.array_equal(given.grad, used.grad):
            raise Raised(InPlace("backward changed grad_out in place (grad_out *= ... or a view of it); it "
                                 "belongs to the caller: compute into a new array"), ex.file, "", "")
    return out, {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in grads.items()}


def numeric(ex: Exercise, module, case: Case) -> dict:
    """Central differences of L = sum(forward(x) * G) (the loss itself for the loss layer) with the
    student's forward, for every element of x and of each parameter."""
    layer = ex.student(getattr(module, ex.cls), case)
    x = case.x.copy()

    def loss():
        if ex.loss:
            return float(layer.forward(x, case.config["labels"]))
        return float(np.sum(layer.forward(x) * case.grad))

    arrays = {ex.dx: x, **{PARAM_GRADS[p]: getattr(layer, p).data for p in ex.params}}
    out = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, arr in arrays.items():                 # the arrays are contiguous float64
            out[name] = numeric_gradient(arr, loss, STEP, name=name).reshape(arr.shape)
    return out


# -- explaining a wrong gradient ------------------------------------------------------------------------
def close(got, want, tol=TOL) -> bool:
    return got is not None and np.shape(got) == np.shape(want) and rel_error(got, want) < tol


def _shape(a) -> str:
    return str(tuple(int(s) for s in a))


def diagnose(ex: Exercise, name: str, got, want, case: Case, per_example=None) -> tuple[str, int]:
    """A hint for a wrong gradient ``got`` (lenet_np's is ``want``) and its rank: 2 when it names a
    mistake, 1 when it is the trap's explanation, 0 when it only says where the two differ."""
    n = case.batch
    grad_of = {"dW": "self.weight.grad", "db": "self.bias.grad"}.get(name)
    if got is None:
        if grad_of:
            return f"{name} is missing: {grad_of} is None", 2
        return f"{name} is None: backward must return dL/d{'logits' if ex.loss else 'x'}", 2
    got = np.asarray(got)
    if got.shape != want.shape:
        if got.ndim == 2 and got.shape == want.shape[::-1]:
            return f"{name} has shape {_shape(got.shape)}, expected {_shape(want.shape)}: off by a transpose", 2
        if got.shape == (n, *want.shape) or (got.ndim > want.ndim and got.shape[0] == n):
            return (f"{name} has shape {_shape(got.shape)}, expected {_shape(want.shape)}: it still has the batch "
                    "axis; sum over the batch", 2)
        grow = np.subtract(got.shape, want.shape) if got.ndim == want.ndim == 4 else None
        if (grow is not None and not grow[:2].any() and grow[2] == grow[3] > 0
                and grow[2] == 2 * case.config.get("padding", 0)):
            return (f"{name} has shape {_shape(got.shape)}, expected {_shape(want.shape)}: the padding is still on; "
                    f"cut the padding ({grow[2] // 2}) off each side", 2)
        if got.size == want.size:
            return (f"{name} has shape {_shape(got.shape)}, expected {_shape(want.shape)}: the right number of "
                    "entries in the wrong layout (a transpose or reshape)", 2)
        return f"{name} has shape {_shape(got.shape)}, expected {_shape(want.shape)}", 2
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
    message = _first_line(exc)
    tensor = "dW" if ".weight.grad" in line else "db" if ".bias.grad" in line else ex.dx
    hint = ""
    shapes = _shapes_in(message)
    if "non-broadcastable output operand" in message and len(shapes) == 2:
        target, result = shapes
        if len(result) > len(target) and (result[-len(target):] == target or result[0] == case.batch):
            hint = f": an array with a batch axis {_shape(result)} was added into {_shape(target)}; sum over the batch"
    elif "could not be broadcast" in message and len(shapes) >= 2:
        a, b = shapes[0], shapes[1]
        if len(a) == 2 and a == b[::-1]:
            hint = f": {_shape(a)} against {_shape(b)} is off by a transpose"
        elif len(a) == len(b) + 1 and a[1:] == b:
            hint = f": {_shape(a)} still has the batch axis; sum over the batch"
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


# -- one stage: compare the student's gradients with lenet_np's -------------------------------------------
def compare(ex: Exercise, module, case: Case, stage: str, fd: dict | None = None,
            errors: dict | None = None) -> list[Failure]:
    """Failures of the student's layer on one case (none: it passes). With ``fd`` the error is measured
    against these finite differences; the hint always comes from lenet_np's exact gradients.
    ``errors``, when given, receives the error of every tensor that passes."""
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
        if name != ex.dx and case.batch > 1 and case.then is None and not per_example:
            for n in range(case.batch):
                for k, v in reference(ex, case.example(n))[1].items():
                    per_example.setdefault(k, []).append(v)
        hint, rank = diagnose(ex, name, None if g is None else np.asarray(g, dtype=np.float64), w, case,
                              per_example.get(name))
        if case.then is not None and name != ex.dx and close(g, reference(ex, case.then)[1][name], tol):
            hint, rank = (f"{name} keeps only the last backward's gradient: = where += belongs; add into "
                          f"{'self.weight.grad' if name == 'dW' else 'self.bias.grad'} (gradients accumulate "
                          "over backward calls until they are zeroed, as in torch)"), 2
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
        return Result("FAIL", failures=[explain_raised(ex, raised, fd_cases[0], "first run")])
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
