"""im2col and col2im: the one place where images become columns and back.

Notation (shapes used throughout this file)
    N          batch size
    C          input channels
    H, W       input height and width
    KH, KW     kernel height and width
    SH, SW     strides
    PH, PW     zero padding on each side
    OH, OW     output size: OH = (H + 2*PH - KH) // SH + 1, likewise OW

``im2col(x)`` sees every kernel window of x at once as a 6-D array

    cols[n, c, i, j, oh, ow] = x_pad[n, c, oh*SH + i, ow*SW + j]
    shape (N, C, KH, KW, OH, OW)

so a convolution is one contraction of ``cols`` with the weights over (C, KH, KW).

``col2im`` is the adjoint of im2col (not its inverse): every column entry is
added back to the pixel it came from, so a pixel covered by several windows
receives the sum. For any x and c:  <im2col(x), c> == <x, col2im(c)>.
``col2im_gather`` computes the same sums the other way round, each pixel gathering the
entries read from it: three kernels on a GPU, where col2im's loop is KH*KW of them.
"""

from __future__ import annotations

import functools

from .. import backend


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((n - k + 2p + s) / s), the book's formula with p per side."""
    return (size + 2 * padding - kernel) // stride + 1


def pad2d(x, ph: int, pw: int, value=0.0):
    """Pad the last two axes of x by (ph, pw) on each side with a constant."""
    if ph == 0 and pw == 0:
        return x
    xp = backend.get_array_module(x)
    widths = [(0, 0)] * (x.ndim - 2) + [(ph, ph), (pw, pw)]
    return xp.pad(x, widths, mode="constant", constant_values=value)


def windows(x_pad, kh: int, kw: int, sh: int, sw: int):
    """Strided view of every window of an already padded (..., H, W) array.

    Returns shape (..., KH, KW, OH, OW) without copying:
        view[..., i, j, oh, ow] = x_pad[..., oh*SH + i, ow*SW + j]
    """
    *lead, h, w = x_pad.shape
    oh = (h - kh) // sh + 1
    ow = (w - kw) // sw + 1
    *lead_strides, s_h, s_w = x_pad.strides
    shape = (*lead, kh, kw, oh, ow)
    strides = (*lead_strides, s_h, s_w, s_h * sh, s_w * sw)
    return backend.sliding_windows(x_pad, shape, strides)


def im2col(x, kh: int, kw: int, sh: int = 1, sw: int = 1, ph: int = 0, pw: int = 0):
    """(N, C, H, W) -> (N, C, KH, KW, OH, OW) view of the zero-padded input."""
    return windows(pad2d(x, ph, pw), kh, kw, sh, sw)


def col2im(cols, x_shape, sh: int = 1, sw: int = 1, ph: int = 0, pw: int = 0):
    """(..., KH, KW, OH, OW) -> (..., H, W): the adjoint of im2col.

    For each kernel offset (i, j) the column slab cols[..., i, j, :, :] is added
    onto the pixels it was read from, a strided slice of the padded image. The
    KH*KW slice additions are deterministic and need no scatter-add.
    """
    xp = backend.get_array_module(cols)
    *lead, kh, kw, oh, ow = cols.shape
    h, w = x_shape[-2], x_shape[-1]
    out = xp.zeros((*lead, h + 2 * ph, w + 2 * pw), dtype=cols.dtype)
    for i in range(kh):
        for j in range(kw):
            out[..., i:i + sh * oh:sh, j:j + sw * ow:sw] += cols[..., i, j, :, :]
    return out[..., ph:ph + h, pw:pw + w]


def col2im_gather(cols, x_shape, sh: int = 1, sw: int = 1, ph: int = 0, pw: int = 0):
    """col2im as a gather (the GPU's form): each pixel sums the KH*KW column entries that
    were read from it, in three kernels instead of KH*KW strided additions.

    Pixel (r, s) of the padded image was read by offset (i, j) of output (oh, ow) where
    r = oh*SH + i and s = ow*SW + j. Spread the columns of each offset out so that entry
    (oh, ow) sits at (oh*SH + KH-1, ow*SW + KW-1) of a zero plane E[..., i, j, :, :]; then

        x[..., h, w] = sum_{i,j} E[..., i, j, PH + h + KH-1 - i, PW + w + KW-1 - j]

    (a position that no window reads holds a zero), and the right-hand side, for all
    (h, w, i, j) at once, is ONE strided view of E: moving h (w) moves one row (column)
    of E, moving i (j) moves one plane on and one row (column) back. So col2im is: a zero
    E, one strided copy of the columns into it, one sum over (i, j) of the view. No
    scatter, no atomics; each output is summed in the same order every time.
    """
    xp = backend.get_array_module(cols)
    *lead, kh, kw, oh, ow = cols.shape
    h, w = x_shape[-2], x_shape[-1]
    rh, rw = kh - 1, kw - 1                                  # where output (0, 0) sits in E
    lh = max(ph + h + rh, (oh - 1) * sh + kh)                # rows the view reads, or written
    lw = max(pw + w + rw, (ow - 1) * sw + kw)
    e = xp.zeros((*lead, kh, kw, lh, lw), dtype=cols.dtype)
    e[..., rh:rh + (oh - 1) * sh + 1:sh, rw:rw + (ow - 1) * sw + 1:sw] = cols
    *lead_strides, s_i, s_j, s_r, s_c = e.strides
    start = e[..., 0, 0, ph + rh:, pw + rw:]                  # E[..., 0, 0, PH + KH-1, PW + KW-1]
    view = backend.sliding_windows(start, (*lead, h, w, kh, kw),
                                   (*lead_strides, s_r, s_c, s_i - s_r, s_j - s_c))
    return view.sum(axis=(-2, -1))


# -- the "wide" form for stride 1 (the fast convolution path) ------------------------------
#
# Flatten each padded image to one row of HP*WP pixels. For stride 1, output pixel
# (oh, ow) reads pixel (oh + i, ow + j) = flat index (oh*WP + ow) + (i*WP + j). Let the
# output run over all WP columns instead of OW ("wide" output, WP - OW junk columns per
# row): then kernel offset (i, j) reads ONE contiguous range of the flat image,
#
#     cols_wide[c, i, j, n, :] = flat[c, n, i*WP + j : i*WP + j + OH*WP]
#
# so im2col is KH*KW long contiguous copies instead of KH*KW*OH short rows of OW, and
# col2im is KH*KW long contiguous additions. The junk columns cost (WP/OW - 1) more
# arithmetic in the matrix products; the forward drops them with a view, and the
# backward gives them a zero gradient so they add nothing anywhere.

def im2col_wide(x_cnhw, kh: int, kw: int, ph: int = 0, pw: int = 0):
    """(C, N, H, W) -> cols (C*KH*KW, N*OH*WP), stride 1, and (OH, OW, WP)."""
    xp = backend.get_array_module(x_cnhw)
    c, n, h, w = x_cnhw.shape
    hp, wp = h + 2 * ph, w + 2 * pw
    oh, ow = hp - kh + 1, wp - kw + 1
    length = oh * wp
    flat = xp.empty((c, n, hp * wp + kw - 1), dtype=x_cnhw.dtype)   # kw - 1 spare: the last
    flat[:, :, hp * wp:] = 0                                         # window's junk reads them
    flat[:, :, :hp * wp].reshape(c, n, hp, wp)[...] = pad2d(x_cnhw, ph, pw)
    cols = xp.empty((c, kh, kw, n, length), dtype=x_cnhw.dtype)
    for i in range(kh):
        for j in range(kw):
            start = i * wp + j
            cols[:, i, j] = flat[:, :, start:start + length]
    return cols.reshape(c * kh * kw, n * length), (oh, ow, wp)


def conv_transpose_wide(weight, g, x_shape_cnhw, ph: int = 0, pw: int = 0):
    """The adjoint of im2col_wide applied to Wm.T @ g, without the (C*KH*KW, N*OH*WP) columns
    in between (benchmarks/ablation.py keeps the two-step form, col2im of those columns).

    weight (O, C, KH, KW), g (O, N*OH*WP) -> (C, N, H, W). One kernel row i at a time:
    W[:, :, i, :] as a (KW*C, O) matrix times g gives the column slabs of that row's KW
    offsets, (KW, C, N*OH*WP), which are added onto the flat images while they are still
    in the cache. Same products and sums as the two-step form, a KH-th of its memory.
    """
    xp = backend.get_array_module(g)
    o, c, kh, kw = weight.shape
    _, n, h, w = x_shape_cnhw
    hp, wp = h + 2 * ph, w + 2 * pw
    length = (hp - kh + 1) * wp
    flat = xp.zeros((c, n, hp * wp + kw - 1), dtype=g.dtype)
    rows = xp.ascontiguousarray(weight.transpose(2, 3, 1, 0))          # (KH, KW, C, O)
    slab = xp.empty((kw * c, n * length), dtype=g.dtype)
    slabs = slab.reshape(kw, c, n, length)
    for i in range(kh):
        xp.matmul(rows[i].reshape(kw * c, o), g, out=slab)             # offsets (i, 0..KW-1)
        for j in range(kw):
            start = i * wp + j
            flat[:, :, start:start + length] += slabs[j]
    return flat[:, :, :hp * wp].reshape(c, n, hp, wp)[:, :, ph:ph + h, pw:pw + w]


# -- the "band" form for narrow images (LeNet's convolutions) -------------------------------
#
# With stride 1, output row r of every output channel reads input rows r .. r+KH-1 of every
# input channel, and those KH rows lie next to each other in memory: one contiguous run of
# KH*WP pixels per channel. So the whole convolution is ONE well-shaped matrix product
#
#     Y[(n, r), (o, ow)] = sum_{i, c, w} band[(n, r), (i, c, w)] * T[(i, c, w), (o, ow)]
#     band (N*OH, KH*C*WP): for each output row, image row r+i of every channel, i = 0..KH-1
#     T (KH*C*WP, O*OW): the weights, banded
#     T[i*C*WP + c*WP + ow + j, o*OW + ow] = W[o, c, i, j], zero elsewhere
#
# The columns run (i, c, w), kernel row outermost, so that the backward adds dL/dband back
# to the images one kernel row at a time in runs of C*WP values.
#
# It does WP/KW times the multiply-adds of im2col, but copies KW*OW/WP times fewer values
# (KH*C*WP per output row against im2col's KH*C*KW per output pixel) and
# gives BLAS a product with two large dimensions instead of O x C*KH*KW x (N*OH*WP), whose
# O (6 or 16 in LeNet) is too small for BLAS to get near its peak.
#
# With width padding, nn/fast/conv.py's band form keeps only the W real columns of each row
# (``band_layout``: these places shifted by PW, those that would read padding dropped).

@functools.lru_cache(maxsize=32)
def band_index(xp, c: int, kh: int, kw: int, wp: int, ow: int, o: int):
    """(rows, cols) of T where W[o, c, i, j] goes for each ow, each of shape (O, C, KH, KW, OW).

    They depend only on the shapes, so they are built once per shape and device (cached);
    callers only read them."""
    oo, cc, ii, jj, ww = xp.indices((o, c, kh, kw, ow))
    return ii * (c * wp) + cc * wp + ww + jj, oo * ow + ww


def reusable(a, xp, shape, dtype) -> bool:
    """a (or None) can be written over as a new C-contiguous array of this shape and dtype
    on xp's device."""
    return (a is not None and backend.get_array_module(a) is xp and a.shape == shape and a.dtype == dtype
            and a.flags.c_contiguous)


def image_bands(x_pad, kh: int, out=None):
    """(N, C, HP, WP) padded images -> band (N*OH, KH*C*WP): for each output row r, image
    rows r .. r+KH-1 of every channel, row i of all channels before row i+1 (one strided copy).
    Written into ``out`` when it is a band this function made before (C-contiguous, of that
    shape and dtype, on the same device), else into a new array: never a view of x_pad."""
    xp = backend.get_array_module(x_pad)
    n, c, hp, wp = x_pad.shape
    oh = hp - kh + 1
    s_n, s_c, s_h, s_w = x_pad.strides
    view = backend.sliding_windows(x_pad, (n, oh, kh, c, wp), (s_n, s_h, s_h, s_c, s_w))
    if not reusable(out, xp, (n * oh, kh * c * wp), x_pad.dtype):
        out = xp.empty((n * oh, kh * c * wp), dtype=x_pad.dtype)
    out.reshape(n, oh, kh, c, wp)[...] = view
    return out
