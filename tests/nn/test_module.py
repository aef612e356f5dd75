"""Module (lenet_np/nn/module.py) and what every layer shares: dtypes, gradients, state_dict, devices, errors."""

from __future__ import annotations

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import backend, nn


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_in_is_dtype_out(dtype):
    net = ln.LeNet(seed=0).to(dtype=dtype)
    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype(dtype)
    loss_fn = nn.CrossEntropyLoss()
    logits = net(x)
    loss_fn(logits, np.array([0, 1, 2]))
    gx = net.backward(loss_fn.backward())
    assert logits.dtype == dtype and gx.dtype == dtype
    for _, p in net.named_parameters():
        assert p.data.dtype == dtype and p.grad.dtype == dtype
    opt = ln.optim.Adam(net.parameters())
    opt.step()
    assert all(p.data.dtype == dtype for p in net.parameters())
    for layer in [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.Sigmoid(), nn.ReLU(), nn.Flatten()]:
        y = layer(x)
        assert y.dtype == dtype and layer.backward(y).dtype == dtype


def test_gradients_accumulate_until_zero_grad():
    layer = nn.Linear(3, 2, rng=0)
    x = np.ones((1, 3), dtype=np.float32)
    g = np.ones((1, 2), dtype=np.float32)
    layer(x)
    layer.backward(g)
    once = layer.weight.grad.copy()
    layer(x)
    layer.backward(g)
    np.testing.assert_array_equal(layer.weight.grad, 2 * once)
    layer.zero_grad()
    assert layer.weight.grad is None


def test_state_dict_round_trip_and_strict_errors():
    a, b = ln.LeNet(seed=0), ln.LeNet(seed=1)
    b.load_state_dict(a.state_dict())
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert p.data is not q.data
    sd = dict(a.state_dict())
    del sd["fc.4.bias"]
    sd["fc.9.weight"] = np.zeros(3, dtype=np.float32)
    before = [p.data.copy() for p in b.parameters()]
    with pytest.raises(KeyError, match=r"missing keys: fc\.4\.bias.*unexpected keys: fc\.9\.weight"):
        b.load_state_dict(sd)
    sd = dict(ln.LeNet(seed=2).state_dict())
    sd["conv.3.weight"] = np.zeros((16, 6, 3, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"conv\.3\.weight.*\(16, 6, 3, 3\).*\(16, 6, 5, 5\)"):
        b.load_state_dict(sd)
    for old, p in zip(before, b.parameters()):   # a failed load changes nothing
        np.testing.assert_array_equal(old, p.data)
    b.load_state_dict({"conv.0.weight": np.zeros((6, 1, 5, 5))}, strict=False)
    assert not b.conv[0].weight.data.any() and b.conv[0].weight.dtype == np.float32


def test_devices():
    net = ln.LeNet(seed=0)
    assert net.to("cpu") is net and net.device == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        net.to("tpu")
    if not backend.cupy_available():
        with pytest.raises(RuntimeError, match="cupy"):
            net.to("cuda")
        assert backend.parse_device("auto") == "cpu"
    assert ln.get_array_module(np.zeros(2)) is np


# -- bad inputs: a ValueError naming the layer, the expected and the actual shape ----------
BAD_INPUTS = [
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 3, 8), np.float32), r"Conv2d\(3, 4.*\(N, 3, H, W\).*\(2, 3, 8\)"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 5, 8, 8), np.float32), r"Conv2d.*3 channels.*\(2, 5, 8, 8\)"),
    (lambda: nn.Conv2d(3, 4, 5), np.zeros((2, 3, 4, 8), np.float32), r"Conv2d.*>= 5.*\(2, 3, 4, 8\).*too small"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 3, 8, 8), np.uint8), r"Conv2d.*float32 or float64.*uint8"),
    (lambda: nn.Conv2d(3, 4, 3), np.zeros((2, 3, 8, 8), np.float64), r"Conv2d.*float64 does not match.*float32"),
    (lambda: nn.MaxPool2d(3), np.zeros((1, 1, 2, 2), np.float32), r"MaxPool2d.*>= 3.*\(1, 1, 2, 2\).*too small"),
    (lambda: nn.MaxPool2d(2), np.zeros((4, 4), np.float32), r"MaxPool2d.*\(N, C, H, W\).*\(4, 4\)"),
    (lambda: nn.AvgPool2d(2), np.zeros((1, 1, 4, 4), np.int64), r"AvgPool2d.*int64"),
    (lambda: nn.Linear(4, 2), np.zeros((3, 5), np.float32), r"Linear\(in_features=4.*\(N, 4\).*\(3, 5\)"),
    (lambda: nn.Linear(4, 2), np.zeros((3, 2, 2), np.float32), r"Linear.*\(N, 4\).*\(3, 2, 2\)"),
    (lambda: nn.Sigmoid(), np.zeros(3, np.int32), r"Sigmoid.*int32"),
    (lambda: nn.ReLU(), [1.0, 2.0], r"ReLU.*got list"),
    (lambda: ln.LeNet(), np.zeros((2, 1, 32, 32), np.float32), r"LeNet.*\(N, 1, 28, 28\).*\(2, 1, 32, 32\)"),
    (lambda: ln.LeNet(), np.zeros((2, 3, 28, 28), np.float32), r"Conv2d.*1 channels.*\(2, 3, 28, 28\)"),
]


@pytest.mark.parametrize("make,x,pattern", BAD_INPUTS)
def test_bad_input_raises_a_clear_error(make, x, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()(x)


def test_impl_names_are_checked():
    with pytest.raises(ValueError, match="impl must be one of"):
        nn.Conv2d(1, 2, 3, impl="fastest")
    with pytest.raises(ValueError, match="needs stride 1"):
        nn.Conv2d(1, 2, 3, stride=2, impl="wide")
    with pytest.raises(ValueError, match="needs stride 1"):
        nn.Conv2d(2, 2, 3, stride=(1, 2), impl="band")
    with pytest.raises(ValueError, match="impl must be one of"):
        nn.MaxPool2d(2, impl="wide")
    with pytest.raises(ValueError, match=r"AvgPool2d: impl must be one of auto, fast, reference, sums, fused, "
                                         r"got 'offsets'"):
        nn.AvgPool2d(2, impl="offsets")          # "offsets" is max pooling's
    assert nn.AvgPool2d(2, impl="reference").impl == "reference"
    assert set(nn.Conv2d.IMPLS) >= {"reference", "strided", "wide", "band"}
    assert set(nn.MaxPool2d.IMPLS) >= {"reference", "offsets"}


def test_saved_records_are_named_and_dropped_when_the_layer_moves():
    layer = nn.Sigmoid()
    y = layer(np.zeros((2, 2), np.float32))
    assert layer.saved().y is y and layer.saved()._fields == ("y",)
    conv = nn.Conv2d(1, 2, 3, rng=0, impl="reference")
    conv(np.zeros((1, 1, 5, 5), np.float32))
    assert conv.saved()._fields == ("x_shape", "cm") and conv.saved().cm.shape == (9, 9)
    conv.to("cpu")
    with pytest.raises(RuntimeError, match="Conv2d.*backward called before forward"):
        conv.backward(np.ones((1, 2, 3, 3), np.float32))
