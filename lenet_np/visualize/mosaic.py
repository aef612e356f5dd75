"""Many small maps in one image, NaN (drawn blank) between them: a picture draws one image
per row instead of one axes per channel, which keeps it fast to draw."""

from __future__ import annotations

import numpy as np


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


def rows_canvas(maps: list[np.ndarray], gap: int) -> np.ndarray:
    """2-D images of one shape stacked top to bottom, ``gap`` blank (NaN) rows above each."""
    h, w = maps[0].shape
    out = np.full((len(maps) * (h + gap), w), np.nan)
    for r, m in enumerate(maps):
        out[r * (h + gap) + gap:(r + 1) * (h + gap)] = m
    return out
