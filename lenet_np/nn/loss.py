"""CrossEntropyLoss: log-softmax fused with the negative log-likelihood.

Shapes
    logits  z (N, K) float       labels y (N,) integers in [0, K)
    loss    L = mean_n [ logsumexp(z_n) - z_n[y_n] ]      (a scalar, as torch)

Stable: logsumexp(z) = m + log(sum(exp(z - m))) with m = max(z), so exp never
sees a positive argument.

Backward (the reason to fuse the two):
    dL/dz = (softmax(z) - onehot(y)) / N                  (N, K)

Labels outside [0, K) raise a ValueError. On the CPU at once; on a GPU, where reading
them back would wait for the device every step, the forward keeps the smallest and
largest label seen on the device and ``check()`` raises the same error when it next
reads them (calling the loss, ``loss_fn(logits, y)``, reads the loss anyway and checks;
the training loop calls ``check()`` where it reads the loss back).
"""

from __future__ import annotations

from typing import NamedTuple

from .. import backend
from .checks import check_input
from .module import Module


class Softmax(NamedTuple):
    probs: object         # (N, K) softmax of the logits
    labels: object        # (N,) class indices


class CrossEntropyLoss(Module):
    def __init__(self):
        super().__init__()
        self._label_range = None     # on a GPU: (smallest, largest) label since check(), and K

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
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = xp.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        rows = xp.arange(n)
        loss = (xp.log(sum_exp[:, 0]) - shifted[rows, labels]).mean()
        self.save_for_backward(Softmax(exp / sum_exp, labels))
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
        (lo, hi), k = self._label_range
        self._label_range = None
        xp = backend.get_array_module(lo)
        lo, hi = (int(v) for v in backend.as_numpy(xp.stack([lo, hi])))   # one read back
        if lo < 0 or hi >= k:
            self._raise_label_range(lo, hi, k)

    def _track_label_range(self, xp, labels, k):
        if self._label_range is not None and self._label_range[1] != k:
            self.check()                   # another K: settle the earlier labels first
        lo, hi = labels.min(), labels.max()
        if self._label_range is not None:
            (lo0, hi0), _ = self._label_range
            lo, hi = xp.minimum(lo, lo0), xp.maximum(hi, hi0)
        self._label_range = ((lo, hi), k)

    def _raise_label_range(self, lo, hi, k):
        raise ValueError(f"{self!r}: labels must lie in [0, {k}), got values from {lo} to {hi}")

    def backward(self, grad_out=1.0, input_grad=True):
        """dL/dlogits for L scaled by grad_out (1.0 by default)."""
        probs, labels = self.saved()
        xp = backend.get_array_module(probs)
        n = probs.shape[0]
        grad = probs.copy()
        grad[xp.arange(n), labels] -= 1
        grad *= grad_out / n
        return grad
