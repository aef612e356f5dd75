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
import datetime as dt
import os
import signal
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:          # run as a script: make `benchmarks` and `lenet_np` importable
    sys.path.insert(0, str(REPO))

# nothing imported here needs NumPy: the benchmark modules (benchmarks.gpu.common's contenders,
# datasets, machine, per_layer, report and timing) are loaded in main() once the GPU check has passed
from benchmarks.gpu import common  # noqa: E402
from benchmarks.gpu.common import (  # noqa: E402
    CUPY_PACKAGE,
    EXIT_NO_GPU,
    PROFILES,
    data_is_real,
    datasets,
    detect_gpu,
    machine,
    nvidia_smi,
    report,
    torch_cuda_info,
    use_standin,
)
from benchmarks.gpu.first_step import child_main, first_step  # noqa: E402
from benchmarks.gpu.measure import cpu_layers, epoch, kernels, layers, sweep  # noqa: E402
from benchmarks.gpu.parity import parity  # noqa: E402
from benchmarks.gpu.preflight import preflight  # noqa: E402
from benchmarks.sections import Context, Section, log, run_sections, skip  # noqa: E402


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
    if args.child:
        common.load(("datasets", "timing"))
        staged = datasets.staged_python_dir()
        if staged:
            sys.path.append(str(staged))
        return child_main(args)
    if args.stage:
        common.load(("datasets",))
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

    common.load(("datasets",))
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
        common.load(("contenders", "machine", "per_layer", "report", "timing"))
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
