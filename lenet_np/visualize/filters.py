"""filters.png and filters_change.png: every convolution's filters, and how training changed them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import backend
from .arrays import conv_layers, filter_changes
from .mosaic import filter_mosaic
from .plotting import colour_map, pyplot, save


def _stack_filter_panels(panels: list[dict], title: str, width: float = 9.5):
    """A figure of filter mosaics stacked top to bottom, each as wide as the figure allows,
    its colour bar at its right. A panel: {"weight" (O, C, KH, KW), "title", "vmax" (None: its
    own), "cmap", "label", "bias" (None or (O,): shown under the channel numbers), "xticks"}."""
    plt = pyplot()
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
        im = ax.imshow(mos, cmap=colour_map(plt, panel.get("cmap", "RdBu_r")), vmin=-vmax, vmax=vmax,
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
        ax.set_title(panel["title"], loc="left", fontsize=9.5, y=1.0)
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
    return save(fig, path)


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
    return save(fig, path)
