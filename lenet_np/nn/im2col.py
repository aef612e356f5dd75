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
"""

from __future__ import annotations

from .. import backend


def conv_output_size(size: int, kernel: int, stride: int, padding: int) -> int:
    """floor((n - k + 2p + s) / s), the seed's formula with p per side."""
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
