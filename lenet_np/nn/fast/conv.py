"""Conv2d's fast forms (see __init__.py for the interface): the same result as the plain
im2col product of nn/conv.py, each tested against it.

* ``"strided"``: the columns are copied once in (C, KH, KW, N, OH, OW) order straight from
  the input read as (C, N, H, W) (free when it lives in that memory order, as the CPU forms
  leave it), so the product lands in (O, N, OH, OW) memory order; the result is an
  (N, O, OH, OW) *view* of it: no transpose copy. Its backward: one product ``Wm.T @ G``
  and col2im (on a GPU ``col2im_gather``: three kernels instead of KH*KW strided additions).
* ``"wide"`` (stride 1): the same product on the "wide" columns of im2col.py: KH*KW long
  contiguous copies instead of KH*KW*OH short rows; the input gradient goes one kernel row
  at a time (``conv_transpose_wide``).
* ``"band"`` (stride 1): one product of the images' row bands with a banded weight matrix
  (im2col.py), whose output is an (N, O, OH, OW) view of (N, OH, O, OW) memory. LeNet's
  convolutions on the CPU. Meant for narrow images: the banded matrix has KH*C*W x O*OW
  entries. The last forward's band and banded weights are reused by the next forward of
  the same shape (``_spares``). With padding, the band holds the images' W real columns
  only, not the WP = W + 2*PW of the padded image (``band_layout``): the padding columns
  would only multiply zeros (d2l's conv.0, 28 wide padded to 32: 1/8 of its products);
  the height padding stays (zero rows of the band, where a kernel row falls off the image).

``choose`` is "auto": on the CPU, ``band`` where it pays (``use_band``), else ``wide`` for
stride 1, else ``strided``; on a GPU, where every small call is a kernel launch,
``strided``: one copy and one product.
"""

from __future__ import annotations

import functools
import weakref
from typing import NamedTuple

from ... import backend
from ..im2col import (
    band_index,
    col2im,
    col2im_gather,
    conv_output_size,
    conv_transpose_wide,
    im2col_wide,
    image_bands,
    pad2d,
    reusable,
    windows,
)
from . import Form


class ColumnsSaved(NamedTuple):
    x_shape: tuple
    cols: object          # (C*KH*KW, N*OH*WP) columns; WP == OW unless wide
    wp: int
    wide: bool


class BandSaved(NamedTuple):
    x_shape: tuple
    band: object          # (N*OH, KH*C*W) row bands of the images (height padding included)
    t: object             # (KH*C*W, O*OW) banded weights


# layer -> (band, T) of its last band forward, for the next one to write over
_spares: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def choose(layer, x) -> str:
    """"auto"'s form for input x: "band", "wide" or "strided"."""
    if backend.on_gpu(backend.get_array_module(x)):
        return "strided"
    if use_band(layer, x.shape):
        return "band"
    return "wide" if layer.stride == (1, 1) else "strided"


def use_band(layer, x_shape) -> bool:
    """The band form (im2col.py) for stride 1 where its WP/KW times the multiply-adds cost
    less than im2col's copies and its thin product (O rows). Measured at batch 128, one
    thread, forward and both gradients, band against wide: one input channel, 5x5: 1.27x
    at padded width 28 (LeNet's conv.0), 0.97x at 36; 3x3 at 28: 0.83x; 1x1: 0.68x.
    6 -> 16 channels, 5x5: 1.09x at width 12 (LeNet's conv.3), 1.27x at 14, 0.95x at 16 to
    24; 16 -> 32 channels, 5x5: 1.39x at 12, 0.98x at 16; 3x3 at 12: 0.64x; 64 -> 32, 5x5,
    at 12: 1.47x; 32 -> 64 channels, 3x3 at 8: 0.77x. Hence: one input channel and a
    padded width up to 32 and 7 kernel widths, or at most 32 output channels and a padded
    width up to 3 kernel widths; and never a banded weight matrix over 4M entries."""
    if layer.stride != (1, 1):
        return False
    (kh, kw), c, o = layer.kernel_size, layer.in_channels, layer.out_channels
    wp = x_shape[3] + 2 * layer.padding[1]
    if kh * c * wp * o * (wp - kw + 1) > 1 << 22:
        return False
    if c == 1:
        return wp <= min(32, 7 * kw)
    return o <= 32 and wp <= 3 * kw


# -- band: stride 1, one well-shaped product (im2col.py, "band" form) --
def band_forward(layer, x):
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    o = layer.out_channels
    oh, ow = h + 2 * ph - kh + 1, w + 2 * pw - kw + 1
    # The last forward's band and T are written over when the shapes match. Fresh arrays of
    # this size had the kernel fault their pages in again on every call in a process that
    # has not yet freed larger blocks (glibc then returns such blocks to the kernel): the
    # evaluation forward of a batch of 256 on two threads took 5.8-5.9 ms instead of
    # 4.7-4.9, the training step 12.6-14.3 instead of 11.6-13.6 (alternating, fresh
    # processes). After a process has loaded the data set, the two are equal (4.66 and
    # 4.57-4.66 ms; 12.1-12.4 and 12.3). A forward takes the buffers with one pop,
    # which no other thread can interleave with: a second forward running at the same time
    # on this layer finds none and allocates its own.
    spare = _spares.pop(layer, None)
    band = image_bands(pad_rows(x, ph), kh, out=None if spare is None else spare[0])   # (N*OH, KH*C*W)
    t_at, w_at, _, _ = band_layout(xp, c, kh, kw, w, pw, ow, o)   # cached per shape
    shape = (kh * c * w, o * ow)
    if spare is not None and reusable(spare[1], xp, shape, x.dtype):
        t = spare[1]                    # same shape, so zero in the same places: rewrite W only
    else:
        t = xp.zeros(shape, dtype=x.dtype)                       # the banded weights
    t.reshape(-1)[t_at] = layer.weight.data.reshape(-1)[w_at]
    y = band @ t                                                  # (N*OH, O*OW)
    if layer.bias is not None:
        y += xp.repeat(layer.bias.data, ow)
    _spares[layer] = (band, t)                                    # for the next forward
    return y.reshape(n, oh, o, ow).transpose(0, 2, 1, 3), BandSaved(x.shape, band, t)


def pad_rows(x, ph):
    """(N, C, H, W) -> (N, C, H + 2*PH, W), zero rows above and below (x itself for PH = 0)."""
    if ph == 0:
        return x
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    out = xp.empty((n, c, h + 2 * ph, w), dtype=x.dtype)
    out[:, :, :ph] = 0
    out[:, :, ph + h:] = 0
    out[:, :, ph:ph + h] = x
    return out


@functools.lru_cache(maxsize=32)
def band_layout(xp, c: int, kh: int, kw: int, w: int, pw: int, ow: int, o: int):
    """Where the weights sit in T (KH*C*W, O*OW) for a band of the images' W real columns:
    T[i*C*W + ch*W + col, o*OW + c] = W[o, ch, i, j] with col = c + j - PW, for col inside the
    image (outside it, the weight would read width padding: it has no row of T).

    Returns (t_at, w_at, t_all, complete): flat indices into T and into W of every weight
    that has a place (T.flat[t_at] = W.flat[w_at]); t_all (O, C, KH, KW, OW), the flat
    index into T of each weight and output column, T.size where it has none (dL/dW reads
    a 0 there); complete, every one has a place (no width padding). Built once per shape
    and device (cached): callers only read them."""
    rows, cols = band_index(xp, c, kh, kw, w, ow, o)    # the places in a band W wide, from column 0
    rows = rows - pw                                     # ... which starts PW columns into the padding
    _, _, _, jj, ww = xp.indices((o, c, kh, kw, ow))
    col = ww + jj - pw                                   # the image column each weight reads
    real = (col >= 0) & (col < w)
    t_all = xp.where(real, rows * (o * ow) + cols, kh * c * w * o * ow)
    w_all = xp.broadcast_to(xp.arange(o * c * kh * kw).reshape(o, c, kh, kw, 1), real.shape)
    return t_all[real], w_all[real], t_all, pw == 0


def band_backward(layer, saved, grad_out, input_grad):
    xp = backend.get_array_module(grad_out)
    x_shape, band, t = saved
    n, c, h, w = x_shape
    (kh, kw), (ph, pw) = layer.kernel_size, layer.padding
    _, o, oh, ow = grad_out.shape
    g = xp.ascontiguousarray(grad_out.transpose(0, 2, 1, 3)).reshape(n * oh, o * ow)
    dt = band.T @ g                                               # dL/dT (KH*C*W, O*OW)
    _, _, t_all, complete = band_layout(xp, c, kh, kw, w, pw, ow, o)
    flat = dt.reshape(-1) if complete else xp.concatenate([dt.reshape(-1), xp.zeros(1, dtype=dt.dtype)])
    layer.weight.accumulate(flat[t_all].sum(axis=-1))             # W's entries of T, summed
    if layer.bias is not None:
        layer.bias.accumulate(g.sum(axis=0).reshape(o, ow).sum(axis=1))
    if not input_grad:
        return None
    dband = (g @ t.T).reshape(n, oh, kh, c, w)                    # dL/dband
    dx = xp.zeros((n, h + 2 * ph, c, w), dtype=grad_out.dtype)    # (N, HP, C, W) memory
    for i in range(kh):                                           # kernel row i of each band
        dx[:, i:i + oh] += dband[:, :, i]                         # back to the row it read
    return dx[:, ph:ph + h].transpose(0, 2, 1, 3)                 # view (N, C, H, W)


# -- strided and wide: one matrix product in (O, N, OH, OW) memory order --
def _columns_forward(layer, x, wide):
    xp = backend.get_array_module(x)
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    x_cnhw = x.transpose(1, 0, 2, 3)        # free when x already lives in that memory order
    if wide:
        cols, (oh, ow, wp) = im2col_wide(x_cnhw, kh, kw, ph, pw)   # (C*KH*KW, N*OH*WP)
    else:
        oh = conv_output_size(h, kh, sh, ph)
        ow = wp = conv_output_size(w, kw, sw, pw)
        win = windows(pad2d(x_cnhw, ph, pw), kh, kw, sh, sw)       # (C, N, KH, KW, OH, OW)
        cols = xp.empty((c, kh, kw, n, oh, ow), dtype=x.dtype)
        cols[...] = win.transpose(0, 2, 3, 1, 4, 5)
        cols = cols.reshape(c * kh * kw, n * oh * ow)
    wm = layer.weight.data.reshape(layer.out_channels, -1)
    y = wm @ cols                                                   # (O, N*OH*WP)
    if layer.bias is not None:
        y += layer.bias.data[:, None]
    y = y.reshape(layer.out_channels, n, oh, wp)[..., :ow]          # drop the junk columns
    return y.transpose(1, 0, 2, 3), ColumnsSaved(x.shape, cols, wp, wide)   # view (N, O, OH, OW)


def columns_backward(layer, saved, grad_out, input_grad):
    xp = backend.get_array_module(grad_out)
    x_shape, cols, wp, wide = saved
    n, c, h, w = x_shape
    (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
    g = grad_out.transpose(1, 0, 2, 3)                              # (O, N, OH, OW)
    o, _, oh, ow = g.shape
    if wp != ow:                           # wide layout: the junk columns get zero gradient
        g_wide = xp.empty((o, n, oh, wp), dtype=g.dtype)
        g_wide[..., ow:] = 0
        g_wide[..., :ow] = g
        g = g_wide
    g = g.reshape(o, -1)                                           # free if laid out (O, N, ...)
    layer.weight.accumulate((g @ cols.T).reshape(layer.weight.shape))
    if layer.bias is not None:
        layer.bias.accumulate(g.sum(axis=1))
    if not input_grad:
        return None
    if wide:                               # the two-step col2im(Wm.T @ g), one kernel row at a time
        dx = conv_transpose_wide(layer.weight.data, g, (c, n, h, w), ph, pw)
    else:
        dcols = layer.weight.data.reshape(o, -1).T @ g              # (C*KH*KW, N*OH*OW)
        dcols = dcols.reshape(c, kh, kw, n, oh, ow).transpose(0, 3, 1, 2, 4, 5)
        back = col2im_gather if backend.on_gpu(xp) else col2im    # 3 kernels, or KH*KW += on the CPU
        dx = back(dcols, (c, n, h, w), sh, sw, ph, pw)             # (C, N, H, W)
    return dx.transpose(1, 0, 2, 3)                                # view (N, C, H, W)


FORMS = {
    "strided": Form("strided", lambda layer, x: _columns_forward(layer, x, wide=False), columns_backward),
    "wide": Form("wide", lambda layer, x: _columns_forward(layer, x, wide=True), columns_backward),
    "band": Form("band", band_forward, band_backward),
}
