"""One forward and one backward pass, kept layer by layer: what every study tool shows.

``backprop(net, images, labels)`` runs ``net`` through ``LeNet.walk`` (the book's order,
the flatten included), takes the cross-entropy loss for ``labels`` (the mean over the
batch), and goes back through the same layers in reverse, one ``backward`` at a time. It
returns, for every layer, its output and dL/d(its output), and the gradient of every
parameter: the numbers the explorer page (``python -m lenet_np.explore``), the picture of
the gradients (``visualize``'s ``gradient_maps.png``) and ``trace`` show, from the same
``forward``/``backward`` the tests check.

Shapes, for a batch of N images and the classic network::

    input (N, 1, 28, 28) -> conv.0 (N, 6, 24, 24) -> conv.1 (N, 6, 24, 24) -> conv.2 (N, 6, 12, 12)
    -> ... -> flatten (N, 256) -> fc.0 (N, 120) -> ... -> fc.4 (N, 10) = logits

    grads[i] = dL/d outputs[i]     (same shape as outputs[i]; the last one is dL/dlogits)
    dL/dinput = what the first layer's backward returns

The network runs in the mode it is in; ``net.eval()`` first gives one image's view with
batch normalisation's running statistics (its evaluation-mode backward). Parameter
gradients are copies: ``net``'s own ``.grad`` are left as after ``net.backward``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import backend
from .nn import CrossEntropyLoss


class LayerPass(NamedTuple):
    """One layer's part of the pass: its output, dL/d(output) and its parameters' gradients."""
    name: str                    # as in print(net) and state_dict: conv.0, flatten, fc.4, net.3
    layer: object
    output: object               # the layer's output, on the network's device
    grad: object                 # dL/d(output), the same shape
    param_grads: dict            # {"weight": dL/dW, "bias": dL/db} (copies), empty for layers without


class Backprop(NamedTuple):
    """The whole pass: the input, every layer in forward order, the loss and dL/d(input)."""
    input: object
    layers: list                 # [LayerPass], in the order forward ran them
    loss: float                  # the mean cross-entropy over the batch
    input_grad: object           # dL/d(input), the shape of the input

    @property
    def logits(self):
        return self.layers[-1].output

    def probabilities(self) -> np.ndarray:
        """Softmax of the logits, float64 NumPy (N, 10)."""
        z = backend.as_numpy(self.logits).astype(np.float64)
        p = np.exp(z - z.max(axis=-1, keepdims=True))
        return p / p.sum(axis=-1, keepdims=True)


def backprop(net, images, labels, loss_fn=None) -> Backprop:
    """Forward through every layer of ``net`` (``LeNet.walk``), the loss for ``labels``,
    then backward layer by layer in reverse. Zeroes ``net``'s gradients first; afterwards
    they hold this pass's, as after ``net.backward``."""
    loss_fn = loss_fn or CrossEntropyLoss()
    net.zero_grad()
    walked = list(net.walk(images))
    logits = walked[-1][2]
    loss = float(loss_fn.forward(logits, labels))
    grad = loss_fn.backward()                                     # dL/dlogits = (softmax - onehot) / N
    passes = []
    for name, layer, out in reversed(walked):
        grad_out = grad
        grad = layer.backward(grad_out)                           # dL/d(this layer's input)
        param_grads = {pname: p.grad.copy() for pname, p in layer.named_parameters()}
        passes.append(LayerPass(name, layer, out, grad_out, param_grads))
    return Backprop(images, passes[::-1], loss, grad)
