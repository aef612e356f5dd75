"""python -m lenet_np.exercises, the command: the skeleton fails, the solutions pass, the layers
come in the order of the book, and the command line refuses what it cannot do in one line.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest

from lenet_np.exercises import EXERCISES
from lenet_np.exercises.checker import load, reference, student
from lenet_np.exercises.command import ORDER, skeleton, solved, source

from .common import ROOT, layer_lines, run, write_layer


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
    assert "0 of 9 layers pass; next: linear.py" in out


def test_check_goes_in_the_order_of_the_book(tmp_path, capsys):
    """check lists the layers, and names the next one to do, in the order of the docs and the README:
    the pooling layers before the convolutions, batch normalization (the book's page after them) last."""
    book = ["linear", "sigmoid", "relu", "softmax_cross_entropy", "avgpool", "maxpool", "conv_naive", "conv_im2col",
            "batchnorm"]
    assert list(ORDER) == list(EXERCISES) == book
    text = (ROOT / "docs" / "exercises.md").read_text()
    assert sorted(book, key=lambda name: text.index(f"`{name}`")) == book
    run(capsys, "new", tmp_path)
    for name in book[:4]:
        (tmp_path / f"{name}.py").unlink()
        write_layer(tmp_path, name)
    status, out, _ = run(capsys, "check", tmp_path)
    assert list(layer_lines(out)) == book and "4 of 9 layers pass; next: avgpool.py" in out
    assert f"\n    {ORDER[4]}.py\n    {ORDER[5]}.py\n    {ORDER[6]}.py" in (tmp_path / "README.md").read_text()


def test_solutions_pass(tmp_path, capsys):
    assert run(capsys, "solutions", tmp_path / "sol")[0] == 0
    status, out, err = run(capsys, "check", tmp_path / "sol")
    assert status == 0, out
    lines = layer_lines(out)
    assert list(lines) == list(EXERCISES)
    for line, in lines.values():
        assert " pass " in line and "15 random shapes" in line, line
    assert "All 9 layers pass" in out


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
    for name, ex in EXERCISES.items():
        module = load(tmp_path / ex.file)
        rng = np.random.default_rng(0)
        for case in ex.fd_cases(rng) + ex.traps(rng):          # batch normalization's eval mode among them
            case = case.astype(np.float64)
            case.then = None                                    # one call: reference() runs both
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


