"""What the GPU check's sections share: the constants and profiles, the benchmark modules (loaded
at their first use), the device helpers, and one training step as the training command runs it."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
from pathlib import Path

from benchmarks.sections import Skipped

REPO = Path(__file__).resolve().parent.parent.parent

# the benchmark modules: they need NumPy, so each is imported at its first use (main() loads them
# with load() once the GPU check has passed)
NEEDS_NUMPY = ("contenders", "datasets", "machine", "per_layer", "report", "timing")


class Later:
    """``benchmarks.<name>``, imported when one of its attributes is first read."""

    def __init__(self, name):
        self._module = f"benchmarks.{name}"

    def __getattr__(self, attr):
        return getattr(importlib.import_module(self._module), attr)


contenders, datasets, machine, per_layer, report, timing = (Later(name) for name in NEEDS_NUMPY)


def load(names=NEEDS_NUMPY) -> None:
    """Import the benchmark modules ``names`` now (ImportError where they cannot be)."""
    for name in names:
        importlib.import_module(f"benchmarks.{name}")


CUPY_PACKAGE = "cupy-cuda13x"          # lenet_np.backend.CUPY_PACKAGE: the CuPy wheel for CUDA 13
SWEEP_BATCHES = (1, 4, 16, 64, 256, 1024, 4096)
VARIANTS = ("classic", "d2l", "batchnorm")
EXIT_NO_GPU = 2
CHILD_TAG = "GPU_CHECK_CHILD "          # a child process's one line of results: the tag, then JSON
PARITY_FILES = ("tests/nn/test_layers.py", "tests/nn/test_batchnorm.py", "tests/test_backprop.py",
                "tests/test_model_torch.py", "tests/test_optim.py")

PROFILES = {
    # budget_s: the whole script; budgets: each section's seconds (see the docstring)
    "gpu": dict(budget_s=300,
                budgets=dict(preflight=20, parity=60, kernels=30, epoch=45, layers=45, first_step=30,
                             cpu_layers=35, sweep=25),
                parity_files=PARITY_FILES, parity_k="cupy", parity_test_timeout=40, parity_workers=8,
                step_batch=256, step_calls=20,
                e2e_repeats=3, cpu_fraction=0.1, gpu_fraction=1.0,
                layer_batch=256, layer_min=0.02, layer_max_calls=100, layer_rounds=3,
                first_steps=8, cpu_layer_repeats=3, cpu_layer_min=0.02,
                sweep_repeats=3, sweep_min=0.05, sweep=SWEEP_BATCHES, settle=0.05),
    "cpu-smoke": dict(budget_s=300,
                      budgets=dict(preflight=20, parity=60, kernels=30, epoch=45, layers=45, first_step=30,
                                   cpu_layers=35, sweep=25),
                      parity_files=("tests/nn/test_layers.py",), parity_k="cupy and (writes or wrong_shape)",
                      parity_test_timeout=40, parity_workers=2,
                      step_batch=16, step_calls=3,
                      e2e_repeats=2, cpu_fraction=0.01, gpu_fraction=0.01,
                      layer_batch=16, layer_min=0.002, layer_max_calls=5, layer_rounds=2,
                      first_steps=4, cpu_layer_repeats=2, cpu_layer_min=0.002,
                      sweep_repeats=2, sweep_min=0.002, sweep=(1, 4, 16), settle=0.02),
}



# -- the device ---------------------------------------------------------------------------------------
def use_standin():
    """Device "cuda" becomes the tests' NumPy-backed CuPy stand-in (for --cpu-smoke)."""
    from lenet_np import backend
    from tests import cupy_standin

    backend.use_cuda_module(cupy_standin.module)


def detect_gpu():
    """(info dict, None) when the CUDA array module sees a device, else (None, the reason)."""
    try:
        from lenet_np import backend
    except Exception as exc:
        return None, f"lenet_np does not import ({type(exc).__name__}: {exc})"
    cupy = backend.cuda_module()
    if cupy is None:
        return None, "CuPy is not installed, or does not import"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return None, f"CuPy imports but finds no CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "CuPy imports but finds no CUDA device"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"]
    info = {"name": name.decode() if isinstance(name, bytes) else str(name), "devices": count,
            "memory_gib": round(props.get("totalGlobalMem", 0) / 2 ** 30, 1),
            "compute_capability": f"{props.get('major')}.{props.get('minor')}",
            "multiprocessors": props.get("multiProcessorCount"), "cupy": cupy.__version__,
            "cupy_tf32": os.environ.get("CUPY_TF32")}
    for key, fn in (("cuda_runtime", cupy.cuda.runtime.runtimeGetVersion),
                    ("cuda_driver", cupy.cuda.runtime.driverGetVersion)):
        try:
            v = fn()
            info[key] = f"{v // 1000}.{v % 1000 // 10}"
        except Exception:
            info[key] = None
    return info, None


def torch_cuda_info():
    """torch's version and CUDA build, with TF32 off as the contenders run it (and the flags that say so)."""
    try:
        torch = contenders.import_torch()
        from benchmarks.torch_models import tf32_flags
    except Exception as exc:
        return {"torch": None, "cuda": False, "why": f"torch does not import: {exc}"}
    info = {"torch": torch.__version__, "cuda": bool(torch.cuda.is_available()), "torch_cuda": torch.version.cuda,
            "threads": torch.get_num_threads()}
    if info["cuda"]:
        info["device"] = torch.cuda.get_device_name(0)
        info["cudnn"] = torch.backends.cudnn.version()
        info.update(tf32_flags())
        info["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    else:
        info["why"] = "torch.cuda.is_available() is False (a CPU build of torch?)"
    return info


def nvidia_smi():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return None


def require_gpu(ctx):
    """Skip the calling section where the preflight found that the GPU cannot run kernels."""
    if not ctx.gpu_ok:
        raise Skipped(f"the preflight failed ({ctx.errors.get('preflight', 'see above')}), so nothing runs on the GPU.")


def staged_paths() -> list:
    """The folder of staged modules (``--stage``) where this Python imports one of them from it
    (where it has not the module installed), else nothing."""
    staged = datasets.staged_python_dir()
    if staged is None:
        return []
    for module in datasets.STAGED_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin and Path(spec.origin).parent == staged:
            return [str(staged)]
    return []


def child_env(**extra) -> dict:
    """The environment of a child process: the repository (and the staged modules, where this
    Python lacks them) importable."""
    paths = [str(REPO), *staged_paths()]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


# -- one training step, as python -m lenet_np.train runs it ----------------------------------------------
def training_step(variant, device, batch, seed=0):
    """(step, sync): one training step of ``variant`` on ``device`` with its recipe's optimizer,
    as ``lenet_np.training.train_epoch`` runs it (the batch cut from the device's uint8 images,
    shuffled, a new permutation each epoch of 8 batches; forward, loss, backward, optimizer
    step; the loss kept on the device and the correct predictions counted there). Random
    images: a step's work does not depend on the pixels."""
    import numpy as np

    from lenet_np import backend, training
    from lenet_np.data import iterate_batches

    state = training.start(dict(training.defaults_for(variant), batch_size=batch), device)
    xp = backend.xp_for(device)
    rng = np.random.default_rng(seed)
    n = 8 * batch
    images = xp.asarray(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
    labels = xp.asarray(rng.integers(0, 10, n).astype(np.uint8))
    model, opt, loss_fn = state.model, state.optimizer, state.loss_fn
    losses, correct = xp.zeros(8, dtype=np.float64), xp.zeros((), dtype=np.int64)
    batches, done = iter(()), [0]

    def step():
        nonlocal batches, correct
        xy = next(batches, None)
        if xy is None:                                   # a new epoch: a new permutation
            batches = iterate_batches(images, labels, batch, shuffle=True, rng=state.data_rng)
            xy = next(batches)
        x, y = xy
        opt.zero_grad()
        logits = model(x)
        loss = loss_fn.forward(logits, y)
        model.backward(loss_fn.backward(), input_grad=False)
        opt.step()
        losses[done[0] % 8] = loss * len(y)
        correct += (logits.argmax(axis=1) == y).sum()
        done[0] += 1

    return step, (lambda: backend.synchronize()) if device == "cuda" else (lambda: None)


def predicted_launches(variant, batch, skip, calls):
    """Kernel launches per step that the CuPy stand-in counts (``tests.cupy_standin.count_launches``)
    over the same steps as the GPU's profile (``skip`` steps first, then ``calls``): kind -> launches
    per step; or None and why, where the stand-in has no counter."""
    from lenet_np import backend
    from tests import cupy_standin

    count = getattr(cupy_standin, "count_launches", None)
    if count is None:
        return None, "the CuPy stand-in has no count_launches(): no prediction"
    previous = backend.use_cuda_module(cupy_standin.module)
    try:
        step, _ = training_step(variant, "cuda", batch)
        for _ in range(skip):
            step()
        with count() as launches:
            for _ in range(calls):
                step()
    finally:
        backend.use_cuda_module(previous)
    return {kind: n / calls for kind, n in launches.most_common()}, ""



def data_is_real(source) -> bool:
    return str(source).startswith("real")
