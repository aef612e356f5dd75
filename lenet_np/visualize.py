"""Pictures of a trained LeNet, forward and backward: ``python -m lenet_np.visualize``.

    python -m lenet_np.visualize --checkpoint PATH --out DIR [--metrics FILE] [--steps FILE [FILE ...]]

Writes PNG files (matplotlib, Agg backend) into DIR:

    filters.png              the filters of every convolution (conv.0's 6 and conv.3's 16x6),
                             one panel per layer, each with its colour bar
    filters_change.png       the same filters at initialisation (recreated from the
                             checkpoint's seed), after training, and the change
    feature_maps.png         one test image through every layer, a colour bar per row
    activations_compare.png  the first two convolutions' activations for two classes
                             (--classes, default Pullover Coat), four images each, and the
                             difference of the two classes' mean activations
    saliency.png             dL/dimage of the true class's loss for a few test images: the
                             image, the gradient, and both overlaid
    mistakes.png             the most confident mistakes (highest predicted probability first)
    gradient_norms.png       every parameter's gradient norm over the training steps (log
                             scale), one panel per per-step metrics file, same y scale
    curves.png               loss per step and per epoch, train and test accuracy

The network is the checkpoint's (``checkpoint.load_network``). The per-epoch metrics come
from --metrics (as written by ``lenet_np.train --metrics``) or else from the checkpoint's
history; the per-step metrics from --steps, by default the ``.steps`` file beside --metrics
(``metrics.csv`` -> ``metrics.steps.csv``); ``lenet_np.metrics`` reads both. The test images
come from ``lenet_np.data`` (``--data-dir``, else its search path); when no ``--data-dir`` is
given and no data set is found, random images stand in (the pictures say so). Each PNG is
written atomically: a failed run leaves no half-written file. The network is any LeNet
variant: the layers are found by type (every Conv2d, the activation after it), not by name.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import textwrap
from pathlib import Path

import numpy as np

from . import backend, cli
from .checkpoint import NETWORK_SETTINGS, CheckpointError, atomic_write, load_network
from .evaluate import predict_logits
from .metrics import MetricsError, epoch_rows, read_epochs, read_steps, steps_path
from .model import ACTIVATIONS, LeNet
from .nn import Conv2d, CrossEntropyLoss
from .trace import CLASS_NAMES, ToolError, describe_weights, load_test_set


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only), or a ToolError saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ToolError("the pictures need matplotlib, which is not installed: pip install matplotlib "
                        "(or pip install -e '.[plot]')") from None
    return plt


def _save(fig, path: Path) -> Path:
    """Write the figure as a PNG at ``path`` atomically (the whole file or none)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def _wrap(text: str, width_in: float) -> str:
    """``text`` wrapped for a figure ``width_in`` inches wide (about 9 characters per inch at 11 pt)."""
    return "\n".join(textwrap.wrap(text, width=max(20, int(width_in * 9)), break_on_hyphens=False))


# -- the network --------------------------------------------------------------------------------
def describe(net) -> str:
    """LeNet(variant=..., activation=..., pool=...) with what the network has of these."""
    return "LeNet(" + ", ".join(f"{k}={getattr(net, k)!r}" for k in NETWORK_SETTINGS if hasattr(net, k)) + ")"


def conv_layers(net) -> list[tuple[str, Conv2d]]:
    """(name, layer) of every Conv2d, in forward order."""
    return [(name, m) for name, m in net.named_layers() if isinstance(m, Conv2d)]


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


# -- the pictures -------------------------------------------------------------------------------
def mosaic(maps, gap: int = 1) -> np.ndarray:
    """(C, H, W) maps side by side in one (H, C*(W + gap) - gap) image, NaN (blank) between."""
    c, h, w = maps.shape
    out = np.full((h, c * (w + gap) - gap), np.nan, dtype=np.float64)
    for k in range(c):
        out[:, k * (w + gap):k * (w + gap) + w] = maps[k]
    return out


def grid_mosaic(maps, rows: int, gap: int = 1) -> np.ndarray:
    """(C, H, W) maps in a grid of ``rows`` rows (filled row by row), NaN (blank) between."""
    c, h, w = maps.shape
    cols = -(-c // rows)
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan, dtype=np.float64)
    for k in range(c):
        r, q = divmod(k, cols)
        out[r * (h + gap):r * (h + gap) + h, q * (w + gap):q * (w + gap) + w] = maps[k]
    return out


def filter_mosaic(weight, gap: int = 1) -> np.ndarray:
    """A conv weight (O, C, KH, KW) as one image: row c, column o holds the filter from input
    channel c to output channel o."""
    o, c, kh, kw = weight.shape
    out = np.full((c * (kh + gap) - gap, o * (kw + gap) - gap), np.nan, dtype=np.float64)
    for ci in range(c):
        out[ci * (kh + gap):ci * (kh + gap) + kh] = mosaic(weight[:, ci], gap)
    return out


def _cmap(plt, name):
    return plt.get_cmap(name).with_extremes(bad="white")


def _stack_filter_panels(panels: list[dict], title: str, width: float = 9.5):
    """A figure of filter mosaics stacked top to bottom, each as wide as the figure allows,
    its colour bar at its right. A panel: {"weight" (O, C, KH, KW), "title", "vmax" (None: its
    own), "cmap", "label", "bias" (None or (O,): shown under the channel numbers), "xticks"}."""
    plt = _pyplot()
    left, right, head = 0.75, 1.35, 0.55                        # inches
    img_w = width - left - right
    sizes = []
    for panel in panels:
        mos = filter_mosaic(panel["weight"])
        below = (0.75 if panel.get("bias") is not None else 0.6) if panel.get("xticks", True) else 0.12
        sizes.append((mos, img_w * mos.shape[0] / mos.shape[1], below))
    height = head + sum(0.3 + h + below for _, h, below in sizes)
    fig = plt.figure(figsize=(width, height))
    y = height - head
    for panel, (mos, h, below) in zip(panels, sizes):
        y -= 0.3 + h
        ax = fig.add_axes([left / width, y / height, img_w / width, h / height])
        cax = fig.add_axes([(left + img_w + 0.15) / width, y / height, 0.18 / width, h / height])
        y -= below
        w = panel["weight"]
        o, c, kh, kw = w.shape
        vmax = panel.get("vmax") or float(np.abs(w).max()) or 1.0
        im = ax.imshow(mos, cmap=_cmap(plt, panel.get("cmap", "RdBu_r")), vmin=-vmax, vmax=vmax,
                       interpolation="nearest", aspect="auto")
        bias = panel.get("bias")
        ax.set_xticks([k * (kw + 1) + (kw - 1) / 2 for k in range(o)])
        if panel.get("xticks", True):
            ax.set_xticklabels([str(k) if bias is None else f"{k}\n{bias[k]:+.2f}" for k in range(o)], fontsize=7)
            ax.set_xlabel("output channel" + ("" if bias is None else " (its bias below)"), fontsize=8, labelpad=2)
        else:
            ax.set_xticklabels([])
        ax.set_yticks([k * (kh + 1) + (kh - 1) / 2 for k in range(c)])
        ax.set_yticklabels([str(k) for k in range(c)], fontsize=7)
        ax.tick_params(length=0)
        ax.set_ylabel("input ch.", fontsize=8)
        ax.set_title(panel["title"], loc="left", fontsize=9.5)
        cbar = fig.colorbar(im, cax=cax)
        cbar.set_label(panel.get("label", "weight"), fontsize=8)
        cbar.ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=11, y=1 - 0.18 / height, va="top")
    return fig


def plot_filters(net, path: Path) -> Path:
    """Every convolution's filters, one panel per layer (row: input channel, column: output
    channel), each on its own symmetric colour scale (blue < 0 < red) with its colour bar."""
    panels = []
    for name, conv in conv_layers(net):
        w = backend.as_numpy(conv.weight.data)
        bias = backend.as_numpy(conv.bias.data) if getattr(conv, "bias", None) is not None else None
        o, c, kh, kw = w.shape
        panels.append({"weight": w, "bias": bias,
                       "title": f"{name}.weight {tuple(w.shape)}: {o} filters of {c} channel(s), {kh}x{kw}; "
                                f"values {w.min():+.2f} .. {w.max():+.2f}"})
    fig = _stack_filter_panels(panels, "The convolutions' filters (red > 0 > blue; each layer on its own scale)")
    return _save(fig, path)


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


def plot_filters_change(net, initial, path: Path, seed) -> Path:
    """For every convolution: its filters at initialisation and after training, one above the
    other on one scale, and the change (trained - initial) on its own; a colour bar per panel."""
    panels = []
    for name, w0, w1, rel in filter_changes(net, initial):
        vmax = float(max(np.abs(w0).max(), np.abs(w1).max()))
        panels += [{"weight": w0, "vmax": vmax, "xticks": False,
                    "title": f"{name}.weight at initialisation (seed {seed})"},
                   {"weight": w1, "vmax": vmax, "xticks": False,
                    "title": f"{name}.weight after training (same scale)"},
                   {"weight": w1 - w0, "cmap": "PuOr_r", "label": "change",
                    "title": f"{name}.weight change, trained - initial (own scale): |W - W0| / |W0| = {rel:.2f}"}]
    fig = _stack_filter_panels(panels, "The filters at initialisation, after training, and the change")
    return _save(fig, path)


def plot_feature_maps(net, image, label, path: Path, source: str) -> Path:
    """One image through every layer: a row per layer, one panel per channel, a colour bar per row."""
    plt = _pyplot()
    outputs = layer_outputs(net, image[None])
    maps = [o for o in outputs if o[2].ndim == 4]                # the input and every 4-D output
    last = outputs[-1]
    vectors = [o for o in outputs[:-1] if o[2].ndim == 2 and o[1] not in ("reshape", "Flatten")]
    probs = softmax(last[2][0])
    ncols = max(o[2].shape[1] for o in maps)
    fig = plt.figure(figsize=(ncols * 0.95 + 1.8, 1.25 * len(maps) + 0.55 * len(vectors) + 2.6))
    grid = fig.add_gridspec(len(maps) + len(vectors) + 1, ncols + 1, hspace=0.9, wspace=0.0,
                            height_ratios=[1] * len(maps) + [0.3] * len(vectors) + [1.5])
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    def colorbar(ax, im, lo, hi, size):                          # beside the image, as tall as it
        divider = make_axes_locatable(ax)
        divider.set_anchor("W")                                  # rows start at the left edge
        cax = divider.append_axes("right", size=size, pad=0.06)
        cbar = fig.colorbar(im, cax=cax, ticks=[lo, hi] if hi > lo else [lo])
        cbar.ax.tick_params(labelsize=7, length=2)
        cbar.ax.set_yticklabels([f"{lo:.2g}", f"{hi:.2g}"] if hi > lo else [f"{lo:.2g}"])

    for row, (name, kind, out) in enumerate(maps):
        chans = out[0]                                           # (C, H, W): one panel per channel
        ax = fig.add_subplot(grid[row, :chans.shape[0] + 1])
        cmap = _cmap(plt, "gray" if name == "input" else "viridis")
        im = ax.imshow(mosaic(chans), cmap=cmap, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for side in ax.spines.values():
            side.set_visible(False)
        title = "input" if name == "input" else f"{name} {kind}"
        ax.set_title(f"{title} {tuple(chans.shape)}   values {chans.min():.2f} .. {chans.max():.2f}",
                     loc="left", fontsize=9)
        colorbar(ax, im, float(chans.min()), float(chans.max()), 0.12)
    for i, (name, kind, out) in enumerate(vectors):
        ax = fig.add_subplot(grid[len(maps) + i, :])
        vec = out[0]
        im = ax.imshow(vec[None, :], aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_title(f"{name} {kind} ({vec.size},)   values {vec.min():.2f} .. {vec.max():.2f}", loc="left", fontsize=9)
        colorbar(ax, im, float(vec.min()), float(vec.max()), "1%")
    ax = fig.add_subplot(grid[-1, :])
    pred = int(np.argmax(probs))
    colors = ["tab:green" if k == label else ("tab:red" if k == pred else "tab:gray") for k in range(len(probs))]
    ax.bar(range(len(probs)), probs, color=colors)
    ax.set_xticks(range(len(probs)))
    ax.set_xticklabels(CLASS_NAMES, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(f"{last[0]} {last[1]} -> softmax: predicted {CLASS_NAMES[pred]} ({probs[pred]:.2f}); "
                 f"true {CLASS_NAMES[label]} (green)", loc="left", fontsize=9)
    fig.suptitle(f"One image through LeNet ({source}): every layer's output, one panel per channel\n"
                 "(each row on its own colour scale, its colour bar beside it)", fontsize=11)
    fig.subplots_adjust(top=0.92, bottom=0.05, left=0.04, right=0.96)
    return _save(fig, path)


def plot_mistakes(images, labels, probs, path: Path, source: str, max_images: int = 25) -> Path:
    """A grid of the most confident mistakes, each titled with its true class, its predicted
    class and the probability the network gave it (one image of all of them: fast to draw)."""
    plt = _pyplot()
    preds = probs.argmax(axis=1)
    n_wrong = int((preds != labels).sum())
    shown = most_confident_mistakes(probs, labels, max_images)
    cols = max(1, int(np.ceil(np.sqrt(len(shown)))))
    rows = max(1, int(np.ceil(len(shown) / cols)))
    h, w = images.shape[2:]
    gap_x, gap_y = 4, 10                                         # pixels between images; room for the titles
    pitch_x, pitch_y = w + gap_x, h + gap_y
    canvas = np.full((rows * pitch_y, cols * pitch_x - gap_x), np.nan)
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        canvas[r * pitch_y + gap_y:(r + 1) * pitch_y, c * pitch_x:c * pitch_x + w] = images[i, 0]
    inch = 1.9 / pitch_x                                         # inches per image pixel
    width = max(canvas.shape[1] * inch + 0.4, 5.0)               # room for the title however few images
    acc = 1 - n_wrong / len(labels)
    note = (f"The {len(shown)} most confident of the {n_wrong} mistakes ({source}; accuracy {acc:.3f}), "
            "sorted by the probability of the predicted class" if n_wrong
            else f"no misclassified image among {len(labels)} ({source})")
    note = _wrap(note, width)
    title_h = 0.25 * (note.count("\n") + 1) + 0.3
    grid_h = canvas.shape[0] * inch if len(shown) else 0.3
    fig = plt.figure(figsize=(width, grid_h + title_h + 0.1))
    ax = fig.add_axes([(width - canvas.shape[1] * inch) / 2 / width, 0.1 / (grid_h + title_h + 0.1),
                       canvas.shape[1] * inch / width, grid_h / (grid_h + title_h + 0.1)])
    ax.axis("off")
    if len(shown):
        ax.imshow(canvas, cmap=_cmap(plt, "gray"), vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        ax.text(c * pitch_x + (w - 1) / 2, r * pitch_y + gap_y - 1.2,
                f"#{i} true: {CLASS_NAMES[labels[i]]}\npred: {CLASS_NAMES[preds[i]]} p={probs[i, preds[i]]:.2f}",
                ha="center", va="bottom", fontsize=8)
    fig.suptitle(note, fontsize=11, y=1 - 0.12 / (grid_h + title_h + 0.1), va="top")
    return _save(fig, path)


def saliency_examples(probs, labels, correct: int = 4, wrong: int = 2) -> np.ndarray:
    """Indices for saliency.png: the first ``correct`` correctly classified test images and the
    first ``wrong`` misclassified ones (fewer of a kind when there are not enough)."""
    preds = probs.argmax(axis=1)
    right = np.flatnonzero(preds == labels)[:correct]
    mistakes = np.flatnonzero(preds != labels)[:wrong]
    return np.concatenate([right, mistakes])


def plot_saliency(net, images, labels, indices, path: Path, source: str) -> Path:
    """Per image (a column): the image, dL/dimage of its true class's loss (diverging colour
    map centred on 0, its colour bar), and the gradient over the image."""
    plt = _pyplot()
    grads, probs = input_gradients(net, images[indices], labels[indices])
    n = len(indices)
    fig = plt.figure(figsize=(2.35 * n + 0.6, 8.3))
    grid = fig.add_gridspec(4, n, height_ratios=[1, 1, 0.06, 1], hspace=0.42, wspace=0.25)
    for j, i in enumerate(indices):
        img, g = images[i, 0], grads[j, 0]
        pred, true = int(probs[j].argmax()), int(labels[i])
        vmax = float(np.abs(g).max()) or 1.0
        ax_img, ax_grad, ax_over = (fig.add_subplot(grid[r, j]) for r in (0, 1, 3))
        ax_img.imshow(img, cmap="gray", vmin=0, vmax=1)
        mark = "" if pred == true else "  WRONG"
        ax_img.set_title(f"#{i} true: {CLASS_NAMES[true]}\npred: {CLASS_NAMES[pred]} p={probs[j, pred]:.2f}{mark}",
                         fontsize=8, color="black" if pred == true else "tab:red")
        im = ax_grad.imshow(g, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax_grad.set_title(f"dL/dx, |.|max {vmax:.1e}", fontsize=8)
        cbar = fig.colorbar(im, cax=fig.add_subplot(grid[2, j]), orientation="horizontal", ticks=[-vmax, 0, vmax])
        cbar.ax.set_xticklabels([f"{-vmax:.1e}", "0", f"{vmax:.1e}"])
        cbar.ax.tick_params(labelsize=7)
        ax_over.imshow(img, cmap="gray", vmin=0, vmax=1)
        rgba = plt.get_cmap("RdBu_r")((g / vmax + 1) / 2)
        rgba[..., 3] = np.clip(np.abs(g) / vmax * 1.5, 0, 1)    # opaque where the gradient is large
        ax_over.imshow(rgba)
        ax_over.set_title("overlay", fontsize=8)
        for a in (ax_img, ax_grad, ax_over):
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(_wrap(f"Saliency ({source}): dL/d(pixel) of each image's cross-entropy for its TRUE class, "
                       "by net.backward. Red: brightening the pixel raises the loss; blue: lowers it. "
                       "Each column on its own scale.", 2.35 * n + 0.6), fontsize=10)
    fig.subplots_adjust(top=0.86, bottom=0.02, left=0.02, right=0.98)
    return _save(fig, path)


def _layer_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


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


def plot_gradient_norms(runs: list[tuple[str, dict]], path: Path) -> Path:
    """One panel per run (label, read_steps(...)), side by side on the same log y scale: the
    L2 norm of every parameter's gradient over the steps; a colour per layer, weights solid,
    biases dotted, other parameters dashed."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(6.4 * len(runs) + 2.4, 5.4), sharey=True, squeeze=False)
    axes = axes[0]
    layers = list(dict.fromkeys(_layer_of(n) for _, s in runs for n in s["grad_norms"]))
    colors = {layer: plt.get_cmap("tab10" if len(layers) <= 10 else "tab20")(k % 20) for k, layer in enumerate(layers)}
    handles = {}
    for ax, (label, steps) in zip(axes, runs):
        for name, values in steps["grad_norms"].items():
            kind = name.rsplit(".", 1)[-1]
            style = {"weight": "-", "bias": ":"}.get(kind, "--")
            shown = np.where(values > 0, values, np.nan)         # log scale: zeros cannot be drawn
            (line,) = ax.plot(steps["step"], shown, style, color=colors[_layer_of(name)],
                              lw=1.6 if kind == "weight" else 1.1, label=name)
            handles.setdefault(name, line)
        epoch = steps["epoch"]
        for e in np.unique(epoch)[:-1]:
            ax.axvline(steps["step"][epoch == e].max(), color="gray", lw=0.6, ls="--", alpha=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("training step (dashed: end of an epoch)")
        ax.grid(alpha=0.3, which="both")
        r = norm_ratios(steps)
        extra = ("" if r is None else f"\n|grad {r['first']}| / |grad {r['last']}|: {r['ratio_first_row']:.2g} at "
                 f"step {steps['step'][0]}, {r['ratio_last_row']:.2g} at step {steps['step'][-1]}, "
                 f"median {r['ratio_median']:.2g}")
        ax.set_title(f"{label}{extra}", fontsize=9)
    axes[0].set_ylabel("L2 norm of the parameter's gradient (log scale)")
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=8, frameon=False)
    width = 6.4 * len(runs) + 2.4
    fig.suptitle(_wrap("Gradient norms per parameter over training (the vanishing-gradient lesson: the layers "
                       "far from the loss get smaller gradients)", width), fontsize=11)
    fig.subplots_adjust(left=0.8 / width, right=1 - 2.2 / width, top=0.8, bottom=0.11, wspace=0.08)
    return _save(fig, path)


def class_means(net, images, count: int = 2, batch_size: int = 500) -> list[np.ndarray]:
    """The mean over ``images`` of each of the first ``count`` convolutions' activations
    (conv_activations), in float64, computed in batches."""
    total = None
    for start in range(0, len(images), batch_size):
        part = [a.astype(np.float64).sum(axis=0) for _, _, a in conv_activations(net, images[start:start + batch_size],
                                                                                  count)]
        total = part if total is None else [t + q for t, q in zip(total, part)]
    return [t / len(images) for t in total]


def _rows_canvas(maps: list[np.ndarray], gap: int) -> np.ndarray:
    """2-D images of one shape stacked top to bottom, ``gap`` blank (NaN) rows above each."""
    h, w = maps[0].shape
    out = np.full((len(maps) * (h + gap), w), np.nan)
    for r, m in enumerate(maps):
        out[r * (h + gap) + gap:(r + 1) * (h + gap)] = m
    return out


def plot_activations_compare(net, images, labels, classes, path: Path, source: str, per_class: int = 4) -> Path:
    """The first two convolutions' activations for ``per_class`` images of each of two classes
    (one row per image, one colour scale per layer), and in the last row the difference of the
    two classes' mean activations over all their test images. Each column is one image (rows
    stacked), so the figure has few axes and draws fast."""
    plt = _pyplot()
    picks = [np.flatnonzero(labels == c) for c in classes]
    shown = np.concatenate([p[:per_class] for p in picks])
    acts = conv_activations(net, images[shown])                  # [(conv, act, (R, C, H, W)), ...]
    means = [class_means(net, images[p]) for p in picks]
    names = [CLASS_NAMES[c] for c in classes]

    def layout(a):                                               # (C, H, W) -> a mosaic of 1 or 2 rows
        return grid_mosaic(a, 1 if a.shape[0] <= 8 else 2)

    mean_images = [images[p, 0].astype(np.float64).mean(axis=0) for p in picks]
    columns = [("input", [images[i, 0].astype(np.float64) for i in shown], "gray", (0.0, 1.0),
                mean_images[0] - mean_images[1])]
    for (conv, act, a), m0, m1 in zip(acts, *means):
        columns.append((f"{act}: {conv}'s activation {tuple(a.shape[1:])}", [layout(x) for x in a], "viridis",
                        (float(a.min()), float(a.max())), layout(m0 - m1)))
    n = len(shown)
    row_in, left, head, cbar_w, after = 0.95, 1.0, 0.95, 0.14, 0.75      # inches
    sizes = []
    for _, maps, *_ in columns:
        h, w = maps[0].shape
        gap = max(2, round(0.15 * h))
        sizes.append((gap, row_in * w / (h + gap)))               # (gap in pixels, column width in inches)
    diff_h = row_in * 1.05
    width = left + sum(w + cbar_w + after for _, w in sizes) + 0.1
    height = head + n * row_in + 0.55 + diff_h + 0.15
    fig = plt.figure(figsize=(width, height))
    x = left
    for k, ((title, maps, cmap, (lo, hi), diff), (gap, col_w)) in enumerate(zip(columns, sizes)):
        bottom = height - head - n * row_in
        ax = fig.add_axes([x / width, bottom / height, col_w / width, n * row_in / height])
        canvas = _rows_canvas(maps, gap)
        im = ax.imshow(canvas, cmap=_cmap(plt, cmap), vmin=lo, vmax=hi, interpolation="nearest", aspect="auto",
                       extent=(0, canvas.shape[1] / (maps[0].shape[0] + gap), n, 0))
        ax.axis("off")
        ax.axhline(min(per_class, len(picks[0])), color="black", lw=1.5)      # between the two classes
        ax.set_title(title, fontsize=9)
        if k == 0:
            for r, i in enumerate(shown):
                cls = 0 if r < min(per_class, len(picks[0])) else 1
                ax.text(-0.1, r + 0.55, f"{names[cls]}\n#{i}", ha="right", va="center", fontsize=8,
                        color=("tab:blue", "tab:orange")[cls])
        else:
            cax = fig.add_axes([(x + col_w + 0.08) / width, bottom / height, cbar_w / width, n * row_in / height])
            fig.colorbar(im, cax=cax).ax.tick_params(labelsize=7)
        # the difference of the class means, on its own symmetric scale
        h, w = diff.shape
        dh = min(diff_h, col_w * h / w)
        dax = fig.add_axes([x / width, 0.15 / height, col_w / width, dh / height])
        v = float(np.nanmax(np.abs(diff))) or 1.0
        im = dax.imshow(diff, cmap=_cmap(plt, "RdBu_r"), vmin=-v, vmax=v, interpolation="nearest", aspect="auto")
        dax.axis("off")
        dax.set_title(f"mean {names[0]} - mean {names[1]}", fontsize=8)
        cax = fig.add_axes([(x + col_w + 0.08) / width, 0.15 / height, cbar_w / width, dh / height])
        fig.colorbar(im, cax=cax).ax.tick_params(labelsize=6)
        x += col_w + cbar_w + after
    fig.text(0.1 / width, (0.15 + diff_h / 2) / height, f"class means\n({len(picks[0])} and\n{len(picks[1])} "
             "images)", fontsize=8, va="center")
    fig.suptitle(_wrap(f"Activations of the first two convolutions: {names[0]} (upper rows) vs {names[1]} "
                       f"({source}); one colour scale per layer. Last row: the difference of the class means, "
                       f"red where {names[0]} is brighter or activates more, blue where {names[1]} does",
                       width), fontsize=10, y=1 - 0.1 / height, va="top")
    return _save(fig, path)


RUNNING_NOTE = ("Train accuracy is a running average over the epoch of a model that changes at every step "
                "(drawn mid-epoch); test accuracy is measured on the model at the end of the epoch. Early on, "
                "the model improves during the epoch, so its train accuracy can sit below its test accuracy.")


def plot_curves(history: list[dict], path: Path, source: str, steps: dict | None = None,
                steps_source: str = "") -> Path:
    """Training loss per step (from ``steps``, when given) and per epoch, and train and test
    accuracy per epoch, with a note on why train accuracy can sit below test accuracy."""
    plt = _pyplot()
    epochs = np.array([h["epoch"] for h in history])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.9))
    if steps is not None:
        ax1.plot(fractional_epochs(steps), steps["loss"], "-", lw=1, color="tab:blue", alpha=0.7,
                 label="train loss, mean since the previous logged step")
    ax1.plot(epochs - 0.5, [h["loss"] for h in history], "o-" if len(epochs) > 1 else "o", color="tab:red",
             label="train loss, mean over the epoch (drawn mid-epoch)")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_title("Training loss" + (f"\nper step: {steps_source}" if steps is not None else ""), fontsize=10)
    ax2.plot(epochs - 0.5, [h["train_acc"] for h in history], "o-" if len(epochs) > 1 else "o",
             label="train acc (running, mid-epoch)")
    ax2.plot(epochs, [h["test_acc"] for h in history], "s-" if len(epochs) > 1 else "s",
             label="test acc (end of epoch)")
    ax2.set_ylabel("accuracy")
    ax2.set_title("Accuracy", fontsize=10)
    last = int(epochs.max())
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.set_xlim(0, last + 0.05)
        ax.set_xticks(range(0, last + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.text(0.5, 0.015, _wrap(RUNNING_NOTE, 11 * 1.05), ha="center", va="bottom", fontsize=8.5, style="italic")
    fig.suptitle(f"Training curves ({source})", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return _save(fig, path)


# -- the command line ---------------------------------------------------------------------------
MAX_MISTAKES = 100
MAX_STEPS_FILES = 4
DEFAULT_CLASSES = ("Pullover", "Coat")


def _class_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def class_name(text: str) -> int:
    """A ``type=`` for a Fashion-MNIST class name, in any case (spaces, hyphens and the slash
    may be left out: "ankle-boot", "tshirttop"); returns its index."""
    key = _class_key(text)
    for k, name in enumerate(CLASS_NAMES):
        if key and key == _class_key(name):
            return k
    raise argparse.ArgumentTypeError(f"expected a class name, one of {', '.join(CLASS_NAMES)} (any case), "
                                     f"got {text!r}")


class_name.__name__ = "class name"


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m lenet_np.visualize",
                   description="Draw a trained LeNet, forward and backward: filters (and how training changed "
                               "them), feature maps, activations of two classes, saliency (dL/dimage), the most "
                               "confident mistakes, gradient norms over training, training curves (PNG files).")
    p.add_argument("--checkpoint", type=cli.existing_file, required=True,
                   help="a .npz checkpoint written by python -m lenet_np.train")
    p.add_argument("--out", type=cli.output_dir, required=True,
                   help="directory for the PNG files (created if needed)")
    p.add_argument("--metrics", type=cli.existing_file, default=None,
                   help="per-epoch metrics (.csv or .json) for curves.png; default: the checkpoint's history")
    p.add_argument("--steps", type=cli.existing_file, nargs="+", default=None, metavar="FILE",
                   help=f"per-step metrics files (1 to {MAX_STEPS_FILES}) for gradient_norms.png, one panel each "
                        "(e.g. a sigmoid run and a ReLU run), and for the per-step loss in curves.png (the first "
                        "file); default: the .steps file beside --metrics, when there is one")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None,
                   help="directory of the Fashion-MNIST files (default: search; random images when none is found)")
    p.add_argument("--image", type=cli.non_negative_int, default=0,
                   help="index of the test image for feature_maps.png (default 0)")
    p.add_argument("--classes", type=class_name, nargs=2, default=None, metavar="NAME",
                   help=f"two different classes for activations_compare.png, by name in any case "
                        f"(default {' '.join(DEFAULT_CLASSES)})")
    p.add_argument("--max-mistakes", "--max-misclassified", dest="max_mistakes",
                   type=cli.int_in_range(1, MAX_MISTAKES), default=25,
                   help=f"images in mistakes.png, 1 to {MAX_MISTAKES} (default 25); --max-misclassified is "
                        "the older name")
    return p


def parse_args(argv=None):
    """The parsed command line; what argparse cannot check alone ends it the same way (exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps is not None and len(args.steps) > MAX_STEPS_FILES:
        parser.error(f"argument --steps: expected 1 to {MAX_STEPS_FILES} files, got {len(args.steps)}")
    if args.classes is None:
        args.classes = [CLASS_NAMES.index(c) for c in DEFAULT_CLASSES]
    elif args.classes[0] == args.classes[1]:
        parser.error(f"argument --classes: expected two different classes, got {CLASS_NAMES[args.classes[0]]} twice")
    return args


def steps_files(steps, metrics) -> list[Path]:
    """The per-step files to draw: those given (--steps), else the .steps file beside the
    per-epoch metrics when there is one, else none."""
    if steps:
        return [Path(f) for f in steps]
    if metrics and steps_path(metrics).is_file():
        return [steps_path(metrics)]
    return []


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def _run_label(path: Path) -> str:
    """A steps file's name with its directory (the run), e.g. relu/metrics.steps.csv."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def run(args) -> list[Path]:
    _pyplot()                                                    # fail early without matplotlib
    net, meta = load_network(args.checkpoint)
    settings, where = meta.get("settings", {}), describe_weights(args.checkpoint, meta)
    history = read_epochs(args.metrics) if args.metrics else None
    runs = [(Path(f), read_steps(f)) for f in steps_files(args.steps, args.metrics)]
    test, why = load_test_set(args.data_dir)
    if test is not None:
        (images, labels), source = test, "Fashion-MNIST test set"
    else:
        rng = np.random.default_rng(0)
        images = rng.random((200, 1, 28, 28), dtype=np.float32)
        labels = rng.integers(0, 10, len(images))
        source = "RANDOM images and labels, no data found"
        _note(f"{why}; drawing random images instead")
    if not 0 <= args.image < len(images):
        raise ToolError(f"--image must lie in 0..{len(images) - 1} ({source}), got {args.image}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"--out {out}: cannot create the directory ({exc.strerror})") from None

    written = [plot_filters(net, out / "filters.png")]
    initial = initial_network(settings)
    if initial is not None:
        written.append(plot_filters_change(net, initial, out / "filters_change.png", settings["seed"]))
    else:
        _note("the checkpoint's settings hold no seed, so the initial weights cannot be recreated: "
              "filters_change.png skipped")
    written.append(plot_feature_maps(net, images[args.image], int(labels[args.image]), out / "feature_maps.png",
                                     f"{source}, image #{args.image}"))
    present = [c for c in args.classes if np.any(labels == c)]
    if len(present) == 2:
        written.append(plot_activations_compare(net, images, labels, args.classes, out / "activations_compare.png",
                                                source))
    else:
        missing = [CLASS_NAMES[c] for c in args.classes if c not in present]
        _note(f"no {' and no '.join(missing)} among the {len(labels)} test images: activations_compare.png skipped")
    probs = predict_proba(net, images)
    written.append(plot_saliency(net, images, labels, saliency_examples(probs, labels), out / "saliency.png", source))
    written.append(plot_mistakes(images, labels, probs, out / "mistakes.png", source, args.max_mistakes))

    with_norms = [(_run_label(p), s) for p, s in runs if s["grad_norms"]]
    if with_norms:
        written.append(plot_gradient_norms(with_norms, out / "gradient_norms.png"))
    elif runs:
        _note("the per-step metrics hold no grad_norm:<parameter> columns: gradient_norms.png skipped")
    else:
        _note("no per-step metrics (--steps, or a .steps file beside --metrics): gradient_norms.png skipped")

    if history is None:                                          # the history train.py stores in the meta
        hist_source = f"history in {args.checkpoint}"
        try:
            history = epoch_rows(meta.get("history", []))
        except ValueError:                                       # a foreign history: no curves
            history = None
    else:
        hist_source = str(args.metrics)
    if history:
        first = runs[0] if runs else None
        written.append(plot_curves(history, out / "curves.png", hist_source, first[1] if first else None,
                                   str(first[0]) if first else ""))
    else:
        _note("no metrics (--metrics) and no history in the checkpoint: curves.png skipped")
    print(f"{describe(net)}, weights: {where}")
    return written


def _run(args) -> int:
    try:
        written = run(args)
    except (ToolError, CheckpointError, MetricsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    return cli.guard(_run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
