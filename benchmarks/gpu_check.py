"""GPU check: CuPy's parity tests and the GPU benchmarks on a lent CUDA machine, in one go.

    python benchmarks/gpu_check.py --stage            here, first: the data travels in .gpu-data/
    make gpu-check                                    there (or: PYTHONPATH=. python benchmarks/gpu_check.py)

Run from the repository root. Needs CuPy and a CUDA device (PyTorch with CUDA for the torch
columns and the device's own times, matplotlib for the plot; both optional). A lent GPU is
lent once, for about 15 minutes with its start-up: the whole script keeps to 300 s (``--budget``),
so that a second run fits, and spends them in the order of what matters most. Each section
has a time budget; it runs only while half of it is left of the whole, stops its loops at its
own deadline, and is skipped with a note in the report otherwise. The sections (``SECTIONS``):

1. preflight, 20 s: the GPU (name, memory, compute capability), CuPy, the CUDA runtime, driver
   and toolkit (NVRTC, cuBLAS: without them CuPy finds the device and then fails at the first
   kernel), one elementwise operation, one reduction and one matmul checked on the device,
   whether torch.profiler sees CuPy's kernels, the Python packages, and the data;
2. parity, 60 s at most: CuPy's parity subset (the tests parametrised on ``xp`` that matter on a
   GPU, their cupy cases only, in parallel with pytest-xdist, pytest-timeout per test), killed
   at its limit;
3. kernels, 30 s: one training step of each LeNet variant as the training command runs it:
   the wall time, the device's busy time and kernel count from torch.profiler, and the
   kernel launches the CuPy stand-in predicts for the same step;
4. epoch, 45 s: one training epoch (60,000 examples, batch 256, Adam) and one test-set
   evaluation on Fashion-MNIST: lenet_np on CuPy against torch CUDA, lenet_np on NumPy and
   torch on the CPU (a fraction of the epoch, scaled);
5. layers, 45 s: every layer's forward and backward at batch 256 on CuPy (fast and reference)
   and torch CUDA: the wall time per call and the device's busy time and kernels per call;
6. first step, 30 s: the first training steps of each variant in a fresh process with an empty
   kernel cache (NVRTC compiles every kernel on first use), then with the cache on disk;
7. CPU layers, 35 s: the same per-layer table on this machine's CPU, NumPy against torch;
8. sweep, 25 s: examples/s against batch size (1 .. 4096): NumPy, CuPy, torch CPU, torch CUDA,
   with a plot.

torch runs with TF32 off, and the report records ``CUPY_TF32``.

Writes ``gpu-YYYY-MM-DD.md``, ``.json``, ``.png`` and the parity run's full pytest output
(``gpu-YYYY-MM-DD-parity.log``) into ``$OUT`` when set, else into ``benchmarks/results/``, and
copies everything it prints into ``gpu-check.log`` there (not with ``--no-log``: ``make gpu-check``
tees it itself). Without CuPy or a GPU it says so and exits with status 2; with a failed
preflight or a failed parity test, 1. ``--cpu-smoke`` runs every section on a machine without a
GPU, tiny and fast: device "cuda" is then the test suite's NumPy-backed CuPy stand-in
(``tests/cupy_standin.py``), the parity subset is a few quick tests, and torch.profiler
records no CUDA activity (the report says so). A check of this script before its one try on a GPU.

``--stage`` copies the four Fashion-MNIST files (wherever ``lenet_np.data`` finds them) and
``threadpoolctl.py`` into ``.gpu-data/`` (ignored by git); carried to the GPU machine with the
working tree, they are found there (``--data-dir`` names another folder). CuPy for CUDA 13 is
``cupy-cuda13x``; ``cupy-cuda13x[ctk]`` brings the CUDA toolkit's libraries with it.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # run as a script: make `benchmarks` and `lenet_np` importable
    sys.path.insert(0, str(REPO))

from benchmarks.sections import (  # noqa: E402  (needs no NumPy)
    Context,
    Part,
    Section,
    Skipped,
    log,
    run_sections,
    skip,
    time_left,
)

# the benchmark modules, imported in main() once the GPU check has passed (they need NumPy)
contenders = datasets = machine = per_layer = report = timing = None

CUPY_PACKAGE = "cupy-cuda13x"          # lenet_np.backend.CUPY_PACKAGE: the CuPy wheel for CUDA 13
SWEEP_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
VARIANTS = ("classic", "d2l", "batchnorm")
EXIT_NO_GPU = 2
CHILD_TAG = "GPU_CHECK_CHILD "          # a child process's one line of results: the tag, then JSON
PARITY_FILES = ("tests/nn/test_layers.py", "tests/nn/test_batchnorm.py", "tests/test_backprop.py",
                "tests/test_model_torch.py", "tests/test_optim.py")

PROFILES = {
    # budget_s: the whole script; budgets: each section's seconds (see the docstring)
    "gpu": dict(budget_s=300,
                budgets=dict(preflight=20, parity=60, kernels=30, epoch=45, layers=45, first_step=30,
                             cpu_layers=35, sweep=25),
                parity_files=PARITY_FILES, parity_k="cupy", parity_test_timeout=40, parity_workers=8,
                step_batch=256, step_calls=20,
                e2e_repeats=3, cpu_fraction=0.1, gpu_fraction=1.0,
                layer_batch=256, layer_min=0.02, layer_max_calls=100, layer_rounds=3,
                first_steps=8, cpu_layer_repeats=3, cpu_layer_min=0.02,
                sweep_repeats=3, sweep_min=0.05, sweep=SWEEP_BATCHES, settle=0.05),
    "cpu-smoke": dict(budget_s=300,
                      budgets=dict(preflight=20, parity=60, kernels=30, epoch=45, layers=45, first_step=30,
                                   cpu_layers=35, sweep=25),
                      parity_files=("tests/nn/test_layers.py",), parity_k="cupy and (writes or wrong_shape)",
                      parity_test_timeout=40, parity_workers=2,
                      step_batch=16, step_calls=3,
                      e2e_repeats=2, cpu_fraction=0.01, gpu_fraction=0.01,
                      layer_batch=16, layer_min=0.002, layer_max_calls=5, layer_rounds=2,
                      first_steps=4, cpu_layer_repeats=2, cpu_layer_min=0.002,
                      sweep_repeats=2, sweep_min=0.002, sweep=(1, 4, 16), settle=0.02),
}


class Tee:
    """A stream that writes to several streams (the terminal and the log file)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
            st.flush()
        return len(s)

    def flush(self):
        for st in self.streams:
            st.flush()

    def isatty(self):
        return False


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="benchmarks/gpu_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None,
                   help="report directory (default: $OUT when set, else benchmarks/results)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="no GPU: run every section on the CuPy stand-in, tiny sizes, a few parity tests")
    p.add_argument("--only", default=None,
                   help=f"comma-separated sections to run, of {', '.join(s.name for s in SECTIONS)} (default: all)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the parity subset")
    p.add_argument("--pytest-timeout", type=float, default=None,
                   help="seconds for the parity subset (default: its budget, 60)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds for the whole script (default: 300); every section's budget scales with it")
    p.add_argument("--data-dir", type=Path, default=None,
                   help="the folder of the four Fashion-MNIST files this run reads (default: .gpu-data/fashion-mnist "
                        "where staged, else where lenet_np.data looks); with --stage, the files to copy")
    p.add_argument("--stage", action="store_true",
                   help="copy the Fashion-MNIST files and threadpoolctl.py into .gpu-data/ for the GPU machine, "
                        "and exit")
    p.add_argument("--no-log", action="store_true", help="do not write gpu-check.log (the caller tees the output)")
    p.add_argument("--child", choices=["first-step"], help=argparse.SUPPRESS)
    p.add_argument("--variant", default="classic", help=argparse.SUPPRESS)
    p.add_argument("--batch", type=int, default=256, help=argparse.SUPPRESS)
    p.add_argument("--steps", type=int, default=8, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    names = [s.name for s in SECTIONS]
    if args.only is not None:
        unknown = sorted(set(filter(None, args.only.split(","))) - set(names))
        if unknown:
            p.error(f"--only: unknown sections {', '.join(unknown)}; choose from {', '.join(names)}")
    return args


# -- the device ---------------------------------------------------------------------------------------
def use_standin():
    """Device "cuda" becomes the tests' NumPy-backed CuPy stand-in (for --cpu-smoke)."""
    from lenet_np import backend
    from tests import cupy_standin

    backend.use_cuda_module(cupy_standin.module)


def detect_gpu():
    """(info dict, None) when the CUDA array module sees a device, else (None, the reason)."""
    try:
        from lenet_np import backend
    except Exception as exc:
        return None, f"lenet_np does not import ({type(exc).__name__}: {exc})"
    cupy = backend.cuda_module()
    if cupy is None:
        return None, "CuPy is not installed, or does not import"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy imports but finds no CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "CuPy imports but finds no CUDA device"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    info = {"name": name.decode() if isinstance(name, bytes) else str(name), "devices": count,
            "memory_gib": round(props.get("totalGlobalMem", 0) / 2 ** 30, 1),
            "compute_capability": f"{props.get('major')}.{props.get('minor')}",
            "multiprocessors": props.get("multiProcessorCount"), "cupy": cupy.__version__,
            "cupy_tf32": os.environ.get("CUPY_TF32")}
    for key, fn in (("cuda_runtime", cupy.cuda.runtime.runtimeGetVersion),
                    ("cuda_driver", cupy.cuda.runtime.driverGetVersion)):
        try:
            v = fn()
            info[key] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception:
            info[key] = None
    return info, None


def torch_cuda_info():
    """torch's version and CUDA build, with TF32 off as the contenders run it (and the flags that say so)."""
    try:
        torch = contenders.import_torch()
        from benchmarks.torch_models import tf32_flags
    except Exception as exc:
        return {"torch": None, "cuda": False, "why": f"torch does not import: {exc}"}
    info = {"torch": torch.__version__, "cuda": bool(torch.cuda.is_available()), "torch_cuda": torch.version.cuda,
            "threads": torch.get_num_threads()}
    if info["cuda"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
        info.update(tf32_flags())
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    else:
        info["why"] = "torch.cuda.is_available() is False (a CPU build of torch?)"
    return info


def nvidia_smi():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return None


def require_gpu(ctx):
    """Skip the calling section where the preflight found that the GPU cannot run kernels."""
    if not ctx.gpu_ok:
        raise Skipped(f"the preflight failed ({ctx.errors.get('preflight', 'see above')}), so nothing runs on the GPU.")


def staged_paths() -> list:
    """The folder of staged modules (``--stage``) where this Python imports one of them from it
    (where it has not the module installed), else nothing."""
    staged = datasets.staged_python_dir()
    if staged is None:
        return []
    for module in datasets.STAGED_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin and Path(spec.origin).parent == staged:
            return [str(staged)]
    return []


def child_env(**extra) -> dict:
    """The environment of a child process: the repository (and the staged modules, where this
    Python lacks them) importable."""
    paths = [str(REPO), *staged_paths()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# -- one training step, as python -m lenet_np.train runs it ----------------------------------------------
def training_step(variant, device, batch, seed=0):
    """(step, sync): one training step of ``variant`` on ``device`` with its recipe's optimizer,
    as ``lenet_np.training.train_epoch`` runs it (the batch cut from the device's uint8 images,
    shuffled, a new permutation each epoch of 8 batches; forward, loss, backward, optimizer
    step; the loss kept on the device and the correct predictions counted there). Random
    images: a step's work does not depend on the pixels."""
    import numpy as np

    from lenet_np import backend, training
    from lenet_np.data import iterate_batches

    state = training.start(dict(training.defaults_for(variant), batch_size=batch), device)
    xp = backend.xp_for(device)
    rng = np.random.default_rng(seed)
    n = 8 * batch
    images = xp.asarray(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    labels = xp.asarray(rng.integers(0, 10, n).astype(np.uint8))
    model, opt, loss_fn = state.model, state.optimizer, state.loss_fn
    losses, correct = xp.zeros(8, dtype=np.float64), xp.zeros((), dtype=np.int64)
    batches, done = iter(()), [0]

    def step():
        nonlocal batches, correct
        xy = next(batches, None)
        if xy is None:                                   # a new epoch: a new permutation
            batches = iterate_batches(images, labels, batch, shuffle=True, rng=state.data_rng)
            xy = next(batches)
        x, y = xy
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn.forward(logits, y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        losses[done[0] % 8] = loss * len(y)
        correct += (logits.argmax(axis=1) == y).sum()
        done[0] += 1

    return step, (lambda: backend.synchronize()) if device == "cuda" else (lambda: None)


def predicted_launches(variant, batch, skip, calls):
    """Kernel launches per step that the CuPy stand-in counts (``tests.cupy_standin.count_launches``)
    over the same steps as the GPU's profile (``skip`` steps first, then ``calls``): kind -> launches
    per step; or None and why, where the stand-in has no counter."""
    from lenet_np import backend
    from tests import cupy_standin

    count = getattr(cupy_standin, "count_launches", None)
    if count is None:
        return None, "the CuPy stand-in has no count_launches(): no prediction"
    previous = backend.use_cuda_module(cupy_standin.module)
    try:
        step, _ = training_step(variant, "cuda", batch)
        for _ in range(skip):
            step()
        with count() as launches:
            for _ in range(calls):
                step()
    finally:
        backend.use_cuda_module(previous)
    return {kind: n / calls for kind, n in launches.most_common()}, ""


# -- 1. preflight ---------------------------------------------------------------------------------------
TOOLKIT_HINT = (f"CuPy sees the GPU (the driver answers) but cannot run a kernel: the CUDA toolkit's libraries "
                f"(NVRTC compiles each kernel on first use, cuBLAS runs the matmuls) are missing or do not match. "
                f"`pip install '{CUPY_PACKAGE}[ctk]'` brings them from PyPI; or install the CUDA toolkit.")
PACKAGES = (("torch", "torch"), ("pytest", "pytest"), ("xdist", "pytest-xdist"), ("pytest_timeout", "pytest-timeout"),
            ("hypothesis", "hypothesis"), ("scipy", "scipy"), ("matplotlib", "matplotlib"),
            ("threadpoolctl", "threadpoolctl"))


def package_versions() -> dict:
    """import name -> its version, "staged copy" (from .gpu-data/python), or None (not installed)."""
    out = {}
    staged = datasets.staged_python_dir()
    for module, dist in PACKAGES:
        spec = importlib.util.find_spec(module)
        if spec is None:
            out[module] = None
        elif staged and spec.origin and Path(spec.origin).parent == staged:
            out[module] = "staged copy"
        else:
            try:
                out[module] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[module] = "installed"
    return out


def toolkit_info(cuda) -> dict:
    """Where the CUDA toolkit's libraries come from (cuda.pathfinder, as CuPy 14 finds them) and
    NVRTC's version; empty for the stand-in."""
    info = {}
    if getattr(cuda, "__version__", "").endswith("standin"):
        return info
    for key, fn in (("cuda_path", lambda: cuda.cuda.get_cuda_path()),
                    ("local_runtime", lambda: cuda.cuda.get_local_runtime_version()),
                    ("nvrtc_version", lambda: ".".join(map(str, cuda.cuda.nvrtc.getVersion())))):
        try:
            info[key] = fn()
        except Exception as exc:
            info[key] = f"unknown ({type(exc).__name__}: {exc})"
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except Exception as exc:
        info["libraries"] = f"cuda.pathfinder does not import ({type(exc).__name__})"
        return info
    libs = {}
    for lib in ("nvrtc", "cublas", "cudart"):
        try:
            dl = load_nvidia_dynamic_lib(lib)
            libs[lib] = f"{dl.abs_path} (via {dl.found_via})"
        except Exception as exc:
            libs[lib] = f"NOT FOUND ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    info["libraries"] = libs
    return info


def device_ops(cuda, sync):
    """Three operations on the device, each checked on the host: name -> {first_s, second_s, ok, error}.
    The first call's time includes compiling the kernel (NVRTC) or loading the library (cuBLAS)."""
    import numpy as np

    from lenet_np import backend

    n = 1 << 20
    ops = {"elementwise (a * 2 + 1)": (lambda: cuda.arange(n, dtype=np.float32) * 2 + 1,
                                       lambda r: backend.as_numpy(r[-1:])[0] == 2 * (n - 1) + 1),
           "reduction (sum)": (lambda: cuda.ones(n, dtype=np.float32).sum(),
                               lambda r: float(r) == n),
           "matmul (512 x 512, cuBLAS)": (lambda: cuda.ones((512, 512), dtype=np.float32)
                                          @ cuda.ones((512, 512), dtype=np.float32),
                                          lambda r: backend.as_numpy(r[:1, :1])[0, 0] == 512)}
    out = {}
    for name, (fn, check) in ops.items():
        res = {"ok": False}
        try:
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                r = fn()
                sync()
                times.append(time.perf_counter() - t0)
            res.update(first_s=times[0], second_s=times[1], ok=bool(check(r)))
            if not res["ok"]:
                res["error"] = "wrong result"
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        out[name] = res
    return out


def preflight(ctx) -> Part:
    import numpy as np

    from lenet_np import backend

    cuda = backend.cuda_module()

    def sync():
        backend.synchronize()
    facts = {"python": sys.version.split()[0], "numpy": importlib.metadata.version("numpy"),
             "cupy": getattr(cuda, "__version__", None), "gpu": ctx.gpu, "toolkit": toolkit_info(cuda),
             "packages": package_versions()}
    facts["ops"] = ops = device_ops(cuda, sync)
    for name, r in ops.items():
        log(f"  {name}: " + (f"ok, first call {report.fmt_time(r['first_s'])}, second {report.fmt_time(r['second_s'])}"
                             if r["ok"] else f"FAILED: {r['error']}"))
    bad = [f"{name}: {r['error']}" for name, r in ops.items() if not r["ok"]]
    if bad:
        ctx.gpu_ok = False
        ctx.errors["preflight"] = "; ".join(bad) + ("" if ctx.args.cpu_smoke else ". " + TOOLKIT_HINT)
    if ctx.use_torch_cuda:
        import torch

        torch.zeros(1, device="cuda")                    # torch's CUDA ready before the profiler starts
    # does torch.profiler see CuPy's kernels? (and its first start, slow, is over before the benchmarks)
    if ctx.gpu_ok:
        a = cuda.arange(1 << 16, dtype=np.float32)
        prof = timing.device_profile(lambda: a * 2 + 1, sync, calls=5, warmup=2, cuda=cuda)
        retried = not prof.recorded and ctx.use_torch_cuda
        if retried:                      # CUPTI starts with the first profile: give it a second chance
            prof = timing.device_profile(lambda: a * 2 + 1, sync, calls=5, warmup=2, cuda=cuda)
        facts["profiler"] = prof
        seen = (f"yes: {prof.kernels:g} kernels per `a * 2 + 1` (CuPy launches 2), device busy "
                f"{report.fmt_time(prof.busy_s)} per call" + (" (on the second try)" if retried else "")
                if prof.recorded else "; ".join(prof.notes))
    else:
        facts["profiler"], seen = None, "not tried (the operations above failed)"
    log(f"  torch.profiler sees CuPy's kernels: {seen}")
    facts["data"] = ctx.data_note
    pk = facts["packages"]
    missing = [m for m, v in pk.items() if v is None]
    lines = ["## Preflight", ""]
    tk = facts["toolkit"]
    if tk:
        libs = tk.get("libraries")
        lines.append(f"- CUDA toolkit: path {tk.get('cuda_path')}, local runtime {tk.get('local_runtime')}, "
                     f"NVRTC {tk.get('nvrtc_version')}; libraries: "
                     + ("; ".join(f"{k} {v}" for k, v in libs.items()) if isinstance(libs, dict) else str(libs)))
    else:
        lines.append("- CUDA toolkit: none (the CuPy stand-in computes with NumPy)")
    checked = [f"{name} ok, first call {report.fmt_time(r['first_s'])}, then {report.fmt_time(r['second_s'])}"
               if r["ok"] else f"{name} **FAILED**: {r['error']}" for name, r in ops.items()]
    lines.append("- On the device, each checked on the host (the first call compiles the kernel or loads the "
                 "library): " + "; ".join(checked))
    if bad and not ctx.args.cpu_smoke:
        lines.append(f"- {TOOLKIT_HINT}")
    lines.append(f"- torch.profiler sees CuPy's kernels: {seen}")
    lines.append("- Python " + facts["python"] + ", NumPy " + facts["numpy"] + ", "
                 + ", ".join(f"{m} {v}" for m, v in pk.items() if v) + (
                     f"; not installed: {', '.join(missing)}" if missing else ""))
    lines.append(f"- Data: {ctx.data_note}")
    return Part({"preflight": facts}, lines + [""])


# -- 2. the parity subset -------------------------------------------------------------------------------
OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
_XDIST_LINE = re.compile(r"^\[gw\d+\] \[\s*\d+%\] (" + "|".join(OUTCOMES) + r") (\S+::\S+)")
_PLAIN_LINE = re.compile(r"^(\S+::\S+) (" + "|".join(OUTCOMES) + r")\b")
_COLLECTED = (re.compile(r"collected (\d+) items? / \d+ deselected / (\d+) selected"),
              re.compile(r"\d+ workers? \[(\d+) items?\]"), re.compile(r"collected (\d+) items?"))


def has_module(name) -> bool:
    return importlib.util.find_spec(name) is not None


def parity_command(prof, limit, workers=None) -> list:
    """The parity subset's pytest command: the cupy cases (``-k``) of the files that matter on a
    GPU, verbose (one line per test, so a run stopped at its limit still says what ran), in
    parallel with pytest-xdist and with a per-test limit from pytest-timeout where installed."""
    cmd = [sys.executable, "-m", "pytest", "-v", "-rfE", "--color=no", "-p", "no:cacheprovider",
           "-k", prof["parity_k"]]
    workers = min(prof["parity_workers"], max(1, (os.cpu_count() or 1) // 2)) if workers is None else workers
    if workers > 1 and has_module("xdist"):
        try:
            version = tuple(int(v) for v in importlib.metadata.version("pytest-xdist").split(".")[:2])
        except Exception:
            version = (0, 0)
        cmd += ["-n", str(workers), "--dist", "worksteal" if version >= (3, 2) else "load"]
    if has_module("pytest_timeout"):
        cmd += ["--timeout", str(int(min(prof["parity_test_timeout"], max(5, limit))))]
    return cmd + list(prof["parity_files"])


def parse_pytest_line(line, outcomes: dict, found: dict) -> None:
    """Read one line of ``pytest -v`` (with or without xdist): a test's outcome into ``outcomes``
    (test id -> outcome; a failure or an error is never overwritten by a later pass), the number
    of tests selected into ``found["collected"]``."""
    m = _XDIST_LINE.match(line)
    if m:
        outcome, test = m.groups()
    else:
        m = _PLAIN_LINE.match(line)
        test, outcome = m.groups() if m else (None, None)
    if test is not None and outcomes.get(test) not in ("FAILED", "ERROR"):
        outcomes[test] = outcome
    if "collected" not in found:
        for pattern in _COLLECTED:
            c = pattern.search(line)
            if c:
                found["collected"] = int(c.groups()[-1])
                break


def run_parity(cmd, limit, log_path, env=None) -> dict:
    """Run the parity subset, its output into ``log_path``, its failures logged as they come;
    killed with all its workers (its own process group) after ``limit`` seconds."""
    log(f"$ python {shlex.join(cmd[1:])}   (hard limit {limit:.0f} s; output in {log_path.name})")
    t0 = time.perf_counter()
    outcomes, found, tail = {}, {}, []
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(limit, kill)
        timer.start()
        try:
            for line in proc.stdout:
                out.write(line)
                parse_pytest_line(line, outcomes, found)
                if line.startswith(("FAILED ", "ERROR ")) or " FAILED " in line or " ERROR " in line:
                    log("  " + line.rstrip())
                tail = (tail + [line.rstrip()])[-5:]
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:                       # interrupted: take the workers down too
                kill()
                proc.wait()
    seconds = time.perf_counter() - t0
    counts = collections.Counter(outcomes.values())
    collected = found.get("collected")
    failures = sorted(t for t, o in outcomes.items() if o in ("FAILED", "ERROR"))
    res = {"rc": rc, "seconds": seconds, "timed_out": timed_out.is_set(), "collected": collected,
           "counts": dict(counts), "not_run": None if collected is None else max(0, collected - len(outcomes)),
           "failures": failures, "summary": next((t for t in reversed(tail) if t.strip()), ""),
           "command": "python " + shlex.join(cmd[1:]), "log": log_path.name}
    log(f"  {describe_parity(res)}")
    return res


def describe_parity(res) -> str:
    counts = res["counts"]
    done = ", ".join(f"{n} {o.lower()}" for o, n in sorted(counts.items(), key=lambda kv: OUTCOMES.index(kv[0])))
    state = (f"stopped at its limit after {res['seconds']:.0f} s" if res["timed_out"]
             else f"finished in {res['seconds']:.0f} s (exit {res['rc']})")
    not_run = f", {res['not_run']} not run" if res["not_run"] else ""
    of = (f" of {res['collected']} selected" if res["collected"] is not None
          else " (stopped before pytest said how many it selected)")
    return f"{done or 'no test finished'}{not_run}{of}; {state}"


def parity(ctx) -> Part:
    require_gpu(ctx)
    prof = ctx.prof
    limit = max(5.0, time_left(ctx))
    if ctx.args.pytest_timeout is not None:
        limit = ctx.args.pytest_timeout
    cmd = parity_command(prof, limit)
    res = run_parity(cmd, limit, ctx.out_dir / f"{ctx.stem}-parity.log", env=child_env())
    ok = res["rc"] == 0 and not res["timed_out"]
    state = "passed" if ok else "FAILED" if res["failures"] else "incomplete"
    lines = ["## CuPy parity subset", "",
             f"`{res['command']}`: **{state}**: {describe_parity(res)}. Full output: `{res['log']}`.", ""]
    lines += [f"- `{t}`" for t in res["failures"]] + ([""] if res["failures"] else [])
    return Part({"parity": res}, lines)


# -- 3. kernels per training step -------------------------------------------------------------------------
def short(name, width=70) -> str:
    name = " ".join(name.split())
    return name if len(name) <= width else name[:width - 3] + "..."


def kernels(ctx) -> Part:
    require_gpu(ctx)
    from lenet_np import backend

    prof, cuda = ctx.prof, backend.cuda_module()
    batch, calls, skip = prof["step_batch"], prof["step_calls"], 3 + prof["step_calls"]
    out, rows, details, notes = {}, [], [], set()
    for variant in VARIANTS:
        if time_left(ctx) < 3:
            notes.add(f"out of time before {variant}")
            break
        step, sync = training_step(variant, "cuda", batch)
        p = timing.device_profile(step, sync, calls=calls, warmup=3, cuda=cuda)
        predicted, why = predicted_launches(variant, batch, skip, calls)
        notes.update(p.notes + ([why] if why else []) + (
            ["the CuPy stand-in's CUDA events read the host clock: its events span is wall time"]
            if ctx.args.cpu_smoke else []))
        total = None if predicted is None else sum(predicted.values())
        out[variant] = {"profile": p, "predicted": predicted, "predicted_total": total, "batch": batch,
                        "calls": calls}
        log(f"  {variant:<9} wall {report.fmt_time(p.wall_s)}/step, device busy {report.fmt_time(p.busy_s)}, "
            f"kernels {fmt_num(p.kernels)} + copies {fmt_num(p.copies)}, stand-in predicts {fmt_num(total)}")
        rows.append([variant, report.fmt_time(p.wall_s), report.fmt_time(p.span_s), report.fmt_time(p.busy_s),
                     fmt_share(p.busy_share), fmt_num(p.kernels), fmt_num(p.copies), fmt_num(p.launches),
                     fmt_num(total), fmt_num(None if total is None or p.launches is None else p.launches - total)])
        details.append(f"- {variant}: busiest kernels: " + ("; ".join(
            f"`{short(name)}` {n:g} x {report.fmt_time(t)}" for name, n, t in p.top[:6]) or "none recorded")
            + ". Stand-in by kind: " + (", ".join(f"{k} {v:g}" for k, v in list(predicted.items())[:10])
                                        if predicted else why or "-"))
    table = report.md_table(["variant", "wall/step", "events span/step", "device busy/step", "busy share",
                             "kernels", "copies", "launches", "stand-in predicts", "difference"], rows)
    log(table)
    lines = ["## Kernels per training step", "",
             f"One training step of each variant at batch {batch} as `python -m lenet_np.train` runs it (its "
             f"recipe's optimizer; the batch cut on the device; the loss and the correct predictions kept "
             f"there), per step over {calls} steps. *wall*: host clock; *events span*: CUDA events around "
             "the steps (the device's clock, idle gaps included); *device busy*: the union of the kernels' and "
             "copies' intervals that torch.profiler (CUPTI) recorded on the device; *busy share*: busy / wall "
             "(well under 100%: the device waits for Python to launch). *launches* = kernels + copies (memcpy, "
             "memset), what `tests/cupy_standin.py`'s `count_launches()` predicts for the same steps.", "",
             table, "", *details, ""]
    lines += note_lines(notes)
    return Part({"kernels": out}, lines)


def note_lines(notes) -> list:
    """The notes of a section (what it could not measure, and why), as a list in the report."""
    return ["Notes:", "", *(f"- {n}." for n in sorted(notes)), ""] if notes else []


def fmt_num(x) -> str:
    return "-" if x is None else f"{x:,.1f}".rstrip("0").rstrip(".")


def fmt_share(x) -> str:
    return "-" if x is None else f"{x:.0%}"


# -- 4. one epoch -------------------------------------------------------------------------------------------
def make_runners(kinds, data=None, torch_threads=None):
    """name -> runner for the kinds asked for: numpy, cupy, torch-cpu, torch-cuda."""
    made = {}
    for kind in kinds:
        if kind == "numpy":
            made["lenet_np-numpy"] = contenders.LenetNpRunner(data)
        elif kind == "cupy":
            made["lenet_np-cupy"] = contenders.LenetNpRunner(data, device="cuda")
        elif kind == "torch-cpu":
            made["torch-cpu"] = contenders.TorchRunner(data, threads=torch_threads)
        elif kind == "torch-cuda":
            made["torch-cuda"] = contenders.TorchRunner(data, device="cuda")
    return made


def kinds(ctx) -> list:
    """The contenders that can run: CuPy where the preflight passed, torch CUDA where torch has it."""
    return ((["cupy"] if ctx.gpu_ok else []) + (["torch-cuda"] if ctx.use_torch_cuda else [])
            + ["numpy", "torch-cpu"])


def epoch(ctx) -> Part:
    prof = ctx.prof
    data = datasets.load_data("real", data_dir=ctx.data_dir)
    ctx.data_source = data.source
    log(f"  data: {data.source}")
    runners = make_runners(kinds(ctx), data)
    n_total = len(data.train_images)
    n_train, n_test = {}, {}
    for name in runners:
        frac = prof["gpu_fraction"] if "cuda" in name or "cupy" in name else prof["cpu_fraction"]
        n_train[name] = max(datasets.BATCH_SIZE, int(n_total * frac))
        n_test[name] = max(datasets.BATCH_SIZE, int(len(data.test_images) * frac))
    for name in runners:
        log(f"  {name}: {n_train[name]:,} training and {n_test[name]:,} test examples per run")
    res = contenders.end_to_end(runners, n_train, n_test, repeats=prof["e2e_repeats"], log=log, n_total=n_total)
    e2e = {"data": data.source, "results": res, "base": "torch-cuda" if ctx.use_torch_cuda else "torch-cpu"}
    table = report.e2e_table(res, base=e2e["base"])
    log(table)
    del data, runners
    real = data_is_real(e2e["data"])
    return Part({"end_to_end": e2e}, [
        "## One epoch", "",
        f"LeNet (sigmoid, max pooling), Adam lr 1e-3, batch 256; data: {e2e['data']}"
        + ("" if real else " (**synthetic images: the loss and the accuracy mean nothing**)")
        + ". On the GPU the uint8 images are copied to the device once and each batch is converted there; one "
        "sync per epoch. The CPU contenders run a fraction of the epoch (`examples/run`); all times are scaled "
        "to 60,000 training and 10,000 test examples.", "", table, ""])


def data_is_real(source) -> bool:
    return str(source).startswith("real")


# -- 5. per layer on the GPU ----------------------------------------------------------------------------------
def budgeted(ctx, timer, empty):
    """``timer``, except that once the section's time is spent it measures nothing more (each
    contender an ``empty()`` Stats, shown as "-"), so that a long table stops at its budget;
    ``ctx.cut`` counts the timings left out."""
    ctx.cut = 0

    def timed(contenders):
        if time_left(ctx) > 0:
            return timer(contenders)
        ctx.cut += 1
        return {name: empty() for name in contenders}
    return timed


def cut_note(ctx) -> list:
    return ([f"Out of time: the last {ctx.cut} timings of this table were left out (shown as -).", ""]
            if getattr(ctx, "cut", 0) else [])


def device_layers_table(layers, a="fast", b="torch"):
    """Per layer (forward + backward): wall time, device busy time, busy share and kernels per call
    of ``a`` and ``b``, and a's busy time over b's."""
    def get(r, k, what):
        vals = []
        for direction in ("forward", "backward"):
            s = r.get(direction)
            if s is None:
                continue
            p = s[k].profile
            vals.append(s[k].median if what == "wall" else getattr(p, what) if p else None)
        return None if any(v is None for v in vals) else sum(vals)
    rows = []
    for name, r in layers.items():
        label = {"optimizer": "Adam step", "step": "whole step"}.get(name, name)
        wa, ba, ka = get(r, a, "wall"), get(r, a, "busy_s"), get(r, a, "launches")
        wb, bb, kb = get(r, b, "wall"), get(r, b, "busy_s"), get(r, b, "launches")
        rows.append([label, r["kind"], report.fmt_time(wa), report.fmt_time(ba),
                     fmt_share(None if ba is None else ba / wa), fmt_num(ka), report.fmt_time(wb),
                     report.fmt_time(bb), fmt_share(None if bb is None else bb / wb), fmt_num(kb),
                     report.fmt_ratio(None if ba is None or not bb else ba / bb)])
    return report.md_table(["layer", "kind", f"{a} wall", f"{a} busy", "busy share", f"{a} launches", f"{b} wall",
                            f"{b} busy", "busy share", f"{b} launches", f"{a}/{b} busy"], rows, align="ll" + "r" * 9)


def layers(ctx) -> Part:
    require_gpu(ctx)
    from lenet_np import backend

    prof = ctx.prof
    torch_device = "cuda" if ctx.use_torch_cuda else "cpu"
    timer = budgeted(ctx, timing.device_timer(prof["layer_min"], prof["layer_max_calls"], prof["layer_rounds"],
                                              cuda=backend.cuda_module()), timing.DeviceStats)
    res = per_layer.layer_benchmark(timer, device="cuda", batch=prof["layer_batch"], log=log,
                                    torch_device=torch_device)
    wall, device = per_layer.layers_table(res), device_layers_table(res)
    log(wall)
    log(device)
    notes = sorted({n for r in res.values() for d in ("forward", "backward") if r.get(d)
                    for s in r[d].values() if s.profile for n in s.profile.notes})
    step = res["step"]["forward"]
    top = [f"- whole step, {k}: " + ("; ".join(f"`{short(n)}` {c:g} x {report.fmt_time(t)}"
                                                for n, c, t in step[k].profile.top[:6]) or "no kernels recorded")
           for k in ("fast", "torch") if step[k].profile]
    lines = [f"## Per layer, batch {prof['layer_batch']}, float32, on {ctx.layer_device}", "",
             "Wall time per call in a stream of calls (synchronised at both ends, so launch overheads overlap the "
             "GPU work as in training). `fast`/`reference`: lenet_np's two implementations of Conv2d and "
             f"MaxPool2d on CuPy; `torch`: the same layer with autograd, on {torch_device}.", "", wall, "",
             "The device's side of the same calls (torch.profiler, CUPTI): *busy*: the union of the intervals of "
             "the kernels and copies the calls ran on the device, per call; *busy share*: busy / wall; "
             "*launches*: kernels and copies per call (forward and backward together).", "", device, "", *top, "",
             *cut_note(ctx)]
    lines += note_lines(notes)
    return Part({"layers": res}, lines)


# -- 6. the first steps: compiling the kernels ------------------------------------------------------------------
def child_main(args) -> int:
    """``--child first-step``: in this fresh process, import, set up and run ``--steps`` training
    steps of ``--variant``, each timed to a sync; print one line of JSON after CHILD_TAG."""
    t0 = time.perf_counter()
    if args.cpu_smoke:
        use_standin()
    from lenet_np import backend

    backend.require_cupy()
    t1 = time.perf_counter()
    step, sync = training_step(args.variant, "cuda", args.batch)
    sync()
    t2 = time.perf_counter()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    cache = os.environ.get("CUPY_CACHE_DIR")
    files = sum(1 for p in Path(cache).rglob("*") if p.is_file()) if cache and Path(cache).is_dir() else None
    print(CHILD_TAG + json.dumps({"variant": args.variant, "batch": args.batch, "import_s": t1 - t0,
                                  "setup_s": t2 - t1, "steps_s": times, "cache_files": files}), flush=True)
    return 0


def start_child(ctx, variant, cache_dir):
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--child", "first-step", "--variant", variant,
           "--batch", str(ctx.prof["step_batch"]), "--steps", str(ctx.prof["first_steps"])]
    cmd += ["--cpu-smoke"] if ctx.args.cpu_smoke else []
    return subprocess.Popen(cmd, cwd=REPO, env=child_env(CUPY_CACHE_DIR=str(cache_dir)), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish_child(ctx, proc) -> dict:
    """The child's results, or {"error": why} (it failed, or ran past the section's time)."""
    try:
        out, err = proc.communicate(timeout=max(1.0, time_left(ctx)))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return {"error": "stopped at the section's time limit"}
    line = next((ln for ln in out.splitlines() if ln.startswith(CHILD_TAG)), None)
    if proc.returncode != 0 or line is None:
        last = next((ln for ln in reversed(err.splitlines()) if ln.strip()), "no output")
        return {"error": f"exit {proc.returncode}: {last}"}
    return json.loads(line[len(CHILD_TAG):])


def first_step(ctx) -> Part:
    require_gpu(ctx)
    import statistics

    runs, procs = {}, []
    with tempfile.TemporaryDirectory(prefix="lenet_np-kernel-cache-") as tmp:
        caches = {v: Path(tmp) / v for v in VARIANTS}
        try:
            cold = {v: start_child(ctx, v, caches[v]) for v in VARIANTS}      # at once: NVRTC runs on the CPU
            procs += cold.values()
            for v, proc in cold.items():
                runs[(v, "empty")] = finish_child(ctx, proc)
            if time_left(ctx) > 2:
                procs.append(start_child(ctx, "classic", caches["classic"]))
                runs[("classic", "on disk")] = finish_child(ctx, procs[-1])
        finally:                                   # interrupted: the children (own sessions) go too
            for proc in procs:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
    rows, out = [], []
    for (variant, cache), r in runs.items():
        r.update(variant=variant, cache=cache)
        out.append(r)
        if "error" in r:
            rows.append([variant, cache, r["error"], "", "", "", "", "", ""])
            log(f"  {variant} ({cache} cache): {r['error']}")
            continue
        steps = r["steps_s"]
        steady = statistics.median(steps[2:]) if len(steps) > 2 else steps[-1]
        r["steady_s"] = steady
        rows.append([variant, cache, report.fmt_time(r["import_s"]), report.fmt_time(r["setup_s"]),
                     report.fmt_time(steps[0]), report.fmt_time(steps[1]) if len(steps) > 1 else "-",
                     report.fmt_time(steady), report.fmt_ratio(steps[0] / steady),
                     "-" if r["cache_files"] is None else str(r["cache_files"])])
        log(f"  {variant} ({cache} cache): first step {report.fmt_time(steps[0])}, steady {report.fmt_time(steady)}")
    table = report.md_table(["variant", "kernel cache", "import", "set-up", "first step", "second step",
                             "steady step", "first/steady", "cached kernels"], rows, align="ll" + "r" * 7)
    log(table)
    return Part({"first_step": out}, [
        "## The first training steps", "",
        f"Each run is a fresh process (`gpu_check.py --child first-step`) at batch {ctx.prof['step_batch']}: "
        "*import*: lenet_np and CuPy; *set-up*: the network, its optimizer and the data on the device; then "
        f"{ctx.prof['first_steps']} steps, each timed to a sync; *steady*: the median from the third on. With "
        "an *empty* kernel cache (its own `CUPY_CACHE_DIR`) NVRTC compiles every kernel on its first use; "
        "the three variants ran at the same time. *on disk*: the classic variant again, its kernels now "
        "loaded from that cache (a user's second run).", "", table, ""])


# -- 7. per layer on the CPU -----------------------------------------------------------------------------------
def cpu_layers(ctx) -> Part:
    prof = ctx.prof
    timer = budgeted(ctx, timing.profile_timer(prof, "cpu_layer"), timing.Stats)
    res = per_layer.layer_benchmark(timer, device="cpu", batch=prof["layer_batch"], log=log, torch_device="cpu")
    table = per_layer.layers_table(res)
    log(table)
    return Part({"cpu_layers": res}, [
        f"## Per layer on this machine's CPU, batch {prof['layer_batch']}", "",
        f"The same layers on the host's CPU ({os.cpu_count()} cores), NumPy against torch, timed as in "
        "`python -m benchmarks.run`: beside the GPU's table above, from the same machine.", "", table, "",
        *cut_note(ctx)])


# -- 8. the batch-size sweep -------------------------------------------------------------------------------------
def sweep(ctx) -> Part:
    prof = ctx.prof
    runners = make_runners(kinds(ctx))
    slow = {}

    def leave_out(name, n):
        # out of time, or the last step of this contender took so long that this one would not fit
        if n == prof["sweep"][0]:
            return False                                 # the smallest batch always runs
        prev = slow.get(name, 0.0) * 4
        return time_left(ctx) < 5 + prev * (prof["sweep_repeats"] + 3)

    def timer(contenders):
        res = timing.profile_timer(prof, "sweep", warmup=1, max_inner=1000)(contenders)
        slow.update({k: s.median for k, s in res.items()})
        return res
    res = per_layer.sweep_benchmark(runners, prof["sweep"], timer, skip=leave_out, log=log)
    names = list(runners)
    log(per_layer.sweep_table(res, names=names, base=names[1] if len(names) > 1 else names[0]))
    png = per_layer.sweep_plot(res, ctx.out_dir / f"{ctx.stem}.png",
                               f"LeNet training step, {ctx.gpu['name'] if ctx.gpu else 'CPU only (smoke run)'}",
                               log=log)
    names = [n for n in ("lenet_np-cupy", "torch-cuda", "lenet_np-numpy", "torch-cpu")
             if any(n in r for r in res.values())]
    lines = []
    if res:
        base = "torch-cuda" if "torch-cuda" in names else names[-1]
        lines = ["## Examples/s against batch size", "", "One training step (forward, loss, backward, Adam) on random "
                 "data; a contender is left out of a batch size that would not fit in the section's time.", "",
                 per_layer.sweep_table(res, names=names, base=base), ""]
        lines += [f"![examples/s against batch size]({Path(png).name})", ""] if png else []
    return Part({"sweep": res}, lines, files=[png] if png else [])


SECTIONS = [
    Section("preflight", "Preflight   ({left:.0f} s of the budget left)", "the GPU (name, memory, compute "
            "capability), CuPy, the CUDA runtime, driver and toolkit", preflight, keys=("preflight",),
            timed=False),
    Section("parity", "CuPy parity subset   ({left:.0f} s left)", "CuPy's parity subset", parity, keys=("parity",),
            timed=False, absent=("## CuPy parity subset", "", "not run", "")),
    Section("kernels", "Kernels per training step   ({left:.0f} s left)", "one training step of each LeNet "
            "variant as the training command runs it", kernels, keys=("kernels",), heading="Kernels per training step"),
    Section("epoch", "One epoch   ({left:.0f} s left)", "one training epoch (60,000 examples, batch 256, Adam) and one "
            "test-set evaluation on Fashion-MNIST", epoch, keys=("end_to_end",)),
    Section("layers", "Per layer on {device}   ({left:.0f} s left)", "every layer's forward and backward at batch "
            "256 on CuPy (fast and reference) and torch CUDA", layers, keys=("layers",),
            heading="Per layer on the GPU"),
    Section("first_step", "The first training steps   ({left:.0f} s left)", "the first training steps of each "
            "variant in a fresh process", first_step, keys=("first_step",)),
    Section("cpu_layers", "Per layer on the CPU   ({left:.0f} s left)", "the same per-layer table on this "
            "machine's CPU", cpu_layers, keys=("cpu_layers",)),
    Section("sweep", "Examples/s against batch size   ({left:.0f} s left)", "examples/s against batch size", sweep,
            keys=("sweep",)),
]


# -- the report ------------------------------------------------------------------------------------------
def header(meta, gpu, tinfo, info, ctx) -> list:
    title = "lenet_np GPU check" + (" (CPU smoke run: no GPU)" if meta["smoke"] else f" on {gpu['name']}")
    source = getattr(ctx, "data_source", None)
    data = (f"real Fashion-MNIST, {source.split('(', 1)[-1].rstrip(')')}" if source and data_is_real(source)
            else f"synthetic images ({source})" if source else f"not loaded (the epoch did not run); {ctx.data_note}")
    budgets = ", ".join(f"{name} {s:.0f} s" for name, s in ctx.budgets.items())
    md = [f"# {title}, {meta['date']}", "",
          f"`{meta['command']}`, {meta['duration_s']:.0f} s of its {ctx.budget_s:.0f} s budget (sections: {budgets}). "
          "Ratios are of medians measured in the same run, the contenders alternating round by round.", "",
          f"**Data: {data}.**", "", "## Machine", ""]
    if gpu:
        tf32 = gpu.get("cupy_tf32")
        md.append(f"- GPU: {gpu['name']} ({gpu['memory_gib']} GiB, compute capability {gpu['compute_capability']}, "
                  f"{gpu['multiprocessors']} SMs); CUDA runtime {gpu['cuda_runtime']}, driver {gpu['cuda_driver']}; "
                  f"CuPy {gpu['cupy']}, " + ("CUPY_TF32 unset" if tf32 is None else f"CUPY_TF32={tf32}"))
        if meta.get("nvidia_smi"):
            md.append(f"- nvidia-smi: {meta['nvidia_smi']}")
    if tinfo.get("torch"):
        md.append(f"- torch {tinfo['torch']} (CUDA {tinfo.get('torch_cuda')}, cuDNN {tinfo.get('cudnn')}; "
                  f"{tinfo['threads']} CPU threads); cudnn.allow_tf32={tinfo.get('cudnn_allow_tf32')}, "
                  f"matmul.allow_tf32={tinfo.get('matmul_allow_tf32')}, cudnn.benchmark={tinfo.get('cudnn_benchmark')}"
                  " (TF32 turned off, as in the parity tests: torch computes in float32; CuPy's matmuls use TF32 "
                  "only with CUPY_TF32=1)" + ("" if tinfo["cuda"] else f"; no torch CUDA: {tinfo.get('why')}"))
    return md + [*machine.machine_lines(info), ""]


def data_dir_of(args):
    """(the data folder the run reads, a note saying where the data comes from)."""
    if args.data_dir is not None:
        return args.data_dir, f"--data-dir {args.data_dir}"
    staged = datasets.staged_data_dir()
    if staged is not None:
        return staged, f"staged in {staged.relative_to(REPO)}"
    try:
        from lenet_np.data import find_data_dir

        return None, f"found by lenet_np.data in {find_data_dir()}"
    except Exception:
        return None, ("none found (no .gpu-data/fashion-mnist: run `python benchmarks/gpu_check.py --stage` where the "
                      "data is and carry .gpu-data): synthetic images, the loss and accuracy mean nothing")


def main(argv=None) -> int:
    args = parse_args(argv)
    global contenders, datasets, machine, per_layer, report, timing
    if args.child:
        from benchmarks import datasets, timing
        staged = datasets.staged_python_dir()
        if staged:
            sys.path.append(str(staged))
        return child_main(args)
    if args.stage:
        from benchmarks import datasets
        datasets.stage(data_dir=args.data_dir)
        return 0
    prof = dict(PROFILES["cpu-smoke" if args.cpu_smoke else "gpu"])
    budget_s = args.budget or prof["budget_s"]
    scale = budget_s / prof["budget_s"]
    budgets = {name: s * scale for name, s in prof["budgets"].items()}
    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    if not args.no_log:
        log_file = open(out_dir / "gpu-check.log", "a", encoding="utf-8")
        sys.stdout = Tee(sys.__stdout__, log_file)
        sys.stderr = Tee(sys.__stderr__, log_file)
    t_start = time.perf_counter()
    today = dt.date.today().isoformat()
    # make gpu-check's timeout sends SIGINT, a runner may send SIGTERM: either stops the section that
    # runs, and the report of what ran is written (even where the shell started us with SIGINT ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    log(f"# lenet_np GPU check, {dt.datetime.now().isoformat(timespec='seconds')}, report in {out_dir}, "
        f"budget {budget_s:.0f} s")

    from benchmarks import datasets
    staged = datasets.staged_python_dir()
    if staged:                           # after everything installed: an installed module wins
        sys.path.append(str(staged))
    if args.cpu_smoke:
        use_standin()
    gpu, why = detect_gpu()
    if not args.cpu_smoke:
        if gpu is None:
            log(f"gpu_check: no GPU to check: {why}.\n"
                f"This script needs CuPy and a CUDA device (pip install {CUPY_PACKAGE}, or the build for your CUDA). "
                "On a machine without a GPU, run `make bench` for the CPU benchmarks, or "
                "`python benchmarks/gpu_check.py --cpu-smoke` to try this script.")
            return EXIT_NO_GPU
        log(f"GPU: {gpu['name']}   ({gpu['memory_gib']} GiB, cc {gpu['compute_capability']}, "
            f"CUDA runtime {gpu['cuda_runtime']}, driver {gpu['cuda_driver']}, CuPy {gpu['cupy']})")
    try:
        from benchmarks import contenders, machine, per_layer, report, timing
    except ImportError as exc:
        log(f"gpu_check: cannot import the benchmark code: {exc}")
        return EXIT_NO_GPU
    data_dir, data_note = data_dir_of(args)
    if data_dir is not None:
        os.environ["LENET_NP_DATA"] = str(data_dir)     # the parity tests and children find it too
    log(f"data: {data_note}")
    tinfo = torch_cuda_info()
    log(f"torch {tinfo.get('torch')}: CUDA {'yes' if tinfo.get('cuda') else 'no'}"
        + (f" ({tinfo.get('device')})" if tinfo.get("cuda") else f" ({tinfo.get('why')})"))
    info = machine.machine_info(torch_threads=tinfo.get("threads"))
    for line in machine.machine_lines(info):
        log(line)
    smi = None if args.cpu_smoke else nvidia_smi()
    if smi:
        log(f"nvidia-smi: {smi}")

    on_gpu = gpu is not None
    stem = f"gpu-{today}" + ("-cpu-smoke" if args.cpu_smoke else "")
    ctx = Context(args=args, prof=prof, out_dir=out_dir, today=today, stem=stem, deadline=t_start + budget_s,
                  budget_s=budget_s, budgets=budgets, gpu=gpu, gpu_ok=on_gpu, on_gpu=on_gpu,
                  use_torch_cuda=on_gpu and bool(tinfo.get("cuda")), layer_device="cuda" if on_gpu else "cpu",
                  data_dir=data_dir, data_note=data_note, errors={})
    only = set(filter(None, (args.only or ",".join(s.name for s in SECTIONS)).split(",")))
    try:
        run_sections(SECTIONS, ctx, chosen=lambda s: s.name in only and not (s.name == "parity" and args.skip_tests),
                     watch=lambda s: {} if s is None else {"left": ctx.deadline - time.perf_counter(),
                                                           "device": ctx.layer_device},
                     budget=lambda s: budgets.get(s.name))
    except KeyboardInterrupt:            # make gpu-check's timeout sends SIGINT: keep what was measured
        ctx.errors["interrupted"] = "stopped from outside (SIGINT or SIGTERM: the time limit of make gpu-check?)"
        log("\ninterrupted: writing the report of what ran")
        for s in SECTIONS:
            if not all(k in ctx.results for k in s.keys):
                skip(ctx, s, "not run to its end: the run was interrupted.")

    info["loadavg_end"] = machine._read("/proc/loadavg").split()[:3]
    meta = {"date": today, "smoke": args.cpu_smoke, "duration_s": time.perf_counter() - t_start,
            "command": "benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "layer_device": ctx.layer_device, "profile": prof, "budget_s": budget_s, "budgets": budgets,
            "nvidia_smi": smi, "data": getattr(ctx, "data_source", None) or data_note}
    meta["command"] = meta["command"].strip()
    md_path, json_path = report.write_report(out_dir, stem, header(meta, gpu, tinfo, info, ctx),
                                             {"meta": meta, "gpu": gpu, "torch": tinfo, "machine": info}, ctx)
    log(f"\nreport: {md_path}\n        {json_path}" + "".join(f"\n        {f}" for f in ctx.files)
        + ("" if args.no_log else f"\n        {out_dir / 'gpu-check.log'}")
        + f"\n({meta['duration_s']:.0f} s)")
    par = ctx.results.get("parity")
    parity_failed = par is not None and bool(par["failures"] or (par["rc"] != 0 and not par["timed_out"]))
    return 1 if (on_gpu and not ctx.gpu_ok) or parity_failed else 0


if __name__ == "__main__":
    sys.exit(main())
