"""DataParallel (the batch split across CPU threads) against the plain network."""

from __future__ import annotations

import numpy as np
import pytest

import lenet_np as ln
from lenet_np.parallel import DataParallel, default_workers

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low


def assert_same_step(pnet, net, ref, x, y):
    """One forward and backward of DataParallel pnet (over net) and of the plain ref give
    the same loss, input gradient and parameter gradients."""
    loss_fn = ln.nn.CrossEntropyLoss()
    loss = loss_fn(pnet(x), y)
    gx = pnet.backward(loss_fn.backward())
    ref_loss = loss_fn(ref(x), y)
    ref_gx = ref.backward(loss_fn.backward())
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(gx, ref_gx, rtol=1e-10, atol=1e-14)
    for p, q in zip(net.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("workers,batch", [(2, 64), (3, 7), (4, 9), (2, 3)])
def test_same_outputs_and_gradients_as_one_thread(workers, batch):
    net = ln.LeNet(seed=0).double()
    pnet = DataParallel(net, workers, min_chunk=1)
    ref = ln.LeNet(seed=0).double()
    rng = np.random.default_rng(batch)
    x = rng.random((batch, 1, 28, 28))
    y = rng.integers(0, 10, batch)
    loss_fn = ln.nn.CrossEntropyLoss()
    assert_same_step(pnet, net, ref, x, y)
    # replicas keep their own gradients; the original's accumulate like any backward
    loss_fn(pnet(x), y)
    assert pnet.backward(loss_fn.backward(), input_grad=False) is None
    for p, q in zip(net.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, 2 * q.grad, rtol=1e-10, atol=1e-14)


def test_training_follows_the_shared_parameters():
    """The optimizer updates the original's arrays in place, and load_state_dict replaces
    them: the replicas must see both."""
    net = ln.LeNet(seed=0)
    pnet = DataParallel(net, 2)
    opt = ln.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = ln.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 32)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        losses.append(loss_fn(pnet(x), y))
        pnet.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    assert losses[-1] < losses[0]
    net.load_state_dict(ln.LeNet(seed=1).state_dict())
    # split in two, against the whole batch: each within the float64 floor of the forward
    torch = pytest.importorskip("torch")
    from .numerics import function_floor
    from .test_model_torch import torch_lenet
    theirs = torch_lenet()
    theirs.load_state_dict({k: torch.tensor(np.array(v)) for k, v in ln.LeNet(seed=1).state_dict().items()})
    floor = function_floor(theirs.double(), [x], np.ones((len(x), 10)))
    floor.check_pair(pnet(x), ln.LeNet(seed=1)(x), "out", what="replicas after load_state_dict")


def test_deterministic_and_eval_mode():
    net = ln.LeNet(seed=0)
    pnet = DataParallel(net, 2, min_chunk=4)
    x = np.random.default_rng(0).random((16, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(pnet(x), pnet(x))
    pnet.eval()
    assert not net.training
    pnet(x)
    assert all(not r.training for r in pnet.replicas)
    assert 1 <= default_workers() <= 4
    with pytest.raises(ValueError, match="workers"):
        DataParallel(net, 0)
    with pytest.raises(ValueError, match="min_chunk"):
        DataParallel(net, 2, min_chunk=0)
    with pytest.raises(ValueError, match="max_chunk"):
        DataParallel(net, 2, min_chunk=8, max_chunk=4)


def test_small_batches_run_on_the_module_alone():
    net = ln.LeNet(seed=0).double()
    pnet = DataParallel(net, 2, min_chunk=8)
    x = np.random.default_rng(1).random((15, 1, 28, 28))
    np.testing.assert_array_equal(pnet(x), ln.LeNet(seed=0).double()(x))
    assert pnet._sizes is None                  # 15 < 2 * 8: no split
    pnet(np.concatenate([x, x[:1]]))
    assert pnet._sizes == [8, 8]


def test_large_batches_are_cut_into_slices_of_at_most_max_chunk():
    net = ln.LeNet(seed=0).double()
    ref = ln.LeNet(seed=0).double()
    pnet = DataParallel(net, 2, min_chunk=8, max_chunk=30)
    rng = np.random.default_rng(5)
    x, y = rng.random((100, 1, 28, 28)), rng.integers(0, 10, 100)
    assert_same_step(pnet, net, ref, x, y)
    assert pnet._sizes == [25, 25, 25, 25] and len(pnet.replicas) == 4
    pnet(x[:40])                                 # a smaller batch afterwards: two slices again
    assert pnet._sizes == [20, 20]


def test_slice_i_runs_on_thread_i_mod_workers_and_the_caller_is_thread_0():
    """The threads: the caller takes slice 0 (and 0 + workers, ...), thread t the slices t, t +
    workers, ...: with batch statistics (one slice a thread) no replica ever waits for a slice
    queued behind it on its own thread."""
    import threading

    net = ln.LeNet(seed=0)
    pnet = DataParallel(net, 2, min_chunk=4, max_chunk=8)
    x = np.random.default_rng(6).random((40, 1, 28, 28), dtype=np.float32)
    pnet(x)                                          # five slices: five replicas
    seen = {}
    for i, replica in enumerate(pnet.replicas):
        def record(a, i=i, original=replica.forward):
            seen[i] = threading.current_thread()
            return original(a)
        replica.forward = record
    out = pnet(x)
    assert pnet._sizes == [8] * 5 and out.shape == (40, 10)
    assert seen[0] is seen[2] is seen[4] is threading.current_thread()
    assert seen[1] is seen[3] is not threading.current_thread()
