"""The training command end to end on tiny IDX files written here, and a short run on
the real data."""

from __future__ import annotations

import csv
import json
import os
import signal

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import checkpoint, data, evaluate, metrics, train, visualize
from lenet_np.model import VARIANTS


def make_dataset(root, n_train=192, n_test=64, seed=0):
    """A learnable toy set: class k is a bright square at a position given by k."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)

    def images(labels):
        x = rng.integers(0, 60, (len(labels), 28, 28)).astype(np.uint8)
        for i, k in enumerate(labels):
            r, c = divmod(int(k), 5)
            x[i, 4 + 10 * r:12 + 10 * r, 1 + 5 * c:6 + 5 * c] = 250
        return x

    ytr = rng.integers(0, 10, n_train).astype(np.uint8)
    yte = rng.integers(0, 10, n_test).astype(np.uint8)
    data.write_idx(root / "train-images-idx3-ubyte.gz", images(ytr))
    data.write_idx(root / "train-labels-idx1-ubyte.gz", ytr)
    data.write_idx(root / "t10k-images-idx3-ubyte.gz", images(yte))
    data.write_idx(root / "t10k-labels-idx1-ubyte.gz", yte)
    return root


@pytest.fixture()
def toy(tmp_path):
    return make_dataset(tmp_path / "data")


def run(toy, *flags):
    return train.main(["--data-dir", str(toy), "--device", "cpu", "--batch-size", "32", "--quiet", *map(str, flags)])


def params(path):
    return checkpoint.load(path)["params"]


def test_trains_and_writes_checkpoint_metrics_plot(toy, tmp_path, capsys):
    ck, csv_path, png = tmp_path / "ck.npz", tmp_path / "m.csv", tmp_path / "curves.png"
    assert run(toy, "--epochs", 3, "--lr", 0.01, "--checkpoint", ck, "--metrics", csv_path, "--plot", png) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3
    for i, line in enumerate(out, 1):
        assert line.startswith(f"epoch {i}, loss ") and ", train acc " in line and line.endswith(" sec")
    rows = list(csv.DictReader(open(csv_path)))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert tuple(rows[0]) == metrics.EPOCH_FIELDS
    assert metrics.read_epochs(csv_path) == checkpoint.load(ck)["meta"]["history"]   # what was written, read back
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert train.plot_curves is visualize.plot_curves            # --plot draws visualize's curves.png
    meta = checkpoint.load(ck)["meta"]
    assert meta["epoch"] == 3 and meta["step"] == 0 and meta["settings"]["lr"] == 0.01
    assert list(params(ck)) == list(ln.LeNet().state_dict())
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_metrics_as_json(toy, tmp_path):
    path = tmp_path / "m.json"
    assert run(toy, "--epochs", 1, "--metrics", path) == 0
    (row,) = json.loads(path.read_text())
    assert row["epoch"] == 1 and 0 <= row["test_acc"] <= 1 and row["examples_per_sec"] > 0


def test_resume_is_bit_for_bit(toy, tmp_path):
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    assert run(toy, "--epochs", 3, "--checkpoint", full) == 0
    assert run(toy, "--epochs", 2, "--checkpoint", part) == 0
    assert run(toy, "--resume", part, "--epochs", 3, "--checkpoint", part) == 0
    for name, value in params(full).items():
        np.testing.assert_array_equal(value, params(part)[name], err_msg=name)
    assert same_metrics(checkpoint.load(full), checkpoint.load(part))


def same_metrics(a, b):
    keys = ("epoch", "loss", "train_acc", "test_acc")       # everything but the timings
    return [[r[k] for k in keys] for r in a["meta"]["history"]] == [[r[k] for k in keys] for r in b["meta"]["history"]]


@pytest.mark.parametrize("at_call,epoch,step", [(9, 2, 3), (6, 1, 6)], ids=["mid-epoch", "last-step"])
def test_ctrl_c_saves_mid_epoch_and_resumes_bit_for_bit(toy, tmp_path, monkeypatch, capsys, at_call, epoch, step):
    """Ctrl-C in the middle of an epoch, or after its last step (before its evaluation)."""
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    assert run(toy, "--epochs", 2, "--checkpoint", full) == 0
    calls = {"n": 0}
    real_step = ln.optim.Adam.step

    def step_then_ctrl_c(self):
        real_step(self)
        calls["n"] += 1
        if calls["n"] == at_call:    # 6 steps per epoch: as if the user pressed Ctrl-C here
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(ln.optim.Adam, "step", step_then_ctrl_c)
    with pytest.raises(SystemExit) as exit_info:
        run(toy, "--epochs", 2, "--checkpoint", part)
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert f"interrupted at epoch {epoch}, step {step}/6" in err and f"--resume {part}" in err
    meta = checkpoint.load(part)["meta"]
    assert (meta["epoch"], meta["step"]) == (epoch - 1, step)
    monkeypatch.setattr(ln.optim.Adam, "step", real_step)
    assert run(toy, "--resume", part, "--checkpoint", part) == 0      # settings come from the checkpoint
    for name, value in params(full).items():
        np.testing.assert_array_equal(value, params(part)[name], err_msg=name)
    assert same_metrics(checkpoint.load(full), checkpoint.load(part))


def test_divergence_stops_with_a_clear_message(toy, tmp_path, capsys, monkeypatch):
    ck = tmp_path / "ck.npz"
    assert run(toy, "--epochs", 1, "--checkpoint", ck) == 0
    before = params(ck)
    real_step, calls = ln.optim.Adam.step, {"n": 0}

    def step_that_blows_up(self):     # the weights overflow at the 3rd step of the run
        real_step(self)
        calls["n"] += 1
        if calls["n"] == 3:
            self.params[-1].data[...] = np.inf

    monkeypatch.setattr(ln.optim.Adam, "step", step_that_blows_up)
    code = run(toy, "--resume", ck, "--epochs", 2, "--checkpoint", ck)
    err = capsys.readouterr().err
    assert code == 1
    assert "at epoch 2, step 4/6" in err and "lower learning rate" in err and str(ck) in err
    for name, value in before.items():       # the last good checkpoint stays
        np.testing.assert_array_equal(value, params(ck)[name])


def test_resume_refuses_another_architecture(toy, tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    assert run(toy, "--epochs", 1, "--checkpoint", ck) == 0
    assert run(toy, "--resume", ck, "--epochs", 2, "--activation", "relu") == 1
    assert "--activation sigmoid" in capsys.readouterr().err
    assert run(toy, "--resume", ck, "--epochs", 2, "--optimizer", "sgd") == 1
    assert "--optimizer adam" in capsys.readouterr().err
    assert run(toy, "--resume", ck) == 0     # already complete: nothing to train
    assert "nothing to train" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncate", "garbage", "foreign"])
def test_corrupt_checkpoint_is_a_clear_error(toy, tmp_path, capsys, damage):
    ck = tmp_path / "ck.npz"
    assert run(toy, "--epochs", 1, "--checkpoint", ck) == 0
    raw = ck.read_bytes()
    if damage == "truncate":
        ck.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        ck.write_bytes(b"not a checkpoint at all")
    else:
        np.savez(ck, weights=np.zeros(3))
    assert run(toy, "--resume", ck, "--epochs", 2) == 1
    assert evaluate.main(["--checkpoint", str(ck), "--data-dir", str(toy)]) == 1
    err = capsys.readouterr().err
    assert f"checkpoint {ck}" in err and "Traceback" not in err


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    ck = tmp_path / "ck.npz"
    net = ln.LeNet()
    opt = ln.optim.Adam(net.parameters())
    checkpoint.save(ck, net, opt, {"settings": {"activation": "sigmoid", "pool": "max"}})
    other = ln.nn.Sequential(ln.nn.Linear(3, 2))
    with pytest.raises(checkpoint.CheckpointError, match="does not fit this model"):
        checkpoint.load_into(ck, other)


@pytest.mark.parametrize("name,damage,message", [
    ("train-images-idx3-ubyte.gz", "missing", "make data"),
    ("train-labels-idx1-ubyte.gz", "truncate", "truncated"),
    ("t10k-images-idx3-ubyte.gz", "magic", "magic"),
    ("t10k-labels-idx1-ubyte.gz", "count", "t10k-labels"),
])
def test_bad_data_files_are_clear_errors(toy, capsys, name, damage, message):
    path = toy / name
    if damage == "missing":
        path.unlink()
    elif damage == "truncate":
        raw = data.read_idx(path)
        data.write_idx(path, raw)
        import gzip
        blob = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(blob[:-5]))
    elif damage == "magic":
        import gzip
        blob = bytearray(gzip.decompress(path.read_bytes()))
        blob[2] = 0x0C
        path.write_bytes(gzip.compress(bytes(blob)))
    elif damage == "count":
        data.write_idx(path, data.read_idx(path)[:-3])
    assert run(toy, "--epochs", 1) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def exit_status(call, *args):
    """The exit status of a main() that may also end through argparse's SystemExit."""
    try:
        return call(*args)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("flags,message", [
    (("--epochs", 0), "argument --epochs: expected a whole number >= 1, got '0'"),
    (("--lr", -1), "argument --lr: expected a finite number > 0, got '-1'"),
    (("--lr", "nan"), "argument --lr: expected a finite number > 0, got 'nan'"),
    (("--metrics", "m.txt"), "argument --metrics: m.txt: the file name must end in .csv or .json"),
    (("--plot", "curves.txt"), "argument --plot: curves.txt: the file name must end in .png"),
    (("--device", "tpu"), "argument --device: unknown device 'tpu'"),
    (("--seed", -1), "argument --seed: expected a whole number >= 0, got '-1'"),
])
def test_bad_flags(toy, capsys, flags, message):
    assert exit_status(run, toy, *flags) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("flag,suffix", [("--checkpoint", ".npz"), ("--metrics", ".csv"), ("--plot", ".png")])
def test_unwritable_output_fails_before_training(toy, tmp_path, capsys, monkeypatch, flag, suffix):
    """An output that cannot be written stops the run before its first step."""
    monkeypatch.setattr(train, "load_fashion_mnist", lambda *a: pytest.fail("training started"))
    assert exit_status(run, toy, flag, f"/proc/nope/out{suffix}") == 2
    assert exit_status(run, toy, flag, tmp_path) == 2                       # a directory
    err = capsys.readouterr().err
    assert f"argument {flag}: /proc/nope/out{suffix}: cannot write there" in err
    assert f"argument {flag}: {tmp_path}: is a directory" in err and "Traceback" not in err


def test_disk_full_while_saving_is_one_line_with_resume_hint(toy, tmp_path, capsys, monkeypatch):
    ck, csv_path = tmp_path / "ck.npz", tmp_path / "m.csv"
    assert run(toy, "--epochs", 1, "--checkpoint", ck) == 0
    before = ck.read_bytes()

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", str(csv_path))

    monkeypatch.setattr(train, "write_rows", full)
    assert run(toy, "--epochs", 2, "--checkpoint", ck, "--metrics", csv_path, "--resume", ck) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"error: {csv_path}: No space left on device; the last good checkpoint stays at {ck}")
    assert f"resume with: python -m lenet_np.train --resume {ck}" in err[0]
    assert ck.read_bytes() != before                                        # epoch 2 was saved before the metrics
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "data"]  # no temporary file left


def test_evaluate_reports_per_class_and_confusion(toy, tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    assert run(toy, "--epochs", 1, "--checkpoint", ck) == 0
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(ck), "--data-dir", str(toy)]) == 0
    out = capsys.readouterr().out
    assert "test accuracy" in out and "Ankle boot" in out and "T-shirt/top" in out
    assert "confusion matrix" in out
    cm = evaluate.confusion_matrix(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])


def real_data_dir():
    try:
        return data.find_data_dir()
    except data.DataError:
        return None


@pytest.mark.skipif(real_data_dir() is None, reason="real Fashion-MNIST not found (run `make data`)")
def test_learns_on_real_data_subset():
    """A few hundred steps on 20,000 real training images: the loss falls and the test
    accuracy is far above chance (0.1)."""
    fm = data.load_fashion_mnist(real_data_dir())
    net = ln.LeNet(seed=0)
    opt = ln.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = ln.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    losses = []
    for _ in range(2):
        for x, y in data.iterate_batches(fm.train_images[:20000], fm.train_labels[:20000], 128, True, rng):
            opt.zero_grad()
            losses.append(loss_fn(net(x), y))
            net.backward(loss_fn.backward(), input_grad=False)
            opt.step()
    assert len(losses) > 300
    assert np.mean(losses[-20:]) < 0.75 * np.mean(losses[:20])
    acc = evaluate.accuracy(net, fm.test_images[:2000], fm.test_labels[:2000], 500)
    assert acc > 0.5, acc


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_follow_the_umask(tmp_path, umask):
    """Checkpoints, metrics and plots get 0666 less the umask, as open() would give them."""
    old = os.umask(umask)
    try:
        checkpoint.atomic_write(tmp_path / "f.csv", lambda f: f.write(b"x"))
        checkpoint.save(tmp_path / "ck.npz", ln.LeNet(), None, {})
    finally:
        os.umask(old)
    for name in ("f.csv", "ck.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


@pytest.mark.parametrize("error", [KeyboardInterrupt, OSError])
def test_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, error):
    path = tmp_path / "ck.npz"
    path.write_bytes(b"old")

    def fail_half_way(f):
        f.write(b"new, half")
        raise error("stop")

    with pytest.raises(error):
        checkpoint.atomic_write(path, fail_half_way)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["ck.npz"]


def test_ctrl_c_while_evaluating_keeps_the_checkpoint_and_says_how_to_resume(toy, tmp_path, capsys, monkeypatch):
    ck = tmp_path / "ck.npz"
    assert run(toy, "--epochs", 1, "--checkpoint", ck) == 0
    before = ck.read_bytes()

    def ctrl_c(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "accuracy", ctrl_c)
    assert run(toy, "--epochs", 2, "--checkpoint", ck, "--resume", ck) == 130
    err = capsys.readouterr().err.strip()
    assert err == (f"interrupted; the last good checkpoint stays at {ck}; resume with: python -m lenet_np.train "
                   f"--resume {ck} --data-dir {toy} --device cpu --batch-size 32 --quiet --epochs 2 --checkpoint {ck}")
    assert ck.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "data"]


# -- the book's other LeNets ------------------------------------------------------------------
def test_variant_defaults_are_the_books_recipe_and_flags_override():
    parse = train.build_parser().parse_args
    for argv, expected in [
        ([], dict(variant=ln.LeNet().variant, optimizer="adam", lr=0.001, batch_size=256, epochs=5, pool="max")),
        (["--variant", "seed"], dict(variant=ln.LeNet().variant, optimizer="adam", lr=0.001, pool="max")),
        (["--variant", "d2l"], dict(variant="d2l", optimizer="sgd", lr=0.1, batch_size=128, epochs=10, pool="avg")),
        (["--variant", "batchnorm", "--lr", "0.9", "--pool", "max", "--epochs", "2"],
         dict(variant="batchnorm", optimizer="sgd", lr=0.9, batch_size=128, epochs=2, pool="max")),
    ]:
        args = parse(argv)
        train.resolve_settings(args)
        assert {k: getattr(args, k) for k in expected} == expected, argv
        assert args.activation == "sigmoid" and args.momentum == 0.0 and args.log_every == 10


@pytest.mark.parametrize("variant", ["d2l", "batchnorm"])
def test_variant_checkpoint_rebuilds_the_network_everywhere(toy, tmp_path, capsys, variant):
    """The checkpoint records the variant: evaluate, trace and --resume rebuild the network
    without being told, and resuming continues bit for bit (BatchNorm's buffers included)."""
    full, part = tmp_path / "full.npz", tmp_path / "part.npz"
    assert run(toy, "--variant", variant, "--epochs", 2, "--checkpoint", full) == 0
    meta = checkpoint.load(full)["meta"]
    s = meta["settings"]
    assert (s["variant"], s["optimizer"], s["lr"], s["pool"], s["batch_size"]) == (variant, "sgd", 0.1, "avg", 32)
    assert list(params(full)) == list(ln.LeNet(variant=variant).state_dict())
    if variant == "batchnorm":
        assert run(toy, "--variant", variant, "--epochs", 1, "--checkpoint", part) == 0
        assert run(toy, "--resume", part, "--epochs", 2, "--checkpoint", part) == 0
        for name, value in params(full).items():
            np.testing.assert_array_equal(value, params(part)[name], err_msg=name)
        assert same_metrics(checkpoint.load(full), checkpoint.load(part))
    net, _ = checkpoint.load_network(full)
    assert (net.variant, net.activation, net.pool) == (variant, "sigmoid", "avg")
    if variant == "batchnorm":
        assert int(net.state_dict()["net.1.num_batches_tracked"]) == 12            # 2 epochs of 6 steps
    capsys.readouterr()
    assert evaluate.main(["--checkpoint", str(full), "--data-dir", str(toy)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    from lenet_np import trace
    loaded, _ = trace.build_network(full)
    assert loaded.variant == variant
    with pytest.raises(trace.ToolError, match=f"variant={variant!r}, not 'seed'"):
        trace.build_network(full, variant="seed")
    assert run(toy, "--resume", full, "--epochs", 3, "--variant", "seed") == 1
    assert f"--variant {variant}" in capsys.readouterr().err


def rewrite_settings(path, **changes):
    """Change the settings in a checkpoint's meta as an older or a hand-edited file would have
    them (a value None: the setting is absent); everything else stays."""
    with np.load(path, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    meta = json.loads(str(files["meta"]))
    meta["settings"].update(changes)
    meta["settings"] = {k: v for k, v in meta["settings"].items() if v is not None}
    np.savez(path, **dict(files, meta=np.array(json.dumps(meta))))


@pytest.mark.parametrize("variant", [None, "seed"], ids=["before variants", "earlier name"])
def test_older_checkpoints_load_evaluate_and_resume(toy, tmp_path, capsys, variant):
    """A checkpoint written before variants existed (no variant), or with the default variant's
    earlier name, holds the default network: it loads, evaluates and resumes."""
    ck = tmp_path / "ck.npz"
    assert run(toy, "--epochs", 1, "--checkpoint", ck) == 0
    rewrite_settings(ck, variant=variant, log_every=None, workers=None)
    assert checkpoint.load_network(ck)[0].variant == ln.LeNet().variant
    assert evaluate.main(["--checkpoint", str(ck), "--data-dir", str(toy)]) == 0
    assert run(toy, "--resume", ck, "--epochs", 2, "--checkpoint", ck) == 0
    assert checkpoint.load(ck)["meta"]["settings"]["variant"] == ln.LeNet().variant
    rewrite_settings(ck, variant="resnet")
    expected = " or ".join(map(repr, VARIANTS))
    with pytest.raises(checkpoint.CheckpointError, match=f"settings.variant is 'resnet', expected {expected}"):
        checkpoint.load(ck)
