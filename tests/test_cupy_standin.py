"""The CuPy code paths: the stand-in behaves like CuPy where it matters, its names match the
real package's, a training step makes no host sync, device checks, and a CUDA training run
with a checkpoint, an exact resume and an evaluation (on the stand-in here, on CuPy on a GPU)."""

from __future__ import annotations

import importlib
import inspect
import re
import zlib
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


def parameters(fn):
    """The parameter names of fn, and whether it takes any keyword; for a compiled (Cython)
    function without a signature, read from the first line of its docstring, as
    "fuse(*args, **kwargs)" or "Event.record(self, stream=None)"."""
    try:
        params = inspect.signature(fn).parameters.values()
        return [p.name for p in params], any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    except ValueError:
        head = (fn.__doc__ or "").strip().splitlines()[0]
        parts = head[head.index("(") + 1:head.rindex(")")].split(",")
        names = [p.split("=")[0].split(":")[0].split()[-1] for p in parts if p.strip()]   # "int device_id"
        return [n.lstrip("*") for n in names if n not in ("/", "*")], any(n.startswith("**") for n in names)


def test_stand_in_names_and_keywords_exist_in_real_cupy():
    cupy = real_cupy()
    for name, kwargs in cs.NAMES.items():
        fn = getattr(cupy, name, None)
        assert fn is not None, f"cupy has no {name}"
        params, takes_any = parameters(fn)
        assert takes_any or set(kwargs) <= set(params), f"cupy.{name} takes {params}, not all of {kwargs}"
    for name in cs.UFUNCS:
        assert type(getattr(cupy, name)).__name__ == "ufunc", name
    for name in cs._METHODS:
        assert hasattr(cupy.ndarray, name), f"cupy.ndarray has no {name}"
    for name in xp_names_used_by_lenet_np():
        assert hasattr(cupy, name), f"lenet_np uses xp.{name}, which cupy lacks"


def test_stand_in_cuda_timing_api_is_cupys():
    """cuda.Event, cuda.Stream and their methods: the names and parameters of CuPy's."""
    cupy = real_cupy()
    for name in ("Device", "Event", "Stream", "get_elapsed_time", "get_current_stream"):
        assert hasattr(cupy.cuda, name), f"cupy.cuda has no {name}"
        ours, theirs = getattr(sp.cuda, name), getattr(cupy.cuda, name)
        if not isinstance(ours, type):
            assert parameters(ours)[0] == parameters(theirs)[0], name
    for cls, methods in ((cs.Event, ("record", "synchronize")),
                         (cs.Stream, ("record", "synchronize", "wait_event", "use", "__enter__", "__exit__"))):
        real = getattr(cupy.cuda, cls.__name__)
        assert parameters(cls.__init__)[0] == parameters(real.__init__)[0], cls.__name__
        for m in methods:
            assert parameters(getattr(cls, m))[0][1:] == parameters(getattr(real, m))[0][1:], f"{cls.__name__}.{m}"
        assert hasattr(real, "done") and hasattr(cls, "done")
    assert isinstance(cupy.cuda.Stream.null, cupy.cuda.Stream) and isinstance(sp.cuda.Stream.null, sp.cuda.Stream)
    assert issubclass(cupy.cuda.runtime.CUDARuntimeError, RuntimeError)


def compiled_strings(module):
    """The string constants of a compiled CuPy module (Cython keeps them zlib-compressed in
    the shared object), to find CuPy's own error messages; skip where none are found."""
    data = Path(module.__file__).read_bytes()
    found = []
    for m in re.finditer(rb"\x78[\x01\x5e\x9c\xda]", data):
        try:
            text = zlib.decompressobj().decompress(data[m.start():m.start() + 4_000_000])
        except zlib.error:
            continue
        if len(text) > 1000:
            found.append(text.decode("utf-8", "replace"))
    if not found:
        pytest.skip(f"no compressed string table in {module.__file__}")
    return "\n".join(found)


def test_ufunc_at_refuses_what_cupy_refuses():
    """ufunc.at: CuPy's scatter ops only, and only the dtypes of their atomics (the messages
    and the ufuncs are checked against the installed CuPy where it imports)."""
    idx = sp.asarray(np.array([0, 2, 2]))
    for name, dtypes in cs._Ufunc.AT_DTYPES.items():
        for dtype in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint32", "uint64",
                      "float16", "float32", "float64"):
            a = sp.zeros(3, dtype=dtype)
            if dtype in dtypes:
                getattr(sp, name).at(a, idx, a.dtype.type(1))
            else:
                with pytest.raises(TypeError, match=f"cupy.{name}.at only supports"):
                    getattr(sp, name).at(a, idx, a.dtype.type(1))
    a = sp.zeros(3, dtype=np.float32)
    with pytest.raises(TypeError):
        sp.subtract.at(a, idx, 1.0)               # scatter subtract: int32 and uint32 only
    with pytest.raises(TypeError):
        sp.maximum.at(sp.zeros(3, dtype=np.float16), idx, 1.0)
    with pytest.raises(TypeError, match="without b"):
        sp.add.at(a, idx)                          # CuPy would scatter NaN; NumPy raises
    with pytest.raises(NotImplementedError):
        sp.exp.at(a, idx)
    sp.subtract.at(a, slice(0, 2), 1.0)           # no index array: the plain ufunc, any dtype
    sp.subtract.at(a, a < 0, 1.0)                  # a mask: a plain kernel, any dtype
    sp.add.at(a, (idx,), sp.ones(3, dtype=np.float32))
    assert sp.asnumpy(a).tolist() == [-1, -2, 2]         # [-1, -1, 0] -> [-2, -2, 0] -> + [1, 0, 2]

    cupy = real_cupy()
    scatter = {n for n in cs.UFUNCS if getattr(getattr(cupy, n), "_scatter_op", None)}
    assert scatter == set(cs._Ufunc.AT), "the ufuncs with a scatter op differ from CuPy's"
    strings = compiled_strings(importlib.import_module("cupy._core._routines_indexing"))
    for name, dtypes in cs._Ufunc.AT_DTYPES.items():
        assert f"cupy.{name}.at only supports {', '.join(dtypes)}" in strings, name


def test_copy_is_honoured_as_in_cupy():
    a = sp.asarray(np.arange(4, dtype=np.float32))
    assert sp.asarray(a) is a and sp.asarray(a, copy=False) is a and sp.array(a, copy=None) is a
    with cs.count_launches() as launches:
        b = sp.array(a)                                   # copy=True by default
        c = sp.asarray(a, copy=True)
        d = sp.asarray(a, dtype=np.float64)               # copy=None: the cast copies
    assert b is not a and c is not a and d.dtype == np.float64 and sum(launches.values()) == 3
    for bad in (dict(dtype=np.float64), dict(order="F")):
        x = a if "dtype" in bad else sp.ones((2, 3), dtype=np.float32)
        with pytest.raises(ValueError, match="Unable to avoid copy"):
            sp.asarray(x, copy=False, **bad)
    host = np.arange(3.0)
    e = sp.asarray(host, copy=False)                      # CuPy 14.2 copies host data in regardless
    host[0] = 7
    assert sp.asnumpy(e).tolist() == [0, 1, 2]
    with pytest.raises(TypeError, match="casting"):
        a.astype(np.float64, casting="unsafe")
    assert a.astype(np.float32, copy=False) is not None
    with pytest.raises(ValueError, match="Unsupported dtype"):
        sp.asarray(np.array(["x"]))

    real_cupy()
    strings = compiled_strings(importlib.import_module("cupy._core.core"))
    assert "Unable to avoid copy while creating an array as requested." in strings
    assert "casting is not supported yet" in strings


def test_cuda_events_and_streams_time_host_work():
    start, end = sp.cuda.Event(), sp.cuda.Event()
    with pytest.raises(sp.cuda.runtime.CUDARuntimeError):
        sp.cuda.get_elapsed_time(start, end)             # never recorded
    stream = sp.cuda.Stream(non_blocking=True)
    with stream as s:
        assert s is stream and sp.cuda.get_current_stream() is stream
        start.record()
        sum(range(20000))
        stream.record(end)
    assert sp.cuda.get_current_stream() == sp.cuda.Stream.null and sp.cuda.Stream.null.ptr == 0
    with cs.count_host_reads() as reads:
        end.synchronize()
        stream.synchronize()
    assert sum(reads.values()) == 2                     # each one waits for the device
    ms = sp.cuda.get_elapsed_time(start, end)
    assert isinstance(ms, float) and 0 < ms < 10_000 and end.done and stream.done
    with pytest.raises(sp.cuda.runtime.CUDARuntimeError):
        quiet = sp.cuda.Event(disable_timing=True)
        quiet.record()
        sp.cuda.get_elapsed_time(start, quiet)
    with pytest.raises(ValueError, match="Timing must be disabled"):
        sp.cuda.Event(interprocess=True)


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
    assert extra.startswith(backend.CUPY_PACKAGE + "[ctk]>=")        # with the CUDA toolkit's libraries
    assert backend.CUPY_PACKAGE in (ROOT / "README.md").read_text()
    assert backend.CUPY_PACKAGE in (ROOT / "benchmarks" / "gpu_check.py").read_text()
    previous = backend.use_cuda_module(None)
    try:
        with pytest.raises(RuntimeError, match=re.escape(f"pip install '{backend.CUPY_PACKAGE}[ctk]'")):
            backend.require_cupy()
    finally:
        backend.use_cuda_module(previous)
