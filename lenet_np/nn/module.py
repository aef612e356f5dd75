"""Parameter, Module and Sequential: the bookkeeping every layer shares.

A layer is a Module with two methods side by side:

    y = layer.forward(x)                 saves what backward needs:
                                         self.save_for_backward(Saved(...))
    grad_x = layer.backward(grad_y)      reads it back with self.saved(),
                                         adds dL/dparam into param.grad,
                                         returns dL/dx

What forward saves is one named record (a NamedTuple per layer, e.g. Sigmoid's
``Output(y)``), None until forward runs; ``saved()`` is the one guard: a backward
before any forward is a RuntimeError naming the layer.

``backward(grad_y, input_grad=False)`` tells a layer that nobody needs dL/dx
(it is the first layer of the network): it may skip that work and return None.

Names follow PyTorch: ``named_parameters``, ``state_dict``, ``load_state_dict``,
``to``, ``train``, ``eval``, ``zero_grad``, and ``repr`` prints like
``print(net)`` in torch.

Buffers are arrays a module keeps that are not trained (BatchNorm's running
statistics): ``self.register_buffer("running_mean", array)`` registers one, after
which plain assignment ``self.running_mean = new_array`` replaces it. Buffers go
into ``state_dict`` (after the module's own parameters, as in torch), are loaded by
``load_state_dict``, move with ``to(device)``, and are cast by ``to(dtype)`` when
they are floating point (integer buffers such as ``num_batches_tracked`` keep their
dtype, as in torch). ``named_buffers`` and ``buffers`` list them.
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
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_saved", None)
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
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            if isinstance(value, (Parameter, Module)):     # the name is no longer a buffer
                del buffers[name]
                self._non_persistent_buffers.discard(name)
            else:                                          # assigning to a buffer replaces it
                buffers[name] = value
        object.__setattr__(self, name, value)

    def register_buffer(self, name: str, array, persistent: bool = True) -> None:
        """Register ``array`` (or None) as the buffer ``name``, reachable as ``self.<name>``.

        As in torch: a buffer is state that is not a parameter (no gradient, not seen by
        optimizers); ``persistent=False`` leaves it out of ``state_dict``. None registers
        the name without an array (it is then skipped everywhere)."""
        if "_buffers" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"register_buffer: the name must be an identifier, got {name!r}")
        if name in self._parameters or name in self._modules:
            raise KeyError(f"register_buffer: {name!r} is already a parameter or a module of "
                           f"{type(self).__name__}")
        if array is not None and not (hasattr(array, "shape") and hasattr(array, "dtype")):
            raise TypeError(f"register_buffer: {name!r} must be an array or None, got {type(array).__name__}")
        self._buffers[name] = array
        if persistent:
            self._non_persistent_buffers.discard(name)
        else:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, array)

    # -- the two methods a layer implements --
    def forward(self, x):
        raise NotImplementedError

    def backward(self, grad_out, input_grad=True):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # -- what forward keeps for backward: one record, one guard --
    def save_for_backward(self, record) -> None:
        """Keep ``record`` (a NamedTuple naming what backward needs) until the next forward."""
        object.__setattr__(self, "_saved", record)

    def saved(self):
        """The record the last forward saved; RuntimeError if no forward ran since the layer
        was made, moved or loaded."""
        record = self.__dict__.get("_saved")
        if record is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return record

    def has_saved(self) -> bool:
        return self.__dict__.get("_saved") is not None

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

    def named_buffers(self, prefix=""):
        """(name, array) for every buffer that holds an array, e.g. ("net.1.running_mean", a)."""
        for mod_name, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{mod_name}.{name}" if mod_name else name), b

    def buffers(self):
        return [b for _, b in self.named_buffers()]

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
        """Move parameters (and gradients) and buffers to a device and/or cast them, like torch's ``to``.

        ``net.to("cuda")``, ``net.to("cpu")``, ``net.to(dtype=np.float64)``,
        ``net.to("cuda", np.float32)``. A dtype may also be passed first: ``net.to(np.float64)``.
        A dtype casts the parameters and the floating-point buffers; integer buffers keep theirs.
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
            for name, b in list(m._buffers.items()):
                if b is None:
                    continue
                if target is not None:
                    b = backend.to_device(b, target)
                if dtype is not None and b.dtype.kind == "f" and b.dtype != dtype:
                    b = b.astype(dtype)
                setattr(m, name, b)
            m.clear_cache()
        return self

    def double(self):
        return self.to(dtype=np.float64)

    def float(self):
        return self.to(dtype=np.float32)

    def clear_cache(self) -> None:
        """Drop what forward saved for backward (called when parameters move or load)."""
        object.__setattr__(self, "_saved", None)

    @property
    def device(self) -> str:
        arrays = [p.data for p in self.parameters()] or self.buffers()
        return backend.device_of(arrays[0]) if arrays else "cpu"

    # -- saving and loading --
    def _state_entries(self):
        """(state_dict name, module, attribute, parameter or None) in torch's order: each
        module's own parameters, then its persistent buffers, then its children."""
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for name, p in module._parameters.items():
                yield prefix + name, module, name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers:
                    yield prefix + name, module, name, None

    def state_dict(self) -> OrderedDict[str, object]:
        """Parameter and buffer arrays by name (the live arrays, as in torch)."""
        return OrderedDict((name, p.data if p is not None else getattr(m, attr))
                           for name, m, attr, p in self._state_entries())

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays into the parameters and buffers, keeping each one's device and dtype.

        Values may be NumPy or CuPy arrays (or anything with ``.numpy()`` such as a
        CPU torch tensor). With ``strict`` (the default, as in torch) missing or
        unexpected keys raise; a shape mismatch always raises, and so does an integer
        array for a floating-point entry or the other way round.
        """
        entries = {name: (m, attr, p) for name, m, attr, p in self._state_entries()}
        own = OrderedDict((name, p if p is not None else getattr(m, attr)) for name, (m, attr, p) in entries.items())
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
            if p.dtype.kind == "f" and not np.issubdtype(value.dtype, np.floating):
                raise ValueError(f"load_state_dict: '{name}' has dtype {value.dtype}, expected a float array")
            if p.dtype.kind in "iu" and not np.issubdtype(value.dtype, np.integer):
                raise ValueError(f"load_state_dict: '{name}' has dtype {value.dtype}, expected an integer array")
            staged[name] = value
        # only touch the model once everything checked out: a failed load changes nothing
        for name, value in staged.items():
            module, attr, p = entries[name]
            if p is not None:
                xp = backend.get_array_module(p.data)
                p.data = xp.asarray(value, dtype=p.data.dtype).copy()
                p.grad = None
            else:
                old = getattr(module, attr)
                xp = backend.get_array_module(old)
                setattr(module, attr, xp.asarray(value, dtype=old.dtype).copy())
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
        return chain_backward(list(self), grad_out, input_grad)


def chain_backward(layers, grad_out, input_grad=True):
    """Backward through ``layers``, which forward ran in this order: last to first.

    One shortcut, with the same result: an activation followed by a max pooling goes back in
    one step where nn/fast/pooling.py's ``backward_through`` applies (it returns None where
    it does not, and the two layers then go back one after the other)."""
    from .fast.pooling import backward_through

    grad = grad_out
    i = len(layers) - 1
    while i > 0:
        if i > 1:
            fused = backward_through(layers[i], layers[i - 1], grad)
            if fused is not None:
                grad, i = fused, i - 2
                continue
        grad = layers[i].backward(grad)
        i -= 1
    if not layers:
        return grad if input_grad else None
    return layers[0].backward(grad, input_grad=input_grad)
