"""The finite-difference checker itself (lenet_np/gradcheck.py): it catches a wrong backward,
float32 is too coarse for it, its error measure, and it leaves a network as it found it."""

from __future__ import annotations

import subprocess
import sys
import types

import numpy as np
import pytest

import lenet_np
import lenet_np as ln
import lenet_np.gradcheck as gc
from lenet_np import nn
from lenet_np.gradcheck import rel_error

from .helpers import ROOT, exit_status
from .numerics import FD_TOL


def test_gradcheck_catches_a_wrong_backward():
    """A check that cannot fail proves nothing: break a backward and watch it fail."""

    class Broken(nn.Sigmoid):
        def backward(self, grad_out, input_grad=True):
            return super().backward(grad_out) * 1.001

    x = np.random.default_rng(0).standard_normal((3, 4))
    assert max(ln.gradcheck(Broken(), x).values()) > 1e-4
    assert max(ln.gradcheck(nn.Sigmoid(), x).values()) < FD_TOL


def test_float32_is_too_coarse_for_finite_differences():
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(2, 3, 3, rng=rng)
    x = rng.standard_normal((2, 2, 6, 6)).astype(np.float32)
    err32 = max(ln.gradcheck(layer, x, eps=1e-3).values())
    err64 = max(ln.gradcheck(layer.double(), x.astype(np.float64)).values())
    assert err64 < FD_TOL < err32


def test_rel_error():
    assert rel_error([1.0, 2.0], [1.0, 2.0]) == 0.0
    assert rel_error([0.0], [0.0]) == 0.0
    assert rel_error([1.0, 0.0], [1.0, 0.5]) == pytest.approx(0.5)


def test_gradcheck_leaves_batch_norm_running_statistics_as_it_found_them(xp):
    """Each finite-difference forward of a BatchNorm in training updates its running statistics;
    gradcheck puts them back, so a trained network checked this way evaluates as before."""
    bn = nn.BatchNorm2d(3).double().to("cuda" if xp is not np else "cpu")
    x = xp.asarray(np.random.default_rng(7).standard_normal((4, 3, 5, 5)) * 3 + 1)   # not gradcheck's stream
    bn(x)                                                        # one real step: stats away from the defaults
    before = {k: ln.as_numpy(v).copy() for k, v in bn.state_dict().items()}
    errors = ln.gradcheck(bn, x, max_elements=10)
    assert max(errors.values()) < 1e-6
    for k, v in bn.state_dict().items():
        np.testing.assert_array_equal(ln.as_numpy(v), before[k], err_msg=k)


# -- the command line: python -m lenet_np.gradcheck ----------------------------------------------
# -- gradcheck command line ------------------------------------------------------------------
def test_gradcheck_cli_one_layer(capsys):
    assert gc.main(["--layer", "linear", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    for label in ("fc.0 Linear(256, 120)", "fc.2 Linear(120, 84)", "fc.4 Linear(84, 10)"):
        assert label in out
    assert "weight" in out and "bias" in out and "FAIL" not in out
    assert "All float64 errors are below 1e-06" in out


def test_gradcheck_cli_fails_on_a_wrong_backward(capsys, monkeypatch):
    right = nn.Sigmoid.backward

    def wrong(self, grad_out, input_grad=True):
        return right(self, grad_out, input_grad) * 1.001          # one part in a thousand

    monkeypatch.setattr(nn.Sigmoid, "backward", wrong)
    assert gc.main(["--layer", "sigmoid"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "FAILED" in out and "conv.1 Sigmoid()" in out


def test_gradcheck_cli_rows_show_both_dtypes():
    check = next(c for c in gc.make_checks(0) if c.layer == "conv")
    rows = gc.run_check(check)
    assert [r["tensor"] for r in rows] == ["input", "weight", "bias"]
    for r in rows:
        assert r["ok"] and r["float64"] < 1e-6
        assert r["float32"] > 100 * r["float64"]                # float32 is far coarser


def test_gradcheck_cli_whole_lenet_one_variant():
    check = next(c for c in gc.make_checks(1) if c.layer == "lenet")    # the seed's LeNet(sigmoid, max)
    rows = gc.run_check(check, seed=1)
    assert len(rows) == 11 and rows[0]["checked"] == 25
    assert all(r["ok"] for r in rows), [(r["tensor"], r["float64"]) for r in rows]


def test_gradcheck_cli_max_elements_caps_the_whole_lenet_and_maxpool_is_pool(capsys):
    """--max-elements 3 checks 3 elements per tensor of the whole LeNet too (25 is its ceiling); the
    header explains its stopping threshold by the pass mark; --layer maxpool is the pool check."""
    for m, want in ((3, 3), (200, 25), (None, 25)):
        assert {c.max_elements for c in gc.make_checks(0, m) if c.layer == "lenet"} == {want}
    assert gc.main(["--layer", "maxpool", "--max-elements", "3"]) == 0
    out = capsys.readouterr().out
    assert "conv.2 MaxPool2d(2, 2)" in out and "3/6912" in out and "Linear" not in out
    assert "below 2e-07. That is a fifth of the pass mark: a float64\nerror must stay below 1e-06." in out


def test_gradcheck_steps_with_one_step_is_gradcheck():
    rng = np.random.default_rng(0)
    layer = nn.Conv2d(2, 3, 3, rng=rng).double()
    x = rng.standard_normal((2, 2, 6, 6))
    assert gc.gradcheck_steps(layer, x, steps=(1e-6,), max_elements=20) == lenet_np.gradcheck(
        layer, x, eps=1e-6, max_elements=20)


def test_tie_free():
    for n in (1, 2, 7, 8):
        v = gc.tie_free(np.random.default_rng(0), (n,), spacing=0.1)
        assert len(np.unique(v)) == n and np.abs(v).min() >= 0.05 - 1e-12


def test_gradcheck_cli_arguments(capsys):
    assert exit_status(gc.main, ["--layer", "nonsense"]) == 2
    assert exit_status(gc.main, ["--layer", "loss", "--max-elements", "0"]) == 2
    assert exit_status(gc.main, ["--layer", "linear", "--seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert "argument --max-elements: expected a whole number >= 1, got '0'" in err
    assert "argument --seed: expected a whole number >= 0, got '-1'" in err and "Traceback" not in err


def test_gradcheck_is_the_module_and_calling_it_checks():
    """lenet_np.gradcheck is the module (no function shadows it), and calling it calls its gradcheck."""
    assert isinstance(gc, types.ModuleType) and gc is lenet_np.gradcheck is sys.modules["lenet_np.gradcheck"]
    from lenet_np import gradcheck as imported
    from lenet_np.gradcheck import gradcheck as function
    assert imported is gc and isinstance(function, types.FunctionType) and function is gc.gradcheck
    rng = np.random.default_rng(0)
    layer, x = nn.Linear(3, 2, rng=rng).double(), rng.standard_normal((4, 3))
    errors = lenet_np.gradcheck(layer, x, seed=1)
    assert errors == function(layer, x, seed=1) and set(errors) == {"input", "weight", "bias"}
    assert max(errors.values()) < 1e-6


def test_python_m_gradcheck_runs_without_a_warning():
    """``python -m lenet_np.gradcheck``: the package does not import the module first, so runpy
    runs it once, without its RuntimeWarning (turned into an error here)."""
    done = subprocess.run([sys.executable, "-W", "error", "-m", "lenet_np.gradcheck", "--layer", "flatten"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert "All float64 errors are below 1e-06" in done.stdout
