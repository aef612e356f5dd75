"""python -m lenet_np.trace: the records are the network's own forward and backward; checkpoints and data."""

from __future__ import annotations

import numpy as np
import pytest

from lenet_np import LeNet, nn, visualize
from lenet_np import trace as trace_mod

from .helpers import exit_status, save_checkpoint, write_fake_fashion_mnist


# -- trace ------------------------------------------------------------------------------------
def test_trace_main_without_data(capsys, no_data):
    assert trace_mod.main(["--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "random images" in out and "freshly initialised" in out
    assert "FORWARD" in out and "BACKWARD" in out
    assert "(2, 16, 4, 4)" in out and "(2, 256)" in out and "CrossEntropyLoss" in out
    assert "weight (6, 1, 5, 5)" in out                          # conv.0's parameter gradient


@pytest.mark.parametrize("activation,pool", [("sigmoid", "max"), ("relu", "avg")])
def test_trace_records_match_backward(activation, pool):
    net = LeNet(activation=activation, pool=pool, seed=2)
    rng = np.random.default_rng(0)
    x = rng.random((3, 1, 28, 28), dtype=np.float32)
    y = np.array([1, 5, 9])
    records = trace_mod.trace(net, x, y)
    loss_rec = next(r for r in records if r["phase"] == "loss")
    traced = {k: v for r in records if r["phase"] == "backward" for k, v in r["params"].items()}
    dx_traced = records[-1]

    loss_fn = nn.CrossEntropyLoss()
    net.zero_grad()
    assert abs(loss_fn(net(x), y) - loss_rec["value"]) < 1e-6
    dx = net.backward(loss_fn.backward())
    assert dx_traced["shape"] == dx.shape == (3, 1, 28, 28)
    assert abs(dx_traced["norm"] - np.linalg.norm(dx.astype(np.float64))) <= 1e-5 * dx_traced["norm"]
    assert set(traced) == {name for name, _ in net.named_parameters()}
    for name, p in net.named_parameters():
        assert traced[name]["shape"] == p.shape
        assert abs(traced[name]["norm"] - np.linalg.norm(p.grad.astype(np.float64))) <= 1e-5 * traced[name]["norm"]
    fwd = [r for r in records if r["phase"] == "forward"]
    assert [r["name"] for r in fwd] == ["input", *(f"conv.{i}" for i in range(6)), "flatten",
                                        *(f"fc.{i}" for i in range(5))]
    for r in fwd:
        assert r["min"] <= r["mean"] <= r["max"] and r["std"] >= 0


def test_trace_with_checkpoint(capsys, tmp_path, no_data):
    path = tmp_path / "relu.npz"
    saved = save_checkpoint(path, "relu", "avg", seed=5)
    assert trace_mod.main(["--checkpoint", str(path), "--batch-size", "2"]) == 0
    out = capsys.readouterr().out
    assert "activation='relu', pool='avg'" in out and "epoch 2" in out and "ReLU" in out
    net, _ = trace_mod.build_network(path)
    for (name, a), (_, b) in zip(net.state_dict().items(), saved.state_dict().items()):
        assert np.array_equal(a, b), name
    # the checkpoint decides the architecture: a contradicting option is an error
    assert trace_mod.main(["--checkpoint", str(path), "--activation", "sigmoid"]) == 1
    err = capsys.readouterr().err
    assert "activation='relu'" in err and "Traceback" not in err


@pytest.mark.parametrize("content", [None, b"not a zip file", b"PK\x03\x04 truncated"])
def test_trace_bad_checkpoint(capsys, tmp_path, content):
    path = tmp_path / "bad.npz"
    if content is not None:
        path.write_bytes(content)
    assert exit_status(trace_mod.main, ["--checkpoint", str(path)]) == (2 if content is None else 1)
    err = capsys.readouterr().err
    last = err.splitlines()[-1]
    if content is None:
        assert err == f"python -m lenet_np.trace: error: argument --checkpoint: {path}: no such file (see --help)\n"
    else:
        assert last.startswith(f"error: checkpoint {path}") and "Traceback" not in last


def test_trace_and_visualize_refuse_a_data_dir_without_data(capsys, tmp_path):
    """An existing --data-dir that lacks the files is an error, not random images."""
    ck = tmp_path / "lenet.npz"
    save_checkpoint(ck)
    (tmp_path / "empty").mkdir()
    assert trace_mod.main(["--data-dir", str(tmp_path / "empty")]) == 1
    assert visualize.main(["--checkpoint", str(ck), "--out", str(tmp_path / "out"),
                           "--data-dir", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0] == err[1]
    assert err[0].startswith(f"error: Fashion-MNIST not found in {tmp_path / 'empty'} (the data_dir argument): "
                             "missing train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                             "t10k-labels-idx1-ubyte (each gzipped or not); run `make data`")


def test_trace_batch_larger_than_the_test_set(capsys, tmp_path):
    data_dir = write_fake_fashion_mnist(tmp_path / "data", n_test=40)
    assert trace_mod.main(["--batch-size", "100", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "batch: all 40 Fashion-MNIST test images (--batch-size 100 asked for more)" in out
    assert "(40, 10)" in out
    assert exit_status(trace_mod.main, ["--batch-size", "12000"]) == 2
    assert "argument --batch-size: expected a whole number from 1 to 10000, got '12000'" in capsys.readouterr().err
