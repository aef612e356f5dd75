"""What the exercises' checks are made of: a Case (one configuration of a layer and the arrays
to run it on), an Exercise (a layer: its file, how to build the student's and lenet_np's layer,
the cases of each stage), and what a check finds (Failure, Result), with the tolerances."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..gradcheck import tie_free
from ..nn.im2col import col2im, conv_output_size

TOL = 1e-6              # float64: a gradient is right when its relative error is below this
TOL32 = 1e-4            # float32 trap: rounding allows this much
STEP = 1e-6             # the finite-difference step h (float64)
PARAM_GRADS = {"weight": "dW", "bias": "db"}

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
    grad_names: dict = field(default_factory=lambda: dict(PARAM_GRADS))   # parameter -> its gradient's name
    per_example: bool = True            # the examples of a batch are independent: their gradients add up
    tiny: Callable | None = None        # rng -> [Case]: the smallest cases, smallest first (for check --show)

    @property
    def file(self) -> str:
        return f"{self.name}.py"

    @property
    def dx(self) -> str:
        return "dlogits" if self.loss else "dx"

    def tensors(self) -> list[str]:
        return [self.dx] + [self.grad_names[p] for p in self.params]

    def grad_of(self, tensor: str) -> str | None:
        """Where the student adds a parameter's gradient (``self.weight.grad`` for dW), None for dx."""
        found = [p for p in self.params if self.grad_names[p] == tensor]
        return f"self.{found[0]}.grad" if found else None

    def tensor_of(self, line: str) -> str:
        """The gradient a line of code writes: a parameter's when it names its .grad, else dx."""
        found = [self.grad_names[p] for p in self.params if f".{p}.grad" in line]
        return found[0] if found else self.dx


@dataclass
class Failure:
    stage: str                          # "first run", "finite differences", "lenet_np", "trap: ..."
    tensor: str                         # "dx", "dW", "db", "dlogits" ("" when it is the whole layer)
    error: float                        # the relative error (inf: an exception or a wrong shape)
    hint: str
    case: str = ""
    rank: int = 0                       # 2: a recognised mistake, 1: a trap's explanation, 0: a description
    what: str = ""                      # for an infinite error: "an exception", "a wrong shape", ...
    source: Case | None = field(default=None, repr=False)      # the case itself (check --show prints it)


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


# -- building cases ----------------------------------------------------------------------------------
def shape_str(a) -> str:
    """(2, 3) for any sequence of whole numbers."""
    return str(tuple(int(s) for s in a))


def unique(rng, shape, scale=1.0):
    """Tie-free values (no two equal, none within spacing/2 of 0), about scale in size: finite
    differences never cross a max or a ReLU kink."""
    n = int(np.prod(shape))
    return tie_free(rng, shape, spacing=2 * scale / max(n, 1))


def float32(case: Case) -> Case:
    """The float32 trap of a case."""
    case = case.astype(np.float32)
    case.trap, case.hint = "float32 in, float32 out", ""
    return case


def coverage(h, w, kh, kw, s, p):
    """(H, W): how many windows read each pixel."""
    oh, ow = conv_output_size(h, kh, s, p), conv_output_size(w, kw, s, p)
    return col2im(np.ones((kh, kw, oh, ow)), (h, w), s, s, p, p)
