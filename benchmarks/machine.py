"""The machine: CPU, memory, libraries and their thread pools, the git state, the float32 matmul
peak, and how much CPU time other processes took while we measured."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np

from .timing import measure

REPO = Path(__file__).resolve().parent.parent


def _read(path):
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _version(module):
    try:
        mod = __import__(module)
        return getattr(mod, "__version__", "?")
    except Exception:
        return None


def numpy_simd() -> dict | None:
    """NumPy's SIMD dispatch on this CPU, as ``np.show_runtime()`` prints it: the baseline it was
    built for, the dispatch targets this CPU supports (found) and those it lacks (not found)."""
    try:
        from numpy._core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__
    except ImportError:
        try:
            from numpy.core._multiarray_umath import __cpu_baseline__, __cpu_dispatch__, __cpu_features__
        except ImportError:
            return None
    return {"baseline": list(__cpu_baseline__),
            "found": [t for t in __cpu_dispatch__ if __cpu_features__.get(t)],
            "not_found": [t for t in __cpu_dispatch__ if not __cpu_features__.get(t)]}


def machine_info(torch_threads=None) -> dict:
    cpuinfo = _read("/proc/cpuinfo")
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")),
                 platform.processor() or "?")
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), [])
    simd = [f for f in ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags]
    simd_level = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "AVX" if "avx" in flags
                  else "SSE" if flags else "unknown")
    mem = next((line.split()[1] for line in _read("/proc/meminfo").splitlines() if line.startswith("MemTotal")), None)
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu_model": model, "simd": simd, "simd_level": simd_level, "numpy_simd": numpy_simd(),
        "logical_cpus": os.cpu_count(), "usable_cpus": usable,
        "memory_gib": round(int(mem) / 2 ** 20, 1) if mem else None,
        "loadavg_start": _read("/proc/loadavg").split()[:3],
        "python": platform.python_version(), "platform": platform.platform(),
        "numpy": np.__version__, "scipy": _version("scipy"), "torch": _version("torch"),
        "env": {k: os.environ[k] for k in ("LENET_NP_IMPL", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                            "MKL_NUM_THREADS") if k in os.environ},
        "git": git_state(),
    }
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info["numpy_blas"] = {k: blas.get(k) for k in ("name", "version", "openblas configuration") if blas.get(k)}
    except Exception:
        info["numpy_blas"] = None
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads",
                                                      "threading_layer", "architecture", "filepath")}
                               for p in threadpool_info()]
    except Exception:
        info["threadpools"] = None
    if torch_threads is not None:
        info["torch_threads"] = torch_threads
    return info


def git_state() -> dict:
    def git(*args):
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout
        except Exception:
            return ""
    changed = git("status", "--porcelain", "--", "lenet_np")
    return {"commit": git("rev-parse", "--short", "HEAD").strip() or None,
            "lenet_np_changed_files": [line[3:] for line in changed.splitlines()]}


def machine_lines(info) -> list:
    lines = [f"- CPU: {info['cpu_model']}, SIMD level {info.get('simd_level', '?')} "
             f"({', '.join(info['simd']) or 'no SIMD flags read'}); "
             f"{info['usable_cpus']} usable of {info['logical_cpus']} logical CPUs; {info['memory_gib']} GiB",
             f"- load average at start: {' '.join(info['loadavg_start'])}"
             + (f", at end: {' '.join(info['loadavg_end'])}" if info.get("loadavg_end") else ""),
             f"- Python {info['python']}, NumPy {info['numpy']}, SciPy {info['scipy']}, torch {info['torch']}"
             + (f" ({info['torch_threads']} threads)" if info.get("torch_threads") else ""),
             f"- {info['platform']}"]
    ns = info.get("numpy_simd")
    if ns:
        lines.append(f"- NumPy SIMD dispatch: baseline {', '.join(ns['baseline']) or '-'}; this CPU runs "
                     f"{', '.join(ns['found']) or 'the baseline only'}"
                     + (f" (not found: {', '.join(ns['not_found'])})" if ns["not_found"] else ""))
    if info.get("numpy_blas"):
        b = info["numpy_blas"]
        lines.append(f"- NumPy BLAS: {b.get('name')} {b.get('version', '')}")
    for p in info.get("threadpools") or []:
        lines.append(f"- thread pool: {p['internal_api']} {p.get('version') or ''} ({p['user_api']}), "
                     f"{p['num_threads']} threads, {p.get('architecture') or p.get('threading_layer') or ''}: "
                     f"{Path(p.get('filepath') or '').name}")
    git = info.get("git") or {}
    if git.get("commit"):
        changed = git.get("lenet_np_changed_files") or []
        lines.append(f"- lenet_np at commit {git['commit']}"
                     + (f", with uncommitted changes in {', '.join(changed)}" if changed else ""))
    for k, v in (info.get("env") or {}).items():
        lines.append(f"- {k}={v}")
    return lines


def matmul_peak(n=2048, repeats=5, torch_too=True):
    """GFLOP/s of an n x n float32 matmul: NumPy (and torch CPU when importable)."""
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    c = np.empty_like(a)
    contenders = {"numpy": lambda: np.matmul(a, b, out=c)}
    if torch_too:
        try:
            import torch

            ta, tb, tc = torch.from_numpy(a), torch.from_numpy(b), torch.empty(n, n)
            contenders["torch"] = lambda: torch.mm(ta, tb, out=tc)
        except ImportError:
            pass
    stats = measure(contenders, repeats=repeats, warmup=1, min_time=0.2)
    flop = 2.0 * n ** 3
    return {name: {"gflops": flop / s.median / 1e9, "time": s.to_json()} for name, s in stats.items()}


class CpuMonitor:
    """How much of the machine's CPU time other processes took while we measured.

    /proc/stat counts the busy time of all CPUs; getrusage counts ours (and our finished
    children's). others = (all busy - ours) / (wall time x CPUs). On a shared machine this is
    the number that says whether a section's timings can be trusted."""

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        import resource

        fields = _read("/proc/stat").split("\n", 1)[0].split()[1:]
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        busy = None
        if len(fields) >= 8:
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
            busy = (user + nice + system + irq + softirq + steal) / ticks
        ours = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            ru = resource.getrusage(who)
            ours += ru.ru_utime + ru.ru_stime
        return time.perf_counter(), busy, ours

    def stop(self) -> dict:
        t1, busy1, ours1 = self._snapshot()
        t0, busy0, ours0 = self.start
        cpus = os.cpu_count() or 1
        wall = t1 - t0
        if busy0 is None or busy1 is None or wall <= 0:
            return {"wall_s": wall, "others": None, "ours": None}
        others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / (wall * cpus)
        return {"wall_s": wall, "others": others, "ours": (ours1 - ours0) / (wall * cpus)}
