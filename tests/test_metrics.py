"""The metrics files (lenet_np.metrics): what train writes, what visualize reads. Per epoch:
EPOCH_FIELDS; per step: epoch, step, loss, grad_norm:<parameter> ..., then the run's network
(variant, activation, pool), which a file of an older version does not have."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lenet_np import metrics
from tests.visualize.helpers import steps_rows, write_steps

# -- the metrics files: lenet_np.metrics writes and reads them ---------------------------------
HISTORY = [{"epoch": 1, "loss": 1.8135, "train_acc": 0.328, "test_acc": 0.586, "time_sec": 4.1,
            "examples_per_sec": 14634.1},
           {"epoch": 2, "loss": 0.9512, "train_acc": 0.63, "test_acc": 0.69, "time_sec": 4.0,
            "examples_per_sec": 15000.0}]
STEP_ROWS = [{"epoch": 1, "step": 10, "loss": 2.31, "grad_norm:conv.0.weight": 1.5e-06, "grad_norm:fc.4.bias": 0.25},
             {"epoch": 2, "step": 20, "loss": 1.9, "grad_norm:conv.0.weight": 0.0, "grad_norm:fc.4.bias": 0.125}]


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_metrics_files_read_back_what_was_written(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    metrics.write_rows(path, HISTORY)
    assert metrics.read_epochs(path) == HISTORY
    fields = metrics.step_fields(["conv.0.weight", "fc.4.bias"])
    assert fields == tuple(STEP_ROWS[0])
    metrics.write_rows(metrics.steps_path(path), STEP_ROWS, fields)
    steps = metrics.read_steps(tmp_path / f"m.steps{suffix}")
    assert steps["epoch"].tolist() == [1, 2] and steps["step"].tolist() == [10, 20]
    assert steps["loss"].tolist() == [2.31, 1.9]
    assert {k: v.tolist() for k, v in steps["grad_norms"].items()} == {"conv.0.weight": [1.5e-06, 0.0],
                                                                      "fc.4.bias": [0.25, 0.125]}
    if suffix == ".csv":
        assert path.read_text().splitlines()[0] == ",".join(metrics.EPOCH_FIELDS)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_per_epoch_rows_need_the_four_numbers_and_keep_the_timings():
    plain = [{"epoch": "3", "loss": "0.5", "train_acc": "0.8", "test_acc": "0.79"}]
    assert metrics.epoch_rows(plain) == [{"epoch": 3, "loss": 0.5, "train_acc": 0.8, "test_acc": 0.79}]
    assert metrics.epoch_rows(HISTORY) == HISTORY and metrics.epoch_rows([]) == []
    with pytest.raises(ValueError, match="row 2: missing column"):
        metrics.epoch_rows([HISTORY[0], {"epoch": 2}])


MALFORMED_EPOCHS = {
    "no test_acc column": ("m.csv", "epoch,loss,train_acc\n1,2.0,0.3\n",
                           "missing column(s) test_acc; expected epoch, loss, train_acc, test_acc"),
    "not a number": ("m.csv", "epoch,loss,train_acc,test_acc\n1,2.0,0.3,0.5\n2,x,0.3,0.5\n",
                     "row 2: could not convert string to float: 'x'"),
    "an empty value": ("m.csv", "epoch,loss,train_acc,test_acc\n1,,0.3,0.5\n", "row 1: no number for loss"),
    "a short row": ("m.csv", "epoch,loss,train_acc,test_acc\n1,2.0,0.3\n", "row 1: no number for test_acc"),
    "a long row": ("m.csv", "epoch,loss,train_acc,test_acc\n1,2.0,0.3,0.5,9\n", "row 1: too many values"),
    "a fractional epoch": ("m.csv", "epoch,loss,train_acc,test_acc\n1.5,2.0,0.3,0.5\n",
                           "row 1: epoch '1.5' is not a whole number >= 1"),
    "empty": ("m.csv", "", "no rows in it"),
    "only a header": ("m.csv", "epoch,loss,train_acc,test_acc\n", "no rows in it"),
    "binary": ("m.csv", "\x00\xff\xfe", ""),
    "JSON not a list": ("m.json", '{"epoch": 1}', "not a JSON list of objects"),
    "JSON cut short": ("m.json", '[{"epoch": 1, "loss"', "Expecting"),
    "JSON a list for a number": ("m.json", '[{"epoch": 1, "loss": [2], "train_acc": 0.3, "test_acc": 0.5}]',
                                   "row 1: float() argument must be"),
}


@pytest.mark.parametrize("problem", sorted(MALFORMED_EPOCHS))
def test_malformed_metrics_file_is_one_line(tmp_path, problem):
    name, text, words = MALFORMED_EPOCHS[problem]
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(metrics.MetricsError) as exc:
        metrics.read_epochs(path)
    msg = str(exc.value)
    assert msg.startswith(f"metrics {path}: cannot read it as per-epoch metrics (") and "\n" not in msg, msg
    assert words in msg, msg
    with pytest.raises(metrics.MetricsError, match=f"^metrics {tmp_path / 'none.csv'}: no such file$"):
        metrics.read_epochs(tmp_path / "none.csv")


# -- the per-step files --------------------------------------------------------------------------
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
    assert steps["settings"] == {}                              # a file of an older version: no settings


def test_steps_path():
    assert metrics.steps_path("runs/metrics.csv").as_posix() == "runs/metrics.steps.csv"
    assert metrics.steps_path("m.json").as_posix() == "m.steps.json"


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
    "two runs in one file": "epoch,step,loss,activation\n1,1,2.0,relu\n1,2,2.0,sigmoid\n",
    "an empty setting": "epoch,step,loss,activation\n1,1,2.0,\n",
    "a setting not a name": "epoch,step,loss,variant\n1,1,2.0,big net\n",
}


@pytest.mark.parametrize("problem", sorted(MALFORMED))
def test_malformed_steps_file_is_one_line(tmp_path, problem):
    path = tmp_path / "bad.steps.csv"
    path.write_bytes(MALFORMED[problem].encode("latin-1"))
    with pytest.raises(metrics.MetricsError) as exc:
        metrics.read_steps(path)
    msg = str(exc.value)
    assert msg.startswith(f"steps {path}: cannot read it as per-step metrics (") and "\n" not in msg
    if problem == "two runs in one file":
        assert msg.endswith("(row 2: activation is 'sigmoid', row 1 says 'relu'; a file holds one run)")
    if problem == "a setting not a name":
        assert msg.endswith("(row 1: variant 'big net' is not a name such as 'classic')")


@pytest.mark.parametrize("text", ['{"epoch": 1}', "[1, 2]", '[{"epoch": 1, "step": 1}]', "not json"])
def test_malformed_json_steps_file(tmp_path, text):
    path = tmp_path / "bad.steps.json"
    path.write_text(text)
    with pytest.raises(metrics.MetricsError, match="cannot read it as per-step metrics"):
        metrics.read_steps(path)




@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_a_per_step_file_records_its_run(tmp_path, suffix):
    """write_steps adds the run's network to every row, read_steps returns it once; the other
    columns read as in a file without it."""
    rows = steps_rows(["conv.0.weight", "fc.4.weight"])
    fields = metrics.step_fields(["conv.0.weight", "fc.4.weight"])
    settings = {"variant": "batchnorm", "activation": "relu", "pool": "max", "lr": 0.1}
    path = tmp_path / f"m.steps{suffix}"
    metrics.write_steps(path, rows, fields, settings)
    if suffix == ".csv":
        lines = path.read_text().splitlines()
        assert lines[0] == ",".join(fields) + ",variant,activation,pool"
        assert all(line.endswith(",batchnorm,relu,max") for line in lines[1:])
    else:
        assert all(list(r)[-3:] == ["variant", "activation", "pool"] for r in json.loads(path.read_text()))
    with_run, without = metrics.read_steps(path), metrics.read_steps(write_steps(tmp_path / f"old{suffix}", rows))
    assert with_run["settings"] == {"variant": "batchnorm", "activation": "relu", "pool": "max"}
    assert without["settings"] == {}
    for key in ("epoch", "step", "loss"):
        np.testing.assert_array_equal(with_run[key], without[key])
    assert list(with_run["grad_norms"]) == ["conv.0.weight", "fc.4.weight"]
    np.testing.assert_array_equal(with_run["grad_norms"]["fc.4.weight"], without["grad_norms"]["fc.4.weight"])
    assert metrics.steps_from_rows(rows)["step"].tolist() == with_run["step"].tolist()
