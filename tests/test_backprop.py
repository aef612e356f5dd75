"""lenet_np.backprop: the one per-layer pass the study tools show is the network's own
forward and backward, layer by layer."""

from __future__ import annotations

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import nn
from lenet_np.backprop import backprop
from lenet_np.model import VARIANTS

from .conftest import to_np


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_every_layer_output_and_gradient_is_the_networks(xp, variant, training):
    rng = np.random.default_rng(0)
    net = ln.LeNet(variant=variant, seed=1).to("cuda" if xp is not np else "cpu").train(training)
    x = xp.asarray(rng.random((3, 1, 28, 28), dtype=np.float32))
    y = xp.asarray(np.array([0, 4, 9]))
    bp = backprop(net, x, y)

    # backprop walks the book's layers one by one; the twin does too (fold_batchnorm=False:
    # a BatchNorm folded into the layer before it gives the same logits up to rounding)
    twin = ln.LeNet(variant=variant, seed=1, fold_batchnorm=False)
    twin = twin.to("cuda" if xp is not np else "cpu").train(training)
    loss_fn = nn.CrossEntropyLoss()
    logits = twin(x)
    loss = loss_fn(logits, y)
    gx = twin.backward(loss_fn.backward())
    assert bp.loss == loss
    np.testing.assert_array_equal(to_np(bp.logits), to_np(logits))
    np.testing.assert_array_equal(to_np(bp.input_grad), to_np(gx))
    assert [p.name for p in bp.layers] == [name for name, _ in net.named_layers()]
    grads = dict(twin.named_parameters())
    for p in bp.layers:
        assert p.grad.shape == p.output.shape
        for pname, g in p.param_grads.items():
            np.testing.assert_array_equal(to_np(g), to_np(grads[f"{p.name}.{pname}"].grad))
    np.testing.assert_allclose(bp.probabilities().sum(axis=1), 1.0, rtol=1e-12)


def test_each_gradient_is_what_the_next_layer_passes_down():
    """grads[i] = dL/d outputs[i] is what layer i+1's backward returned: check it one layer
    at a time, on the saved output, for the classic network (flatten and max pooling included)."""
    net = ln.LeNet(seed=0).eval()
    x = np.random.default_rng(2).random((2, 1, 28, 28), dtype=np.float32)
    bp = backprop(net, x, np.array([3, 7]))
    for below, above in zip(bp.layers[:-1], bp.layers[1:]):
        above.layer(below.output)                       # forward again from the saved input
        np.testing.assert_array_equal(above.layer.backward(above.grad), below.grad, err_msg=above.name)
    # max pooling routes: each 2x2 window of the pooled layer's input gets at most one nonzero
    pooled_in = {p.name: p for p in bp.layers}["conv.1"].grad           # into conv.2, the max pool
    windows = pooled_in.reshape(2, 6, 12, 2, 12, 2).transpose(0, 1, 2, 4, 3, 5).reshape(2, 6, 12, 12, 4)
    assert ((windows != 0).sum(axis=-1) <= 1).all()


def test_parameter_gradients_are_copies():
    net = ln.LeNet(seed=0)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    bp = backprop(net, x, np.array([1, 2]))
    kept = bp.layers[0].param_grads["weight"].copy()
    net.zero_grad()
    backprop(net, x, np.array([5, 6]))
    np.testing.assert_array_equal(bp.layers[0].param_grads["weight"], kept)
