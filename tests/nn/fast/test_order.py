"""LeNet's evaluation-mode shortcuts (nn/fast/order.py): a BatchNorm with running statistics
folded into the convolution or linear layer before it."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import nn
from lenet_np.nn.fast.order import Folded, fold_for_eval, foldable

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low


def trained_batchnorm_lenet(seed=0, steps=3, dtype=np.float32):
    """The batchnorm LeNet with running statistics away from 0 and 1 and weights away from 1 and 0."""
    net = ln.LeNet(variant="batchnorm", seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    for _, m in net.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.weight.data[...] = rng.uniform(0.5, 2, m.num_features) * rng.choice([-1, 1], m.num_features)
            m.bias.data[...] = rng.standard_normal(m.num_features)
    for _ in range(steps):
        net(rng.random((8, 1, 28, 28)).astype(dtype))
    return net.eval()


def test_folded_eval_within_the_float64_floor_of_the_books_model():
    """The folded network's eval output, and a backward after it (input and parameter gradients),
    within the float64 floor of the book's torch model in eval mode, every parameter and
    running statistic rounding like float32 (tests/numerics.py)."""
    torch = pytest.importorskip("torch")
    from benchmarks.torch_models import book_model

    from ...numerics import torch_step_floor
    net = trained_batchnorm_lenet()
    theirs = book_model("batchnorm")
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in net.state_dict().items()})
    theirs.eval()
    rng = np.random.default_rng(1)
    x = rng.random((16, 1, 28, 28), dtype=np.float32)
    g = rng.standard_normal((16, 10)).astype(np.float32)
    floor = torch_step_floor(theirs, x, g=g)
    out = net(x)
    assert [type(m).__name__ for m in net.saved().layers][:2] == ["Folded", "Sigmoid"]
    floor.check(out, "out", what="folded eval output")
    floor.check(net.backward(g), "input", what="input grad after a folded forward")
    for name, p in net.named_parameters():
        floor.check(p.grad, "grad:" + name, what=f"{name} grad after a folded forward")


def test_fold_is_off_in_training_and_with_fold_batchnorm_false():
    net = trained_batchnorm_lenet()
    plain = copy.deepcopy(net)
    plain.fold_batchnorm = False
    x = np.random.default_rng(2).random((4, 1, 28, 28), dtype=np.float32)
    plain(x)
    assert not any(isinstance(m, Folded) for m in plain.saved().layers)
    assert [type(m) for m in net.layer_order()] == [type(m) for m in plain.layer_order()]   # the book's layers
    assert not any(isinstance(m, Folded) for m in net.layer_order())
    assert ln.LeNet(variant="batchnorm", fold_batchnorm=False).fold_batchnorm is False
    net.train()
    net(x)
    assert not any(isinstance(m, Folded) for m in net.saved().layers)
    net.eval()
    net(x)
    assert sum(isinstance(m, Folded) for m in net.saved().layers) == 4
    first = net.saved().layers[0]
    net(x)
    assert net.saved().layers[0] is first                           # kept from call to call
    assert "Folded" not in repr(net) and list(net.state_dict()) == list(plain.state_dict())


def test_backward_after_a_folded_forward_is_the_two_layers_own():
    """A backward after a folded forward goes back through the convolution and the BatchNorm
    themselves (their forwards replayed from the kept input): bit for bit their backward."""
    rng = np.random.default_rng(3)
    conv, bn = nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.BatchNorm2d(3)
    bn.running_mean[...] = rng.standard_normal(3)
    bn.running_var[...] = rng.uniform(0.5, 2, 3)
    bn.eval()
    folded = Folded(conv, bn)
    x = rng.standard_normal((2, 2, 5, 5)).astype(np.float32)
    g = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    folded(x)
    dx = folded.backward(g)
    grads = [p.grad.copy() for p in (conv.weight, conv.bias, bn.weight, bn.bias)]
    for p in (conv.weight, conv.bias, bn.weight, bn.bias):
        p.grad = None
    bn(conv(x))
    np.testing.assert_array_equal(conv.backward(bn.backward(g)), dx)
    for a, p in zip(grads, (conv.weight, conv.bias, bn.weight, bn.bias)):
        np.testing.assert_array_equal(a, p.grad)


@pytest.mark.parametrize("options", [{}, dict(affine=False), dict(bias=False)], ids=str)
@pytest.mark.parametrize("kind", ["conv", "conv-no-bias", "linear"])
def test_folded_weights_give_the_two_layers_result(kind, options):
    """In float64, the folded layer's output is the two layers' to float64 rounding (normwise),
    for a layer with or without a bias and a BatchNorm with or without gamma, beta."""
    rng = np.random.default_rng(4)
    if kind == "linear":
        layer, bn = nn.Linear(6, 4, rng=rng).double(), nn.BatchNorm1d(4, dtype=np.float64, **options)
        x = rng.standard_normal((5, 6))
    else:
        layer = nn.Conv2d(2, 4, 3, bias=kind == "conv", rng=rng).double()
        bn = nn.BatchNorm2d(4, dtype=np.float64, **options)
        x = rng.standard_normal((3, 2, 6, 6))
    bn.running_mean[...] = rng.standard_normal(4)
    bn.running_var[...] = rng.uniform(0.5, 2, 4)
    if bn.affine:
        bn.weight.data[...] = rng.uniform(-2, 2, 4)
    if bn.bias is not None:
        bn.bias.data[...] = rng.standard_normal(4)
    bn.eval()
    assert foldable(layer, bn)
    want = bn(layer(x))
    got = Folded(layer, bn)(x)
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    assert layer.bias is None or layer.bias.data.shape == (4,)        # the layer's own parameters untouched


def test_what_is_not_folded():
    conv, bn2, bn1 = nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.BatchNorm1d(3)
    assert not foldable(conv, bn2)                                     # training: batch statistics
    bn2.eval()
    assert foldable(conv, bn2)
    assert not foldable(conv, nn.BatchNorm2d(3, track_running_stats=False).eval())
    assert not foldable(conv, nn.BatchNorm2d(4).eval())                 # other channels
    assert not foldable(conv, bn1.eval())                               # BatchNorm1d after a conv
    assert not foldable(nn.Sigmoid(), bn2)
    layers = [conv, bn2, nn.Sigmoid(), nn.Conv2d(3, 3, 1), nn.Sigmoid(), bn2]
    out = fold_for_eval(layers, {})
    assert isinstance(out[0], Folded) and out[1:] == layers[2:]


def test_data_parallel_eval_folds_on_every_replica():
    """Split in evaluation mode, each replica folds its own layers with the shared running
    statistics: the same output as the module's own folded forward, bit for bit (with BLAS on
    one thread, as in the replicas: OpenBLAS splits a product differently on two)."""
    from threadpoolctl import threadpool_limits

    net = trained_batchnorm_lenet()
    x = np.random.default_rng(5).random((64, 1, 28, 28), dtype=np.float32)
    pnet = ln.DataParallel(net, 2, min_chunk=8)
    with threadpool_limits(limits=1, user_api="blas"):
        expected = np.concatenate([net(x[:32]), net(x[32:])])
    np.testing.assert_array_equal(pnet(x), expected)
    assert pnet._sizes == [32, 32]
