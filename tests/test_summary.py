"""python -m lenet_np.summary: the layers, their shapes, parameters and mult-adds."""

from __future__ import annotations

import numpy as np

from lenet_np import LeNet, nn
from lenet_np import summary as summary_mod

from .helpers import exit_status


# -- summary ----------------------------------------------------------------------------------
def test_summary_main(capsys):
    assert summary_mod.main([]) == 0
    out = capsys.readouterr().out
    assert "44,426" in out and "281,640" in out
    for name in ("conv.0: Conv2d", "conv.5: MaxPool2d", "flatten", "fc.4: Linear"):
        assert name in out
    assert summary_mod.main(["--batch-size", "256", "--activation", "relu", "--pool", "avg"]) == 0
    out = capsys.readouterr().out
    assert "[256, 16, 4, 4]" in out and "[256, 256]" in out and "ReLU" in out and "AvgPool2d" in out
    assert "72,099,840" in out                                  # 256 x 281,640


def test_summary_rows_are_the_real_shapes():
    net = LeNet(seed=1)
    rows = summary_mod.summary(net, batch_size=3)
    x = np.zeros((3, 1, 28, 28), dtype=np.float32)
    assert rows[-1]["output_shape"] == net(x).shape == (3, 10)
    assert {r["name"]: r["output_shape"] for r in rows}["conv.5"] == net.conv(x).shape
    assert sum(r["params"] for r in rows) == net.num_parameters() == 44_426
    assert summary_mod.summary(net.double(), 2)[0]["output_shape"] == (2, 6, 24, 24)   # float64 works too


def test_summary_bad_batch_size(capsys):
    assert exit_status(summary_mod.main, ["--batch-size", "0"]) == 2
    assert "argument --batch-size: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_summary_of_a_huge_batch_allocates_nothing(capsys):
    """The shapes are computed: a batch of 10**12 costs nothing (a real forward would need petabytes)."""
    assert summary_mod.main(["--batch-size", str(10 ** 12)]) == 0
    out = capsys.readouterr().out
    assert f"[{10 ** 12}, 16, 4, 4]" in out and f"{281_640 * 10 ** 12:,}" in out


def test_summary_shapes_match_a_forward_pass_with_stride_and_padding():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5), nn.Sigmoid())
    x = np.zeros((2, 3, 15, 13), dtype=np.float32)
    rows = summary_mod.summary(seq, 2, (3, 15, 13))
    for row, layer in zip(rows, seq):
        x = layer(x)
        assert row["output_shape"] == x.shape, row["name"]
