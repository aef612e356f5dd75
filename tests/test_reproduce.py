"""benchmarks/reproduce.py: lenet_np and the book's PyTorch models compute the same training
run (same weights, same batches), for each variant, on a small Fashion-MNIST-format set."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch", reason="the comparison needs torch==2.13.0 (pip install -e '.[test]')")

from benchmarks import reproduce  # noqa: E402
from lenet_np import train  # noqa: E402
from tests.test_train import make_dataset  # noqa: E402

N_TRAIN, N_TEST = 96, 32


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"), n_train=N_TRAIN, n_test=N_TEST)


def histories(toy, tmp_path, *flags):
    out = tmp_path / "h.json"
    argv = ["--data-dir", str(toy), "--epochs", "2", "--batch-size", "32", "--out", str(out), *flags]
    assert reproduce.main(argv) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("flags, expected", [
    (("--lr", "0.01"), {"variant": "classic", "optimizer": "adam", "lr": 0.01, "activation": "sigmoid", "pool": "max"}),
    (("--activation", "relu", "--pool", "avg", "--seed", "3", "--optimizer", "sgd", "--lr", "0.5", "--momentum", "0.9"),
     {"variant": "classic", "optimizer": "sgd", "lr": 0.5, "momentum": 0.9, "activation": "relu", "pool": "avg",
      "seed": 3}),
    (("--variant", "d2l", "--activation", "relu", "--pool", "max"),
     {"variant": "d2l", "optimizer": "sgd", "lr": 0.1, "activation": "relu", "pool": "max"}),
    (("--variant", "batchnorm",),
     {"variant": "batchnorm", "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "activation": "sigmoid", "pool": "avg"}),
], ids=["classic", "classic-relu-avg-sgd", "d2l-relu-max", "batchnorm"])
def test_lenet_np_and_torch_agree(toy, tmp_path, capsys, flags, expected):
    h = histories(toy, tmp_path, *flags)
    assert {k: h["settings"][k] for k in expected} == expected
    ours, theirs = h["lenet_np"], h["torch"]
    assert [e["epoch"] for e in ours] == [e["epoch"] for e in theirs] == [1, 2]
    for a, b in zip(ours, theirs):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4), f"epoch {a['epoch']}"
        assert round(a["train_acc"] * N_TRAIN) == round(b["train_acc"] * N_TRAIN), f"epoch {a['epoch']}"
        assert round(a["test_acc"] * N_TEST) == round(b["test_acc"] * N_TEST), f"epoch {a['epoch']}"
    assert theirs[0]["loss"] != theirs[1]["loss"]             # the weights moved: agreement is not trivial
    out = capsys.readouterr().out        # train's epoch lines, then the table and the times
    assert f"epoch 2, loss {ours[1]['loss']:.4f}, train acc" in out
    assert "\n| epoch | loss, lenet_np | loss, PyTorch |" in out
    assert f"\n| 2 | {ours[1]['loss']:.4f} | {theirs[1]['loss']:.4f} |" in out
    assert "median training time per epoch: lenet_np" in out


@pytest.mark.parametrize("variant", ["classic", "d2l", "batchnorm"])
def test_settings_default_to_trains(variant):
    args = reproduce.parse_args(["--variant", variant])
    expected = {k: v for k, v in train.defaults_for(variant).items() if k in reproduce.SETTINGS}
    assert {k: getattr(args, k) for k in reproduce.SETTINGS} == expected
    args = reproduce.parse_args(["--variant", variant, "--epochs", "3", "--activation", "relu", "--optimizer", "adam"])
    assert (args.epochs, args.activation, args.optimizer) == (3, "relu", "adam")
    assert args.batch_size == expected["batch_size"]


def test_torch_model_keys_match_lenet_np():
    """The book's torch model (benchmarks/torch_models.py) with another activation and pooling,
    as reproduce trains it: the keys of lenet_np's LeNet with the same settings, every activation
    and every pooling replaced."""
    import lenet_np as ln
    from benchmarks.torch_models import book_model
    for variant in ("classic", "d2l", "batchnorm"):
        for activation, pool in (("sigmoid", "max"), ("relu", "avg")):
            model = book_model(variant, activation, pool)
            ours = ln.LeNet(variant=variant, activation=activation, pool=pool, seed=0)
            assert list(model.state_dict()) == list(ours.state_dict())
            act = {"relu": "ReLU", "sigmoid": "Sigmoid"}[activation]
            pooling = {"max": "MaxPool2d", "avg": "AvgPool2d"}[pool]
            layers = [type(m).__name__ for m in model.modules()
                      if type(m).__name__ in ("ReLU", "Sigmoid", "MaxPool2d", "AvgPool2d")]
            assert sorted(layers) == sorted([act] * 4 + [pooling] * 2), (variant, layers)


@pytest.mark.parametrize("argv, words", [
    (["--variant", "lenet5"], "--variant: invalid choice"),
    (["--epochs", "0"], "--epochs"),
    (["--data-dir", "/no/such/dir"], "--data-dir"),
    (["--out", "h.txt"], "--out"),
])
def test_bad_argument_is_one_line(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        reproduce.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and err.startswith("python -m benchmarks.reproduce: error:")


def test_missing_data_is_one_line(tmp_path, capsys):
    assert reproduce.main(["--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(tmp_path) in err
