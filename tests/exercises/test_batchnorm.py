"""The batch-normalization exercise (lenet_np/exercises/batchnorm.py): its solution passes the three
checks, its skeleton is the forward of lenet_np's BatchNorm2d in both modes, and each classic slip of
its backward, written into the solution, gets the hint that names it.
"""

from __future__ import annotations

import numpy as np
import pytest

from lenet_np.exercises import EXERCISES
from lenet_np.exercises.batchnorm import BATCHNORM, bn_case, bn_mistakes
from lenet_np.exercises.checker import compare, load, reference

from .common import check_hint, layer_lines, run, write_layer

THE_EVAL_BRANCH = "        if not self.training:\n"
STEPS = "        x, mu, var, inv_std, xhat = self.cache\n"

# (what the student wrote instead, the gradient named, words of the hint)
MISTAKES = {
    # the paths through the batch statistics
    "no path through the mean": ("return dxc + dmu / m", "return dxc", "dx", "missing the path through the mean"),
    "no path through the variance": ("dxc = dxhat * inv_std + dvar * 2 * xc / m", "dxc = dxhat * inv_std", "dx",
                                     "missing the path through the variance"),
    "the eval-mode backward in training": (THE_EVAL_BRANCH, "        if True:\n", "dx",
                                           "dx treats mu and var as constants: that is the eval-mode backward"),
    # biased and unbiased variance
    "m - 1 in the path through var": ("dvar * 2 * xc / m", "dvar * 2 * xc / (m - 1)", "dx",
                                      "dx divides by m - 1 where var = sum(xc^2) / m hands dvar / m"),
    "inv_std of the unbiased variance": (
        STEPS, STEPS + "        inv_std = 1 / np.sqrt(x.var(axis=(0, 2, 3), ddof=1, keepdims=True) + self.eps)\n",
        "dx", "dx uses the inv_std of the unbiased variance"),
    "the unbiased variance everywhere in dx": (
        STEPS, STEPS + "        inv_std = 1 / np.sqrt(x.var(axis=(0, 2, 3), ddof=1, keepdims=True) + self.eps)\n",
        "dx", "dx uses the unbiased variance (divided by m - 1) in inv_std and in the path through var",
        (("dvar * 2 * xc / m", "dvar * 2 * xc / (m - 1)"),)),
    "dgamma of the unbiased xhat": (
        "self.weight.grad += (grad_out * xhat).sum(axis=axes)",
        "self.weight.grad += (grad_out * (x - mu) / np.sqrt(x.var(axis=axes, ddof=1, keepdims=True) + self.eps)"
        ").sum(axis=axes)", "dgamma", "dgamma uses xhat of the unbiased variance"),
    # the other mode, the other sums
    "the training backward in eval mode": (THE_EVAL_BRANCH, "        if False:\n", "dx",
                                           "dx has the paths through mu and var in eval mode"),
    "m = N": ("        m = x.size // x.shape[1]\n        gamma", "        m = x.shape[0]\n        gamma", "dx",
              "dx divides by N = 2 where each channel has m = N*H*W = 24 values"),
    "no gamma in dx": ("dxhat = grad_out * gamma", "dxhat = grad_out", "dx", "dx is missing the factor gamma"),
    "dgamma with x": ("self.weight.grad += (grad_out * xhat)", "self.weight.grad += (grad_out * x)", "dgamma",
                      "dgamma is sum(G * x)"),
    "dbeta the mean": ("self.bias.grad += grad_out.sum(axis=axes)", "self.bias.grad += grad_out.mean(axis=axes)",
                       "dbeta", "dbeta is the mean over the m = N*H*W = 24 values"),
    "dgamma =": ("self.weight.grad += (grad_out * xhat)", "self.weight.grad = (grad_out * xhat)", "dgamma",
                 "dgamma keeps only the last backward's gradient: = where += belongs; add into self.weight.grad"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_wrong_batchnorm_backward_gets_a_hint_naming_its_mistake(mistake, tmp_path, capsys):
    hints = check_hint(tmp_path, capsys, "batchnorm", *MISTAKES[mistake])
    assert "[finite differences" in hints[0] or "[trap: " in hints[0], hints


def test_the_solution_passes_the_three_checks(tmp_path, capsys):
    write_layer(tmp_path, "batchnorm")
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "batchnorm")
    (line,) = layer_lines(out)["batchnorm"]
    assert status == 0 and " pass " in line
    assert "finite differences" in line and "on 15 random shapes" in line and "4 traps" in line, line
    assert EXERCISES["batchnorm"] is BATCHNORM and BATCHNORM.tensors() == ["dx", "dgamma", "dbeta"]


def test_the_eval_mode_hint_is_silent_in_training_and_the_training_ones_in_eval():
    """Each mistake speaks only in the mode where it is one: in eval the eval-mode backward is right,
    so no hint of training mode is offered there, and the other way round."""
    rng = np.random.default_rng(5)
    train, evaluate = bn_case(rng, (2, 2, 2, 3)), bn_case(rng, (2, 2, 2, 3), training=False)
    hints = {mode: [hint for _, hint, _ in bn_mistakes(case, reference(BATCHNORM, case)[1]["dx"])]
             for mode, case in (("training", train), ("eval", evaluate))}
    assert any("eval-mode backward" in h for h in hints["training"])
    assert not any("eval-mode backward" in h or "unbiased" in h for h in hints["eval"])
    assert not any("in eval mode" in h for h in hints["training"])


def test_a_mistake_that_changes_nothing_stays_silent(tmp_path):
    """With H = W = 1 a channel's m is N: dividing by N is then right, and that case passes."""
    path = write_layer(tmp_path, "batchnorm", "        m = x.size // x.shape[1]\n        gamma",
                       "        m = x.shape[0]\n        gamma")
    module = load(path)
    case = bn_case(np.random.default_rng(0), (3, 2, 1, 1))
    assert compare(BATCHNORM, module, case, "test") == []
    assert compare(BATCHNORM, module, bn_case(np.random.default_rng(0), (3, 2, 2, 1)), "test")
