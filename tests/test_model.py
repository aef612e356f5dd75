"""LeNet (lenet_np/model.py): initialisation, variants and modes, the one walk, the orders of forward and backward."""

from __future__ import annotations

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import backend, nn
from lenet_np.gradcheck import gradcheck_steps

from .conftest import tie_free
from .numerics import FD_TOL, assert_gradcheck


def test_first_layer_can_skip_its_input_gradient():
    net = ln.LeNet(seed=0)
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(net(x), np.array([1, 2]))
    g = loss_fn.backward()
    assert net.backward(g, input_grad=False) is None
    grads = [p.grad.copy() for p in net.parameters()]
    net.zero_grad()
    assert net.backward(g).shape == x.shape
    for a, p in zip(grads, net.parameters()):
        np.testing.assert_array_equal(a, p.grad)


def test_seeded_initialisation_is_reproducible_and_in_torch_bounds():
    a, b, c = ln.LeNet(seed=0), ln.LeNet(seed=0), ln.LeNet(seed=1)
    for p, q, r in zip(a.parameters(), b.parameters(), c.parameters()):
        np.testing.assert_array_equal(p.data, q.data)
        assert not np.array_equal(p.data, r.data)
    for _, layer in a.named_modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            fan_in = layer.weight.size // layer.weight.shape[0]
            bound = 1 / np.sqrt(fan_in)
            assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
            assert np.abs(layer.weight.data).max() > 0.8 * bound   # really uniform over the range


def test_variants_and_modes():
    net = ln.LeNet(activation="relu", pool="avg", seed=0)
    assert isinstance(net.conv[1], nn.ReLU) and isinstance(net.conv[2], nn.AvgPool2d)
    assert net.num_parameters() == 44426
    assert net.eval() is net and not any(m.training for _, m in net.named_modules())
    net.train()
    assert all(m.training for _, m in net.named_modules())
    assert net(np.zeros((1, 1, 28, 28), dtype=np.float32)).shape == (1, 10)
    with pytest.raises(ValueError, match="activation"):
        ln.LeNet(activation="tanh")
    with pytest.raises(ValueError, match="pool"):
        ln.LeNet(pool="min")


@pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low
@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_pool_first_matches_the_seeds_order(activation):
    """max(act(z)) == act(max(z)) for monotone activations: in eval mode LeNet pools first,
    with the same output bit for bit; in training mode it runs the seed's order."""
    rng = np.random.default_rng(0)
    x = rng.random((8, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    fast = ln.LeNet(activation=activation, seed=4)
    literal = ln.LeNet(activation=activation, seed=4, pool_first=False)
    seed_order = [type(m).__name__ for m in literal.conv]
    assert [type(m).__name__ for m in fast.conv_order()] == seed_order          # training
    fast.eval()
    literal.eval()
    assert [type(m).__name__ for m in fast.conv_order()][1:3] == ["MaxPool2d", type(fast.conv[1]).__name__]
    assert [type(m).__name__ for m in literal.conv_order()] == seed_order
    loss_fn = nn.CrossEntropyLoss()
    a = loss_fn(fast(x), y)
    ga = fast.backward(loss_fn.backward())
    b = loss_fn(literal(x), y)
    gb = literal.backward(loss_fn.backward())
    assert a == b
    np.testing.assert_array_equal(fast(x), literal(x))
    np.testing.assert_allclose(ga, gb, rtol=1e-5, atol=1e-9)
    for p, q in zip(fast.parameters(), literal.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)


def test_backward_follows_the_order_of_its_forward():
    """Switching mode between forward and backward must not change the layers retraced."""
    rng = np.random.default_rng(1)
    x, y = rng.random((4, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 4)
    net, ref = ln.LeNet(seed=2), ln.LeNet(seed=2)
    loss_fn = nn.CrossEntropyLoss()
    net.eval()
    loss_fn(net(x), y)
    net.train()                                  # forward ran pool-first; backward must too
    g = net.backward(loss_fn.backward())
    ref.eval()
    loss_fn(ref(x), y)
    np.testing.assert_array_equal(g, ref.backward(loss_fn.backward()))


@pytest.mark.parametrize("variant", ["classic", "d2l", "batchnorm"])
def test_one_walk_names_every_layer_and_its_output(variant):
    """named_layers and walk: every layer of the book's order, Flatten included, with the
    output forward computes; the classic network's flatten is a layer but not a parameter key
    or a child module (state_dict and print(net) stay the book's)."""
    net = ln.LeNet(variant=variant, seed=0)
    x = np.random.default_rng(0).random((3, 1, 28, 28), dtype=np.float32)
    walked = list(net.walk(x))
    assert [name for name, _, _ in walked] == [name for name, _ in net.named_layers()]
    assert sum(isinstance(m, nn.Flatten) for _, m, _ in walked) == 1
    flat = next(i for i, (_, m, _) in enumerate(walked) if isinstance(m, nn.Flatten))
    assert walked[flat][2].shape == (3, 400 if variant == "d2l" else 256)
    np.testing.assert_array_equal(walked[-1][2], net(x))
    assert all("flatten" not in k for k in net.state_dict())
    if variant == "classic":
        assert walked[flat][0] == "flatten" and "flatten" not in repr(net)
        assert [n for n, _, _ in walked][flat - 1:flat + 2] == ["conv.5", "flatten", "fc.0"]


def test_the_classic_network_keeps_its_earlier_name():
    """variant="seed", the name the book's first network had, still builds it (and so old
    checkpoints that carry that name load)."""
    old, new = ln.LeNet(variant="seed", seed=3), ln.LeNet(seed=3)
    assert old.variant == new.variant == "classic"
    for (k, a), (k2, b) in zip(old.state_dict().items(), new.state_dict().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)


# Every network on NumPy; on the CuPy stand-in (NumPy's arithmetic behind CuPy's API, so the
# same rounding) the forms a GPU runs, once each: max and average pooling, with and without the loss.
@pytest.mark.parametrize("device,activation,pool,with_loss", [
    *(("numpy", act, pool, with_loss) for act, pool in [("sigmoid", "max"), ("relu", "max"), ("sigmoid", "avg")]
      for with_loss in (False, True)),
    ("cupy", "sigmoid", "max", True), ("cupy", "relu", "max", False), ("cupy", "sigmoid", "avg", True)])
def test_lenet_backward_matches_finite_differences(device, activation, pool, with_loss):
    xp = np if device == "numpy" else backend.require_cupy()
    rng = np.random.default_rng(7)
    net = ln.LeNet(activation=activation, pool=pool, seed=3).double()
    net.to("cuda" if xp is not np else "cpu")
    x = xp.asarray(tie_free(rng, (2, 1, 28, 28), 0.0, 1.0))
    kw = dict(loss_fn=nn.CrossEntropyLoss(), labels=xp.asarray([3, 8])) if with_loss else {}
    if pool == "avg" and activation == "sigmoid":
        # smooth everywhere: one step. Input gradients of the whole net are ~1e-5, so the
        # step must be large enough that rounding (eps_machine * |L| / h) stays below them
        assert_gradcheck(net, x, eps=3e-4, max_elements=25, **kw)
    else:
        # max pooling and ReLU put kinks near some perturbations whatever the input, and
        # no single step suits every element: keep, per element, the step that agrees best
        # (a wrong backward disagrees at every step; see docs/gradient-check.md)
        errors = gradcheck_steps(net, x, max_elements=25, **kw)
        assert max(errors.values()) < FD_TOL, errors
