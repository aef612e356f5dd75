"""The explorer in a real browser (headless Chromium through Playwright), clicked through as a
learner would: the numbers the page shows are lenet_np's, to the last digit."""

from __future__ import annotations

import struct

import numpy as np
import pytest

import lenet_np as ln
from lenet_np.backprop import backprop
from lenet_np.explore import Explorer
from lenet_np.trace import load_test_set

from .conftest import Served, synthetic_test_set
from .walkthrough import browser_missing, walk

MISSING = browser_missing()
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"no browser to drive: {MISSING}")


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_a_learner_clicks_through(tmp_path):
    test, _ = load_test_set()                      # the real images where they are installed
    images, labels = test if test is not None else synthetic_test_set(n=20)
    served = Served(Explorer(ln.LeNet(seed=0), "freshly initialised (seed 0)", test_set=(images, labels),
                             untrained=True))
    index, layer = 12, "conv.3"
    try:
        seen = walk(served.url, tmp_path, index=index, layer=layer, lr=0.01)
    finally:
        served.close()

    def computed(x, target):
        return backprop(ln.LeNet(seed=0).eval(), x, np.array([target]))

    def norm_of(bp, name):
        return float(np.linalg.norm(next(p.grad for p in bp.layers if p.name == name).astype(np.float64)))

    # (1) the loss and a layer's gradient norm on the page are lenet_np's, at full precision
    bp = computed(images[index:index + 1], int(labels[index]))
    first = seen["first"]
    assert first["status"] == ""
    assert first["loss"] == bp.loss
    assert first["grad_norm"] == norm_of(bp, layer)
    assert first["probs"] == bp.probabilities()[0].tolist()
    # hovering a cell of conv.0's output shows its value
    value = float(bp.layers[0].output[0, 0, 5, 10])
    assert seen["tooltip"] is not None and seen["tooltip"].startswith("conv.0 output · channel 0 · (row 5, col 10) = ")
    assert float(seen["tooltip"].rsplit("= ", 1)[1]) == pytest.approx(value, rel=1e-6, abs=1e-12)
    # (2) a stroke changes the drawing, and the prediction follows it
    sent = seen["drawn"]["sent"]["input"]
    assert sent["source"] == "drawn" and sum(v > 0.5 for v in sent["pixels"]) >= 20
    drawn = np.array(sent["pixels"], dtype=np.float32).reshape(1, 1, 28, 28)
    dbp = computed(drawn, seen["drawn"]["pred"])
    assert seen["drawn"]["probs"] == dbp.probabilities()[0].tolist() and seen["drawn"]["loss"] == dbp.loss
    assert seen["drawn"]["probs"] != seen["blank"]["probs"]
    assert seen["drawn"]["pred"] == int(np.argmax(dbp.probabilities()[0]))
    # (3) one small SGD step lowers the target's loss
    assert seen["again_first"]["loss"] == first["loss"]
    step = seen["step"]
    assert step["before"] == first["loss"] and step["after"] == step["loss"] < first["loss"] and step["steps"] == 1
    # (4) undo: the first numbers again
    assert seen["undone"]["loss"] == first["loss"] and seen["undone"]["grad_norm"] == first["grad_norm"]
    assert seen["undone"]["steps"] == 0
    # (5) a quiet console, and nothing loaded from anywhere but the explorer
    assert seen["console_errors"] == [] and seen["page_errors"] == []
    assert seen["hosts"] == [f"127.0.0.1:{served.port}"]
    # (6) the screenshots (docs/screenshots/explorer-*.png come from python -m tests.explore.walkthrough)
    names = sorted(p.name for p in seen["shots"])
    assert names == ["explorer-backward.png", "explorer-draw.png", "explorer-forward.png", "explorer-norms.png",
                     "explorer-step.png"]
    for path in seen["shots"]:
        width, height = png_size(path)
        assert width >= 300 and height >= 150 and path.stat().st_size > 5_000, (path, width, height)
