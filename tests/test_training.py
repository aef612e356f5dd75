"""The training loop as functions (lenet_np.training): the same checkpoints as the command line
(which is these functions with flags, messages and Ctrl-C around them), a run restored or
stopped part way continues bit for bit, and the per-step metrics the loop records."""

from __future__ import annotations

import csv
import json
import os
import signal

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import checkpoint, data, metrics, train, training
from lenet_np.evaluate import accuracy
from tests.test_train import make_dataset, run

TIMINGS = ("time_sec", "examples_per_sec")


@pytest.fixture()
def toy(tmp_path):
    return make_dataset(tmp_path / "data")


@pytest.fixture()
def small(tmp_path):
    """96 training examples: 3 steps of 32 an epoch."""
    return make_dataset(tmp_path / "small", n_train=96, n_test=32)


def without_timings(meta):
    """The meta without the timings of the epochs and the epochs asked for (--epochs)."""
    return dict(meta, history=[{k: v for k, v in h.items() if k not in TIMINGS} for h in meta["history"]],
                settings={k: v for k, v in meta["settings"].items() if k != "epochs"})


def by_hand(toy_dir, epochs, state=None, stop_at=None):
    """Train as the command does, with the functions: ``epochs`` epochs (a ``stop_at`` step:
    stopped there, part way through an epoch, returned without recording it)."""
    fm = data.load_fashion_mnist(toy_dir)
    settings = dict(training.defaults_for("classic"), batch_size=32, epochs=epochs)
    state = state or training.start(settings, log_steps=True)
    steps = iter(range(1, 10 ** 6))                         # stop() is asked once after every step
    stop = None if stop_at is None else (lambda: next(steps) == stop_at)
    while state.epoch < epochs:
        result = training.train_epoch(state, fm.train_images, fm.train_labels, stop=stop)
        if result.stopped:
            return state, result
        training.record_epoch(state, result, accuracy(state.model, fm.test_images, fm.test_labels, 1000))
    return state, None


def test_the_command_is_the_loop(small, tmp_path):
    """start, train_epoch, record_epoch and save give the command's checkpoint, bit for bit; a
    checkpoint of the command restored by the functions continues as the command would."""
    full, half = tmp_path / "full.npz", tmp_path / "half.npz"
    assert run(small, "--epochs", 2, "--checkpoint", full, "--metrics", tmp_path / "m.csv") == 0
    assert run(small, "--epochs", 1, "--checkpoint", half, "--metrics", tmp_path / "h.csv") == 0
    state, _ = by_hand(small, 2)
    restored = training.restore(half, len(data.load_fashion_mnist(small).train_labels), log_steps=True)
    assert (restored.epoch, restored.step, restored.settings["batch_size"], len(restored.history)) == (1, 0, 32, 1)
    restored, _ = by_hand(small, 2, restored)
    cli = checkpoint.load(full)
    for i, hand in enumerate((state, restored)):
        training.save(hand, tmp_path / f"hand{i}.npz")
        ours = checkpoint.load(tmp_path / f"hand{i}.npz")
        for name, value in cli["params"].items():
            np.testing.assert_array_equal(value, ours["params"][name], err_msg=name)
        assert without_timings(cli["meta"]) == without_timings(ours["meta"])
        assert list(cli["meta"]) == list(ours["meta"])                    # the same fields, in the same order
    assert cli["meta"]["settings"] == state.settings and list(state.settings) == list(training.SETTINGS)


def test_stopped_part_way_continues_where_it_stopped(small, tmp_path):
    """stop() after the 2nd step of epoch 2: the state holds the position; saving, restoring and
    training on, or training on in memory, both end where an uninterrupted run ends."""
    whole, _ = by_hand(small, 2)
    state, stopped = by_hand(small, 2, stop_at=3 + 2)
    assert stopped[:4] == (2, 2, 3, True)                       # epoch 2, 2 of its 3 steps, stopped
    assert (state.epoch, state.step, state.global_step, state.sums[2]) == (1, 2, 5, 64)
    training.save(state, tmp_path / "part.npz")
    meta = checkpoint.load(tmp_path / "part.npz")["meta"]
    assert (meta["epoch"], meta["step"], meta["global_step"]) == (1, 2, 5)
    restored = training.restore(tmp_path / "part.npz", 96, log_steps=True)
    for part in (state, restored):
        done, _ = by_hand(small, 2, part)
        for (name, a), (_, b) in zip(whole.net.named_parameters(), done.net.named_parameters()):
            np.testing.assert_array_equal(a.data, b.data, err_msg=name)
        assert done.steps.rows == whole.steps.rows
        assert [h["loss"] for h in done.history] == [h["loss"] for h in whole.history]


def test_a_diverging_run_and_a_bad_position_are_errors(small):
    fm = data.load_fashion_mnist(small)
    state = training.start(dict(training.defaults_for("classic"), batch_size=32, lr=1e308))
    with pytest.raises(training.Diverged, match=r"^the loss became nan at epoch 1, step 2/3: training diverged$"):
        training.train_epoch(state, fm.train_images, fm.train_labels)
    with pytest.raises(training.TrainingError, match="--batch-size 95 leaves a last batch of one example"):
        training.check_last_batch(ln.LeNet(variant="batchnorm"), 96, 95)
    meta = {"epoch": 0, "step": 4, "sums": [1.0, 1, 128], "history": [], **{k: 0 for k in ("settings", "rng_state",
                                                                                           "epoch_rng_state")}}
    with pytest.raises(checkpoint.CheckpointError, match="stopped at step 4 of an epoch having seen 128 examples"):
        training.check_resume(meta, "ck.npz", 96, 32)


# -- per-step metrics ---------------------------------------------------------------------------
def read_rows(path):
    if path.suffix == ".json":
        return json.loads(path.read_text())
    with open(path, newline="") as f:
        return [{k: v if k in metrics.RUN_FIELDS else float(v) for k, v in r.items()} for r in csv.DictReader(f)]


def test_step_metrics_rows_columns_and_losses(toy, tmp_path):
    csv_path = tmp_path / "m.csv"
    assert run(toy, "--epochs", 2, "--metrics", csv_path, "--log-every", 4, "--workers", 1) == 0
    steps_file = tmp_path / "m.steps.csv"
    header = steps_file.read_text().splitlines()[0].split(",")
    names = [n for n, _ in ln.LeNet().named_parameters()]
    assert header == ["epoch", "step", "loss"] + [f"grad_norm:{n}" for n in names] + ["variant", "activation", "pool"]
    rows = read_rows(steps_file)
    # 6 steps an epoch: every 4th step and the last step of each epoch
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 4), (1, 6), (2, 8), (2, 12)]
    history = read_rows(csv_path)
    for epoch, windows in ((1, (4, 2)), (2, (2, 4))):     # the rows' losses average to the epoch's
        ls = [r["loss"] for r in rows if r["epoch"] == epoch]
        assert np.average(ls, weights=windows) == pytest.approx(history[epoch - 1]["loss"], rel=1e-5)
    assert all(r[f"grad_norm:{n}"] > 0 for r in rows for n in names)
    # the first step's norms, replayed: the initial network on the first batch
    assert run(toy, "--epochs", 1, "--metrics", csv_path, "--log-every", 1, "--workers", 1) == 0
    first = read_rows(steps_file)[0]
    assert first["step"] == 1 and len(read_rows(steps_file)) == 6
    fm = data.load_fashion_mnist(toy)
    x, y = next(data.iterate_batches(fm.train_images, fm.train_labels, 32, shuffle=True,
                                     rng=np.random.default_rng([0, 1])))
    net, loss_fn = ln.LeNet(seed=0), ln.nn.CrossEntropyLoss()
    loss = loss_fn(net(x), y)
    net.backward(loss_fn.backward(), input_grad=False)
    assert first["loss"] == pytest.approx(loss, rel=1e-6)
    for name, p in net.named_parameters():
        assert first[f"grad_norm:{name}"] == pytest.approx(float(np.linalg.norm(p.grad)), rel=1e-5), name


def test_step_metrics_json_and_variant_names(toy, tmp_path):
    path = tmp_path / "m.json"
    assert run(toy, "--variant", "d2l", "--epochs", 1, "--metrics", path) == 0
    rows = json.loads((tmp_path / "m.steps.json").read_text())
    assert [r["step"] for r in rows] == [6]                       # --log-every 10: only the epoch's last step
    assert list(rows[0]) == ["epoch", "step", "loss"] + [f"grad_norm:{n}" for n, _ in
                                                          ln.LeNet(variant="d2l").named_parameters()] \
        + ["variant", "activation", "pool"]
    assert {(r["variant"], r["activation"], r["pool"]) for r in rows} == {("d2l", "sigmoid", "avg")}
    assert metrics.steps_path("runs/metrics.csv").as_posix() == "runs/metrics.steps.csv"
    steps = metrics.read_steps(tmp_path / "m.steps.json")
    assert steps["step"].tolist() == [6] and steps["settings"] == {"variant": "d2l", "activation": "sigmoid",
                                                                    "pool": "avg"}


def test_step_metrics_resume_after_ctrl_c_as_an_uninterrupted_run(toy, tmp_path, monkeypatch, capsys):
    """Interrupted mid-window (step 9 of 12, rows every 4 steps) and resumed: the same rows as
    a run that was never stopped, the window's loss included."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert run(toy, "--epochs", 2, "--metrics", full / "m.csv", "--log-every", 4) == 0
    calls = {"n": 0}
    real_step = ln.optim.Adam.step

    def step_then_ctrl_c(self):
        real_step(self)
        calls["n"] += 1
        if calls["n"] == 9:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(ln.optim.Adam, "step", step_then_ctrl_c)
    ck = part / "ck.npz"
    with pytest.raises(SystemExit):
        run(toy, "--epochs", 2, "--checkpoint", ck, "--metrics", part / "m.csv", "--log-every", 4)
    meta = checkpoint.load(ck)["meta"]
    assert meta["global_step"] == 9 and [r["step"] for r in meta["steps"]] == [4, 6, 8]
    monkeypatch.setattr(ln.optim.Adam, "step", real_step)
    damaged = dict(meta, steps=[{"epoch": 1, "step": 4, "loss": 2.0}])
    checkpoint.save(tmp_path / "damaged.npz", *ln_net_and_opt(ck), damaged)
    capsys.readouterr()
    assert run(toy, "--resume", tmp_path / "damaged.npz", "--metrics", part / "x.csv") == 1
    assert "a per-step metrics row has the keys epoch, step, loss, expected" in capsys.readouterr().err
    assert run(toy, "--resume", ck, "--metrics", part / "m.csv") == 0      # --log-every from the checkpoint
    assert (part / "m.steps.csv").read_text() == (full / "m.steps.csv").read_text()


def ln_net_and_opt(path):
    """The network and optimizer a seed checkpoint holds."""
    net = ln.LeNet()
    opt = ln.optim.Adam(net.parameters())
    checkpoint.load_into(path, net, opt)
    return net, opt


def test_step_metrics_on_the_device_read_back_once_per_check(tmp_path):
    """On a GPU the rows wait on the device and are read back together at the loop's periodic
    checks (every 50 steps and at the end of an epoch): one transfer, not one per row."""
    from lenet_np import backend

    from .conftest import REAL_GPU
    from .cupy_standin import count_host_reads
    if REAL_GPU:
        pytest.skip("counts the stand-in's host reads")
    small = make_dataset(tmp_path / "data", n_train=96, n_test=32)
    argv = ["--data-dir", str(small), "--device", "cuda", "--batch-size", "4", "--epochs", "1", "--quiet"]
    assert backend.cupy_available()
    with count_host_reads() as plain:
        assert train.main(argv) == 0
    with count_host_reads() as logged:
        assert train.main(argv + ["--metrics", str(tmp_path / "m.csv"), "--log-every", "2"]) == 0
    assert len(read_rows(tmp_path / "m.steps.csv")) == 12                 # 24 steps, a row every 2
    extra = sum(logged.values()) - sum(plain.values())
    assert 1 <= extra <= 2, (dict(plain), dict(logged))      # the check at step 24, and the epoch's end


