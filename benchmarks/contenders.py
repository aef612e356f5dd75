"""The contenders: lenet_np (NumPy, or CuPy) and the book's PyTorch model, trained and evaluated
the same way, and ``end_to_end``, which times a training pass and an evaluation of each.

Everything here works on NumPy alone; torch and CuPy are imported only when asked for, so a
``--child lenet_np-train`` process never loads torch.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .datasets import BATCH_SIZE, N_TRAIN, batch_slices
from .report import fmt_time
from .timing import Stats, noop

LR = 1e-3


def import_torch(threads=None):
    """torch, with ``threads`` CPU threads (when given) and TF32 off on CUDA (as in the parity
    tests: both sides compute in float32)."""
    import torch

    from .torch_models import ieee_float32

    if threads:
        torch.set_num_threads(int(threads))
    ieee_float32()
    return torch


def make_lenet_np(seed=0, impl="fast", device="cpu", variant="classic"):
    import lenet_np as ln

    net = ln.LeNet(seed=seed, variant=variant)
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


def make_torch_lenet(seed=0, device="cpu", variant="classic"):
    """The book's PyTorch model with the same initial weights as ``lenet_np.LeNet(seed=seed, variant=variant)``."""
    torch = import_torch()
    from .torch_models import book_model

    tnet = book_model(variant)
    sd = make_lenet_np(seed, variant=variant).state_dict()
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

    def __init__(self, data=None, device="cpu", impl="fast", seed=0, batch_size=BATCH_SIZE, lr=LR, workers=None,
                 variant="classic", optimizer="adam"):
        """``workers``: on the CPU, threads that share each batch as ``python -m lenet_np.train``
        does (None: as train's default, one per core up to 4; 1: no threads). The reference
        implementation runs single-threaded unless told otherwise, so that it stays the plain path."""
        import lenet_np as ln
        from lenet_np import backend
        from lenet_np.parallel import DataParallel, default_workers

        self.name = f"lenet_np-{'cupy' if device == 'cuda' else 'numpy'}" + ("" if impl == "fast" else f"-{impl}")
        self.device, self.batch_size = device, batch_size
        self.xp = backend.xp_for(device)
        self.net = make_lenet_np(seed, impl, device, variant)
        if workers is None:
            workers = default_workers() if impl == "fast" else 1
        self.workers = workers if device == "cpu" else 1
        self.model = DataParallel(self.net, self.workers) if self.workers > 1 else self.net
        self.loss_fn = ln.nn.CrossEntropyLoss()
        self.opt = (ln.optim.Adam if optimizer == "adam" else ln.optim.SGD)(self.net.parameters(), lr=lr)
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
    """The book's PyTorch model, trained and evaluated the same way (device "cpu" or "cuda")."""

    def __init__(self, data=None, device="cpu", seed=0, batch_size=BATCH_SIZE, lr=LR, threads=None,
                 variant="classic", optimizer="adam"):
        torch = self.torch = import_torch(threads)
        import torch.nn.functional as F

        self.F = F
        self.name = f"torch-{device}"
        self.device, self.batch_size = device, batch_size
        self.net = make_torch_lenet(seed, device, variant)
        self.opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(self.net.parameters(), lr=lr)
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
