"""Torch as the reference: plain IEEE float32 on every device, and the device to compare on."""

from __future__ import annotations

import numpy as np


def ieee_float32():
    """Torch on CUDA runs cuDNN convolutions (and may run matmuls) in TF32, about 3e-4 off
    float32; the reference must be plain float32, as lenet_np is."""
    import torch
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):     # torch 2.9 and later
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def torch_device(xp) -> str:
    """"cuda" where the arrays under test are CuPy's on a real GPU, else "cpu"."""
    import torch
    return "cuda" if xp is not np and torch.cuda.is_available() else "cpu"
