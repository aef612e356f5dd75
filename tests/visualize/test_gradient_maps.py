"""gradient_maps.png, the backward twin of feature_maps.png: its numbers are those of
``lenet_np.backprop`` in evaluation mode, it draws them (one panel per channel, a strip per
vector, bars for dL/dlogits), and it shows max pooling's routing and the sigmoid's shrinking."""

from __future__ import annotations

import numpy as np
import pytest

from lenet_np import LeNet
from lenet_np.backprop import backprop
from lenet_np.visualize import draw_gradient_maps, input_gradients, layer_gradients, mosaic
from lenet_np.visualize.plotting import save

from .helpers import assert_picture

VARIANTS = [{}, {"activation": "relu"}, {"variant": "d2l"}, {"variant": "batchnorm"}]


def one_image(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.random((1, 1, 28, 28)).astype(dtype), np.array([int(rng.integers(0, 10))])


def trained_a_little(dtype=np.float32, **kw):
    """A network a few SGD steps away from its initialisation (BatchNorm's running statistics moved)."""
    net = LeNet(seed=1, dtype=dtype, **kw)
    rng = np.random.default_rng(2)
    x, y = rng.random((16, 1, 28, 28)).astype(dtype), rng.integers(0, 10, 16)
    from lenet_np.nn import CrossEntropyLoss
    from lenet_np.optim import SGD
    loss_fn, opt = CrossEntropyLoss(), SGD(net.parameters(), lr=0.5)
    for _ in range(3):
        opt.zero_grad()
        loss_fn(net(x), y)
        net.backward(loss_fn.backward(), input_grad=False)
        opt.step()
    return net


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: "-".join(kw.values()) or "classic")
def test_layer_gradients_are_backprops_in_evaluation_mode(kw):
    """In float64, where backprop's walk and net.backward (which may take other paths, e.g. the
    evaluation order) agree to rounding, far below any difference of mode or image."""
    net = trained_a_little(np.float64, **kw)
    x, y = one_image(dtype=np.float64)
    rows = layer_gradients(net, x, y)
    assert net.training and all(p.grad is None or not p.grad.any() for p in net.parameters())   # left as found
    net.eval()
    expected = backprop(net, x, y)
    net.train()
    assert [(n, t) for n, t, _ in rows] == [("input", "")] + [(p.name, type(p.layer).__name__) for p in expected.layers]
    np.testing.assert_array_equal(rows[0][2], expected.input_grad)
    for (name, _, grad), layer in zip(rows[1:], expected.layers):
        np.testing.assert_array_equal(grad, layer.grad, err_msg=name)
    # the top row is saliency's gradient of the same image (one image: its loss is the batch's)
    saliency = input_gradients(net, x, y)[0]
    np.testing.assert_allclose(rows[0][2], saliency, rtol=0, atol=1e-9 * np.abs(saliency).max())
    if kw.get("variant") == "batchnorm":           # evaluation mode: the running statistics, not the batch's
        net.train()
        training = backprop(net, np.concatenate([x, x[:, :, ::-1]]), np.concatenate([y, y]))
        assert not np.allclose(training.input_grad[:1] * 2, rows[0][2], rtol=1e-3)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_max_pooling_passes_each_window_gradient_to_one_pixel(activation):
    """In the classic network, dL/d(the pooling's input) is nonzero in at most one pixel of every
    2x2 window, and in exactly one where the window's gradient is nonzero."""
    net = trained_a_little(activation=activation)
    x, y = one_image(3)
    grads = {name: g for name, _, g in layer_gradients(net, x, y)}
    for before, pooled in (("conv.1", "conv.2"), ("conv.4", "conv.5")):
        g = grads[before][0]                                     # (C, H, W)
        c, h, w = g.shape
        per_window = np.count_nonzero(g.reshape(c, h // 2, 2, w // 2, 2), axis=(2, 4))
        assert per_window.max() == 1, before
        np.testing.assert_array_equal(per_window, grads[pooled][0] != 0, err_msg=before)
        assert per_window.sum() > c * (h // 2) * (w // 2) // 2, before            # not vacuous: most windows
    # a sigmoid multiplies the gradient by y(1 - y) <= 1/4 on its way back
    if activation == "sigmoid":
        for act, conv in (("conv.1", "conv.0"), ("conv.4", "conv.3"), ("fc.1", "fc.0"), ("fc.3", "fc.2")):
            assert np.abs(grads[conv]).max() <= np.abs(grads[act]).max() / 4 * (1 + 1e-6), conv


def drawn(fig):
    """{axes label: (image array or bar heights, axes)} of the figure's labelled axes."""
    out = {}
    for ax in fig.axes:
        if ax.get_label() and ax.get_images():
            out[ax.get_label()] = (ax.get_images()[0], ax)
        elif ax.get_label() and ax.patches:
            out[ax.get_label()] = ([p.get_height() for p in ax.patches], ax)
    return out


def test_the_picture_draws_backprops_numbers(tmp_path):
    net = trained_a_little()
    x, y = one_image(4)
    label = int(y[0])
    fig = draw_gradient_maps(net, x[0], label, "test images, image #4")
    rows = {name: g for name, _, g in layer_gradients(net, x, y)}
    shown = drawn(fig)
    assert sorted(shown) == sorted(set(rows) - {"flatten"})
    for name, g in rows.items():
        if name == "flatten":
            continue
        what, ax = shown[name]
        title = ax.get_title(loc="left")
        if name == "fc.4":                                       # dL/dlogits = softmax - one-hot, as bars
            np.testing.assert_allclose(what, g[0], rtol=0, atol=0)
            assert title.startswith("fc.4 Linear(in_features=84, out_features=10, bias=True): dL/dlogits")
            continue
        expected = mosaic(g[0]) if g.ndim == 4 else g[0][None, :]
        data = np.ma.filled(what.get_array().astype(np.float64), np.nan)
        np.testing.assert_array_equal(data, expected, err_msg=name)
        vmax = float(np.abs(g).max())
        assert what.norm.vmin == -vmax and what.norm.vmax == vmax, name                # symmetric about 0
        assert what.get_cmap().name.startswith("RdBu_r"), name
        assert f"|.|max {vmax:.1e}" in title, name
    title = shown["conv.2"][1].get_title(loc="left")
    assert title.startswith("conv.2 MaxPool2d(kernel_size=2, stride=2, padding=0) (6, 12, 12)")
    assert "nonzero 25%: max pooling (conv.2) sends each 2x2 window's gradient to its maximum only" in \
        shown["conv.1"][1].get_title(loc="left")
    assert "of conv.1's: the sigmoid's y(1 - y) <= 1/4 shrinks it" in shown["conv.0"][1].get_title(loc="left")
    assert shown["input"][1].get_title(loc="left").startswith("input: dL/dimage (saliency) (1, 28, 28)")
    assert "for the cross-entropy of the TRUE class" in fig.get_suptitle()
    assert_picture(save(fig, tmp_path / "gradient_maps.png"), min_w=1000, min_h=1000)     # plot_gradient_maps
