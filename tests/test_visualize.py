"""python -m lenet_np.visualize: every picture on a checkpoint trained by lenet_np.train, the
per-step metrics it reads (lenet_np.metrics), the class-name flag, the choice of mistakes and of
saliency's gradient.

The per-step files here are written by the tests themselves, following the format that
``train --metrics PATH`` writes beside PATH (PATH's stem + ".steps" + its suffix): columns
epoch, step, loss, then grad_norm:<parameter> in named_parameters() order."""

from __future__ import annotations

import csv
import json
import struct

import numpy as np
import pytest

from lenet_np import LeNet, checkpoint, metrics, train, visualize
from lenet_np.nn import CrossEntropyLoss
from lenet_np.trace import CLASS_NAMES, load_test_set
from tests.test_tools import HISTORY, exit_status, save_checkpoint, write_fake_fashion_mnist
from tests.test_train import make_dataset

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = ("activations_compare.png", "curves.png", "feature_maps.png", "filters.png", "filters_change.png",
            "gradient_norms.png", "mistakes.png", "saliency.png")
def png_size(path):
    """(width, height) of a PNG file, after checking its signature and header chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def assert_picture(path, min_w=400, min_h=250):
    """A PNG of a sensible size whose pixels are not all one colour."""
    w, h = png_size(path)
    assert min_w <= w <= 4000 and min_h <= h <= 4000, (path.name, w, h)
    import matplotlib.image
    pixels = (matplotlib.image.imread(path)[..., :3] * 255).astype(np.uint32)
    assert pixels.std() > 10, path.name                           # drawn on, not an empty canvas
    colours = np.unique(pixels[..., 0] << 16 | pixels[..., 1] << 8 | pixels[..., 2])
    assert len(colours) > 50, path.name                           # colour maps, not only text


def steps_rows(names, n_epochs=2, steps_per_epoch=7, every=3, seed=0):
    """Rows as ``train --metrics`` writes them: one every ``every`` steps and at each epoch's last step."""
    rng = np.random.default_rng(seed)
    rows = []
    for epoch in range(1, n_epochs + 1):
        for s in range(1, steps_per_epoch + 1):
            step = (epoch - 1) * steps_per_epoch + s
            if step % every == 0 or s == steps_per_epoch:
                rows.append({"epoch": epoch, "step": step, "loss": round(2.3 / step ** 0.3, 6),
                             **{f"grad_norm:{n}": float(rng.uniform(1e-4, 1) * 10 ** -k) for k, n in enumerate(names)}})
    return rows


def write_steps(path, rows):
    if path.suffix == ".json":
        path.write_text(json.dumps(rows, indent=2))
    else:
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
    return path


PARAM_NAMES = [n for n, _ in LeNet(seed=0).named_parameters()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint of lenet_np.train (1 epoch on a toy set), its metrics, and a steps file beside them."""
    root = tmp_path_factory.mktemp("vis")
    data_dir = make_dataset(root / "data", n_train=96, n_test=60)
    ck, epochs = root / "lenet.npz", root / "metrics.csv"
    assert train.main(["--data-dir", str(data_dir), "--epochs", "1", "--batch-size", "32", "--quiet", "--device",
                       "cpu", "--checkpoint", str(ck), "--metrics", str(epochs), "--seed", "3"]) == 0
    write_steps(metrics.steps_path(epochs), steps_rows(PARAM_NAMES))   # as train writes it
    return {"root": root, "data": data_dir, "ck": ck, "metrics": epochs}


# -- the whole command ----------------------------------------------------------------------------
def test_every_picture_from_a_trained_checkpoint(trained, capsys, tmp_path, no_data):
    """Two per-step files side by side; no --data-dir and no data set: random images stand in."""
    (tmp_path / "relu").mkdir()
    other = write_steps(tmp_path / "relu" / "metrics.steps.json", steps_rows(PARAM_NAMES, seed=1))
    out = tmp_path / "pictures"
    assert visualize.main(["--checkpoint", str(trained["ck"]), "--out", str(out), "--metrics", str(trained["metrics"]),
                           "--steps", str(metrics.steps_path(trained["metrics"])), str(other),
                           "--classes", "pullover", "COAT", "--max-mistakes", "9"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(PICTURES), captured.err
    assert "random images" in captured.err
    for name in PICTURES:
        assert f"wrote {out / name}" in captured.out
        assert_picture(out / name)
    assert "activation='sigmoid', pool='max'), weights: checkpoint" in captured.out
    assert png_size(out / "gradient_norms.png")[0] >= 1200          # two panels side by side


def test_what_cannot_be_drawn_is_skipped_with_a_note(capsys, tmp_path):
    """No seed in the checkpoint (no filters_change.png), no history or metrics (no curves.png),
    no per-step file (no gradient_norms.png), a class absent from the test set (no
    activations_compare.png): each a note, the other pictures drawn."""
    data_dir = write_fake_fashion_mnist(tmp_path / "data", n_test=12)
    labels = load_test_set(data_dir)[0][1]
    missing = next(k for k in range(10) if k not in labels)
    present = int(labels[0])
    ck = tmp_path / "seedless.npz"
    checkpoint.save(ck, LeNet(seed=1), None, {"epoch": 0, "settings": {"activation": "sigmoid", "pool": "max"},
                                              "history": []})
    out = tmp_path / "out"
    assert visualize.main(["--checkpoint", str(ck), "--out", str(out), "--data-dir", str(data_dir),
                           "--classes", CLASS_NAMES[present], CLASS_NAMES[missing]]) == 0
    err = capsys.readouterr().err
    assert f"no {CLASS_NAMES[missing]} among the 12 test images: activations_compare.png skipped" in err
    assert "filters_change.png skipped" in err and "gradient_norms.png skipped" in err
    assert "curves.png skipped" in err and "random images" not in err
    assert sorted(p.name for p in out.iterdir()) == sorted(set(PICTURES) - {
        "filters_change.png", "curves.png", "gradient_norms.png", "activations_compare.png"})


def test_steps_files_default_to_the_one_beside_metrics(tmp_path):
    epochs = tmp_path / "m.csv"
    assert visualize.steps_files(None, None) == [] and visualize.steps_files(None, epochs) == []
    write_steps(tmp_path / "m.steps.csv", steps_rows(PARAM_NAMES))
    assert visualize.steps_files(None, epochs) == [tmp_path / "m.steps.csv"]
    assert visualize.steps_files([tmp_path / "a", "b"], epochs) == [tmp_path / "a", visualize.Path("b")]


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


# -- the per-step metrics ----------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_read_steps(tmp_path, suffix):
    rows = steps_rows(["conv.0.weight", "conv.0.bias", "fc.4.weight"])
    for r in rows:
        r["note"] = "ignored"                                   # unknown columns are ignored
    path = write_steps(tmp_path / f"m.steps{suffix}", rows)
    steps = metrics.read_steps(path)
    assert steps["epoch"].tolist() == [r["epoch"] for r in rows] == [1, 1, 1, 2, 2, 2]
    assert steps["step"].tolist() == [r["step"] for r in rows] == [3, 6, 7, 9, 12, 14]
    assert list(steps["grad_norms"]) == ["conv.0.weight", "conv.0.bias", "fc.4.weight"]
    np.testing.assert_allclose(steps["grad_norms"]["fc.4.weight"], [r["grad_norm:fc.4.weight"] for r in rows])
    np.testing.assert_allclose(steps["loss"], [r["loss"] for r in rows])
    # positions in epochs: the last step of epoch e is at e; 7 steps per epoch
    np.testing.assert_allclose(visualize.fractional_epochs(steps), np.array([3, 6, 7, 9, 12, 14]) / 7)
    r = visualize.norm_ratios(steps)
    assert (r["first"], r["last"]) == ("conv.0.weight", "fc.4.weight")
    assert r["ratio_first_row"] == pytest.approx(rows[0]["grad_norm:conv.0.weight"] / rows[0]["grad_norm:fc.4.weight"])


def test_steps_path_and_a_resumed_file():
    assert metrics.steps_path("runs/metrics.csv").as_posix() == "runs/metrics.steps.csv"
    assert metrics.steps_path("m.json").as_posix() == "m.steps.json"
    # a file that starts at epoch 3 (e.g. the rows of a resumed run only): equal epochs assumed
    steps = {"epoch": np.array([3, 3, 4]), "step": np.array([25, 30, 40])}
    np.testing.assert_allclose(visualize.fractional_epochs(steps), [2.5, 3.0, 4.0])


MALFORMED = {
    "no step column": "epoch,loss,grad_norm:a.weight\n1,2.0,0.1\n",
    "not a number": "epoch,step,loss,grad_norm:a.weight\n1,1,2.0,0.1\n1,x,2.0,0.1\n",
    "negative norm": "epoch,step,loss,grad_norm:a.weight\n1,1,2.0,-0.1\n",
    "steps going back": "epoch,step,loss\n1,5,2.0\n1,3,2.0\n",
    "a short row": "epoch,step,loss,grad_norm:a.weight\n1,1,2.0\n",
    "a long row": "epoch,step,loss\n1,1,2.0,7\n",
    "a fractional epoch": "epoch,step,loss\n1.5,1,2.0\n",
    "empty": "",
    "only a header": "epoch,step,loss\n",
    "binary": "\x00\xff\xfe",
}


@pytest.mark.parametrize("problem", sorted(MALFORMED))
def test_malformed_steps_file_is_one_line(tmp_path, problem):
    path = tmp_path / "bad.steps.csv"
    path.write_bytes(MALFORMED[problem].encode("latin-1"))
    with pytest.raises(metrics.MetricsError) as exc:
        metrics.read_steps(path)
    msg = str(exc.value)
    assert msg.startswith(f"steps {path}: cannot read it as per-step metrics (") and "\n" not in msg


@pytest.mark.parametrize("text", ['{"epoch": 1}', "[1, 2]", '[{"epoch": 1, "step": 1}]', "not json"])
def test_malformed_json_steps_file(tmp_path, text):
    path = tmp_path / "bad.steps.json"
    path.write_text(text)
    with pytest.raises(metrics.MetricsError, match="cannot read it as per-step metrics"):
        metrics.read_steps(path)


def test_malformed_steps_on_the_command_line(trained, capsys, tmp_path):
    bad = tmp_path / "bad.steps.csv"
    bad.write_text(MALFORMED["not a number"])
    argv = ["--checkpoint", str(trained["ck"]), "--out", str(tmp_path / "out"), "--steps", str(bad)]
    assert visualize.main(argv) == 1
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: steps {bad}: cannot read it as per-step metrics (row 2: could not convert "
                                "string to float: 'x')"]
    assert not (tmp_path / "out").exists()                      # checked before any picture
    many = [str(metrics.steps_path(trained["metrics"]))] * 5
    assert exit_status(visualize.main, argv[:4] + ["--steps", *many]) == 2
    assert "argument --steps: expected 1 to 4 files, got 5" in capsys.readouterr().err


def test_malformed_metrics_on_the_command_line(trained, capsys, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,loss,train_acc,test_acc\n1,x,0.3,0.5\n")
    assert visualize.main(["--checkpoint", str(trained["ck"]), "--out", str(tmp_path / "out"),
                           "--metrics", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"error: metrics {bad}: cannot read it as per-epoch metrics (row 1: could not convert string to float: 'x')"]
    assert not (tmp_path / "out").exists()


# -- the class names ----------------------------------------------------------------------------
def test_class_names():
    assert visualize.class_name("pullover") == 2 and visualize.class_name("COAT") == 4
    assert visualize.class_name("Ankle boot") == visualize.class_name("ankle-boot") == 9
    assert visualize.class_name("t-shirt/top") == visualize.class_name("TshirtTop") == 0
    for text in ("sweater", "", "-", "Coats"):
        with pytest.raises(Exception, match="expected a class name, one of T-shirt/top, Trouser, .* Ankle boot"):
            visualize.class_name(text)


@pytest.mark.parametrize("classes,message", [
    (["Sweater", "Coat"], "argument --classes: expected a class name, one of T-shirt/top, Trouser, Pullover, Dress, "
                          "Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot (any case), got 'Sweater'"),
    (["coat", "Coat"], "argument --classes: expected two different classes, got Coat twice"),
    (["Coat"], "argument --classes: expected 2 arguments"),
])
def test_class_flag_errors_are_one_line(capsys, tmp_path, classes, message):
    ck = tmp_path / "lenet.npz"
    checkpoint.save(ck, LeNet(seed=0), None, {"epoch": 0})
    argv = ["--checkpoint", str(ck), "--out", str(tmp_path / "out"), "--classes", *classes]
    assert exit_status(visualize.main, argv) == 2
    err = capsys.readouterr().err
    assert err == f"python -m lenet_np.visualize: error: {message} (see --help)\n"
    assert not (tmp_path / "out").exists()


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
    assert_picture(visualize.plot_curves(hist, tmp_path / "c1.png", "test"))
    assert_picture(visualize.plot_curves(hist, tmp_path / "c2.png", "test", steps, "s.csv"))
    assert_picture(visualize.plot_gradient_norms([("one", steps)], tmp_path / "g.png"))


# -- the older tests of the command, moved here ----------------------------------------------------
def test_visualize_reads_metrics_csv_and_json(tmp_path):
    as_json = tmp_path / "m.json"
    as_json.write_text(json.dumps(HISTORY))
    as_csv = tmp_path / "m.csv"
    lines = [",".join(str(h[k]) for k in h) for h in HISTORY]
    as_csv.write_text(",".join(HISTORY[0]) + "\n" + "\n".join(lines) + "\n")
    assert metrics.read_epochs(as_json) == metrics.read_epochs(as_csv) == HISTORY


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


@pytest.mark.parametrize("problem,status", [("missing", 2), ("corrupt", 1), ("metrics", 1), ("image", 1),
                                            ("data-dir", 2), ("max", 2), ("old-max", 2), ("out", 2),
                                            ("steps", 2)])
def test_visualize_errors_are_one_line(capsys, tmp_path, no_data, problem, status):
    ck = tmp_path / "lenet.npz"
    args = ["--checkpoint", str(ck), "--out", str(tmp_path / "out")]
    if problem == "corrupt":
        ck.write_bytes(b"\x00" * 100)
    elif problem != "missing":
        save_checkpoint(ck)
    if problem == "metrics":
        bad = tmp_path / "bad.csv"
        bad.write_text("a,b\n1,2\n")
        args += ["--metrics", str(bad)]
    if problem == "image":
        args += ["--image", "100000"]
    if problem == "data-dir":                  # a path typed by the user: never replaced by random images
        args += ["--data-dir", str(tmp_path / "none")]
    if problem == "max":
        args += ["--max-mistakes", "101"]
    if problem == "old-max":
        args += ["--max-misclassified", "-3"]
    if problem == "out":
        args[3] = str(ck)                      # a file, not a directory
    if problem == "steps":
        args += ["--steps", str(tmp_path / "nothing.steps.csv")]
    assert exit_status(visualize.main, args) == status
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and "Traceback" not in err
    assert err.splitlines()[-1].split(": error: ")[-1].startswith(("error: ", "argument ")), err
    assert not (tmp_path / "out").exists()


def test_max_misclassified_is_the_older_name_of_max_mistakes(tmp_path):
    a = visualize.parse_args(["--checkpoint", __file__, "--out", str(tmp_path), "--max-misclassified", "7"])
    b = visualize.parse_args(["--checkpoint", __file__, "--out", str(tmp_path), "--max-mistakes", "7"])
    assert a.max_mistakes == b.max_mistakes == 7 and a.classes == [2, 4]


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


def test_visualize_without_matplotlib(capsys, tmp_path, monkeypatch):
    import sys
    ck = tmp_path / "lenet.npz"
    save_checkpoint(ck)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert visualize.main(["--checkpoint", str(ck), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install" in err
    assert not (tmp_path / "out").exists()
