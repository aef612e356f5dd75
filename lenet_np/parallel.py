"""DataParallel: split each mini-batch across CPU threads (torch's nn.DataParallel, for cores).

NumPy releases the GIL inside its array loops and BLAS calls, so Python threads that
each run the network on a slice of the batch keep several cores busy at once. Each
thread owns a *replica* of the network: its own layers (forward caches) and its own
gradients, sharing the parameter arrays of the original. After the backward pass the
replicas' gradients are summed into the original's ``p.grad``, in a fixed order, so a
run is deterministic for a given number of workers.

    x (N, ...) -> chunks x_0 .. x_{W-1} -> replica_w(x_w) -> logits, concatenated (N, K)
    dL/dlogits (N, K) -> chunks -> replica_w.backward -> p.grad = sum_w p_w.grad

During the parallel passes BLAS runs one thread per worker (threadpoolctl), so the
workers do not oversubscribe the cores.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

from . import backend


def default_workers() -> int:
    """Usable cores, capped at 4 (LeNet's layers are too small to feed more)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class DataParallel:
    """Run ``module`` on ``workers`` slices of each batch in parallel (NumPy arrays only).

    Batches smaller than ``min_chunk * workers`` run on ``module`` alone: on small slices the
    layers' Python overhead dominates, and the threads then mostly wait for the GIL (measured
    here: batch 16 took 7-9 ms on two threads against 4.5 ms on one; 64 broke even).
    """

    def __init__(self, module, workers=None, min_chunk=32):
        self.module = module
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"DataParallel: workers must be >= 1, got {workers}")
        if int(min_chunk) < 1:
            raise ValueError(f"DataParallel: min_chunk must be >= 1, got {min_chunk}")
        self.min_chunk = int(min_chunk)
        self._blas = None                       # threadpoolctl controller, made on first use
        self.replicas = [copy.deepcopy(module) for _ in range(self.workers)]
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lenet_np") if self.workers > 1 else None
        self._sizes = None

    def __getattr__(self, name):          # parameters(), state_dict(), train() ... of the module
        return getattr(self.__dict__["module"], name)

    def _map(self, fn, *chunks):
        if self._pool is None:
            return [fn(0, *c) for c in zip(*chunks)]
        if self._blas is None:                  # inspecting the loaded libraries costs ~0.4 ms: once
            from threadpoolctl import ThreadpoolController
            self._blas = ThreadpoolController()
        with self._blas.limit(limits=1, user_api="blas"):
            return list(self._pool.map(fn, range(len(chunks[0])), *chunks))

    def _split(self, a):
        bounds = [0]
        n = len(a)
        for w in range(self.workers):
            bounds.append(bounds[-1] + n // self.workers + (w < n % self.workers))
        return [a[bounds[w]:bounds[w + 1]] for w in range(self.workers) if bounds[w + 1] > bounds[w]]

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        if backend.is_cupy_array(x) or self.workers == 1 or len(x) < self.min_chunk * self.workers:
            self._sizes = None
            return self.module(x)
        xp = backend.get_array_module(x)
        own = self.module.parameters()
        for replica in self.replicas:           # share the (possibly replaced) parameter arrays
            replica.train(self.module.training)
            for p, q in zip(own, replica.parameters()):
                q.data = p.data
        chunks = self._split(x)
        self._sizes = [len(c) for c in chunks]
        outs = self._map(lambda w, c: self.replicas[w](c), chunks)
        return xp.concatenate(outs)

    def backward(self, grad_out, input_grad=True):
        if self._sizes is None:
            return self.module.backward(grad_out, input_grad=input_grad)
        xp = backend.get_array_module(grad_out)
        bounds = [0]
        for s in self._sizes:
            bounds.append(bounds[-1] + s)
        chunks = [grad_out[bounds[i]:bounds[i + 1]] for i in range(len(self._sizes))]

        def run(w, g):
            replica = self.replicas[w]
            replica.zero_grad()
            return replica.backward(g, input_grad=input_grad)

        grads_x = self._map(run, chunks)
        used = self.replicas[:len(chunks)]
        for i, p in enumerate(self.module.parameters()):
            total = used[0].parameters()[i].grad
            for replica in used[1:]:
                total = total + replica.parameters()[i].grad
            p.accumulate(total)
        return xp.concatenate(grads_x) if input_grad else None
