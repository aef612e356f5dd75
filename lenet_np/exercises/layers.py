"""The exercises in the book's order (``EXERCISES``), and the first four of them: for each layer,
how the student's layer and lenet_np's are built, the small cases of the finite-difference check,
the random configurations drawn for the comparison with lenet_np, the traps, and the layer's
usual mistakes. Convolution, pooling and batch normalization have their own modules (conv.py,
pooling.py, batchnorm.py).

Random configurations are written against ``pick(lo, hi)``, which returns a whole number in
[lo, hi]: Hypothesis supplies it (and shrinks a failure), or NumPy when Hypothesis is missing.
"""

from __future__ import annotations

import numpy as np

from .. import nn
from .batchnorm import BATCHNORM
from .cases import Case, Exercise, float32, shape_str, unique
from .conv import CONV_IM2COL, CONV_NAIVE
from .pooling import AVGPOOL, MAXPOOL


# -- Linear ----------------------------------------------------------------------------------------------
def linear_case(rng, n, fan_in, fan_out, trap="", hint="", then=False) -> Case:
    case = Case(f"x {shape_str((n, fan_in))}, weight {shape_str((fan_out, fan_in))}",
                rng.standard_normal((n, fan_in)), rng.standard_normal((n, fan_out)),
                {"weight": rng.standard_normal((fan_out, fan_in)), "bias": rng.standard_normal(fan_out)},
                trap=trap, hint=hint)
    if then:
        case.then = Case(case.label, rng.standard_normal((n, fan_in)), rng.standard_normal((n, fan_out)),
                         case.params)
    return case


def linear_reference(case):
    fan_out, fan_in = case.params["weight"].shape
    layer = nn.Linear(fan_in, fan_out, dtype=np.float64)
    layer.weight.data, layer.bias.data = case.params["weight"].copy(), case.params["bias"].copy()
    return layer


LINEAR = Exercise(
    name="linear", cls="Linear", params=("weight", "bias"),
    student=lambda cls, case: cls(case.params["weight"].copy(), case.params["bias"].copy()),
    reference=linear_reference,
    fd_cases=lambda rng: [linear_case(rng, 3, 4, 5)],
    random_case=lambda pick: linear_case(np.random.default_rng(pick(0, 9999)), pick(1, 4), pick(1, 6), pick(1, 6)),
    traps=lambda rng: [
        linear_case(rng, 1, 4, 3, "batch size 1"),
        linear_case(rng, 3, 4, 4, "square weight (IN = OUT)", "with IN = OUT a transposed dW has the right shape: "
                    "dW = grad_out.T @ x is (OUT, IN)"),
        linear_case(rng, 2, 3, 4, "two backward calls", then=True),
        float32(linear_case(rng, 3, 4, 5)),
    ],
    tiny=lambda rng: [linear_case(rng, 1, 1, 1), linear_case(rng, 2, 1, 1), linear_case(rng, 1, 2, 2),
                      linear_case(rng, 2, 2, 3), linear_case(rng, 1, 1, 1, "two backward calls", then=True),
                      float32(linear_case(rng, 1, 1, 1))])


# -- Sigmoid and ReLU ----------------------------------------------------------------------------------------
def elementwise_case(rng, shape, x, trap="", hint="") -> Case:
    return Case(f"x {shape_str(shape)}", x, rng.standard_normal(shape), trap=trap, hint=hint)


def random_shape(pick):
    return tuple(pick(1, 4) for _ in range(pick(1, 4)))


def sigmoid_random(pick):
    shape, scale, rng = random_shape(pick), pick(1, 4), np.random.default_rng(pick(0, 9999))
    return elementwise_case(rng, shape, scale * rng.standard_normal(shape))


def sigmoid_mistakes(case, want):
    y = 1 / (1 + np.exp(-np.clip(case.x, -700, 700)))
    return [("dx", "dx uses x where the forward's output y belongs: dL/dx = grad_out * y * (1 - y), with y = "
             "self.cache", case.grad * case.x * (1 - case.x)),
            ("dx", "dx is missing the factor (1 - y): dL/dx = grad_out * y * (1 - y)", case.grad * y),
            ("dx", "dx is missing grad_out: dL/dx = grad_out * y * (1 - y)", y * (1 - y)),
            ("dx", "dx applies the sigmoid twice: self.cache already holds y = sigmoid(x)",
             case.grad * (1 / (1 + np.exp(-y))) * (1 - 1 / (1 + np.exp(-y))))]


def large_inputs(rng):
    x = rng.permutation(np.linspace(-1000, 1000, 40)).reshape(4, 10)
    return elementwise_case(rng, x.shape, x, "large inputs (|x| up to 1000)",
                            "for large |x| use the y the forward cached: exp(-x) overflows")


SIGMOID = Exercise(
    name="sigmoid", cls="Sigmoid",
    student=lambda cls, case: cls(), reference=lambda case: nn.Sigmoid(),
    fd_cases=lambda rng: [elementwise_case(rng, (2, 3, 4), 2 * rng.standard_normal((2, 3, 4)))],
    random_case=sigmoid_random,
    traps=lambda rng: [large_inputs(rng),
                       float32(elementwise_case(rng, (2, 5), rng.standard_normal((2, 5))))],
    mistakes=sigmoid_mistakes,
    tiny=lambda rng: [elementwise_case(rng, (3,), 2 * rng.standard_normal(3)),
                      elementwise_case(rng, (2, 3), 2 * rng.standard_normal((2, 3))),
                      elementwise_case(rng, (4,), np.array([-1000.0, -1.0, 1.0, 1000.0]), "large inputs"),
                      float32(elementwise_case(rng, (3,), rng.standard_normal(3)))])


def relu_random(pick):
    shape, scale, rng = random_shape(pick), pick(1, 4), np.random.default_rng(pick(0, 9999))
    return elementwise_case(rng, shape, unique(rng, shape, scale))


def relu_zeros(rng):
    x = rng.integers(-2, 3, (3, 6)).astype(np.float64)
    x[0, :3] = 0.0
    return elementwise_case(rng, x.shape, x, "x == 0 exactly",
                            "at x == 0 the gradient is 0 (as torch): the mask is x > 0")


RELU = Exercise(
    name="relu", cls="ReLU",
    student=lambda cls, case: cls(), reference=lambda case: nn.ReLU(),
    fd_cases=lambda rng: [elementwise_case(rng, (2, 3, 4), unique(rng, (2, 3, 4)))],
    random_case=relu_random,
    traps=lambda rng: [relu_zeros(rng), float32(elementwise_case(rng, (2, 5), unique(rng, (2, 5))))],
    tiny=lambda rng: [elementwise_case(rng, (4,), unique(rng, (4,))),
                      elementwise_case(rng, (4,), np.array([-1.0, 0.0, 2.0, 0.0]), "x == 0 exactly"),
                      float32(elementwise_case(rng, (3,), unique(rng, (3,))))],
    mistakes=lambda case, want: [
        ("dx", "dx passes the gradient at x == 0: the derivative there is taken as 0 (as torch), so the mask is "
               "x > 0, not x >= 0", case.grad * (case.x >= 0)),
        ("dx", "dx is the mask alone: multiply it with grad_out", (case.x > 0).astype(np.float64))])


# -- softmax cross-entropy ----------------------------------------------------------------------------------
def loss_case(rng, n, k, scale=2.0, trap="", hint="") -> Case:
    return Case(f"logits {shape_str((n, k))}", scale * rng.standard_normal((n, k)),
                config={"labels": rng.integers(0, k, n)}, trap=trap, hint=hint)


def loss_mistakes(case, want):
    z = case.x - case.x.max(axis=1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    n = case.batch
    onehot = np.zeros_like(p)
    onehot[np.arange(n), case.config["labels"]] = 1
    return [("dlogits", "dlogits is missing the one-hot: dL/dz = (p - onehot(labels)) / N", p / n),
            ("dlogits", "dlogits is missing the one-hot and the 1/N: dL/dz = (p - onehot(labels)) / N", p),
            ("dlogits", "dlogits is -onehot/N: the softmax's own gradient p is missing (dL/dz = (p - onehot) / N)",
             -onehot / n)]


SOFTMAX_CE = Exercise(
    name="softmax_cross_entropy", cls="SoftmaxCrossEntropy", loss=True,
    student=lambda cls, case: cls(), reference=lambda case: nn.CrossEntropyLoss(),
    fd_cases=lambda rng: [loss_case(rng, 3, 5)],
    random_case=lambda pick: loss_case(np.random.default_rng(pick(0, 9999)), pick(1, 5), pick(2, 6), pick(1, 5)),
    traps=lambda rng: [loss_case(rng, 1, 4, trap="batch size 1"),
                       loss_case(rng, 3, 4, 1000.0, "large logits (about 1000)",
                                 "large logits: use the p the forward cached (exp of a large logit overflows)"),
                       float32(loss_case(rng, 3, 5))],
    mistakes=loss_mistakes,
    tiny=lambda rng: [loss_case(rng, 1, 2), loss_case(rng, 2, 2), loss_case(rng, 2, 3),
                      loss_case(rng, 2, 3, 1000.0, "large logits"), float32(loss_case(rng, 1, 2))])


EXERCISES = {ex.name: ex for ex in (LINEAR, SIGMOID, RELU, SOFTMAX_CE, AVGPOOL, MAXPOOL, CONV_NAIVE, CONV_IM2COL,
                                           BATCHNORM)}
"""The exercises in the order to do them (the order of the docs, of check and of the README that new writes)."""
