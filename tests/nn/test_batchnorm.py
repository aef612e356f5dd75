"""BatchNorm2d and BatchNorm1d: finite differences in float64, torch in float32, buffers and
state_dict, devices, errors, and no host read on the CuPy path."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lenet_np as ln
from lenet_np import backend, nn

from .. import cupy_standin as cs
from ..conftest import REAL_GPU, to_np
from ..numerics import torch_step_floor

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low

TOL = 1e-6


def device(xp):
    return "cuda" if xp is not np else "cpu"


def randomise(layer, rng):
    """Weights and running statistics away from their initial 1, 0, 0, 1 (in the layer's dtype),
    so that a backward that drops gamma, or an eval forward that ignores the running statistics,
    cannot pass."""
    c = layer.num_features
    if layer.affine:
        layer.weight.data[...] = rng.uniform(0.5, 2.0, c) * rng.choice([-1, 1], c)
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(c)
    if layer.track_running_stats:
        layer.running_mean[...] = rng.standard_normal(c)
        layer.running_var[...] = rng.uniform(0.5, 2.0, c)
    return layer


def make(cls, c, rng, dtype=np.float64, xp=np, **kwargs):
    return randomise(cls(c, dtype=dtype, **kwargs), rng).to(device(xp))


# -- finite differences in float64 ---------------------------------------------------------------
def check(layer, x):
    errors = ln.gradcheck(layer, x)
    assert set(errors) == {"input", "weight", "bias"}
    assert max(errors.values()) < TOL, errors


def test_gradcheck_with_batch_of_one_in_eval_and_one_image_in_training(xp):
    rng = np.random.default_rng(0)
    check(make(nn.BatchNorm1d, 4, rng, xp=xp).eval(), xp.asarray(rng.standard_normal((1, 4))))
    check(make(nn.BatchNorm2d, 3, rng, xp=xp).eval(), xp.asarray(rng.standard_normal((1, 3, 1, 1))))
    check(make(nn.BatchNorm2d, 3, rng, xp=xp), xp.asarray(rng.standard_normal((1, 3, 2, 2))))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_without_affine_or_running_stats(xp, training):
    """affine=False has no parameters, bias=False no beta; track_running_stats=False normalises
    with the batch's statistics in eval too: its backward must then be the training one."""
    rng = np.random.default_rng(1)
    x = xp.asarray(rng.standard_normal((3, 2, 3, 2)))
    layer = make(nn.BatchNorm2d, 2, rng, xp=xp, affine=False).train(training)
    errors = ln.gradcheck(layer, x)
    assert list(errors) == ["input"] and errors["input"] < TOL
    layer = make(nn.BatchNorm2d, 2, rng, xp=xp, bias=False).train(training)
    errors = ln.gradcheck(layer, x)
    assert list(errors) == ["input", "weight"] and max(errors.values()) < TOL
    layer = make(nn.BatchNorm2d, 2, rng, xp=xp, track_running_stats=False).train(training)
    check(layer, x)


@pytest.mark.parametrize("impl", ["reference", "sums", "fused"])
def test_training_backward_is_not_the_eval_one(impl):
    """In training mu and var depend on x: the two sums of the compact form. The gradient of
    sum(y * r) w.r.t. x then sums to 0 over each channel, and is orthogonal to xhat there
    (up to a term of order eps/var: mean(xhat^2) = var/(var + eps); eps is tiny here)."""
    rng = np.random.default_rng(2)
    layer = make(nn.BatchNorm2d, 3, rng, eps=1e-14, impl=impl)
    x = rng.standard_normal((4, 3, 2, 2))
    layer(x)
    assert layer.path_for(x) == impl
    dx = layer.backward(rng.standard_normal(x.shape))
    xhat = layer.saved().xhat                         # the book's record, on either path
    np.testing.assert_allclose(dx.sum(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose((dx * xhat).sum(axis=(0, 2, 3)), 0, atol=1e-12)
    layer.eval()
    layer(x)
    assert layer.path_for(x) == "reference"          # running statistics: the elementwise book version
    assert np.abs(layer.backward(np.ones(x.shape)).sum(axis=(0, 2, 3))).min() > 0.1


# -- against torch in float32 --------------------------------------------------------------------
@pytest.fixture(scope="module")
def ref():
    """torch and the float32 helpers of the torch parity tests (skips without torch)."""
    pytest.importorskip("torch", reason="the reference tests need torch==2.13.0 (pip install -e '.[test]')")
    from .. import torch_ref
    return torch_ref


CASES = {"2d": (nn.BatchNorm2d, (4, 3, 5, 6)), "2d-n1": (nn.BatchNorm2d, (1, 3, 4, 3)),
         "1d": (nn.BatchNorm1d, (8, 5)), "1d-ncl": (nn.BatchNorm1d, (3, 5, 4)), "1d-n2": (nn.BatchNorm1d, (2, 5))}
OPTIONS = {"default": {}, "momentum-none": dict(momentum=None), "momentum-0.3": dict(momentum=0.3, eps=1e-3),
           "no-affine": dict(affine=False), "no-bias": dict(bias=False),
           "no-running-stats": dict(track_running_stats=False)}


def twin(ref, cls, c, rng, xp, **kwargs):
    """Our layer, randomised, and torch's with the same state."""
    torch = ref.torch
    ours = make(cls, c, rng, np.float32, xp, **kwargs)
    theirs = getattr(torch.nn, cls.__name__)(c, **kwargs).to(ref.torch_device(xp))
    theirs.load_state_dict({k: torch.tensor(to_np(v)) for k, v in ours.state_dict().items()})
    return ours, theirs


def step_both(ref, ours, theirs, x, g, xp):
    """One forward and backward through both from the same state (torch's is set to ours):
    y, dx, dgamma, dbeta and every buffer within the float64 floor of the step
    (tests/numerics.py), torch's float32 results a cross-check of the bound. With few values a
    channel the terms of dx = m*G - sum(G) - xhat*sum(G*xhat) cancel (two values: exactly),
    leaving rounding of the terms' size: the floor grows with it."""
    torch, dev = ref.torch, ref.torch_device(xp)
    theirs.load_state_dict({k: torch.tensor(np.array(to_np(v))) for k, v in ours.state_dict().items()})
    floor = torch_step_floor(theirs, x, g=g, device=dev)
    ours.zero_grad()
    theirs.zero_grad()
    y = ours(xp.asarray(x))
    g = xp.asarray(g)
    dx = ours.backward(g)
    tx = torch.tensor(x, device=dev, requires_grad=True)
    ty = theirs(tx)
    ty.backward(torch.tensor(to_np(g), device=dev))
    assert y.dtype == dx.dtype == np.float32
    theirs_sd = theirs.state_dict()
    assert list(ours.state_dict()) == list(theirs_sd)
    mine = dict(out=y, input=dx, **{"grad:" + n: p.grad for n, p in ours.named_parameters()})
    torch32 = dict(out=ty, input=tx.grad, **{"grad:" + n: p.grad for n, p in theirs.named_parameters()})
    for name, a in ours.state_dict().items():
        if name == "num_batches_tracked":
            assert a.dtype == np.int64 and a.shape == () and int(a) == int(theirs_sd[name])
        else:
            assert a.dtype == np.float32
            if name not in ("weight", "bias"):                 # the buffers the step updates
                mine[name], torch32[name] = a, theirs_sd[name]
    assert set(mine) == set(floor.ref)
    for key, value in mine.items():
        floor.check(value, key, what=f"lenet_np {key}")
        floor.check(torch32[key], key, what=f"torch float32 {key} (cross-check of the bound)")


@pytest.mark.parametrize("option", OPTIONS, ids=list(OPTIONS))
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_training_steps_then_eval_match_torch(ref, xp, case, option):
    """Five training steps (running statistics updated each time), then eval: output, input and
    parameter gradients, running_mean, running_var and num_batches_tracked as torch's."""
    cls, shape = CASES[case]
    rng = np.random.default_rng(3)
    ours, theirs = twin(ref, cls, shape[1], rng, xp, **OPTIONS[option])
    for _ in range(5):
        x = (rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(np.float32)
        step_both(ref, ours, theirs, x, rng.standard_normal(shape).astype(np.float32), xp)
    ours.eval()
    theirs.eval()
    for n in (shape[0], 1):     # a batch of one is fine in eval mode (with running statistics)
        if n == 1 and not ours.track_running_stats and np.prod(shape[2:]) == 1:
            continue
        x = rng.standard_normal((n, *shape[1:])).astype(np.float32)
        step_both(ref, ours, theirs, x, rng.standard_normal(x.shape).astype(np.float32), xp)


@settings(max_examples=10)
@given(shape=st.lists(st.integers(1, 5), min_size=2, max_size=4).map(tuple), seed=st.integers(0, 2**16))
def test_drawn_shapes_match_torch(ref, xp, shape, seed):
    """Any shape BatchNorm1d or BatchNorm2d takes: two training steps, then one in eval."""
    cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    if np.prod(shape) // shape[1] < 2:
        shape = (2, *shape[1:])
    rng = np.random.default_rng(seed)
    ours, theirs = twin(ref, cls, shape[1], rng, xp)
    for training in (True, True, False):
        ours.train(training)
        theirs.train(training)
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        step_both(ref, ours, theirs, x, rng.standard_normal(shape).astype(np.float32), xp)


def test_large_mean_small_spread_in_float32(xp):
    """Activations far from 0 with a small spread: float32 sums lose digits to the mean. The
    second pass (mean(x - mu) added to mu) keeps forward and backward within 1e-6 of the same
    layer in float64 (torch 2.13 on the CPU is 1.4e-5 off here)."""
    rng = np.random.default_rng(4)
    x = (100 + 0.01 * rng.standard_normal((8, 2, 4, 4))).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    results = {}
    for dtype in (np.float32, np.float64):
        layer = randomise(nn.BatchNorm2d(2, dtype=dtype), np.random.default_rng(5)).to(device(xp))
        y = layer(xp.asarray(x.astype(dtype)))
        dx = layer.backward(xp.asarray(g.astype(dtype)))
        results[dtype] = [to_np(a) for a in (y, dx, layer.weight.grad, layer.running_mean, layer.running_var)]
    for ours, exact in zip(*results.values()):
        assert ours.dtype == np.float32
        assert np.abs(ours - exact).max() <= 1e-6 * np.abs(exact).max()


def test_repr_is_torchs(ref):
    torch = ref.torch
    for cls in (nn.BatchNorm1d, nn.BatchNorm2d):
        for kwargs in ({}, dict(bias=False), dict(eps=1e-3, momentum=None, affine=False, track_running_stats=False)):
            assert repr(cls(6, **kwargs)) == repr(getattr(torch.nn, cls.__name__)(6, **kwargs))
    assert repr(nn.BatchNorm2d(6)) == ("BatchNorm2d(6, eps=1e-05, momentum=0.1, affine=True, bias=True, "
                                       "track_running_stats=True)")


# -- buffers, state_dict, devices ----------------------------------------------------------------
def test_state_dict_loads_both_ways_with_torch(ref):
    """A Sequential with BatchNorm inside: keys, order and layouts as torch's, loading both ways."""
    torch = ref.torch
    rng = np.random.default_rng(5)
    ours = nn.Sequential(nn.Linear(4, 3, rng=0), nn.BatchNorm1d(3), nn.Sigmoid())
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Sigmoid())
    assert list(ours.state_dict()) == list(theirs.state_dict()) == [
        "0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    with torch.no_grad():       # torch -> ours
        for t in theirs.state_dict().values():
            t.copy_(torch.tensor(rng.integers(1, 9, t.shape)) if t.dtype == torch.int64 else torch.randn(t.shape))
    ours.load_state_dict(theirs.state_dict())
    for k, t in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], t.numpy())
        assert ours.state_dict()[k].dtype == t.numpy().dtype
    randomise(ours[1], rng)     # ours -> torch
    ours[1].num_batches_tracked[...] = 41
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    for k, t in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[k], t.numpy())
    x = rng.standard_normal((5, 4)).astype(np.float32)
    ref.assert_close(ours.eval()(x), theirs.eval()(torch.tensor(x)), what="eval forward after loading")


def test_load_state_dict_checks_buffers():
    a, b = nn.BatchNorm2d(3), nn.BatchNorm2d(3)
    a(np.random.default_rng(6).standard_normal((2, 3, 2, 2)).astype(np.float32))
    b.load_state_dict(a.state_dict())
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
        assert b.state_dict()[k] is not v            # copied, not shared
    assert int(b.num_batches_tracked) == 1 and b.num_batches_tracked.dtype == np.int64
    sd = dict(a.state_dict())
    del sd["running_var"]
    with pytest.raises(KeyError, match="missing keys: running_var"):
        b.load_state_dict(sd)
    before = {k: v.copy() for k, v in b.state_dict().items()}
    for key, value, pattern in [("running_mean", np.zeros(4, np.float32), r"running_mean.*\(4,\).*\(3,\)"),
                                ("num_batches_tracked", np.array(2.0), "num_batches_tracked.*expected an integer"),
                                ("running_var", np.ones(3, np.int64), "running_var.*expected a float")]:
        with pytest.raises(ValueError, match=pattern):
            b.load_state_dict(dict(a.state_dict(), **{key: value}))
    for k, v in b.state_dict().items():           # a failed load changes nothing
        np.testing.assert_array_equal(v, before[k])
    b.load_state_dict({"num_batches_tracked": np.array(7)}, strict=False)
    assert int(b.num_batches_tracked) == 7 and b.num_batches_tracked.dtype == np.int64


def test_running_stats_update_in_place_like_torch():
    """Torch updates the buffers in place: a state_dict taken earlier sees the update. Its values:
    momentum 0.1 and the unbiased variance (m / (m - 1) times the biased one that normalises)."""
    layer = nn.BatchNorm1d(2)
    sd = layer.state_dict()
    x = np.array([[0.0, 1.0], [2.0, 5.0], [4.0, 9.0]], dtype=np.float32)    # m = 3
    layer(x)
    np.testing.assert_allclose(sd["running_mean"], 0.1 * np.array([2.0, 5.0]), rtol=1e-6)
    np.testing.assert_allclose(sd["running_var"], 0.9 + 0.1 * np.array([4.0, 16.0]), rtol=1e-6)
    assert int(sd["num_batches_tracked"]) == 1
    layer.eval()(x)
    assert int(sd["num_batches_tracked"]) == 1         # eval leaves the buffers alone
    layer.reset_running_stats()
    assert not sd["running_mean"].any() and (sd["running_var"] == 1).all() and int(sd["num_batches_tracked"]) == 0


def test_buffers_move_and_cast_with_the_module(xp):
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=0), nn.BatchNorm2d(2)).to(device(xp))
    assert [n for n, _ in net.named_buffers()] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert all(backend.device_of(b) == device(xp) for b in net.buffers())
    net.double()
    assert [b.dtype for b in net.buffers()] == [np.float64, np.float64, np.int64]
    y = net(xp.asarray(np.random.default_rng(7).standard_normal((2, 1, 5, 5))))
    assert y.dtype == np.float64 and net[1].running_mean.dtype == np.float64
    net.to("cpu").float()
    assert all(backend.device_of(b) == "cpu" for b in net.buffers())
    assert [b.dtype for b in net.buffers()] == [np.float32, np.float32, np.int64]
    assert int(net[1].num_batches_tracked) == 1
    only_buffers = nn.BatchNorm1d(3, affine=False).to(device(xp))
    assert only_buffers.parameters() == [] and only_buffers.device == device(xp)


def test_register_buffer_rules():
    m = nn.Module()
    m.register_buffer("stats", np.zeros(2))
    m.register_buffer("scratch", np.ones(1), persistent=False)
    m.register_buffer("absent", None)
    m.stats = np.arange(2.0)                       # assignment replaces the buffer
    assert list(m.state_dict()) == ["stats"] and m.state_dict()["stats"][1] == 1
    assert [n for n, _ in m.named_buffers()] == ["stats", "scratch"]
    m.w = nn.Parameter(np.zeros(1))
    with pytest.raises(KeyError, match="already a parameter"):
        m.register_buffer("w", np.zeros(1))
    with pytest.raises(TypeError, match="must be an array or None"):
        m.register_buffer("b", [1.0])
    m.stats = nn.Parameter(np.zeros(2))            # now a parameter, no longer a buffer
    assert list(m.state_dict()) == ["w", "stats"] and [n for n, _ in m.named_buffers()] == ["scratch"]


def test_train_and_eval_modes_switch_the_statistics():
    rng = np.random.default_rng(8)
    layer = randomise(nn.BatchNorm2d(3), rng)
    x = (rng.standard_normal((4, 3, 3, 3)) * 3 + 2).astype(np.float32)
    y = layer(x)                                   # batch statistics: each channel of xhat is standardised
    xhat = (y - layer.bias.data[:, None, None]) / layer.weight.data[:, None, None]
    np.testing.assert_allclose(xhat.mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(xhat.var(axis=(0, 2, 3)), 1, atol=1e-3)     # eps = 1e-5 makes it a bit less
    layer.eval()
    expected = (x - layer.running_mean[:, None, None]) / np.sqrt(layer.running_var[:, None, None] + 1e-5)
    np.testing.assert_allclose(layer(x), expected * layer.weight.data[:, None, None]
                               + layer.bias.data[:, None, None], rtol=1e-5, atol=1e-5)


def test_gradients_accumulate_and_input_grad_false(xp):
    rng = np.random.default_rng(9)
    layer = make(nn.BatchNorm2d, 3, rng, np.float32, xp)
    x = xp.asarray(rng.standard_normal((2, 3, 3, 3)).astype(np.float32))
    g = xp.asarray(rng.standard_normal((2, 3, 3, 3)).astype(np.float32))
    layer(x)
    dx = layer.backward(g)
    once = [to_np(p.grad).copy() for p in layer.parameters()]
    assert layer.backward(g, input_grad=False) is None
    for p, g1 in zip(layer.parameters(), once):
        np.testing.assert_allclose(to_np(p.grad), 2 * g1, rtol=1e-6)
    assert dx.dtype == np.float32 and backend.device_of(dx) == device(xp)


@pytest.mark.skipif(REAL_GPU, reason="counts host reads: the stand-in's, not real CuPy's")
@pytest.mark.parametrize("momentum", [0.1, None])
def test_no_host_read_on_the_cupy_path(momentum):
    rng = np.random.default_rng(11)
    net = nn.Sequential(nn.BatchNorm2d(3, momentum=momentum), nn.Flatten(),
                        nn.BatchNorm1d(12, momentum=momentum)).to("cuda")
    x = backend.to_device(rng.standard_normal((4, 3, 2, 2)).astype(np.float32), "cuda")
    with cs.count_host_reads() as reads:
        for mode in (True, True, False):
            net.train(mode)
            net.backward(net(x))
    assert not reads, dict(reads)
    assert int(net[0].num_batches_tracked) == 2


# -- errors -----------------------------------------------------------------------------------------
BAD = [
    (lambda: nn.BatchNorm2d(3), (2, 4, 5, 5), r"BatchNorm2d\(3, .*\(N, 3, H, W\) with 3 channels.*\(2, 4, 5, 5\)"),
    (lambda: nn.BatchNorm2d(3), (2, 3, 5), r"BatchNorm2d\(3, .*\(N, 3, H, W\).*\(2, 3, 5\) \(3 dimensions\)"),
    (lambda: nn.BatchNorm1d(3), (2, 3, 4, 4), r"BatchNorm1d.*\(N, 3\) or \(N, 3, L\).*4 dimensions"),
    (lambda: nn.BatchNorm1d(3), (2, 5), r"BatchNorm1d.*with 3 channels.*\(2, 5\)"),
    (lambda: nn.BatchNorm1d(3), (1, 3), r"more than one value per channel.*\(1, 3\).*at least 2.*eval"),
    (lambda: nn.BatchNorm1d(3), (1, 3, 1), r"more than one value per channel"),
    (lambda: nn.BatchNorm2d(3), (1, 3, 1, 1), r"more than one value per channel.*\(1, 3, 1, 1\)"),
    (lambda: nn.BatchNorm2d(3, track_running_stats=False).eval(), (1, 3, 1, 1), r"more than one value"),
]


@pytest.mark.parametrize("make_layer,shape,pattern", BAD)
def test_bad_input_raises_a_clear_error(make_layer, shape, pattern):
    with pytest.raises(ValueError, match=pattern):
        make_layer()(np.zeros(shape, np.float32))


def test_torch_refuses_what_we_refuse(ref):
    """Where torch raises for a shape (one value per channel in training), so do we."""
    torch = ref.torch
    for make_layer, shape, _ in BAD:
        layer = make_layer()
        theirs = getattr(torch.nn, type(layer).__name__)(layer.num_features, **(
            {} if layer.track_running_stats else dict(track_running_stats=False))).train(layer.training)
        with pytest.raises((ValueError, RuntimeError)):
            theirs(torch.zeros(shape))


def test_other_input_errors():
    layer = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="float32 or float64"):
        layer(np.zeros((2, 3, 2, 2), np.int64))
    with pytest.raises(ValueError, match="does not match the layer's parameters"):
        layer(np.zeros((2, 3, 2, 2)))
    with pytest.raises(RuntimeError, match="backward called before forward"):
        layer.backward(np.zeros((2, 3, 2, 2), np.float32))
    layer(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"grad_out of shape \(2, 3, 2, 2\).*got shape \(2, 3, 2\)"):
        layer.backward(np.zeros((2, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"grad_out of shape \(2, 3, 2, 2\).*got list"):
        layer.backward([0.0])
    for kwargs, pattern in [(dict(num_features=0), "num_features"), (dict(num_features=2.0), "num_features"),
                            (dict(num_features=2, eps=0), "eps"), (dict(num_features=2, momentum=1.5), "momentum"),
                            (dict(num_features=2, dtype=np.int32), "dtype")]:
        with pytest.raises(ValueError, match=pattern):
            nn.BatchNorm2d(**kwargs)


def test_buffers_are_not_parameters():
    """The optimizer sees weight and bias only; the running statistics change by forward alone."""
    net = nn.Sequential(nn.Linear(3, 4, rng=0), nn.BatchNorm1d(4))
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert net.num_parameters() == 3 * 4 + 4 + 4 + 4
    opt = ln.optim.SGD(net.parameters(), lr=0.5)
    x = np.random.default_rng(12).standard_normal((6, 3)).astype(np.float32)
    net.eval()
    net.backward(net(x))
    before = {k: v.copy() for k, v in net.state_dict().items()}
    opt.step()
    after = net.state_dict()
    for k in ("1.running_mean", "1.running_var", "1.num_batches_tracked"):
        np.testing.assert_array_equal(after[k], before[k])
    for k in ("0.weight", "1.weight", "1.bias"):
        assert not np.array_equal(after[k], before[k]), k


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck_in_a_small_network_with_loss(xp, training):
    """Conv, BatchNorm2d, sigmoid, pooling, linear, BatchNorm1d and the loss: the backward of each
    BatchNorm composes with its neighbours (every example's loss depends on every other's input)."""
    rng = np.random.default_rng(13)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), randomise(nn.BatchNorm2d(2), rng), nn.Sigmoid(),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8, 5, rng=rng), randomise(nn.BatchNorm1d(5), rng),
                        nn.Sigmoid(), nn.Linear(5, 3, rng=rng)).double().to(device(xp)).train(training)
    x = xp.asarray(rng.standard_normal((4, 1, 6, 6)))
    details = ln.gradcheck(net, x, loss_fn=nn.CrossEntropyLoss(), labels=xp.asarray(np.array([0, 2, 1, 2])),
                           return_details=True)
    assert len(details) == 1 + 10
    if training:
        # a bias right before a BatchNorm shifts a whole channel, which the batch mean takes
        # away again: its gradient is 0 (finite differences: rounding), a relative error is moot
        for name in ("0.bias", "5.bias"):
            _, analytic, numeric = details.pop(name)
            assert np.abs(analytic).max() < 1e-12 and np.abs(numeric).max() < 1e-8, name
    errors = {name: err for name, (err, _, _) in details.items()}
    assert max(errors.values()) < TOL, errors
