"""The benchmark harness measures what it says: every contender trains the same network on the
same batches, so a timing compares equal work (timings themselves are never asserted here)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lenet_np as ln
from benchmarks.contenders import LenetNpRunner, TorchRunner, end_to_end
from benchmarks.datasets import BATCH_SIZE, synthetic_data
from benchmarks.per_layer import flop_counts

from .test_data import real_data_installed


@pytest.fixture(scope="module")
def data():
    return synthetic_data(seed=3, n_train=4 * BATCH_SIZE, n_test=BATCH_SIZE)


@pytest.mark.numerics
def test_contenders_train_the_same_network_on_the_same_batches(data):
    """Every contender takes the same batches from the same weights: 3 steps of each, with SGD
    in place of Adam (Adam's step is about lr * sign(g), so rounding in a gradient near 0
    becomes a whole step and two correct paths part by up to lr), land within the float64
    floor of the same training (tests/numerics.py). A wrong gradient moves weights by far
    more."""
    torch = pytest.importorskip("torch")
    from benchmarks.contenders import make_torch_lenet

    from .numerics import torch_floor

    runners = {"fast": LenetNpRunner(data), "reference": LenetNpRunner(data, impl="reference"),
               "one-thread": LenetNpRunner(data, workers=1), "torch": TorchRunner(data, threads=1)}
    assert runners["fast"].workers >= 1 and runners["reference"].workers == 1
    lr = 0.1
    for name, r in runners.items():
        r.opt = (torch.optim.SGD(r.net.parameters(), lr=lr) if name == "torch"
                 else ln.optim.SGD(r.net.parameters(), lr=lr))
    perm = np.random.default_rng(0).permutation(len(data.train_labels))
    out = {name: r.train_epoch(perm, limit=3) for name, r in runners.items()}
    assert all(seen == 3 * BATCH_SIZE for _, seen in out.values())
    losses = {name: loss for name, (loss, _) in out.items()}
    assert all(math.isfinite(v) and 1.5 < v < 3.5 for v in losses.values()), losses
    batches = [(data.train_images[idx][:, None].astype(np.float64) / 255, data.train_labels[idx].astype(np.int64))
               for idx in np.split(perm[:3 * BATCH_SIZE], 3)]
    floor = torch_floor(make_torch_lenet(0), batches, lambda ps: torch.optim.SGD(ps, lr=lr), trials=2)
    for name in ("fast", "reference", "one-thread"):
        for key, p in runners[name].net.named_parameters():
            floor.check(p.data, "param:" + key, what=f"{name} {key}")
    for key, p in runners["torch"].net.named_parameters():
        floor.check(p, "param:" + key, what=f"torch float32 {key} (cross-check of the bound)")
    accs = {name: r.evaluate(limit=1) for name, r in runners.items()}
    assert len({seen for _, seen in accs.values()}) == 1


def test_end_to_end_reports_every_contender(data):
    runners = {"lenet_np": LenetNpRunner(data), "reference": LenetNpRunner(data, impl="reference")}
    res = end_to_end(runners, n_train=BATCH_SIZE, n_test=BATCH_SIZE, repeats=2, log=lambda *a: None,
                     n_total=len(data.train_labels))
    for name in runners:
        train = res[name]["train"]
        assert len(train.samples) == 2 and all(math.isfinite(t) and t > 0 for t in train.samples)
        assert train.median == pytest.approx(sum(train.samples) / 2)          # the median of two
        assert res[name]["n_train"] == BATCH_SIZE and res[name]["n_test"] == BATCH_SIZE


def test_flop_count_matches_the_layer_shapes():
    flops = flop_counts()
    # conv.0: 6 x 24 x 24 outputs of 25 MACs; conv.3: 16 x 8 x 8 of 150; the three linear layers
    macs = 6 * 24 * 24 * 25 + 16 * 8 * 8 * 150 + 256 * 120 + 120 * 84 + 84 * 10
    assert sum(r["macs"] for r in flops["layers"]) == macs


def test_gpu_check_script_runs_end_to_end_on_the_cpu(tmp_path):
    """`make gpu-check` gets one try on a lent GPU: its --cpu-smoke mode runs the same code
    on the CuPy stand-in (pytest on one file, the cupy contender, every section), so a broken
    script shows here, not on the GPU's clock."""
    repo = Path(__file__).resolve().parent.parent
    # A budget no loaded machine can exhaust: a section skipped for want of time would fail
    # this test on a slow or busy CPU, which says nothing about the script.
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--budget", "100000",
                          "--pytest-timeout", "100000", "--out", str(tmp_path)], cwd=repo, capture_output=True,
                         text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(repo)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stdout + run.stderr
    reports = sorted(p.name for p in tmp_path.iterdir())
    assert any(n.endswith("-cpu-smoke.md") for n in reports) and "gpu-check.log" in reports, reports
    report = next(tmp_path.glob("*-cpu-smoke.md")).read_text()
    assert "tests/test_cupy_standin.py`: passed" in report and "lenet_np-cupy" in report
    assert "FAILED" not in report and "## Errors" not in report, report


def test_readme_loop_runs_the_readme_code_and_trains():
    """The benchmark times the README's own loop: its set-up, then its loop for any number of
    steps, on the same network from call to call (the loss goes down)."""
    from benchmarks import readme_loop

    code = readme_loop.readme_code()
    assert "for step in range(3):" in code and "model.backward(" in code
    run, namespace = readme_loop.readme_loop(steps=10)
    assert len(namespace["x"]) == BATCH_SIZE and "loss" not in namespace     # set-up only so far
    run()
    assert namespace["step"] == 9                     # range(3) became range(10)
    first = namespace["loss"]
    run()
    run()
    assert namespace["loss"] < first


@pytest.mark.skipif(not real_data_installed(), reason="Fashion-MNIST is not installed (make data)")
def test_command_step_reads_one_epoch_of_the_training_command():
    """One real epoch of python -m lenet_np.train (about 4 s), read back as a step time."""
    from benchmarks import readme_loop

    res = readme_loop.command_step(epochs=1)
    assert res["steps"] == 235          # 60,000 images in batches of 256 (how fast: a benchmark's business)
    assert res["step"] * res["steps"] * res["examples_per_sec"] == pytest.approx(60_000, rel=1e-3)


def test_every_ablation_row_runs_both_sides():
    """Each before/after pair of benchmarks.ablation runs (batch 8, untimed)."""
    from benchmarks import ablation

    labels = []
    for _, _, after_label, before, after in ablation.rows(8):
        before()
        after()
        labels.append(after_label)
    assert "backward_through" in labels and len(labels) >= 10


@pytest.mark.parametrize("variant", ["classic", "d2l", "batchnorm"])
def test_per_layer_benchmark_times_every_layer_of_every_variant(variant):
    """The per-layer section walks the network (LeNet.named_layers), so every layer of any of
    the book's LeNets gets a row, each timed on lenet_np's two forms and the book's torch model
    (one untimed call of each here)."""
    pytest.importorskip("torch")
    import lenet_np as ln
    from benchmarks import per_layer
    from benchmarks.timing import Stats

    def once(contenders):
        out = {}
        for name, (fn, sync) in contenders.items():
            fn()
            sync()
            out[name] = Stats([1.0])
        return out

    rows = per_layer.layer_benchmark(once, batch=4, variant=variant, log=lambda *a: None)
    names = [name for name, _ in ln.LeNet(variant=variant).named_layers()]
    assert set(names) <= set(rows) and {"loss", "optimizer", "step"} <= set(rows)
    assert all(set(rows[n]["forward"]) == {"fast", "reference", "torch"} for n in names)
    assert "Flatten" in {rows[n]["kind"] for n in names}
