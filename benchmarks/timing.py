"""Timers: per-call seconds of each contender, measured alternating, and their statistics.

Timing rules (the machines are shared and noisy):
    * contenders are measured in the same run, alternating (the order rotates every round),
    * every contender is warmed up first, each sample times ``inner`` calls (chosen so that a
      sample lasts at least ``min_time``), and tables report the median of the samples,
    * comparisons are ratios of medians measured in that same run.

On a GPU the host's clock measures how fast Python queues kernels, not how long the device
works: LeNet's layers are launch-bound, so ``cupyx.profiler.benchmark`` (which synchronises
after every call) and CUDA events around a stream of queued calls both give about the wall
time. The device's own time comes from ``device_profile``: torch.profiler records, through
CUPTI, every kernel and copy the process runs on the GPU, CuPy's included, with its start and
end on the device; the union of those intervals is the time the device was busy.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field


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


# -- the device's own time: torch.profiler's record of the CUDA kernels ------------------------------------
COPY_PREFIXES = ("Memcpy", "Memset")     # kineto's names of the copies and fills queued on a stream
NO_CUDA = "no CUDA activity recorded"


@dataclass
class DeviceProfile:
    """One function measured on the device, everything per call.

    ``wall_s``: host clock around ``calls`` calls and a sync (no profiler running).
    ``span_s``: CUDA events recorded on the current stream before the first and after the last
    of those calls: the device's clock, idle gaps included (on a launch-bound function about
    ``wall_s``); None without ``cuda.Event``. ``busy_s``: the union of the intervals of every
    kernel, copy and fill torch.profiler recorded on the device over another ``calls`` calls;
    ``kernels`` and ``copies`` (memcpy and memset) counted there; ``top``: the busiest kernels as
    (name, launches, seconds). These four are None (``top`` empty) where the profiler recorded
    no CUDA activity: a CPU build of torch, no GPU, the CuPy stand-in. ``notes`` say why
    something is missing."""

    calls: int
    wall_s: float
    span_s: float | None = None
    busy_s: float | None = None
    kernels: float | None = None
    copies: float | None = None
    top: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def recorded(self) -> bool:
        return self.busy_s is not None

    @property
    def launches(self) -> float | None:
        """Kernels and copies: what the CuPy stand-in counts as launches."""
        return None if self.kernels is None else self.kernels + self.copies

    @property
    def busy_share(self) -> float | None:
        """The share of the wall time the device was busy (1: the device is the limit)."""
        return None if self.busy_s is None or not self.wall_s else self.busy_s / self.wall_s

    def to_json(self) -> dict:
        return {**asdict(self), "launches": self.launches, "busy_share": self.busy_share}


def kernel_summary(events, calls=1, top=8) -> dict | None:
    """Busy time, kernel and copy counts and the busiest kernels from device events
    ``(name, start_us, end_us)`` recorded over ``calls`` calls, per call (seconds); None for no
    events. Busy time is the union of the intervals: kernels of different streams may overlap,
    and the time between them is the device waiting."""
    events = list(events)
    if not events:
        return None
    busy, start, end = 0.0, None, None
    for s, e in sorted((s, e) for _, s, e in events):
        if end is None or s > end:
            busy += 0.0 if end is None else end - start
            start, end = s, e
        else:
            end = max(end, e)
    busy += end - start
    by_name = {}
    for name, s, e in events:
        n, t = by_name.get(name, (0, 0.0))
        by_name[name] = (n + 1, t + (e - s))
    copies = sum(n for name, (n, _) in by_name.items() if name.startswith(COPY_PREFIXES))
    busiest = sorted(by_name.items(), key=lambda kv: (-kv[1][1], kv[0]))[:top]
    return {"busy_s": busy * 1e-6 / calls, "kernels": (len(events) - copies) / calls, "copies": copies / calls,
            "top": [(name, n / calls, t * 1e-6 / calls) for name, (n, t) in busiest]}


def profiler_setup():
    """(torch, the profiler's activities, a note): CPU and CUDA where torch was built with CUDA
    and sees a device, else CPU only, with a note saying no CUDA activity can be recorded;
    torch None (and the note) where torch does not import."""
    try:
        import torch
        from torch.profiler import ProfilerActivity, supported_activities
    except Exception as exc:
        return None, [], f"{NO_CUDA}: torch.profiler does not import ({type(exc).__name__}: {exc})"
    acts = [ProfilerActivity.CPU]
    if ProfilerActivity.CUDA in supported_activities() and torch.cuda.is_available():
        return torch, acts + [ProfilerActivity.CUDA], ""
    why = "torch has no CUDA" if ProfilerActivity.CUDA not in supported_activities() else "torch sees no CUDA device"
    return torch, acts, f"{NO_CUDA} ({why}: torch.profiler records the CPU only)"


def cuda_events(prof) -> list:
    """``(name, start_us, end_us)`` of every event a finished torch.profiler run recorded on a
    CUDA device: kernels (CuPy's and torch's alike: CUPTI sees the whole process), copies, fills."""
    from torch.autograd import DeviceType

    return [(e.name, e.time_range.start, e.time_range.end) for e in prof.events() if e.device_type == DeviceType.CUDA]


def event_pair(cuda):
    """(start, stop) CUDA events of the array module ``cuda`` (CuPy, or the stand-in), or None
    with the reason where it has none."""
    Event = getattr(getattr(cuda, "cuda", None), "Event", None)
    elapsed = getattr(getattr(cuda, "cuda", None), "get_elapsed_time", None)
    if Event is None or elapsed is None:
        return None, "no cuda.Event/get_elapsed_time in the CUDA array module: no device-clock span"
    return (Event(), Event()), ""


def device_profile(fn, sync=noop, calls=20, warmup=2, cuda=None) -> DeviceProfile:
    """``fn`` measured on the device (see ``DeviceProfile``): ``warmup`` calls, then ``calls``
    timed by the host clock and by CUDA events of ``cuda`` (the array module; None: no events),
    then ``calls`` more under torch.profiler. ``sync()`` waits for the device's queue."""
    for _ in range(warmup):
        fn()
    sync()
    notes = []
    events, why = event_pair(cuda) if cuda is not None else (None, "")
    if why:
        notes.append(why)
    t0 = time.perf_counter()
    if events:
        events[0].record()
    for _ in range(calls):
        fn()
    if events:
        events[1].record()
    sync()
    wall = (time.perf_counter() - t0) / calls
    span = None
    if events:
        events[1].synchronize()
        span = cuda.cuda.get_elapsed_time(*events) * 1e-3 / calls
    out = DeviceProfile(calls=calls, wall_s=wall, span_s=span, notes=notes)
    torch, activities, why = profiler_setup()
    if torch is None:
        notes.append(why)
        return out
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(calls):
            fn()
        sync()
    summary = kernel_summary(cuda_events(prof), calls)
    if summary is None:
        notes.append(why or f"{NO_CUDA}: torch.profiler saw no kernel on the device")
        return out
    out.busy_s, out.kernels, out.copies, out.top = (summary["busy_s"], summary["kernels"], summary["copies"],
                                                    summary["top"])
    return out


@dataclass
class DeviceStats(Stats):
    """``Stats`` of the wall time per call (``samples``, what ``.median`` gives) with the
    ``DeviceProfile`` of the last sample (busy time, kernels) beside it."""

    profile: DeviceProfile | None = None

    def to_json(self) -> dict:
        return {**super().to_json(), "device": None if self.profile is None else self.profile.to_json()}


def device_timer(min_time=0.02, max_calls=200, rounds=3, cuda=None):
    """A timer (contenders -> name -> DeviceStats) for ``per_layer.layer_benchmark``: per
    contender, calls enough for ``min_time`` seconds (at most ``max_calls``), ``rounds`` - 1
    samples of the wall time, then one ``device_profile`` (its wall time the last sample)."""
    def timer(contenders):
        out = {}
        for name, c in contenders.items():
            fn, sync = c if isinstance(c, tuple) else (c, noop)
            fn()
            sync()
            calls = calibrate(fn, sync, min_time, max_calls)
            samples = []
            for _ in range(rounds - 1):
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                sync()
                samples.append((time.perf_counter() - t0) / calls)
            prof = device_profile(fn, sync, calls, warmup=0, cuda=cuda)
            out[name] = DeviceStats(samples + [prof.wall_s], calls, prof)
        return out
    return timer
