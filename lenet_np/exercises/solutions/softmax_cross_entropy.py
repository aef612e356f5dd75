"""Exercise: the backward pass of softmax fused with the cross-entropy loss.

Check it with:  python -m lenet_np.exercises check DIR --layer softmax_cross_entropy

Shapes
    logits  z (N, K)          labels y (N,) integers in [0, K)
    p = softmax(z) row by row, (N, K)
    loss    L = mean over n of  -log p[n, y[n]]        a number (the mean, as torch)
"""

import numpy as np


class SoftmaxCrossEntropy:
    def __init__(self):
        self.cache = None

    def forward(self, logits, labels):
        """The mean loss over the batch, a float; keeps p = softmax(logits) and the labels."""
        shifted = logits - logits.max(axis=1, keepdims=True)    # exp never overflows
        exp = np.exp(shifted)
        p = exp / exp.sum(axis=1, keepdims=True)                # (N, K), rows sum to 1
        n = logits.shape[0]
        log_p = shifted - np.log(exp.sum(axis=1, keepdims=True))
        self.cache = (p, labels)
        return float(-log_p[np.arange(n), labels].mean())

    def backward(self):
        """Return dL/dlogits, shape (N, K):

            dL/dz = (p - onehot(labels)) / N      with p, labels = self.cache

        onehot(labels)[n, k] is 1 where k == labels[n], else 0. The 1/N comes from the mean.
        """
        # BEGIN SOLUTION
        p, labels = self.cache
        n = p.shape[0]
        # For one example, d(-log p[y]) / dz[k] = p[k] - [k == y]: the softmax's Jacobian
        # and the log's 1/p cancel. The mean over the batch divides each row by N.
        grad = p.copy()                                  # a copy: the cache stays as it was
        grad[np.arange(n), labels] -= 1                 # subtract the one-hot rows
        return grad / n
        # END SOLUTION
