"""GPU check: the test suite and the GPU benchmarks on a lent CUDA machine, in one go.

    PYTHONPATH=. python benchmarks/gpu_check.py        (or: make gpu-check)

Run from the repository root. Needs CuPy and a CUDA device (PyTorch with CUDA for the torch
columns, matplotlib for the plot; both optional). Under eight minutes:

1. the GPU: name, memory, compute capability, CUDA runtime and driver, library versions;
2. ``python -m pytest -q -rfE tests/``: the whole suite, its CuPy cases on the GPU, every
   failure collected (no ``-x``), with a time limit so the benchmarks still run;
3. one training epoch (60,000 examples, batch 256, Adam) and one test-set evaluation:
   lenet_np on CuPy (data moved to the device once, one sync per epoch) against torch CUDA
   eager, lenet_np on NumPy and torch on the CPU (a fraction of the epoch, scaled);
4. every layer's forward and backward at batch 256 on CuPy (fast and reference) and torch CUDA:
   time per call in a stream of calls (sync at the ends) and GPU time per call
   (``cupyx.profiler.benchmark``);
5. examples/s against batch size (1 .. 4096): NumPy, CuPy, torch CPU, torch CUDA, with a plot.

Items 2 to 5 are its sections (``SECTIONS`` below); torch runs with TF32 off, and the report
records ``CUPY_TF32``.

Writes ``gpu-YYYY-MM-DD.md``, ``.json`` and ``.png`` into ``$OUT`` when set, else into
``benchmarks/results/``, and copies everything it prints into ``gpu-check.log`` there.
Without CuPy or a GPU it says so and exits with status 2. ``--cpu-smoke`` runs the same code
paths on a machine without a GPU, tiny and fast: device "cuda" is then the test suite's NumPy-backed
CuPy stand-in (``tests/cupy_standin.py``), pytest runs one small test file, and wall-clock time
stands in for GPU time. A check of this script before it gets its one try on a GPU.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # run as a script: make `benchmarks` and `lenet_np` importable
    sys.path.insert(0, str(REPO))

from benchmarks.sections import Context, Part, Section, failed, log, run_sections  # noqa: E402  (needs no NumPy)

# the benchmark modules, imported in main() once the GPU check has passed (they need NumPy)
contenders = datasets = machine = per_layer = report = timing = None

SWEEP_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
EXIT_NO_GPU = 2

PROFILES = {
    # budget_s: the whole script; e2e fractions of the epoch for the CPU contenders
    "gpu": dict(budget_s=450, pytest_timeout=240, pytest_targets=("tests/",),
                e2e_repeats=3, cpu_fraction=0.1, gpu_fraction=1.0,
                layer_repeats=5, layer_min=0.02, kernel_repeat=30, sweep_repeats=3, sweep_min=0.05,
                sweep=SWEEP_BATCHES, settle=0.05),
    "cpu-smoke": dict(budget_s=300, pytest_timeout=120, pytest_targets=("tests/test_cupy_standin.py",),
                      e2e_repeats=2, cpu_fraction=0.01, gpu_fraction=0.01,
                      layer_repeats=2, layer_min=0.002, kernel_repeat=3, sweep_repeats=2, sweep_min=0.002,
                      sweep=(1, 4, 16), settle=0.02),
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
                   help="no GPU: run this script's code paths on the CuPy stand-in, tiny sizes, one test file")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest")
    p.add_argument("--pytest-timeout", type=float, default=None, help="seconds for pytest (default: 240)")
    p.add_argument("--budget", type=float, default=None, help="seconds for the whole script (default: 450)")
    return p.parse_args(argv)


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


# -- the tests ------------------------------------------------------------------------------------------
def run_pytest(timeout, targets=("tests/",)):
    """``python -m pytest -q -rfE tests/`` with its output streamed through our log; killed after
    timeout. Every failure is collected, none stops the run."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *targets]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    log(f"$ python {' '.join(cmd[1:])}   (time limit {timeout:.0f} s)")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    timed_out = threading.Event()

    def kill():
        timed_out.set()
        proc.kill()
    timer = threading.Timer(timeout, kill)
    timer.start()
    tail, failures = [], []
    try:
        for line in proc.stdout:
            log(line, end="")
            tail = (tail + [line.rstrip()])[-5:]
            if line.startswith(("FAILED ", "ERROR ")):
                failures.append(line.rstrip())
        rc = proc.wait()
    finally:
        timer.cancel()
    seconds = time.perf_counter() - t0
    summary = next((t for t in reversed(tail) if t.strip()), "")
    if timed_out.is_set():
        log(f"pytest: stopped after {timeout:.0f} s (time limit), so that the benchmarks still run")
    return {"rc": rc, "seconds": seconds, "timed_out": timed_out.is_set(), "summary": summary,
            "command": "python " + " ".join(cmd[1:]), "failures": failures}


# -- the sections -------------------------------------------------------------------------------------
def left(ctx) -> float:
    """Seconds of the budget left."""
    return ctx.deadline - time.perf_counter()


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


def tests(ctx) -> Part:
    res = run_pytest(ctx.prof["pytest_timeout"], ctx.prof["pytest_targets"])
    state = ("stopped at the time limit" if res["timed_out"] else "passed" if res["rc"] == 0
             else f"FAILED (exit {res['rc']})")
    lines = ["## Tests", "", f"`{res['command']}`: {state} in {res['seconds']:.0f} s: `{res['summary']}`", ""]
    lines += [f"- `{line}`" for line in res["failures"]] + ([""] if res["failures"] else [])
    return Part({"tests": res}, lines)


def epoch(ctx) -> Part:
    prof = ctx.prof
    data = datasets.load_data("real")
    log(f"  data: {data.source}")
    runners = make_runners(ctx.kinds, data)
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
    return Part({"end_to_end": e2e}, [
        "## One epoch", "",
        f"LeNet (sigmoid, max pooling), Adam lr 1e-3, batch 256; data: {e2e['data']}. On the GPU the uint8 "
        "images are copied to the device once and each batch is converted there; one sync per epoch. The CPU "
        "contenders run a fraction of the epoch (`examples/run`); all times are scaled to 60,000 training "
        "and 10,000 test examples.", "", table, ""])


def layers(ctx) -> Part:
    if left(ctx) < 60:
        raise TimeoutError("skipped: out of time")
    torch_device = "cuda" if ctx.use_torch_cuda else "cpu"
    wall = per_layer.layer_benchmark(timing.profile_timer(ctx.prof, "layer"), device=ctx.layer_device, log=log,
                                     torch_device=torch_device)
    table = per_layer.layers_table(wall)
    log(table)
    lines = [f"## Per layer, batch 256, float32, on {ctx.layer_device}", "",
             "Time per call in a stream of calls (synchronised at both ends, so launch overheads overlap the "
             "GPU work as in training). `fast`/`reference`: lenet_np's two implementations of Conv2d and "
             "MaxPool2d on CuPy; `torch`: the same layer with autograd.", "", table, ""]
    kernels = None
    if ctx.on_gpu:
        try:         # the wall-clock table above stands when the GPU timer fails
            log("  GPU time per call (cupyx.profiler.benchmark):")
            timer = (timing.profile_timer(ctx.prof, "layer") if ctx.args.cpu_smoke
                     else timing.gpu_timer(ctx.prof["kernel_repeat"]))
            kernels = per_layer.layer_benchmark(timer, device="cuda", log=log, torch_device=torch_device)
            table = per_layer.layers_table(kernels)
            log(table)
            lines += ["GPU time per call (`cupyx.profiler.benchmark`: CUDA events around each call, median): the "
                      "device's own work, without the Python and launch overheads.", "", table, ""]
        except Exception as exc:
            failed(ctx, "layers", exc)
    return Part({"layers": wall, "layers_gpu_time": kernels}, lines)


def sweep(ctx) -> Part:
    prof = ctx.prof
    runners = make_runners(ctx.kinds)
    slow = {}

    def skip(name, n):
        # out of time, or the last step of this contender took so long that this one would not fit
        if n == prof["sweep"][0]:
            return False                                 # the smallest batch always runs
        prev = slow.get(name, 0.0) * 4
        return left(ctx) < 30 + prev * (prof["sweep_repeats"] + 3)

    def timer(contenders):
        res = timing.profile_timer(prof, "sweep", warmup=1, max_inner=1000)(contenders)
        slow.update({k: s.median for k, s in res.items()})
        return res
    res = per_layer.sweep_benchmark(runners, prof["sweep"], timer, skip=skip, log=log)
    names = list(runners)
    log(per_layer.sweep_table(res, names=names, base=names[1] if len(names) > 1 else names[0]))
    png = per_layer.sweep_plot(res, ctx.out_dir / f"gpu-{ctx.today}{'-cpu-smoke' if ctx.args.cpu_smoke else ''}.png",
                               f"LeNet training step, {ctx.gpu['name'] if ctx.gpu else 'CPU only (smoke run)'}",
                               log=log)
    names = [n for n in ("lenet_np-cupy", "torch-cuda", "lenet_np-numpy", "torch-cpu")
             if any(n in r for r in res.values())]
    lines = []
    if res:
        base = "torch-cuda" if "torch-cuda" in names else names[-1]
        lines = ["## Examples/s against batch size", "", "One training step (forward, loss, backward, Adam) on random "
                 "data.", "", per_layer.sweep_table(res, names=names, base=base), ""]
        lines += [f"![examples/s against batch size]({Path(png).name})", ""] if png else []
    return Part({"sweep": res}, lines, files=[png] if png else [])


SECTIONS = [
    Section("tests", "Tests", "``python -m pytest -q -rfE tests/``: the whole suite, its CuPy cases on the GPU, every "
            "failure collected (no ``-x``), with a time limit so the benchmarks still run", tests, keys=("tests",),
            timed=False, absent=("## Tests", "", "not run", "")),
    Section("epoch", "One epoch   ({left:.0f} s of the budget left)", "one training epoch (60,000 examples, "
            "batch 256, Adam) and one test-set evaluation", epoch, keys=("end_to_end",)),
    Section("layers", "Per layer on {device}   ({left:.0f} s left)", "every layer's forward and backward at "
            "batch 256", layers, keys=("layers", "layers_gpu_time")),
    Section("sweep", "Examples/s against batch size   ({left:.0f} s left)", "examples/s against batch size",
            sweep, keys=("sweep",)),
]


# -- the report ------------------------------------------------------------------------------------------
def header(meta, gpu, tinfo, info) -> list:
    title = "lenet_np GPU check" + (" (CPU smoke run: no GPU)" if meta["smoke"] else f" on {gpu['name']}")
    md = [f"# {title}, {meta['date']}", "",
          f"`{meta['command']}`, {meta['duration_s'] / 60:.1f} minutes. Ratios are of medians measured in the "
          "same run, the contenders alternating round by round.", "", "## Machine", ""]
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


def main(argv=None) -> int:
    args = parse_args(argv)
    prof = dict(PROFILES["cpu-smoke" if args.cpu_smoke else "gpu"])
    if args.budget:
        prof["budget_s"] = args.budget
    if args.pytest_timeout is not None:
        prof["pytest_timeout"] = args.pytest_timeout
    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else REPO / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = open(out_dir / "gpu-check.log", "a", encoding="utf-8")
    sys.stdout = Tee(sys.__stdout__, log_file)
    sys.stderr = Tee(sys.__stderr__, log_file)
    t_start = time.perf_counter()
    today = dt.date.today().isoformat()
    log(f"# lenet_np GPU check, {dt.datetime.now().isoformat(timespec='seconds')}, report in {out_dir}")

    if args.cpu_smoke:
        use_standin()
    gpu, why = detect_gpu()
    if not args.cpu_smoke:
        if gpu is None:
            log(f"gpu_check: no GPU to check: {why}.\n"
                "This script needs CuPy and a CUDA device (pip install cupy-cuda13x, or the build for your CUDA). "
                "On a machine without a GPU, run `make bench` for the CPU benchmarks, or "
                "`python benchmarks/gpu_check.py --cpu-smoke` to try this script.")
            return EXIT_NO_GPU
        log(f"GPU: {gpu['name']}   ({gpu['memory_gib']} GiB, cc {gpu['compute_capability']}, "
            f"CUDA runtime {gpu['cuda_runtime']}, driver {gpu['cuda_driver']}, CuPy {gpu['cupy']})")
    global contenders, datasets, machine, per_layer, report, timing
    try:
        from benchmarks import contenders, datasets, machine, per_layer, report, timing
    except ImportError as exc:
        log(f"gpu_check: cannot import the benchmark code: {exc}")
        return EXIT_NO_GPU
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
    use_torch_cuda = on_gpu and tinfo.get("cuda")
    kinds = (["cupy"] if on_gpu else []) + (["torch-cuda"] if use_torch_cuda else []) + ["numpy", "torch-cpu"]
    ctx = Context(args=args, prof=prof, out_dir=out_dir, today=today, deadline=t_start + prof["budget_s"], gpu=gpu,
                  on_gpu=on_gpu, use_torch_cuda=use_torch_cuda, layer_device="cuda" if on_gpu else "cpu",
                  kinds=kinds, errors={})
    run_sections(SECTIONS, ctx, chosen=lambda s: not (s.name == "tests" and args.skip_tests),
                 watch=lambda s: {} if s is None else {"left": left(ctx), "device": ctx.layer_device})

    info["loadavg_end"] = machine._read("/proc/loadavg").split()[:3]
    meta = {"date": today, "smoke": args.cpu_smoke, "duration_s": time.perf_counter() - t_start,
            "command": "benchmarks/gpu_check.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "e2e_base": (ctx.results["end_to_end"] or {}).get("base", "torch-cpu"), "layer_device": ctx.layer_device,
            "profile": prof, "nvidia_smi": smi}
    meta["command"] = meta["command"].strip()
    stem = f"gpu-{meta['date']}" + ("-cpu-smoke" if args.cpu_smoke else "")
    md_path, json_path = report.write_report(out_dir, stem, header(meta, gpu, tinfo, info),
                                             {"meta": meta, "gpu": gpu, "torch": tinfo, "machine": info}, ctx)
    log(f"\nreport: {md_path}\n        {json_path}" + "".join(f"\n        {f}" for f in ctx.files)
        + f"\n        {out_dir / 'gpu-check.log'}\n({meta['duration_s'] / 60:.1f} minutes)")
    tests_run = ctx.results["tests"]
    if tests_run is not None and tests_run["rc"] != 0 and not tests_run["timed_out"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
