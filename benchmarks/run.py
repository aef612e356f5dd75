"""CPU benchmarks of lenet_np against PyTorch: ``python -m benchmarks.run [--quick]``.

Prints tables and writes ``benchmarks/results/cpu-YYYY-MM-DD.md`` (``cpu-YYYY-MM-DD-quick.md``
with ``--quick``) and the same numbers as JSON next to it. After the machine and the float32
matmul peak, its sections (``SECTIONS`` below; ``--only`` picks among those that measure):

1. end to end: one training epoch (LeNet sigmoid/max, Adam lr 1e-3, batch 256, 60,000 examples)
   and one test-set evaluation (10,000), lenet_np against torch, alternating runs;
2. the compute limit: the epoch time at the float32 matmul peak, from the FLOPs of a training
   step, and the fraction of it each contender reaches;
3. peak memory (ru_maxrss) of a training run, each contender in its own process;
4. per layer at batch 256: forward and backward of each layer, lenet_np ``fast`` and
   ``reference`` implementations against torch (autograd);
5. a batch-size sweep: the whole training step at batch sizes 1 .. 1024;
6. the README's training loop, run as written, against ``python -m lenet_np.train``'s step;
7. the book's three LeNets by their recipes: training step, evaluation and peak RSS, each as a
   ratio to torch (the epoch the step makes; the peak RSS of a training run).

``--quick`` trains on a fraction of the epoch (times are scaled to a full epoch) and takes
fewer samples: about two minutes on two cores; the full run takes under ten.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import subprocess
import sys
import time

from lenet_np import cli
from lenet_np.model import VARIANTS
from lenet_np.parallel import default_workers

from . import contenders, datasets, machine, memory, per_layer, readme_loop, report, variant_speed
from .sections import Context, Part, Section, log, run_sections
from .timing import profile_timer

RESULTS = machine.REPO / "benchmarks" / "results"
SWEEP_BATCHES = (1, 4, 16, 64, 256, 1024)

PROFILES = {
    #            e2e: fraction of an epoch, repeats; memory batches; layers: repeats, min_time;
    #            sweep: repeats, min_time, reference included up to this batch size
    "full": dict(fraction=1.0, e2e_repeats=3, mem_batches=30, layer_repeats=7, layer_min=0.05,
                 sweep_repeats=5, sweep_min=0.2, sweep_ref_max=1024, peak_repeats=5, readme_rounds=3,
                 readme_steps=235, variant_rounds=7, variant_sample=0.3),
    "quick": dict(fraction=0.05, e2e_repeats=5, mem_batches=8, layer_repeats=3, layer_min=0.02,
                  sweep_repeats=3, sweep_min=0.05, sweep_ref_max=64, peak_repeats=3, readme_rounds=2,
                  readme_steps=60, variant_rounds=3, variant_sample=0.15),
}


def optional_sections() -> list:
    """The sections --only chooses from: those that measure (the compute limit only reads them)."""
    return [s.name for s in SECTIONS if s.timed]


def _sections(text: str) -> str:
    """A ``type=`` for --only: comma-separated names of optional sections."""
    names = [t for t in text.split(",") if t]
    unknown = sorted(set(names) - set(optional_sections()))
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"expected comma-separated sections from "
                                         f"{', '.join(optional_sections())}, got {text!r}")
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
                   help=f"comma-separated sections to run: {', '.join(optional_sections())} (default: all)")
    p.add_argument("--child", choices=memory.CHILDREN, help=argparse.SUPPRESS)
    p.add_argument("--child-batches", type=cli.positive_int, default=30, help=argparse.SUPPRESS)
    p.add_argument("--child-variant", choices=tuple(VARIANTS), default="classic", help=argparse.SUPPRESS)
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


# -- 1. end to end -----------------------------------------------------------------------------------
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


def end_to_end(ctx) -> Part:
    args, prof = ctx.args, ctx.prof
    data = datasets.load_data(args.epochs_data)
    log(f"  data: {data.source}")
    n_train = max(datasets.BATCH_SIZE, int(round(len(data.train_images) * prof["fraction"])))
    n_test = max(datasets.BATCH_SIZE, int(round(len(data.test_images) * prof["fraction"])))
    runners = {"lenet_np": contenders.LenetNpRunner(data),
               "torch": contenders.TorchRunner(data, threads=args.torch_threads)}
    log(f"  {n_train} training and {n_test} test examples per run, {prof['e2e_repeats']} alternating runs each")
    res = contenders.end_to_end(runners, n_train, n_test, repeats=prof["e2e_repeats"], log=log,
                                n_total=len(data.train_images))
    e2e = {"n_train_run": n_train, "n_test_run": n_test, "data": data.source, "results": res}
    del data, runners
    table = report.e2e_table(res, base="torch")
    log(table)
    quick_note = (f" Each run trained on {res['lenet_np']['n_train']:,} examples and evaluated "
                  f"{res['lenet_np']['n_test']:,}; the times are scaled to the full epoch and test set."
                  if args.quick else "")
    return Part({"end_to_end": e2e}, [
        "## 1. End to end: one epoch", "",
        f"LeNet (sigmoid, max pooling), Adam lr 1e-3, batch 256, shuffled; data: {e2e['data']}. "
        f"torch {ctx.info.get('torch')} on the CPU with {args.torch_threads} threads builds its batches from the "
        f"same uint8 arrays (float32 / 255); lenet_np trains as `python -m lenet_np.train` does on the CPU: "
        f"{default_workers()} threads share each batch (DataParallel, BLAS one thread each). "
        f"{prof['e2e_repeats']} alternating runs each, medians.{quick_note}",
        "", table, "", *training_check(e2e), ""])


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


def compute_limit(ctx) -> Part:
    flops_table, epoch_table, text = limit_tables(ctx.results["flops"], ctx.results["matmul_peak"],
                                                  ctx.results.get("end_to_end"))
    for t in (flops_table, epoch_table, text):
        log(t + "\n")
    return Part({}, ["## 2. The compute limit", "", text, "", flops_table, "", epoch_table, ""])


# -- 3. memory -------------------------------------------------------------------------------------------
def peak_memory(ctx) -> Part:
    mem = memory.run_children(ctx.args, ctx.prof["mem_batches"], log)
    table = memory.memory_table(mem)
    log(table)
    return Part({"memory": mem}, [
        "## 3. Peak memory of a training run", "",
        f"Each contender in its own process (`python -m benchmarks.run --child NAME`): imports, loads the "
        f"data, trains {ctx.prof['mem_batches']} batches of 256. MiB: `ru_maxrss` (the peak RSS so far) after the "
        "imports and after loading the data; then the peak is reset (writing 5 to /proc/self/clear_refs "
        "resets the kernel's high-water mark, which ru_maxrss reads) and `training peak` is "
        "`ru_maxrss` after training: the peak of the training phase alone; `training adds` is its excess "
        "over the RSS before training. Loading the data peaks well above the data's own "
        "55 MB (decompression buffers), which is why the training phase is measured apart. The children are "
        "started through a shell, because Linux carries ru_maxrss over fork + exec and this process is big. "
        "lenet_np's processes never import torch; the data are the same uint8 arrays as in section 1.",
        "", table, ""])


# -- 4. per layer, 5. batch-size sweep -----------------------------------------------------------------
def per_layer_times(ctx) -> Part:
    layers = per_layer.layer_benchmark(profile_timer(ctx.prof, "layer"), torch_threads=ctx.args.torch_threads,
                                       log=log, variant=ctx.args.variant)
    table = per_layer.layers_table(layers)
    log(table)
    return Part({"layers": layers}, [
        f"## 4. Per layer, batch 256, float32, LeNet variant {ctx.args.variant}", "",
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
        "", table, ""])


def batch_sweep(ctx) -> Part:
    prof = ctx.prof
    runners = {"lenet_np": contenders.LenetNpRunner(), "reference": contenders.LenetNpRunner(impl="reference"),
               "torch": contenders.TorchRunner(threads=ctx.args.torch_threads)}
    sweep = per_layer.sweep_benchmark(runners, SWEEP_BATCHES, profile_timer(prof, "sweep", warmup=1, max_inner=1000),
                                      skip=lambda name, n: name == "reference" and n > prof["sweep_ref_max"],
                                      log=log)
    table = per_layer.sweep_table(sweep, names=("lenet_np", "reference", "torch"), base="torch")
    log(table)
    return Part({"sweep": sweep}, [
        "## 5. Batch-size sweep: one training step", "",
        "Forward, loss, backward and Adam step on random data; examples/s = batch / step time. "
        f"`reference` (the reference Conv2d/MaxPool2d) up to batch {prof['sweep_ref_max']}.", "", table, ""])


# -- 6. the README's loop ---------------------------------------------------------------------------------
def readme_table(res) -> str:
    if "skipped" in res:
        return f"Skipped: {res['skipped']}"
    med = res["median"]
    rows = [["README loop", report.fmt_time(med["readme"]), f"{res['ratio']:.2f}x"],
            ["python -m lenet_np.train", report.fmt_time(med["command"]), "1.00x"]]
    return report.md_table(["", "step (batch 256)", "vs the command"], rows)


def readme(ctx) -> Part:
    prof = ctx.prof
    try:
        res = readme_loop.compare(rounds=prof["readme_rounds"], steps=prof["readme_steps"], log=log)
    except (RuntimeError, ValueError, OSError, subprocess.TimeoutExpired) as e:
        log(f"  skipped: {e}")
        res = {"skipped": str(e)}
    table = readme_table(res)
    log(table)
    return Part({"readme": res}, [
        "## 6. The README's loop against the training command", "",
        "The README's first code block, run as written (`benchmarks/readme_loop.py`): its set-up once, "
        f"then its training loop with `range(3)` raised to {prof['readme_steps']} steps of its "
        "batch of 256 and `print` silenced; against the epoch time per step that "
        "`python -m lenet_np.train --epochs 2` reports for its second epoch (its training loop alone, "
        "warmed up as the README loop is, on the real data, shuffled). "
        f"{prof['readme_rounds']} alternating rounds, medians.", "", table, ""])


# -- 7. the three LeNets ------------------------------------------------------------------------------
def variants_side_by_side(ctx) -> Part:
    prof, workers = ctx.prof, default_workers()
    out, rows = {}, []
    for v in VARIANTS:
        recipe, times = variant_speed.run_variant(v, prof["variant_rounds"], workers, settle=0.1,
                                                  length=prof["variant_sample"], before=(), log=log)
        names = ("lenet_np-train", "torch-train")
        earlier = ctx.results.get("memory") or {}         # section 3 ran the classic network's children
        if v == "classic" and all(n in earlier and "error" not in earlier[n] for n in names):
            mem = {n: earlier[n] for n in names}
        else:
            mem = memory.run_children(ctx.args, prof["mem_batches"], log, names=names, variant=v)
        peaks = {name: None if "error" in r else r["stages"]["after training"][0] for name, r in mem.items()}
        steps = -(-datasets.N_TRAIN // recipe["batch_size"])
        res = {"recipe": recipe, "steps_per_epoch": steps, "memory": mem, "peak_rss_mib": peaks}
        for what in ("train", "eval"):
            med, lo, hi, t = variant_speed.summarise(times, "lenet_np", what)
            res[what] = {"ratio": med, "range": [lo, hi], "lenet_np_s": t,
                         "torch_s": statistics.median(times["torch", what])}
        out[v] = res
        tr, ev = res["train"], res["eval"]
        mine, theirs = peaks["lenet_np-train"], peaks["torch-train"]
        rss = (f"{mine:.0f} / {theirs:.0f} MiB = **{mine / theirs:.2f}**" if mine and theirs else "failed")
        rows.append([v, f"{recipe['optimizer']} lr {recipe['lr']}, batch {recipe['batch_size']}",
                     f"{report.fmt_time(tr['lenet_np_s'] * steps)} / {report.fmt_time(tr['torch_s'] * steps)}",
                     f"**{tr['ratio']:.2f}** ({tr['range'][0]:.2f}-{tr['range'][1]:.2f})",
                     f"{report.fmt_time(ev['lenet_np_s'])} / {report.fmt_time(ev['torch_s'])}",
                     f"**{ev['ratio']:.2f}** ({ev['range'][0]:.2f}-{ev['range'][1]:.2f})", rss])
    table = report.md_table(["variant", "recipe", "training epoch, lenet_np / torch", "step ratio (range)",
                             f"eval of {variant_speed.EVAL_BATCH}, lenet_np / torch", "eval ratio (range)",
                             "training peak RSS, lenet_np / torch"], rows)
    log(table)
    return Part({"variants": out}, [
        "## 7. The book's three LeNets side by side", "",
        "Each LeNet by its recipe, as `python -m lenet_np.train --variant V` runs it on the CPU: lenet_np "
        f"through DataParallel({workers}), torch with set_num_threads({workers}), on the same random batches "
        f"(`benchmarks/variant_speed.py`). {prof['variant_rounds']} rounds, the contenders alternating and "
        f"each sample {prof['variant_sample']} s of whole calls after 0.1 s untimed; a ratio is the median of "
        "the rounds' lenet_np / torch (their range in brackets). The epoch is the median step times "
        f"{datasets.N_TRAIN:,} / batch steps. Evaluation: one batch of {variant_speed.EVAL_BATCH} in eval mode "
        "(torch under no_grad), as the training command evaluates. Peak RSS: the training phase of a child "
        f"process training {prof['mem_batches']} batches of real data (as in section 3).", "", table, ""])


SECTIONS = [
    Section("e2e", "1. End to end   (load average {load})", "one training epoch (LeNet sigmoid/max, Adam lr 1e-3, "
            "batch 256, 60,000 examples) and one test-set evaluation (10,000), lenet_np against torch, "
            "alternating runs", end_to_end, keys=("end_to_end",)),
    Section("limit", "2. Compute limit", "the epoch time at the float32 matmul peak, from the FLOPs of a "
            "training step, and the fraction of it each contender reaches", compute_limit, timed=False),
    Section("memory", "3. Peak memory   (load average {load})", "peak memory (ru_maxrss) of a training run, "
            "each contender in its own process", peak_memory, keys=("memory",)),
    Section("layers", "4. Per layer, batch 256   (load average {load})", "forward and backward of each layer, "
            "lenet_np ``fast`` and ``reference`` implementations against torch (autograd)", per_layer_times,
            keys=("layers",)),
    Section("sweep", "5. Batch-size sweep   (load average {load})", "the whole training step at batch sizes "
            "1 .. 1024", batch_sweep, keys=("sweep",)),
    Section("readme", "6. The README's loop against the training command   (load average {load})",
            "the README's training loop, run as written, against ``python -m lenet_np.train``'s step", readme,
            keys=("readme",)),
    Section("variants", "7. The book's three LeNets side by side   (load average {load})", "the book's three "
            "LeNets by their recipes: training step, evaluation and peak RSS, each as a ratio to torch",
            variants_side_by_side, keys=("variants",)),
]


# -- the report -------------------------------------------------------------------------------------------
def noise_warning(meta) -> list:
    busy = {k: v["others"] for k, v in meta["cpu_taken_by_others"].items() if v.get("others") is not None}
    worst = max(busy.values(), default=0.0)
    if worst < 0.1:
        return []
    return ["", f"**Warning: other processes used up to {worst:.0%} of the CPUs while this ran.** Both contenders "
            "run two threads on two cores; when another process takes a core, every parallel region waits for a "
            "descheduled thread (timings then jump in steps of the scheduler's time slice) and the numbers, "
            "ratios included, are unreliable. Rerun on a quiet machine."]


def header(meta, info) -> list:
    return [f"# lenet_np CPU benchmarks, {meta['date']}{' (quick)' if meta['quick'] else ''}", "",
            f"`{meta['command']}`, {meta['duration_s'] / 60:.1f} minutes. Every comparison is a ratio of medians "
            "measured in the same run, the contenders alternating round by round; `spread` is (max - min) / median "
            "of the samples. The machine is shared: expect noise of tens of percent between runs, less in the "
            "ratios.", "", "## Machine", "", *machine.machine_lines(info),
            "- 1-minute load average when each section started: "
            + ", ".join(f"{k} {v}" for k, v in meta["loadavg_at_sections"].items()),
            "- share of the CPUs that other processes used during each section (from /proc/stat less this "
            "process and its children): " + ", ".join(
                f"{k} {v['others']:.0%}" for k, v in meta["cpu_taken_by_others"].items()
                if v.get("others") is not None),
            *noise_warning(meta), ""]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.child:
        return memory.child_main(args)
    prof = PROFILES["quick" if args.quick else "full"]
    only = set((args.only or ",".join(optional_sections())).split(",")) - {""}   # checked by parse_args
    t_start = time.perf_counter()
    torch = contenders.import_torch(args.torch_threads)
    info = machine.machine_info(torch_threads=torch.get_num_threads())
    log("# lenet_np CPU benchmarks" + (" (quick)" if args.quick else ""))
    for line in machine.machine_lines(info):
        log(line)
    ctx = Context(args=args, prof=prof, info=info)

    log("\n## float32 matmul peak")
    peak = machine.matmul_peak(repeats=prof["peak_repeats"])
    for k, v in peak.items():
        log(f"  {k}: {v['gflops']:.1f} GFLOP/s")
    ctx.results.update(flops=per_layer.flop_counts(), matmul_peak=peak)

    loads, monitor = {}, {}

    def watch(section):
        """As a section that measures starts: report how busy other processes kept the CPUs
        during the previous one, note the load average, watch the CPUs during this one."""
        if section is not None and not section.timed:
            return {}
        for k, m in monitor.items():
            if isinstance(m, machine.CpuMonitor):
                monitor[k] = m.stop()
                if monitor[k]["others"] is not None:
                    log(f"  (other processes used {monitor[k]['others']:.0%} of the CPUs during this section)")
        if section is None:
            return {}
        loads[section.name] = machine._read("/proc/loadavg").split()[0]
        monitor[section.name] = machine.CpuMonitor()
        return {"load": loads[section.name]}

    run_sections(SECTIONS, ctx, chosen=lambda s: not s.timed or s.name in only, watch=watch)

    info["loadavg_end"] = machine._read("/proc/loadavg").split()[:3]
    today = dt.date.today().isoformat()
    meta = {"date": today, "quick": args.quick, "duration_s": time.perf_counter() - t_start,
            "command": "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:]),
            "torch_threads": args.torch_threads, "variant": args.variant, "e2e_repeats": prof["e2e_repeats"],
            "mem_batches": prof["mem_batches"], "sweep_ref_max": prof["sweep_ref_max"], "profile": prof,
            "loadavg_at_sections": loads, "cpu_taken_by_others": monitor}
    meta["command"] = meta["command"].strip()
    stem = f"cpu-{today}" + ("-quick" if args.quick else "")
    md_path, json_path = report.write_report(args.out, stem, header(meta, info), {"meta": meta, "machine": info}, ctx)
    log(f"\nreport: {md_path}\n        {json_path}\n({meta['duration_s'] / 60:.1f} minutes)")
    return 0


if __name__ == "__main__":
    sys.exit(cli.guard(main))
