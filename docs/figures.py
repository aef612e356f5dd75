"""Draw every figure of the book from the code: ``python docs/figures.py [OUTDIR]``.

Each figure runs lenet_np's own functions (im2col, col2im, the plain Conv2d's backward, the
pooling layers, a LeNet forward and backward, Sigmoid, ReLU, CrossEntropyLoss, gradcheck) on
a small example and draws what they return, so a figure cannot drift from the code: if
the code changed, the picture changes with it (or this script stops on an assert).
``make figures`` writes them to docs/figures/, where the pages reference them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:                      # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

import lenet_np as ln  # noqa: E402
from lenet_np import nn  # noqa: E402
from lenet_np.gradcheck import gradcheck  # noqa: E402
from lenet_np.nn.fast import pooling as fast_pooling  # noqa: E402
from lenet_np.nn.im2col import col2im, im2col  # noqa: E402

DPI = 100
COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
PALE = ["#c9d6ea", "#f6d5bd", "#c7e3cd", "#ebc4c5", "#d8d2e8", "#e2d6cc"]
GREY = "#888888"

# the worked example of convolution.md: a 4x4 image and a 3x3 vertical-edge kernel
X4 = np.array([[1, 2, 0, 1],
               [0, 1, 3, 2],
               [2, 0, 1, 0],
               [1, 3, 2, 1]], dtype=np.float64).reshape(1, 1, 4, 4)
W3 = np.array([[1, 0, -1],
               [1, 0, -1],
               [1, 0, -1]], dtype=np.float64).reshape(1, 1, 3, 3)
G2 = np.array([[1, 2],
               [3, 4]], dtype=np.float64).reshape(1, 1, 2, 2)
# the pooling example of pooling.md: the bottom-right window holds a tie (7 and 7)
XPOOL = np.array([[1, 3, 2, 0],
                  [4, 2, 1, 5],
                  [0, 1, 7, 7],
                  [6, 2, 3, 4]], dtype=np.float64).reshape(1, 1, 4, 4)


def fmt(v) -> str:
    v = float(v)
    if v == int(v):
        return str(int(v))
    return f"{v:g}"


def grid(ax, values, x0=0.0, y0=0.0, fill=None, title=None, size=1.0, fontsize=11, bold=None):
    """Draw a matrix as labelled cells, top-left corner at (x0, y0) (y grows downward)."""
    values = np.asarray(values)
    rows, cols = values.shape
    for r in range(rows):
        for c in range(cols):
            face = "white" if fill is None or fill[r][c] is None else fill[r][c]
            ax.add_patch(Rectangle((x0 + c * size, y0 + r * size), size, size, facecolor=face,
                                   edgecolor="#444444", linewidth=0.8))
            weight = "bold" if bold is not None and bold[r][c] else "normal"
            ax.text(x0 + (c + 0.5) * size, y0 + (r + 0.5) * size, fmt(values[r, c]), ha="center",
                    va="center", fontsize=fontsize, fontweight=weight)
    if title:
        ax.text(x0 + cols * size / 2, y0 - 0.35 * size, title, ha="center", va="bottom", fontsize=fontsize)


def canvas(width, height, xlim, ylim):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(ylim[1], ylim[0])                  # y grows downward, like matrix rows
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def arrow(ax, start, end, text=None, color="#333333", style="-|>", offset=(0, -0.25), fontsize=10, **kw):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=14, color=color, linewidth=1.3,
                                 **kw))
    if text:
        ax.text((start[0] + end[0]) / 2 + offset[0], (start[1] + end[1]) / 2 + offset[1], text, ha="center",
                va="bottom", fontsize=fontsize, color=color)


# -- convolution ---------------------------------------------------------------------------

def fig_im2col():
    """The 4x4 example: each 3x3 window of x becomes one column of Cm (im2col's output)."""
    cols = im2col(X4, 3, 3)                          # (1, 1, 3, 3, 2, 2)
    cm = cols.reshape(9, 4)
    windows = [(0, 0), (0, 1), (1, 0), (1, 1)]
    fig, ax = canvas(10, 5.2, (-0.3, 17.6), (-1.6, 9.3))
    for k, (r, c) in enumerate(windows):            # the image four times, one window shaded each
        x0, y0 = (k % 2) * 5, (k // 2) * 5
        fill = [[PALE[k] if r <= i < r + 3 and c <= j < c + 3 else None for j in range(4)] for i in range(4)]
        grid(ax, X4[0, 0], x0, y0, fill=fill, title=f"window ({r},{c})")
        ax.add_patch(Rectangle((x0 + c, y0 + r), 3, 3, fill=False, edgecolor=COLORS[k], linewidth=2.5))
    arrow(ax, (9.3, 4.5), (11.2, 4.5), "im2col")
    fill = [[PALE[k] for k in range(4)] for _ in range(9)]
    grid(ax, cm, 12.5, 0, fill=fill, title="Cm (9, 4): one column per window")
    for i in range(9):
        ax.text(12.3, i + 0.5, f"({i // 3},{i % 3})", ha="right", va="center", fontsize=9, color=GREY)
    ax.text(11.3, 9.05, "offset (i, j)", ha="center", va="top", fontsize=9, color=GREY)
    for k in range(4):
        ax.add_patch(Rectangle((12.5 + k, 0), 1, 9, fill=False, edgecolor=COLORS[k], linewidth=2.5))
    fig.suptitle("im2col: every 3x3 window of x, read row by row, becomes one column", fontsize=12)
    return fig


def fig_col2im():
    """col2im adds each column back onto its window: four contributions, summed where they overlap."""
    wm, gm = W3.reshape(1, 9), np.ones((1, 4))
    dcm = wm.T @ gm                                  # (9, 4): every column is the kernel
    parts = []
    for k in range(4):                               # col2im of one column at a time (the others zero)
        one = np.zeros_like(dcm)
        one[:, k] = dcm[:, k]
        parts.append(col2im(one.reshape(1, 1, 3, 3, 2, 2), X4.shape)[0, 0])
    total = col2im(dcm.reshape(1, 1, 3, 3, 2, 2), X4.shape)[0, 0]
    assert np.array_equal(sum(parts), total)
    conv = nn.Conv2d(1, 1, 3, bias=False, impl="reference").double()     # the plain Conv2d, nn/conv.py
    conv.weight.data[...] = W3
    conv(X4)
    assert np.array_equal(conv.backward(np.ones((1, 1, 2, 2)))[0, 0], total)
    counts = col2im(im2col(np.ones((1, 1, 4, 4)), 3, 3), (1, 1, 4, 4))[0, 0]

    fig, ax = canvas(12.5, 4.0, (-0.4, 35.0), (-2.2, 6.6))
    windows = [(0, 0), (0, 1), (1, 0), (1, 1)]
    for k, (r, c) in enumerate(windows):
        x0 = k * 5.4
        fill = [[PALE[k] if r <= i < r + 3 and c <= j < c + 3 else None for j in range(4)] for i in range(4)]
        grid(ax, parts[k], x0, 0, fill=fill, title=f"window ({r},{c})", fontsize=10)
        ax.text(x0 + 4.7, 2, "+" if k < 3 else "=", ha="center", va="center", fontsize=16)
    grid(ax, total, 4 * 5.4, 0, title="dL/dx", fontsize=10)
    grid(ax, counts, 29.5, 0, fill=[[PALE[4]] * 4] * 4, title="col2im(im2col(ones))", fontsize=10)
    ax.text(12.6, 4.6, "G = ones, so every column of dL/dCm = Wm.T @ G is the kernel.\ncol2im adds each "
            "column back onto the pixels its window read;\nwhere windows overlap, the contributions sum.",
            ha="center", va="top", fontsize=10)
    ax.text(31.5, 4.6, "how many windows cover\neach pixel: col2im is the\nadjoint, not the inverse",
            ha="center", va="top", fontsize=10)
    fig.suptitle("col2im: dL/dx from the column gradient of the 4x4 example", fontsize=12)
    return fig


def fig_conv_backward():
    """dL/dx = full convolution of G with the kernel rotated 180 degrees; dL/dW = x correlated with G."""
    conv = nn.Conv2d(1, 1, 3, bias=False, impl="reference").double()     # the plain Conv2d, nn/conv.py
    conv.weight.data[...] = W3
    conv(X4)
    dx = conv.backward(G2)[0, 0]
    dw = conv.weight.grad[0, 0]
    g_pad = np.pad(G2[0, 0], 2)                      # full: KH-1 = 2 zeros on each side
    w_rot = W3[0, 0, ::-1, ::-1]
    by_hand = np.array([[np.sum(g_pad[r:r + 3, c:c + 3] * w_rot) for c in range(4)] for r in range(4)])
    assert np.array_equal(by_hand, dx)
    dw_by_hand = np.array([[np.sum(X4[0, 0, i:i + 2, j:j + 2] * G2[0, 0]) for j in range(3)] for i in range(3)])
    assert np.array_equal(dw_by_hand, dw)

    fig, ax = canvas(12, 7.0, (-0.5, 23.5), (-2.4, 12.6))
    pad_fill = [[PALE[0] if 2 <= i < 4 and 2 <= j < 4 else "#f2f2f2" for j in range(6)] for i in range(6)]
    grid(ax, g_pad, 0, 0, fill=pad_fill, title="G padded by KH-1 = 2 (full)")
    ax.add_patch(Rectangle((0, 0), 3, 3, fill=False, edgecolor=COLORS[3], linewidth=2.5))
    ax.text(7, 3, "slide,\nmultiply,\nsum", ha="center", va="center", fontsize=9)
    grid(ax, w_rot, 8, 1.5, fill=[[PALE[3]] * 3] * 3, title="W rotated 180 degrees")
    ax.text(12, 3, "=", ha="center", va="center", fontsize=20)
    fill = [[PALE[3] if (i, j) == (0, 0) else None for j in range(4)] for i in range(4)]
    grid(ax, dx, 13, 1, fill=fill, title="dL/dx (Conv2d.backward)")
    ax.text(17.6, 3, "the red 3x3 window,\nslid over the padded G,\ngives one pixel of dL/dx\n"
            "per step: a full\nconvolution of G with W",
            ha="left", va="center", fontsize=10)

    y1 = 8
    fill = [[PALE[2] if i < 2 and j < 2 else None for j in range(4)] for i in range(4)]
    grid(ax, X4[0, 0], 0, y1 - 0.5, fill=fill, title="x")
    ax.add_patch(Rectangle((0, y1 - 0.5), 2, 2, fill=False, edgecolor=COLORS[2], linewidth=2.5))
    ax.text(5, y1 + 1.5, "slide,\nmultiply,\nsum", ha="center", va="center", fontsize=9)
    grid(ax, G2[0, 0], 6, y1 + 0.5, fill=[[PALE[2]] * 2] * 2, title="G")
    ax.text(9, y1 + 1.5, "=", ha="center", va="center", fontsize=20)
    fill = [[PALE[2] if (i, j) == (0, 0) else None for j in range(3)] for i in range(3)]
    grid(ax, dw, 10, y1, fill=fill, title="dL/dW = weight.grad")
    ax.text(14, y1 + 1.5, "a correlation (no flip) of x with G: the\ngreen 2x2 window of x times G gives\n"
            "dL/dW[0, 0]; slide it for the others", ha="left", va="center", fontsize=10)
    fig.suptitle("Conv2d backward as two convolutions (the 4x4 example, G = [[1, 2], [3, 4]])", fontsize=12)
    return fig


# -- pooling ---------------------------------------------------------------------------------

def fig_pooling():
    """Max pooling routes each window's gradient to its first maximum; average pooling spreads it."""
    out = {}
    for impl in ("reference", "offsets"):
        pool = nn.MaxPool2d(2, 2, impl=impl)
        y = pool(XPOOL)
        out[impl] = (y, pool.backward(G2))
    assert all(np.array_equal(a, b) for a, b in zip(out["reference"], out["offsets"]))
    y_max, dx_max = out["reference"]
    avg = nn.AvgPool2d(2, 2)
    y_avg = avg(XPOOL)
    dx_avg = avg.backward(G2)

    x = XPOOL[0, 0]
    win = [[PALE[2 * (i // 2) + (j // 2)] for j in range(4)] for i in range(4)]
    winners = dx_max[0, 0] != 0
    ties = np.zeros((4, 4), bool)
    for r in range(2):
        for c in range(2):
            block = x[2 * r:2 * r + 2, 2 * c:2 * c + 2]
            ties[2 * r:2 * r + 2, 2 * c:2 * c + 2] = (block == block.max()) & ((block == block.max()).sum() > 1)

    fig, ax = canvas(12, 6.2, (-0.4, 25.6), (-1.8, 11.0))
    grid(ax, x, 0, 0, fill=win, bold=winners, title="x (2x2 windows, stride 2)")
    for (i, j) in zip(*np.nonzero(winners)):
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor="black", linewidth=2.5))
    grid(ax, y_max[0, 0], 5.5, 1, fill=[[PALE[0], PALE[1]], [PALE[2], PALE[3]]], title="max pool y")
    grid(ax, G2[0, 0], 9, 1, fill=[[PALE[0], PALE[1]], [PALE[2], PALE[3]]], title="G = dL/dy")
    arrow(ax, (11.5, 2), (13.4, 2), "backward")
    grid(ax, dx_max[0, 0], 14, 0, fill=[[PALE[2 * (i // 2) + (j // 2)] if winners[i, j] else None
                                         for j in range(4)] for i in range(4)],
         title="MaxPool2d.backward(G)")
    ax.text(18.6, 2, "each window's G goes to\nits winner (framed);\nthe tie 7, 7 sends it to\nthe first "
            "in row-major\norder, as torch does", ha="left", va="center", fontsize=10)
    for (i, j) in zip(*np.nonzero(ties & ~winners)):
        ax.add_patch(Rectangle((j, i), 1, 1, fill=False, edgecolor=COLORS[3], linewidth=2, linestyle="--"))
        ax.text(j + 0.5, 4.15, "tie, gets 0", ha="center", va="top", fontsize=9, color=COLORS[3])

    y1 = 6
    grid(ax, x, 0, y1, fill=win, title="x")
    grid(ax, y_avg[0, 0], 5.5, y1 + 1, fill=[[PALE[0], PALE[1]], [PALE[2], PALE[3]]], title="avg pool y",
         fontsize=9)
    grid(ax, G2[0, 0], 9, y1 + 1, fill=[[PALE[0], PALE[1]], [PALE[2], PALE[3]]], title="G = dL/dy")
    arrow(ax, (11.5, y1 + 2), (13.4, y1 + 2), "backward")
    grid(ax, dx_avg[0, 0], 14, y1, fill=win, title="AvgPool2d.backward(G)", fontsize=9)
    ax.text(18.6, y1 + 2, "each window spreads G / 4\nevenly over its four pixels", ha="left", va="center",
            fontsize=10)
    return fig


# -- the network -----------------------------------------------------------------------------

def lenet_calls(net, batch, train=True):
    """Run one forward (and in training one backward) of net and record every layer call in order:
    (phase, name, type, input shape, output shape, input_grad, joint). A call of
    ``backward_through`` (nn/fast/pooling.py) that takes a max pooling's and an activation's
    backward in one step is recorded as two backward calls, the pooling's and the
    activation's, each with the other's name as ``joint`` (None for every other call)."""
    calls, wrapped = [], []
    names = {id(m): name for name, m in net.named_layers()}

    def wrap(module, name):
        fwd, bwd = module.forward, module.backward

        def forward(x, *a, **kw):
            y = fwd(x, *a, **kw)
            calls.append(("forward", name, type(module).__name__, x.shape, y.shape, True, None))
            return y

        def backward(*a, **kw):
            dx = bwd(*a, **kw)
            calls.append(("backward", name, type(module).__name__, np.shape(a[0]) if a else (),
                          None if dx is None else dx.shape, kw.get("input_grad", True), None))
            return dx
        module.forward, module.backward = forward, backward
        wrapped.append(module)

    def backward_through(pool, activation, g):
        dx = through(pool, activation, g)
        if dx is not None:
            pool_name, act_name = names[id(pool)], names[id(activation)]
            calls.append(("backward", pool_name, type(pool).__name__, g.shape, None, True, act_name))
            calls.append(("backward", act_name, type(activation).__name__, None, dx.shape, True, pool_name))
        return dx

    for name, m in net.named_layers():
        wrap(m, name)
    loss_fn = nn.CrossEntropyLoss()
    wrap(loss_fn, "loss")
    through = fast_pooling.backward_through          # chain_backward looks it up at each call
    fast_pooling.backward_through = backward_through
    try:
        net.train(train)
        x = np.zeros((batch, 1, 28, 28), dtype=np.float32)
        labels = np.arange(batch) % 10
        loss_fn(net(x), labels)
        if train:
            net.backward(loss_fn.backward(), input_grad=False)       # as train.py calls it
    finally:
        fast_pooling.backward_through = through
        for m in wrapped:                        # drop the instance attributes again
            del m.__dict__["forward"], m.__dict__["backward"]
        net.train()
    return calls


def fig_lenet_shapes():
    """The shapes of one batch of 256 through LeNet, from a real forward."""
    net = ln.LeNet(seed=0)
    net.pool_first = False                           # the book's order also in this forward-only run
    calls = [c for c in lenet_calls(net, 256, train=False) if c[1] != "loss"]
    rows = [("input", "image batch", calls[0][3])]
    for _, name, kind, _, shape_out, _, _ in calls:
        rows.append((name, kind, shape_out))
    assert rows[-1][2] == (256, 10) and ("flatten", "Flatten", (256, 256)) in rows

    fig, ax = plt.subplots(figsize=(9, 6.2))
    sizes = [int(np.prod(s[1:])) for _, _, s in rows]
    ypos = np.arange(len(rows))[::-1]
    colors = [COLORS[0] if len(s) == 4 else COLORS[1] for _, _, s in rows]
    ax.barh(ypos, sizes, color=colors, height=0.6)
    ax.set_xscale("log")
    ax.set_xlim(5, 2e5)
    ax.set_yticks(ypos)
    ax.set_yticklabels([f"{name}  {kind}" for name, kind, _ in rows], fontsize=10)
    for y, (_, _, shape), size in zip(ypos, rows, sizes):
        ax.text(size * 1.15, y, f"{tuple(shape)}   {size:,} values per image", va="center", fontsize=9.5)
    ax.set_xlabel("values per image (log scale)")
    ax.set_title("LeNet on a batch of 256: the shape after each step (blue: N, C, H, W; orange: N, features)",
                 fontsize=11)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def fig_call_chain():
    """The forward and backward calls of a training step, and the evaluation-mode forward, as recorded."""
    net = ln.LeNet(seed=0)
    train = lenet_calls(net, 2, train=True)
    evals = [c for c in lenet_calls(net, 2, train=False) if c[0] == "forward"]
    fwd = [c for c in train if c[0] == "forward"]
    bwd = [c for c in train if c[0] == "backward"]
    assert [c[1] for c in bwd] == [c[1] for c in reversed(fwd)]      # backward retraces the forward
    assert bwd[-1][1] == "conv.0" and bwd[-1][5] is False and bwd[-1][4] is None
    assert ("flatten", "Flatten") in [(c[1], c[2]) for c in fwd]

    f_nodes = [("x", "input")] + [(c[1], c[2]) for c in fwd]
    e_nodes = [("x", "input")] + [(c[1], c[2]) for c in evals]
    n = len(f_nodes)
    fig, ax = plt.subplots(figsize=(14, 5.3))
    ax.set_xlim(-0.7, n - 0.3)
    ax.set_ylim(-3.2, 1.0)
    ax.axis("off")
    col = {"Conv2d": PALE[0], "Sigmoid": PALE[2], "ReLU": PALE[2], "MaxPool2d": PALE[1], "AvgPool2d": PALE[1],
           "Linear": PALE[4], "CrossEntropyLoss": PALE[3], "Flatten": "#eeeeee", "input": "white"}

    def box(xc, yc, name, kind, edge="#444444"):
        ax.add_patch(Rectangle((xc - 0.36, yc - 0.3), 0.72, 0.6, facecolor=col.get(kind, "white"),
                               edgecolor=edge, linewidth=1))
        short = {"CrossEntropyLoss": "CE loss", "MaxPool2d": "MaxPool", "AvgPool2d": "AvgPool"}.get(kind, kind)
        ax.text(xc, yc + 0.08, name, ha="center", va="center", fontsize=9.5, fontweight="bold")
        ax.text(xc, yc - 0.14, short, ha="center", va="center", fontsize=8)

    out_shapes = {c[1]: c[4] for c in fwd}
    for i, (name, kind) in enumerate(f_nodes):
        box(i, 0, name, kind)
        if name in out_shapes and name != "loss":
            s = out_shapes[name]
            ax.text(i, -0.42, "x".join(str(d) for d in s[1:]), ha="center", va="top", fontsize=7.5, color=GREY)
        if i:
            ax.add_patch(FancyArrowPatch((i - 0.64, 0.1), (i - 0.36, 0.1), arrowstyle="-|>", mutation_scale=10,
                                         color=COLORS[0]))
            ax.add_patch(FancyArrowPatch((i - 0.36, -0.1), (i - 0.64, -0.1), arrowstyle="-|>",
                                         mutation_scale=10, color=COLORS[3],
                                         linestyle="--" if i == 1 else "-"))
    ax.text(-0.65, 0.62, "training step: forward (blue) left to right, net(x) then loss_fn; backward (red) right to "
            "left: loss_fn.backward(), then LeNet.backward: fc.4 ... fc.0, flatten, conv.5 ... conv.0",
            fontsize=10, va="center")
    ax.text(0.5, -0.85, "conv.0.backward(g, input_grad=False) in training: no dL/dx (dashed)", fontsize=9,
            color=COLORS[3], ha="left", va="center")
    order, i = [], 0
    while i < len(bwd):                           # a joint step shows as "conv.2+conv.1"
        if bwd[i][6] is not None:
            order.append(f"{bwd[i][1]}+{bwd[i + 1][1]}")
            i += 2
        else:
            order.append(bwd[i][1])
            i += 1
    joint = [o for o in order if "+" in o]
    assert joint == ["conv.5+conv.4", "conv.2+conv.1"]
    ax.text(-0.65, -1.2, "recorded backward calls:  " + " \u2190 ".join(reversed(order)), fontsize=8.5,
            va="center", color=COLORS[3])
    ax.text(-0.65, -1.48, "a+b: backward_through (nn/fast/pooling.py) takes the max pool's backward and the "
            "sigmoid's in one step (the sigmoid's derivative on the pooled outputs, then the routing)",
            fontsize=8.5, va="center", color=COLORS[3])

    y2 = -2.5
    for i, (name, kind) in enumerate(e_nodes):
        swapped = i < len(f_nodes) and f_nodes[i][0] != name
        box(i, y2, name, kind, edge=COLORS[3] if swapped else "#444444")
        if i:
            ax.add_patch(FancyArrowPatch((i - 0.64, y2), (i - 0.36, y2), arrowstyle="-|>", mutation_scale=10,
                                         color=COLORS[0]))
    ax.text(-0.65, y2 + 0.55, "evaluation mode (net.eval()), LeNet.layer_order(): each max pool runs before "
            "the sigmoid it follows in training (red frames); same output, a quarter of the sigmoids",
            fontsize=10, va="center")
    fig.tight_layout()
    return fig


# -- activations and the loss -----------------------------------------------------------------

def fig_sigmoid():
    xs = np.linspace(-8, 8, 801)
    act = nn.Sigmoid()
    y = act(xs)
    dy = act.backward(np.ones_like(xs))            # G = 1: the derivative y (1 - y)
    assert abs(dy.max() - 0.25) < 1e-12
    fig, ax = plt.subplots(figsize=(7, 3.6))
    ax.plot(xs, y, color=COLORS[0], label="sigmoid(x) = Sigmoid()(x)")
    ax.plot(xs, dy, color=COLORS[3], label="y (1 - y) = Sigmoid().backward(1)")
    ax.axhline(0.25, color=GREY, linestyle="--", linewidth=1)
    ax.text(-7.8, 0.27, "1/4: the largest slope, at x = 0", fontsize=9, color=GREY)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("x")
    ax.legend(loc="center left", fontsize=9, frameon=False)
    ax.set_xlim(-8, 8)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def fig_relu():
    xs = np.linspace(-2, 2, 401)
    act = nn.ReLU()
    y = act(xs)
    dy = act.backward(np.ones_like(xs))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(xs, y, color=COLORS[0], label="ReLU()(x) = max(x, 0)")
    ax.step(xs, dy, where="post", color=COLORS[3], label="ReLU().backward(1) = [x > 0]")
    ax.plot([0], [0], "o", color=COLORS[3], markersize=6)
    ax.annotate("0 at x = 0, like torch", (0, 0), (0.35, -0.45), fontsize=9, color=COLORS[3],
                arrowprops={"arrowstyle": "->", "color": COLORS[3]})
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_ylim(-0.6, 2.1)
    ax.set_xlabel("x")
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def fig_softmax_ce():
    """One example, ten classes: logits, the softmax p, and the gradient p - onehot from the loss itself."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((1, 10))
    label = int(np.argsort(z[0])[-2])                # the runner-up: a wrong but not hopeless guess
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(z, np.array([label]))
    grad = loss_fn.backward()[0]                     # N = 1: exactly p - onehot
    p = np.exp(z[0] - z[0].max())
    p /= p.sum()
    onehot = np.eye(10)[label]
    assert np.allclose(grad, p - onehot)
    k = np.arange(10)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), sharex=True)
    axes[0].bar(k, z[0], color=[COLORS[3] if i == label else COLORS[0] for i in k])
    axes[0].set_title("logits z")
    axes[1].bar(k - 0.2, p, width=0.4, color=COLORS[0], label="p = softmax(z)")
    axes[1].bar(k + 0.2, onehot, width=0.4, color=COLORS[3], label=f"onehot(y = {label})")
    axes[1].set_title("p and the one-hot label")
    axes[1].legend(fontsize=8, frameon=False, loc="upper right")
    axes[2].bar(k, grad, color=[COLORS[3] if g < 0 else COLORS[0] for g in grad])
    axes[2].set_title("CrossEntropyLoss().backward() = p - onehot")
    axes[2].annotate(f"p_y - 1 = {grad[label]:.2f}", (label, grad[label]), (label + 1.5, grad[label] + 0.1),
                     fontsize=9, arrowprops={"arrowstyle": "->"})
    for ax in axes:
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(k)
        ax.set_xlabel("class k")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


def fig_gradcheck_steps():
    """The error of a central difference against the step h, float64 and float32 (one sigmoid layer)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 4))
    steps = np.logspace(-9, -1, 17)
    errs = {np.float64: [], np.float32: []}
    layer = nn.Sigmoid()
    for dtype in errs:
        for h in steps:
            errs[dtype].append(max(gradcheck(layer, x.astype(dtype), eps=float(h), seed=0).values()))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.loglog(steps, errs[np.float64], "o-", color=COLORS[0], label="float64")
    ax.loglog(steps, errs[np.float32], "s-", color=COLORS[1], label="float32")
    ax.axhline(1e-6, color=GREY, linestyle="--", linewidth=1)
    ax.text(1.5e-7, 1.4e-6, "pass threshold 1e-6", fontsize=9, color=GREY)
    ax.set_xlabel("step h")
    ax.set_ylabel("rel_error of the input gradient")
    ax.set_title("gradcheck(Sigmoid(), x, eps=h): rounding on the left, truncation on the right", fontsize=10)
    ax.legend(fontsize=9, frameon=False)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.tight_layout()
    return fig


FIGURES = {
    "im2col": fig_im2col,
    "col2im": fig_col2im,
    "conv-backward": fig_conv_backward,
    "pooling": fig_pooling,
    "lenet-shapes": fig_lenet_shapes,
    "call-chain": fig_call_chain,
    "sigmoid": fig_sigmoid,
    "relu": fig_relu,
    "softmax-ce": fig_softmax_ce,
    "gradcheck-steps": fig_gradcheck_steps,
}


def draw(name: str, out: Path) -> Path:
    """Draw one figure of FIGURES into out/NAME.png."""
    plt.rcParams.update({"font.size": 10})
    fig = FIGURES[name]()
    path = out / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15, metadata={"Software": None})
    plt.close(fig)
    return path


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1:
        print("usage: python docs/figures.py [OUTDIR]   (default docs/figures)", file=sys.stderr)
        return 2
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "figures"
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:
        print(draw(name, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
