"""DataParallel with batch statistics: the replicas' BatchNorms exchange their statistics (as
torch's SyncBatchNorm across devices), so a split batch gives the whole batch's results, and
an error or a replica that does not arrive is one clear error, never a hang."""

from __future__ import annotations

import copy
import threading
import time

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import nn
from lenet_np.parallel import DataParallel, combine_moments, uses_batch_statistics

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low

IMPLS = ("reference", "sums", "fused")


def with_impl(net, impl):
    for _, m in net.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.impl = impl
    return net


def step(model, net, x, y, input_grad=False):
    loss_fn = nn.CrossEntropyLoss()
    net.zero_grad()
    loss = loss_fn(model(x), y)
    gx = model.backward(loss_fn.backward(), input_grad=input_grad)
    return loss, gx


def close(a, b, what, rtol=1e-9):
    """Normwise: max|a - b| <= rtol * max|b| (float64 runs, far inside any float32 bound)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert np.abs(a - b).max() <= rtol * np.abs(b).max(), what


def in_time(fn, seconds=20.0):
    """fn() on another thread: its result or exception, and a failure if it is not done in time (a hang)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t0 = time.perf_counter()
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still running after {seconds} s: a hang"
    out["seconds"] = time.perf_counter() - t0
    return out


# -- the whole batch's results ---------------------------------------------------------------
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("workers,batch", [(2, 24), (3, 25), (2, 3)])
def test_split_step_matches_the_unsplit_one_in_float64(impl, workers, batch):
    """Float64, three SGD steps: loss, input and parameter gradients, the parameters and the
    running statistics as the unsplit network's, to float64 rounding (the statistics are
    combined in another order, nothing else differs). Batch 3 on two threads: a slice of
    one example, whose BatchNorm1d alone has no variance; the whole batch has."""
    net = with_impl(ln.LeNet(variant="batchnorm", seed=0).double(), impl)
    ref = copy.deepcopy(net)
    pnet = DataParallel(net, workers, min_chunk=1)
    opts = [ln.optim.SGD(m.parameters(), lr=0.1, momentum=0.9) for m in (net, ref)]
    rng = np.random.default_rng(batch)
    for _ in range(3):
        x, y = rng.random((batch, 1, 28, 28)), rng.integers(0, 10, batch)
        loss, gx = step(pnet, net, x, y, input_grad=True)
        assert pnet._sizes == [batch // workers + (w < batch % workers) for w in range(workers)]  # one slice a thread
        ref_loss, ref_gx = step(ref, ref, x, y, input_grad=True)
        assert loss == pytest.approx(ref_loss, rel=1e-12)
        close(gx, ref_gx, "input grad")
        for (name, layer), (_, other) in zip(net.named_layers(), ref.named_layers()):
            if layer.parameters():    # per layer: the gradient of a bias a BatchNorm follows is 0 (rounding)
                close(*(np.concatenate([p.grad.ravel() for p in m.parameters()]) for m in (layer, other)), name)
        for opt in opts:
            opt.step()
    for (name, a), b in zip(net.state_dict().items(), ref.state_dict().values()):
        close(a, b, name)
    assert int(net.net[1].num_batches_tracked) == 3               # once per batch, not per slice


@pytest.mark.parametrize("impl", IMPLS)
def test_split_step_matches_torch_on_the_whole_batch(impl):
    """Float32 on two threads: loss, every gradient and the running statistics (the update with
    the whole batch's unbiased variance) within the float64 floor of the book's torch model on
    the whole batch (tests/numerics.py); the unsplit lenet_np within it too."""
    torch = pytest.importorskip("torch")
    from benchmarks.torch_models import book_model

    from .numerics import torch_step_floor
    theirs = book_model("batchnorm", seed=2, dtype=torch.float64)
    net = with_impl(ln.LeNet(variant="batchnorm", seed=0), impl)
    net.load_state_dict(theirs.state_dict())
    unsplit = copy.deepcopy(net)
    pnet = DataParallel(net, 2, min_chunk=1)
    rng = np.random.default_rng(3)
    x, y = rng.random((24, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 24)
    floor = torch_step_floor(theirs, x, y)
    for model, own in ((pnet, net), (unsplit, unsplit)):
        loss, gx = step(model, own, x, y, input_grad=True)
        floor.check(loss, "loss", what="loss")
        floor.check(gx, "input", what="input grad")
        for name, p in own.named_parameters():
            floor.check(p.grad, "grad:" + name, what=f"{name} grad")
        for name, b in own.named_buffers():
            if name.endswith("num_batches_tracked"):
                assert int(b) == 1
            else:
                floor.check(b, name, what=name)
    assert pnet._sizes == [12, 12]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("options", [{}, dict(momentum=None), dict(affine=False), dict(bias=False),
                                     dict(track_running_stats=False)], ids=str)
def test_one_layer_split_matches_torch(impl, options):
    """A BatchNorm2d on its own, split in three: output, input and parameter gradients and the
    running statistics within the float64 floor of torch's layer on the whole batch, two
    training steps (momentum=None: the cumulative average) and one in eval (batch statistics
    again without running statistics)."""
    torch = pytest.importorskip("torch")
    from .numerics import torch_step_floor
    rng = np.random.default_rng(4)
    layer = nn.BatchNorm2d(3, impl=impl, **options)
    if layer.affine:
        layer.weight.data[...] = rng.uniform(0.5, 2, 3) * rng.choice([-1, 1], 3)
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(3)
    theirs = torch.nn.BatchNorm2d(3, **options)
    pnet = DataParallel(layer, 3, min_chunk=1)
    for training in (True, True, False):
        layer.train(training)
        theirs.train(training)
        x = (rng.standard_normal((10, 3, 4, 5)) * 3 + 5).astype(np.float32)     # far from 0
        g = rng.standard_normal(x.shape).astype(np.float32)
        theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in layer.state_dict().items()})
        floor = torch_step_floor(theirs, x, g=g)
        layer.zero_grad()
        out = pnet(x)
        dx = pnet.backward(g)
        assert pnet._sizes == [4, 3, 3]            # batch statistics or not (eval: running ones)
        assert uses_batch_statistics(layer) == (training or not layer.track_running_stats)
        values = dict(out=out, input=dx, **{"grad:" + n: p.grad for n, p in layer.named_parameters()},
                      **{n: b for n, b in layer.named_buffers() if n != "num_batches_tracked"})
        for key, value in values.items():
            floor.check(value, key, what=f"{key} (training={training})")


def test_chans_formula_does_not_cancel():
    """Slices far from 0 with a small spread: the combined variance is the float64 variance of
    the whole, where a sum of squares would have lost the digits."""
    rng = np.random.default_rng(5)
    slices = [1e5 + rng.standard_normal((n, 3)) * 1e-2 for n in (7, 1, 12)]
    count, mean, var = combine_moments([(len(s), s.mean(axis=0), s.var(axis=0)) for s in slices])
    whole = np.concatenate(slices)
    assert count == len(whole)
    np.testing.assert_allclose(mean, whole.mean(axis=0), rtol=1e-15)
    np.testing.assert_allclose(var, whole.var(axis=0), rtol=1e-9)
    naive = (whole ** 2).mean(axis=0) - whole.mean(axis=0) ** 2      # what Chan's formula avoids
    assert np.abs(naive - whole.var(axis=0)).max() > 1e-3 * whole.var(axis=0).max()


def test_float32_statistics_of_slices_far_from_zero():
    """float32 slices with mean 100 and spread 0.01: the split layer within 1e-6 of the float64
    layer, as the unsplit one (tests/nn/test_batchnorm.py's large-mean case, split)."""
    rng = np.random.default_rng(6)
    x = (100 + 0.01 * rng.standard_normal((12, 2, 4, 4))).astype(np.float32)
    g = rng.standard_normal(x.shape).astype(np.float32)
    for impl in IMPLS:
        results = {}
        for dtype in (np.float32, np.float64):
            layer = nn.BatchNorm2d(2, dtype=dtype, impl=impl)
            pnet = DataParallel(layer, 3, min_chunk=1)
            y = pnet(x.astype(dtype))
            dx = pnet.backward(g.astype(dtype))
            results[dtype] = [y, dx, layer.weight.grad, layer.running_mean, layer.running_var]
        for ours, exact in zip(*results.values()):
            assert ours.dtype == np.float32
            assert np.abs(ours - exact).max() <= 1e-6 * np.abs(exact).max(), impl


# -- how the batch is split ----------------------------------------------------------------------
def test_one_slice_per_thread_with_batch_statistics_and_max_chunk_otherwise():
    net = ln.LeNet(variant="batchnorm", seed=0)
    pnet = DataParallel(net, 2, min_chunk=4, max_chunk=8)
    x, y = np.random.default_rng(7).random((40, 1, 28, 28), dtype=np.float32), np.arange(40) % 10
    step(pnet, net, x, y)
    assert pnet._sizes == [20, 20]                 # training: one slice per thread, max_chunk or not
    net.eval()
    pnet(x)
    assert pnet._sizes == [8] * 5                   # eval: running statistics, slices of max_chunk
    net.train()
    pnet(x[:7])
    assert pnet._sizes is None                      # under min_chunk * workers: unsplit
    off = DataParallel(net, 2, min_chunk=4, sync_batchnorm=False)
    off(x)
    assert off._sizes is None                       # as before batch statistics were exchanged
    with pytest.raises(ValueError, match="sync_timeout"):
        DataParallel(net, 2, sync_timeout=0)


def test_the_module_itself_never_exchanges():
    """Only the replicas' BatchNorms are tied to the others: the module, run alone or copied,
    is an ordinary network."""
    net = ln.LeNet(variant="batchnorm", seed=0)
    pnet = DataParallel(net, 2, min_chunk=1)
    x, y = np.random.default_rng(8).random((6, 1, 28, 28), dtype=np.float32), np.arange(6)
    step(pnet, net, x, y)
    assert all(m.sync is None for _, m in net.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert all(m.sync is not None for _, m in pnet.replicas[1].named_modules() if isinstance(m, nn.BatchNorm2d))
    copy.deepcopy(net)(x)
    net(x[:1].repeat(2, axis=0))


# -- errors: one clear error, never a hang -------------------------------------------------------
def boom(*a, **k):
    raise ValueError("boom in one replica")


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_replica_that_raises_stops_the_others_at_once(where):
    """Replica 1 raises between two BatchNorms (before the second one's exchange, where replica
    0 waits for it): the call raises replica 1's error at once (the barrier's timeout is a
    minute: it is the abort that frees replica 0), and the next call works again."""
    net = ln.LeNet(variant="batchnorm", seed=0)
    pnet = DataParallel(net, 2, min_chunk=1, sync_timeout=60)
    x, y = np.random.default_rng(9).random((8, 1, 28, 28), dtype=np.float32), np.arange(8)
    conv = pnet.replicas[1].net[4]                 # between BatchNorm net.1 and net.5
    setattr(conv, where, boom)
    out = in_time(lambda: step(pnet, net, x, y))
    assert isinstance(out.get("error"), ValueError) and "boom in one replica" in str(out["error"])
    assert out["seconds"] < 10
    notes = getattr(out["error"], "__notes__", [])
    assert not notes or "replica 1 of 2" in notes[0]
    del conv.__dict__[where]
    ref = copy.deepcopy(net)
    loss, _ = step(pnet, net, x, y)                # works again, with the whole batch's statistics
    assert loss == pytest.approx(step(ref, ref, x, y)[0], rel=1e-5)


def test_a_replica_that_does_not_arrive_is_a_timeout_naming_it():
    net = ln.LeNet(variant="batchnorm", seed=0)
    pnet = DataParallel(net, 2, min_chunk=1, sync_timeout=0.3)
    x = np.random.default_rng(10).random((8, 1, 28, 28), dtype=np.float32)
    conv = pnet.replicas[1].net[4]
    original = conv.forward

    def late(a):
        time.sleep(1.0)
        return original(a)
    conv.forward = late
    out = in_time(lambda: pnet(x))
    assert isinstance(out.get("error"), TimeoutError), out
    assert "replica(s) [1] of 2 did not arrive" in str(out["error"]) and "sync_timeout" in str(out["error"])
    del conv.forward
    time.sleep(1.0)                                # the late replica finishes and fails on its own
    np.testing.assert_array_equal(pnet(x).shape, (8, 10))


def test_an_error_in_every_replica_is_raised_once():
    """The same error in each replica: one ValueError."""
    layer = nn.BatchNorm1d(3)
    pnet = DataParallel(layer, 2, min_chunk=1)
    out = in_time(lambda: pnet(np.zeros((2, 3, 1), np.float32)))    # one value a slice, two in all: fine
    assert "error" not in out
    for replica in pnet.replicas:
        replica.check_count = lambda count, shape: boom()
    out = in_time(lambda: pnet(np.zeros((2, 3, 1), np.float32)))
    assert isinstance(out.get("error"), ValueError)
