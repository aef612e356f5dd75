"""check --show (lenet_np/exercises/show.py): under a failing layer, the smallest failing case with
every number: x, G, the student's gradient, the expected one and their difference, consistent with
each other, for every exercise.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from lenet_np.exercises import EXERCISES
from lenet_np.exercises.show import fmt

from .common import layer_lines, run, write_layer
from .test_batchnorm import MISTAKES as BATCHNORM_MISTAKES
from .test_checker import MISTAKES

# one deliberate mistake per exercise, whose values (not its shape) are wrong
ONE_MISTAKE = {
    "linear": MISTAKES["linear db mean"][1:3],
    "sigmoid": ("return grad_out * y * (1 - y)", "return grad_out * y"),
    "relu": MISTAKES["relu at 0"][1:3],
    "softmax_cross_entropy": MISTAKES["loss without 1/N"][1:3],
    "avgpool": MISTAKES["avgpool without 1/K^2"][1:3],
    "maxpool": MISTAKES["maxpool = on overlapping windows"][1:3],
    "conv_naive": MISTAKES["naive dx flipped kernel"][1:3],
    "conv_im2col": MISTAKES["im2col db mean"][1:3],
    "batchnorm": BATCHNORM_MISTAKES["m - 1 in the path through var"][:2],
}


def parse(text: str) -> np.ndarray:
    """An array of one or two axes as fmt() prints it."""
    rows = [[float(v) for v in row.split()] for row in re.findall(r"\[([^\[\]]*)\]", text)]
    return np.array(rows if text.startswith("[[") else rows[0])


def shown(lines: list[str]) -> dict[str, np.ndarray]:
    """{label: array} of the arrays --show printed (two axes at most: the cases below are small)."""
    arrays, label, text = {}, None, ""
    for line in lines[2:] + [""]:
        m = re.match(r"^(\w[\w =/.]*?)\s{2,}(\[.*)$", line)
        if label and (m or not line.startswith("[")):
            arrays[label] = parse(text)
            label = None
        if m:
            label, text = m.group(1), m.group(2)
        elif label:
            text += line
    return arrays


def show_lines(tmp_path, capsys, name, old, new, *options):
    write_layer(tmp_path, name, old, new)
    status, out, _ = run(capsys, "check", tmp_path, "--layer", name, "--show", *options)
    assert status == 1
    lines = layer_lines(out)[name]
    start = next(i for i, line in enumerate(lines) if line.startswith("show: "))
    return lines[start:]


def test_show_prints_the_smallest_case_of_a_linear_mistake(tmp_path, capsys):
    """db averaged over the batch: the smallest case has two examples (with one, the mean is the sum)
    and one input and output; db expected is the sum of G's rows, yours half of it."""
    lines = show_lines(tmp_path, capsys, "linear", *ONE_MISTAKE["linear"])
    assert lines[0] == "show: the smallest case that fails, x (2, 1), weight (1, 1)"
    assert lines[1] == "(G = dL/dy; difference = yours - expected; 3 decimals)"
    arrays = shown(lines)
    assert list(arrays) == ["x", "weight", "bias", "G", "db yours", "db expected", "difference"]
    g = arrays["G"]
    assert g.shape == (2, 1) and arrays["x"].shape == (2, 1)
    np.testing.assert_allclose(arrays["db expected"], g.sum(axis=0), atol=2e-3)
    np.testing.assert_allclose(arrays["db yours"], g.mean(axis=0), atol=2e-3)
    assert lines[-1].startswith("largest difference at db[0]: yours ")


@pytest.mark.parametrize("name", ONE_MISTAKE)
def test_show_works_for_every_exercise(name, tmp_path, capsys):
    """A small case (at most 12 numbers in x), its inputs, and for each wrong gradient yours, the
    expected one and their difference, which is yours - expected to the printed decimals."""
    assert set(ONE_MISTAKE) == set(EXERCISES)
    lines = show_lines(tmp_path, capsys, name, *ONE_MISTAKE[name])
    ex = EXERCISES[name]
    shape = tuple(int(s) for s in re.search(r", (?:x|logits) \(([\d, ]+)\)", lines[0]).group(1).split(",") if s)
    assert np.prod(shape) <= 12, lines[0]
    arrays = shown(lines)
    assert ("logits" if ex.loss else "x") in arrays and ("G" in arrays) != ex.loss
    wrong = [t for t in ex.tensors() if f"{t} yours" in arrays]
    assert wrong, lines
    for tensor in wrong:
        yours, expected = arrays[f"{tensor} yours"], arrays[f"{tensor} expected"]
        assert yours.shape == expected.shape
        assert np.abs(yours - expected).max() > 0.01
    if len(wrong) == 1:
        np.testing.assert_allclose(arrays["difference"], yours - expected, atol=2.1e-3)


def test_show_on_two_backward_calls_prints_both(tmp_path, capsys):
    lines = show_lines(tmp_path, capsys, "linear", *MISTAKES["linear dW not accumulated"][1:3])
    assert "(two backward calls)" in lines[0] and "x (1, 1), weight (1, 1)" in lines[0]
    assert "call 1 of 2 (the gradients add up over both):" in lines
    assert "call 2 of 2 (the gradients add up over both):" in lines


def test_show_on_an_exception_prints_the_case_and_what_is_expected(tmp_path, capsys):
    lines = show_lines(tmp_path, capsys, "conv_naive", *MISTAKES["conv db keeps the batch axis"][1:3])
    assert lines[0].startswith("show: the smallest case that fails, x (1, 1, 2, 2)")
    assert any(line.startswith("db expected") for line in lines) and not any("db yours" in line for line in lines)
    assert lines[-1] == "db: an exception (the hint above says more)"


def test_show_on_the_eval_mode_trap_prints_the_running_statistics(tmp_path, capsys):
    old, new, *_ = BATCHNORM_MISTAKES["the training backward in eval mode"]
    lines = show_lines(tmp_path, capsys, "batchnorm", old, new)
    assert lines[0] == "show: the smallest case that fails, x (3, 1, 1, 1), eval"
    assert "shapes (3, 1, 1, 1) as (3, 1)" in lines[1]
    arrays = shown(lines)
    assert {"running_mean", "running_var", "weight", "G"} <= set(arrays)
    gamma, var = arrays["weight"], arrays["running_var"]
    np.testing.assert_allclose(arrays["dx expected"], gamma / np.sqrt(var + 1e-5) * arrays["G"], atol=3e-3)


def test_without_show_or_on_a_pass_nothing_more_is_printed(tmp_path, capsys):
    write_layer(tmp_path, "relu", *ONE_MISTAKE["relu"])
    out = run(capsys, "check", tmp_path, "--layer", "relu")[1]
    assert "show:" not in out and len(layer_lines(out)["relu"]) == 2
    write_layer(tmp_path, "sigmoid")
    out = run(capsys, "check", tmp_path, "--layer", "sigmoid", "--show")[1]
    assert "show:" not in out and len(layer_lines(out)["sigmoid"]) == 1


def test_numbers_have_a_fixed_precision_unless_they_would_all_round_to_zero():
    assert fmt(np.array([[1.0, -0.25], [1e-9, -0.0]])) == ["[[ 1.000 -0.250]", " [ 0.000  0.000]]"]
    assert fmt(np.array([2e-5, -1e-4])) == ["[ 2.00e-05 -1.00e-04]"]
    assert fmt(np.array([0, 2])) == ["[0 2]"]


def test_a_failure_of_no_layer_case_says_so(tmp_path):
    """A failure of a check of its own (col2im's adjoint identity) with every case of the layer
    passing: --show says there is no case to print."""
    from lenet_np.exercises.cases import Failure, Result
    from lenet_np.exercises.checker import load
    from lenet_np.exercises.show import show

    module = load(write_layer(tmp_path, "conv_im2col"))
    result = Result("FAIL", failures=[Failure("trap: col2im is the adjoint of im2col", "col2im", 1.0, "a hint")])
    (line,) = show(EXERCISES["conv_im2col"], module, result)
    assert line.strip() == "show: no case of the layer fails; the failure is in a check of its own (the hint above)"
