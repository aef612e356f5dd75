"""The learner's tools: summary, gradcheck (module and command line), trace and visualize;
the one checkpoint loader and the one predict they share.

Each tool's ``main`` runs here as from the command line, on tiny self-made checkpoints
and, for the pictures, on a tiny self-made data set (or none at all)."""

from __future__ import annotations

import ast
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

import lenet_np
import lenet_np.gradcheck as gc
from lenet_np import LeNet, checkpoint, data, evaluate, nn, train, visualize
from lenet_np import summary as summary_mod
from lenet_np import trace as trace_mod
from lenet_np.model import VARIANTS

ROOT = Path(__file__).resolve().parent.parent

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


def test_gradcheck_cli_max_elements_caps_the_whole_lenet_and_maxpool_is_pool(capsys):
    """--max-elements 3 checks 3 elements per tensor of the whole LeNet too (25 is its ceiling); the
    header explains its stopping threshold by the pass mark; --layer maxpool is the pool check."""
    for m, want in ((3, 3), (200, 25), (None, 25)):
        assert {c.max_elements for c in gc.make_checks(0, m) if c.layer == "lenet"} == {want}
    assert gc.main(["--layer", "maxpool", "--max-elements", "3"]) == 0
    out = capsys.readouterr().out
    assert "conv.2 MaxPool2d(2, 2)" in out and "3/6912" in out and "Linear" not in out
    assert "below 2e-07. That is a fifth of the pass mark: a float64\nerror must stay below 1e-06." in out


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


def test_gradcheck_is_the_module_and_calling_it_checks():
    """lenet_np.gradcheck is the module (no function shadows it), and calling it calls its gradcheck."""
    assert isinstance(gc, types.ModuleType) and gc is lenet_np.gradcheck is sys.modules["lenet_np.gradcheck"]
    from lenet_np import gradcheck as imported
    from lenet_np.gradcheck import gradcheck as function
    assert imported is gc and isinstance(function, types.FunctionType) and function is gc.gradcheck
    rng = np.random.default_rng(0)
    layer, x = nn.Linear(3, 2, rng=rng).double(), rng.standard_normal((4, 3))
    errors = lenet_np.gradcheck(layer, x, seed=1)
    assert errors == function(layer, x, seed=1) and set(errors) == {"input", "weight", "bias"}
    assert max(errors.values()) < 1e-6


def test_python_m_gradcheck_runs_without_a_warning():
    """``python -m lenet_np.gradcheck``: the package does not import the module first, so runpy
    runs it once, without its RuntimeWarning (turned into an error here)."""
    done = subprocess.run([sys.executable, "-W", "error", "-m", "lenet_np.gradcheck", "--layer", "flatten"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "All float64 errors are below 1e-06" in done.stdout


# -- the one checkpoint loader: checkpoint.load_network ------------------------------------------
def saved_network(path, settings, **kwargs):
    """A LeNet as train saves it (its BatchNorm statistics moved away from their start), and its checkpoint."""
    net = LeNet(**kwargs)
    net(np.random.default_rng(1).random((4, 1, 28, 28), dtype=np.float32))     # training mode: statistics move
    checkpoint.save(path, net, None, {"epoch": 3, **({"settings": settings} if settings is not None else {})})
    return net


def same_state(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(np.array_equal(np.asarray(sa[k]), np.asarray(sb[k])) for k in sa)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_load_network_rebuilds_the_checkpoints_network(tmp_path, variant):
    path = tmp_path / "ck.npz"
    settings = {"variant": variant, "activation": "relu", "pool": "max", "seed": 3}
    saved = saved_network(path, settings, variant=variant, activation="relu", pool="max", seed=3)
    net, meta = checkpoint.load_network(path)
    assert (net.variant, net.activation, net.pool) == (variant, "relu", "max")
    assert same_state(net, saved) and net.training and meta["epoch"] == 3 and meta["settings"] == settings


@pytest.mark.parametrize("settings,kwargs", [
    (None, {}),                                                  # no settings at all
    ({"activation": "relu", "pool": "avg", "seed": 0}, {"activation": "relu", "pool": "avg"}),   # before variants
    ({"variant": "seed", "activation": "sigmoid", "pool": "max"}, {}),   # the default variant's earlier name
], ids=["no settings", "no variant", "earlier variant name"])
def test_load_network_reads_older_checkpoints(tmp_path, settings, kwargs):
    path = tmp_path / "old.npz"
    saved = saved_network(path, settings, seed=5, **kwargs)
    net, _ = checkpoint.load_network(path)
    assert net.variant == LeNet().variant and (net.activation, net.pool) == (saved.activation, saved.pool)
    assert same_state(net, saved)


def damage(path, how):
    """Write at ``path`` a file that load_network must refuse; the words its error must hold."""
    if how == "missing":
        return "no such file"
    if how == "not a checkpoint":
        path.write_text("epoch,loss\n1,2.3\n")
        return "not an .npz (zip) archive"
    if how == "foreign npz":
        np.savez(path, weights=np.zeros(3))
        return "no 'meta' entry, so not a lenet_np checkpoint"
    saved_network(path, {"activation": "sigmoid", "pool": "max"}, seed=0)
    raw = path.read_bytes()
    if how == "truncated":
        path.write_bytes(raw[:len(raw) // 2])
        return "corrupt or truncated"
    if how == "corrupt":                                     # bytes flipped inside the largest weight
        with zipfile.ZipFile(path) as z:
            info = z.getinfo("param/fc.0.weight.npy")
        middle = info.header_offset + info.compress_size // 2
        path.write_bytes(raw[:middle] + bytes(b ^ 0xFF for b in raw[middle:middle + 8]) + raw[middle + 8:])
        return "corrupt or truncated"
    if how == "meta not JSON":
        with np.load(path) as z:
            files = dict(z)
        np.savez(path, **dict(files, meta=np.array("{epoch: 3")))
        return "its 'meta' entry is not valid JSON"
    if how == "another network":                             # d2l's weights, settings that name the default
        checkpoint.save(path, LeNet(variant="d2l"), None, {"settings": {"activation": "sigmoid"}})
        return "does not fit LeNet(activation='sigmoid'): load_state_dict for LeNet failed: missing keys"
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["missing", "not a checkpoint", "foreign npz", "truncated", "corrupt",
                                 "meta not JSON", "another network"])
def test_load_network_refuses_a_bad_file_in_one_line(tmp_path, how):
    path = tmp_path / "ck.npz"
    words = damage(path, how)
    with pytest.raises(checkpoint.CheckpointError) as exc:
        checkpoint.load_network(path)
    msg = str(exc.value)
    assert msg.startswith(f"checkpoint {path}") and words in msg and "\n" not in msg, msg


def test_the_tools_load_checkpoints_one_way(tmp_path, capsys, no_data):
    """evaluate, trace and visualize read a checkpoint through load_network: the same network,
    and the same one-line error for a corrupt file."""
    assert "read_checkpoint" not in vars(trace_mod) and "load_model" not in vars(evaluate)
    path = tmp_path / "ck.npz"
    damage(path, "corrupt")
    assert trace_mod.main(["--checkpoint", str(path)]) == 1
    assert visualize.main(["--checkpoint", str(path), "--out", str(tmp_path / "out")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and errors[0] == errors[1] and errors[0].startswith(f"error: checkpoint {path}: ")


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
