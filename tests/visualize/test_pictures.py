"""The pictures' functions on their own: the numbers they draw (the initial network, mistakes,
saliency, the layers of any variant, the per-step metrics' positions), the mosaics, and each
picture drawn alone."""

from __future__ import annotations

import numpy as np
import pytest

from lenet_np import LeNet, checkpoint, metrics, train, visualize
from lenet_np.nn import CrossEntropyLoss
from lenet_np.visualize.predictions import pooling_grid_note
from tests.helpers import HISTORY
from tests.test_train import make_dataset

from .helpers import assert_picture, png_size, steps_rows


# -- the initial weights ----------------------------------------------------------------------------
def test_initial_weights_are_those_train_started_from(tmp_path):
    """A run with a vanishing learning rate ends where it started: the recreated initial
    network equals the trained one (and a wrong seed does not)."""
    data_dir = make_dataset(tmp_path / "data", n_train=32, n_test=8)
    ck = tmp_path / "still.npz"
    assert train.main(["--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "16", "--quiet", "--device",
                       "cpu", "--checkpoint", str(ck), "--seed", "11", "--lr", "1e-30", "--activation", "relu"]) == 0
    net, meta = checkpoint.load_network(ck)
    initial = visualize.initial_network(meta["settings"])
    assert initial.activation == "relu"
    changes = visualize.filter_changes(net, initial)
    assert [c[0] for c in changes] == [name for name, _ in visualize.conv_layers(net)]
    assert all(rel < 1e-6 for *_, rel in changes), [c[3] for c in changes]
    wrong = visualize.initial_network(dict(meta["settings"], seed=12))
    assert all(rel > 0.5 for *_, rel in visualize.filter_changes(net, wrong))
    assert visualize.initial_network({"activation": "relu"}) is None


def test_a_checkpoint_of_another_variant(tmp_path):
    """The architecture and the initial weights come from the checkpoint's settings."""
    try:
        saved = LeNet(variant="batchnorm", seed=4)
    except TypeError:                                           # a LeNet without variants
        pytest.skip("this LeNet has no variants")
    ck = tmp_path / "bn.npz"
    checkpoint.save(ck, saved, None, {"epoch": 0, "settings": {"variant": "batchnorm", "seed": 4}})
    net, meta = checkpoint.load_network(ck)
    assert visualize.describe(net) == "LeNet(variant='batchnorm', activation='sigmoid', pool='avg')"
    changes = visualize.filter_changes(net, visualize.initial_network(meta["settings"]))
    assert [(name, rel) for name, _, _, rel in changes] == [("net.0", 0.0), ("net.4", 0.0)]
    checkpoint.save(ck, saved, None, {"epoch": 0, "settings": {"variant": "seed"}})
    with pytest.raises(checkpoint.CheckpointError, match=f"checkpoint {ck} does not fit LeNet\\(variant='seed'\\)"):
        checkpoint.load_network(ck)


# -- the per-step metrics, placed and compared --------------------------------------------------------
def test_fractional_epochs_and_norm_ratios():
    rows = steps_rows(["conv.0.weight", "conv.0.bias", "fc.4.weight"])
    steps = metrics.steps_from_rows(rows)
    assert steps["step"].tolist() == [3, 6, 7, 9, 12, 14]
    # positions in epochs: the last step of epoch e is at e; 7 steps per epoch
    np.testing.assert_allclose(visualize.fractional_epochs(steps), np.array([3, 6, 7, 9, 12, 14]) / 7)
    r = visualize.norm_ratios(steps)
    assert (r["first"], r["last"]) == ("conv.0.weight", "fc.4.weight")
    assert r["ratio_first_row"] == pytest.approx(rows[0]["grad_norm:conv.0.weight"] / rows[0]["grad_norm:fc.4.weight"])
    # a file that starts at epoch 3 (e.g. the rows of a resumed run only): equal epochs assumed
    steps = {"epoch": np.array([3, 3, 4]), "step": np.array([25, 30, 40])}
    np.testing.assert_allclose(visualize.fractional_epochs(steps), [2.5, 3.0, 4.0])


# -- what is drawn ----------------------------------------------------------------------------
def test_most_confident_mistakes_ordering():
    probs = np.array([[0.9, 0.1, 0.0],     # 0: right
                      [0.2, 0.7, 0.1],     # 1: wrong, 0.7
                      [0.1, 0.0, 0.9],     # 2: wrong, 0.9
                      [0.5, 0.4, 0.1],     # 3: wrong, 0.5
                      [0.3, 0.0, 0.7],     # 4: wrong, 0.7 (tie with 1: the lower index first)
                      [0.0, 1.0, 0.0]])    # 5: right
    labels = np.array([0, 0, 1, 2, 1, 1])
    assert visualize.most_confident_mistakes(probs, labels, 10).tolist() == [2, 1, 4, 3]
    assert visualize.most_confident_mistakes(probs, labels, 2).tolist() == [2, 1]
    assert visualize.most_confident_mistakes(probs, probs.argmax(axis=1), 5).tolist() == []
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), 500)
    y = rng.integers(0, 10, 500)
    idx = visualize.most_confident_mistakes(p, y, 50)
    conf = p[idx, p[idx].argmax(axis=1)]
    assert np.all(np.diff(conf) <= 0) and np.all(p[idx].argmax(axis=1) != y[idx])
    wrong = np.flatnonzero(p.argmax(axis=1) != y)
    assert conf[-1] >= np.sort(p[wrong].max(axis=1))[-50]       # none more confident left out


def test_saliency_is_each_images_own_gradient():
    """input_gradients returns dL_i/dx_i of each image's own loss: the same as a batch of one."""
    net = LeNet(seed=5, activation="relu")
    rng = np.random.default_rng(1)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    y = np.array([4, 0, 9])
    grads, probs = visualize.input_gradients(net, x, y)
    assert net.training and all(p.grad is None for p in net.parameters())   # left as it was found
    loss_fn = CrossEntropyLoss()
    for i in range(3):
        net.eval()
        loss_fn(net(x[i:i + 1]), y[i:i + 1])
        alone = net.backward(loss_fn.backward())
        np.testing.assert_allclose(grads[i], alone[0], rtol=1e-4, atol=1e-9)
    np.testing.assert_allclose(probs, visualize.predict_proba(net, x), rtol=1e-6)
    idx = visualize.saliency_examples(np.eye(10)[[0, 1, 2, 3, 4, 5, 6]], np.array([0, 9, 2, 3, 9, 5, 6]))
    assert idx.tolist() == [0, 2, 3, 5, 1, 4]                   # 4 right, then 2 wrong


def test_layers_are_found_by_type_in_any_variant():
    variants = ["seed"]
    try:
        LeNet(variant="d2l")
        variants += ["d2l", "batchnorm"]
    except TypeError:                                           # a LeNet without variants
        pass
    x = np.random.default_rng(0).random((2, 1, 28, 28), dtype=np.float32)
    expected = {"seed": (["conv.0", "conv.3"], [(2, 6, 24, 24), (2, 16, 8, 8)]),
                "d2l": (["net.0", "net.3"], [(2, 6, 28, 28), (2, 16, 10, 10)]),
                "batchnorm": (["net.0", "net.4"], [(2, 6, 24, 24), (2, 16, 8, 8)])}
    for variant in variants:
        net = LeNet(seed=0) if variant == "seed" else LeNet(variant=variant, seed=0)
        names, shapes = expected[variant]
        assert [n for n, _ in visualize.conv_layers(net)] == names
        acts = visualize.conv_activations(net, x)
        assert [a[0] for a in acts] == names and [a[2].shape for a in acts] == shapes
        assert all(0 < a[2].min() and a[2].max() < 1 for a in acts)          # after the sigmoid
        outputs = visualize.layer_outputs(net, x)
        assert net.training                                     # evaluation mode only while drawing
        net.eval()
        np.testing.assert_allclose(outputs[-1][2], net(x), rtol=1e-5, atol=1e-6)


def test_plots_alone(tmp_path):
    """The picture functions on their own, also for a single epoch without per-step rows."""
    steps = {"epoch": np.array([1, 1]), "step": np.array([5, 10]), "loss": np.array([2.0, 1.5]),
             "grad_norms": {"conv.0.weight": np.array([1e-3, 0.0]), "fc.4.weight": np.array([0.1, 0.2])}}
    hist = metrics.epoch_rows(HISTORY[:1])
    assert_picture(visualize.plot_curves(hist, tmp_path / "c1.png", "test"))       # with steps: test_command
    assert_picture(visualize.plot_gradient_norms([("one", steps)], tmp_path / "g.png"))


def test_mosaics():
    m = visualize.mosaic(np.arange(8.0).reshape(2, 2, 2))
    assert m.shape == (2, 5) and np.isnan(m[:, 2]).all()
    assert m[:, :2].tolist() == [[0, 1], [2, 3]] and m[:, 3:].tolist() == [[4, 5], [6, 7]]
    g = visualize.grid_mosaic(np.arange(3 * 4.0).reshape(3, 2, 2), rows=2)
    assert g.shape == (5, 5) and g[3:, :2].tolist() == [[8, 9], [10, 11]] and np.isnan(g[3:, 3:]).all()
    w = np.arange(3 * 2 * 2 * 2.0).reshape(3, 2, 2, 2)          # (O=3, C=2, 2, 2)
    f = visualize.filter_mosaic(w)
    assert f.shape == (5, 8)
    assert f[3:, 3:5].tolist() == w[1, 1].tolist()               # row: input channel, column: output channel


@pytest.mark.parametrize("count", [1, 100])
def test_mistakes_grid_for_small_and_large_counts(tmp_path, count):
    rng = np.random.default_rng(0)
    images = rng.random((150, 1, 28, 28), dtype=np.float32)
    labels = np.zeros(150, np.int64)
    probs = rng.dirichlet(np.ones(10), 150)
    probs[:, 0] = 0                                             # all wrong
    w, h = png_size(visualize.plot_mistakes(images, labels, probs, tmp_path / "m.png", "test set", count))
    assert w >= 500                                # room for the title even for one image
    assert h <= 2600 and w <= 2000




def test_saliency_says_where_its_grid_comes_from():
    """Max pooling sends each window's gradient to one pixel: the caption says so where the
    network pools by the maximum (average pooling spreads it over the window)."""
    note = pooling_grid_note(LeNet(seed=0))
    assert "conv.2 passes each 2x2 window's gradient to one pixel" in note and "dL/d(conv.0's output)" in note
    assert "sum of 5x5 filter copies, one per window, about 2 pixels apart" in note
    assert "net.3 passes each 2x2 window" in pooling_grid_note(LeNet(variant="batchnorm", pool="max", seed=0))
    assert pooling_grid_note(LeNet(variant="d2l", seed=0)) == pooling_grid_note(LeNet(pool="avg", seed=0)) == ""
