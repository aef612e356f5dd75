"""CPU benchmarks of lenet_np against PyTorch: ``python -m benchmarks.run [--quick]``.

Prints tables and writes ``benchmarks/results/cpu-YYYY-MM-DD.md`` (``cpu-YYYY-MM-DD-quick.md``
with ``--quick``) and the same numbers as JSON next to it:

1. end to end: one training epoch (LeNet sigmoid/max, Adam lr 1e-3, batch 256, 60,000 examples)
   and one test-set evaluation (10,000), lenet_np against torch, alternating runs;
2. the compute limit: FLOPs of a training step from the layer shapes, the float32 matmul peak,
   the epoch time at that peak and the fraction of it each contender reaches;
3. peak memory (ru_maxrss) of a training run, each contender in its own process;
4. per layer at batch 256: forward and backward of each layer, lenet_np ``fast`` and
   ``reference`` implementations against torch (autograd);
5. a batch-size sweep (1 .. 1024) of the whole training step;
6. the README's training loop, run as written, against ``python -m lenet_np.train``'s step.

``--quick`` trains on a fraction of the epoch (times are scaled to a full epoch) and takes
fewer samples: about two minutes on two cores; the full run takes under ten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lenet_np import cli
from lenet_np.model import VARIANTS
from lenet_np.parallel import default_workers

from . import contenders, datasets, machine, per_layer, readme_loop, report, timing

RESULTS = machine.REPO / "benchmarks" / "results"
CHILDREN = ("lenet_np-train", "lenet_np-reference-train", "torch-train")
SWEEP_BATCHES = (1, 4, 16, 64, 256, 1024)

PROFILES = {
    #            e2e: fraction of an epoch, repeats; memory batches; layers: repeats, min_time;
    #            sweep: repeats, min_time, reference included up to this batch size
    "full": dict(fraction=1.0, e2e_repeats=3, mem_batches=30, layer_repeats=7, layer_min=0.05,
                 sweep_repeats=5, sweep_min=0.2, sweep_ref_max=1024, peak_repeats=5, readme_rounds=3,
                 readme_steps=235),
    "quick": dict(fraction=0.05, e2e_repeats=5, mem_batches=8, layer_repeats=3, layer_min=0.02,
                  sweep_repeats=3, sweep_min=0.05, sweep_ref_max=64, peak_repeats=3, readme_rounds=2,
                  readme_steps=60),
}


SECTIONS = ("e2e", "memory", "layers", "sweep", "readme")


def _sections(text: str) -> str:
    """A ``type=`` for --only: comma-separated names from SECTIONS."""
    names = [t for t in text.split(",") if t]
    unknown = sorted(set(names) - set(SECTIONS))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated sections from {', '.join(SECTIONS)}, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0]
                                .replace("``", ""))
    p.add_argument("--quick", action="store_true", help="a fraction of the epoch and fewer samples (~2 minutes)")
    p.add_argument("--epochs-data", choices=("real", "synthetic"), default="real",
                   help="end-to-end data: real Fashion-MNIST (falls back to synthetic when it does not load) "
                        "or synthetic uint8 images of the same shape (default: real)")
    p.add_argument("--out", type=cli.output_dir, default=RESULTS, help=f"report directory (default: {RESULTS})")
    p.add_argument("--variant", choices=tuple(VARIANTS), default="classic",
                   help="the book's LeNet whose layers the per-layer section times (default classic)")
    p.add_argument("--torch-threads", type=cli.int_in_range(1, 1024), default=2,
                   help="torch.set_num_threads, 1 to 1024 (default: 2)")
    p.add_argument("--only", type=_sections, default=None,
                   help=f"comma-separated sections to run: {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--child", choices=CHILDREN, help=argparse.SUPPRESS)
    p.add_argument("--child-batches", type=cli.positive_int, default=30, help=argparse.SUPPRESS)
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def log(*args, **kwargs):
    print(*args, **kwargs, flush=True)


# -- 3. memory: one contender per process ----------------------------------------------------------
def _rss_mib():
    """(ru_maxrss, VmHWM, VmRSS) in MiB: peak RSS from getrusage, peak and current RSS of this
    process image from /proc/self/status."""
    status = {line.split(":")[0]: line.split()[1] for line in machine._read("/proc/self/status").splitlines()
              if line.startswith(("VmHWM:", "VmRSS:"))}
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024          # KiB on Linux
    return tuple(round(v, 1) for v in (maxrss, int(status.get("VmHWM", 0)) / 1024,
                                       int(status.get("VmRSS", 0)) / 1024))


def child_main(args) -> int:
    """Train ``--child-batches`` batches of 256 with one contender; print one RESULT line of JSON."""
    stages = {"imports": _rss_mib()}
    if args.child.startswith("torch"):
        contenders.import_torch(args.torch_threads)
    else:
        import lenet_np  # noqa: F401
    stages["after imports"] = _rss_mib()
    data = datasets.load_data(args.epochs_data)
    stages["after data"] = _rss_mib()
    if args.child.startswith("torch"):
        runner = contenders.TorchRunner(data, threads=args.torch_threads)
    else:
        runner = contenders.LenetNpRunner(data, impl="reference" if "reference" in args.child else "fast")
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


def run_memory(args, prof) -> dict:
    out = {}
    for name in CHILDREN:
        # Linux keeps ru_maxrss across fork + exec: a child forked from this process (hundreds of
        # MiB with torch loaded) would start with our peak. A shell in between forks the child from
        # its own small image, so the child's ru_maxrss is its own.
        cmd = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-m", "benchmarks.run",
               "--child", name, "--child-batches", str(prof["mem_batches"]),
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


# -- 1. end to end -----------------------------------------------------------------------------------
def run_e2e(args, prof, data) -> dict:
    n_train = max(datasets.BATCH_SIZE, int(round(len(data.train_images) * prof["fraction"])))
    n_test = max(datasets.BATCH_SIZE, int(round(len(data.test_images) * prof["fraction"])))
    runners = {"lenet_np": contenders.LenetNpRunner(data),
               "torch": contenders.TorchRunner(data, threads=args.torch_threads)}
    log(f"  {n_train} training and {n_test} test examples per run, {prof['e2e_repeats']} alternating runs each")
    res = contenders.end_to_end(runners, n_train, n_test, repeats=prof["e2e_repeats"], log=log,
                                n_total=len(data.train_images))
    return {"n_train_run": n_train, "n_test_run": n_test, "data": data.source, "results": res}


def e2e_table(e2e):
    return report.e2e_table(e2e["results"], base="torch")


# -- 2. compute limit ------------------------------------------------------------------------------------
def limit_tables(flops, peak, e2e):
    rows = [[r["layer"], "x".join(map(str, r["input"])), "x".join(map(str, r["output"])), f"{r['macs']:,}",
             f"{r['forward']:,}", f"{r['backward_weight'] + r['backward_input']:,}"] for r in flops["layers"]]
    rows.append(["total", "", "", f"{sum(r['macs'] for r in flops['layers']):,}",
                 f"{flops['forward_per_example']:,}", f"{flops['backward_per_example']:,}"])
    t1 = report.md_table(["layer", "input", "output", "MACs", "forward FLOP", "backward FLOP"], rows)
    best = max(peak, key=lambda k: peak[k]["gflops"])
    gflops = peak[best]["gflops"]
    train_flop = datasets.N_TRAIN * flops["train_per_example"]
    eval_flop = datasets.N_TEST * flops["eval_per_example"]
    rows = [["at the matmul peak", report.fmt_time(train_flop / gflops / 1e9), f"{gflops:.1f}", "100%",
             report.fmt_time(eval_flop / gflops / 1e9), "100%"]]
    if e2e:
        res = e2e["results"]
        for name, r in res.items():
            tr = r["train"].median * datasets.N_TRAIN / r["n_train"]
            ev = r["eval"].median * datasets.N_TEST / r["n_test"]
            g_tr, g_ev = train_flop / tr / 1e9, eval_flop / ev / 1e9
            rows.append([name, report.fmt_time(tr), f"{g_tr:.2f}", f"{g_tr / gflops:.1%}", report.fmt_time(ev),
                         f"{g_ev / gflops:.1%}"])
    t2 = report.md_table(["", "train epoch", "train GFLOP/s", "of peak", "test eval", "eval of peak"], rows)
    peaks = ", ".join(f"{k} {v['gflops']:.1f} GFLOP/s" for k, v in peak.items())
    text = (f"One training step costs {flops['train_per_example'] / 1e6:.3f} MFLOP per example "
            f"(forward {flops['forward_per_example'] / 1e6:.3f}, backward {flops['backward_per_example'] / 1e6:.3f}; "
            f"2 x MACs of the conv and linear layers; the backward counts weight gradients and the input "
            f"gradients of every layer but the first): {train_flop / 1e9:.1f} GFLOP per epoch of 60,000, "
            f"{eval_flop / 1e9:.2f} GFLOP per evaluation of 10,000.\n\n"
            f"float32 matmul 2048x2048: {peaks}; the peak used below is {best}'s.")
    return t1, t2, text


# -- 4. per layer, 5. batch-size sweep -----------------------------------------------------------------
def _timer(prof, key, **kw):
    def timer(contenders):
        return timing.measure(contenders, prof[f"{key}_repeats"], min_time=prof[f"{key}_min"], **kw)
    return timer


def run_layers(args, prof) -> dict:
    return per_layer.layer_benchmark(_timer(prof, "layer"), torch_threads=args.torch_threads, log=log,
                                     variant=args.variant)


def layers_table(layers):
    return per_layer.layers_table(layers)


def run_sweep(args, prof, batches=SWEEP_BATCHES) -> dict:
    runners = {"lenet_np": contenders.LenetNpRunner(), "reference": contenders.LenetNpRunner(impl="reference"),
               "torch": contenders.TorchRunner(threads=args.torch_threads)}
    return per_layer.sweep_benchmark(runners, batches, _timer(prof, "sweep", warmup=1, max_inner=1000),
                                     skip=lambda name, n: name == "reference" and n > prof["sweep_ref_max"], log=log)


def sweep_table(sweep):
    return per_layer.sweep_table(sweep, names=("lenet_np", "reference", "torch"), base="torch")


# -- the report -------------------------------------------------------------------------------------------
def training_check(e2e) -> list:
    """Both contenders start from the same weights and see the same batches: their losses and
    accuracies after each round should agree to a few digits (a check that both did the same work)."""
    res = e2e["results"]
    if not all("rounds" in r for r in res.values()):
        return []
    names = list(res)
    rounds = zip(*(res[n]["rounds"] for n in names))
    parts = ["; ".join(f"round {i + 1}: " + ", ".join(f"{n} loss {r['loss']:.4f} acc {r['accuracy']:.4f}"
                                                     for n, r in zip(names, rs)) for i, rs in enumerate(rounds))]
    return ["Same initial weights, same shuffled batches: the mean training loss of each pass and the test "
            "accuracy after it should agree between the contenders (passes continue training the same model): "
            + parts[0] + "."]


def noise_warning(meta) -> list:
    busy = {k: v["others"] for k, v in meta["cpu_taken_by_others"].items() if v.get("others") is not None}
    worst = max(busy.values(), default=0.0)
    if worst < 0.1:
        return []
    return ["", f"**Warning: other processes used up to {worst:.0%} of the CPUs while this ran.** Both contenders "
            "run two threads on two cores; when another process takes a core, every parallel region waits for a "
            "descheduled thread (timings then jump in steps of the scheduler's time slice) and the numbers, "
            "ratios included, are unreliable. Rerun on a quiet machine."]


def run_readme(args, prof) -> dict:
    try:
        return readme_loop.compare(rounds=prof["readme_rounds"], steps=prof["readme_steps"], log=log)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        log(f"  skipped: {e}")
        return {"skipped": str(e)}


def readme_table(res) -> str:
    if "skipped" in res:
        return f"Skipped: {res['skipped']}"
    med = res["median"]
    rows = [["README loop", report.fmt_time(med["readme"]), f"{res['ratio']:.2f}x"],
            ["python -m lenet_np.train", report.fmt_time(med["command"]), "1.00x"]]
    return report.md_table(["", "step (batch 256)", "vs the command"], rows)


def build_report(meta, info, e2e, flops, peak, mem, layers, sweep, readme=None) -> str:
    md = [f"# lenet_np CPU benchmarks, {meta['date']}{' (quick)' if meta['quick'] else ''}", "",
          f"`{meta['command']}`, {meta['duration_s'] / 60:.1f} minutes. Every comparison is a ratio of medians "
          "measured in the same run, the contenders alternating round by round; `spread` is (max - min) / median "
          "of the samples. The machine is shared: expect noise of tens of percent between runs, less in the ratios.",
          "", "## Machine", "", *machine.machine_lines(info),
          "- 1-minute load average when each section started: "
          + ", ".join(f"{k} {v}" for k, v in meta["loadavg_at_sections"].items()),
          "- share of the CPUs that other processes used during each section (from /proc/stat less this "
          "process and its children): " + ", ".join(
              f"{k} {v['others']:.0%}" for k, v in meta["cpu_taken_by_others"].items() if v.get("others") is not None),
          *noise_warning(meta), ""]
    if e2e:
        quick_note = (f" Each run trained on {e2e['results']['lenet_np']['n_train']:,} examples and evaluated "
                      f"{e2e['results']['lenet_np']['n_test']:,}; "
                      "the times are scaled to the full epoch and test set." if meta["quick"] else "")
        md += ["## 1. End to end: one epoch", "",
               f"LeNet (sigmoid, max pooling), Adam lr 1e-3, batch 256, shuffled; data: {e2e['data']}. "
               f"torch {info.get('torch')} on the CPU with {meta['torch_threads']} threads builds its batches from the "
               f"same uint8 arrays (float32 / 255); lenet_np trains as `python -m lenet_np.train` does on the CPU: "
               f"{default_workers()} threads share each batch (DataParallel, BLAS one thread each). "
               f"{meta['e2e_repeats']} alternating runs each, medians.{quick_note}",
               "", e2e_table(e2e), "", *training_check(e2e), ""]
    md += ["## 2. The compute limit", "", limit_tables(flops, peak, e2e)[2], "", limit_tables(flops, peak, e2e)[0], "",
           limit_tables(flops, peak, e2e)[1], ""]
    if mem:
        md += ["## 3. Peak memory of a training run", "",
               f"Each contender in its own process (`python -m benchmarks.run --child NAME`): imports, loads the "
               f"data, trains {meta['mem_batches']} batches of 256. MiB: `ru_maxrss` (the peak RSS so far) after the "
               "imports and after loading the data; then the peak is reset (writing 5 to /proc/self/clear_refs "
               "resets the kernel's high-water mark, which ru_maxrss reads) and `training peak` is "
               "`ru_maxrss` after training: the peak of the training phase alone; `training adds` is its excess "
               "over the RSS before training. Loading the data peaks well above the data's own "
               "55 MB (decompression buffers), which is why the training phase is measured apart. The children are "
               "started through a shell, because Linux carries ru_maxrss over fork + exec and this process is big. "
               "lenet_np's processes never import torch; the data are the same uint8 arrays as in section 1.",
               "", memory_table(mem), ""]
    if layers:
        md += [f"## 4. Per layer, batch 256, float32, LeNet variant {meta.get('variant', 'classic')}", "",
               "Each layer alone on the input (and output gradient) it sees in a training step of the network, "
               "in the memory layout the network gives it. lenet_np: `layer(x)` then `layer.backward(g)` "
               "(no input gradient for conv.0); torch: the layer's forward with autograd recording, then "
               "`y.backward(g)` (input requires grad except for conv.0). `fast` and `reference` are the two "
               "implementations of Conv2d and MaxPool2d (`layer.impl`); the other layers have one. "
               "`reference/fast` is the gain of the fast path (forward + backward); `share` is the layer's part of "
               "the whole fast step. The loss and Adam rows complete the step. Layers are listed in the order "
               "a training forward runs them (the book's order; LeNet pools before the sigmoid only in eval "
               "mode). Each row is the whole batch in one thread (BLAS on all cores); the measured fast step "
               "is how `python -m lenet_np.train` runs it, two halves of the batch in parallel threads "
               "(DataParallel), which is why it is shorter than `sum`; the reference step runs in one thread.",
               "", layers_table(layers), ""]
    if sweep:
        md += ["## 5. Batch-size sweep: one training step", "",
               "Forward, loss, backward and Adam step on random data; examples/s = batch / step time. "
               f"`reference` (the reference Conv2d/MaxPool2d) up to batch {meta['sweep_ref_max']}.", "",
               sweep_table(sweep), ""]
    if readme:
        md += ["## 6. The README's loop against the training command", "",
               "The README's first code block, run as written (`benchmarks/readme_loop.py`): its set-up once, "
               f"then its training loop with `range(3)` raised to {meta['profile']['readme_steps']} steps of its "
               "batch of 256 and `print` silenced; against the epoch time per step that "
               "`python -m lenet_np.train --epochs 2` reports for its second epoch (its training loop alone, "
               "warmed up as the README loop is, on the real data, shuffled). "
               f"{meta['profile']['readme_rounds']} alternating rounds, medians.", "", readme_table(readme), ""]
    return "\n".join(md)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return child_main(args)
    prof = PROFILES["quick" if args.quick else "full"]
    sections = set((args.only or ",".join(SECTIONS)).split(",")) - {""}   # checked by parse_args
    t_start = time.perf_counter()
    torch = contenders.import_torch(args.torch_threads)
    info = machine.machine_info(torch_threads=torch.get_num_threads())
    log("# lenet_np CPU benchmarks" + (" (quick)" if args.quick else ""))
    for line in machine.machine_lines(info):
        log(line)

    log("\n## float32 matmul peak")
    peak = machine.matmul_peak(repeats=prof["peak_repeats"])
    for k, v in peak.items():
        log(f"  {k}: {v['gflops']:.1f} GFLOP/s")
    flops = per_layer.flop_counts()

    e2e = mem = layers = sweep = readme = None
    loads = {}

    monitor = {}

    def section(key, title):
        """Start a section; report how busy other processes kept the CPUs during the previous one."""
        for k, m in monitor.items():
            if isinstance(m, machine.CpuMonitor):
                monitor[k] = m.stop()
                if monitor[k]["others"] is not None:
                    log(f"  (other processes used {monitor[k]['others']:.0%} of the CPUs during this section)")
        if key is not None:
            loads[key] = machine._read("/proc/loadavg").split()[0]
            monitor[key] = machine.CpuMonitor()
            log(f"\n## {title}   (load average {loads[key]})")

    if "e2e" in sections:
        section("e2e", "1. End to end")
        data = datasets.load_data(args.epochs_data)
        log(f"  data: {data.source}")
        e2e = run_e2e(args, prof, data)
        del data
        log(e2e_table(e2e))
    log("\n## 2. Compute limit")
    for t in limit_tables(flops, peak, e2e):
        log(t + "\n")
    if "memory" in sections:
        section("memory", "3. Peak memory")
        mem = run_memory(args, prof)
        log(memory_table(mem))
    if "layers" in sections:
        section("layers", "4. Per layer, batch 256")
        layers = run_layers(args, prof)
        log(layers_table(layers))
    if "sweep" in sections:
        section("sweep", "5. Batch-size sweep")
        sweep = run_sweep(args, prof)
        log(sweep_table(sweep))
    if "readme" in sections:
        section("readme", "6. The README's loop against the training command")
        readme = run_readme(args, prof)
        log(readme_table(readme))
    section(None, None)

    info["loadavg_end"] = machine._read("/proc/loadavg").split()[:3]
    today = dt.date.today().isoformat()
    meta = {"date": today, "quick": args.quick, "duration_s": time.perf_counter() - t_start,
            "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
            "torch_threads": args.torch_threads, "variant": args.variant, "e2e_repeats": prof["e2e_repeats"],
            "mem_batches": prof["mem_batches"], "sweep_ref_max": prof["sweep_ref_max"], "profile": prof,
            "loadavg_at_sections": loads, "cpu_taken_by_others": monitor}
    meta["command"] = meta["command"].strip()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"cpu-{today}" + ("-quick" if args.quick else "")
    md_path, json_path = args.out / f"{stem}.md", args.out / f"{stem}.json"
    md_path.write_text(build_report(meta, info, e2e, flops, peak, mem, layers, sweep, readme))
    report.write_json(json_path, {"meta": meta, "machine": info, "flops": flops, "matmul_peak": peak, "end_to_end": e2e,
                                  "memory": mem, "layers": layers, "readme": readme,
                                  "sweep": {str(k): v for k, v in sweep.items()} if sweep else None})
    log(f"\nreport: {md_path}\n        {json_path}\n({meta['duration_s'] / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    from lenet_np import cli

    sys.exit(cli.guard(main))
