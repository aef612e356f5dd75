"""The benchmark harness measures what it says: every contender trains the same network on the
same batches, so a timing compares equal work (timings themselves are never asserted here)."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
import types
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


GPU_REPORT_HEADINGS = ["## Machine", "## Preflight", "## CuPy parity subset", "## Kernels per training step",
                       "## One epoch", "## Per layer, batch 16, float32, on cuda", "## The first training steps",
                       "## Per layer on this machine's CPU, batch 16", "## Examples/s against batch size"]


def test_gpu_check_script_runs_every_section_on_the_cpu(tmp_path):
    """`make gpu-check` gets one try on a lent GPU: its --cpu-smoke mode runs every section on
    the CuPy stand-in (the preflight, a few parity tests, the profiler's timers, the children
    of the first-step section, the CPU table), so a broken script shows here, not on the GPU's
    clock; where torch.profiler records no CUDA activity, the report says so."""
    from benchmarks import gpu_check
    from benchmarks.gpu.common import VARIANTS

    from . import cupy_standin

    repo = Path(__file__).resolve().parent.parent
    # A budget no loaded machine can exhaust: a section skipped for want of time would fail
    # this test on a slow or busy CPU, which says nothing about the script.
    run = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--cpu-smoke", "--budget", "100000",
                          "--out", str(tmp_path)], cwd=repo, capture_output=True,
                         text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(repo), "CUPY_TF32": "0"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Traceback" not in run.stdout + run.stderr
    files = sorted(p.name for p in tmp_path.iterdir())
    stem = next(n for n in files if n.endswith("-cpu-smoke.md"))[:-3]
    assert {f"{stem}.md", f"{stem}.json", f"{stem}-parity.log", "gpu-check.log"} <= set(files), files
    report = (tmp_path / f"{stem}.md").read_text()
    assert [line for line in report.splitlines() if line.startswith("## ")] == GPU_REPORT_HEADINGS, report
    assert "FAILED" not in report and "## Errors" not in report and "Skipped" not in report, report
    ran = re.search(r"\*\*passed\*\*: (\d+) passed of (\d+) selected", report)   # the layer table's cupy cases
    assert ran and ran[1] == ran[2] and int(ran[1]) >= 40, report
    assert "no CUDA activity recorded" in report
    assert "**Data: real Fashion-MNIST" in report or "**Data: synthetic images" in report
    assert "CUPY_TF32=0" in report           # CuPy's matmuls use TF32 only with CUPY_TF32=1: the report says which
    res = json.loads((tmp_path / f"{stem}.json").read_text())
    assert res["gpu"]["cupy_tf32"] == "0" and list(res) == [
        "meta", "gpu", "torch", "machine", *[k for s in gpu_check.SECTIONS for k in s.keys], "errors"]
    assert res["errors"] == {} and all(r["ok"] for r in res["preflight"]["ops"].values())
    assert res["parity"]["counts"] == {"PASSED": int(ran[1])} and res["parity"]["not_run"] == 0
    for variant in VARIANTS:
        k = res["kernels"][variant]
        assert k["profile"]["wall_s"] > 0 and k["profile"]["busy_s"] is None
        if hasattr(cupy_standin, "count_launches"):             # the stand-in predicts the step's launches
            assert k["predicted_total"] > 20 and k["predicted_total"] == pytest.approx(sum(k["predicted"].values()))
    runs = {(r["variant"], r["cache"]): r for r in res["first_step"]}
    assert set(runs) == {*((v, "empty") for v in VARIANTS), ("classic", "on disk")}
    assert all("error" not in r and len(r["steps_s"]) == 4 and r["steady_s"] > 0 for r in runs.values()), runs
    assert res["layers"]["step"]["forward"]["fast"]["device"]["busy_s"] is None
    assert set(res["cpu_layers"]["step"]["forward"]) == {"fast", "reference", "torch"}


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


# -- the commands' shared frame: sections, the report writer ------------------------------------------
def commands():
    from benchmarks import gpu_check, run

    return {"benchmarks.run": run, "benchmarks.gpu_check": gpu_check}


@pytest.mark.parametrize("command", ["benchmarks.run", "benchmarks.gpu_check"])
def test_every_section_is_named_once_and_listed_in_its_commands_docstring(command):
    """A section is one object in its command's SECTIONS: a name of its own, JSON keys no other
    section fills, and what it measures, which the command's docstring lists."""
    module = commands()[command]
    doc = " ".join(module.__doc__.split())
    names = [s.name for s in module.SECTIONS]
    keys = [k for s in module.SECTIONS for k in s.keys]
    assert len(set(names)) == len(names) and len(set(keys)) == len(keys), (names, keys)
    for s in module.SECTIONS:
        assert s.title and callable(s.run), s.name
        assert s.measures and " ".join(s.measures.split()) in doc, f"{command}: {s.name} is not in the docstring"


def test_run_sections_runs_the_chosen_in_order_and_records_failures(tmp_path, capsys):
    """Chosen sections log their heading and add their part in order; a section left out fills
    its keys with null and adds its `absent` lines; with an errors dict a failure is recorded
    and the next section runs; the writer puts header, parts and errors in both files."""
    from benchmarks import report
    from benchmarks.sections import Context, Part, Section, run_sections

    def broken(ctx):
        raise RuntimeError("no device")

    watched = []
    sections = [
        Section("a", "A ({n})", "a", lambda ctx: Part({"a": 1}, ["## A", ""]), keys=("a",)),
        Section("skipped", "S", "s", broken, keys=("s",), absent=("## S", "", "not run", "")),
        Section("b", "B ({n})", "b", broken, keys=("b", "b2")),
        Section("c", "C ({n})", "c", lambda ctx: Part({"c": ctx.results["a"] + 1}, ["## C", ""], files=["p.png"]),
                keys=("c",)),
    ]
    ctx = Context(errors={})
    run_sections(sections, ctx, chosen=lambda s: s.name != "skipped",
                 watch=lambda s: watched.append(s and s.name) or {"n": len(watched)})
    assert watched == ["a", "b", "c", None]
    assert capsys.readouterr().out.split("\n## ")[1:] == ["A (1)\n", "B (2)\n  FAILED: RuntimeError: no device\n",
                                                          "C (3)\n"]
    assert ctx.results == {"a": 1, "s": None, "b": None, "b2": None, "c": 2} and ctx.files == ["p.png"]
    assert list(ctx.results) == ["a", "s", "b", "b2", "c"]
    md, js = report.write_report(tmp_path, "r", ["# R", ""], {"meta": {"x": 1}}, ctx)
    assert md.read_text() == "# R\n\n## A\n\n## S\n\nnot run\n\n## C\n\n## Errors\n\n- b: `RuntimeError: no device`\n"
    assert json.loads(js.read_text()) == {"meta": {"x": 1}, **ctx.results, "errors": {"b": "RuntimeError: no device"}}

    with pytest.raises(RuntimeError, match="no device"):        # no errors dict: a failure stops the command
        run_sections(sections[2:], Context(), watch=lambda s: {"n": 0})
    with pytest.raises(ValueError, match="not among its keys"):
        run_sections([Section("d", "D", "d", lambda ctx: Part({"other": 1}), keys=("d",))], Context())


def test_a_section_runs_within_its_budget_or_is_skipped_with_a_note(tmp_path):
    """With a command deadline, a section runs only while half its budget is left and reads its
    own deadline; otherwise (or when it raises Skipped) the report says why, its keys null,
    nothing recorded as an error."""
    from benchmarks import report
    from benchmarks.sections import Context, Part, Section, Skipped, run_sections, time_left

    seen = {}

    def measure(ctx):
        seen["left"] = time_left(ctx)
        return Part({"m": 1}, ["## M", ""])

    def cannot(ctx):
        raise Skipped("no GPU here.")

    sections = [Section("m", "M", "m", measure, keys=("m",)),
                Section("big", "Big one   ({x})", "b", measure, keys=("big",)),
                Section("gpu", "G", "g", cannot, keys=("g",), heading="On the GPU")]
    ctx = Context(errors={}, deadline=time.perf_counter() + 30)
    run_sections(sections, ctx, watch=lambda s: {"x": 1}, budget=lambda s: {"m": 10, "big": 100}.get(s.name))
    assert 0 < seen["left"] <= 10                          # its own budget, not the command's 30 s
    assert ctx.results == {"m": 1, "big": None, "g": None} and ctx.errors == {}
    assert set(ctx.skipped) == {"big", "gpu"} and "budget is 100 s" in ctx.skipped["big"]
    md, js = report.write_report(tmp_path, "r", ["# R", ""], {}, ctx)
    text = md.read_text()
    assert "## Big one\n\nSkipped: out of time (" in text and "## On the GPU\n\nSkipped: no GPU here." in text
    assert json.loads(js.read_text())["skipped"] == ctx.skipped


def test_kernel_summary_counts_the_device_busy_time_once():
    """Busy time is the union of the device intervals (overlapping kernels of two streams count
    once, the gaps between them not at all); copies and fills are told from kernels; all per call."""
    from benchmarks.timing import kernel_summary

    events = [("k1", 0.0, 10.0), ("k2", 5.0, 15.0),          # overlap: busy 0..15
              ("Memcpy HtoD (Pageable -> Device)", 20.0, 22.0), ("Memset (Device)", 30.0, 31.0),
              ("k1", 40.0, 50.0)]
    s = kernel_summary(events, calls=2, top=2)
    assert s["busy_s"] == pytest.approx((15 + 2 + 1 + 10) * 1e-6 / 2)
    assert s["kernels"] == 1.5 and s["copies"] == 1.0
    assert s["top"] == [("k1", 1.0, pytest.approx(10e-6)), ("k2", 0.5, pytest.approx(5e-6))]
    assert kernel_summary([], calls=3) is None


def test_device_profile_says_what_it_could_not_record():
    """The device timer measures the wall time and a span on the array module's CUDA events
    (the stand-in's read the host clock); where torch.profiler records no CUDA activity (no
    GPU, a CPU build of torch) the busy time is None and a note says why."""
    from benchmarks.timing import NO_CUDA, device_profile

    from . import cupy_standin

    calls = []
    p = device_profile(lambda: calls.append(1) or time.sleep(0.001), calls=5, warmup=1, cuda=cupy_standin.module)
    assert len(calls) == 1 + 5 + 5 and p.calls == 5
    assert p.wall_s >= 0.001 and p.span_s == pytest.approx(p.wall_s, rel=0.5)
    assert not p.recorded and p.busy_s is None and p.kernels is None and p.busy_share is None
    assert any(NO_CUDA in n for n in p.notes), p.notes
    p = device_profile(lambda: None, calls=2, warmup=0, cuda=types.SimpleNamespace(cuda=None))
    assert p.span_s is None and any("no cuda.Event" in n for n in p.notes)


def test_parity_command_runs_the_cupy_cases_in_parallel_where_it_can(monkeypatch):
    """The parity subset: the cupy cases of the files that matter on a GPU, verbose, with
    pytest-xdist and pytest-timeout where installed and neither where not."""
    from benchmarks.gpu import parity
    from benchmarks.gpu.common import PROFILES

    repo = Path(__file__).resolve().parent.parent
    prof = PROFILES["gpu"]
    assert all((repo / f).is_file() and "xp" in (repo / f).read_text() for f in prof["parity_files"])
    monkeypatch.setattr(parity, "has_module", lambda name: True)
    monkeypatch.setattr(parity.importlib.metadata, "version", lambda dist: "3.8.0")
    cmd = parity.parity_command(prof, limit=60, workers=8)
    assert cmd[-len(prof["parity_files"]):] == list(prof["parity_files"])
    joined = " ".join(cmd)
    assert "-k cupy " in joined and " -v " in joined and "-n 8 --dist worksteal" in joined and "--timeout 40" in joined
    assert "--timeout 5 " in " ".join(parity.parity_command(prof, limit=2, workers=8))
    monkeypatch.setattr(parity, "has_module", lambda name: False)
    cmd = parity.parity_command(prof, limit=60, workers=8)
    assert "-n" not in cmd and "--timeout" not in cmd


def test_parity_output_is_read_with_or_without_xdist():
    from benchmarks.gpu.parity import parse_pytest_line

    outcomes, found = {}, {}
    for line in ["collected 181 items / 137 deselected / 44 selected",
                 "tests/a.py::test_x[cupy-conv] PASSED                     [ 50%]",
                 "tests/a.py::test_y[cupy] FAILED                         [100%]",
                 "tests/a.py::test_y[cupy] PASSED"]:
        parse_pytest_line(line, outcomes, found)
    assert found == {"collected": 44}
    assert outcomes == {"tests/a.py::test_x[cupy-conv]": "PASSED", "tests/a.py::test_y[cupy]": "FAILED"}
    outcomes, found = {}, {}
    for line in ["8 workers [164 items]", "", "[gw3] [  1%] PASSED tests/nn/test_layers.py::test_x[cupy-conv]",
                 "[gw0] [ 12%] ERROR tests/test_optim.py::test_z[cupy-adam-kwargs0]",
                 "FAILED tests/test_optim.py::test_q[cupy] - AssertionError: 1 != 2"]:
        parse_pytest_line(line, outcomes, found)
    assert found == {"collected": 164}
    assert outcomes == {"tests/nn/test_layers.py::test_x[cupy-conv]": "PASSED",
                        "tests/test_optim.py::test_z[cupy-adam-kwargs0]": "ERROR"}


def test_parity_run_is_killed_at_its_limit_with_its_workers(tmp_path):
    """The parity subset stops at its hard limit, its whole process group with it (pytest-xdist's
    workers), and says what ran and what did not."""
    from benchmarks.gpu.parity import run_parity

    script = ("import subprocess, sys, time\n"
              "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              "print('collected 3 items', flush=True)\n"
              "print(f'tests/a.py::t[cupy] PASSED   worker {worker.pid}', flush=True)\n"
              "time.sleep(60)\n")
    t0 = time.perf_counter()
    res = run_parity([sys.executable, "-c", script], limit=3, log_path=tmp_path / "p.log")
    assert time.perf_counter() - t0 < 30
    assert res["timed_out"] and res["counts"] == {"PASSED": 1} and res["collected"] == 3 and res["not_run"] == 2
    worker = int((tmp_path / "p.log").read_text().split("worker ")[1].split()[0])
    for _ in range(50):                                    # gone, or a zombie waiting for init to reap it
        stat = Path(f"/proc/{worker}/stat")
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the parity run's worker {worker} outlived its limit")


def test_staged_data_is_what_the_gpu_run_reads(tmp_path):
    """`gpu_check.py --stage` copies the four files as lenet_np.data finds them (and threadpoolctl's
    one file) into one folder that travels with the tree; the GPU run's data comes from there,
    and its source says "real"."""
    from benchmarks import datasets
    from lenet_np.data import FILES, write_idx

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for field, name in FILES.items():
        n = 30 if field.startswith("train") else 10
        arr = rng.integers(0, 256, (n, 28, 28)) if field.endswith("images") else rng.integers(0, 10, n)
        write_idx(src / (name + (".gz" if field != "test_labels" else "")), arr.astype(np.uint8))
    root = tmp_path / ".gpu-data"
    assert datasets.staged_data_dir(root) is None
    copied = datasets.stage(root, data_dir=src, verify=False, log=lambda *a: None)
    staged = datasets.staged_data_dir(root)
    assert staged == root / "fashion-mnist" and sorted(p.name for p in staged.iterdir()) == sorted(
        p.name for p in src.iterdir())
    assert [p.name for p in copied["python"]] == ["threadpoolctl.py"] and datasets.staged_python_dir(root)
    data = datasets.load_data("real", data_dir=staged)
    assert data.source == f"real Fashion-MNIST ({staged})" and data.train_images.shape == (30, 28, 28)
    assert datasets.load_data("real", data_dir=tmp_path / "nowhere").source.startswith("synthetic")


def test_gpu_check_fits_twice_in_the_lent_machines_time():
    """The section budgets add up to at most the script's 300 s, the docstring states each one,
    and make gpu-check's time limit stops a run well before a second one would not fit in the
    machine's 15 minutes (start-up of a few minutes included)."""
    import re

    from benchmarks import gpu_check

    prof = gpu_check.PROFILES["gpu"]
    assert [s.name for s in gpu_check.SECTIONS] == list(prof["budgets"])
    assert sum(prof["budgets"].values()) + 5 <= prof["budget_s"] <= 300
    doc = " ".join(gpu_check.__doc__.split())
    for i, (name, seconds) in enumerate(prof["budgets"].items(), 1):
        assert re.search(rf"{i}\. {name.replace('_', ' ')}, {seconds} s", doc, re.IGNORECASE), name
    rule = (Path(__file__).resolve().parent.parent / "Makefile").read_text().split("\ngpu-check:")[1].split("\n\n")[0]
    kill_after, limit = map(int, re.search(r"timeout -s INT -k (\d+) (\d+)", rule).groups())
    assert prof["budget_s"] < limit and 2 * (limit + kill_after) <= 12 * 60
    assert "--no-log" in rule and "tee -a" in rule and "gpu-check.log" in rule


def test_cpu_benchmark_runs_the_chosen_sections_and_writes_its_report(tmp_path, monkeypatch, capsys):
    """python -m benchmarks.run --only e2e,sweep on tiny sizes: the sections it was given and
    the compute limit (which reads the epoch), in the report's order; the others null in the JSON."""
    pytest.importorskip("torch")
    from benchmarks import run

    tiny = dict(fraction=0.001, e2e_repeats=1, mem_batches=1, layer_repeats=1, layer_min=0.001, sweep_repeats=1,
                sweep_min=0.001, sweep_ref_max=1, peak_repeats=1, readme_rounds=1, readme_steps=1)
    monkeypatch.setitem(run.PROFILES, "quick", tiny)
    monkeypatch.setattr(run, "SWEEP_BATCHES", (1, 2))
    assert run.main(["--quick", "--only", "e2e,sweep", "--epochs-data", "synthetic", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert [line.split("   (")[0] for line in out.splitlines() if line.startswith("## ")] == [
        "## float32 matmul peak", "## 1. End to end", "## 2. Compute limit", "## 5. Batch-size sweep"]
    md = next(tmp_path.glob("cpu-*-quick.md")).read_text()
    assert [line for line in md.splitlines() if line.startswith("## ")] == [
        "## Machine", "## 1. End to end: one epoch", "## 2. The compute limit",
        "## 5. Batch-size sweep: one training step"]
    res = json.loads(next(tmp_path.glob("cpu-*-quick.json")).read_text())
    assert list(res) == ["meta", "machine", "flops", "matmul_peak", "end_to_end", "memory", "layers", "sweep", "readme",
                         "variants"]
    assert res["memory"] is res["layers"] is res["readme"] is res["variants"] is None
    assert set(res["end_to_end"]["results"]) == {"lenet_np", "torch"}
    assert set(res["sweep"]["1"]) == {"lenet_np", "reference", "torch"}         # reference up to sweep_ref_max
    assert set(res["sweep"]["2"]) == {"lenet_np", "torch"}
    assert list(res["meta"]["loadavg_at_sections"]) == ["e2e", "sweep"]


def test_torch_contender_computes_in_float32_not_tf32():
    """The benchmark's torch turns TF32 off, as the parity tests do (torch's cuDNN convolutions
    default to TF32 on CUDA), whatever the flags were before; and the flags read back without
    tripping torch's check against mixing its two ways of setting them."""
    torch = pytest.importorskip("torch")
    from benchmarks.torch_models import ieee_float32, tf32_flags

    new_api = hasattr(torch.backends.cuda.matmul, "fp32_precision")
    try:
        if new_api:
            torch.backends.cuda.matmul.fp32_precision = torch.backends.cudnn.conv.fp32_precision = "tf32"
        else:
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        assert tf32_flags() == {"cudnn_allow_tf32": True, "matmul_allow_tf32": True}
        TorchRunner(threads=1)
        assert tf32_flags() == {"cudnn_allow_tf32": False, "matmul_allow_tf32": False}
        if new_api:
            assert torch.backends.cuda.matmul.fp32_precision == torch.backends.cudnn.conv.fp32_precision == "ieee"
    finally:
        ieee_float32()                  # as tests/torch_ref.py leaves them for the session
