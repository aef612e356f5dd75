"""LeNet: the network of Dive into Deep Learning's PyTorch edition, and the book's other LeNets.

``variant="classic"`` (the default), the network of the book's PyTorch edition:

    input (N, 1, 28, 28)
    conv.0 Conv2d(1, 6, 5)      -> (N, 6, 24, 24)      conv.1 Sigmoid
    conv.2 MaxPool2d(2, 2)      -> (N, 6, 12, 12)
    conv.3 Conv2d(6, 16, 5)     -> (N, 16, 8, 8)       conv.4 Sigmoid
    conv.5 MaxPool2d(2, 2)      -> (N, 16, 4, 4)
    flatten Flatten(), the book's feature.view(N, -1)  -> (N, 256)   (no parameters, no key)
    fc.0 Linear(256, 120)  fc.1 Sigmoid  fc.2 Linear(120, 84)  fc.3 Sigmoid
    fc.4 Linear(84, 10)                                -> (N, 10) logits

44,426 parameters; ``state_dict()`` keys and array layouts are those of the book's
PyTorch model, so weights move between the two with ``load_state_dict``.

``variant="d2l"``, today's book (one ``nn.Sequential`` named ``net``):

    net.0 Conv2d(1, 6, 5, padding=2) -> (N, 6, 28, 28)   net.1 Sigmoid   net.2 AvgPool2d(2, 2)
    net.3 Conv2d(6, 16, 5)           -> (N, 16, 10, 10)  net.4 Sigmoid   net.5 AvgPool2d(2, 2)
    net.6 Flatten                    -> (N, 400)
    net.7 Linear(400, 120)  net.8 Sigmoid  net.9 Linear(120, 84)  net.10 Sigmoid
    net.11 Linear(84, 10)                                -> (N, 10) logits

61,706 parameters.

``variant="batchnorm"``, the book's LeNet with batch normalization:

    net.0 Conv2d(1, 6, 5)  net.1 BatchNorm2d(6)   net.2 Sigmoid  net.3 AvgPool2d(2, 2)  -> (N, 6, 12, 12)
    net.4 Conv2d(6, 16, 5) net.5 BatchNorm2d(16)  net.6 Sigmoid  net.7 AvgPool2d(2, 2)  -> (N, 16, 4, 4)
    net.8 Flatten                                                                      -> (N, 256)
    net.9 Linear(256, 120)  net.10 BatchNorm1d(120)  net.11 Sigmoid
    net.12 Linear(120, 84)  net.13 BatchNorm1d(84)   net.14 Sigmoid
    net.15 Linear(84, 10)                                                              -> (N, 10) logits

44,878 parameters, and the running statistics of the four BatchNorms as buffers.
The keys of both are those of the book's torch models (``net.0.weight`` ...).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .nn import AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Sequential, Sigmoid
from .nn.checks import check_input
from .nn.fast.order import fold_for_eval, swap_for_eval
from .nn.init import make_rng
from .nn.module import Module, chain_backward

ACTIVATIONS = {"sigmoid": Sigmoid, "relu": ReLU}
POOLS = {"max": MaxPool2d, "avg": AvgPool2d}

# The one table of the book's LeNets: for each, its default activation and pooling, and the
# recipe it is trained with (python -m lenet_np.train). Every activation is monotone and
# every pooling a 2x2 window, so any pair gives a working network.
BOOK_SGD = {"epochs": 10, "batch_size": 128, "lr": 0.1, "optimizer": "sgd"}
VARIANTS = {
    "classic": {"activation": "sigmoid", "pool": "max",
                "recipe": {"epochs": 5, "batch_size": 256, "lr": 0.001, "optimizer": "adam"}},
    "d2l": {"activation": "sigmoid", "pool": "avg", "recipe": BOOK_SGD},
    "batchnorm": {"activation": "sigmoid", "pool": "avg", "recipe": BOOK_SGD},
}
# Earlier names that still load (checkpoints and commands written with them keep working).
VARIANT_ALIASES = {"seed": "classic"}


def resolve_variant(variant="classic", activation=None, pool=None) -> tuple[str, str, str]:
    """(variant, activation, pool) with the variant's defaults filled in (and an earlier
    variant name mapped to today's); ValueError naming the valid choices otherwise."""
    variant = VARIANT_ALIASES.get(variant, variant)
    if variant not in VARIANTS:
        raise ValueError(f"LeNet: variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
    spec = VARIANTS[variant]
    activation = spec["activation"] if activation is None else activation
    pool = spec["pool"] if pool is None else pool
    for what, value, choices in (("activation", activation, ACTIVATIONS), ("pool", pool, POOLS)):
        if value not in choices:
            raise ValueError(f"LeNet(variant={variant!r}): {what} must be one of "
                             f"{', '.join(map(repr, choices))}, got {value!r}")
    return variant, activation, pool


class Order(NamedTuple):
    layers: list          # the layers in the order the last forward ran them


def xavier_uniform(rng, shape, dtype=np.float32):
    """Glorot/Xavier uniform, as torch's ``nn.init.xavier_uniform_`` (gain 1): uniform in
    +-sqrt(6 / (fan_in + fan_out)), with fan_in = shape[1] * receptive field and fan_out =
    shape[0] * receptive field (receptive field KH*KW for a conv weight, 1 for a linear one)."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    bound = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


def _xavier(layer, rng, dtype):
    """The book's ``init_cnn``: re-draw the weight of a Conv2d or Linear Xavier-uniform. The
    bias keeps its default draw (uniform in +-1/sqrt(fan_in)), as in the book, whose
    ``init_cnn`` only re-initialises weights."""
    layer.weight.data = xavier_uniform(rng, layer.weight.shape, dtype)
    return layer


class LeNet(Module):
    """The book's LeNets. ``variant``: "classic" (default) | "d2l" | "batchnorm" (see the
    module docstring; "seed", an earlier name of "classic", still works); ``activation``:
    "sigmoid" | "relu" (default sigmoid); ``pool``: "max" | "avg" (default: max for
    "classic", avg for the others, as the book).

    Weights are initialised as torch's defaults ("classic") or as the book's ``init_cnn``
    (Xavier-uniform weights of every Conv2d and Linear, torch's default biases; "d2l" and
    "batchnorm"), from ``rng`` (a numpy Generator) or from ``seed``; the same seed gives the
    same network. BatchNorm starts at weight 1, bias 0, running mean 0, running variance 1.

    ``pool_first`` (default True): in evaluation mode (``eval()``), run each max pooling
    *before* the activation that precedes it (only where the two sit side by side).
    Sigmoid and ReLU never decrease, so max(act(z)) == act(max(z)) bit for bit: the
    output is the same, and the activation runs on a quarter of the values (the
    sigmoid's exp is the costliest elementwise step on the CPU). In training mode the
    book's order runs, because the backward must send each window's gradient to the
    first maximum *of the activations*, as torch does: where two values of a window
    differ but their sigmoids round to the same float32, pooling first would pick the
    larger value instead (measured: 4 of 40 random initialisations then differed from
    torch's input gradient by more than 2e-5). A backward after an evaluation-mode
    forward routes such near-ties by the values before the activation. False runs the
    book's order always. Average pooling always runs in the book's order.

    ``fold_batchnorm`` (default True): in evaluation mode, each BatchNorm (running
    statistics) right after a convolution or linear layer is folded into that layer's
    weights and bias (nn/fast/order.py, ``fold_for_eval``): one layer instead of two, with
    the same output up to float32 rounding; a backward after it goes back through the two
    layers as written. ``layer_order`` still lists the book's layers.
    """

    def __init__(self, activation=None, pool=None, seed=None, rng=None, dtype=np.float32,
                 pool_first=True, *, variant="classic", fold_batchnorm=True):
        super().__init__()
        if activation is not None and activation not in ACTIVATIONS:
            raise ValueError(f"LeNet: activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if pool is not None and pool not in POOLS:
            raise ValueError(f"LeNet: pool must be one of {sorted(POOLS)}, got {pool!r}")
        variant, activation, pool = resolve_variant(variant, activation, pool)
        if seed is not None and rng is not None:
            raise ValueError("LeNet: pass seed or rng, not both")
        self.variant = variant
        self.activation = activation
        self.pool = pool
        rng = make_rng(rng if rng is not None else seed)
        act, pool_cls = ACTIVATIONS[activation], POOLS[pool]
        if variant == "classic":
            self.conv = Sequential(
                Conv2d(1, 6, 5, rng=rng, dtype=dtype), act(), pool_cls(2, 2),
                Conv2d(6, 16, 5, rng=rng, dtype=dtype), act(), pool_cls(2, 2),
            )
            self.fc = Sequential(
                Linear(16 * 4 * 4, 120, rng=rng, dtype=dtype), act(),
                Linear(120, 84, rng=rng, dtype=dtype), act(),
                Linear(84, 10, rng=rng, dtype=dtype),
            )
            # the book's feature.view(N, -1) between the two blocks: a layer like any other,
            # but not a child module, so state_dict and print(net) stay those of the book's model
            object.__setattr__(self, "flatten", Flatten())
        elif variant == "d2l":
            def conv(*a, **k):
                return _xavier(Conv2d(*a, rng=rng, dtype=dtype, **k), rng, dtype)

            def linear(*a):
                return _xavier(Linear(*a, rng=rng, dtype=dtype), rng, dtype)

            self.net = Sequential(
                conv(1, 6, 5, padding=2), act(), pool_cls(2, 2),
                conv(6, 16, 5), act(), pool_cls(2, 2), Flatten(),
                linear(16 * 5 * 5, 120), act(), linear(120, 84), act(), linear(84, 10),
            )
        else:
            def conv(*a):
                return _xavier(Conv2d(*a, rng=rng, dtype=dtype), rng, dtype)

            def linear(*a):
                return _xavier(Linear(*a, rng=rng, dtype=dtype), rng, dtype)

            self.net = Sequential(
                conv(1, 6, 5), BatchNorm2d(6, dtype=dtype), act(), pool_cls(2, 2),
                conv(6, 16, 5), BatchNorm2d(16, dtype=dtype), act(), pool_cls(2, 2), Flatten(),
                linear(16 * 4 * 4, 120), BatchNorm1d(120, dtype=dtype), act(),
                linear(120, 84), BatchNorm1d(84, dtype=dtype), act(),
                linear(84, 10),
            )
        self.pool_first = bool(pool_first)
        self.fold_batchnorm = bool(fold_batchnorm)
        object.__setattr__(self, "_folds", {})     # the folded pairs, kept from call to call

    # -- the layers, by name and in the order forward runs them --
    def named_layers(self) -> list:
        """(name, layer) of every layer in the book's order, named as in ``state_dict``
        (conv.0 ... conv.5, flatten, fc.0 ... fc.4; or net.0 ... net.N). The one walk over
        the network: forward, backward and the tools go by it."""
        if self.variant == "classic":
            return ([(f"conv.{i}", m) for i, m in enumerate(self.conv)] + [("flatten", self.flatten)]
                    + [(f"fc.{i}", m) for i, m in enumerate(self.fc)])
        return [(f"net.{i}", m) for i, m in enumerate(self.net)]

    def walk(self, img):
        """Yield (name, layer, output) for every layer in the book's order, running img
        through them (the output of ``net(img)``, up to float32 rounding where evaluation mode
        folds a BatchNorm into the layer before it; each layer saves what its backward
        needs, as in a forward). For tools that show each layer's output."""
        self._check(img)
        feature = img
        for name, layer in self.named_layers():
            feature = layer(feature)
            yield name, layer, feature

    def layer_order(self) -> list:
        """The layers in the order forward runs them in this mode (``named_layers`` with the
        evaluation-mode swaps of ``pool_first``: nn/fast/order.py)."""
        layers = [m for _, m in self.named_layers()]
        if self.pool_first and not self.training:
            layers = swap_for_eval(layers)
        return layers

    def conv_order(self):
        """The convolutional block's layers (up to the flatten) in the order forward runs them."""
        order = self.layer_order()
        return order[:next(i for i, m in enumerate(order) if isinstance(m, Flatten))]

    def first_conv(self) -> Conv2d:
        """The first convolution (conv.0 or net.0): its filters look at the image."""
        return self.named_layers()[0][1]

    def _check(self, img):
        first = self.first_conv()
        check_input(first, img, "(N, 1, 28, 28)", ndim=4, channels=1,
                    dtype=first.weight.dtype, params=first.weight.data)
        if img.shape[2:] != (28, 28):
            raise ValueError(f"LeNet: expected input of shape (N, 1, 28, 28), got shape {tuple(img.shape)}")

    def forward(self, img):
        self._check(img)
        order = self.layer_order()
        if self.fold_batchnorm and not self.training:
            order = fold_for_eval(order, self._folds)
        feature = img
        for layer in order:
            feature = layer(feature)
        self.save_for_backward(Order(order))              # backward retraces this order
        return feature

    def backward(self, grad_out, input_grad=True):
        """dL/dlogits (N, 10) -> dL/dimg (N, 1, 28, 28), or None with input_grad=False
        (training does not need the image gradient, so the first conv skips it). The layers
        go back in reverse order of the forward (``chain_backward``)."""
        return chain_backward(self.saved().layers, grad_out, input_grad)

    def extra_repr(self):
        return ""
