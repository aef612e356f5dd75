"""The one predict, evaluate.predict: uint8 and float images, evaluation mode, bad input."""

from __future__ import annotations

import ast

import numpy as np
import pytest

from lenet_np import LeNet, data, evaluate, train, visualize

from .helpers import ROOT


# -- the one predict: evaluate.predict -----------------------------------------------------------
def by_hand(net, x, batch_size):
    """The logits of float images x, batch by batch, in evaluation mode (then the mode as it was)."""
    training = net.training
    net.eval()
    out = np.concatenate([net(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    net.train(training)
    return out


def test_predict_takes_uint8_as_training_does_and_floats_as_they_are():
    net = LeNet(seed=1, activation="relu")
    raw = np.random.default_rng(0).integers(0, 256, (37, 28, 28), dtype=np.uint8)
    fed, _ = next(data.iterate_batches(raw, np.zeros(37, np.uint8), 37))      # what training feeds the network
    assert np.array_equal(fed, raw[:, None].astype(np.float32) / np.float32(255))
    for batch_size in (1, 10, 37, 1000):
        expected = by_hand(net, fed, batch_size)
        for images in (raw, raw[:, None], fed):
            logits = evaluate.predict_logits(net, images, batch_size)
            assert logits.dtype == np.float32 and np.array_equal(logits, expected), (images.dtype, batch_size)
            assert np.array_equal(evaluate.predict(net, images, batch_size), expected.argmax(axis=1))
    labels = expected.argmax(axis=1)
    labels[:10] = (labels[:10] + 1) % 10
    assert evaluate.accuracy(net, raw, labels, 8) == 27 / 37


@pytest.mark.parametrize("training", [True, False])
def test_predict_runs_in_evaluation_mode_and_restores_the_mode(training):
    """Batch normalization uses (and keeps) its running statistics; the mode is as before, also after an error."""
    net = LeNet(variant="batchnorm", seed=0)
    net(np.random.default_rng(2).random((8, 1, 28, 28), dtype=np.float32))   # running statistics != start
    net.train(training)
    before = {k: np.copy(v) for k, v in net.state_dict().items()}
    x = np.random.default_rng(3).random((5, 1, 28, 28), dtype=np.float32)
    single = [evaluate.predict_logits(net, x[i:i + 1]) for i in range(5)]     # batches of one: no batch statistics
    assert np.array_equal(np.concatenate(single), by_hand(net, x, 1))
    assert all(m.training is training for _, m in net.named_modules())
    assert all(np.array_equal(before[k], v) for k, v in net.state_dict().items())
    with pytest.raises(ValueError, match="28, 28"):
        evaluate.predict(net, x[:, :, :20])
    assert all(m.training is training for _, m in net.named_modules())


@pytest.mark.parametrize("images,batch_size,message", [
    (np.zeros((0, 28, 28), np.uint8), 10, "predict: no images"),
    (np.zeros((3, 28, 28), np.uint8), 0, "predict: batch_size must be >= 1, got 0"),
])
def test_predict_bad_input(images, batch_size, message):
    with pytest.raises(ValueError, match=message):
        evaluate.predict(LeNet(), images, batch_size)


def test_there_is_one_predict():
    """train and visualize classify with evaluate's predict; evaluate imports nothing from train."""
    tree = ast.parse((ROOT / "lenet_np" / "evaluate.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "train" not in imported and not any(m and m.endswith(".train") for m in imported)
    assert train.accuracy is evaluate.accuracy and visualize.predict_logits is evaluate.predict_logits
    assert not hasattr(train, "predict") and not hasattr(visualize, "predict")
