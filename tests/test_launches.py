"""Kernel launches per training step, counted on the CuPy stand-in.

On a GPU every small call is a kernel launch (a few microseconds of host time each, more
than LeNet's kernels take at small batches), so the number of launches per step is the
number to watch. The stand-in counts them as CuPy 14.2 makes them, weighted by the kernels
each call really launches (tests/cupy_standin.py, "Kernel launches", each weight with the
CuPy source it comes from). Here: the counter counts what it says, and one training step
of each variant, as ``python -m lenet_np.train`` runs it, stays within its budget.
"""

from __future__ import annotations

import collections
import contextlib
import re

import numpy as np
import pytest

from lenet_np import backend, nn, optim, training
from lenet_np.data import iterate_batches
from lenet_np.nn import activation
from lenet_np.nn import loss as loss_module
from lenet_np.nn.fast import batchnorm as bn_fast
from lenet_np.nn.fast import pooling
from lenet_np.nn.im2col import col2im_gather

from . import cupy_standin as cs

sp = cs.module
BATCH = 16

# Launches per training step of each variant (batch, forward, loss, backward, optimizer step and
# the loop's bookkeeping), at batch 16, after a warm-up step. Set to the count of the day:
# a budget can only go down. A change that needs more launches is a change to look at twice
# (every launch costs host time on a GPU); lower the budget when a change saves some.
# History (docs/performance.md, "Kernel launches per training step"): 332, 160, 298 when first
# counted; the optimizer's step fused to one kernel per parameter, the loss to five kernels
# forward and one backward, col2im as a gather on the GPU: 165, 103, 233; max and average pooling
# in one fused kernel each way: 91, 93, 223; the sigmoid and its gradient one kernel each: 71, 73, 203;
# BatchNorm's fused form (8 kernels forward, 4 backward): 71, 73, 123.
BUDGET = {"classic": 71, "d2l": 73, "batchnorm": 123}


@pytest.fixture()
def on_standin():
    """Device "cuda" is the stand-in for the test (also where a GPU is present: the counts
    are the stand-in's)."""
    previous = backend.use_cuda_module(cs.module)
    try:
        yield sp
    finally:
        backend.use_cuda_module(previous)


def dev(a):
    return sp.asarray(np.asarray(a))


# -- the counter counts -----------------------------------------------------------------------------
def test_an_elementwise_operation_is_one_launch(on_standin):
    a, b = sp.ones((4, 5), dtype=np.float32), sp.ones((4, 5), dtype=np.float32)
    with cs.count_launches() as launches:
        c = a + b
    assert launches == {"add": 1}
    with cs.count_launches() as launches:
        c += 1
        sp.exp(c, out=c)
        a[:, 1:] += a[:, :-1]                 # an input overlapping the output is copied first
    assert launches == {"add": 1 + 2, "exp": 1}
    with cs.count_launches() as launches:
        sp.empty((3, 0), dtype=np.float32) * 2                     # nothing to compute
        sp.empty(5)
    assert not launches


def test_creation_copies_and_views(on_standin):
    a = sp.ones((6, 4), dtype=np.float32)
    with cs.count_launches() as launches:
        sp.zeros(3), sp.ones(3), sp.full(3, 2.0), sp.arange(4)
    assert launches == {"zeros": 1, "ones": 1, "full": 1, "arange": 1}
    with cs.count_launches() as launches:
        a.reshape(4, 6), a.T, a[1:, ::2], a.astype(np.float32, copy=False), sp.ascontiguousarray(a)
    assert not launches                                            # views, no copies
    with cs.count_launches() as launches:
        a.T.reshape(-1)                                            # no view possible: a copy
        a.astype(np.float64)
        a.copy()
        sp.ascontiguousarray(a.T)
        dev(np.zeros(3))                                           # host -> device
    assert launches == {"reshape": 1, "astype": 1, "copy": 1, "ascontiguousarray": 1, "asarray(host)": 1}


def test_reductions_count_cubs_kernels(on_standin):
    small, big = sp.ones((4, 8), dtype=np.float32), sp.ones((64, 1024), dtype=np.float32)
    with cs.count_launches() as launches:
        small.sum()
    assert launches == {"sum": 1}                                  # CUB DeviceReduce, one tile
    with cs.count_launches() as launches:
        big.sum()
    assert launches == {"sum": 2}                                  # two passes
    with cs.count_launches() as launches:
        big.sum(axis=1), big.sum(axis=0), small.max(axis=1, keepdims=True)
    assert launches == {"sum": 2, "max": 1}                        # segmented; CuPy's kernel
    with cs.count_launches() as launches:
        small.mean(), small.argmax(), small.argmax(axis=1)
    assert launches == {"mean": 2, "argmax": 3}                    # + true_divide; + the key's astype


def test_matrix_products_count_their_copies(on_standin):
    a, b = sp.ones((8, 16), dtype=np.float32), sp.ones((16, 4), dtype=np.float32)
    with cs.count_launches() as launches:
        a @ b, a @ a.T, sp.matmul(b.T, a.T)                        # C- or F-contiguous: no copy
    assert launches == {"matmul": 3}
    with cs.count_launches() as launches:
        a[:, ::2] @ b[::2]                                         # neither: both copied
    assert launches == {"matmul": 3}


def test_fancy_indexing_and_scatter_count_several_kernels(on_standin):
    x = sp.ones((2, 3, 6, 6), dtype=np.float32)
    i = [dev(np.arange(2)[:, None, None, None]), dev(np.arange(3)[None, :, None, None]),
         dev(np.zeros((1, 1, 2, 2), dtype=np.int64)), dev(np.ones((1, 1, 2, 2), dtype=np.int64))]
    g = sp.ones((2, 3, 2, 2), dtype=np.float32)
    with cs.count_launches() as launches:
        sp.add.at(x, tuple(i), g)
    assert launches == {"add.at": 4 + 2}                           # fill, 4 index kernels, scatter
    with cs.count_launches() as launches:
        sp.add.at(x, tuple(i), 1.0)
    assert launches == {"add.at": 4 + 3}                           # + the scalar made an array
    with cs.count_launches() as launches:
        x[i[0]], x[i[0], i[1]]
    assert launches == {"getitem[int]": 1 + 4}
    idx, y = dev(np.zeros((2, 1), dtype=np.int64)), sp.ones((2, 5))
    with cs.count_launches() as launches:
        sp.take_along_axis(y, idx, axis=1)
    assert launches == {"take_along_axis": 5}                      # arange, fill, 2 index kernels, take
    with cs.count_launches() as launches:
        x[...] = 0
        x[...] = x
        x[x > -1], x[x > 1]                                       # every element; none: no gather
    assert launches == {"setitem[fill]": 1, "greater": 2, "getitem[mask]": 2 + 1}    # scan + gather; scan


def test_a_fused_call_is_one_launch(on_standin):
    def swish_grad(x, g):
        s = 1 / (1 + sp.exp(-x))
        return g * s * (1 + x * (1 - s))
    x, g = sp.ones(10, dtype=np.float32), sp.ones(10, dtype=np.float32)
    with cs.count_launches() as plain:
        expected = swish_grad(x, g)
    assert sum(plain.values()) == 9
    for fused in (sp.fuse(swish_grad), sp.fuse(kernel_name="swish")(swish_grad)):
        with cs.count_launches() as launches:
            got = fused(x, g)
        assert launches == {f"fuse:{fused.name}": 1}
        np.testing.assert_array_equal(sp.asnumpy(got), sp.asnumpy(expected))
    with cs.count_launches() as launches:
        out = sp.fuse(lambda x, y: x * y + 1)(np.ones(3), 2.0)     # no device array: plain Python
    assert not launches and isinstance(out, np.ndarray)


# -- the pieces that keep a step short --------------------------------------------------------------
def _scaled_sum(xp):
    def scaled_sum(a, b, scale):
        c = a * scale
        c += b
        return xp.sum(c * c, axis=1)
    return scaled_sum


def test_fused_is_one_launch_on_the_device_and_the_plain_function_on_numpy(on_standin):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    expected = ((a * 0.5 + b) ** 2).sum(axis=1)
    f = backend.fused(_scaled_sum)
    assert backend.fused(_scaled_sum) is f                         # built once
    with cs.count_launches() as launches:
        got = f(a, b, 0.5)
    assert not launches and isinstance(got, np.ndarray)
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    a, b = dev(a), dev(b)
    with cs.count_launches() as launches:
        got = f(a, b, 0.5)
    assert launches == {"fuse:scaled_sum": 1}
    np.testing.assert_allclose(sp.asnumpy(got), expected, rtol=1e-15)


def small_net_on_device():
    net = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 2)).to("cuda")
    for p in net.parameters():
        p.grad = dev(np.ones(p.shape, dtype=np.float32))
    return net


@pytest.mark.parametrize("make", [
    lambda ps: optim.Adam(ps), lambda ps: optim.Adam(ps, weight_decay=0.1),
    lambda ps: optim.SGD(ps, lr=0.1), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.5),
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1)])
def test_an_optimizer_step_is_one_kernel_per_parameter_and_reads_nothing(on_standin, make):
    net = small_net_on_device()
    params = list(net.parameters())
    opt = make(params)
    for step in range(2):                                          # the first step, then the steady one
        with cs.count_launches() as launches, cs.count_host_reads() as reads:
            opt.step()
        if step == 0:                                              # Adam's state: two zero arrays each
            assert launches.pop("zeros_like", 0) in (0, 2 * len(params))
        assert sum(launches.values()) == len(params) and all(k.startswith("fuse:") for k in launches), launches
        assert not reads


def test_the_loss_is_five_kernels_forward_and_one_backward(on_standin):
    rng = np.random.default_rng(0)
    z = dev(rng.standard_normal((16, 10)).astype(np.float32))
    y = dev(rng.integers(0, 10, 16))                                 # int64, as the batches are
    loss_fn = nn.CrossEntropyLoss()
    loss_fn.forward(z, y)                                          # the first: K's indices, the range array
    with cs.count_launches() as forward, cs.count_host_reads() as reads:
        loss_fn.forward(z, y)
    assert forward == {"max": 1, "minimum.at": 1, "maximum.at": 1, "fuse:log_sum_exp": 1,
                       "fuse:label_term_mean": 1}
    with cs.count_launches() as backward:
        loss_fn.backward()
    assert backward == {"fuse:softmax_minus_onehot": 1}
    assert not reads


@pytest.mark.parametrize("k,s,p", [(2, 1, 0), (5, 1, 2), (5, 2, 1), (3, 3, 0)])
def test_col2im_gather_is_three_kernels_whatever_the_kernel_size(on_standin, k, s, p):
    """col2im's loop is KH*KW strided additions (25 kernels for LeNet's 5x5); the gather is a
    zero array, one strided copy and one sum, for every kernel size."""
    cols = dev(np.ones((6, k, k, 4, 3, 3), dtype=np.float32)).transpose(0, 3, 1, 2, 4, 5)   # as conv's
    with cs.count_launches() as launches:
        col2im_gather(cols, (6, 4, (3 - 1) * s + k - 2 * p, (3 - 1) * s + k - 2 * p), s, s, p, p)
    assert launches == {"zeros": 1, "setitem[copy]": 1, "sum": 1}


@pytest.mark.parametrize("cls", [nn.MaxPool2d, nn.AvgPool2d])
@pytest.mark.parametrize("k,s,hw", [(2, 2, 8), (2, 3, 8), (3, 3, 7)])
def test_pooling_on_the_gpu_is_one_kernel_each_way(on_standin, cls, k, s, hw):
    """Where the windows neither overlap nor reach into padding, a pooling layer is one fused
    kernel forward and one backward, with a zero fill first where some pixels lie in no
    window (the plain forms: about 40 launches per max pooling, 10 per average pooling)."""
    pool = cls(k, s)
    x = dev(np.random.default_rng(0).standard_normal((2, 3, hw, hw)).astype(np.float32))
    with cs.count_launches() as forward:
        y = pool(x)
    g = sp.ones_like(y)
    with cs.count_launches() as backward:
        pool.backward(g)
    name = "max_pool" if cls is nn.MaxPool2d else "avg_pool"
    assert forward == {f"fuse:{name}_forward": 1}
    tiles = s == k and hw % k == 0
    backward_kernel = "fuse:max_pool_route" if cls is nn.MaxPool2d else "fuse:avg_pool_spread"
    assert backward == ({backward_kernel: 1} if tiles else {"zeros": 1, backward_kernel: 1})


def test_the_fused_functions_fuse_in_real_cupy():
    """Real CuPy (14.2) traces each fused function of lenet_np with its fusion (cupy.fuse's
    first try; it would fall back to a slower path or fail on a GPU only): on fake device
    arrays, so no GPU is needed. Checks that the functions use only what fusion takes (no
    keepdims, one reduction, ufuncs and in-place operators) and that in-place writes reach
    the arrays they are meant to."""
    cupy = pytest.importorskip("cupy")
    try:
        from cupy._core import fusion
        history_cls, local = fusion._FusionHistory, fusion._thread_local
        unowned, pointer = cupy.cuda.UnownedMemory, cupy.cuda.MemoryPointer
    except (ImportError, AttributeError):
        pytest.skip("another CuPy: its fusion's internals differ from 14.2's")
    address = [1 << 20]

    def fake(shape, dtype=np.float32):
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        memory = unowned(address[0], size, None, device_id=0)
        address[0] += size + 4096
        return cupy.ndarray(shape, dtype, memptr=pointer(memory, 0))

    def trace(build, options, args):
        history = history_cls()
        local.history, local.is_old_fusing = history, True
        try:
            kernel, _ = history.get_fusion(build(cupy, *options), args, build.__name__.lstrip("_"))
        finally:
            local.history, local.is_old_fusing = None, False
        # an operation between two Python numbers is typed by the smallest type that holds them
        # (1 - 0.1 in float16, where(c, 0, 0) in int8): every kernel computes in its arrays' types
        code = history._emit_operation_code() + "".join(
            [v.declaration() for v in history.postmap_local_list] +
            [op.declaration_args() for op in history.postmap_op_list])
        assert not re.findall(r"\b(float16|signed char)\b", code), (build.__name__, code)
        return kernel

    p, g, m, v = (fake((16, 6, 5, 5)) for _ in range(4))
    for decay in (False, True):
        kernel = trace(optim._adam_step, (decay,), (p, g, m, v, 0.1, 0.1, 0.999, 0.001, 1e-3, 0.5, 1e-8))
        written = [q.name for q in kernel.in_params if not q.is_const]
        assert written == ["v0", "v2", "v3"]                       # p, m, v: not the gradient
    for decay, momentum, nesterov, first in [(False, False, False, False), (True, True, True, True),
                                            (True, True, False, False), (False, True, True, False)]:
        trace(optim._sgd_step, (decay, momentum, nesterov, first), (p, g, m if momentum else None, 0.1, 0.1, 0.9, 1.0))
    z, shift, log_sum = fake((16, 10)), fake((16, 1)), fake((16, 1))
    classes = fake((10,), np.int64)
    for labels in (fake((16, 1), np.int64), fake((16, 1), np.uint8)):
        assert type(trace(loss_module._log_sum_exp, (), (z, shift))).__name__ == "ReductionKernel"
        assert type(trace(loss_module._label_term_mean, (), (z, shift, log_sum, labels, classes, 16))).__name__ \
            == "ReductionKernel"
        assert type(trace(loss_module._softmax_minus_onehot, (), (z, shift, log_sum, labels, classes, 0.5))).__name__ \
            == "ElementwiseKernel"
    assert type(trace(activation._sigmoid, (), (fake((16, 6, 24, 24)),))).__name__ == "ElementwiseKernel"
    assert type(trace(activation._sigmoid_grad, (), (fake((16, 6, 24, 24)), fake((16, 6, 24, 24))))).__name__ \
        == "ElementwiseKernel"
    x, g4 = fake((16, 6, 24, 24)), fake((16, 6, 24, 24))
    axes, per_channel = (0, 2, 3), [fake((1, 6, 1, 1)) for _ in range(5)]
    for build, options, args in ((bn_fast._channel_sum, (axes,), (x,)),
                                 (bn_fast._centred_sum, (axes,), (x, per_channel[0], 9216)),
                                 (bn_fast._centred_square, (axes,), (x, per_channel[0], 9216)),
                                 (bn_fast._channel_dot, (axes,), (g4, x))):
        assert type(trace(build, options, args)).__name__ == "ReductionKernel", build
    c = [fake((6,)) for _ in range(4)]
    assert len(trace(bn_fast._mean_var, (), (*c[:3], 9216)).out_params) == 4
    assert type(trace(bn_fast._inv_std, (), (c[0], 1e-5))).__name__ == "ElementwiseKernel"
    running = trace(bn_fast._running, (), (*c, 0.1, 0.9, 1.001))
    assert [q.name for q in running.in_params if not q.is_const] == [q.name for q in running.in_params][:2]
    for affine, bias in ((True, True), (True, False), (False, False)):
        normalize = trace(bn_fast._normalize, (affine, bias), (x, *per_channel[:3], *per_channel[3:3 + affine + bias]))
        assert len(normalize.out_params) == 2 and all(q.is_const for q in normalize.in_params)
        trace(bn_fast._input_grad, (affine,), (g4, x, *per_channel[:2], 9216, *per_channel[2:3 + affine]))
    x, dx = fake((16, 6, 24, 24)), fake((16, 6, 24, 24))
    arg, g = fake((16, 6, 12, 12), np.uint8), fake((16, 6, 12, 12))
    slices = [x[..., i::2, j::2] for i in range(2) for j in range(2)]
    dslices = [dx[..., i::2, j::2] for i in range(2) for j in range(2)]
    trace(pooling._max_pool_forward, ("int32",), slices)           # a kernel area over 256
    forward = trace(pooling._max_pool_forward, ("uint8",), slices)
    assert type(forward).__name__ == "ElementwiseKernel" and len(forward.out_params) == 2
    assert all(q.is_const for q in forward.in_params)              # the input is only read
    assert type(trace(pooling._avg_pool_forward, (4,), slices)).__name__ == "ElementwiseKernel"
    for build, options, args in ((pooling._max_pool_route, (), (arg, g, *dslices)),
                                 (pooling._avg_pool_spread, (4,), (g, *dslices))):
        kernel = trace(build, options, args)
        written = [q.name for q in kernel.in_params if not q.is_const]
        assert written == [q.name for q in kernel.in_params][-4:]   # the four slices of dL/dx, nothing else


# -- launches per training step ---------------------------------------------------------------------
def step_launches(variant):
    """Launches of one training step of ``variant`` (its recipe: Adam for the classic network,
    SGD for d2l and batchnorm), phase by phase, as ``training.train_epoch`` runs it: the
    batch cut from the device's images, forward, loss, backward, optimizer step, and the
    loop's bookkeeping (the loss kept on the device, the correct predictions counted)."""
    state = training.start(dict(training.defaults_for(variant), batch_size=BATCH), "cuda")
    rng = np.random.default_rng(0)
    images = dev(rng.integers(0, 256, (4 * BATCH, 28, 28), dtype=np.uint8))
    labels = dev(rng.integers(0, 10, 4 * BATCH).astype(np.uint8))
    model, opt, loss_fn = state.model, state.optimizer, state.loss_fn
    losses, correct = sp.zeros(4, dtype=np.float64), sp.zeros((), dtype=np.int64)
    batches = iterate_batches(images, labels, BATCH, shuffle=True, rng=state.data_rng)
    phases = collections.OrderedDict()

    @contextlib.contextmanager
    def phase(name):
        with cs.count_launches() as launches:
            yield
        phases[name] = launches

    for step in range(2):                                          # a warm-up step, then the one counted
        phases.clear()
        with phase("batch"):
            x, y = next(batches)
        with phase("forward"):
            opt.zero_grad()
            logits = model(x)
        with phase("loss"):
            loss = loss_fn.forward(logits, y)
        with phase("backward"):
            model.backward(loss_fn.backward(), input_grad=False)
        with phase("optimizer"):
            opt.step()
        with phase("bookkeeping"):
            losses[step] = loss * len(y)
            correct += (logits.argmax(axis=1) == y).sum()
    return phases


def report(variant, phases):
    total = collections.Counter()
    for launches in phases.values():
        total.update(launches)
    lines = [f"{variant}: {sum(total.values())} launches per step (batch {BATCH})"]
    lines += [f"  {name:12s} {sum(c.values()):4d}  " + ", ".join(f"{k} {v}" for k, v in c.most_common())
              for name, c in phases.items()]
    lines.append("  by kind: " + ", ".join(f"{k} {v}" for k, v in total.most_common()))
    return "\n".join(lines)


@pytest.mark.parametrize("variant", sorted(BUDGET))
def test_launches_per_training_step_within_budget(on_standin, variant):
    phases = step_launches(variant)
    total = sum(sum(c.values()) for c in phases.values())
    print(report(variant, phases))
    assert total <= BUDGET[variant], (f"{total} launches per step, over the budget of {BUDGET[variant]}:\n"
                                      + report(variant, phases))


def test_the_counted_step_is_the_training_loops(on_standin):
    """The step above is train_epoch's: an epoch of 4 steps launches 2 steps more than one of 2
    (the epoch's own launches, its shuffle and its final checks, are the same in both)."""
    state = training.start(dict(training.defaults_for("classic"), batch_size=BATCH), "cuda")
    rng = np.random.default_rng(0)
    data = {n: (dev(rng.integers(0, 256, (n * BATCH, 28, 28), dtype=np.uint8)),
                dev(rng.integers(0, 10, n * BATCH).astype(np.uint8))) for n in (2, 4)}
    training.train_epoch(state, *data[2])                         # warm-up: the optimizer's state
    counts = {}
    for n in (2, 4):
        with cs.count_launches() as launches:
            training.train_epoch(state, *data[n])
        counts[n] = sum(launches.values())
    per_step = (counts[4] - counts[2]) / 2
    counted = sum(sum(c.values()) for c in step_launches("classic").values())
    assert per_step == counted, f"train_epoch: {per_step} per step, the counted step: {counted}"
