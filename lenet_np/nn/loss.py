"""CrossEntropyLoss: log-softmax fused with the negative log-likelihood.

Shapes
    logits  z (N, K) float       labels y (N,) integers in [0, K)
    loss    L = mean_n [ logsumexp(z_n) - z_n[y_n] ]      (a scalar, as torch)

Stable: logsumexp(z) = m + log(sum(exp(z - m))) with m = max(z), so exp never
sees a positive argument. Three passes over z, each one kernel on a GPU
(``backend.fused``; on the CPU the same expressions in NumPy):

    m  = max_k z                       (N, 1)   the shift
    s  = log sum_k exp(z - m)          (N, 1)   so logsumexp(z) = m + s
    L  = sum_n,k [k == y_n] (s_n - (z_nk - m_n)) / N
                                       the label's term of each row: -log softmax(z_n)[y_n]

Backward (the reason to fuse the two), one more pass:
    dL/dz = (softmax(z) - onehot(y)) / N,   softmax(z) = exp((z - m) - s)     (N, K)

Labels outside [0, K) raise a ValueError. On the CPU at once; on a GPU, where reading
them back would wait for the device every step, the forward keeps the smallest and
largest label seen on the device and ``check()`` raises the same error when it next reads
them (calling the loss, ``loss_fn(logits, y)``, reads the loss anyway and checks; the
training loop calls ``check()`` where it reads the loss back).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .. import backend
from .checks import check_input
from .module import Module


class LogSoftmax(NamedTuple):
    """What the backward needs: log softmax(z) = (z - shift) - log_sum."""
    logits: object        # z (N, K)
    shift: object         # m (N, 1): each row's largest logit
    log_sum: object       # s (N, 1): log sum_k exp(z - m)
    labels: object        # y (N, 1) class indices


def _log_sum_exp(xp):
    def log_sum_exp(z, m):                                  # s = log sum_k exp(z - m)   (N,)
        return xp.log(xp.sum(xp.exp(z - m), axis=1))
    return log_sum_exp


def _label_term_mean(xp):
    def label_term_mean(z, m, s, y, classes, n):            # mean_n -log softmax(z_n)[y_n]
        return xp.sum(xp.where(classes == y, s - (z - m), 0.0) / n)
    return label_term_mean


def _softmax_minus_onehot(xp):
    def softmax_minus_onehot(z, m, s, y, classes, scale):   # (softmax(z) - onehot(y)) * scale
        p = xp.exp((z - m) - s)
        return xp.where(classes == y, p - 1, p) * scale
    return softmax_minus_onehot


@functools.lru_cache(maxsize=16)
def class_indices(xp, k: int):
    """0, 1, ..., K-1 on xp's device, compared with the labels to find each row's class
    (built once per K and device; callers only read it)."""
    return xp.arange(k)


@functools.lru_cache(maxsize=16)
def first_slot(xp, n: int):
    """N zeros on xp's device: every label's index into a one-element array (cached)."""
    return xp.zeros(n, dtype=np.int64)


class CrossEntropyLoss(Module):
    def __init__(self):
        super().__init__()
        self._label_range = None     # on a GPU: ((smallest, largest) label since check(), K)

    def forward(self, logits, labels):
        """The mean loss as a 0-d array of the logits' backend (no device sync)."""
        check_input(self, logits, "(N, K)", ndim=2)
        xp = backend.get_array_module(logits)
        n, k = logits.shape
        if backend.device_of(labels) != backend.device_of(logits):
            if not backend.on_gpu(xp):
                raise ValueError(f"{self!r}: the labels are on {backend.device_of(labels)} but the logits on "
                                 f"{backend.device_of(logits)}; move the labels with "
                                 "lenet_np.to_device(labels, 'cpu')")
        labels = xp.asarray(labels)       # NumPy labels for CuPy logits: copied to the device
        if labels.shape != (n,):
            raise ValueError(f"{self!r}: labels must have shape ({n},) to match logits {tuple(logits.shape)}, "
                             f"got shape {tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{self!r}: labels must be integers (class indices), got dtype {labels.dtype}")
        if n == 0:
            raise ValueError(f"{self!r}: empty batch (logits of shape {tuple(logits.shape)})")
        if backend.on_gpu(xp):                # no sync: check() reads the range later
            self._track_label_range(xp, labels, k)
        elif ((labels < 0) | (labels >= k)).any():
            self._raise_label_range(int(labels.min()), int(labels.max()), k)
        y = labels[:, None]
        m = logits.max(axis=1, keepdims=True)
        s = backend.fused(_log_sum_exp)(logits, m)[:, None]
        loss = backend.fused(_label_term_mean)(logits, m, s, y, class_indices(xp, k), n)
        self.save_for_backward(LogSoftmax(logits, m, s, y))
        return loss

    def __call__(self, logits, labels):
        """The mean loss as a Python float (like torch's ``loss.item()``)."""
        loss = float(self.forward(logits, labels))
        self.check()
        return loss

    def check(self) -> None:
        """Raise the label error that a forward on a GPU found but could not report without a
        device sync (a no-op on the CPU, which raises in the forward)."""
        if self._label_range is None:
            return
        lo_hi, k = self._label_range
        self._label_range = None
        lo, hi = (int(v) for v in backend.as_numpy(lo_hi))      # one read back
        if lo < 0 or hi >= k:
            self._raise_label_range(lo, hi, k)

    def _track_label_range(self, xp, labels, k):
        """Two kernels per batch: the smallest and the largest label so far, scattered into
        one (2,) device array (an atomic min and max), read by check()."""
        if self._label_range is not None and self._label_range[1] != k:
            self.check()                   # another K: settle the earlier labels first
        if self._label_range is None:
            info = np.iinfo(np.int64)
            self._label_range = xp.asarray(np.array([info.max, info.min])), k
        lo_hi = self._label_range[0]
        first = first_slot(xp, labels.shape[0])
        xp.minimum.at(lo_hi[:1], first, labels)
        xp.maximum.at(lo_hi[1:], first, labels)

    def _raise_label_range(self, lo, hi, k):
        raise ValueError(f"{self!r}: labels must lie in [0, {k}), got values from {lo} to {hi}")

    def backward(self, grad_out=1.0, input_grad=True):
        """dL/dlogits for L scaled by grad_out (1.0 by default)."""
        z, m, s, y = self.saved()
        xp = backend.get_array_module(z)
        scale = grad_out / z.shape[0]
        if not backend.is_cupy_array(scale):
            scale = float(scale)           # a Python number: keeps the logits' dtype
        elif scale.dtype != z.dtype:
            scale = scale.astype(z.dtype)
        return backend.fused(_softmax_minus_onehot)(z, m, s, y, class_indices(xp, z.shape[1]), scale)
