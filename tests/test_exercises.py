"""python -m lenet_np.exercises: the skeleton fails, the solutions pass, and a wrong backward gets a
hint that names its mistake.

Each mistake below is one line of a solution changed the way a student gets it wrong; the check
must fail that layer and say which gradient is wrong and why.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet_np.exercises import EXERCISES, main
from lenet_np.exercises.checker import reference
from lenet_np.exercises.command import ORDER, skeleton, solved, source

ROOT = Path(__file__).resolve().parent.parent


def run(capsys, *argv):
    """(exit status, stdout, stderr) of the command line."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def layer_lines(out: str) -> dict:
    """{layer: [its status line, hint lines...]} from check's output."""
    lines, current = {}, None
    for line in out.splitlines():
        name = line.split(" ", 1)[0]
        if name in EXERCISES:
            current = name
            lines[name] = [line]
        elif line.startswith(" ") and current:
            lines[current].append(line.strip())
    return lines


def write_layer(directory: Path, name: str, old: str = "", new: str = "") -> Path:
    """The solution of one layer with ``old`` replaced by ``new`` (a deliberate mistake)."""
    text = solved(source(name))
    if old:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(text)
    return path


# -- the skeleton and the solutions ---------------------------------------------------------------------------
def test_untouched_skeleton_is_not_implemented_and_fails(tmp_path, capsys):
    status, out, err = run(capsys, "new", tmp_path / "ex")
    assert status == 0 and not err
    assert sorted(p.name for p in (tmp_path / "ex").iterdir()) == sorted([f"{n}.py" for n in ORDER] + ["README.md"])
    status, out, err = run(capsys, "check", tmp_path / "ex")
    assert status == 1
    lines = layer_lines(out)
    assert list(lines) == list(EXERCISES)                    # one line per layer, in order
    for line, in lines.values():
        assert "not implemented" in line and "raises NotImplementedError" in line, line
    assert "0 of 8 layers pass; next: linear.py" in out


def test_check_goes_in_the_order_of_the_book(tmp_path, capsys):
    """check lists the layers, and names the next one to do, in the order of the docs and the README:
    the pooling layers before the convolutions."""
    book = ["linear", "sigmoid", "relu", "softmax_cross_entropy", "avgpool", "maxpool", "conv_naive", "conv_im2col"]
    assert list(ORDER) == list(EXERCISES) == book
    text = (ROOT / "docs" / "exercises.md").read_text()
    assert sorted(book, key=lambda name: text.index(f"`{name}`")) == book
    run(capsys, "new", tmp_path)
    for name in book[:4]:
        (tmp_path / f"{name}.py").unlink()
        write_layer(tmp_path, name)
    status, out, _ = run(capsys, "check", tmp_path)
    assert list(layer_lines(out)) == book and "4 of 8 layers pass; next: avgpool.py" in out
    assert f"\n    {ORDER[4]}.py\n    {ORDER[5]}.py\n    {ORDER[6]}.py" in (tmp_path / "README.md").read_text()


def test_solutions_pass(tmp_path, capsys):
    assert run(capsys, "solutions", tmp_path / "sol")[0] == 0
    status, out, err = run(capsys, "check", tmp_path / "sol")
    assert status == 0, out
    lines = layer_lines(out)
    assert list(lines) == list(EXERCISES)
    for line, in lines.values():
        assert " pass " in line and "15 random shapes" in line, line
    assert "All 8 layers pass" in out


def test_skeleton_is_numpy_only_with_each_backward_raising_under_a_docstring():
    for name in ORDER:
        text = skeleton(source(name))
        tree = ast.parse(text)
        imports = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
        imports |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert imports == {"numpy"}, (name, imports)
        assert "SOLUTION" not in text and "SOLUTION" not in solved(source(name))
        functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        todo = ["backward"] + (["col2im"] if name == "conv_im2col" else [])
        for fn in todo:
            body = functions[fn].body
            doc = ast.get_docstring(functions[fn])
            assert doc and "(" in doc and ")" in doc, (name, fn)           # says what to compute, with shapes
            assert len(body) == 2 and isinstance(body[1], ast.Raise), (name, fn)
            assert "NotImplementedError" in ast.unparse(body[1])
        assert "def forward" in text and f"--layer {name}" in text


def test_skeleton_forward_is_lenet_np_forward(tmp_path, capsys):
    """The forwards the student is given compute what lenet_np's layers compute."""
    run(capsys, "new", tmp_path)
    from lenet_np.exercises.checker import load, student
    for name, ex in EXERCISES.items():
        module = load(tmp_path / ex.file)
        case = ex.fd_cases(np.random.default_rng(0))[0]
        layer = ex.student(getattr(module, ex.cls), case)
        out = layer.forward(case.x, case.config["labels"]) if ex.loss else layer.forward(case.x)
        np.testing.assert_allclose(out, reference(ex, case)[0], rtol=1e-12, atol=1e-12, err_msg=name)
        with pytest.raises(Exception) as raised:
            student(ex, module, case)
        assert isinstance(raised.value.exc, NotImplementedError)


def test_engine_never_imports_the_exercises():
    code = ("import sys, lenet_np, lenet_np.model, lenet_np.train, lenet_np.evaluate, lenet_np.gradcheck; "
            "assert not [m for m in sys.modules if m.startswith('lenet_np.exercises')]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
    for path in (ROOT / "lenet_np").rglob("*.py"):
        if "exercises" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, (ast.Import, ast.ImportFrom)) else []
            module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
            assert not any("exercises" in n for n in [module, *names]), path


# -- mistakes and their hints ------------------------------------------------------------------------------
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
    name, old, new, tensor, words = MISTAKES[mistake]
    write_layer(tmp_path, name, old, new)
    status, out, err = run(capsys, "check", tmp_path, "--layer", name)
    assert status == 1
    (line, *hints) = layer_lines(out)[name]
    assert "FAIL" in line and f"{tensor}" in line.split("FAIL", 1)[1].split(":")[0], line
    assert any(words in h for h in hints), (words, hints)
    # the other rules stay silent: each speaks only where its premise holds
    if "= where += belongs" not in words:
        assert not any("= where += belongs" in h for h in hints), hints
    assert not any("returns zeros" in h for h in hints), hints
    assert len(set(hints)) == len(hints), hints


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


# -- the command line ---------------------------------------------------------------------------------------
def test_layer_selection(tmp_path, capsys):
    run(capsys, "new", tmp_path)
    (tmp_path / "relu.py").unlink()
    write_layer(tmp_path, "relu")                               # solved
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "relu")
    assert status == 0 and list(layer_lines(out)) == ["relu"]
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "relu", "--layer", "linear", "relu")
    assert status == 1 and list(layer_lines(out)) == ["relu", "linear"]     # named once each, in the order given
    assert "1 of 2 layers pass; next: linear.py" in out
    status, _, err = run(capsys, "check", tmp_path, "--layer", "conv")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "invalid choice: 'conv'" in err


def test_bad_dir(tmp_path, capsys):
    status, _, err = run(capsys, "check", tmp_path / "nowhere")
    assert status == 2 and "no such directory" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "a-file").write_text("x")
    status, _, err = run(capsys, "check", tmp_path / "a-file")
    assert status == 2 and "not a directory" in err
    status, _, err = run(capsys, "check", tmp_path)                  # exists, but no exercises in it
    assert status == 1 and err.startswith("error: ") and "exercises new" in err and len(err.strip().splitlines()) == 1
    status, _, err = run(capsys, "new", tmp_path / "a-file")
    assert status == 2 and "not a directory" in err


def test_new_and_solutions_never_overwrite(tmp_path, capsys):
    run(capsys, "new", tmp_path)
    (tmp_path / "linear.py").write_text("# my work\n")
    for command in ("new", "solutions"):
        status, out, err = run(capsys, command, tmp_path)
        assert status == 1 and err.startswith("error: ") and "never overwrites" in err and "linear.py" in err
        assert len(err.strip().splitlines()) == 1
    assert (tmp_path / "linear.py").read_text() == "# my work\n"


def test_a_broken_file_is_one_line_and_the_others_are_checked(tmp_path, capsys):
    write_layer(tmp_path, "linear").write_text("import numpy as np\n\n\nclass Linear(:\n    pass\n")
    relu = write_layer(tmp_path, "relu", "import numpy as np\n", "import numpy as np\nimport not_a_module_anywhere\n")
    where = relu.read_text().splitlines().index("import not_a_module_anywhere") + 1
    write_layer(tmp_path, "sigmoid")
    status, out, _ = run(capsys, "check", tmp_path)
    assert status == 1
    lines = layer_lines(out)
    assert lines["linear"] == [lines["linear"][0]] and "linear.py:4: SyntaxError" in lines["linear"][0]
    assert f"relu.py:{where}: ModuleNotFoundError: No module named 'not_a_module_anywhere'" in lines["relu"][0]
    assert " pass " in lines["sigmoid"][0]
    assert "missing" in lines["maxpool"][0] and "no maxpool.py" in lines["maxpool"][0]


def test_an_exception_names_the_students_line(tmp_path, capsys):
    write_layer(tmp_path, "linear", "self.bias.grad += grad_out.sum(axis=0)", "self.bias.grad += grad_out")
    line, hint = layer_lines(run(capsys, "check", tmp_path, "--layer", "linear")[1])["linear"]
    assert "db: an exception (fails: first run)" in line
    assert "linear.py:48 `self.bias.grad += grad_out` raised ValueError" in hint
    assert "batch axis (3, 5) was added into (5,); sum over the batch" in hint


def test_a_student_session(tmp_path, capsys):
    """new, write one backward wrongly, read the hint, fix it."""
    run(capsys, "new", tmp_path)
    path = tmp_path / "linear.py"
    todo = '        raise NotImplementedError("Linear.backward: yours to write, see the docstring above")\n'
    text = path.read_text()
    assert text.count(todo) == 1
    attempt = ("        x = self.cache\n        self.weight.grad += grad_out.T @ x\n"
               "        self.bias.grad += grad_out.mean(axis=0)\n        return grad_out @ self.weight.data\n")
    path.write_text(text.replace(todo, attempt))
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "linear")
    assert status == 1 and "hint: db is N = 3 times too small" in out
    path.write_text(text.replace(todo, attempt.replace("grad_out.mean(axis=0)", "grad_out.sum(axis=0)")))
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "linear")
    assert status == 0 and "linear                 pass" in out


def test_without_hypothesis_numpy_draws_the_shapes(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "hypothesis", None)         # import hypothesis -> ImportError
    write_layer(tmp_path, "avgpool")
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "avgpool")
    assert status == 0 and "15 random shapes" in out
    write_layer(tmp_path, "avgpool", "share = grad_out[:, :, i, j] / (k * k)", "share = grad_out[:, :, i, j] / k")
    status, out, _ = run(capsys, "check", tmp_path, "--layer", "avgpool")
    assert status == 1 and "lenet_np" in layer_lines(out)["avgpool"][0]


def test_help(capsys):
    for argv in (["--help"], ["check", "--help"], ["new", "--help"], ["solutions", "--help"]):
        status, out, _ = run(capsys, *argv)
        assert status == 0 and "usage: python -m lenet_np.exercises" in out


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
