"""What the page shows, as JSON: one ``backprop`` pass turned into compact arrays and numbers.

Every number here comes from ``lenet_np.backprop.backprop`` (the layers' own ``forward`` and
``backward``): this module only reshapes and encodes them. An array goes out as

    {"shape": [6, 24, 24], "data": "<base64 of the float32 values, little-endian, C order>",
     "min": ..., "max": ..., "absmax": ...}

(4 bytes a value plus a third for base64: the whole classic LeNet, forward and backward, is
about 130 kB). Scalars are float64 JSON numbers, written with all their digits, so the page
shows what Python computed. JSON has no NaN: a number that is not finite (after a step with
a huge learning rate) becomes null, and the view carries a ``warning`` the page prints.
"""

from __future__ import annotations

import base64
import math

import numpy as np

from .. import backend
from ..nn import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sigmoid

try:
    from ..data import CLASS_NAMES
except ImportError:   # pragma: no cover - lenet_np.data is part of the package
    from ..trace import CLASS_NAMES

# Each layer's page of the book (docs/ is not package data: the page shows the path as text).
DOCS = {Conv2d: "docs/convolution.md", MaxPool2d: "docs/pooling.md", AvgPool2d: "docs/pooling.md",
        Sigmoid: "docs/sigmoid.md", ReLU: "docs/relu.md", Linear: "docs/linear.md", Flatten: "docs/flatten.md",
        BatchNorm1d: "docs/batchnorm.md", BatchNorm2d: "docs/batchnorm.md"}
LOSS_DOC = "docs/softmax-cross-entropy.md"

NOT_FINITE = ("Some numbers of this network are no longer finite (NaN or infinity): the last SGD step was too "
              "large. Press undo or reset to the checkpoint, then step with a smaller learning rate.")


def number(x) -> float | None:
    """A float for JSON: None where it is NaN or infinite (JSON has neither)."""
    x = float(x)
    return x if math.isfinite(x) else None


def array(a) -> dict:
    """An array as the page reads it: its shape, its float32 values in base64, and its range."""
    a = np.ascontiguousarray(backend.as_numpy(a), dtype="<f4")
    finite = a[np.isfinite(a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    return {"shape": list(a.shape), "data": base64.b64encode(a.tobytes()).decode("ascii"),
            "min": lo, "max": hi, "absmax": max(abs(lo), abs(hi)), "finite": bool(finite.size == a.size)}


def norm(a) -> float:
    """The Euclidean norm of ``a``, computed in float64 (as ``trace`` computes it)."""
    return float(np.linalg.norm(backend.as_numpy(a).astype(np.float64)))


def layout(shape) -> str:
    """"maps" for a (1, C, H, W) output (a grid of heatmaps), "bars" for a (1, F) one."""
    return "maps" if len(shape) == 4 else "bars"


def doc_page(layer) -> str:
    return DOCS.get(type(layer), "docs/network.md")


def layer_view(lp) -> dict:
    """One layer of a ``backprop`` pass: its output and dL/d(output), with the norm; a
    convolution also sends its filters and dL/dW, every layer the norms of its parameters
    and of their gradients."""
    params = {name: {"shape": list(p.shape), "norm": number(norm(p.data)),
                     "grad_norm": number(norm(lp.param_grads[name]))} for name, p in lp.layer.named_parameters()}
    out = {"name": lp.name, "type": type(lp.layer).__name__, "repr": repr(lp.layer), "doc": doc_page(lp.layer),
           "shape": list(lp.output.shape), "layout": layout(lp.output.shape),
           "output": array(lp.output[0]), "grad": array(lp.grad[0]), "grad_norm": number(norm(lp.grad)),
           "params": params}
    if isinstance(lp.layer, Conv2d):
        out["filters"] = {"weight": array(lp.layer.weight.data), "grad": array(lp.param_grads["weight"])}
    return out


def view(bp, picked, target: int, steps: int) -> dict:
    """The page's whole picture of one image: the input, every layer forward and backward,
    the probabilities and the loss for ``target``, the saliency dL/dimage; ``steps`` is the
    number of SGD steps this copy of the network has taken since the checkpoint."""
    probs = bp.probabilities()[0]
    layers = [layer_view(lp) for lp in bp.layers]
    pred = int(np.argmax(probs)) if np.isfinite(probs).all() else None
    label = picked.label
    finite = math.isfinite(bp.loss) and np.isfinite(probs).all() and all(
        v["output"]["finite"] and v["grad"]["finite"] for v in layers)
    return {
        "input": dict(picked.source, label=label, label_name=None if label is None else CLASS_NAMES[label],
                      target=target, target_name=CLASS_NAMES[target], image=array(picked.image[0, 0])),
        "loss": number(bp.loss), "loss_doc": LOSS_DOC,
        "probs": [number(p) for p in probs], "pred": pred, "pred_name": None if pred is None else CLASS_NAMES[pred],
        "layers": layers,
        "input_grad": array(bp.input_grad[0, 0]), "input_grad_norm": number(norm(bp.input_grad)),
        "steps": steps,
        "warning": None if finite else NOT_FINITE,
    }


def parameters(net) -> dict:
    """{"conv.0.weight": float64 copy, ...}: every parameter of ``net``, by layer, to compare after a step."""
    return {f"{lname}.{pname}": backend.as_numpy(p.data).astype(np.float64)
            for lname, layer in net.named_layers() for pname, p in layer.named_parameters()}


def change(before: dict, after: dict, params_before: dict, net, lr: float) -> dict:
    """What one SGD step did, from the views ``before`` and ``after`` it and the parameters
    before it: the loss, the prediction and the target's probability before and after, and
    for every layer with parameters the change ΔW = W_after - W_before of each (for a
    convolution the whole ΔW and its norm per filter, for the others the norms)."""
    layers = []
    for lname, layer in net.named_layers():
        deltas = {pname: backend.as_numpy(p.data).astype(np.float64) - params_before[f"{lname}.{pname}"]
                  for pname, p in layer.named_parameters()}
        if not deltas:
            continue
        entry = {"name": lname, "type": type(layer).__name__,
                 "params": {pname: {"delta_norm": number(norm(d))} for pname, d in deltas.items()}}
        if isinstance(layer, Conv2d):
            entry["delta"] = array(deltas["weight"])
            entry["delta_per_filter"] = [number(norm(f)) for f in deltas["weight"]]
        layers.append(entry)
    target = after["input"]["target"]
    return {"lr": lr, "loss_before": before["loss"], "loss_after": after["loss"],
            "pred_before": before["pred"], "pred_after": after["pred"],
            "prob_before": before["probs"][target], "prob_after": after["probs"][target], "layers": layers}
