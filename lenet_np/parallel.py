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

Batch statistics, as torch's SyncBatchNorm does across devices: a BatchNorm in training mode
normalises with the mean and variance of the batch it sees, and each replica sees only its
slice. So the replicas' BatchNorms meet, once per layer in the forward and once in the
backward, and exchange what the whole batch needs:

    forward   each replica: count m_s, mean mu_s and M2_s = sum (x - mu_s)^2 of its slice, per
              channel; combined (Chan's parallel formula, float64, slices in order)
                  m = m_a + m_b,  d = mu_b - mu_a,  mu = mu_a + d m_b / m,
                  M2 = M2_a + M2_b + d^2 m_a m_b / m                   (var = M2 / m)
              (no sum of squares, which would cancel in float32); each replica then
              normalises its own slice with the whole batch's mu and var; one replica
              updates the shared running statistics, with the whole batch's unbiased
              variance M2 / (m - 1)
    backward  sum(G) and sum(G * xhat) over the whole batch (the sums of the slices'), which
              dL/dx needs; dL/dgamma and dL/dbeta are summed with the other gradients

For that each replica runs on its own thread, exactly one slice each (a replica waiting for
the others must not hold the thread another slice needs). The meeting is a barrier with a
timeout (``sync_timeout``), and an exception in any replica breaks it at once: the others
stop waiting, and the call raises that one exception (a replica that does not arrive in
time: a TimeoutError naming it), never a hang. ``sync_batchnorm=False`` runs such a network
unsplit on ``module`` itself, as before this existed. In evaluation mode a BatchNorm is a
fixed per-channel affine map of the running statistics: the replicas share the module's
buffers and nothing is exchanged.
"""

from __future__ import annotations

import copy
import os
import queue
import threading
import weakref

import numpy as np

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
    threads run them (the calling thread is one of them). Batches smaller than
    ``min_chunk * workers`` run on ``module`` alone: on small slices the layers' Python
    overhead dominates, and the threads then mostly wait for the GIL (measured here: batch
    16 took 7-9 ms on two threads against 4.5 ms on one; 64 broke even). A module with a
    BatchNorm that uses batch statistics (``uses_batch_statistics``) is cut into exactly
    ``workers`` slices whose BatchNorms exchange their statistics (see the module
    docstring), or, with ``sync_batchnorm=False``, runs unsplit.
    """

    def __init__(self, module, workers=None, min_chunk=32, max_chunk=256, *, sync_batchnorm=True,
                 sync_timeout=60.0):
        self.module = module
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"DataParallel: workers must be >= 1, got {workers}")
        if int(min_chunk) < 1:
            raise ValueError(f"DataParallel: min_chunk must be >= 1, got {min_chunk}")
        if max_chunk is not None and int(max_chunk) < int(min_chunk):
            raise ValueError(f"DataParallel: max_chunk must be None or >= min_chunk ({min_chunk}), got {max_chunk}")
        if not sync_timeout > 0:
            raise ValueError(f"DataParallel: sync_timeout must be > 0 seconds, got {sync_timeout!r}")
        self.min_chunk = int(min_chunk)
        self.max_chunk = None if max_chunk is None else int(max_chunk)
        self.sync_batchnorm = bool(sync_batchnorm)
        self.sync_timeout = float(sync_timeout)
        self._blas = None                       # threadpoolctl controller, made on first use
        self.replicas = [copy.deepcopy(module) for _ in range(self.workers)]    # more made as needed
        self._crew = _Crew(self.workers) if self.workers > 1 else None
        self._sizes = None
        self._group = None                      # the last split forward's exchange of batch statistics

    def __getattr__(self, name):          # parameters(), state_dict(), train() ... of the module
        return getattr(self.__dict__["module"], name)

    def _run(self, jobs, group=None):
        """Each job on its thread (job i on thread i % workers, thread 0 the caller); their results."""
        if self._crew is None:
            return [job() for job in jobs]
        if self._blas is None:                  # inspecting the loaded libraries costs ~0.4 ms: once
            from threadpoolctl import ThreadpoolController
            self._blas = ThreadpoolController()
        with self._blas.limit(limits=1, user_api="blas"):
            return self._crew.run(jobs, group)

    def _split(self, a, one_each=False):
        n = len(a)
        k = self.workers
        if self.max_chunk is not None and not one_each:
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
        self._sizes = self._group = None
        batch_stats = uses_batch_statistics(self.module)
        if (backend.is_cupy_array(x) or self.workers == 1 or len(x) < self.min_chunk * self.workers
                or (batch_stats and not self.sync_batchnorm)):
            return self.module(x)
        xp = backend.get_array_module(x)
        chunks = self._split(x, one_each=batch_stats)
        own = self.module.parameters()
        mods = [m for _, m in self.module.named_modules()]
        buffered = [i for i, m in enumerate(mods) if m._buffers]
        norms = [i for i, m in enumerate(mods) if isinstance(m, (BatchNorm1d, BatchNorm2d))]
        group = _BatchStatsGroup(len(chunks), self.sync_timeout) if batch_stats else None
        for rank, replica in enumerate(self.replicas[:len(chunks)]):
            replica.train(self.module.training)
            for p, q in zip(own, replica.parameters()):   # share the (possibly replaced) parameter arrays
                q.data = p.data
            reps = [r for _, r in replica.named_modules()] if buffered or norms else []
            for i in buffered:                         # running statistics: shared; one replica updates them
                for name, b in mods[i]._buffers.items():
                    setattr(reps[i], name, b)
            for i in norms:
                reps[i].sync = None if group is None else _Replica(group, rank)
        outs = self._run([lambda r=r, c=c: r(c) for r, c in zip(self.replicas, chunks)], group)
        self._sizes, self._group = [len(c) for c in chunks], group
        return xp.concatenate(outs)

    def backward(self, grad_out, input_grad=True):
        if self._sizes is None:
            return self.module.backward(grad_out, input_grad=input_grad)
        xp = backend.get_array_module(grad_out)
        bounds = [0]
        for s in self._sizes:
            bounds.append(bounds[-1] + s)
        chunks = [grad_out[bounds[i]:bounds[i + 1]] for i in range(len(self._sizes))]

        def run(replica, g):
            replica.zero_grad()
            return replica.backward(g, input_grad=input_grad)

        grads_x = self._run([lambda r=r, g=g: run(r, g) for r, g in zip(self.replicas, chunks)], self._group)
        used = [replica.parameters() for replica in self.replicas[:len(chunks)]]
        for i, p in enumerate(self.module.parameters()):   # in a fixed order: deterministic
            total = used[0][i].grad
            for params in used[1:]:
                total = total + params[i].grad
            p.accumulate(total)
        return xp.concatenate(grads_x) if input_grad else None


# -- the threads -------------------------------------------------------------------------------
class _Crew:
    """``size`` threads for the slices of one call: job i runs on thread i % size, thread 0
    being the caller's, so that k <= size jobs run on k different threads at once."""

    def __init__(self, size):
        self.size = size
        self._inboxes = [self._start(t) for t in range(1, size)]
        weakref.finalize(self, _stop, self._inboxes)

    @staticmethod
    def _start(t):
        inbox = queue.SimpleQueue()
        threading.Thread(target=_serve, args=(inbox,), name=f"lenet_np-{t}", daemon=True).start()
        return inbox

    def run(self, jobs, group=None):
        """The jobs' results in order; an exception in one stops ``group``'s exchanges at once, and
        the call raises that exception once every thread is done (see ``_first_error``)."""
        results, errors = [None] * len(jobs), [None] * len(jobs)

        def share(t):
            for i in range(t, len(jobs), self.size):
                try:
                    results[i] = jobs[i]()
                except BaseException as exc:  # noqa: BLE001 - every kind is reported, once
                    errors[i] = exc
                    if group is not None:
                        group.abort()

        done = []
        for t in range(1, min(self.size, len(jobs))):
            finished = threading.Event()
            self._inboxes[t - 1].put((share, t, finished))
            done.append((t, finished))
        share(0)
        for t, finished in done:
            # With an exchange, a replica that never arrives stops the others within the barrier's
            # timeout; give its own thread as long again, then leave it behind (a fresh one takes
            # its place) and say so, rather than wait for ever.
            if not finished.wait(None if group is None else 2 * group.timeout):
                self._inboxes[t - 1].put(None)          # it ends when (if) its job does
                self._inboxes[t - 1] = self._start(t)
                errors.append(TimeoutError(f"DataParallel: replica {t} of {len(jobs)} did not finish within "
                                           f"{2 * group.timeout:g} s of the others; its thread was left behind"))
        error = _first_error(errors, len(jobs))
        if error is not None:
            raise error
        return results


def _serve(inbox):
    while True:
        item = inbox.get()
        if item is None:
            return
        share, t, finished = item
        try:
            share(t)
        finally:
            finished.set()


def _stop(inboxes):
    for inbox in inboxes:
        inbox.put(None)


def _first_error(errors, count):
    """The exception to raise for a call whose jobs raised ``errors`` (None where a job did not):
    the first that is a replica's own, not a replica that stopped because another failed."""
    raised = [e for e in errors if e is not None]
    if not raised:
        return None
    own = [e for e in raised if not isinstance(e, _PeerFailed)]
    error = (own or raised)[0]
    i = errors.index(error)
    if i < count and hasattr(error, "add_note"):
        error.add_note(f"(raised in DataParallel's replica {i} of {count}; the other replicas stopped)")
    return error


# -- batch statistics across the replicas ----------------------------------------------------------
def combine_moments(parts):
    """(count, mean, var) of the whole batch from each slice's (count, mean, biased var) per
    channel, in float64, slices in order (Chan, Golub and LeVeque's pairwise update):
    m = m_a + m_b, d = mu_b - mu_a, mu = mu_a + d m_b / m, M2 = M2_a + M2_b + d^2 m_a m_b / m."""
    count, mean, var = parts[0]
    mean = np.asarray(mean, dtype=np.float64)
    m2 = np.asarray(var, dtype=np.float64) * count
    for count_b, mean_b, var_b in parts[1:]:
        total = count + count_b
        d = np.asarray(mean_b, dtype=np.float64) - mean
        mean = mean + d * (count_b / total)
        m2 = m2 + np.asarray(var_b, dtype=np.float64) * count_b + d * d * (count * count_b / total)
        count = total
    return count, mean, m2 / count


def _sum_parts(parts):
    """Each of the slices' per-channel sums, summed over the slices in order (float64)."""
    return tuple(sum(np.asarray(p[i], dtype=np.float64) for p in parts) for i in range(len(parts[0])))


class _PeerFailed(threading.BrokenBarrierError):
    """A replica stopped waiting because another one failed (that one's error is raised)."""


class _BatchStatsGroup:
    """Where the replicas of one split batch meet: each BatchNorm's forward and backward is one
    exchange, in the same order on every replica (the k-th exchange of one meets the k-th of
    the others). One barrier: the last replica to arrive combines the parts (its action), and
    every replica reads the result."""

    def __init__(self, parties, timeout):
        self.parties, self.timeout = parties, timeout
        self._barrier = threading.Barrier(parties, action=self._combine, timeout=timeout)
        self._next = [0] * parties              # each replica's next exchange
        self._parts, self._results = {}, {}
        self._pending = None
        self._failed = False

    def exchange(self, rank, part, combine):
        seq = self._next[rank]
        self._next[rank] += 1
        parts = self._parts.setdefault(seq, [None] * self.parties)
        parts[rank] = part
        self._pending = (seq, combine)          # the same exchange for all until the barrier opens
        try:
            self._barrier.wait()
        except threading.BrokenBarrierError:
            if self._failed:
                raise _PeerFailed() from None
            missing = [r for r, p in enumerate(parts) if p is None]
            raise TimeoutError(f"DataParallel: BatchNorm's exchange of batch statistics timed out after "
                               f"{self.timeout:g} s: replica(s) {missing} of {self.parties} did not arrive "
                               f"(DataParallel(sync_timeout=...) sets the limit)") from None
        return self._results[seq]

    def _combine(self):
        seq, combine = self._pending
        try:
            self._results[seq] = combine(self._parts.pop(seq))
        except BaseException:
            self._failed = True                 # the others stop as for any replica's error
            raise

    def abort(self):
        self._failed = True
        self._barrier.abort()


class _Replica:
    """What a replica's BatchNorm holds as ``sync``: its rank and its group's exchanges."""

    def __init__(self, group, rank):
        self.group, self.rank = group, rank

    def moments(self, count, mean, var):
        return self.group.exchange(self.rank, (count, mean, var), combine_moments)

    def sums(self, *sums):
        total = self.group.exchange(self.rank, sums, _sum_parts)
        return tuple(t.astype(s.dtype) for t, s in zip(total, sums))
