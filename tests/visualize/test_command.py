"""python -m lenet_np.visualize: every picture of the registry from a checkpoint trained by
lenet_np.train, what is skipped and why, the per-step files it reads, its flags and errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lenet_np import LeNet, checkpoint, metrics, visualize
from lenet_np.trace import CLASS_NAMES, load_test_set
from lenet_np.visualize import curves, predictions, registry
from tests.helpers import exit_status, save_checkpoint, write_fake_fashion_mnist

from .helpers import PARAM_NAMES, assert_picture, png_size, steps_rows, write_steps

ROOT = Path(__file__).resolve().parents[2]


def test_every_picture_from_a_trained_checkpoint(trained, capsys, tmp_path, no_data, monkeypatch):
    """Two per-step files side by side: train's own (its run's settings recorded) and one of the
    format before them (named by its path alone); no --data-dir and no data set: random images."""
    (tmp_path / "relu").mkdir()
    old_format = write_steps(tmp_path / "relu" / "metrics.steps.json", steps_rows(PARAM_NAMES, seed=1))
    titles = {}
    real_save = curves.save

    def keep_titles(fig, path):
        titles[path.name] = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes if ax.get_title()]
        return real_save(fig, path)

    for module in (curves, predictions):
        monkeypatch.setattr(module, "save", keep_titles)
    out = tmp_path / "pictures"
    ours = metrics.steps_path(trained["metrics"])
    assert visualize.main(["--checkpoint", str(trained["ck"]), "--out", str(out), "--metrics", str(trained["metrics"]),
                           "--steps", str(ours), str(old_format), "--classes", "pullover", "COAT",
                           "--max-mistakes", "9"]) == 0
    captured = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == sorted(visualize.PICTURES), captured.err
    assert "random images" in captured.err
    assert [line for line in captured.out.splitlines() if line.startswith("wrote ")] == \
        [f"wrote {out / name}" for name in visualize.PICTURES]                 # the registry's order
    for name in visualize.PICTURES:
        assert_picture(out / name)
    assert "activation='sigmoid', pool='max'), weights: checkpoint" in captured.out
    assert png_size(out / "gradient_norms.png")[0] >= 1200          # two panels side by side
    first, second = titles["gradient_norms.png"][1:]
    assert first.startswith(f"sigmoid, classic LeNet, max pool: {ours.parent.name}/{ours.name}\n|grad conv.0.weight|")
    assert second.startswith("relu/metrics.steps.json\n|grad conv.0.weight|")      # the older file: its path
    caption = titles["saliency.png"][0].replace("\n", " ")
    assert "The blocky 2-pixel grid is max pooling's: conv.2 passes each 2x2 window's gradient to one pixel" in caption


def test_what_cannot_be_drawn_is_skipped_with_a_note(capsys, tmp_path, monkeypatch):
    """No seed in the checkpoint (no filters_change.png), no history or metrics (no curves.png),
    no per-step file (no gradient_norms.png), a class absent from the test set (no
    activations_compare.png): each a note, the other pictures drawn (here by a stand-in:
    test_every_picture_from_a_trained_checkpoint draws them all)."""
    def drawn(scene, path):
        path.write_bytes(b"drawn")
        return path

    can_skip = {"filters_change.png", "curves.png", "gradient_norms.png", "activations_compare.png"}
    monkeypatch.setattr(registry, "PICTURES", {name: picture if name in can_skip else drawn
                                               for name, picture in registry.PICTURES.items()})
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
    assert sorted(p.name for p in out.iterdir()) == sorted(set(visualize.PICTURES) - can_skip)


def test_a_picture_is_one_function_and_one_entry(trained, capsys, tmp_path, monkeypatch):
    """The command draws what PICTURES holds, in its order; a Skip becomes a note."""
    def first(scene, path):
        path.write_bytes(f"{scene.image} {scene.labels[scene.image]} {scene.source}".encode())
        return path

    def never(scene, path):
        raise registry.Skip(f"nothing to draw for {len(scene.labels)} images")

    monkeypatch.setattr(registry, "PICTURES", {"b.png": first, "a.png": never, "c.png": first})
    out = tmp_path / "out"
    assert visualize.main(["--checkpoint", str(trained["ck"]), "--out", str(out), "--data-dir",
                           str(trained["data"]), "--image", "5"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[1:] == [f"wrote {out / 'b.png'}", f"wrote {out / 'c.png'}"]
    assert captured.err == "note: nothing to draw for 60 images: a.png skipped\n"
    labels = load_test_set(trained["data"])[0][1]
    assert (out / "c.png").read_text() == f"5 {labels[5]} Fashion-MNIST test set"


def test_steps_files_default_to_the_one_beside_metrics(tmp_path):
    epochs = tmp_path / "m.csv"
    assert visualize.steps_files(None, None) == [] and visualize.steps_files(None, epochs) == []
    write_steps(tmp_path / "m.steps.csv", steps_rows(PARAM_NAMES))
    assert visualize.steps_files(None, epochs) == [tmp_path / "m.steps.csv"]
    assert visualize.steps_files([tmp_path / "a", "b"], epochs) == [tmp_path / "a", Path("b")]


def test_malformed_steps_on_the_command_line(trained, capsys, tmp_path):
    bad = tmp_path / "bad.steps.csv"
    bad.write_text("epoch,step,loss,grad_norm:a.weight\n1,1,2.0,0.1\n1,x,2.0,0.1\n")
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
def test_class_names(tmp_path):
    assert visualize.class_name("pullover") == 2 and visualize.class_name("COAT") == 4
    assert visualize.class_name("Ankle boot") == visualize.class_name("ankle-boot") == 9
    assert visualize.class_name("t-shirt/top") == visualize.class_name("TshirtTop") == 0
    for text in ("sweater", "", "-", "Coats"):
        with pytest.raises(Exception, match="expected a class name, one of T-shirt/top, Trouser, .* Ankle boot"):
            visualize.class_name(text)
    args = visualize.parse_args(["--checkpoint", __file__, "--out", str(tmp_path), "--max-mistakes", "7"])
    assert args.max_mistakes == 7 and args.classes == [2, 4]               # Pullover, Coat by default


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


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("problem,status", [("missing", 2), ("corrupt", 1), ("metrics", 1), ("image", 1),
                                            ("data-dir", 2), ("max", 2), ("out", 2), ("steps", 2)])
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
    if problem == "out":
        args[3] = str(ck)                      # a file, not a directory
    if problem == "steps":
        args += ["--steps", str(tmp_path / "nothing.steps.csv")]
    assert exit_status(visualize.main, args) == status
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1 and "Traceback" not in err
    assert err.splitlines()[-1].split(": error: ")[-1].startswith(("error: ", "argument ")), err
    assert not (tmp_path / "out").exists()


def test_visualize_without_matplotlib(capsys, tmp_path, monkeypatch):
    ck = tmp_path / "lenet.npz"
    save_checkpoint(ck)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    assert visualize.main(["--checkpoint", str(ck), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "matplotlib" in err and "pip install" in err
    assert not (tmp_path / "out").exists()


def test_python_dash_m_runs_the_package(tmp_path):
    """``python -m lenet_np.visualize`` is the package's __main__: its one error line, exit status 2."""
    done = subprocess.run([sys.executable, "-m", "lenet_np.visualize", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 2 and not done.stdout
    assert done.stderr == ("python -m lenet_np.visualize: error: the following arguments are required: --checkpoint "
                           "(see --help)\n")


def test_the_json_per_step_file_of_train_names_its_run(tmp_path):
    """A per-step file records its run's network: read_steps returns it, gradient_norms names it."""
    path = tmp_path / "relu" / "m.steps.json"
    path.parent.mkdir()
    rows = steps_rows(PARAM_NAMES)
    metrics.write_steps(path, rows, tuple(rows[0]), {"variant": "d2l", "activation": "relu", "pool": "avg"})
    assert json.loads(path.read_text())[0]["activation"] == "relu"
    steps = metrics.read_steps(path)
    assert steps["settings"] == {"variant": "d2l", "activation": "relu", "pool": "avg"}
    assert visualize.run_label(path, steps["settings"]) == "relu, d2l LeNet, avg pool: relu/m.steps.json"
    assert visualize.run_label(path, {}) == "relu/m.steps.json"
    assert visualize.run_label(Path("m.steps.csv"), {"activation": "sigmoid"}) == "sigmoid: m.steps.csv"
