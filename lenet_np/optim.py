"""SGD and Adam with PyTorch's exact update rules (torch.optim, single-tensor path).

Both read ``p.grad`` and update ``p.data`` in place; parameters without a
gradient are skipped, as in torch. State is created lazily on the parameter's
device, so move the network (``net.to("cuda")``) before the first ``step()``.

``state_dict()`` returns a flat dict of NumPy arrays and numbers (safe for
``np.savez``), ``load_state_dict()`` restores it exactly (from NumPy or CuPy arrays, onto
each parameter's device), so training resumes bit for bit.

Each parameter's update is one function of elementwise operations (``_sgd_step``,
``_adam_step``) run through ``backend.fused``: on a GPU it is ONE kernel per parameter
(Adam's rule unfused is 13 launches), on the CPU the same in-place NumPy operations as
always. The step count stays a Python int on the host, as in torch's default path: the
bias corrections are Python numbers passed to the kernel, so a step reads nothing back
from the device and launches nothing for them. Each parameter keeps its own arrays (no
flat buffer): ``load_state_dict`` and ``DataParallel`` rebind ``p.data``.
"""

from __future__ import annotations

import math

import numpy as np

from . import backend


class Optimizer:
    hyperparameters: tuple = ()

    def __init__(self, params, **hyper):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        for name, value in hyper.items():
            setattr(self, name, value)
        self.state = [dict() for _ in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p, state in zip(self.params, self.state):
            if p.grad is None:
                continue
            self._update(p, state)

    def _update(self, p, state):
        raise NotImplementedError

    def state_dict(self) -> dict:
        out = {f"hyper.{k}": np.asarray(getattr(self, k)) for k in self.hyperparameters}
        for i, state in enumerate(self.state):
            for key, value in state.items():
                out[f"state.{i}.{key}"] = backend.as_numpy(value) if hasattr(value, "shape") else np.asarray(value)
        return out

    def load_state_dict(self, state_dict) -> None:
        new_state = [dict() for _ in self.params]
        hyper = {}
        for key, value in state_dict.items():
            parts = key.split(".")
            if parts[0] == "hyper" and len(parts) == 2 and parts[1] in self.hyperparameters:
                hyper[parts[1]] = backend.as_numpy(value)
                continue
            if parts[0] != "state" or len(parts) != 3 or not parts[1].isdigit():
                raise KeyError(f"{type(self).__name__}.load_state_dict: unexpected key {key!r}")
            i = int(parts[1])
            if i >= len(self.params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: state for parameter {i}, "
                                 f"but the optimizer has {len(self.params)} parameters")
            p = self.params[i]
            value = backend.as_numpy(value)           # NumPy or device arrays alike
            if parts[2] == "step":
                new_state[i]["step"] = int(value)
                continue
            if value.shape != p.shape:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {key} has shape {value.shape}, "
                                 f"parameter {i} has shape {tuple(p.shape)}")
            xp = backend.get_array_module(p.data)
            new_state[i][parts[2]] = xp.asarray(value, dtype=p.dtype)
        self.state = new_state
        for k, v in hyper.items():
            old = getattr(self, k)
            setattr(self, k, tuple(float(a) for a in v) if isinstance(old, tuple) else type(old)(v))

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)}" for k in self.hyperparameters)
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, dampening, Nesterov and weight decay.

        g = grad + weight_decay * p
        buf = g                                   (first step)
        buf = momentum * buf + (1 - dampening) * g
        g = g + momentum * buf  (nesterov)   or   g = buf
        p = p - lr * g
    """

    hyperparameters = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"SGD: lr, momentum and weight_decay must be >= 0, got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("SGD: Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, lr=float(lr), momentum=float(momentum), dampening=float(dampening),
                         weight_decay=float(weight_decay), nesterov=bool(nesterov))

    def _update(self, p, state):
        buf = state.get("momentum_buffer")
        first = self.momentum != 0 and buf is None
        if first:
            buf = state["momentum_buffer"] = backend.get_array_module(p.data).empty_like(p.data)
        step = backend.fused(_sgd_step, self.weight_decay != 0, self.momentum != 0, self.nesterov, first)
        step(p.data, p.grad, buf, self.lr, self.weight_decay, self.momentum, 1 - self.dampening)


def _sgd_step(xp, decay, momentum, nesterov, first):
    """SGD's update of one parameter, in place: one kernel on a GPU (backend.fused), the
    operations as written on the CPU. The flags pick the rule's form; buf is None without
    momentum."""
    def sgd_step(p, grad, buf, lr, weight_decay, mu, one_minus_dampening):
        g = grad + weight_decay * p if decay else grad
        if momentum:
            if first:
                buf[...] = g                          # torch: the first buffer is the gradient
            else:
                buf *= mu
                buf += one_minus_dampening * g
            g = g + mu * buf if nesterov else buf
        p -= lr * g
    return sgd_step


class Adam(Optimizer):
    """Adam (Kingma and Ba), in torch's form:

        g = grad + weight_decay * p               (L2, not AdamW)
        m = m + (1 - beta1) * (g - m)             (torch's lerp)
        v = beta2 * v + (1 - beta2) * g * g
        p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    """

    hyperparameters = ("lr", "betas", "eps", "weight_decay")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        b1, b2 = betas
        if lr < 0 or eps < 0 or weight_decay < 0 or not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"Adam: need lr, eps, weight_decay >= 0 and betas in [0, 1), got lr={lr}, "
                             f"betas={betas}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, lr=float(lr), betas=(float(b1), float(b2)), eps=float(eps),
                         weight_decay=float(weight_decay))

    def _update(self, p, state):
        b1, b2 = self.betas
        if "exp_avg" not in state:
            xp = backend.get_array_module(p.data)
            state["step"] = 0
            state["exp_avg"] = xp.zeros_like(p.data)
            state["exp_avg_sq"] = xp.zeros_like(p.data)
        state["step"] += 1
        t = state["step"]            # a Python int: the bias corrections are numbers, no device read
        step = backend.fused(_adam_step, self.weight_decay != 0)
        step(p.data, p.grad, state["exp_avg"], state["exp_avg_sq"], self.weight_decay, 1 - b1, b2, 1 - b2,
             self.lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t), self.eps)


def _adam_step(xp, decay):
    """Adam's update of one parameter, in place: one kernel on a GPU (backend.fused), the
    operations as written (and as fast as before) on the CPU."""
    def adam_step(p, grad, m, v, weight_decay, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps):
        g = grad + weight_decay * p if decay else grad
        m += one_minus_b1 * (g - m)                   # torch's lerp
        v *= b2
        v += one_minus_b2 * g * g
        denom = xp.sqrt(v)
        denom /= bc2_sqrt
        denom += eps
        p -= step_size * m / denom
    return adam_step
