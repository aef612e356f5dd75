"""Section 6, the first training steps: each variant in a fresh process (``gpu_check.py --child
first-step``), with an empty kernel cache and then with the cache on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.gpu.common import CHILD_TAG, REPO, VARIANTS, child_env, report, require_gpu, training_step, use_standin
from benchmarks.sections import Part, log, time_left


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
