"""Section 1, the preflight: the GPU, CuPy, the CUDA toolkit, three operations on the device,
torch.profiler, the Python packages and the data."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import time
from pathlib import Path

from benchmarks.gpu.common import CUPY_PACKAGE, datasets, report, timing
from benchmarks.sections import Part, log

TOOLKIT_HINT = (f"CuPy sees the GPU (the driver answers) but cannot run a kernel: the CUDA toolkit's libraries "
                f"(NVRTC compiles each kernel on first use, cuBLAS runs the matmuls) are missing or do not match. "
                f"`pip install '{CUPY_PACKAGE}[ctk]'` brings them from PyPI; or install the CUDA toolkit.")
PACKAGES = (("torch", "torch"), ("pytest", "pytest"), ("xdist", "pytest-xdist"), ("pytest_timeout", "pytest-timeout"),
            ("hypothesis", "hypothesis"), ("scipy", "scipy"), ("matplotlib", "matplotlib"),
            ("threadpoolctl", "threadpoolctl"))


def package_versions() -> dict:
    """import name -> its version, "staged copy" (from .gpu-data/python), or None (not installed)."""
    out = {}
    staged = datasets.staged_python_dir()
    for module, dist in PACKAGES:
        spec = importlib.util.find_spec(module)
        if spec is None:
            out[module] = None
        elif staged and spec.origin and Path(spec.origin).parent == staged:
            out[module] = "staged copy"
        else:
            try:
                out[module] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[module] = "installed"
    return out


def toolkit_info(cuda) -> dict:
    """Where the CUDA toolkit's libraries come from (cuda.pathfinder, as CuPy 14 finds them) and
    NVRTC's version; empty for the stand-in."""
    info = {}
    if getattr(cuda, "__version__", "").endswith("standin"):
        return info
    for key, fn in (("cuda_path", lambda: cuda.cuda.get_cuda_path()),
                    ("local_runtime", lambda: cuda.cuda.get_local_runtime_version()),
                    ("nvrtc_version", lambda: ".".join(map(str, cuda.cuda.nvrtc.getVersion())))):
        try:
            info[key] = fn()
        except Exception as exc:
            info[key] = f"unknown ({type(exc).__name__}: {exc})"
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib
    except Exception as exc:
        info["libraries"] = f"cuda.pathfinder does not import ({type(exc).__name__})"
        return info
    libs = {}
    for lib in ("nvrtc", "cublas", "cudart"):
        try:
            dl = load_nvidia_dynamic_lib(lib)
            libs[lib] = f"{dl.abs_path} (via {dl.found_via})"
        except Exception as exc:
            libs[lib] = f"NOT FOUND ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    info["libraries"] = libs
    return info


def device_ops(cuda, sync):
    """Three operations on the device, each checked on the host: name -> {first_s, second_s, ok, error}.
    The first call's time includes compiling the kernel (NVRTC) or loading the library (cuBLAS)."""
    import numpy as np

    from lenet_np import backend

    n = 1 << 20
    ops = {"elementwise (a * 2 + 1)": (lambda: cuda.arange(n, dtype=np.float32) * 2 + 1,
                                       lambda r: backend.as_numpy(r[-1:])[0] == 2 * (n - 1) + 1),
           "reduction (sum)": (lambda: cuda.ones(n, dtype=np.float32).sum(),
                               lambda r: float(r) == n),
           "matmul (512 x 512, cuBLAS)": (lambda: cuda.ones((512, 512), dtype=np.float32)
                                          @ cuda.ones((512, 512), dtype=np.float32),
                                          lambda r: backend.as_numpy(r[:1, :1])[0, 0] == 512)}
    out = {}
    for name, (fn, check) in ops.items():
        res = {"ok": False}
        try:
            times = []
            for _ in range(2):
                t0 = time.perf_counter()
                r = fn()
                sync()
                times.append(time.perf_counter() - t0)
            res.update(first_s=times[0], second_s=times[1], ok=bool(check(r)))
            if not res["ok"]:
                res["error"] = "wrong result"
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        out[name] = res
    return out


def preflight(ctx) -> Part:
    import numpy as np

    from lenet_np import backend

    cuda = backend.cuda_module()

    def sync():
        backend.synchronize()
    facts = {"python": sys.version.split()[0], "numpy": importlib.metadata.version("numpy"),
             "cupy": getattr(cuda, "__version__", None), "gpu": ctx.gpu, "toolkit": toolkit_info(cuda),
             "packages": package_versions()}
    facts["ops"] = ops = device_ops(cuda, sync)
    for name, r in ops.items():
        log(f"  {name}: " + (f"ok, first call {report.fmt_time(r['first_s'])}, second {report.fmt_time(r['second_s'])}"
                             if r["ok"] else f"FAILED: {r['error']}"))
    bad = [f"{name}: {r['error']}" for name, r in ops.items() if not r["ok"]]
    if bad:
        ctx.gpu_ok = False
        ctx.errors["preflight"] = "; ".join(bad) + ("" if ctx.args.cpu_smoke else ". " + TOOLKIT_HINT)
    if ctx.use_torch_cuda:
        import torch

        torch.zeros(1, device="cuda")                    # torch's CUDA ready before the profiler starts
    # does torch.profiler see CuPy's kernels? (and its first start, slow, is over before the benchmarks)
    if ctx.gpu_ok:
        a = cuda.arange(1 << 16, dtype=np.float32)
        prof = timing.device_profile(lambda: a * 2 + 1, sync, calls=5, warmup=2, cuda=cuda)
        retried = not prof.recorded and ctx.use_torch_cuda
        if retried:                      # CUPTI starts with the first profile: give it a second chance
            prof = timing.device_profile(lambda: a * 2 + 1, sync, calls=5, warmup=2, cuda=cuda)
        facts["profiler"] = prof
        seen = (f"yes: {prof.kernels:g} kernels per `a * 2 + 1` (CuPy launches 2), device busy "
                f"{report.fmt_time(prof.busy_s)} per call" + (" (on the second try)" if retried else "")
                if prof.recorded else "; ".join(prof.notes))
    else:
        facts["profiler"], seen = None, "not tried (the operations above failed)"
    log(f"  torch.profiler sees CuPy's kernels: {seen}")
    facts["data"] = ctx.data_note
    pk = facts["packages"]
    missing = [m for m, v in pk.items() if v is None]
    lines = ["## Preflight", ""]
    tk = facts["toolkit"]
    if tk:
        libs = tk.get("libraries")
        lines.append(f"- CUDA toolkit: path {tk.get('cuda_path')}, local runtime {tk.get('local_runtime')}, "
                     f"NVRTC {tk.get('nvrtc_version')}; libraries: "
                     + ("; ".join(f"{k} {v}" for k, v in libs.items()) if isinstance(libs, dict) else str(libs)))
    else:
        lines.append("- CUDA toolkit: none (the CuPy stand-in computes with NumPy)")
    checked = [f"{name} ok, first call {report.fmt_time(r['first_s'])}, then {report.fmt_time(r['second_s'])}"
               if r["ok"] else f"{name} **FAILED**: {r['error']}" for name, r in ops.items()]
    lines.append("- On the device, each checked on the host (the first call compiles the kernel or loads the "
                 "library): " + "; ".join(checked))
    if bad and not ctx.args.cpu_smoke:
        lines.append(f"- {TOOLKIT_HINT}")
    lines.append(f"- torch.profiler sees CuPy's kernels: {seen}")
    lines.append("- Python " + facts["python"] + ", NumPy " + facts["numpy"] + ", "
                 + ", ".join(f"{m} {v}" for m, v in pk.items() if v) + (
                     f"; not installed: {', '.join(missing)}" if missing else ""))
    lines.append(f"- Data: {ctx.data_note}")
    return Part({"preflight": facts}, lines + [""])
