"""activations_compare.png: the first two convolutions' activations for two classes, and the
difference of the two classes' mean activations."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..trace import CLASS_NAMES
from .arrays import class_means, conv_activations
from .mosaic import grid_mosaic, rows_canvas
from .plotting import colour_map, pyplot, save, wrap


def plot_activations_compare(net, images, labels, classes, path: Path, source: str, per_class: int = 4) -> Path:
    """The first two convolutions' activations for ``per_class`` images of each of two classes
    (one row per image, one colour scale per layer), and in the last row the difference of the
    two classes' mean activations over all their test images. Each column is one image (rows
    stacked), so the figure has few axes and draws fast."""
    plt = pyplot()
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
    for k, ((title, maps, colours, (lo, hi), diff), (gap, col_w)) in enumerate(zip(columns, sizes)):
        bottom = height - head - n * row_in
        ax = fig.add_axes([x / width, bottom / height, col_w / width, n * row_in / height])
        canvas = rows_canvas(maps, gap)
        im = ax.imshow(canvas, cmap=colour_map(plt, colours), vmin=lo, vmax=hi, interpolation="nearest", aspect="auto",
                       extent=(0, canvas.shape[1] / (maps[0].shape[0] + gap), n, 0))
        ax.axis("off")
        ax.axhline(min(per_class, len(picks[0])), color="black", lw=1.5)      # between the two classes
        ax.set_title(title, fontsize=9, y=1.0)
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
        im = dax.imshow(diff, cmap=colour_map(plt, "RdBu_r"), vmin=-v, vmax=v, interpolation="nearest", aspect="auto")
        dax.axis("off")
        dax.set_title(f"mean {names[0]} - mean {names[1]}", fontsize=8, y=1.0)
        cax = fig.add_axes([(x + col_w + 0.08) / width, 0.15 / height, cbar_w / width, dh / height])
        fig.colorbar(im, cax=cax).ax.tick_params(labelsize=6)
        x += col_w + cbar_w + after
    fig.text(0.1 / width, (0.15 + diff_h / 2) / height, f"class means\n({len(picks[0])} and\n{len(picks[1])} "
             "images)", fontsize=8, va="center")
    fig.suptitle(wrap(f"Activations of the first two convolutions: {names[0]} (upper rows) vs {names[1]} "
                       f"({source}); one colour scale per layer. Last row: the difference of the class means, "
                       f"red where {names[0]} is brighter or activates more, blue where {names[1]} does",
                       width), fontsize=10, y=1 - 0.1 / height, va="top")
    return save(fig, path)
