"""What the visualize tests share: PNG checks, and per-step files as ``train --metrics PATH``
writes them beside PATH (PATH's stem + ".steps" + its suffix): columns epoch, step, loss, then
grad_norm:<parameter> in named_parameters() order (and, since the run's settings are recorded,
variant, activation, pool; ``steps_rows`` writes the older files without them)."""

from __future__ import annotations

import csv
import json
import struct

import numpy as np

from lenet_np import LeNet

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PARAM_NAMES = [n for n, _ in LeNet(seed=0).named_parameters()]


def png_size(path):
    """(width, height) of a PNG file, after checking its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_picture(path, min_w=400, min_h=250):
    """A PNG of a sensible size whose pixels are not all one colour."""
    w, h = png_size(path)
    assert min_w <= w <= 4000 and min_h <= h <= 4000, (path.name, w, h)
    import matplotlib.image
    pixels = (matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint32)
    assert pixels.std() > 10, path.name                           # drawn on, not an empty canvas
    colours = np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2])
    assert len(colours) > 50, path.name                           # colour maps, not only text


def steps_rows(names, n_epochs=2, steps_per_epoch=7, every=3, seed=0):
    """Rows as ``train --metrics`` writes them: one every ``every`` steps and at each epoch's last step."""
    rng = np.random.default_rng(seed)
    rows = []
    for epoch in range(1, n_epochs + 1):
        for s in range(1, steps_per_epoch + 1):
            step = (epoch - 1) * steps_per_epoch + s
            if step % every == 0 or s == steps_per_epoch:
                rows.append({"epoch": epoch, "step": step, "loss": round(2.3 / step ** 0.3, 6),
                             **{f"grad_norm:{n}": float(rng.uniform(1e-4, 1) * 10 ** -k) for k, n in enumerate(names)}})
    return rows


def write_steps(path, rows):
    """Rows as a per-step file of the format before the run's settings were recorded."""
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    else:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return path
