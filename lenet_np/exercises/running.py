"""Running layers: the student's and lenet_np's on one case, and finite differences of the
student's forward."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..gradcheck import numeric_gradient
from .cases import STEP, Case, Exercise, InPlace, Raised
from .loading import qualname, student_frame


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
        grads[ex.grad_names[p]] = getattr(layer, p).grad
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

    arrays = {ex.dx: x, **{ex.grad_names[p]: getattr(layer, p).data for p in ex.params}}
    out = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, arr in arrays.items():                 # the arrays are contiguous float64
            out[name] = numeric_gradient(arr, loss, STEP, name=name).reshape(arr.shape)
    return out
