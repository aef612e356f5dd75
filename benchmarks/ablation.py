"""What each CPU optimisation buys: every one switched off and on, timed in the same run.

``python -m benchmarks.ablation [--batch 256] [--repeats 7]``. Each row times a *before*
(the readable or earlier form) and an *after* (what lenet_np runs today), alternating, and
prints the medians and before/after. Values are float32 at the batch size of the book.
Rows that time a single layer use the input the layer sees in LeNet; the last rows time a
whole training step (forward, loss, backward, Adam). Nothing here is asserted: the machine
is shared, and the ratios, measured side by side, are what to read.
"""

from __future__ import annotations

import argparse
import contextlib

import numpy as np

import lenet_np as ln
from lenet_np import backend
from lenet_np.nn import activation
from lenet_np.nn.activation import sigmoid
from lenet_np.nn.fast import conv as conv_module
from lenet_np.nn.fast import pooling as fast_pooling
from lenet_np.nn.fast.pooling import backward_through
from lenet_np.nn.im2col import conv_transpose_wide, im2col_wide, image_bands, reusable
from lenet_np.parallel import DataParallel, default_workers

from .datasets import random_batch
from .report import fmt_time, md_table
from .timing import measure


def col2im_wide(dcols, x_shape_cnhw, kh, kw, ph=0, pw=0):
    """The adjoint of im2col_wide, written out: (C*KH*KW, N*OH*WP) -> (C, N, H, W), each
    kernel offset's columns added back onto the flat padded images. The two-step input
    gradient col2im_wide(Wm.T @ g) is what conv_transpose_wide does without the columns in
    between: the "before" side of its row here, and its oracle in tests/nn/test_im2col.py."""
    xp = backend.get_array_module(dcols)
    c, n, h, w = x_shape_cnhw
    hp, wp = h + 2 * ph, w + 2 * pw
    length = (hp - kh + 1) * wp
    dcols = dcols.reshape(c, kh, kw, n, length)
    flat = xp.zeros((c, n, hp * wp + kw - 1), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            flat[:, :, i * wp + j:i * wp + j + length] += dcols[:, i, j]
    return flat[:, :, :hp * wp].reshape(c, n, hp, wp)[:, :, ph:ph + h, pw:pw + w]


def naive_sigmoid(x):
    """The textbook form, with the overflow warnings of exp(-x) silenced."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def clipped_sigmoid(x):
    """The earlier in-place form: -x clipped at 88 before exp (five passes, no overflow)."""
    y = np.negative(x)
    np.minimum(y, 88.0, out=y)
    np.exp(y, out=y)
    y += 1
    np.reciprocal(y, out=y)
    return y


def fresh_image_bands(x_pad, kh, out=None):
    """image_bands into a new array every time (as before the band buffers were reused)."""
    return image_bands(x_pad, kh)


def never(*args):
    return False


def decline(pool, activation, grad):
    return None


def forward_backward(layer, x, g, input_grad=True):
    """One forward of ``layer`` on x and its backward of g, as a timer's callable."""
    def run():
        layer(x)
        layer.backward(g, input_grad=input_grad)
    return run


def training_step(net, model, x, y):
    loss_fn = ln.nn.CrossEntropyLoss()
    opt = ln.optim.Adam(net.parameters())

    def step():
        opt.zero_grad()
        loss_fn.forward(model(x), y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    return step


def rows(batch):
    rng = np.random.default_rng(0)
    conv_out = rng.standard_normal((batch, 6, 24, 24), dtype=np.float32)    # conv.0's output
    x, y = random_batch(batch)

    yield "sigmoid on conv.0's output", "1 / (1 + exp(-x))", "in place, 4 passes", \
        (lambda: naive_sigmoid(conv_out)), (lambda: sigmoid(conv_out))
    yield "sigmoid on conv.0's output", "clipped at 88, 5 passes", "unclipped, 4 passes", \
        (lambda: clipped_sigmoid(conv_out)), (lambda: sigmoid(conv_out))

    def sigmoid_pool_backward(joint):
        act, pool = ln.nn.Sigmoid(), ln.nn.MaxPool2d(2)
        g = rng.standard_normal((batch, 6, 12, 12), dtype=np.float32)
        pool(act(conv_out))
        if joint:
            return lambda: fast_pooling.backward_through(pool, act, g)
        return lambda: act.backward(pool.backward(g))
    yield "sigmoid + max pool backward (conv.1, conv.2)", "two steps", "backward_through", \
        sigmoid_pool_backward(False), sigmoid_pool_backward(True)

    def pool_pair(impl):
        g = rng.standard_normal((batch, 6, 12, 12), dtype=np.float32)
        return forward_backward(ln.nn.MaxPool2d(2, impl=impl), conv_out, g)
    yield "max pool 2x2, forward + backward", "reference (argmax)", "fast (offset loop)", \
        pool_pair("reference"), pool_pair("fast")

    pool_train, pool_eval = ln.nn.MaxPool2d(2), ln.nn.MaxPool2d(2).eval()
    yield "max pool forward in eval mode", "winners kept", "maximum only", \
        (lambda: pool_train(conv_out)), (lambda: pool_eval(conv_out))

    def conv_pair(impl):
        conv = ln.nn.Conv2d(6, 16, 5, rng=np.random.default_rng(1), impl=impl)
        xin = rng.random((batch, 6, 12, 12), dtype=np.float32)
        return forward_backward(conv, xin, rng.standard_normal((batch, 16, 8, 8), dtype=np.float32))
    yield "conv.3 (6->16, 5x5), forward + backward", "reference (one im2col product)", "fast (band form)", \
        conv_pair("reference"), conv_pair("fast")
    yield "conv.3 (6->16, 5x5), forward + backward", "wide im2col", "band form", \
        conv_pair("wide"), conv_pair("fast")

    def conv0_pair(band):
        conv = ln.nn.Conv2d(1, 6, 5, rng=np.random.default_rng(1), impl="band" if band else "wide")
        g = rng.standard_normal((batch, 6, 24, 24), dtype=np.float32)
        return forward_backward(conv, x, g, input_grad=False)
    yield "conv.0 (1->6, 5x5), forward + weight gradient", "wide im2col", "band form", \
        conv0_pair(False), conv0_pair(True)

    x_cnhw = rng.random((6, batch, 12, 12), dtype=np.float32)
    weight = rng.standard_normal((16, 6, 5, 5), dtype=np.float32)
    cols, _ = im2col_wide(x_cnhw, 5, 5)
    g = rng.standard_normal((16, cols.shape[1]), dtype=np.float32)
    yield "conv.3 input gradient", "col2im(Wm.T @ g)", "per kernel row", \
        (lambda: col2im_wide(weight.reshape(16, -1).T @ g, x_cnhw.shape, 5, 5)), \
        (lambda: conv_transpose_wide(weight, g, x_cnhw.shape))

    def lenet_step(workers=1):
        net = ln.LeNet(seed=0)
        model = DataParallel(net, workers) if workers > 1 else net
        return training_step(net, model, x, y)

    def lenet_eval(pool_first):
        net = ln.LeNet(seed=0, pool_first=pool_first).eval()
        return lambda: net(x)

    workers = default_workers()
    if workers > 1:
        # Each change of the second round switched off in the whole training step as the training
        # command runs it (DataParallel, one BLAS thread per worker), and in its evaluation.
        def dp_step(wide=False, two_steps=False, clipped=False, fresh_bands=False, train=True):
            net = ln.LeNet(seed=0)
            if wide:
                net.conv[3].impl = "wide"
            model = DataParallel(net, workers)
            run = training_step(net, model, x, y) if train else (lambda: model(x))
            if not train:
                net.eval()
            if not (clipped or fresh_bands or two_steps):
                return run

            def as_before():
                if clipped:
                    activation.sigmoid = clipped_sigmoid
                if fresh_bands:                  # the band form without its buffers from last time
                    conv_module.image_bands, conv_module.reusable = fresh_image_bands, never
                if two_steps:                    # every activation and pool back one at a time
                    fast_pooling.backward_through = decline
                try:
                    run()
                finally:
                    activation.sigmoid = sigmoid
                    fast_pooling.backward_through = backward_through
                    conv_module.image_bands, conv_module.reusable = image_bands, reusable
            return as_before

        where = f"DataParallel, {workers} threads"
        yield f"training step ({where})", "conv.3 wide im2col", "conv.3 band form", \
            dp_step(wide=True), dp_step()
        yield f"training step ({where})", "activation, pool: two backwards", "backward_through", \
            dp_step(two_steps=True), dp_step()
        yield f"training step ({where})", "sigmoid clipped, 5 passes", "4 passes", \
            dp_step(clipped=True), dp_step()
        yield f"training step ({where})", "band buffers new each forward", "written over", \
            dp_step(fresh_bands=True), dp_step()
        yield f"training step ({where})", "all four as before", "all four as now", \
            dp_step(wide=True, two_steps=True, clipped=True, fresh_bands=True), dp_step()
        yield f"evaluation forward ({where})", "conv.3 wide im2col", "conv.3 band form", \
            dp_step(wide=True, train=False), dp_step(train=False)
        yield f"evaluation forward ({where})", "band buffers new each forward", "written over", \
            dp_step(fresh_bands=True, train=False), dp_step(train=False)
    # the consumer times this row while the generator waits here, inside the limit
    with one_blas_thread():
        yield "LeNet forward in eval mode, one thread", "sigmoid then pool", "pool then sigmoid", \
            lenet_eval(False), lenet_eval(True)
    if workers > 1:
        yield "training step", "one thread (BLAS on all)", f"DataParallel, {workers} threads", \
            lenet_step(workers=1), lenet_step(workers=workers)


@contextlib.contextmanager
def one_blas_thread():
    from threadpoolctl import threadpool_limits
    with threadpool_limits(1, user_api="blas"):
        yield


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.ablation", description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=256, help="batch size (default: 256)")
    p.add_argument("--repeats", type=int, default=7, help="alternating samples of each side (default: 7)")
    args = p.parse_args(argv)
    table = []
    print(f"batch {args.batch}, float32, medians of {args.repeats} alternating samples")
    for name, before_label, after_label, before, after in rows(args.batch):
        res = measure({"before": before, "after": after}, repeats=args.repeats)
        b, a = res["before"].median, res["after"].median
        print(f"  {name}: {before_label} {fmt_time(b)} -> {after_label} {fmt_time(a)}  ({b / a:.2f}x)",
              flush=True)
        table.append([name, before_label, fmt_time(b), after_label, fmt_time(a), f"{b / a:.2f}x"])
    print()
    print(md_table(["what", "before", "time", "after", "time", "before/after"], table, align="llrlrr"))


if __name__ == "__main__":
    main()
