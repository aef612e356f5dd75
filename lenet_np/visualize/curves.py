"""curves.png and gradient_norms.png: the training as the metrics files recorded it (loss and
accuracy per epoch and per step, every parameter's gradient norm per step). ``python -m
lenet_np.train --plot`` draws its curves with ``plot_curves`` too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import fractional_epochs, norm_ratios
from .plotting import pyplot, save, wrap


def run_label(path, settings: dict | None = None) -> str:
    """A panel's name for the per-step file at ``path``: the run's activation, variant and pooling
    (``settings``, as ``metrics.read_steps`` found them in the file) when known, then the file's
    name with its directory (the run), e.g. "relu, classic LeNet, max pool: relu/metrics.steps.csv"."""
    path = Path(path)
    where = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    s = settings or {}
    parts = [s.get("activation"), s.get("variant") and f"{s['variant']} LeNet", s.get("pool") and f"{s['pool']} pool"]
    what = ", ".join(p for p in parts if p)
    return f"{what}: {where}" if what else where


def _layer_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else name


def plot_gradient_norms(runs: list[tuple[str, dict]], path: Path) -> Path:
    """One panel per run (label, read_steps(...)), side by side on the same log y scale: the
    L2 norm of every parameter's gradient over the steps; a colour per layer, weights solid,
    biases dotted, other parameters dashed."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(6.4 * len(runs) + 2.4, 5.4), sharey=True, squeeze=False)
    axes = axes[0]
    layers = list(dict.fromkeys(_layer_of(n) for _, s in runs for n in s["grad_norms"]))
    colors = {layer: plt.get_cmap("tab10" if len(layers) <= 10 else "tab20")(k % 20) for k, layer in enumerate(layers)}
    handles = {}
    for ax, (label, steps) in zip(axes, runs):
        for name, values in steps["grad_norms"].items():
            kind = name.rsplit(".", 1)[-1]
            style = {"weight": "-", "bias": ":"}.get(kind, "--")
            shown = np.where(values > 0, values, np.nan)         # log scale: zeros cannot be drawn
            (line,) = ax.plot(steps["step"], shown, style, color=colors[_layer_of(name)],
                              lw=1.6 if kind == "weight" else 1.1, label=name)
            handles.setdefault(name, line)
        epoch = steps["epoch"]
        for e in np.unique(epoch)[:-1]:
            ax.axvline(steps["step"][epoch == e].max(), color="gray", lw=0.6, ls="--", alpha=0.6)
        ax.set_yscale("log")
        ax.set_xlabel("training step (dashed: end of an epoch)")
        ax.grid(alpha=0.3, which="both")
        r = norm_ratios(steps)
        extra = ("" if r is None else f"\n|grad {r['first']}| / |grad {r['last']}|: {r['ratio_first_row']:.2g} at "
                 f"step {steps['step'][0]}, {r['ratio_last_row']:.2g} at step {steps['step'][-1]}, "
                 f"median {r['ratio_median']:.2g}")
        ax.set_title(f"{label}{extra}", fontsize=9, y=1.0)
    axes[0].set_ylabel("L2 norm of the parameter's gradient (log scale)")
    fig.legend(handles.values(), handles.keys(), loc="center right", fontsize=8, frameon=False)
    width = 6.4 * len(runs) + 2.4
    fig.suptitle(wrap("Gradient norms per parameter over training (the vanishing-gradient lesson: the layers "
                       "far from the loss get smaller gradients)", width), fontsize=11)
    fig.subplots_adjust(left=0.8 / width, right=1 - 2.2 / width, top=0.8, bottom=0.11, wspace=0.08)
    return save(fig, path)


RUNNING_NOTE = ("Train accuracy is a running average over the epoch of a model that changes at every step "
                "(drawn mid-epoch); test accuracy is measured on the model at the end of the epoch. Early on, "
                "the model improves during the epoch, so its train accuracy can sit below its test accuracy.")


def plot_curves(history: list[dict], path: Path, source: str, steps: dict | None = None,
                steps_source: str = "") -> Path:
    """Training loss per step (from ``steps``, when given) and per epoch, and train and test
    accuracy per epoch, with a note on why train accuracy can sit below test accuracy."""
    plt = pyplot()
    epochs = np.array([h["epoch"] for h in history])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.9))
    if steps is not None:
        ax1.plot(fractional_epochs(steps), steps["loss"], "-", lw=1, color="tab:blue", alpha=0.7,
                 label="train loss, mean since the previous logged step")
    ax1.plot(epochs - 0.5, [h["loss"] for h in history], "o-" if len(epochs) > 1 else "o", color="tab:red",
             label="train loss, mean over the epoch (drawn mid-epoch)")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_title("Training loss" + (f"\nper step: {steps_source}" if steps is not None else ""), fontsize=10, y=1.0)
    ax2.plot(epochs - 0.5, [h["train_acc"] for h in history], "o-" if len(epochs) > 1 else "o",
             label="train acc (running, mid-epoch)")
    ax2.plot(epochs, [h["test_acc"] for h in history], "s-" if len(epochs) > 1 else "s",
             label="test acc (end of epoch)")
    ax2.set_ylabel("accuracy")
    ax2.set_title("Accuracy", fontsize=10, y=1.0)
    last = int(epochs.max())
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.set_xlim(0, last + 0.05)
        ax.set_xticks(range(0, last + 1))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.text(0.5, 0.015, wrap(RUNNING_NOTE, 11 * 1.05), ha="center", va="bottom", fontsize=8.5, style="italic")
    fig.suptitle(f"Training curves ({source})", fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return save(fig, path)
