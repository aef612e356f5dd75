"""The optimizers (lenet_np/optim.py): state_dict, resuming, torch's update rules."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import backend, nn

from .conftest import REAL_GPU, to_np
from .numerics import conditioning_floor, rounding_mode, torch_floor

torch = pytest.importorskip("torch", reason="the reference tests need torch==2.13.0 (pip install -e '.[test]')")
from benchmarks.torch_models import book_model  # noqa: E402  (after the importorskip)

from .torch_ref import assert_close, torch_device  # noqa: E402

F = torch.nn.functional


def test_optimizer_state_dict_resumes_exactly():
    def run(steps, split=None):
        net = ln.LeNet(seed=0)
        opt = ln.optim.Adam(net.parameters(), lr=1e-2)
        loss_fn = nn.CrossEntropyLoss()
        rng = np.random.default_rng(0)
        for step in range(steps):
            if step == split:   # save, rebuild from scratch, load: as a resumed run does
                sd, osd = {k: v.copy() for k, v in net.state_dict().items()}, opt.state_dict()
                net = ln.LeNet(seed=99)
                net.load_state_dict(sd)
                opt = ln.optim.Adam(net.parameters(), lr=0.5)
                opt.load_state_dict(osd)
            x = rng.random((8, 1, 28, 28), dtype=np.float32)
            opt.zero_grad()
            loss_fn(net(x), rng.integers(0, 10, 8))
            net.backward(loss_fn.backward(), input_grad=False)
            opt.step()
        return net

    for p, q in zip(run(6).parameters(), run(6, split=3).parameters()):
        np.testing.assert_array_equal(p.data, q.data)
    with pytest.raises(ValueError, match="shape"):
        ln.optim.SGD(nn.Linear(2, 2).parameters(), momentum=0.9).load_state_dict(
            {"state.0.momentum_buffer": np.zeros(3)})


# -- against torch: the update rules, and training with the network -------------------------------

def torch_lenet(seed=0):
    return book_model("classic", seed=seed)


OPTIMIZERS = [
    ("adam", dict(lr=1e-3)),
    ("adam", dict(lr=3e-3, betas=(0.8, 0.99), eps=1e-6, weight_decay=1e-3)),
    ("sgd", dict(lr=0.1, momentum=0.9)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
]


def make_optimizers(opt_name, kwargs, ours, theirs):
    ours_cls = {"adam": ln.optim.Adam, "sgd": ln.optim.SGD}[opt_name]
    theirs_cls = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[opt_name]
    return ours_cls(ours.parameters(), **kwargs), theirs_cls(theirs.parameters(), **kwargs)


def train_both(xp, opt_name, kwargs, dtype, steps=50, same_grads=False):
    """Train our LeNet and the seed's torch LeNet from the same weights on the same batches.
    With same_grads, torch's optimizer is fed our gradients: only the update rules differ.
    Returns ours, torch's parameters by name, the torch model's starting copy, the batches
    and, with same_grads, our gradients of every step."""
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    dev = torch_device(xp)
    theirs = torch_lenet().to(tdtype).to(dev)
    start = copy.deepcopy(theirs)
    ours = ln.LeNet(seed=2).to("cuda" if xp is not np else "cpu", dtype)
    ours.load_state_dict(theirs.state_dict())
    opt, topt = make_optimizers(opt_name, kwargs, ours, theirs)
    rng = np.random.default_rng(0)
    batches = [(rng.random((32, 1, 28, 28)).astype(dtype), rng.integers(0, 10, 32)) for _ in range(5)]
    loss_fn = nn.CrossEntropyLoss()
    tparams = dict(theirs.named_parameters())
    fed = []
    for step in range(steps):
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        loss_fn(ours(xp.asarray(x)), xp.asarray(y))
        ours.backward(loss_fn.backward(), input_grad=False)
        topt.zero_grad()
        if same_grads:
            fed.append({name: to_np(p.grad).copy() for name, p in ours.named_parameters()})
            for name, grad in fed[-1].items():
                tparams[name].grad = torch.tensor(grad, device=dev)
        else:
            F.cross_entropy(theirs(torch.tensor(x, device=dev)), torch.tensor(y, device=dev)).backward()
        opt.step()
        topt.step()
    return ours, tparams, start, [batches[i % len(batches)] for i in range(steps)], fed


def update_floor(start, opt_name, kwargs, fed, device):
    """The float64 floor of the optimizer's steps from ``start`` with the gradients ``fed``
    (exact float32 data: only the update rule rounds)."""
    def run(jitter):
        m = copy.deepcopy(start).double().to(device)
        params = dict(m.named_parameters())
        topt = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[opt_name](m.parameters(), **kwargs)
        for grads in fed:
            for name, p in params.items():
                p.grad = torch.tensor(grads[name], dtype=torch.float64, device=device)
            with rounding_mode(jitter):
                topt.step()
        return {"param:" + n: p for n, p in params.items()}

    return conditioning_floor(run)


# The float32 checks bound the rounding of the device that runs them: on the CuPy stand-in that
# is NumPy's, already checked, so they run on CuPy only with a GPU (the float64 trajectories
# below run on both: they hold the stand-in's API and the fused update kernels to torch's).
FLOAT32_DEVICES = ["numpy", "cupy"] if REAL_GPU else ["numpy"]


@pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low
@pytest.mark.parametrize("device", FLOAT32_DEVICES)
@pytest.mark.parametrize("opt_name,kwargs", OPTIMIZERS)
def test_optimizer_update_rule_float32(device, opt_name, kwargs):
    """50 float32 steps with identical gradients: the update rules agree to the rounding of
    the float64 rule from the same gradients (Adam magnifies rounding where a gradient is near
    0, and the floor measures that)."""
    xp = np if device == "numpy" else backend.require_cupy()
    ours, tparams, start, _, fed = train_both(xp, opt_name, kwargs, np.float32, same_grads=True)
    floor = update_floor(start, opt_name, kwargs, fed, torch_device(xp))
    for name, p in ours.named_parameters():
        floor.check(p.data, "param:" + name, what=f"lenet_np {name}")
        floor.check(tparams[name], "param:" + name, what=f"torch float32 {name} (cross-check of the bound)")


@pytest.mark.parametrize("opt_name,kwargs", OPTIMIZERS)
def test_training_parity_float64(xp, opt_name, kwargs):
    """Network and optimizer together, 50 steps in float64: the same trajectory as torch."""
    ours, tparams, *_ = train_both(xp, opt_name, kwargs, np.float64)
    for name, p in ours.named_parameters():
        assert_close(p.data, tparams[name], rtol=1e-10, what=name)


@pytest.mark.numerics
@pytest.mark.parametrize("device", FLOAT32_DEVICES)
@pytest.mark.parametrize("opt_name,kwargs", [o for o in OPTIMIZERS if o[0] == "sgd"])
def test_training_parity_float32(device, opt_name, kwargs):
    """Network and SGD together, 10 float32 steps: the parameters within the float64 floor of
    the same training. SGD, because Adam's step is about lr * sign(g) and so turns rounding in
    a gradient near 0 into a whole step: Adam is checked from the same gradients above."""
    xp = np if device == "numpy" else backend.require_cupy()
    ours, tparams, start, batches, _ = train_both(xp, opt_name, kwargs, np.float32, steps=10)
    floor = torch_floor(start, batches, lambda ps: torch.optim.SGD(ps, **kwargs), device=torch_device(xp))
    for name, p in ours.named_parameters():
        floor.check(p.data, "param:" + name, what=f"lenet_np {name}")
        floor.check(tparams[name], "param:" + name, what=f"torch float32 {name} (cross-check of the bound)")


# -- every form of each rule: the flags pick one fused kernel on a GPU ------------------------------
FORMS = [("sgd", dict(lr=0.1)), ("sgd", dict(lr=0.1, weight_decay=0.01)),
         ("sgd", dict(lr=0.1, momentum=0.9)), ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.5)),
         ("sgd", dict(lr=0.1, momentum=0.9, dampening=0.3, weight_decay=0.01)),
         ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True)),
         ("sgd", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
         ("adam", dict(lr=0.01)), ("adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.01))]


@pytest.mark.parametrize("opt_name,kwargs", FORMS)
def test_every_form_of_the_update_rules_is_torchs(xp, opt_name, kwargs):
    """Each combination of momentum, dampening, Nesterov and weight decay (and Adam with and
    without decay), the first step and the ones after it: 4 float64 steps of one parameter from
    the same gradients as torch's optimizer, equal to float64 rounding after every step."""
    from lenet_np.nn.module import Parameter

    rng = np.random.default_rng(0)
    start = rng.standard_normal((3, 4))
    ours, theirs = Parameter(xp.asarray(start)), torch.nn.Parameter(torch.tensor(start))
    opt = {"adam": ln.optim.Adam, "sgd": ln.optim.SGD}[opt_name]([ours], **kwargs)
    topt = {"adam": torch.optim.Adam, "sgd": torch.optim.SGD}[opt_name]([theirs], **kwargs)
    for step in range(4):
        grad = rng.standard_normal((3, 4))
        ours.grad, theirs.grad = xp.asarray(grad), torch.tensor(grad)
        opt.step()
        topt.step()
        assert_close(ours.data, theirs, rtol=1e-10, what=f"step {step + 1}")
        assert_close(ours.grad, torch.tensor(grad), rtol=0, what="the gradient, left alone")
