"""The checks and their hints (lenet_np/exercises/checker.py, diagnose.py): each mistake below is one
line of a solution changed the way a student gets it wrong; the check must fail that layer and say
which gradient is wrong and why.
"""

from __future__ import annotations

import pytest

from .common import check_hint, layer_lines, run, write_layer

MISTAKES = {
    # a missing transpose
    "linear dW transposed": ("linear", "self.weight.grad += grad_out.T @ x",
                             "self.weight.grad += (x.T @ grad_out).reshape(self.weight.data.shape)",
                             "dW", "off by a transpose"),
    "linear dW transposed, shapes clash": ("linear", "self.weight.grad += grad_out.T @ x",
                                           "self.weight.grad += x.T @ grad_out", "dW", "off by a transpose"),
    "im2col dW transposed": ("conv_im2col", "self.weight.grad += (g.T @ cols).reshape(w.shape)",
                             "self.weight.grad += (cols.T @ g).reshape(w.shape)", "dW", "off by a transpose"),
    # a missing sum over the batch
    "linear db first example": ("linear", "self.bias.grad += grad_out.sum(axis=0)",
                                "self.bias.grad += grad_out[0]", "db", "the sum over the batch is missing"),
    "linear db mean": ("linear", "self.bias.grad += grad_out.sum(axis=0)", "self.bias.grad += grad_out.mean(axis=0)",
                       "db", "averaged over the batch where the sum belongs"),
    "conv db keeps the batch axis": ("conv_naive", "self.bias.grad += grad_out.sum(axis=(0, 2, 3))",
                                     "self.bias.grad += grad_out.sum(axis=(2, 3))", "db", "sum over the batch"),
    "loss without 1/N": ("softmax_cross_entropy", "return grad / n", "return grad", "dlogits",
                         "MEAN over the batch: divide by N"),
    # = where += belongs
    "col2im =": ("conv_im2col", "j:j + stride * ow:stride] +=", "j:j + stride * ow:stride] =", "dx",
                 "= where += belongs"),
    "maxpool = on overlapping windows": ("maxpool", "dx_pad[every_n, every_c, row, col] += grad_out",
                                         "dx_pad[every_n, every_c, row, col] = grad_out", "dx", "= where += belongs"),
    "conv naive dx =": ("conv_naive", "dx_pad[:, :, rows, cols] += np.einsum", "dx_pad[:, :, rows, cols] = np.einsum",
                        "dx", "= where += belongs"),
    "linear dW not accumulated": ("linear", "self.weight.grad += grad_out.T @ x", "self.weight.grad = grad_out.T @ x",
                                  "dW", "keeps only the last backward's gradient: = where += belongs"),
    # the other traps
    "maxpool ties to the last maximum": ("maxpool", "first = window.argmax(axis=2)",
                                         "first = k * k - 1 - window[:, :, ::-1].argmax(axis=2)", "dx",
                                         "LAST maximum"),
    "relu at 0": ("relu", "return grad_out * (x > 0)", "return grad_out * (x >= 0)", "dx", "not x >= 0"),
    "sigmoid writes into grad_out": ("sigmoid", "return grad_out * y * (1 - y)",
                                     "grad_out *= y * (1 - y)\n        return grad_out", "dx",
                                     "changed grad_out in place"),
    "conv flipped kernel": ("conv_naive", 'np.einsum("no,nckl->ockl", g, window)',
                            'np.einsum("no,nckl->ockl", g, window[:, :, ::-1, ::-1])', "dW", "flipped kernel"),
    "avgpool without 1/K^2": ("avgpool", "share = grad_out[:, :, i, j] / (k * k)", "share = grad_out[:, :, i, j]",
                              "dx", "K*K = 4 times too large"),
    "im2col db mean": ("conv_im2col", "self.bias.grad += g.sum(axis=0)", "self.bias.grad += g.mean(axis=0)", "db",
                       "db is the mean over the batch and the positions where the sum belongs"),
    # the conv mistakes that are not = for +=, although no pixel of the first case is in one window only
    "im2col dx flipped kernel": ("conv_im2col", "dcols = g @ w.reshape(o, -1)",
                                 "dcols = g @ w[:, :, ::-1, ::-1].reshape(o, -1)", "dx", "dx uses the flipped kernel"),
    "naive dx flipped kernel": ("conv_naive", 'np.einsum("no,ockl->nckl", g, w)',
                                'np.einsum("no,ockl->nckl", g, w[:, :, ::-1, ::-1])', "dx",
                                "dx uses the flipped kernel"),
    "im2col grad_out reshaped without moving O last": ("conv_im2col",
                                                       "g = grad_out.transpose(0, 2, 3, 1).reshape(-1, o)",
                                                       "g = grad_out.reshape(-1, o)", "dx", "without moving O last"),
    # the padding cut off the end only, or off the start only
    "im2col padding cut on the wrong side": ("conv_im2col", "return dx_pad[:, :, p:p + h, p:p + wd]",
                                             "return dx_pad[:, :, :h, :wd]", "dx", "cut on the wrong side"),
    "naive padding cut on the wrong side": ("conv_naive", "return dx_pad[:, :, p:p + h, p:p + wd]",
                                            "return dx_pad[:, :, 2 * p:, 2 * p:]", "dx", "cut on the wrong side"),
    "maxpool padding cut on the wrong side": ("maxpool", "return dx_pad[:, :, p:p + h, p:p + w]",
                                              "return dx_pad[:, :, :h, :w]", "dx", "cut on the wrong side"),
    "avgpool padding cut on the wrong side": ("avgpool", "return dx_pad[:, :, p:p + h, p:p + w]",
                                              "return dx_pad[:, :, 2 * p:, 2 * p:]", "dx", "cut on the wrong side"),
    # a trap's own explanation: dx wrong only at x == 0, in a way no listed mistake gives
    "relu half at 0": ("relu", "return grad_out * (x > 0)", "return grad_out * (x > 0) + grad_out * (x == 0) / 2", "dx",
                       "dx fails this trap: at x == 0 the gradient is 0"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_wrong_backward_gets_a_hint_naming_its_mistake(mistake, tmp_path, capsys):
    check_hint(tmp_path, capsys, *MISTAKES[mistake])


def test_each_hint_names_its_gradient_and_a_trap_speaks_only_when_the_rest_pass(tmp_path, capsys):
    """grad_out.reshape(-1, O) without moving O last breaks dx, dW and db: one hint each, naming its
    tensor; the non-square trap's explanation stays silent, since the ordinary cases fail too."""
    write_layer(tmp_path, "conv_im2col", "g = grad_out.transpose(0, 2, 3, 1).reshape(-1, o)",
                "g = grad_out.reshape(-1, o)")
    line, *hints = layer_lines(run(capsys, "check", tmp_path, "--layer", "conv_im2col")[1])["conv_im2col"]
    assert "dx, dW, db:" in line
    assert [h.split(":")[1].strip() for h in hints] == ["dx", "dW", "db"], hints
    assert all("without moving O last" in h for h in hints) and "swapped axes" not in "".join(hints)


def test_a_col2im_with_eq_fails_its_adjoint_check(tmp_path, capsys):
    write_layer(tmp_path, "conv_im2col", "j:j + stride * ow:stride] +=", "j:j + stride * ow:stride] =")
    out = run(capsys, "check", tmp_path, "--layer", "conv_im2col")[1]
    hint = [h for h in layer_lines(out)["conv_im2col"] if "col2im is the adjoint" in h]
    assert hint and "<im2col(x), c> = " in hint[0] and "= where += belongs" in hint[0], out


def test_worst_error_is_printed(tmp_path, capsys):
    write_layer(tmp_path, "linear", "self.bias.grad += grad_out.sum(axis=0)", "self.bias.grad += grad_out[0]")
    line = layer_lines(run(capsys, "check", tmp_path)[1])["linear"][0]
    worst = float(line.split("worst error ")[1].split()[0])
    assert 0.1 < worst < 10


def test_a_mistake_only_random_shapes_find_is_shrunk_to_the_smallest(tmp_path, capsys):
    """dx doubled only when IN > 5: the fixed cases miss it, Hypothesis finds it and shrinks it to
    one example and IN = 6."""
    write_layer(tmp_path, "linear", "return grad_out @ self.weight.data",
                "return grad_out @ self.weight.data * (1 + (x.shape[1] > 5))")
    line, hint = layer_lines(run(capsys, "check", tmp_path, "--layer", "linear")[1])["linear"]
    assert "dx: worst error 5.0e-01 (fails: lenet_np)" in line
    assert hint.endswith("[lenet_np: x (1, 6), weight (1, 6)]") and "off by a factor 2" in hint


@pytest.mark.parametrize("call", ["raise SystemExit(0)", "import sys; sys.exit()"])
def test_a_backward_that_exits_is_a_failure_not_a_pass(call, tmp_path, capsys):
    """sys.exit() inside a student's backward must not end the check with status 0 and no output."""
    write_layer(tmp_path, "linear", "self.bias.grad += grad_out.sum(axis=0)", f"{call}  # noqa")
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "linear")
    line, hint = layer_lines(out)["linear"]
    assert status == 1 and "FAIL" in line and "SystemExit" in hint
