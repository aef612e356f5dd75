"""Shared benchmark machinery: timers, the contenders (lenet_np and the seed's torch model),
per-layer cases, FLOP counts, machine information and markdown tables.

Used by ``benchmarks/run.py`` (CPU) and ``benchmarks/gpu_check.py`` (CuPy and torch CUDA).
Everything here works on NumPy alone; torch and CuPy are imported only when asked for, so a
``--child lenet_np-train`` process never loads torch.

Timing rules (the machines are shared and noisy):
    * contenders are measured in the same run, alternating (the order rotates every round),
    * every contender is warmed up first, each sample times ``inner`` calls (chosen so that a
      sample lasts at least ``min_time``), and tables report the median of the samples,
    * comparisons are ratios of medians measured in that same run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
BATCH_SIZE = 256
LR = 1e-3
N_TRAIN, N_TEST = 60_000, 10_000
LAYER_NAMES = ("conv.0", "conv.1", "conv.2", "conv.3", "conv.4", "conv.5",
               "fc.0", "fc.1", "fc.2", "fc.3", "fc.4")


def noop():
    return None


# -- timing --------------------------------------------------------------------------------------
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


# -- data ----------------------------------------------------------------------------------------
@dataclass
class Data:
    train_images: np.ndarray   # (N, 28, 28) uint8
    train_labels: np.ndarray   # (N,) int64
    test_images: np.ndarray
    test_labels: np.ndarray
    source: str                # "real" or "synthetic" (with the reason when real was asked for)


def synthetic_data(seed=0, n_train=N_TRAIN, n_test=N_TEST) -> Data:
    rng = np.random.default_rng(seed)
    return Data(rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train),
                rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test),
                "synthetic (uniform random uint8)")


def load_data(kind="real") -> Data:
    """Fashion-MNIST through lenet_np.data when kind == "real" and it loads, else synthetic data of
    the same shapes and dtype."""
    if kind == "synthetic":
        return synthetic_data()
    try:
        from lenet_np.data import load_fashion_mnist

        ds = load_fashion_mnist()
    except Exception as exc:  # not written yet, not downloaded, damaged: fall back, say why
        data = synthetic_data()
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        data.source += f"; the real data did not load: {type(exc).__name__}: {first}"
        return data
    return Data(np.ascontiguousarray(ds.train_images), ds.train_labels.astype(np.int64),
                np.ascontiguousarray(ds.test_images), ds.test_labels.astype(np.int64), "real Fashion-MNIST")


def batch_slices(n, batch_size=BATCH_SIZE, limit=None):
    """(start, stop) of each mini-batch of n examples (the last one may be short), at most ``limit``."""
    starts = range(0, n, batch_size)
    if limit is not None:
        starts = starts[:limit]
    return [(s, min(s + batch_size, n)) for s in starts]


def random_batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, n)


# -- the contenders --------------------------------------------------------------------------------
def import_torch(threads=None):
    import torch

    if threads:
        torch.set_num_threads(int(threads))
    return torch


def seed_torch_lenet_class():
    """The book's PyTorch LeNet (older PyTorch edition), defined only once torch is imported."""
    import torch.nn as nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Sequential(
                nn.Conv2d(1, 6, 5), nn.Sigmoid(), nn.MaxPool2d(2, 2),
                nn.Conv2d(6, 16, 5), nn.Sigmoid(), nn.MaxPool2d(2, 2),
            )
            self.fc = nn.Sequential(
                nn.Linear(16 * 4 * 4, 120), nn.Sigmoid(), nn.Linear(120, 84), nn.Sigmoid(), nn.Linear(84, 10),
            )

        def forward(self, img):
            feature = self.conv(img)
            return self.fc(feature.view(img.shape[0], -1))

    return LeNet


def make_lenet_np(seed=0, impl="fast", device="cpu"):
    import lenet_np as ln

    net = ln.LeNet(seed=seed)
    set_impl(net, impl)
    if device != "cpu":
        net.to(device)
    return net


def set_impl(net, impl):
    """Switch every layer that has two implementations (Conv2d, MaxPool2d) to ``impl``."""
    for _, m in net.named_modules():
        if hasattr(m, "impl"):
            m.impl = impl
    return net


def make_torch_lenet(seed=0, device="cpu"):
    """The seed's torch model with the same initial weights as ``lenet_np.LeNet(seed=seed)``."""
    import torch

    tnet = seed_torch_lenet_class()()
    sd = make_lenet_np(seed).state_dict()
    tnet.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in sd.items()})
    return tnet.to(device)


class Runner:
    """What both contenders share: one pass over shuffled batches, synchronised once."""

    def train_epoch(self, perm, limit=None):
        """Train on the batches of ``perm`` (a NumPy permutation); returns (mean loss, examples)."""
        self.net.train()
        perm = self.device_array(perm)
        total, seen = 0.0, 0
        for s, e in batch_slices(len(perm), self.batch_size, limit):
            idx = perm[s:e]
            loss = self.step(self.to_batch(self.train_x[idx]), self.train_y[idx])
            total = total + loss * (e - s)
            seen += e - s
        self.sync()
        return float(total) / seen, seen


class LenetNpRunner(Runner):
    """lenet_np training and evaluation (NumPy, or CuPy with device="cuda"): the book's settings."""

    def __init__(self, data=None, device="cpu", impl="fast", seed=0, batch_size=BATCH_SIZE, lr=LR, workers=None):
        """``workers``: on the CPU, threads that share each batch as ``python -m lenet_np.train``
        does (None: as train's default, one per core up to 4; 1: no threads). The reference
        implementation runs single-threaded unless told otherwise, so that it stays the plain path."""
        import lenet_np as ln
        from lenet_np import backend
        from lenet_np.parallel import DataParallel, default_workers

        self.name = f"lenet_np-{'cupy' if device == 'cuda' else 'numpy'}" + ("" if impl == "fast" else f"-{impl}")
        self.device, self.batch_size = device, batch_size
        self.xp = backend.xp_for(device)
        self.net = make_lenet_np(seed, impl, device)
        if workers is None:
            workers = default_workers() if impl == "fast" else 1
        self.workers = workers if device == "cpu" else 1
        self.model = DataParallel(self.net, self.workers) if self.workers > 1 else self.net
        self.loss_fn = ln.nn.CrossEntropyLoss()
        self.opt = ln.optim.Adam(self.net.parameters(), lr=lr)
        self._sync = (lambda: backend.synchronize()) if device == "cuda" else noop
        if data is not None:
            xp = self.xp
            self.train_x, self.train_y = xp.asarray(data.train_images), xp.asarray(data.train_labels)
            self.test_x, self.test_y = xp.asarray(data.test_images), xp.asarray(data.test_labels)

    def sync(self):
        self._sync()

    def to_batch(self, images_u8):
        x = images_u8.astype(self.xp.float32)
        x /= 255
        return x.reshape(-1, 1, 28, 28)

    def device_array(self, a):
        return self.xp.asarray(a)

    def step(self, x, y):
        """One training step; returns the loss as a 0-d array (no device sync)."""
        self.opt.zero_grad()
        logits = self.model(x)
        loss = self.loss_fn.forward(logits, y)
        self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.opt.step()
        return loss

    def evaluate(self, limit=None):
        """Test accuracy over the first ``limit`` batches; returns (accuracy, examples)."""
        self.net.eval()
        correct, seen = 0, 0
        for s, e in batch_slices(len(self.test_x), self.batch_size, limit):
            logits = self.model(self.to_batch(self.test_x[s:e]))
            correct = correct + (logits.argmax(axis=1) == self.test_y[s:e]).sum()
            seen += e - s
        self.sync()
        self.net.train()
        return float(correct) / seen, seen


class TorchRunner(Runner):
    """The seed's torch model, trained and evaluated the same way (device "cpu" or "cuda")."""

    def __init__(self, data=None, device="cpu", seed=0, batch_size=BATCH_SIZE, lr=LR, threads=None):
        torch = self.torch = import_torch(threads)
        import torch.nn.functional as F

        self.F = F
        self.name = f"torch-{device}"
        self.device, self.batch_size = device, batch_size
        self.net = make_torch_lenet(seed, device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        if data is not None:
            self.train_x = torch.from_numpy(data.train_images).to(device)
            self.train_y = torch.from_numpy(data.train_labels).to(device)
            self.test_x = torch.from_numpy(data.test_images).to(device)
            self.test_y = torch.from_numpy(data.test_labels).to(device)

    def sync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def to_batch(self, images_u8):
        return images_u8.float().div_(255).unsqueeze(1)

    def device_array(self, a):
        return self.torch.from_numpy(np.ascontiguousarray(a)).to(self.device)

    def step(self, x, y):
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.net(x), y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def evaluate(self, limit=None):
        self.net.eval()
        correct, seen = 0, 0
        with self.torch.no_grad():
            for s, e in batch_slices(len(self.test_x), self.batch_size, limit):
                logits = self.net(self.to_batch(self.test_x[s:e]))
                correct = correct + (logits.argmax(dim=1) == self.test_y[s:e]).sum()
                seen += e - s
        self.sync()
        self.net.train()
        return float(correct) / seen, seen


def end_to_end(runners: dict, n_train, n_test, repeats=3, seed=0, log=print, n_total=N_TRAIN) -> dict:
    """Alternating runs of one training pass over ``n_train`` examples and one evaluation over
    ``n_test``: per runner name, Stats of train and eval seconds and the last loss/accuracy.

    ``runners``: name -> runner. ``n_train`` and ``n_test``: a number, or a dict name -> number
    (a slow contender may run a fraction of the epoch). Every runner sees the same shuffled
    order in a given round; the clock stops after a device sync, once per pass.
    """
    def limit(n, name):
        return math.ceil((n[name] if isinstance(n, dict) else n) / BATCH_SIZE)

    warm_perm = np.random.default_rng(seed + 1000).permutation(n_total)
    for r in runners.values():                       # warm-up: caches, kernels, thread pools
        r.train_epoch(warm_perm, limit=2)
        r.evaluate(limit=1)
    out = {name: {"train": Stats(), "eval": Stats()} for name in runners}
    names = list(runners)
    for rep in range(repeats):
        perm = np.random.default_rng(seed + rep).permutation(n_total)
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            runner = runners[name]
            runner.sync()
            t0 = time.perf_counter()
            loss, seen = runner.train_epoch(perm, limit=limit(n_train, name))
            t_train = time.perf_counter() - t0
            t0 = time.perf_counter()
            acc, seen_test = runner.evaluate(limit=limit(n_test, name))
            t_eval = time.perf_counter() - t0
            out[name]["train"].samples.append(t_train)
            out[name]["eval"].samples.append(t_eval)
            out[name].update(loss=loss, accuracy=acc, n_train=seen, n_test=seen_test)
            out[name].setdefault("rounds", []).append({"loss": loss, "accuracy": acc})
            log(f"  round {rep + 1}/{repeats} {name:<18} train {fmt_time(t_train):>9} ({seen} ex, loss {loss:.4f})"
                f"   eval {fmt_time(t_eval):>9} ({seen_test} ex, acc {acc:.4f})")
    return out


# -- per layer -------------------------------------------------------------------------------------
@dataclass
class LayerCase:
    name: str
    layer: object          # the lenet_np layer
    x: object              # its input in the network (layout as the network produces it)
    grad: object           # dL/d(output) in the network
    first: bool            # the first layer: no input gradient


def lenet_np_layer_cases(net, x, y):
    """Run one training step of ``net`` layer by layer and keep each layer's input and output
    gradient, so each layer can be timed alone on exactly what it sees in training."""
    from lenet_np import nn

    # in the order a training forward runs them (LeNet.conv_order)
    index = {id(m): i for i, m in enumerate(net.conv)}
    layers = ([(f"conv.{index[id(m)]}", m) for m in net.conv_order()]
              + [(f"fc.{i}", m) for i, m in enumerate(net.fc)])
    inputs, h = [], x
    for i, (_, m) in enumerate(layers):
        if i == len(net.conv):
            feature_shape = h.shape
            h = h.reshape(h.shape[0], -1)
        inputs.append(h)
        h = m(h)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn.forward(h, y)
    g = loss_fn.backward()
    grads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        grads[i] = g
        g = layers[i][1].backward(g, input_grad=i > 0)
        if i == len(net.conv):
            g = g.reshape(feature_shape)
    return [LayerCase(name, m, inputs[i], grads[i], i == 0) for i, (name, m) in enumerate(layers)]


def lenet_np_layer_fns(case: LayerCase):
    """(forward fn, backward fn) timing one lenet_np layer; call forward once before backward."""
    params = case.layer.parameters()

    def forward():
        return case.layer(case.x)

    def backward():
        for p in params:
            p.grad = None
        return case.layer.backward(case.grad, input_grad=not case.first)

    return forward, backward


def torch_layer_fns(tnet, case: LayerCase, device="cpu"):
    """(forward fn, backward fn) for the torch layer of the same name, on the same values
    (contiguous copies): forward with autograd recording; backward = ``y.backward(grad)``
    through the recorded graph (input requires grad except for the first conv)."""
    import torch

    from lenet_np import backend

    part, index = case.name.split(".")
    layer = getattr(tnet, part)[int(index)]
    x = torch.from_numpy(np.ascontiguousarray(backend.as_numpy(case.x))).to(device)
    x.requires_grad_(not case.first)
    g = torch.from_numpy(np.ascontiguousarray(backend.as_numpy(case.grad))).to(device)
    params = list(layer.parameters())
    y = layer(x)

    def forward():
        return layer(x)

    def backward():
        x.grad = None
        for p in params:
            p.grad = None
        y.backward(g, retain_graph=True)

    return forward, backward


def loss_and_optimizer_fns(runner, x, y):
    """(loss forward, loss backward, optimizer step) timers: the rest of a training step."""
    if isinstance(runner, TorchRunner):
        logits = runner.net(x).detach().requires_grad_(True)
        loss = runner.F.cross_entropy(logits, y)
        runner.step(x, y)                                      # every parameter has a gradient now

        def loss_backward():
            logits.grad = None
            loss.backward(retain_graph=True)

        return (lambda: runner.F.cross_entropy(logits, y)), loss_backward, runner.opt.step
    logits = runner.net(x)
    runner.step(x, y)                                          # every parameter has a gradient now
    loss_fn = runner.loss_fn
    loss_fn.forward(logits, y)
    return (lambda: loss_fn.forward(logits, y)), loss_fn.backward, runner.opt.step


def layer_benchmark(timer, device="cpu", batch=BATCH_SIZE, torch_threads=None, log=print,
                    torch_device=None) -> dict:
    """Forward and backward of every LeNet layer, lenet_np ``fast`` and ``reference`` against torch,
    then the loss, the Adam step and the whole training step; ``timer(contenders)`` -> name -> Stats
    (``contenders``: name -> (fn, sync)). Returns layer name -> {kind, input, forward, backward}.
    Torch runs on ``torch_device`` (default: ``device``; "cpu" where torch has no CUDA)."""
    from lenet_np import backend

    torch = import_torch(torch_threads)
    torch_device = torch_device or device
    x, y = random_batch(batch, seed=1)
    xd, yd = backend.to_device(x, device), backend.to_device(y, device)
    nets = {impl: make_lenet_np(0, impl, device) for impl in ("fast", "reference")}
    cases = {impl: lenet_np_layer_cases(net, xd, yd) for impl, net in nets.items()}
    tnet = make_torch_lenet(0, torch_device)
    np_sync = backend.synchronize if device == "cuda" else noop
    torch_sync = torch.cuda.synchronize if torch_device == "cuda" else noop
    syncs = {"fast": np_sync, "reference": np_sync, "torch": torch_sync}
    out = {}
    for i, name in enumerate(LAYER_NAMES):
        fns = {impl: lenet_np_layer_fns(cases[impl][i]) for impl in nets}
        fns["torch"] = torch_layer_fns(tnet, cases["fast"][i], torch_device)
        fwd = timer({k: (f[0], syncs[k]) for k, f in fns.items()})
        bwd = timer({k: (f[1], syncs[k]) for k, f in fns.items()})
        case = cases["fast"][i]
        out[name] = {"kind": type(case.layer).__name__, "input": tuple(case.x.shape), "forward": fwd,
                     "backward": bwd}
        log(f"  {name:<7} {type(case.layer).__name__:<10} " + "  ".join(
            f"{k} {fmt_time(fwd[k].median)} + {fmt_time(bwd[k].median)}" for k in fns))
    runners = {"fast": LenetNpRunner(device=device, impl="fast"),
               "reference": LenetNpRunner(device=device, impl="reference"),
               "torch": TorchRunner(device=torch_device, threads=torch_threads)}
    xy = {k: (r.device_array(x), r.device_array(y)) for k, r in runners.items()}
    rest = {k: loss_and_optimizer_fns(r, *xy[k]) for k, r in runners.items()}
    out["loss"] = {"kind": "CrossEntropyLoss", "input": (batch, 10),
                   "forward": timer({k: (f[0], syncs[k]) for k, f in rest.items()}),
                   "backward": timer({k: (f[1], syncs[k]) for k, f in rest.items()})}
    out["optimizer"] = {"kind": "Adam.step", "input": None,
                        "forward": timer({k: (f[2], syncs[k]) for k, f in rest.items()})}
    out["step"] = {"kind": "whole training step", "input": tuple(x.shape),
                   "forward": timer({k: (lambda r=r, k=k: r.step(*xy[k]), syncs[k]) for k, r in runners.items()})}
    log("  loss, Adam step, whole step: " + "  ".join(
        f"{k} {fmt_time(out['loss']['forward'][k].median + out['loss']['backward'][k].median)}, "
        f"{fmt_time(out['optimizer']['forward'][k].median)}, {fmt_time(out['step']['forward'][k].median)}"
        for k in runners))
    return out


def layers_table(layers, a="fast", b="torch", ref="reference"):
    """The per-layer table: times, ratios a/b, the gain ref/a, and each layer's share of a's step."""
    rows = []
    total = {k: 0.0 for k in (a, ref, b)}
    step_a = layers["step"]["forward"][a].median
    for name, r in layers.items():
        if name == "step":
            continue
        f, bw = r["forward"], r.get("backward")

        def t(k, f=f, bw=bw):
            return f[k].median + (bw[k].median if bw else 0.0)
        for k in total:
            total[k] += t(k)
        shape = "x".join(map(str, r["input"])) if r["input"] else ""
        label = name if name != "optimizer" else "Adam step"
        rows.append([label, r["kind"], shape,
                     fmt_time(f[a].median), fmt_time(bw[a].median) if bw else "-",
                     fmt_time(f[ref].median), fmt_time(bw[ref].median) if bw else "-",
                     fmt_time(f[b].median), fmt_time(bw[b].median) if bw else "-",
                     fmt_ratio(f[a].median / f[b].median), fmt_ratio(bw[a].median / bw[b].median) if bw else "-",
                     fmt_ratio(t(ref) / t(a)), f"{t(a) / step_a:.0%}"])
    rows.append(["sum", "", "", fmt_time(total[a]), "", fmt_time(total[ref]), "", fmt_time(total[b]), "",
                 fmt_ratio(total[a] / total[b]), "", fmt_ratio(total[ref] / total[a]), f"{total[a] / step_a:.0%}"])
    st = layers["step"]["forward"]
    rows.append(["whole step", "measured", "", fmt_time(st[a].median), "", fmt_time(st[ref].median), "",
                 fmt_time(st[b].median), "", fmt_ratio(st[a].median / st[b].median), "",
                 fmt_ratio(st[ref].median / st[a].median), "100%"])
    return md_table(["layer", "kind", "input", f"{a} fwd", f"{a} bwd", f"{ref} fwd", f"{ref} bwd", f"{b} fwd",
                     f"{b} bwd", f"{a}/{b} fwd", f"{a}/{b} bwd", f"{ref}/{a}", f"share of {a} step"],
                    rows, align="lll" + "r" * 10)


def sweep_benchmark(runners: dict, batches, timer, skip=None, log=print) -> dict:
    """One training step (``runner.step``) at each batch size: batch -> name -> Stats.
    ``skip(name, batch)`` leaves a contender out (too slow, out of time)."""
    out = {}
    for n in batches:
        x, y = random_batch(n, seed=n)
        contenders = {}
        for k, r in runners.items():
            if skip is not None and skip(k, n):
                continue
            xd, yd = r.device_array(x), r.device_array(y)
            contenders[k] = (lambda r=r, xd=xd, yd=yd: r.step(xd, yd), r.sync)
        if not contenders:
            continue
        out[n] = timer(contenders)
        log(f"  batch {n:>5}: " + "  ".join(f"{k} {fmt_time(s.median)} ({fmt_rate(n / s.median)} ex/s)"
                                            for k, s in out[n].items()))
    return out


def sweep_table(sweep, names, base):
    rows = []
    for n, res in sweep.items():
        row = [str(n)]
        for k in names:
            s = res.get(k)
            row += [fmt_time(s.median), fmt_rate(n / s.median)] if s else ["-", "-"]
        first = res.get(names[0])
        row.append(fmt_ratio(first.median / res[base].median) if first and base in res else "-")
        rows.append(row)
    headers = ["batch"] + [h for k in names for h in (f"{k} step", f"{k} ex/s")] + [f"{names[0]}/{base}"]
    return md_table(headers, rows)


# -- FLOPs -------------------------------------------------------------------------------------------
def flop_counts():
    """Multiply-adds of LeNet per example, from the layer shapes (a batch of one through the net).

    forward = 2 * MACs of every conv and linear layer; backward = weight gradients (2 * MACs)
    + input gradients (2 * MACs) of every layer but the first. Bias adds, activations, pooling
    and the optimizer are left out (they are a few percent and memory-bound anyway).
    """
    from lenet_np import nn

    net = make_lenet_np(0)
    x, y = random_batch(1)
    rows = []
    for case in lenet_np_layer_cases(net, x, y):
        m = case.layer
        out_shape = m(case.x).shape
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs = int(np.prod(out_shape[1:])) * m.in_channels * kh * kw
        elif isinstance(m, nn.Linear):
            macs = m.in_features * m.out_features
        else:
            continue
        rows.append({"layer": case.name, "input": tuple(case.x.shape[1:]), "output": tuple(out_shape[1:]),
                     "macs": macs, "forward": 2 * macs, "backward_weight": 2 * macs,
                     "backward_input": 0 if case.first else 2 * macs})
    fwd = sum(r["forward"] for r in rows)
    bwd = sum(r["backward_weight"] + r["backward_input"] for r in rows)
    return {"layers": rows, "forward_per_example": fwd, "backward_per_example": bwd,
            "train_per_example": fwd + bwd, "eval_per_example": fwd}


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


# -- machine information -------------------------------------------------------------------------------
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


# -- formatting ------------------------------------------------------------------------------------------
def fmt_time(s) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_ratio(r) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def fmt_rate(r) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"


def e2e_table(res, base):
    """End-to-end results (from ``end_to_end``) scaled to the full epoch (60,000) and test set (10,000)."""
    def times(r):
        return r["train"].median * N_TRAIN / r["n_train"], r["eval"].median * N_TEST / r["n_test"]
    t_base = sum(times(res[base]))
    rows = []
    for name, r in res.items():
        tr, ev = times(r)
        rows.append([name, fmt_time(tr), fmt_rate(N_TRAIN / tr), fmt_time(ev), fmt_rate(N_TEST / ev), fmt_time(tr + ev),
                     fmt_ratio((tr + ev) / t_base), f"{max(r['train'].spread, r['eval'].spread):.0%}",
                     f"{r['n_train']:,}", f"{r['loss']:.3f}", f"{r['accuracy']:.3f}"])
    return md_table(["contender", "train epoch", "train ex/s", "test eval", "eval ex/s", "epoch + eval",
                     f"vs {base}", "spread", "examples/run", "last loss", "test acc"], rows)


def md_table(headers, rows, align=None) -> str:
    """A markdown table whose columns line up in a terminal too. align: string of 'l'/'r' per column."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                         for w, a in zip(widths, align)) + "|"
    return "\n".join([line([str(h) for h in headers]), sep, *(line(r) for r in rows)])


def write_json(path, obj) -> None:
    def default(o):
        if isinstance(o, Stats):
            return o.to_json()
        if isinstance(o, (np.integer, np.floating)):
            return o.item()
        if isinstance(o, (np.ndarray, tuple)):
            return list(o)
        if isinstance(o, Path):
            return str(o)
        return repr(o)
    Path(path).write_text(json.dumps(obj, indent=1, default=default) + "\n")
