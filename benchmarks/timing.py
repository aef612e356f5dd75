"""Timers: per-call seconds of each contender, measured alternating, and their statistics.

Timing rules (the machines are shared and noisy):
    * contenders are measured in the same run, alternating (the order rotates every round),
    * every contender is warmed up first, each sample times ``inner`` calls (chosen so that a
      sample lasts at least ``min_time``), and tables report the median of the samples,
    * comparisons are ratios of medians measured in that same run.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field


def noop():
    return None


@dataclass
class Stats:
    """Per-call seconds of each sample; ``median`` is what the tables show."""

    samples: list = field(default_factory=list)
    inner: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def min(self) -> float:
        return min(self.samples) if self.samples else float("nan")

    @property
    def spread(self) -> float:
        """(max - min) / median of the samples: how noisy the measurement was."""
        if len(self.samples) < 2:
            return 0.0
        return (max(self.samples) - min(self.samples)) / self.median

    def to_json(self) -> dict:
        return {"median_s": self.median, "min_s": self.min, "spread": self.spread, "inner": self.inner,
                "samples_s": self.samples}


def calibrate(fn, sync=noop, min_time=0.05, max_inner=10_000) -> int:
    """How many calls of fn make one sample of at least ``min_time`` seconds (judged on the
    fastest of a few trial samples, so one slow call does not make the samples too short)."""
    n, best = 1, float("inf")
    for _ in range(3):
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        sync()
        best = min(best, (time.perf_counter() - t0) / n)
        if best * n < min_time / 8:            # very fast calls: try more of them per trial
            n = int(min(max_inner, max(n * 2, min_time / 8 / max(best, 1e-9))))
    return int(max(1, min(max_inner, math.ceil(min_time / max(best, 1e-9)))))


def measure(contenders: dict, repeats=5, warmup=2, min_time=0.05, max_inner=10_000, settle=0.1) -> dict:
    """Time each contender's ``fn`` (per call), alternating contenders round by round.

    Before each sample the contender runs untimed for ``settle`` seconds: right after a switch
    the other library's idle worker threads still spin (OpenBLAS and OpenMP busy-wait for tens
    of milliseconds before they sleep) and on two cores they slow the first calls by up to
    100x. Measured here: torch's first calls after NumPy's took 8-20 ms instead of 0.2 ms
    for about 50 ms. Training never switches libraries, so the benchmark must not either.

    ``contenders``: name -> fn, or name -> (fn, sync) where sync() waits for queued device work.
    Returns name -> Stats.
    """
    items = {}
    for name, c in contenders.items():
        fn, sync = c if isinstance(c, tuple) else (c, noop)
        t_settle = time.perf_counter() + settle
        for _ in range(warmup):
            fn()
        while time.perf_counter() < t_settle:
            fn()
        sync()
        items[name] = (fn, sync, calibrate(fn, sync, min_time, max_inner))
    out = {name: Stats(inner=inner) for name, (_, _, inner) in items.items()}
    names = list(items)
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:          # rotate: nobody always runs first
            fn, sync, inner = items[name]
            t_settle = time.perf_counter() + settle  # untimed calls first: see the docstring
            fn()
            while time.perf_counter() < t_settle:
                fn()
            sync()
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            out[name].samples.append((time.perf_counter() - t0) / inner)
    return out


def profile_timer(prof: dict, key: str, **kw):
    """A timer (contenders -> name -> Stats) of ``measure`` with the repeats and the minimum
    sample time that the profile gives ``key`` (``{key}_repeats``, ``{key}_min``), and its
    ``settle`` where it has one."""
    if "settle" in prof:
        kw.setdefault("settle", prof["settle"])

    def timer(contenders):
        return measure(contenders, prof[f"{key}_repeats"], min_time=prof[f"{key}_min"], **kw)
    return timer


def gpu_timer(n_repeat: int, rounds: int = 3):
    """A timer (contenders -> name -> Stats) of GPU time per call, from ``cupyx.profiler.benchmark``:
    CUDA events on the current stream (torch's default stream is the same legacy stream), the
    median of ``n_repeat`` calls in each of ``rounds`` alternating rounds."""
    from cupyx.profiler import benchmark

    def timer(contenders):
        out = {name: Stats(inner=n_repeat) for name in contenders}
        for _ in range(rounds):
            for name, c in contenders.items():
                fn = c[0] if isinstance(c, tuple) else c
                r = benchmark(fn, n_repeat=n_repeat, n_warmup=2)
                out[name].samples.append(float(sorted(r.gpu_times[0])[len(r.gpu_times[0]) // 2]))
        return out
    return timer
