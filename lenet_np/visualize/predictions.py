"""saliency.png and mistakes.png: which pixels the loss of the true class is sensitive to, and
the mistakes the network is surest of."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..nn import Conv2d, MaxPool2d
from ..trace import CLASS_NAMES
from .arrays import input_gradients, most_confident_mistakes
from .plotting import colour_map, pyplot, save, wrap


def plot_mistakes(images, labels, probs, path: Path, source: str, max_images: int = 25) -> Path:
    """A grid of the most confident mistakes, each titled with its true class, its predicted
    class and the probability the network gave it (one image of all of them: fast to draw)."""
    plt = pyplot()
    preds = probs.argmax(axis=1)
    n_wrong = int((preds != labels).sum())
    shown = most_confident_mistakes(probs, labels, max_images)
    cols = max(1, int(np.ceil(np.sqrt(len(shown)))))
    rows = max(1, int(np.ceil(len(shown) / cols)))
    h, w = images.shape[2:]
    gap_x, gap_y = 4, 10                                         # pixels between images; room for the titles
    pitch_x, pitch_y = w + gap_x, h + gap_y
    canvas = np.full((rows * pitch_y, cols * pitch_x - gap_x), np.nan)
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        canvas[r * pitch_y + gap_y:(r + 1) * pitch_y, c * pitch_x:c * pitch_x + w] = images[i, 0]
    inch = 1.9 / pitch_x                                         # inches per image pixel
    width = max(canvas.shape[1] * inch + 0.4, 5.0)               # room for the title however few images
    acc = 1 - n_wrong / len(labels)
    note = (f"The {len(shown)} most confident of the {n_wrong} mistakes ({source}; accuracy {acc:.3f}), "
            "sorted by the probability of the predicted class" if n_wrong
            else f"no misclassified image among {len(labels)} ({source})")
    note = wrap(note, width)
    title_h = 0.25 * (note.count("\n") + 1) + 0.3
    grid_h = canvas.shape[0] * inch if len(shown) else 0.3
    fig = plt.figure(figsize=(width, grid_h + title_h + 0.1))
    ax = fig.add_axes([(width - canvas.shape[1] * inch) / 2 / width, 0.1 / (grid_h + title_h + 0.1),
                       canvas.shape[1] * inch / width, grid_h / (grid_h + title_h + 0.1)])
    ax.axis("off")
    if len(shown):
        ax.imshow(canvas, cmap=colour_map(plt, "gray"), vmin=0, vmax=1, interpolation="nearest", aspect="auto")
    for k, i in enumerate(shown):
        r, c = divmod(k, cols)
        ax.text(c * pitch_x + (w - 1) / 2, r * pitch_y + gap_y - 1.2,
                f"#{i} true: {CLASS_NAMES[labels[i]]}\npred: {CLASS_NAMES[preds[i]]} p={probs[i, preds[i]]:.2f}",
                ha="center", va="bottom", fontsize=8)
    fig.suptitle(note, fontsize=11, y=1 - 0.12 / (grid_h + title_h + 0.1), va="top")
    return save(fig, path)


def pooling_grid_note(net) -> str:
    """Why saliency looks blocky, for a network whose first convolution is followed by max
    pooling (else ''): the pooling's routing leaves one gradient per window at the
    convolution's output, and dL/dimage is the sum of one filter copy per survivor."""
    layers = net.named_layers()
    conv = next(((n, m) for n, m in layers if isinstance(m, Conv2d)), None)
    pool = next(((n, m) for n, m in layers if isinstance(m, MaxPool2d)), None)
    if conv is None or pool is None:
        return ""
    (cname, c), (pname, p) = conv, pool
    (kh, kw), (ch, cw) = p.kernel_size, c.kernel_size
    return (f" The blocky {kh}-pixel grid is max pooling's: {pname} passes each {kh}x{kw} window's gradient to one "
            f"pixel (the window's maximum), so dL/d({cname}'s output) is 0 elsewhere and dL/dimage is a sum of "
            f"{ch}x{cw} filter copies, one per window, about {p.stride[0]} pixels apart (gradient_maps.png shows it "
            "layer by layer).")


def plot_saliency(net, images, labels, indices, path: Path, source: str) -> Path:
    """Per image (a column): the image, dL/dimage of its true class's loss (diverging colour
    map centred on 0, its colour bar), and the gradient over the image."""
    plt = pyplot()
    grads, probs = input_gradients(net, images[indices], labels[indices])
    n = len(indices)
    caption = wrap(f"Saliency ({source}): dL/d(pixel) of each image's cross-entropy for its TRUE class, by "
                   "net.backward. Red: brightening the pixel raises the loss; blue: lowers it. Each column on its "
                   f"own scale.{pooling_grid_note(net)}", 2.35 * n + 0.6)
    extra = 0.18 * max(0, caption.count("\n") - 1)               # inches for the caption's lines beyond two
    height = 8.3 + extra
    fig = plt.figure(figsize=(2.35 * n + 0.6, height))
    grid = fig.add_gridspec(4, n, height_ratios=[1, 1, 0.06, 1], hspace=0.42, wspace=0.25)
    for j, i in enumerate(indices):
        img, g = images[i, 0], grads[j, 0]
        pred, true = int(probs[j].argmax()), int(labels[i])
        vmax = float(np.abs(g).max()) or 1.0
        ax_img, ax_grad, ax_over = (fig.add_subplot(grid[r, j]) for r in (0, 1, 3))
        ax_img.imshow(img, cmap="gray", vmin=0, vmax=1)
        mark = "" if pred == true else "  WRONG"
        ax_img.set_title(f"#{i} true: {CLASS_NAMES[true]}\npred: {CLASS_NAMES[pred]} p={probs[j, pred]:.2f}{mark}",
                         fontsize=8, color="black" if pred == true else "tab:red", y=1.0)
        im = ax_grad.imshow(g, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
        ax_grad.set_title(f"dL/dx, |.|max {vmax:.1e}", fontsize=8, y=1.0)
        cbar = fig.colorbar(im, cax=fig.add_subplot(grid[2, j]), orientation="horizontal", ticks=[-vmax, 0, vmax])
        cbar.ax.set_xticklabels([f"{-vmax:.1e}", "0", f"{vmax:.1e}"])
        cbar.ax.tick_params(labelsize=7)
        ax_over.imshow(img, cmap="gray", vmin=0, vmax=1)
        rgba = plt.get_cmap("RdBu_r")((g / vmax + 1) / 2)
        rgba[..., 3] = np.clip(np.abs(g) / vmax * 1.5, 0, 1)    # opaque where the gradient is large
        ax_over.imshow(rgba)
        ax_over.set_title("overlay", fontsize=8, y=1.0)
        for a in (ax_img, ax_grad, ax_over):
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(caption, fontsize=10)
    fig.subplots_adjust(top=0.86 if not extra else 1 - (8.3 * 0.14 + extra) / height, bottom=0.02, left=0.02,
                        right=0.98)
    return save(fig, path)
