"""The CuPy code paths: the stand-in behaves like CuPy where it matters, its names match the
real package's, a training step makes no host sync, device checks, and a CUDA training run
with a checkpoint, an exact resume and an evaluation (on the stand-in here, on CuPy on a GPU)."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import backend, checkpoint, evaluate, nn, train

from . import cupy_standin as cs
from .conftest import REAL_GPU, requires_gpu, to_np
from .test_train import make_dataset

ROOT = Path(__file__).resolve().parent.parent
sp = cs.module                      # the stand-in itself
counts_reads = pytest.mark.skipif(REAL_GPU, reason="counts host reads: the stand-in's, not real CuPy's")


def dev(a):
    """An array on device "cuda": real CuPy on a GPU, else the stand-in."""
    return backend.to_device(np.asarray(a), "cuda")


def real_cupy():
    """The real cupy package where it is installed (it imports without a GPU), else skip."""
    try:
        return importlib.import_module("cupy")
    except Exception as exc:     # not installed, or broken CUDA libraries
        pytest.skip(f"the real cupy package does not import here ({type(exc).__name__})")


# -- the stand-in behaves like CuPy ----------------------------------------------------------------
def test_numpy_will_not_convert_it_implicitly():
    a = sp.arange(6).reshape(2, 3)
    for convert in (np.asarray, np.array, lambda a: np.add(a, np.ones(3))):
        with pytest.raises(TypeError):
            convert(a)
    assert isinstance(sp.asnumpy(a), np.ndarray) and not isinstance(a, np.ndarray)


def test_numpy_functions_dispatch_to_it_and_unknown_ones_fail():
    a = sp.asarray(np.arange(6.0).reshape(2, 3))
    s = np.sum(a, axis=0)                  # __array_function__
    assert isinstance(s, sp.ndarray) and sp.asnumpy(s).tolist() == [3, 5, 7]
    assert isinstance(np.exp(a), sp.ndarray)           # __array_ufunc__
    with pytest.raises(TypeError):
        np.histogram(a)                    # not among the stand-in's names


def test_only_cupys_keyword_arguments():
    a = sp.zeros((2, 2), dtype=np.float32)
    with pytest.raises(TypeError):
        sp.exp(a, where=a > 0)             # CuPy's ufuncs take out, dtype, casting only
    with pytest.raises(TypeError):
        sp.zeros((2, 2), like=a)


def test_elementwise_results_are_c_contiguous_and_reductions_0d():
    a = sp.zeros((4, 3, 2), dtype=np.float32).transpose(2, 0, 1)
    assert not a.flags.c_contiguous
    assert (a + 1).flags.c_contiguous and sp.exp(a).flags.c_contiguous
    assert isinstance(a.sum(), sp.ndarray) and a.sum().ndim == 0


def test_strided_views_are_writable_and_indices_wrap():
    a = sp.zeros(4)
    view = sp.lib.stride_tricks.as_strided(a, shape=(3, 2), strides=(8, 8))
    view[0, 1] = 5.0                        # lands in a[1]: no writeable=False on CuPy
    assert sp.asnumpy(a).tolist() == [0, 5, 0, 0]
    b = sp.asarray(np.arange(5.0))
    assert sp.asnumpy(b[sp.asarray(np.array([5, -1, 7]))]).tolist() == [0, 4, 2]


def test_stand_in_is_as_strict_as_cupy():
    a = sp.zeros(3)
    with pytest.raises(ValueError):
        a[...] = np.ones(3)                 # a host array is no fill value in CuPy
    a[...] = np.float32(2)                  # a scalar is
    with pytest.raises(NotImplementedError):
        sp.exp.at(a, sp.asarray(np.array([0])))
    with pytest.raises(NotImplementedError):
        sp.maximum.reduce(a)
    with cs.count_host_reads() as reads:
        a[a > 1], sp.where(a > 1), (a > 1).nonzero()
    assert sum(reads.values()) == 3         # each needs the count of True values on the host


def test_every_host_read_is_counted():
    a = sp.ones(3)
    with cs.count_host_reads() as reads:
        b = (a * 2).sum()
    assert not reads
    with cs.count_host_reads() as reads:
        float(b), bool(b > 0), int(b), b.item(), a.get(), sp.asnumpy(a)
    assert sum(reads.values()) == 6


# -- its names are CuPy's --------------------------------------------------------------------------
def xp_names_used_by_lenet_np():
    names = set()
    for path in (ROOT / "lenet_np").rglob("*.py"):
        names |= set(re.findall(r"\bxp\.([a-z_][a-z0-9_]*)", path.read_text()))
    return names - {"float32", "float64", "int64"}   # dtypes: NumPy's own types in both libraries


def test_stand_in_offers_every_name_lenet_np_uses():
    names = xp_names_used_by_lenet_np()
    assert "asarray" in names and "matmul" in names        # the scan found the code
    missing = sorted(n for n in names if not hasattr(sp, n))
    assert not missing, f"lenet_np uses xp.{missing}, which the stand-in lacks"


def test_stand_in_names_and_keywords_exist_in_real_cupy():
    cupy = real_cupy()
    for name, kwargs in cs.NAMES.items():
        fn = getattr(cupy, name, None)
        assert fn is not None, f"cupy has no {name}"
        params = inspect.signature(fn).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        assert takes_any or set(kwargs) <= set(params), f"cupy.{name} takes {list(params)}, not all of {kwargs}"
    for name in cs.UFUNCS:
        assert type(getattr(cupy, name)).__name__ == "ufunc", name
    for name in cs._METHODS:
        assert hasattr(cupy.ndarray, name), f"cupy.ndarray has no {name}"
    for name in xp_names_used_by_lenet_np():
        assert hasattr(cupy, name), f"lenet_np uses xp.{name}, which cupy lacks"


# -- no host sync in a training step ----------------------------------------------------------------
@counts_reads
def test_training_steps_make_no_host_sync_until_the_periodic_check():
    net = ln.LeNet(seed=0).to("cuda")
    opt = ln.optim.Adam(net.parameters())
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = dev(rng.random((16, 1, 28, 28), dtype=np.float32))
    y = dev(rng.integers(0, 10, 16))
    losses = backend.cuda_module().zeros(3)
    with cs.count_host_reads() as reads:
        for step in range(3):
            opt.zero_grad()
            losses[step] = loss_fn.forward(net(x), y)
            net.backward(loss_fn.backward(), input_grad=False)
            opt.step()
    assert not reads, f"host reads inside training steps: {dict(reads)}"
    with cs.count_host_reads() as reads:
        loss_fn.check()
    assert sum(reads.values()) == 1      # the smallest and the largest label, in one read


@counts_reads
def test_training_command_reads_back_only_at_its_checks(tmp_path):
    toy = make_dataset(tmp_path / "data", n_train=256, n_test=32)
    with cs.count_host_reads() as reads:
        assert train.main(["--data-dir", str(toy), "--device", "cuda", "--batch-size", "4", "--epochs", "1",
                           "--quiet"]) == 0
    # 64 steps, one check at the end of the epoch (every 50 steps on a GPU): a handful of reads
    # there and in the evaluation, never one per step
    assert 0 < sum(reads.values()) < 32, dict(reads)


# -- labels out of range on the device -------------------------------------------------------------
@pytest.mark.parametrize("bad", [10, -1])
def test_bad_label_on_the_device_fails_at_the_check_with_the_cpu_message(bad):
    logits = np.zeros((4, 10), dtype=np.float32)
    labels = np.array([1, 2, bad, 3])
    with pytest.raises(ValueError) as on_cpu:
        nn.CrossEntropyLoss().forward(logits, labels)
    loss_fn = nn.CrossEntropyLoss()
    with cs.count_host_reads() as reads:
        loss_fn.forward(dev(logits), dev(labels))    # no sync: no error yet
    assert REAL_GPU or not reads
    with pytest.raises(ValueError) as on_gpu:
        loss_fn.check()
    assert str(on_gpu.value) == str(on_cpu.value)
    with pytest.raises(ValueError, match=re.escape(str(on_cpu.value))):
        nn.CrossEntropyLoss()(dev(logits), dev(labels))   # reads the loss: checks


def test_training_command_stops_on_a_bad_label_on_the_device(tmp_path, capsys, monkeypatch):
    toy = make_dataset(tmp_path / "data", n_train=64, n_test=32)
    real = train.load_fashion_mnist

    def with_bad_label(*args, **kwargs):
        d = real(*args, **kwargs)
        d.train_labels[5] = 12
        return d
    monkeypatch.setattr(train, "load_fashion_mnist", with_bad_label)
    status = train.main(["--data-dir", str(toy), "--device", "cuda", "--batch-size", "16", "--quiet"])
    err = capsys.readouterr().err
    assert status == 1 and "labels must lie in [0, 10)" in err and "Traceback" not in err


# -- device checks ----------------------------------------------------------------------------------
def test_input_on_the_wrong_device_says_how_to_fix_it():
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    with pytest.raises(ValueError, match=r"net.to\('cuda'\)"):
        ln.LeNet(seed=0)(dev(x))
    with pytest.raises(ValueError, match=r"net.to\('cpu'\)"):
        ln.LeNet(seed=0).to("cuda")(x)
    with pytest.raises(ValueError, match="on cuda"):
        nn.Linear(3, 2)(dev(np.zeros((1, 3), dtype=np.float32)))
    with pytest.raises(ValueError, match="labels are on cuda"):
        nn.CrossEntropyLoss()(np.zeros((2, 3), dtype=np.float32), dev(np.array([0, 1])))


def test_optimizer_state_loads_from_device_arrays():
    net = ln.LeNet(seed=0).to("cuda")
    opt = ln.optim.Adam(net.parameters())
    loss_fn = nn.CrossEntropyLoss()
    x = dev(np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32))
    loss_fn(net(x), dev(np.array([0, 1, 2, 3])))
    net.backward(loss_fn.backward())
    opt.step()
    state = {k: dev(v) for k, v in opt.state_dict().items()}      # device arrays
    other = ln.optim.Adam(ln.LeNet(seed=1).to("cuda").parameters())
    other.load_state_dict(state)
    assert other.state[0]["step"] == 1 and backend.device_of(other.state[0]["exp_avg"]) == "cuda"
    np.testing.assert_array_equal(to_np(other.state[3]["exp_avg_sq"]), to_np(opt.state[3]["exp_avg_sq"]))


# -- a CUDA training run: checkpoint, exact resume, evaluate ----------------------------------------
def cuda_run_resumes_exactly(tmp_path):
    toy = make_dataset(tmp_path / "data", n_train=96, n_test=32)
    flags = ["--data-dir", str(toy), "--device", "cuda", "--batch-size", "32", "--quiet", "--lr", "0.01"]
    full, half = tmp_path / "full.npz", tmp_path / "half.npz"
    assert train.main([*flags, "--epochs", "2", "--checkpoint", str(full)]) == 0
    assert train.main([*flags, "--epochs", "1", "--checkpoint", str(half)]) == 0
    assert train.main([*flags, "--epochs", "2", "--resume", str(half), "--checkpoint", str(half)]) == 0
    a, b = checkpoint.load(full), checkpoint.load(half)
    for k in a["params"]:
        np.testing.assert_array_equal(a["params"][k], b["params"][k])
    assert a["meta"]["history"][-1]["loss"] == b["meta"]["history"][-1]["loss"]
    assert evaluate.main(["--checkpoint", str(full), "--data-dir", str(toy), "--device", "cuda"]) == 0
    net, _ = checkpoint.load_network(full, "cuda")
    assert backend.device_of(net.conv[0].weight.data) == "cuda"


def test_cuda_training_run_resumes_exactly_on_the_stand_in(tmp_path, capsys):
    if REAL_GPU:
        pytest.skip("a GPU is present: the run below uses it")
    assert backend.cuda_module() is sp
    cuda_run_resumes_exactly(tmp_path)
    assert "test accuracy" in capsys.readouterr().out


@requires_gpu
def test_cuda_training_run_resumes_exactly_on_the_gpu(tmp_path, capsys):
    assert backend.cuda_module().__name__ == "cupy" and backend.cuda_module() is not sp
    cuda_run_resumes_exactly(tmp_path)
    assert "test accuracy" in capsys.readouterr().out


def test_one_cupy_build_named_everywhere():
    """The `cuda` extra, the install hint of the error and the README name the same build."""
    setup = (ROOT / "setup.cfg").read_text()
    extra = re.search(r"^cuda =\s*\n\s+(\S+)", setup, re.M).group(1)
    assert extra.startswith(backend.CUPY_PACKAGE + ">=")
    assert backend.CUPY_PACKAGE in (ROOT / "README.md").read_text()
    assert backend.CUPY_PACKAGE in (ROOT / "benchmarks" / "gpu_check.py").read_text()
    previous = backend.use_cuda_module(None)
    try:
        with pytest.raises(RuntimeError, match=f"pip install {backend.CUPY_PACKAGE}"):
            backend.require_cupy()
    finally:
        backend.use_cuda_module(previous)
