"""feature_maps.png and its backward twin gradient_maps.png: one image through every layer and
back. A row per layer with a 4-D output (one panel per channel, the panels in one mosaic), a
strip per fully connected layer, a colour bar beside each row (each row on its own scale),
and the class scores at the bottom; the layers are named as in ``print(net)``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..trace import CLASS_NAMES
from .arrays import layer_gradients, layer_outputs, softmax
from .mosaic import mosaic
from .plotting import colour_map, pyplot, save, side_colorbar

ACTIVATION_TYPES = ("Sigmoid", "ReLU")


def _rows(outputs):
    """The 4-D rows (the input and every map-shaped layer), the vector rows (every fully
    connected layer but the last; not the flatten, whose values are the row above it) and the last."""
    maps = [o for o in outputs if o[2].ndim == 4]
    vectors = [o for o in outputs[:-1] if o[2].ndim == 2 and o[1] not in ("reshape", "Flatten")]
    return maps, vectors, outputs[-1]


def _figure(plt, maps, vectors):
    """A figure with a grid row per 4-D map (as many columns as the widest has channels, plus
    one for the colour bar), a thin row per vector and a tall last row."""
    ncols = max(o[2].shape[1] for o in maps)
    fig = plt.figure(figsize=(ncols * 0.95 + 1.8, 1.25 * len(maps) + 0.55 * len(vectors) + 2.6))
    grid = fig.add_gridspec(len(maps) + len(vectors) + 1, ncols + 1, hspace=0.9, wspace=0.0,
                            height_ratios=[1] * len(maps) + [0.3] * len(vectors) + [1.5])
    return fig, grid, ncols


def _map_row(fig, cell, chans, colours, title, scale, label):
    """(C, H, W) channels side by side in ``cell``, titled, its colour bar beside it.
    ``scale``: (vmin, vmax, colour-bar ticks, tick labels); vmin, vmax None: the data's range."""
    vmin, vmax, ticks, labels = scale
    ax = fig.add_subplot(cell)
    im = ax.imshow(mosaic(chans), cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title(title, loc="left", fontsize=9, y=1.0)
    ax.set_label(label)
    side_colorbar(fig, ax, im, ticks, labels, 0.12)
    return ax


def _strip_row(fig, cell, vec, colours, title, scale, label):
    """A vector as a one-pixel-high strip across ``cell``, titled, its colour bar beside it."""
    vmin, vmax, ticks, labels = scale
    ax = fig.add_subplot(cell)
    im = ax.imshow(vec[None, :], aspect="auto", cmap=colours, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_yticks([])
    ax.set_xticks([])
    ax.set_title(title, loc="left", fontsize=9, y=1.0)
    ax.set_label(label)
    side_colorbar(fig, ax, im, ticks, labels, "1%")
    return ax


def _value_scale(a):
    lo, hi = float(a.min()), float(a.max())
    return None, None, [lo, hi] if hi > lo else [lo], [f"{lo:.2g}", f"{hi:.2g}"] if hi > lo else [f"{lo:.2g}"]


def _class_bars(ax, values, label, pred, ylim, ylabel):
    """One bar per class: the true class green, a wrong prediction red, the others grey."""
    colors = ["tab:green" if k == label else ("tab:red" if k == pred else "tab:gray") for k in range(len(values))]
    ax.bar(range(len(values)), values, color=colors)
    ax.set_xticks(range(len(values)))
    ax.set_xticklabels(CLASS_NAMES, fontsize=8)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)


def plot_feature_maps(net, image, label, path: Path, source: str) -> Path:
    """One image through every layer: a row per layer, one panel per channel, a colour bar per row."""
    plt = pyplot()
    maps, vectors, last = _rows(layer_outputs(net, image[None]))
    probs = softmax(last[2][0])
    fig, grid, _ = _figure(plt, maps, vectors)
    for row, (name, kind, out) in enumerate(maps):
        chans = out[0]                                           # (C, H, W): one panel per channel
        title = "input" if name == "input" else f"{name} {kind}"
        _map_row(fig, grid[row, :chans.shape[0] + 1], chans, colour_map(plt, "gray" if name == "input" else "viridis"),
                 f"{title} {tuple(chans.shape)}   values {chans.min():.2f} .. {chans.max():.2f}",
                 _value_scale(chans), name)
    for i, (name, kind, out) in enumerate(vectors):
        vec = out[0]
        _strip_row(fig, grid[len(maps) + i, :], vec, "viridis",
                   f"{name} {kind} ({vec.size},)   values {vec.min():.2f} .. {vec.max():.2f}", _value_scale(vec), name)
    ax = fig.add_subplot(grid[-1, :])
    pred = int(np.argmax(probs))
    _class_bars(ax, probs, label, pred, (0, 1), "probability")
    ax.set_title(f"{last[0]} {last[1]} -> softmax: predicted {CLASS_NAMES[pred]} ({probs[pred]:.2f}); "
                 f"true {CLASS_NAMES[label]} (green)", loc="left", fontsize=9, y=1.0)
    fig.suptitle(f"One image through LeNet ({source}): every layer's output, one panel per channel\n"
                 "(each row on its own colour scale, its colour bar beside it)", fontsize=11)
    fig.subplots_adjust(top=0.92, bottom=0.05, left=0.04, right=0.96)
    return save(fig, path)


# -- the backward twin ------------------------------------------------------------------------------
def _grad_scale(g):
    """A symmetric scale about 0 (white) up to the largest |g|, its ticks -v, 0, v."""
    v = float(np.abs(g).max())
    if v == 0:
        return -1.0, 1.0, [0.0], ["0"]
    return -v, v, [-v, 0.0, v], [f"{-v:.1e}", "0", f"{v:.1e}"]


def _grad_note(rows, i, layers) -> str:
    """What the layer after row i does to the gradient on its way back to row i, where the picture
    shows it: max pooling keeps one pixel of each window, a sigmoid multiplies by y(1 - y) <= 1/4,
    ReLU passes it where its input was > 0."""
    g = rows[i][2]
    nonzero = f"nonzero {np.count_nonzero(g) / g.size:.0%}"
    if i + 1 == len(rows):
        return nonzero
    name, kind, after = rows[i + 1]
    if kind == "MaxPool2d":
        kh, kw = layers[name].kernel_size
        return f"{nonzero}: max pooling ({name}) sends each {kh}x{kw} window's gradient to its maximum only"
    if kind == "Sigmoid":
        v, w = float(np.abs(g).max()), float(np.abs(after).max())
        ratio = f"x{v / w:.2f}" if w > 0 else "0"
        return f"{nonzero}; |.|max {ratio} of {name}'s: the sigmoid's y(1 - y) <= 1/4 shrinks it"
    if kind == "ReLU":
        return f"{nonzero}: ReLU ({name}) passes it only where its input is > 0"
    return nonzero


def _magnitudes(ax, rows):
    """The largest |dL/d(output)| of every row, log scale, in forward order."""
    from matplotlib.ticker import NullFormatter

    values = [float(np.abs(g).max()) for _, _, g in rows]
    colors = ["tab:orange" if k in ACTIVATION_TYPES else "tab:green" if "Pool" in k else "tab:blue"
              for _, k, _ in rows]
    ax.bar(range(len(rows)), [v if v > 0 else np.nan for v in values], color=colors)
    ax.set_yscale("log")
    shown = [v for v in values if v > 0] or [1.0]
    ax.set_ylim(10 ** np.floor(np.log10(min(shown))), 10 ** np.ceil(np.log10(max(shown))))   # whole decades
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([n for n, _, _ in rows], fontsize=7, rotation=60)
    ax.set_ylabel("|.|max", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Each layer's largest |dL/d(output)|, log scale\n(orange: activation, green: pooling, "
                 "blue: the other layers)", loc="left", fontsize=9, y=1.0)


def draw_gradient_maps(net, image, label: int, source: str):
    """The figure of gradient_maps.png (not saved): for ``image`` (1, 28, 28) and its true class
    ``label``, dL/d(output) of every layer (``layer_gradients``, one ``backprop`` pass in
    evaluation mode), laid out as feature_maps.png lays out the outputs, each layer named as in
    ``print(net)``. Each map or strip axes carries the layer's name as its label (``ax.get_label()``)."""
    plt = pyplot()
    rows = [r for r in layer_gradients(net, image[None], np.array([label])) if r[1] not in ("reshape", "Flatten")]
    maps, vectors, last = _rows(rows)
    layers = dict(net.named_layers())
    index = {name: i for i, (name, _, _) in enumerate(rows)}
    probs = last[2][0].astype(np.float64) + np.eye(len(last[2][0]))[label]     # dL/dlogits = softmax - one-hot
    fig, grid, ncols = _figure(plt, maps, vectors)
    diverging = colour_map(plt, "RdBu_r")
    for row, (name, _, g) in enumerate(maps):
        chans = g[0]
        what = "input: dL/dimage (saliency)" if name == "input" else f"{name} {layers[name]!r}"
        _map_row(fig, grid[row, :chans.shape[0] + 1], chans, diverging,
                 f"{what} {tuple(chans.shape)}   |.|max {np.abs(chans).max():.1e}, "
                 f"{_grad_note(rows, index[name], layers)}", _grad_scale(chans), name)
    for i, (name, _, g) in enumerate(vectors):
        vec = g[0]
        _strip_row(fig, grid[len(maps) + i, :], vec, diverging,
                   f"{name} {layers[name]!r} ({vec.size},)   |.|max {np.abs(vec).max():.1e}, "
                   f"{_grad_note(rows, index[name], layers)}", _grad_scale(vec), name)
    half = ncols // 2
    ax = fig.add_subplot(grid[-1, :half])
    pred = int(np.argmax(probs))
    v = float(np.abs(last[2][0]).max()) * 1.15 or 1.0              # each in (-1, 1); small when it is sure and right
    _class_bars(ax, last[2][0], label, pred, (-v, v), "dL/dlogit")
    ax.axhline(0, color="black", lw=0.6)
    ax.tick_params(axis="x", labelrotation=30)
    ax.set_label(last[0])
    ax.set_title(f"{last[0]} {layers[last[0]]!r}: dL/dlogits = softmax - one-hot\ntrue {CLASS_NAMES[label]} "
                 f"(green) {last[2][0, label]:+.2f}; predicted {CLASS_NAMES[pred]} (p = {probs[pred]:.2f})",
                 loc="left", fontsize=9, y=1.0)
    _magnitudes(fig.add_subplot(grid[-1, half + 2:]), rows)
    fig.suptitle(f"The backward pass for one image ({source}): dL/d(output) of every layer for the cross-entropy "
                 "of the TRUE class, one panel per channel\n(lenet_np.backprop in evaluation mode; red > 0 > blue, "
                 "white 0, each row on its own scale symmetric about 0; the gradient flows from the loss at the "
                 "bottom up to the image)", fontsize=11)
    fig.subplots_adjust(top=0.92, bottom=0.07, left=0.04, right=0.96)
    return fig


def plot_gradient_maps(net, image, label: int, path: Path, source: str) -> Path:
    """gradient_maps.png: ``draw_gradient_maps``, written atomically at ``path``."""
    return save(draw_gradient_maps(net, image, label, source), path)
