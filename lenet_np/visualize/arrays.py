"""The numbers behind the pictures, as NumPy arrays, without matplotlib: every layer's output
and dL/d(output) for a batch, the convolutions' activations and their class means,
probabilities and the most confident mistakes, saliency (dL/dimage), the network as
training started, and the per-step metrics' positions and gradient-norm ratios."""

from __future__ import annotations

import numpy as np

from .. import backend
from ..backprop import backprop
from ..checkpoint import NETWORK_SETTINGS
from ..evaluate import predict_logits
from ..model import ACTIVATIONS, LeNet
from ..nn import Conv2d, CrossEntropyLoss


# -- the network --------------------------------------------------------------------------------
def describe(net) -> str:
    """LeNet(variant=..., activation=..., pool=...) with what the network has of these."""
    return "LeNet(" + ", ".join(f"{k}={getattr(net, k)!r}" for k in NETWORK_SETTINGS if hasattr(net, k)) + ")"


def conv_layers(net) -> list[tuple[str, Conv2d]]:
    """(name, layer) of every Conv2d, in forward order."""
    return [(name, m) for name, m in net.named_layers() if isinstance(m, Conv2d)]


def initial_network(settings: dict):
    """The network as training started, recreated from the checkpoint's settings (its seed
    and architecture), or None when the settings hold no seed."""
    if not isinstance(settings.get("seed"), int):
        return None
    return LeNet(**{k: settings[k] for k in NETWORK_SETTINGS if k in settings}, seed=settings["seed"])


def filter_changes(net, initial) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """(name, initial weight, trained weight, |W - W0| / |W0|) of every convolution."""
    out = []
    for (name, a), (_, b) in zip(conv_layers(initial), conv_layers(net)):
        w0, w1 = backend.as_numpy(a.weight.data), backend.as_numpy(b.weight.data)
        out.append((name, w0, w1, float(np.linalg.norm(w1 - w0) / max(np.linalg.norm(w0), 1e-30))))
    return out


# -- forward: every layer's output ------------------------------------------------------------------
def _walk(net, x):
    """Yield (name, type, output) for every layer, in the book's order (``LeNet.walk``), in
    evaluation mode; the mode the network was in is restored."""
    was_training = net.training
    net.eval()
    try:
        for name, layer, out in net.walk(x):
            yield name, type(layer).__name__, out
    finally:
        net.train(was_training)


def layer_outputs(net, x) -> list[tuple[str, str, np.ndarray]]:
    """(name, type, output as NumPy) for the input and every layer (evaluation mode)."""
    return [("input", "", backend.as_numpy(x))] + [(n, t, backend.as_numpy(o)) for n, t, o in _walk(net, x)]


def conv_activations(net, x, count: int = 2) -> list[tuple[str, str, np.ndarray]]:
    """For the first ``count`` convolutions: (conv's name, activation's name, the output of
    the first activation (Sigmoid, ReLU) after it) as NumPy, e.g. ("conv.0", "conv.1", (N, 6, 24, 24))."""
    acts, conv = [], None
    kinds = {cls.__name__ for cls in ACTIVATIONS.values()}
    for name, kind, out in _walk(net, x):
        if kind == "Conv2d":
            conv = name
        elif kind in kinds and conv is not None:
            acts.append((conv, name, backend.as_numpy(out)))
            conv = None
            if len(acts) == count:
                break
    return acts


def class_means(net, images, count: int = 2, batch_size: int = 500) -> list[np.ndarray]:
    """The mean over ``images`` of each of the first ``count`` convolutions' activations
    (conv_activations), in float64, computed in batches."""
    total = None
    for start in range(0, len(images), batch_size):
        part = [a.astype(np.float64).sum(axis=0) for _, _, a in conv_activations(net, images[start:start + batch_size],
                                                                                  count)]
        total = part if total is None else [t + q for t, q in zip(total, part)]
    return [t / len(images) for t in total]


# -- backward: every layer's gradient ---------------------------------------------------------------
def layer_gradients(net, images, labels) -> list[tuple[str, str, np.ndarray]]:
    """(name, type, dL/d(output) as NumPy) for the input (dL/dimage) and every layer, from one
    ``lenet_np.backprop.backprop`` pass in evaluation mode: L is the cross-entropy of
    ``labels``, the mean over the batch (for one image, that image's own loss). The mode the
    network was in is restored and its parameter gradients are cleared."""
    was_training = net.training
    net.eval()
    try:
        result = backprop(net, images, labels)
    finally:
        net.zero_grad()
        net.train(was_training)
    return ([("input", "", backend.as_numpy(result.input_grad))]
            + [(p.name, type(p.layer).__name__, backend.as_numpy(p.grad)) for p in result.layers])


def input_gradients(net, images, labels) -> tuple[np.ndarray, np.ndarray]:
    """(dL_i/dimage_i (N, 1, 28, 28), probabilities (N, 10)): for each image, the gradient
    of its own cross-entropy loss for its true class with respect to its pixels, by
    ``net.backward`` in evaluation mode. The loss of the batch is the mean, so its gradient
    is multiplied by N to give each image's own."""
    loss_fn = CrossEntropyLoss()
    was_training = net.training
    net.eval()
    try:
        net.zero_grad()
        logits = net(images)
        loss_fn(logits, labels)
        grad = net.backward(loss_fn.backward())
        net.zero_grad()
    finally:
        net.train(was_training)
    return backend.as_numpy(grad) * len(images), softmax(logits)


# -- predictions --------------------------------------------------------------------------------------
def softmax(logits) -> np.ndarray:
    """Softmax probabilities, float64 NumPy, of logits (N, K) (or (K,)) on any device."""
    z = backend.as_numpy(logits).astype(np.float64)
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def predict_proba(net, images, batch_size: int = 1000) -> np.ndarray:
    """Softmax probabilities (N, 10), float64, of ``images`` (as ``evaluate.predict_logits``
    takes them), in evaluation mode."""
    return softmax(predict_logits(net, images, batch_size))


def most_confident_mistakes(probs, labels, count: int) -> np.ndarray:
    """Indices of up to ``count`` misclassified examples, the most confident first: sorted by
    the probability of the predicted class, descending (ties: the lower index first)."""
    probs, labels = np.asarray(probs), np.asarray(labels)
    preds = probs.argmax(axis=1)
    wrong = np.flatnonzero(preds != labels)
    confidence = probs[wrong, preds[wrong]]
    return wrong[np.argsort(-confidence, kind="stable")][:count]


def saliency_examples(probs, labels, correct: int = 4, wrong: int = 2) -> np.ndarray:
    """Indices for saliency.png: the first ``correct`` correctly classified test images and the
    first ``wrong`` misclassified ones (fewer of a kind when there are not enough)."""
    preds = probs.argmax(axis=1)
    right = np.flatnonzero(preds == labels)[:correct]
    mistakes = np.flatnonzero(preds != labels)[:wrong]
    return np.concatenate([right, mistakes])


# -- the per-step metrics (read by lenet_np.metrics) ----------------------------------------------
def fractional_epochs(steps: dict) -> np.ndarray:
    """Each row's position in epochs (1.0 = the end of epoch 1), from its step and the last
    step of its epoch (train writes a row at the last step of every epoch). The epochs are
    taken to be equally long, which gives the start of the file's first epoch."""
    epoch, step = steps["epoch"], steps["step"].astype(np.float64)
    ends = {int(e): step[epoch == e].max() for e in np.unique(epoch)}
    first = int(epoch[0])
    bounds = {first - 1: ends[first] * (first - 1) / first}
    bounds.update(ends)
    out = np.empty(len(step))
    for i, (e, s) in enumerate(zip(epoch, step)):
        start = bounds.get(int(e) - 1, bounds[int(e)] - 1)
        out[i] = e - 1 + (s - start) / max(bounds[int(e)] - start, 1)
    return out


def _first_last_weights(names) -> tuple[str, str] | None:
    weights = [n for n in names if n.endswith(".weight")]
    return (weights[0], weights[-1]) if len(weights) >= 2 else None


def norm_ratios(steps: dict) -> dict | None:
    """How the first layer's weight gradient compares with the last one's: {"first", "last",
    "ratio_first_row", "ratio_last_row", "ratio_median"} (first / last), or None without two
    weight columns."""
    pair = _first_last_weights(steps["grad_norms"])
    if pair is None:
        return None
    a, b = (steps["grad_norms"][k] for k in pair)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    finite = r[np.isfinite(r)]
    return {"first": pair[0], "last": pair[1], "ratio_first_row": float(r[0]), "ratio_last_row": float(r[-1]),
            "ratio_median": float(np.median(finite)) if finite.size else float("nan")}
