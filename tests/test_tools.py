"""The learner's tools: summary, gradcheck (command line), trace and visualize.

Each tool's ``main`` runs here as from the command line, on tiny self-made checkpoints
and, for the pictures, on a tiny self-made data set (or none at all)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import lenet_np
import lenet_np.gradcheck  # noqa: F401  (the module; lenet_np.gradcheck is the function)
from lenet_np import LeNet, checkpoint, nn, visualize
from lenet_np import summary as summary_mod
from lenet_np import trace as trace_mod

gc = sys.modules["lenet_np.gradcheck"]

HISTORY = [
    {"epoch": 1, "loss": 1.8, "train_acc": 0.33, "test_acc": 0.58, "time_sec": 10.0, "examples_per_sec": 6000.0},
    {"epoch": 2, "loss": 0.95, "train_acc": 0.63, "test_acc": 0.69, "time_sec": 10.0, "examples_per_sec": 6000.0},
]


def save_checkpoint(path, activation="sigmoid", pool="max", seed=0, history=HISTORY):
    net = LeNet(activation=activation, pool=pool, seed=seed)
    checkpoint.save(path, net, None, {"epoch": len(history), "settings": {"activation": activation, "pool": pool,
                                                                           "seed": seed}, "history": history})
    return net


def exit_status(main, argv):
    """main(argv)'s exit status, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# -- summary ----------------------------------------------------------------------------------
def test_summary_main(capsys):
    assert summary_mod.main([]) == 0
    out = capsys.readouterr().out
    assert "44,426" in out and "281,640" in out
    for name in ("conv.0: Conv2d", "conv.5: MaxPool2d", "flatten", "fc.4: Linear"):
        assert name in out
    assert summary_mod.main(["--batch-size", "256", "--activation", "relu", "--pool", "avg"]) == 0
    out = capsys.readouterr().out
    assert "[256, 16, 4, 4]" in out and "[256, 256]" in out and "ReLU" in out and "AvgPool2d" in out
    assert "72,099,840" in out                                  # 256 x 281,640


def test_summary_rows_are_the_real_shapes():
    net = LeNet(seed=1)
    rows = summary_mod.summary(net, batch_size=3)
    x = np.zeros((3, 1, 28, 28), dtype=np.float32)
    assert rows[-1]["output_shape"] == net(x).shape == (3, 10)
    assert {r["name"]: r["output_shape"] for r in rows}["conv.5"] == net.conv(x).shape
    assert sum(r["params"] for r in rows) == net.num_parameters() == 44_426
    assert summary_mod.summary(net.double(), 2)[0]["output_shape"] == (2, 6, 24, 24)   # float64 works too


def test_summary_bad_batch_size(capsys):
    assert exit_status(summary_mod.main, ["--batch-size", "0"]) == 2
    assert "argument --batch-size: expected a whole number >= 1, got '0'" in capsys.readouterr().err


def test_summary_of_a_huge_batch_allocates_nothing(capsys):
    """The shapes are computed: a batch of 10**12 costs nothing (a real forward would need petabytes)."""
    assert summary_mod.main(["--batch-size", str(10 ** 12)]) == 0
    out = capsys.readouterr().out
    assert f"[{10 ** 12}, 16, 4, 4]" in out and f"{281_640 * 10 ** 12:,}" in out


def test_summary_shapes_match_a_forward_pass_with_stride_and_padding():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1),
                        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 2 * 2, 5), nn.Sigmoid())
    x = np.zeros((2, 3, 15, 13), dtype=np.float32)
    rows = summary_mod.summary(seq, 2, (3, 15, 13))
    for row, layer in zip(rows, seq):
        x = layer(x)
        assert row["output_shape"] == x.shape, row["name"]


# -- gradcheck command line ------------------------------------------------------------------
def test_gradcheck_cli_one_layer(capsys):
    assert gc.main(["--layer", "linear", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("fc.0 Linear(256, 120)", "fc.2 Linear(120, 84)", "fc.4 Linear(84, 10)"):
        assert label in out
    assert "weight" in out and "bias" in out and "FAIL" not in out
    assert "All float64 errors are below 1e-06" in out


def test_gradcheck_cli_fails_on_a_wrong_backward(capsys, monkeypatch):
    right = nn.Sigmoid.backward

    def wrong(self, grad_out, input_grad=True):
        return right(self, grad_out, input_grad) * 1.001          # one part in a thousand

    monkeypatch.setattr(nn.Sigmoid, "backward", wrong)
    assert gc.main(["--layer", "sigmoid"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED" in out and "conv.1 Sigmoid()" in out


def test_gradcheck_cli_rows_show_both_dtypes():
    check = next(c for c in gc.make_checks(0) if c.layer == "conv")
    rows = gc.run_check(check)
    assert [r["tensor"] for r in rows] == ["input", "weight", "bias"]
    for r in rows:
        assert r["ok"] and r["float64"] < 1e-6
        assert r["float32"] > 100 * r["float64"]                # float32 is far coarser


def test_gradcheck_cli_whole_lenet_one_variant():
    check = next(c for c in gc.make_checks(1) if c.layer == "lenet")    # the seed's LeNet(sigmoid, max)
    rows = gc.run_check(check, seed=1)
    assert len(rows) == 11 and rows[0]["checked"] == 25
    assert all(r["ok"] for r in rows), [(r["tensor"], r["float64"]) for r in rows]


def test_gradcheck_steps_with_one_step_is_gradcheck():
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(2, 3, 3, rng=rng).double()
    x = rng.standard_normal((2, 2, 6, 6))
    assert gc.gradcheck_steps(layer, x, steps=(1e-6,), max_elements=20) == lenet_np.gradcheck(
        layer, x, eps=1e-6, max_elements=20)


def test_tie_free():
    for n in (1, 2, 7, 8):
        v = gc.tie_free(np.random.default_rng(0), (n,), spacing=0.1)
        assert len(np.unique(v)) == n and np.abs(v).min() >= 0.05 - 1e-12


def test_gradcheck_cli_arguments(capsys):
    assert exit_status(gc.main, ["--layer", "nonsense"]) == 2
    assert exit_status(gc.main, ["--layer", "loss", "--max-elements", "0"]) == 2
    assert exit_status(gc.main, ["--layer", "linear", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert "argument --max-elements: expected a whole number >= 1, got '0'" in err
    assert "argument --seed: expected a whole number >= 0, got '-1'" in err and "Traceback" not in err


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
    net, _ = trace_mod.load_network(path)
    for (name, a), (_, b) in zip(net.state_dict().items(), saved.state_dict().items()):
        assert np.array_equal(a, b), name
    # the checkpoint decides the architecture: a contradicting option is an error
    assert trace_mod.main(["--checkpoint", str(path), "--activation", "sigmoid"]) == 1
    err = capsys.readouterr().err
    assert "activation='relu'" in err and "Traceback" not in err


def test_trace_without_the_checkpoint_module(tmp_path, monkeypatch):
    """An .npz of param/<name> entries is enough when lenet_np.checkpoint is absent."""
    net = LeNet(seed=4)
    path = tmp_path / "plain.npz"
    np.savez(path, **{f"param/{k}": v for k, v in net.state_dict().items()})
    monkeypatch.setitem(sys.modules, "lenet_np.checkpoint", None)
    monkeypatch.delattr(lenet_np, "checkpoint")
    loaded, where = trace_mod.load_network(path)
    assert str(path) in where
    assert all(np.array_equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))


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


# -- visualize (its own tests are in tests/test_visualize.py) ---------------------------------------
def write_fake_fashion_mnist(directory, n_test=40):
    """A tiny data set in the real files' format (IDX, gzipped)."""
    data = pytest.importorskip("lenet_np.data")
    rng = np.random.default_rng(0)
    directory.mkdir()
    arrays = {"train_images": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
              "train_labels": rng.integers(0, 10, 10).astype(np.uint8),
              "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
              "test_labels": rng.integers(0, 10, n_test).astype(np.uint8)}
    for field, name in data.FILES.items():
        data.write_idx(directory / f"{name}.gz", arrays[field])
    return directory


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
