"""The book's PyTorch LeNets, defined once for the tests and the benchmarks.

``book_model(variant)`` builds the reference model of ``lenet_np.LeNet(variant=variant)``, with
the same ``state_dict`` keys and layouts:

* ``classic``: the older edition's class, two ``nn.Sequential`` named ``conv`` and ``fc`` and a
  ``view`` between them; sigmoid and max pooling; torch's default initialisation;
* ``d2l`` and ``batchnorm``: today's d2l.ai layer lists in one ``nn.Sequential`` named ``net``;
  sigmoid and average pooling; Xavier-uniform weights (the book's ``init_cnn``).

``activation`` ("sigmoid", "relu") and ``pool`` ("max", "avg") replace every activation and
every 2x2 pooling, as ``lenet_np.LeNet(activation=..., pool=...)`` does. torch is a test and
benchmark dependency only: lenet_np never imports this module, and the benchmarks import it
only where they run torch.
"""

from __future__ import annotations

import torch
from torch import nn

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}
DEFAULT_POOL = {"classic": "max", "d2l": "avg", "batchnorm": "avg"}


def book_layers(variant, act, pool) -> list:
    """The layer list of today's d2l.ai LeNet (``d2l``) or of its batch-normalised form."""
    if variant == "d2l":
        return [nn.Conv2d(1, 6, kernel_size=5, padding=2), act(), pool(kernel_size=2, stride=2),
                nn.Conv2d(6, 16, kernel_size=5), act(), pool(kernel_size=2, stride=2), nn.Flatten(),
                nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, 10)]
    return [nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), act(), pool(kernel_size=2, stride=2),
            nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), act(), pool(kernel_size=2, stride=2),
            nn.Flatten(), nn.Linear(256, 120), nn.BatchNorm1d(120), act(),
            nn.Linear(120, 84), nn.BatchNorm1d(84), act(), nn.Linear(84, 10)]


class LeNet(nn.Module):
    """The book's model of ``variant`` (see the module's docstring)."""

    def __init__(self, variant="classic", activation="sigmoid", pool=None):
        super().__init__()
        if variant not in DEFAULT_POOL:
            raise ValueError(f"variant must be one of {', '.join(DEFAULT_POOL)}, got {variant!r}")
        act, pool = ACTIVATIONS[activation], POOLS[pool or DEFAULT_POOL[variant]]
        if variant == "classic":
            self.conv = nn.Sequential(
                nn.Conv2d(1, 6, 5), act(), pool(kernel_size=2, stride=2),
                nn.Conv2d(6, 16, 5), act(), pool(kernel_size=2, stride=2))
            self.fc = nn.Sequential(
                nn.Linear(16 * 4 * 4, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, 10))
            return
        self.net = nn.Sequential(*book_layers(variant, act, pool))
        for m in self.modules():
            if type(m) in (nn.Linear, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x):
        if hasattr(self, "net"):
            return self.net(x)
        feature = self.conv(x)
        return self.fc(feature.view(x.shape[0], -1))


def book_model(variant="classic", activation="sigmoid", pool=None, seed=0, dtype=None) -> LeNet:
    """The book's LeNet ``variant``, initialised by torch from ``seed`` (``torch.manual_seed``),
    in ``dtype`` (default: float32)."""
    torch.manual_seed(seed)
    model = LeNet(variant, activation, pool)
    return model if dtype is None else model.to(dtype)


def ieee_float32() -> None:
    """Plain float32 for torch on CUDA: cuDNN convolutions (and possibly matmuls) run in TF32 by
    default, about 3e-4 off float32, while lenet_np computes in float32 (CuPy too, unless
    ``CUPY_TF32=1``). Torch 2.9 and later: the ``fp32_precision`` settings; earlier: ``allow_tf32``.
    The two must not be mixed in one process (torch refuses to read its flags then)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def tf32_flags() -> dict:
    """Whether torch's CUDA matmuls and cuDNN convolutions may use TF32, read without tripping
    torch's check against mixing its two ways of setting them."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        return {"cudnn_allow_tf32": torch.backends.cudnn.conv.fp32_precision == "tf32",
                "matmul_allow_tf32": matmul.fp32_precision == "tf32"}
    return {"cudnn_allow_tf32": torch.backends.cudnn.allow_tf32, "matmul_allow_tf32": matmul.allow_tf32}
