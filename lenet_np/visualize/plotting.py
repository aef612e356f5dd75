"""What every picture needs from matplotlib: the Agg backend, an atomic PNG write, text
wrapped to the figure's width, colour maps that leave NaN blank, a colour bar beside an image."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from ..checkpoint import atomic_write
from ..trace import ToolError


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only), or a ToolError saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ToolError("the pictures need matplotlib, which is not installed: pip install matplotlib "
                        "(or pip install -e '.[plot]')") from None
    return plt


def save(fig, path: Path) -> Path:
    """Write the figure as a PNG at ``path`` atomically (the whole file or none)."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


def wrap(text: str, width_in: float) -> str:
    """``text`` wrapped for a figure ``width_in`` inches wide (about 9 characters per inch at 11 pt)."""
    return "\n".join(textwrap.wrap(text, width=max(20, int(width_in * 9)), break_on_hyphens=False))


def colour_map(plt, name):
    """The colour map ``name``, white where the value is NaN (the gaps of a mosaic)."""
    return plt.get_cmap(name).with_extremes(bad="white")


def side_colorbar(fig, ax, im, ticks, labels, size):
    """A colour bar at the right of ``ax``, as tall as its image, the row starting at the left edge."""
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    divider = make_axes_locatable(ax)
    divider.set_anchor("W")
    cax = divider.append_axes("right", size=size, pad=0.06)
    cbar = fig.colorbar(im, cax=cax, ticks=ticks)
    cbar.ax.tick_params(labelsize=7, length=2)
    cbar.ax.set_yticklabels(labels)
    return cbar
