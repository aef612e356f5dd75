"""The measuring sections: 3. kernels per training step, 4. one epoch, 5. per layer on the GPU,
7. per layer on the CPU, 8. the batch-size sweep."""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.gpu.common import (
    VARIANTS,
    contenders,
    data_is_real,
    datasets,
    per_layer,
    predicted_launches,
    report,
    require_gpu,
    timing,
    training_step,
)
from benchmarks.sections import Part, log, time_left


# -- 3. kernels per training step -------------------------------------------------------------------------
def short(name, width=70) -> str:
    name = " ".join(name.split())
    return name if len(name) <= width else name[:width - 3] + "..."


def kernels(ctx) -> Part:
    require_gpu(ctx)
    from lenet_np import backend

    prof, cuda = ctx.prof, backend.cuda_module()
    batch, calls, skip = prof["step_batch"], prof["step_calls"], 3 + prof["step_calls"]
    out, rows, details, notes = {}, [], [], set()
    for variant in VARIANTS:
        if time_left(ctx) < 3:
            notes.add(f"out of time before {variant}")
            break
        step, sync = training_step(variant, "cuda", batch)
        p = timing.device_profile(step, sync, calls=calls, warmup=3, cuda=cuda)
        predicted, why = predicted_launches(variant, batch, skip, calls)
        notes.update(p.notes + ([why] if why else []) + (
            ["the CuPy stand-in's CUDA events read the host clock: its events span is wall time"]
            if ctx.args.cpu_smoke else []))
        total = None if predicted is None else sum(predicted.values())
        out[variant] = {"profile": p, "predicted": predicted, "predicted_total": total, "batch": batch,
                        "calls": calls}
        log(f"  {variant:<9} wall {report.fmt_time(p.wall_s)}/step, device busy {report.fmt_time(p.busy_s)}, "
            f"kernels {fmt_num(p.kernels)} + copies {fmt_num(p.copies)}, stand-in predicts {fmt_num(total)}")
        rows.append([variant, report.fmt_time(p.wall_s), report.fmt_time(p.span_s), report.fmt_time(p.busy_s),
                     fmt_share(p.busy_share), fmt_num(p.kernels), fmt_num(p.copies), fmt_num(p.launches),
                     fmt_num(total), fmt_num(None if total is None or p.launches is None else p.launches - total)])
        details.append(f"- {variant}: busiest kernels: " + ("; ".join(
            f"`{short(name)}` {n:g} x {report.fmt_time(t)}" for name, n, t in p.top[:6]) or "none recorded")
            + ". Stand-in by kind: " + (", ".join(f"{k} {v:g}" for k, v in list(predicted.items())[:10])
                                        if predicted else why or "-"))
    table = report.md_table(["variant", "wall/step", "events span/step", "device busy/step", "busy share",
                             "kernels", "copies", "launches", "stand-in predicts", "difference"], rows)
    log(table)
    lines = ["## Kernels per training step", "",
             f"One training step of each variant at batch {batch} as `python -m lenet_np.train` runs it (its "
             f"recipe's optimizer; the batch cut on the device; the loss and the correct predictions kept "
             f"there), per step over {calls} steps. *wall*: host clock; *events span*: CUDA events around "
             "the steps (the device's clock, idle gaps included); *device busy*: the union of the kernels' and "
             "copies' intervals that torch.profiler (CUPTI) recorded on the device; *busy share*: busy / wall "
             "(well under 100%: the device waits for Python to launch). *launches* = kernels + copies (memcpy, "
             "memset), what `tests/cupy_standin.py`'s `count_launches()` predicts for the same steps.", "",
             table, "", *details, ""]
    lines += note_lines(notes)
    return Part({"kernels": out}, lines)


def note_lines(notes) -> list:
    """The notes of a section (what it could not measure, and why), as a list in the report."""
    return ["Notes:", "", *(f"- {n}." for n in sorted(notes)), ""] if notes else []


def fmt_num(x) -> str:
    return "-" if x is None else f"{x:,.1f}".rstrip("0").rstrip(".")


def fmt_share(x) -> str:
    return "-" if x is None else f"{x:.0%}"


# -- 4. one epoch -------------------------------------------------------------------------------------------
def make_runners(kinds, data=None, torch_threads=None):
    """name -> runner for the kinds asked for: numpy, cupy, torch-cpu, torch-cuda."""
    made = {}
    for kind in kinds:
        if kind == "numpy":
            made["lenet_np-numpy"] = contenders.LenetNpRunner(data)
        elif kind == "cupy":
            made["lenet_np-cupy"] = contenders.LenetNpRunner(data, device="cuda")
        elif kind == "torch-cpu":
            made["torch-cpu"] = contenders.TorchRunner(data, threads=torch_threads)
        elif kind == "torch-cuda":
            made["torch-cuda"] = contenders.TorchRunner(data, device="cuda")
    return made


def kinds(ctx) -> list:
    """The contenders that can run: CuPy where the preflight passed, torch CUDA where torch has it."""
    return ((["cupy"] if ctx.gpu_ok else []) + (["torch-cuda"] if ctx.use_torch_cuda else [])
            + ["numpy", "torch-cpu"])


def epoch(ctx) -> Part:
    prof = ctx.prof
    data = datasets.load_data("real", data_dir=ctx.data_dir)
    ctx.data_source = data.source
    log(f"  data: {data.source}")
    runners = make_runners(kinds(ctx), data)
    n_total = len(data.train_images)
    n_train, n_test = {}, {}
    for name in runners:
        frac = prof["gpu_fraction"] if "cuda" in name or "cupy" in name else prof["cpu_fraction"]
        n_train[name] = max(datasets.BATCH_SIZE, int(n_total * frac))
        n_test[name] = max(datasets.BATCH_SIZE, int(len(data.test_images) * frac))
    for name in runners:
        log(f"  {name}: {n_train[name]:,} training and {n_test[name]:,} test examples per run")
    res = contenders.end_to_end(runners, n_train, n_test, repeats=prof["e2e_repeats"], log=log, n_total=n_total)
    e2e = {"data": data.source, "results": res, "base": "torch-cuda" if ctx.use_torch_cuda else "torch-cpu"}
    table = report.e2e_table(res, base=e2e["base"])
    log(table)
    del data, runners
    real = data_is_real(e2e["data"])
    return Part({"end_to_end": e2e}, [
        "## One epoch", "",
        f"LeNet (sigmoid, max pooling), Adam lr 1e-3, batch 256; data: {e2e['data']}"
        + ("" if real else " (**synthetic images: the loss and the accuracy mean nothing**)")
        + ". On the GPU the uint8 images are copied to the device once and each batch is converted there; one "
        "sync per epoch. The CPU contenders run a fraction of the epoch (`examples/run`); all times are scaled "
        "to 60,000 training and 10,000 test examples.", "", table, ""])


# -- 5. per layer on the GPU ----------------------------------------------------------------------------------
def budgeted(ctx, timer, empty):
    """``timer``, except that once the section's time is spent it measures nothing more (each
    contender an ``empty()`` Stats, shown as "-"), so that a long table stops at its budget;
    ``ctx.cut`` counts the timings left out."""
    ctx.cut = 0

    def timed(contenders):
        if time_left(ctx) > 0:
            return timer(contenders)
        ctx.cut += 1
        return {name: empty() for name in contenders}
    return timed


def cut_note(ctx) -> list:
    return ([f"Out of time: the last {ctx.cut} timings of this table were left out (shown as -).", ""]
            if getattr(ctx, "cut", 0) else [])


def device_layers_table(layers, a="fast", b="torch"):
    """Per layer (forward + backward): wall time, device busy time, busy share and kernels per call
    of ``a`` and ``b``, and a's busy time over b's."""
    def get(r, k, what):
        vals = []
        for direction in ("forward", "backward"):
            s = r.get(direction)
            if s is None:
                continue
            p = s[k].profile
            vals.append(s[k].median if what == "wall" else getattr(p, what) if p else None)
        return None if any(v is None for v in vals) else sum(vals)
    rows = []
    for name, r in layers.items():
        label = {"optimizer": "Adam step", "step": "whole step"}.get(name, name)
        wa, ba, ka = get(r, a, "wall"), get(r, a, "busy_s"), get(r, a, "launches")
        wb, bb, kb = get(r, b, "wall"), get(r, b, "busy_s"), get(r, b, "launches")
        rows.append([label, r["kind"], report.fmt_time(wa), report.fmt_time(ba),
                     fmt_share(None if ba is None else ba / wa), fmt_num(ka), report.fmt_time(wb),
                     report.fmt_time(bb), fmt_share(None if bb is None else bb / wb), fmt_num(kb),
                     report.fmt_ratio(None if ba is None or not bb else ba / bb)])
    return report.md_table(["layer", "kind", f"{a} wall", f"{a} busy", "busy share", f"{a} launches", f"{b} wall",
                            f"{b} busy", "busy share", f"{b} launches", f"{a}/{b} busy"], rows, align="ll" + "r" * 9)


def layers(ctx) -> Part:
    require_gpu(ctx)
    from lenet_np import backend

    prof = ctx.prof
    torch_device = "cuda" if ctx.use_torch_cuda else "cpu"
    timer = budgeted(ctx, timing.device_timer(prof["layer_min"], prof["layer_max_calls"], prof["layer_rounds"],
                                              cuda=backend.cuda_module()), timing.DeviceStats)
    res = per_layer.layer_benchmark(timer, device="cuda", batch=prof["layer_batch"], log=log,
                                    torch_device=torch_device)
    wall, device = per_layer.layers_table(res), device_layers_table(res)
    log(wall)
    log(device)
    notes = sorted({n for r in res.values() for d in ("forward", "backward") if r.get(d)
                    for s in r[d].values() if s.profile for n in s.profile.notes})
    step = res["step"]["forward"]
    top = [f"- whole step, {k}: " + ("; ".join(f"`{short(n)}` {c:g} x {report.fmt_time(t)}"
                                                for n, c, t in step[k].profile.top[:6]) or "no kernels recorded")
           for k in ("fast", "torch") if step[k].profile]
    lines = [f"## Per layer, batch {prof['layer_batch']}, float32, on {ctx.layer_device}", "",
             "Wall time per call in a stream of calls (synchronised at both ends, so launch overheads overlap the "
             "GPU work as in training). `fast`/`reference`: lenet_np's two implementations of Conv2d and "
             f"MaxPool2d on CuPy; `torch`: the same layer with autograd, on {torch_device}.", "", wall, "",
             "The device's side of the same calls (torch.profiler, CUPTI): *busy*: the union of the intervals of "
             "the kernels and copies the calls ran on the device, per call; *busy share*: busy / wall; "
             "*launches*: kernels and copies per call (forward and backward together).", "", device, "", *top, "",
             *cut_note(ctx)]
    lines += note_lines(notes)
    return Part({"layers": res}, lines)


# -- 7. per layer on the CPU -----------------------------------------------------------------------------------
def cpu_layers(ctx) -> Part:
    prof = ctx.prof
    timer = budgeted(ctx, timing.profile_timer(prof, "cpu_layer"), timing.Stats)
    res = per_layer.layer_benchmark(timer, device="cpu", batch=prof["layer_batch"], log=log, torch_device="cpu")
    table = per_layer.layers_table(res)
    log(table)
    return Part({"cpu_layers": res}, [
        f"## Per layer on this machine's CPU, batch {prof['layer_batch']}", "",
        f"The same layers on the host's CPU ({os.cpu_count()} cores), NumPy against torch, timed as in "
        "`python -m benchmarks.run`: beside the GPU's table above, from the same machine.", "", table, "",
        *cut_note(ctx)])


# -- 8. the batch-size sweep -------------------------------------------------------------------------------------
def sweep(ctx) -> Part:
    prof = ctx.prof
    runners = make_runners(kinds(ctx))
    slow = {}

    def leave_out(name, n):
        # out of time, or the last step of this contender took so long that this one would not fit
        if n == prof["sweep"][0]:
            return False                                 # the smallest batch always runs
        prev = slow.get(name, 0.0) * 4
        return time_left(ctx) < 5 + prev * (prof["sweep_repeats"] + 3)

    def timer(contenders):
        res = timing.profile_timer(prof, "sweep", warmup=1, max_inner=1000)(contenders)
        slow.update({k: s.median for k, s in res.items()})
        return res
    res = per_layer.sweep_benchmark(runners, prof["sweep"], timer, skip=leave_out, log=log)
    names = list(runners)
    log(per_layer.sweep_table(res, names=names, base=names[1] if len(names) > 1 else names[0]))
    png = per_layer.sweep_plot(res, ctx.out_dir / f"{ctx.stem}.png",
                               f"LeNet training step, {ctx.gpu['name'] if ctx.gpu else 'CPU only (smoke run)'}",
                               log=log)
    names = [n for n in ("lenet_np-cupy", "torch-cuda", "lenet_np-numpy", "torch-cpu")
             if any(n in r for r in res.values())]
    lines = []
    if res:
        base = "torch-cuda" if "torch-cuda" in names else names[-1]
        lines = ["## Examples/s against batch size", "", "One training step (forward, loss, backward, Adam) on random "
                 "data; a contender is left out of a batch size that would not fit in the section's time.", "",
                 per_layer.sweep_table(res, names=names, base=base), ""]
        lines += [f"![examples/s against batch size]({Path(png).name})", ""] if png else []
    return Part({"sweep": res}, lines, files=[png] if png else [])
