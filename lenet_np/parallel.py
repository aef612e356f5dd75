"""DataParallel: split each mini-batch across CPU threads (torch's nn.DataParallel, for cores).

NumPy releases the GIL inside its array loops and BLAS calls, so Python threads that
each run the network on a slice of the batch keep several cores busy at once. Each
slice has its own *replica* of the network: its own layers (forward caches) and its own
gradients, sharing the parameter arrays of the original. After the backward pass the
replicas' gradients are summed into the original's ``p.grad``, in a fixed order, so a
run is deterministic for a given number of workers and batch size.

    x (N, ...) -> chunks x_0 .. x_{S-1} -> replica_s(x_s) -> logits, concatenated (N, K)
    dL/dlogits (N, K) -> chunks -> replica_s.backward -> p.grad = sum_s p_s.grad

S is the number of workers, or more for large batches (at most ``max_chunk`` examples
a slice); the workers' threads take the slices in turn.

During the parallel passes BLAS runs one thread per worker (threadpoolctl), so the
workers do not oversubscribe the cores.

Batch statistics: a BatchNorm in training mode normalises with the mean and variance of
the batch it sees. Split, each replica would see only its slice's (torch's DataParallel has
the same trap, which its SyncBatchNorm mends), and its running statistics would be updated
once per slice. So a module that holds a BatchNorm using batch statistics (training mode,
or ``track_running_stats=False``) runs unsplit, on ``module`` itself, exactly the book's
network. In evaluation mode a BatchNorm is a fixed per-channel affine map of the running
statistics: the batch is split again, and the replicas share the module's buffers.
"""

from __future__ import annotations

import copy
import os
from concurrent.futures import ThreadPoolExecutor

from . import backend
from .nn import BatchNorm1d, BatchNorm2d


def uses_batch_statistics(module) -> bool:
    """True when a forward of ``module`` in its current mode depends on the whole batch at
    once: some BatchNorm in it normalises with the batch's mean and variance."""
    return any(isinstance(m, (BatchNorm1d, BatchNorm2d)) and (m.training or not m.track_running_stats)
               for _, m in module.named_modules())


def default_workers() -> int:
    """Usable cores, capped at 4 (LeNet's layers are too small to feed more)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


class DataParallel:
    """Run ``module`` on slices of each batch, ``workers`` slices at a time (NumPy arrays only).

    A batch is cut into ``workers`` slices, or into more when a slice would hold more than
    ``max_chunk`` examples: past a few hundred examples a slice's im2col columns no longer
    fit in the caches and every layer slows down (measured here at batch 1024: 136 ms a step
    in 2 slices of 512, 97 ms in 4 of 256). Each slice has its own replica; ``workers``
    threads run them. Batches smaller than ``min_chunk * workers`` run on ``module`` alone:
    on small slices the layers' Python overhead dominates, and the threads then mostly wait
    for the GIL (measured here: batch 16 took 7-9 ms on two threads against 4.5 ms on one;
    64 broke even). A module with a BatchNorm that uses batch statistics runs unsplit too
    (``uses_batch_statistics``; see the module docstring).
    """

    def __init__(self, module, workers=None, min_chunk=32, max_chunk=256):
        self.module = module
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"DataParallel: workers must be >= 1, got {workers}")
        if int(min_chunk) < 1:
            raise ValueError(f"DataParallel: min_chunk must be >= 1, got {min_chunk}")
        if max_chunk is not None and int(max_chunk) < int(min_chunk):
            raise ValueError(f"DataParallel: max_chunk must be None or >= min_chunk ({min_chunk}), got {max_chunk}")
        self.min_chunk = int(min_chunk)
        self.max_chunk = None if max_chunk is None else int(max_chunk)
        self._blas = None                       # threadpoolctl controller, made on first use
        self.replicas = [copy.deepcopy(module) for _ in range(self.workers)]    # more made as needed
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
        n = len(a)
        k = self.workers
        if self.max_chunk is not None:
            k = max(k, -(-n // self.max_chunk))
        while len(self.replicas) < k:
            self.replicas.append(copy.deepcopy(self.module))
        bounds = [0]
        for w in range(k):
            bounds.append(bounds[-1] + n // k + (w < n % k))
        return [a[bounds[w]:bounds[w + 1]] for w in range(k) if bounds[w + 1] > bounds[w]]

    def __call__(self, x):
        return self.forward(x)

    def forward(self, x):
        if (backend.is_cupy_array(x) or self.workers == 1 or len(x) < self.min_chunk * self.workers
                or uses_batch_statistics(self.module)):
            self._sizes = None
            return self.module(x)
        xp = backend.get_array_module(x)
        chunks = self._split(x)
        own = self.module.parameters()
        buffered = [i for i, (_, m) in enumerate(self.module.named_modules()) if m._buffers]
        for replica in self.replicas[:len(chunks)]:   # share the (possibly replaced) parameter arrays
            replica.train(self.module.training)
            for p, q in zip(own, replica.parameters()):
                q.data = p.data
            if buffered:                               # running statistics: read only here
                mods = [m for _, m in self.module.named_modules()]
                reps = [r for _, r in replica.named_modules()]
                for i in buffered:
                    for name, b in mods[i]._buffers.items():
                        setattr(reps[i], name, b)
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
        used = [replica.parameters() for replica in self.replicas[:len(chunks)]]
        for i, p in enumerate(self.module.parameters()):   # in a fixed order: deterministic
            total = used[0][i].grad
            for params in used[1:]:
                total = total + params[i].grad
            p.accumulate(total)
        return xp.concatenate(grads_x) if input_grad else None
