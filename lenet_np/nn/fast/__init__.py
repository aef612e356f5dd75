"""The fast forms of the layers: the same results as the plain versions in nn/, faster.

A student reads nn/conv.py, nn/pooling.py and nn/batchnorm.py: the book's version of each
layer, on one screen. What makes LeNet fast lives here, behind one small interface per layer, and every
form is tested against the plain version on NumPy and on the CuPy stand-in:

    form = FORMS[name]                      a layer's fast form, picked by ``impl``
    y, saved = form.forward(layer, x)       the output, and what its backward needs
    dx = form.backward(layer, saved, g, input_grad)
                                            adds dL/dparam into layer's parameters
                                            (as the plain backward does), returns dL/dx
                                            (None with input_grad=False)

``run_forward(layer, form, x)`` runs a form's forward and keeps ``Fast(form, saved)`` as the
layer's saved record, so its backward runs the same form as its forward did.

conv.py       Conv2d: "strided", "wide" and "band" (one product on image row bands, without
              the width padding), and "auto"'s choice per backend and shape; band buffers reused
pooling.py    MaxPool2d: "offsets" (a loop over kernel offsets on strided slices); AvgPool2d:
              "sums" (the same loop, adding); both: "fused" (a GPU's: one kernel each way);
              the backward of an activation and the pooling after it in one step
batchnorm.py  BatchNorm1d/2d with batch statistics: "sums" (per-channel sums and every pass in
              the input's memory order) and "fused" (a GPU's: few fused kernels); they keep
              the book's record instead of ``Fast``
order.py      LeNet's evaluation order and shortcuts: max pooling before a monotone
              activation; a BatchNorm folded into the convolution or linear layer before it
"""

from __future__ import annotations

from typing import NamedTuple


class Fast(NamedTuple):
    """What a layer saves when a fast form ran its forward."""
    form: object          # the form (its backward runs)
    saved: object         # the form's own record


class Form(NamedTuple):
    """One fast form of a layer."""
    name: str
    forward: object       # (layer, x) -> (y, saved)
    backward: object      # (layer, saved, grad_out, input_grad) -> dx or None


def memory_order(a) -> tuple:
    """a's axes from the largest stride to the smallest: (0, 1, 2, 3) for a C-contiguous
    array, (1, 0, 2, 3) for an (N, C, H, W) view of (C, N, H, W) memory; axes of length 1
    last (their strides mean nothing). The fast forms lay a gradient out as its input was."""
    return tuple(sorted(range(a.ndim), key=lambda ax: -abs(a.strides[ax]) if a.shape[ax] > 1 else 1))


def run_forward(layer, form, x):
    """``form``'s forward of ``layer`` on x; the layer saves ``Fast(form, saved)``."""
    y, saved = form.forward(layer, x)
    layer.save_for_backward(Fast(form, saved))
    return y
