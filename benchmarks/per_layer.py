"""Per layer: every LeNet layer's forward and backward timed alone on what it sees in training,
the training step against batch size, their tables and plot, and the FLOPs of LeNet per example."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .contenders import LenetNpRunner, TorchRunner, import_torch, make_lenet_np, make_torch_lenet
from .datasets import BATCH_SIZE, random_batch
from .report import fmt_rate, fmt_ratio, fmt_time, md_table
from .timing import noop


@dataclass
class LayerCase:
    name: str
    layer: object          # the lenet_np layer
    x: object              # its input in the network (layout as the network produces it)
    grad: object           # dL/d(output) in the network
    first: bool            # the first layer: no input gradient


def lenet_np_layer_cases(net, x, y):
    """Run one training step of ``net`` (any variant) layer by layer and keep each layer's input
    and output gradient, so each layer can be timed alone on exactly what it sees in training.
    The layers come in the order a training forward runs them, named as ``net.named_layers()``."""
    from lenet_np import nn

    names = {id(m): name for name, m in net.named_layers()}
    layers = [(names[id(m)], m) for m in net.layer_order()]
    inputs, h = [], x
    for _, m in layers:
        inputs.append(h)
        h = m(h)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn.forward(h, y)
    g = loss_fn.backward()
    grads = [None] * len(layers)
    for i in reversed(range(len(layers))):
        grads[i] = g
        g = layers[i][1].backward(g, input_grad=i > 0)
    return [LayerCase(name, m, inputs[i], grads[i], i == 0) for i, (name, m) in enumerate(layers)]


def lenet_np_layer_fns(case: LayerCase):
    """(forward fn, backward fn) timing one lenet_np layer; call forward once before backward."""
    params = case.layer.parameters()

    def forward():
        return case.layer(case.x)

    def backward():
        for p in params:
            p.grad = None
        return case.layer.backward(case.grad, input_grad=not case.first)

    return forward, backward


def torch_layer_fns(tnet, case: LayerCase, device="cpu"):
    """(forward fn, backward fn) for the torch layer of the same name, on the same values
    (contiguous copies): forward with autograd recording; backward = ``y.backward(grad)``
    through the recorded graph (input requires grad except for the first conv)."""
    import torch

    from lenet_np import backend

    if case.name == "flatten":                 # the classic model's feature.view(N, -1)
        layer = torch.nn.Flatten()
    else:
        part, index = case.name.split(".")
        layer = getattr(tnet, part)[int(index)]
    x = torch.from_numpy(np.ascontiguousarray(backend.as_numpy(case.x))).to(device)
    x.requires_grad_(not case.first)
    g = torch.from_numpy(np.ascontiguousarray(backend.as_numpy(case.grad))).to(device)
    params = list(layer.parameters())
    y = layer(x)

    def forward():
        return layer(x)

    def backward():
        x.grad = None
        for p in params:
            p.grad = None
        y.backward(g, retain_graph=True)

    return forward, backward


def loss_and_optimizer_fns(runner, x, y):
    """(loss forward, loss backward, optimizer step) timers: the rest of a training step."""
    if isinstance(runner, TorchRunner):
        logits = runner.net(x).detach().requires_grad_(True)
        loss = runner.F.cross_entropy(logits, y)
        runner.step(x, y)                                      # every parameter has a gradient now

        def loss_backward():
            logits.grad = None
            loss.backward(retain_graph=True)

        return (lambda: runner.F.cross_entropy(logits, y)), loss_backward, runner.opt.step
    logits = runner.net(x)
    runner.step(x, y)                                          # every parameter has a gradient now
    loss_fn = runner.loss_fn
    loss_fn.forward(logits, y)
    return (lambda: loss_fn.forward(logits, y)), loss_fn.backward, runner.opt.step


def layer_benchmark(timer, device="cpu", batch=BATCH_SIZE, torch_threads=None, log=print,
                    torch_device=None, variant="classic") -> dict:
    """Forward and backward of every LeNet layer, lenet_np ``fast`` and ``reference`` against torch,
    then the loss, the Adam step and the whole training step; ``timer(contenders)`` -> name -> Stats
    (``contenders``: name -> (fn, sync)). Returns layer name -> {kind, input, forward, backward}.
    Torch runs on ``torch_device`` (default: ``device``; "cpu" where torch has no CUDA). Any of
    the book's LeNets (``variant``), against the book's torch model of it."""
    from lenet_np import backend

    torch = import_torch(torch_threads)
    torch_device = torch_device or device
    x, y = random_batch(batch, seed=1)
    xd, yd = backend.to_device(x, device), backend.to_device(y, device)
    nets = {impl: make_lenet_np(0, impl, device, variant) for impl in ("fast", "reference")}
    cases = {impl: lenet_np_layer_cases(net, xd, yd) for impl, net in nets.items()}
    tnet = make_torch_lenet(0, torch_device, variant)
    tnet.train()
    np_sync = backend.synchronize if device == "cuda" else noop
    torch_sync = torch.cuda.synchronize if torch_device == "cuda" else noop
    syncs = {"fast": np_sync, "reference": np_sync, "torch": torch_sync}
    out = {}
    for i, name in enumerate(case.name for case in cases["fast"]):
        fns = {impl: lenet_np_layer_fns(cases[impl][i]) for impl in nets}
        fns["torch"] = torch_layer_fns(tnet, cases["fast"][i], torch_device)
        fwd = timer({k: (f[0], syncs[k]) for k, f in fns.items()})
        bwd = timer({k: (f[1], syncs[k]) for k, f in fns.items()})
        case = cases["fast"][i]
        out[name] = {"kind": type(case.layer).__name__, "input": tuple(case.x.shape), "forward": fwd,
                     "backward": bwd}
        log(f"  {name:<7} {type(case.layer).__name__:<10} " + "  ".join(
            f"{k} {fmt_time(fwd[k].median)} + {fmt_time(bwd[k].median)}" for k in fns))
    runners = {"fast": LenetNpRunner(device=device, impl="fast", variant=variant),
               "reference": LenetNpRunner(device=device, impl="reference", variant=variant),
               "torch": TorchRunner(device=torch_device, threads=torch_threads, variant=variant)}
    xy = {k: (r.device_array(x), r.device_array(y)) for k, r in runners.items()}
    rest = {k: loss_and_optimizer_fns(r, *xy[k]) for k, r in runners.items()}
    out["loss"] = {"kind": "CrossEntropyLoss", "input": (batch, 10),
                   "forward": timer({k: (f[0], syncs[k]) for k, f in rest.items()}),
                   "backward": timer({k: (f[1], syncs[k]) for k, f in rest.items()})}
    out["optimizer"] = {"kind": "Adam.step", "input": None,
                        "forward": timer({k: (f[2], syncs[k]) for k, f in rest.items()})}
    out["step"] = {"kind": "whole training step", "input": tuple(x.shape),
                   "forward": timer({k: (lambda r=r, k=k: r.step(*xy[k]), syncs[k]) for k, r in runners.items()})}
    log("  loss, Adam step, whole step: " + "  ".join(
        f"{k} {fmt_time(out['loss']['forward'][k].median + out['loss']['backward'][k].median)}, "
        f"{fmt_time(out['optimizer']['forward'][k].median)}, {fmt_time(out['step']['forward'][k].median)}"
        for k in runners))
    return out


def layers_table(layers, a="fast", b="torch", ref="reference"):
    """The per-layer table: times, ratios a/b, the gain ref/a, and each layer's share of a's step."""
    rows = []
    total = {k: 0.0 for k in (a, ref, b)}
    step_a = layers["step"]["forward"][a].median
    for name, r in layers.items():
        if name == "step":
            continue
        f, bw = r["forward"], r.get("backward")

        def t(k, f=f, bw=bw):
            return f[k].median + (bw[k].median if bw else 0.0)
        for k in total:
            total[k] += t(k)
        shape = "x".join(map(str, r["input"])) if r["input"] else ""
        label = name if name != "optimizer" else "Adam step"
        rows.append([label, r["kind"], shape,
                     fmt_time(f[a].median), fmt_time(bw[a].median) if bw else "-",
                     fmt_time(f[ref].median), fmt_time(bw[ref].median) if bw else "-",
                     fmt_time(f[b].median), fmt_time(bw[b].median) if bw else "-",
                     fmt_ratio(f[a].median / f[b].median), fmt_ratio(bw[a].median / bw[b].median) if bw else "-",
                     fmt_ratio(t(ref) / t(a)), f"{t(a) / step_a:.0%}"])
    rows.append(["sum", "", "", fmt_time(total[a]), "", fmt_time(total[ref]), "", fmt_time(total[b]), "",
                 fmt_ratio(total[a] / total[b]), "", fmt_ratio(total[ref] / total[a]), f"{total[a] / step_a:.0%}"])
    st = layers["step"]["forward"]
    rows.append(["whole step", "measured", "", fmt_time(st[a].median), "", fmt_time(st[ref].median), "",
                 fmt_time(st[b].median), "", fmt_ratio(st[a].median / st[b].median), "",
                 fmt_ratio(st[ref].median / st[a].median), "100%"])
    return md_table(["layer", "kind", "input", f"{a} fwd", f"{a} bwd", f"{ref} fwd", f"{ref} bwd", f"{b} fwd",
                     f"{b} bwd", f"{a}/{b} fwd", f"{a}/{b} bwd", f"{ref}/{a}", f"share of {a} step"],
                    rows, align="lll" + "r" * 10)


def sweep_benchmark(runners: dict, batches, timer, skip=None, log=print) -> dict:
    """One training step (``runner.step``) at each batch size: batch -> name -> Stats.
    ``skip(name, batch)`` leaves a contender out (too slow, out of time)."""
    out = {}
    for n in batches:
        x, y = random_batch(n, seed=n)
        contenders = {}
        for k, r in runners.items():
            if skip is not None and skip(k, n):
                continue
            xd, yd = r.device_array(x), r.device_array(y)
            contenders[k] = (lambda r=r, xd=xd, yd=yd: r.step(xd, yd), r.sync)
        if not contenders:
            continue
        out[n] = timer(contenders)
        log(f"  batch {n:>5}: " + "  ".join(f"{k} {fmt_time(s.median)} ({fmt_rate(n / s.median)} ex/s)"
                                            for k, s in out[n].items()))
    return out


def sweep_table(sweep, names, base):
    rows = []
    for n, res in sweep.items():
        row = [str(n)]
        for k in names:
            s = res.get(k)
            row += [fmt_time(s.median), fmt_rate(n / s.median)] if s else ["-", "-"]
        first = res.get(names[0])
        row.append(fmt_ratio(first.median / res[base].median) if first and base in res else "-")
        rows.append(row)
    headers = ["batch"] + [h for k in names for h in (f"{k} step", f"{k} ex/s")] + [f"{names[0]}/{base}"]
    return md_table(headers, rows)


def sweep_plot(sweep, path, title, log=print):
    """Examples/s against batch size of each contender (from ``sweep_benchmark``), log-log, as a
    PNG at ``path``; returns the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as exc:
        log(f"  no plot: matplotlib does not import ({exc})")
        return None
    names = sorted({k for res in sweep.values() for k in res})
    if not names:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        pts = [(n, n / res[name].median) for n, res in sweep.items() if name in res]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("training examples / s (forward, backward, Adam)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def flop_counts():
    """Multiply-adds of LeNet per example, from the layer shapes (a batch of one through the net).

    forward = 2 * MACs of every conv and linear layer; backward = weight gradients (2 * MACs)
    + input gradients (2 * MACs) of every layer but the first. Bias adds, activations, pooling
    and the optimizer are left out (they are a few percent and memory-bound anyway).
    """
    from lenet_np import nn

    net = make_lenet_np(0)
    x, y = random_batch(1)
    rows = []
    for case in lenet_np_layer_cases(net, x, y):
        m = case.layer
        out_shape = m(case.x).shape
        if isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            macs = int(np.prod(out_shape[1:])) * m.in_channels * kh * kw
        elif isinstance(m, nn.Linear):
            macs = m.in_features * m.out_features
        else:
            continue
        rows.append({"layer": case.name, "input": tuple(case.x.shape[1:]), "output": tuple(out_shape[1:]),
                     "macs": macs, "forward": 2 * macs, "backward_weight": 2 * macs,
                     "backward_input": 0 if case.first else 2 * macs})
    fwd = sum(r["forward"] for r in rows)
    bwd = sum(r["backward_weight"] + r["backward_input"] for r in rows)
    return {"layers": rows, "forward_per_example": fwd, "backward_per_example": bwd,
            "train_per_example": fwd + bwd, "eval_per_example": fwd}
