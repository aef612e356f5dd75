"""CrossEntropyLoss: log-softmax fused with the negative log-likelihood.

Shapes
    logits  z (N, K) float       labels y (N,) integers in [0, K)
    loss    L = mean_n [ logsumexp(z_n) - z_n[y_n] ]      (a scalar, as torch)

Stable: logsumexp(z) = m + log(sum(exp(z - m))) with m = max(z), so exp never
sees a positive argument.

Backward (the reason to fuse the two):
    dL/dz = (softmax(z) - onehot(y)) / N                  (N, K)
"""

from __future__ import annotations

import numpy as np

from .. import backend
from .checks import check_input
from .module import Module


class CrossEntropyLoss(Module):
    def forward(self, logits, labels):
        """The mean loss as a 0-d array of the logits' backend (no device sync)."""
        check_input(self, logits, "(N, K)", ndim=2)
        xp = backend.get_array_module(logits)
        n, k = logits.shape
        labels = xp.asarray(labels)
        if labels.shape != (n,):
            raise ValueError(f"{self!r}: labels must have shape ({n},) to match logits {tuple(logits.shape)}, "
                             f"got shape {tuple(labels.shape)}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"{self!r}: labels must be integers (class indices), got dtype {labels.dtype}")
        if n == 0:
            raise ValueError(f"{self!r}: empty batch (logits of shape {tuple(logits.shape)})")
        # the range check reads the labels back, so it runs on the CPU only: on CUDA it
        # would cost a device sync every step
        if xp is np and ((labels < 0) | (labels >= k)).any():
            raise ValueError(f"{self!r}: labels must lie in [0, {k}), got values from "
                             f"{int(labels.min())} to {int(labels.max())}")
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        rows = xp.arange(n)
        loss = (xp.log(sum_exp[:, 0]) - shifted[rows, labels]).mean()
        self._cache = (exp / sum_exp, labels)
        return loss

    def __call__(self, logits, labels):
        """The mean loss as a Python float (like torch's ``loss.item()``)."""
        return float(self.forward(logits, labels))

    def backward(self, grad_out=1.0, input_grad=True):
        """dL/dlogits for L scaled by grad_out (1.0 by default)."""
        if self._cache is None:
            raise RuntimeError("CrossEntropyLoss(): backward called before forward")
        probs, labels = self._cache
        xp = backend.get_array_module(probs)
        n = probs.shape[0]
        grad = probs.copy()
        grad[xp.arange(n), labels] -= 1
        grad *= grad_out / n
        return grad
