"""BatchNorm2d and BatchNorm1d (torch's semantics and names).

Notation
    x      (N, C, H, W) for BatchNorm2d; (N, C) or (N, C, L) for BatchNorm1d
    axes   every axis but the channel axis 1: each channel is normalised over the
           m = N*H*W (or N, or N*L) values it has in the batch
    gamma  weight (C,), initialised to ones;  beta  bias (C,), initialised to zeros
           (affine=False: neither, gamma = 1 and beta = 0; bias=False: no beta)
    buffers running_mean (C,) zeros, running_var (C,) ones, num_batches_tracked () int64

Forward, training (batch statistics; per channel c, sums over the m values of c)
    mu      = sum(x) / m
    var     = sum((x - mu)^2) / m                  biased: the variance that normalises
    inv_std = 1 / sqrt(var + eps)
    xhat    = (x - mu) * inv_std
    y       = gamma * xhat + beta
    running_mean = (1 - momentum) * running_mean + momentum * mu
    running_var  = (1 - momentum) * running_var  + momentum * var * m / (m - 1)   unbiased
    num_batches_tracked += 1           (momentum=None: the cumulative average, 1/num_batches_tracked)

Forward, eval: the same with mu = running_mean and var = running_var (constants).
(mu is computed in two passes, the second adding mean(x - mu) to correct the rounding of
the first: float32 sums lose digits on activations far from 0 with a small spread.)

Backward (G = dL/dy, same shape as x; sums over the m values of each channel)
    dL/dgamma = sum(G * xhat)                                                   (C,)
    dL/dbeta  = sum(G)                                                          (C,)
    training  dL/dx = gamma * inv_std / m * (m * G - sum(G) - xhat * sum(G * xhat))
              (mu and var depend on x: the two sums are what flows back through them)
    eval      dL/dx = gamma * inv_std * G

docs/batchnorm.md derives the training-mode dL/dx twice: through the full graph
(mu, var, xhat, y) one node at a time, and in the compact form above.

Split across threads (``lenet_np.DataParallel``, as torch's SyncBatchNorm across devices),
each replica sees a slice of the batch, and ``sync`` (set by DataParallel on its replicas)
makes the statistics the whole batch's: each replica's count, mean and variance are
combined (Chan's formula) into the whole batch's, and in the backward the two sums
sum(G) and sum(G * xhat) are summed over the slices, before each replica goes on with
its own slice. ``sync`` None (a layer on its own) changes nothing in the formulas above.

Below is the book's version; faster forms for batch statistics, "sums" on the CPU and "fused"
on a GPU, live in nn/fast/batchnorm.py (``impl`` picks one, as for the pooling and the
convolution).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import backend
from .checks import check_grad, check_impl, check_input
from .fast import batchnorm as fast
from .module import Module, Parameter


class _BatchStatsCache(NamedTuple):
    """Training (or no running statistics): mu and var came from this batch."""

    xhat: object        # (N, C, ...) the normalised input
    inv_std: object     # (1, C, 1, ...) 1 / sqrt(var + eps), shaped to broadcast against x
    count: int          # m, the values per channel


class _RunningStatsCache(NamedTuple):
    """Eval with running statistics: mu and var are constants."""

    xhat: object        # (N, C, ...)
    inv_std: object     # (1, C, 1, ...)


class _BatchNorm(Module):
    """What BatchNorm1d and BatchNorm2d share; they differ in the input shapes they accept."""

    IMPLS = ("auto", "fast", "reference", *fast.FORMS)
    sync = None           # DataParallel's replicas: the other slices' statistics (parallel.py)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
                 *, bias=True, dtype=np.float32, impl=None):
        super().__init__()
        name = type(self).__name__
        if isinstance(num_features, bool) or not isinstance(num_features, (int, np.integer)) or num_features < 1:
            raise ValueError(f"{name}: num_features must be an int >= 1 (the number of channels), "
                             f"got {num_features!r}")
        if not eps > 0:
            raise ValueError(f"{name}: eps must be > 0, got {eps!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"{name}: momentum must be in [0, 1] (or None for a cumulative average), "
                             f"got {momentum!r}")
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"{name}: dtype {dtype} is not supported: use float32 or float64")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype=dtype)) if self.affine else None
        self.bias = Parameter(np.zeros(c, dtype=dtype)) if self.affine and bias else None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=dtype))
            self.register_buffer("running_var", np.ones(c, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.impl = impl

    @property
    def impl(self) -> str:
        """The form that runs: "auto" (the default; "fast" is the same): for batch statistics
        "sums" for (N, C, ...) inputs on the CPU and "fused" on a GPU, else "reference", the
        book's version below (nn/fast/batchnorm.py, ``choose``); or one of them by name."""
        return self._impl

    @impl.setter
    def impl(self, impl):
        self._impl = check_impl(type(self).__name__, impl, self.IMPLS)

    def path_for(self, x) -> str:
        """The form that runs for input x: ``impl``, or the choice of "auto" (nn/fast/batchnorm.py).
        With running statistics (eval) the book's version runs whatever ``impl`` says: there the
        layer is elementwise, and the fast forms are forms of the batch statistics."""
        if not (self.training or not self.track_running_stats):
            return "reference"
        if self.impl not in ("auto", "fast"):
            return self.impl
        return fast.choose(self, x)

    def reset_running_stats(self) -> None:
        """running_mean = 0, running_var = 1, num_batches_tracked = 0 (in place, as torch)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")

    # -- the two subclasses say which shapes they take --
    _expected = "(N, C, ...)"
    _ndims = ()

    def _check(self, x):
        c = self.num_features
        expected = self._expected.format(c=c)
        ref = self.weight.data if self.affine else self.running_mean
        check_input(self, x, expected, dtype=None if ref is None else ref.dtype, params=ref)
        if x.ndim not in self._ndims:
            raise ValueError(f"{self!r}: expected input of shape {expected}, got shape {tuple(x.shape)} "
                             f"({x.ndim} dimensions)")
        check_input(self, x, expected, channels=c)

    # -- forward and backward --
    def forward(self, x):
        self._check(x)
        batch_stats = self.training or not self.track_running_stats
        if batch_stats and self.sync is None:
            self.check_count(x.size // self.num_features, x.shape)
        shape = (1, self.num_features) + (1,) * (x.ndim - 2)        # per-channel arrays broadcast as this
        path = self.path_for(x)
        if path != "reference":                                          # nn/fast/batchnorm.py
            y, xhat, inv_std, count = fast.FORWARD[path](self, x)
            self.save_for_backward(_BatchStatsCache(xhat, inv_std.reshape(shape), count))
            return y
        xp = backend.get_array_module(x)
        axes = (0, *range(2, x.ndim))
        count = x.size // self.num_features
        if batch_stats:
            # two passes, the second correcting the first's rounding: activations far from 0
            # with a small spread would otherwise lose digits to the mean (float32 sums)
            mean = x.mean(axis=axes, keepdims=True)
            xc = x - mean
            shift = xc.mean(axis=axes, keepdims=True)
            xc -= shift                                                           # xc is ours
            var = (xc * xc).mean(axis=axes, keepdims=True)                       # biased
            if self.sync is None:
                mean += shift
            else:            # a DataParallel replica: the whole batch's mean and variance
                centre = mean.reshape(-1).astype(np.float64) + shift.reshape(-1)  # what xc is centred on
                count, whole, var = self.whole_batch(count, centre, var.reshape(-1))
                self.check_count(count, x.shape)
                xc -= xp.asarray(whole - centre, dtype=x.dtype).reshape(shape)
                mean, var = (xp.asarray(a, dtype=x.dtype).reshape(shape) for a in (whole, var))
            inv_std = 1 / xp.sqrt(var + self.eps)
            if self.training and self.track_running_stats and self.updates_buffers():
                self._update_running_stats(mean.reshape(-1), var.reshape(-1), count)
        else:
            xc = x - self.running_mean.reshape(shape)
            inv_std = 1 / xp.sqrt(self.running_var.reshape(shape) + self.eps)
        xhat = xc
        xhat *= inv_std                                                           # xc is ours
        y = xhat * self.weight.data.reshape(shape) if self.affine else xhat.copy()
        if self.bias is not None:
            y += self.bias.data.reshape(shape)
        self.save_for_backward(_BatchStatsCache(xhat, inv_std, count) if batch_stats
                               else _RunningStatsCache(xhat, inv_std))
        return y

    def check_count(self, count, shape) -> None:
        """Batch statistics need two values a channel (the whole batch's, on a replica)."""
        if count < 2:
            fix = " or call .eval() to use the running statistics" if self.track_running_stats else ""
            raise ValueError(f"{self!r}: batch statistics need more than one value per channel, got "
                             f"input of shape {tuple(shape)}; use a batch of at least 2{fix}")

    # -- the whole batch, when DataParallel's replicas each hold a slice of it (parallel.py) --
    def whole_batch(self, count, mean, var):
        """(count, mean, var) of the whole batch from this slice's (mean and biased variance per
        channel, (C,)): unchanged on a layer of its own; on a replica, combined with the other
        replicas' (float64, parallel.py)."""
        return (count, mean, var) if self.sync is None else self.sync.moments(count, mean, var)

    def whole_batch_sums(self, *sums):
        """Per-channel sums of this slice's backward, summed over the replicas' slices."""
        return sums if self.sync is None else self.sync.sums(*sums)

    def updates_buffers(self) -> bool:
        """One replica updates the (shared) running statistics, once per batch."""
        return self.sync is None or self.sync.rank == 0

    def _update_running_stats(self, mean, var, count):
        """In place (state_dict() arrays stay live, as in torch), on the device: no host read."""
        self.num_batches_tracked += 1
        if self.momentum is None:      # cumulative average: factor 1/num_batches_tracked, a device array
            factor = (1 / self.num_batches_tracked).astype(self.running_mean.dtype)
        else:
            factor = self.momentum
        unbiased = var * (count / (count - 1))
        self.running_mean *= 1 - factor
        self.running_mean += factor * mean
        self.running_var *= 1 - factor
        self.running_var += factor * unbiased

    def backward(self, grad_out, input_grad=True):
        cache = self.saved()
        xhat, inv_std = cache.xhat, cache.inv_std
        check_grad(self, grad_out, xhat.shape)
        path = fast.choose_backward(self, xhat) if isinstance(cache, _BatchStatsCache) else "reference"
        if path != "reference":                                          # nn/fast/batchnorm.py
            return fast.BACKWARD[path](self, xhat, inv_std.reshape(-1), cache.count, grad_out, input_grad)
        axes = (0, *range(2, xhat.ndim))
        shape = inv_std.shape
        sum_g = grad_out.sum(axis=axes, keepdims=True)                        # dL/dbeta
        sum_gx = (grad_out * xhat).sum(axis=axes, keepdims=True)              # dL/dgamma
        if self.affine:
            self.weight.accumulate(sum_gx.reshape(-1))
        if self.bias is not None:
            self.bias.accumulate(sum_g.reshape(-1))
        if not input_grad:
            return None
        scale = inv_std * self.weight.data.reshape(shape) if self.affine else inv_std
        if isinstance(cache, _RunningStatsCache):
            return grad_out * scale
        m = cache.count
        if self.sync is not None:                 # a replica: the sums over the whole batch
            sum_g, sum_gx = (a.reshape(shape) for a in self.whole_batch_sums(sum_g.reshape(-1), sum_gx.reshape(-1)))
        dx = grad_out * m
        dx -= sum_g
        dx -= xhat * sum_gx
        dx *= scale / m
        return dx


class BatchNorm2d(_BatchNorm):
    """Batch normalization over (N, C, H, W), per channel across N, H and W (torch.nn.BatchNorm2d).

    ``BatchNorm2d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    *, bias=True, dtype=np.float32)``;
    see the module docstring for the math. In training, an input with N*H*W == 1 raises
    (one value per channel has no variance), as in torch.
    """

    _expected = "(N, {c}, H, W)"
    _ndims = (4,)


class BatchNorm1d(_BatchNorm):
    """Batch normalization over (N, C) or (N, C, L), per channel across N (and L) (torch.nn.BatchNorm1d).

    ``BatchNorm1d(num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True,
    *, bias=True, dtype=np.float32)``;
    see the module docstring for the math. In training, a batch of one (N*L == 1) raises, as in torch.
    """

    _expected = "(N, {c}) or (N, {c}, L)"
    _ndims = (2, 3)
