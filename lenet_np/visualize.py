"""Pictures of a trained LeNet: ``python -m lenet_np.visualize --checkpoint PATH --out DIR``.

Writes PNG files (matplotlib, Agg backend) into DIR:

    filters.png        the 6 filters of the first convolution (conv.0.weight, 5x5 each)
    feature_maps.png   one test image through every layer: the maps of conv.0, its
                       activation, the pooling, conv.3, ..., the fully connected
                       activations as strips, and the predicted class probabilities
    misclassified.png  a grid of misclassified test images with true and predicted labels
    curves.png         loss and accuracy per epoch, from --metrics (CSV or JSON as
                       written by ``lenet_np.train --metrics``) or else from the
                       checkpoint's own history

The test images come from ``lenet_np.data`` (``--data-dir``, else its search path); when no
``--data-dir`` is given and no data set is found, random images stand in (the pictures say
so). Each PNG is written atomically: a failed run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import textwrap
from pathlib import Path

import numpy as np

from . import backend, cli
from .checkpoint import atomic_write
from .trace import CLASS_NAMES, ToolError, load_network, load_test_set, named_layers, read_checkpoint

METRIC_KEYS = ("epoch", "loss", "train_acc", "test_acc")


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only), or a ToolError saying how to get it."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ToolError("the pictures need matplotlib, which is not installed: pip install matplotlib "
                        "(or pip install -e '.[plot]')") from None
    return plt


def _save(fig, path: Path) -> Path:
    """Write the figure as a PNG at ``path`` atomically (the whole file or none)."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return path


# -- what to draw ----------------------------------------------------------------------------
def layer_outputs(net, x) -> list[tuple[str, str, np.ndarray]]:
    """(name, type, output as NumPy) for the input and every layer, walking the layers as
    ``LeNet.forward`` does."""
    outputs = [("input", "", backend.as_numpy(x))]
    for name, layer in named_layers(net):
        if layer is None:
            x = x.reshape(x.shape[0], -1)
            outputs.append((name, "reshape", backend.as_numpy(x)))
        else:
            x = layer(x)
            outputs.append((name, type(layer).__name__, backend.as_numpy(x)))
    return outputs


def predict(net, images, batch_size: int = 1000) -> np.ndarray:
    """Predicted classes of float32 images (N, 1, 28, 28)."""
    net.eval()
    preds = [backend.as_numpy(net(images[i:i + batch_size]).argmax(axis=1)) for i in range(0, len(images), batch_size)]
    net.train()
    return np.concatenate(preds)


def read_metrics(path) -> list[dict]:
    """Per-epoch metrics from a CSV with a header or a JSON list of dicts."""
    path = Path(path)
    if not path.is_file():
        raise ToolError(f"metrics {path}: no such file")
    try:
        if path.suffix.lower() == ".json":
            rows = json.loads(path.read_text())
        else:
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        if not isinstance(rows, list) or not rows:
            raise ValueError("no epochs in it")
        missing = [k for k in METRIC_KEYS if k not in rows[0]]
        if missing:
            raise ValueError(f"missing column(s) {', '.join(missing)}; expected {', '.join(METRIC_KEYS)}")
        return [{k: float(r[k]) for k in METRIC_KEYS} for r in rows]
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
        raise ToolError(f"metrics {path}: cannot read it as per-epoch metrics ({exc})") from None


# -- the pictures ----------------------------------------------------------------------------
def plot_filters(net, path: Path) -> Path:
    """The first convolution's filters, on one symmetric colour scale (blue < 0 < red)."""
    plt = _pyplot()
    conv = net.conv[0]
    w = backend.as_numpy(conv.weight.data)[:, 0]               # (6, 5, 5)
    b = backend.as_numpy(conv.bias.data)
    vmax = float(np.abs(w).max())
    fig, axes = plt.subplots(1, len(w), figsize=(2 * len(w) + 1, 2.6))
    for k, ax in enumerate(axes):
        im = ax.imshow(w[k], cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax.set_title(f"filter {k}\nbias {b[k]:+.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="weight")
    fig.suptitle(f"conv.0.weight: the {len(w)} filters (5x5) of the first convolution", fontsize=11)
    return _save(fig, path)


def mosaic(maps, gap: int = 1) -> np.ndarray:
    """(C, H, W) maps side by side in one (H, C*(W + gap) - gap) image, NaN (blank) between."""
    c, h, w = maps.shape
    out = np.full((h, c * (w + gap) - gap), np.nan, dtype=np.float64)
    for k in range(c):
        out[:, k * (w + gap):k * (w + gap) + w] = maps[k]
    return out


def plot_feature_maps(net, image, label, path: Path, source: str) -> Path:
    """One image through every layer: a row per layer, one panel per channel."""
    plt = _pyplot()
    outputs = layer_outputs(net, image[None])
    maps = [o for o in outputs if o[2].ndim == 4]                # input, conv.0 ... conv.5
    vectors = [o for o in outputs if o[2].ndim == 2 and o[0] not in ("flatten", "fc.4")]
    logits = outputs[-1][2][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    ncols = max(o[2].shape[1] for o in maps)
    fig = plt.figure(figsize=(ncols * 0.95 + 1.2, 1.25 * len(maps) + 0.55 * len(vectors) + 2.6))
    grid = fig.add_gridspec(len(maps) + len(vectors) + 1, ncols, hspace=0.9, wspace=0.0,
                            height_ratios=[1] * len(maps) + [0.3] * len(vectors) + [1.5])
    for row, (name, kind, out) in enumerate(maps):
        chans = out[0]                                           # (C, H, W): one panel per channel
        ax = fig.add_subplot(grid[row, :chans.shape[0]])
        cmap = plt.get_cmap("gray" if name == "input" else "viridis").with_extremes(bad="white")
        ax.imshow(mosaic(chans), cmap=cmap, interpolation="nearest")
        ax.set_anchor("W")                                       # rows start at the left edge
        ax.axis("off")
        title = "input" if name == "input" else f"{name} {kind}"
        ax.set_title(f"{title} {tuple(chans.shape)}   values {chans.min():.2f} .. {chans.max():.2f}",
                     loc="left", fontsize=9)
    for i, (name, kind, out) in enumerate(vectors):
        ax = fig.add_subplot(grid[len(maps) + i, :])
        vec = out[0]
        ax.imshow(vec[None, :], aspect="auto", cmap="viridis", interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_title(f"{name} {kind} ({vec.size},)   values {vec.min():.2f} .. {vec.max():.2f}", loc="left", fontsize=9)
    ax = fig.add_subplot(grid[-1, :])
    pred = int(np.argmax(probs))
    colors = ["tab:green" if k == label else ("tab:red" if k == pred else "tab:gray") for k in range(len(probs))]
    ax.bar(range(len(probs)), probs, color=colors)
    ax.set_xticks(range(len(probs)))
    ax.set_xticklabels(CLASS_NAMES, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("probability")
    ax.set_title(f"fc.4 Linear -> softmax: predicted {CLASS_NAMES[pred]} ({probs[pred]:.2f}); "
                 f"true {CLASS_NAMES[label]} (green)", loc="left", fontsize=9)
    fig.suptitle(f"One image through LeNet ({source}): every layer's output, one panel per channel\n"
                 "(each row on its own colour scale, its range in the title)", fontsize=11)
    fig.subplots_adjust(top=0.92, bottom=0.05, left=0.04, right=0.98)
    return _save(fig, path)


def plot_misclassified(images, labels, preds, path: Path, source: str, max_images: int = 25) -> Path:
    """A grid of the first misclassified images, titled with the true and predicted class."""
    plt = _pyplot()
    wrong = np.flatnonzero(preds != labels)
    shown = wrong[:max_images]
    cols = max(1, int(np.ceil(np.sqrt(len(shown)))))
    rows = max(1, int(np.ceil(len(shown) / cols)))
    width = max(1.9 * cols + 0.4, 5.0)                          # room for the title however few images
    acc = 1 - len(wrong) / len(labels)
    note = (f"{len(shown)} of the {len(wrong)} misclassified images ({source}; accuracy {acc:.3f})"
            if len(wrong) else f"no misclassified image among {len(labels)} ({source})")
    note = "\n".join(textwrap.wrap(note, width=int(width * 9), break_on_hyphens=False))  # ~9 characters per inch
    title_h = 0.25 * (note.count("\n") + 1) + 0.65                 # the title and the first row's labels
    grid_h = 2.15 * rows if len(shown) else 0.3
    fig, axes = plt.subplots(rows, cols, figsize=(width, grid_h + title_h), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), shown):
        ax.imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"#{i} true: {CLASS_NAMES[labels[i]]}\npred: {CLASS_NAMES[preds[i]]}", fontsize=8)
    fig.suptitle(note, fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - title_h / (grid_h + title_h),
                        hspace=0.45, wspace=0.1)
    return _save(fig, path)


def plot_curves(history: list[dict], path: Path, source: str) -> Path:
    """Training loss, and train and test accuracy, per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], "o-", label="train loss")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_title("Training loss")
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train acc")
    ax2.plot(epochs, [h["test_acc"] for h in history], "s-", label="test acc")
    ax2.set_ylabel("accuracy")
    ax2.set_title("Accuracy")
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.set_xticks(epochs)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"Training curves ({source})", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


# -- the command line ---------------------------------------------------------------------------
MAX_MISCLASSIFIED = 100


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m lenet_np.visualize",
                                description="Draw a trained LeNet: filters, feature maps, misclassified "
                                            "test images, training curves (PNG files).")
    p.add_argument("--checkpoint", type=cli.existing_file, required=True,
                   help="a .npz checkpoint written by python -m lenet_np.train")
    p.add_argument("--out", type=cli.output_dir, required=True,
                   help="directory for the PNG files (created if needed)")
    p.add_argument("--metrics", type=cli.existing_file, default=None,
                   help="per-epoch metrics (.csv or .json) for curves.png; default: the checkpoint's history")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None,
                   help="directory of the Fashion-MNIST files (default: search; random images when none is found)")
    p.add_argument("--image", type=cli.non_negative_int, default=0,
                   help="index of the test image for feature_maps.png (default 0)")
    p.add_argument("--max-misclassified", type=cli.int_in_range(1, MAX_MISCLASSIFIED), default=25,
                   help=f"images in misclassified.png, 1 to {MAX_MISCLASSIFIED} (default 25)")
    return p


def run(args) -> list[Path]:
    _pyplot()                                                    # fail early without matplotlib
    net, where = load_network(args.checkpoint)
    history = read_metrics(args.metrics) if args.metrics else None
    test, why = load_test_set(args.data_dir)
    if test is not None:
        (images, labels), source = test, "Fashion-MNIST test set"
    else:
        rng = np.random.default_rng(0)
        images = rng.random((200, 1, 28, 28), dtype=np.float32)
        labels = rng.integers(0, 10, len(images))
        source = "RANDOM images and labels, no data found"
        print(f"note: {why}; drawing random images instead", file=sys.stderr)
    if not 0 <= args.image < len(images):
        raise ToolError(f"--image must lie in 0..{len(images) - 1} ({source}), got {args.image}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"--out {out}: cannot create the directory ({exc.strerror})") from None

    written = [plot_filters(net, out / "filters.png"),
               plot_feature_maps(net, images[args.image], int(labels[args.image]), out / "feature_maps.png",
                                 f"{source}, image #{args.image}")]
    preds = predict(net, images)
    written.append(plot_misclassified(images, labels, preds, out / "misclassified.png", source,
                                      args.max_misclassified))
    if history is None:                                          # the history train.py stores in the meta
        history, hist_source = read_checkpoint(args.checkpoint)[1].get("history"), f"history in {args.checkpoint}"
        try:
            history = [{k: float(h[k]) for k in METRIC_KEYS} for h in history or []]
        except (KeyError, TypeError, ValueError):                # a foreign history: no curves
            history = None
    else:
        hist_source = str(args.metrics)
    if history:
        written.append(plot_curves(history, out / "curves.png", hist_source))
    else:
        print("note: no metrics (--metrics) and no history in the checkpoint: curves.png skipped", file=sys.stderr)
    print(f"LeNet(activation={net.activation!r}, pool={net.pool!r}), weights: {where}")
    return written


def _run(args) -> int:
    try:
        written = run(args)
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    return cli.guard(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
