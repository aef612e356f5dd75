"""Parameter, Module and Sequential: the bookkeeping every layer shares.

A layer is a Module with two methods side by side:

    y = layer.forward(x)                 caches what backward needs
    grad_x = layer.backward(grad_y)      adds dL/dparam into param.grad,
                                         returns dL/dx

``backward(grad_y, input_grad=False)`` tells a layer that nobody needs dL/dx
(it is the first layer of the network): it may skip that work and return None.

Names follow PyTorch: ``named_parameters``, ``state_dict``, ``load_state_dict``,
``to``, ``train``, ``eval``, ``zero_grad``, and ``repr`` prints like
``print(net)`` in torch.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .. import backend


class Parameter:
    """A trainable array ``data`` and its accumulated gradient ``grad``.

    ``grad`` is None until a backward pass adds to it; gradients accumulate
    across backward passes until ``zero_grad()``, as in torch.
    """

    def __init__(self, data):
        self.data = data
        self.grad = None

    def accumulate(self, g) -> None:
        """grad += g (the first call takes ownership of g)."""
        if self.grad is None:
            self.grad = g
        else:
            self.grad += g

    @property
    def shape(self):
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.dtype}, device={backend.device_of(self.data)})"


def _float_dtype(dtype):
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype {dtype} is not supported: use float32 or float64")
    return dtype


class Module:
    """Base class of every layer and network."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        self.training = True

    # -- registration: attributes that are Parameters or Modules are tracked in order --
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    # -- the two methods a layer implements --
    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out, input_grad=True):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # -- traversal --
    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self, prefix=""):
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    # -- mode --
    def train(self, mode: bool = True):
        for _, m in self.named_modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    # -- device and dtype --
    def to(self, device=None, dtype=None):
        """Move parameters (and gradients) to a device and/or cast them, like torch's ``to``.

        ``net.to("cuda")``, ``net.to("cpu")``, ``net.to(dtype=np.float64)``,
        ``net.to("cuda", np.float32)``. A dtype may also be passed first: ``net.to(np.float64)``.
        """
        if device is not None and not isinstance(device, str):
            device, dtype = None, device
        target = backend.parse_device(device) if device is not None else None
        dtype = _float_dtype(dtype) if dtype is not None else None
        for _, m in self.named_modules():
            for p in m._parameters.values():
                for attr in ("data", "grad"):
                    a = getattr(p, attr)
                    if a is None:
                        continue
                    if target is not None:
                        a = backend.to_device(a, target)
                    if dtype is not None and a.dtype != dtype:
                        a = a.astype(dtype)
                    setattr(p, attr, a)
            m.clear_cache()
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def clear_cache(self) -> None:
        """Drop what forward cached for backward (called when parameters move)."""
        for key in [k for k in self.__dict__ if k.startswith("_cache")]:
            self.__dict__[key] = None

    @property
    def device(self) -> str:
        params = self.parameters()
        return backend.device_of(params[0].data) if params else "cpu"

    # -- saving and loading --
    def state_dict(self) -> OrderedDict[str, object]:
        """Parameter arrays by name (views of the live arrays, as in torch)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays into the parameters, keeping each parameter's device and dtype.

        Values may be NumPy or CuPy arrays (or anything with ``.numpy()`` such as a
        CPU torch tensor). With ``strict`` (the default, as in torch) missing or
        unexpected keys raise; a shape mismatch always raises.
        """
        own = OrderedDict(self.named_parameters())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys: {', '.join(missing)}")
            if unexpected:
                parts.append(f"unexpected keys: {', '.join(map(str, unexpected))}")
            raise KeyError(
                f"load_state_dict for {type(self).__name__} failed: " + "; ".join(parts)
                + f". Expected exactly these keys: {', '.join(own)}"
            )
        staged = {}
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            value = backend.as_numpy(value)
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(
                    f"load_state_dict for {type(self).__name__}: '{name}' has shape "
                    f"{tuple(value.shape)} in the state dict but {tuple(p.shape)} in the model"
                )
            if not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"load_state_dict: '{name}' has dtype {value.dtype}, expected a float array")
            staged[name] = value
        # only touch the model once everything checked out: a failed load changes nothing
        for name, value in staged.items():
            p = own[name]
            xp = backend.get_array_module(p.data)
            p.data = xp.asarray(value, dtype=p.data.dtype).copy()
            p.grad = None
        for _, m in self.named_modules():
            m.clear_cache()

    # -- printing like torch --
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child_repr}")
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; backward walks them in reverse.

    forward:  x -> m0 -> m1 -> ... -> y
    backward: dL/dy -> m_last.backward -> ... -> m0.backward -> dL/dx
    """

    def __init__(self, *modules):
        super().__init__()
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential takes Modules, got {type(m).__name__} at position {i}")
            setattr(self, str(i), m)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for m in self:
            x = m(x)
        return x

    def backward(self, grad_out, input_grad=True):
        layers = list(self)
        for m in reversed(layers[1:]):
            grad_out = m.backward(grad_out)
        if not layers:
            return grad_out if input_grad else None
        return layers[0].backward(grad_out, input_grad=input_grad)
