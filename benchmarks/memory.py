"""Peak memory of a training run, each contender in its own process: the children that
``python -m benchmarks.run --child NAME`` starts, how they are started, and their table."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from . import contenders, datasets, machine, report

CHILDREN = ("lenet_np-train", "lenet_np-reference-train", "torch-train")


def _rss_mib():
    """(ru_maxrss, VmHWM, VmRSS) in MiB: peak RSS from getrusage, peak and current RSS of this
    process image from /proc/self/status."""
    status = {line.split(":")[0]: line.split()[1] for line in machine._read("/proc/self/status").splitlines()
              if line.startswith(("VmHWM:", "VmRSS:"))}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # KiB on Linux
    return tuple(round(v, 1) for v in (maxrss, int(status.get("VmHWM", 0)) / 1024,
                                       int(status.get("VmRSS", 0)) / 1024))


def child_main(args) -> int:
    """Train ``--child-batches`` batches with one contender, the ``--child-variant`` LeNet by its
    recipe (optimizer, learning rate, batch size); print one RESULT line of JSON."""
    stages = {"imports": _rss_mib()}
    if args.child.startswith("torch"):
        contenders.import_torch(args.torch_threads)
    else:
        import lenet_np  # noqa: F401
    stages["after imports"] = _rss_mib()
    data = datasets.load_data(args.epochs_data)
    stages["after data"] = _rss_mib()
    from lenet_np.model import VARIANTS
    recipe = VARIANTS[args.child_variant]["recipe"]
    how = dict(variant=args.child_variant, batch_size=recipe["batch_size"], lr=recipe["lr"],
               optimizer=recipe["optimizer"])
    if args.child.startswith("torch"):
        runner = contenders.TorchRunner(data, threads=args.torch_threads, **how)
    else:
        runner = contenders.LenetNpRunner(data, impl="reference" if "reference" in args.child else "fast", **how)
    stages["after model"] = _rss_mib()
    try:   # reset VmHWM (Linux >= 4.0), so that it measures the training phase alone
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    t0 = time.perf_counter()
    loss, seen = runner.train_epoch(np.random.default_rng(0).permutation(len(data.train_images)),
                                    limit=args.child_batches)
    seconds = time.perf_counter() - t0
    stages["after training"] = _rss_mib()
    print("RESULT " + json.dumps({"child": args.child, "stages": stages, "examples": seen, "loss": loss,
                                  "seconds": seconds, "data": data.source, "hwm_reset": reset}), flush=True)
    return 0


def run_children(args, batches, log, names=CHILDREN, variant="classic") -> dict:
    """Each child of ``names`` in turn, training ``batches`` batches of ``variant``: child name ->
    its RESULT (or its error)."""
    out = {}
    for name in names:
        # Linux keeps ru_maxrss across fork + exec: a child forked from this process (hundreds of
        # MiB with torch loaded) would start with our peak. A shell in between forks the child from
        # its own small image, so the child's ru_maxrss is its own.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-m", "benchmarks.run",
               "--child", name, "--child-batches", str(batches), "--child-variant", variant,
               "--epochs-data", args.epochs_data, "--torch-threads", str(args.torch_threads)]
        path = [str(machine.REPO), os.environ.get("PYTHONPATH")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, path)))
        proc = subprocess.run(cmd, cwd=machine.REPO, env=env, capture_output=True, text=True, timeout=600)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if proc.returncode != 0 or line is None:
            out[name] = {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-500:]}"}
            log(f"  {name}: FAILED ({out[name]['error']})")
            continue
        out[name] = json.loads(line[len("RESULT "):])
        st = out[name]["stages"]
        log(f"  {name:<26} peak RSS {st['after data'][0]:.1f} MiB after imports and data, "
            f"{st['after training'][0]:.1f} MiB while training {out[name]['examples']} examples "
            f"({out[name]['seconds']:.1f} s)")
    return out


def memory_table(mem) -> str:
    rows = []
    for name, r in mem.items():
        if "error" in r:
            rows.append([name, "failed"] + [""] * 6)
            continue
        st = r["stages"]
        before = st["after model"]
        peak_train, _, rss_end = st["after training"]
        if r.get("hwm_reset"):   # ru_maxrss now reports the training phase alone
            overall, adds = max(before[0], peak_train), f"{peak_train - before[2]:+.1f}"
        else:
            overall, peak_train, adds = peak_train, float("nan"), "-"
        rows.append([name, f"{st['after imports'][0]:.1f}", f"{st['after data'][0]:.1f}", f"{before[2]:.1f}",
                     f"{peak_train:.1f}", adds, f"{overall:.1f}", f"{rss_end:.1f}"])
    return report.md_table(["contender", "peak after imports", "peak after data", "RSS before training",
                            "training peak", "training adds", "overall peak", "RSS at end"], rows)
