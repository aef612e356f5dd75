"""Every layer, the loss, LeNet and both optimizers against PyTorch in float32."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import lenet_np as ln
from lenet_np import nn

from .conftest import to_np
from .numerics import function_floor, torch_floor, torch_step_floor

pytestmark = pytest.mark.numerics   # run again at a lower SIMD level: make test-numerics-low

torch = pytest.importorskip("torch", reason="the reference tests need torch==2.13.0 (pip install -e '.[test]')")
F = torch.nn.functional
torch.set_num_threads(2)


def ieee_float32():
    """Torch on CUDA runs cuDNN convolutions (and may run matmuls) in TF32, about 3e-4 off
    float32; the reference must be plain float32, as lenet_np is."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):     # torch 2.9 and later
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        torch.backends.cudnn.conv.fp32_precision = "ieee"
    else:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


ieee_float32()

RTOL = 1e-5   # normwise: max|a - b| <= RTOL * max|b|


def assert_close(ours, theirs, rtol=RTOL, what=""):
    a = to_np(ours).astype(np.float64)
    b = theirs.detach().cpu().numpy().astype(np.float64) if hasattr(theirs, "detach") else np.asarray(theirs)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    finite = np.isfinite(b)           # NaN and +-inf must sit in the same places, with the same values
    np.testing.assert_array_equal(a[~finite], b[~finite], err_msg=f"{what}: NaN or inf differ")
    a, b = a[finite], b[finite]
    scale = max(np.abs(b).max(), 1e-30) if b.size else 1.0
    err = np.abs(a - b).max() / scale if b.size else 0.0
    assert err <= rtol, f"{what}: normwise error {err:.2e} > {rtol:.0e}"


def torch_device(xp):
    return "cuda" if xp is not np and torch.cuda.is_available() else "cpu"


def T(a, device="cpu", grad=True):
    return torch.tensor(to_np(a), device=device, requires_grad=grad)


def run_both(layer, torch_fn, x, xp, params=()):
    """Forward and backward through our layer and through torch_fn(x, *params), in float32;
    both within the float64 floor of torch_fn (tests/numerics.py)."""
    dev = torch_device(xp)
    y = layer(xp.asarray(x))
    g = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    gx = layer.backward(xp.asarray(g))
    tx = T(x, dev)
    tparams = [T(p.data, dev) for p in params]
    ty = torch_fn(tx, *tparams)
    ty.backward(torch.tensor(g, device=dev))
    assert y.dtype == np.float32 and gx.dtype == np.float32
    floor = function_floor(torch_fn, [x, *(to_np(p.data) for p in params)], g, device=dev)
    for what, ours, theirs, key in [("forward", y, ty, "out"), ("input grad", gx, tx.grad, "grad:0"),
                                    *((f"param {i} grad", p.grad, tp.grad, f"grad:{i + 1}")
                                      for i, (p, tp) in enumerate(zip(params, tparams)))]:
        floor.check(ours, key, what=f"lenet_np {what}")
        floor.check(theirs, key, what=f"torch float32 {what} (cross-check of the bound)")


@st.composite
def conv_case(draw):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    hw = (draw(st.integers(max(1, k[0] - 2 * p[0]), 14)), draw(st.integers(max(1, k[1] - 2 * p[1]), 14)))
    return dict(n=draw(st.integers(1, 4)), c=draw(st.integers(1, 4)), o=draw(st.integers(1, 6)), k=k, s=s, p=p,
                hw=hw, seed=draw(st.integers(0, 2**16)))


def test_reference_runs_in_ieee_float32_not_tf32():
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        assert torch.backends.cuda.matmul.fp32_precision == "ieee"
        assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    else:
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


@pytest.mark.parametrize("impl", ["reference", "strided", "wide", "auto"])
@given(case=conv_case())
def test_conv2d(xp, impl, case):
    if impl == "wide":
        case = dict(case, s=(1, 1))
    rng = np.random.default_rng(case["seed"])
    layer = nn.Conv2d(case["c"], case["o"], case["k"], case["s"], case["p"], rng=rng, impl=impl)
    layer.to("cuda" if xp is not np else "cpu")
    x = rng.standard_normal((case["n"], case["c"], *case["hw"])).astype(np.float32)
    run_both(layer, lambda t, w, b: F.conv2d(t, w, b, stride=case["s"], padding=case["p"]), x, xp,
             [layer.weight, layer.bias])


@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    hw = (draw(st.integers(max(1, k[0] - 2 * p[0]), 12)), draw(st.integers(max(1, k[1] - 2 * p[1]), 12)))
    return dict(n=draw(st.integers(1, 3)), c=draw(st.integers(1, 4)), k=k,
                s=(draw(st.integers(1, 4)), draw(st.integers(1, 4))), p=p, hw=hw,
                ties=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("impl", ["reference", "offsets"])
@given(case=pool_case())
def test_maxpool2d(xp, impl, case):
    rng = np.random.default_rng(case["seed"])
    shape = (case["n"], case["c"], *case["hw"])
    if case["ties"]:   # few distinct values: most windows hold several equal maxima
        x = rng.integers(0, 3, shape).astype(np.float32)
    else:
        x = rng.standard_normal(shape).astype(np.float32)
    layer = nn.MaxPool2d(case["k"], case["s"], case["p"], impl=impl)
    run_both(layer, lambda t: F.max_pool2d(t, case["k"], case["s"], case["p"]), x, xp)


@pytest.mark.parametrize("impl", ["reference", "offsets"])
def test_maxpool2d_saturated_sigmoid_ties(xp, impl):
    """Sigmoid outputs round to exactly 1.0 in float32: whole windows tie."""
    x = np.random.default_rng(0).uniform(15, 40, (4, 3, 8, 8)).astype(np.float32)
    x = nn.Sigmoid()(x)
    assert (x == 1.0).mean() > 0.5
    for k, s in [(2, 2), (3, 1), (3, 2)]:
        run_both(nn.MaxPool2d(k, s, impl=impl), lambda t, k=k, s=s: F.max_pool2d(t, k, s), x, xp)


@pytest.mark.parametrize("impl", ["reference", "offsets"])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 1, 1), (3, 2, 1)])
def test_maxpool2d_nan_windows_route_as_torch(xp, impl, k, s, p):
    """A window holding NaN outputs NaN and sends its gradient to its last NaN, on both backends."""
    rng = np.random.default_rng(k * 10 + s)
    x = rng.standard_normal((2, 2, 6, 7)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan             # some windows hold one NaN, some several
    run_both(nn.MaxPool2d(k, s, p, impl=impl), lambda t: F.max_pool2d(t, k, s, p), x, xp)


@pytest.mark.parametrize("impl", ["reference", "offsets"])
@pytest.mark.parametrize("k,s,p", [(3, 2, 1), (2, 1, 1), (3, 3, 1), ((3, 2), 1, (1, 0))])
def test_maxpool2d_windows_of_minus_inf_route_to_a_real_pixel(xp, impl, k, s, p):
    """Padded windows whose real pixels are all -inf: the gradient goes to the first real
    pixel, as torch's, never into the padding where it would be lost."""
    x = np.full((1, 2, 4, 5), -np.inf, dtype=np.float32)
    x[0, 1, 2:, 3:] = 1.0                              # channel 1: some windows hold a real maximum
    run_both(nn.MaxPool2d(k, s, p, impl=impl), lambda t: F.max_pool2d(t, k, s, p), x, xp)


@given(case=pool_case())
def test_avgpool2d(xp, case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], *case["hw"])).astype(np.float32)
    layer = nn.AvgPool2d(case["k"], case["s"], case["p"])
    run_both(layer, lambda t: F.avg_pool2d(t, case["k"], case["s"], case["p"]), x, xp)


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1.0, 10.0, 100.0]))
def test_sigmoid(xp, shape, seed, scale):
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    run_both(nn.Sigmoid(), torch.sigmoid, x, xp)


@given(shape=st.lists(st.integers(1, 6), min_size=1, max_size=4).map(tuple), seed=st.integers(0, 2**16))
def test_relu(xp, shape, seed):
    x = np.random.default_rng(seed).integers(-3, 4, shape).astype(np.float32)  # exact zeros included
    run_both(nn.ReLU(), torch.relu, x, xp)


@given(n=st.integers(1, 8), fin=st.integers(1, 40), fout=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_linear(xp, n, fin, fout, seed):
    rng = np.random.default_rng(seed)
    layer = nn.Linear(fin, fout, rng=rng).to("cuda" if xp is not np else "cpu")
    x = rng.standard_normal((n, fin)).astype(np.float32)
    run_both(layer, F.linear, x, xp, [layer.weight, layer.bias])


def test_flatten(xp):
    x = np.random.default_rng(0).standard_normal((3, 2, 4, 5)).astype(np.float32)
    run_both(nn.Flatten(), torch.nn.Flatten(), x, xp)


@given(n=st.integers(1, 16), k=st.integers(2, 12), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1.0, 30.0, 1000.0]))
def test_cross_entropy(xp, n, k, seed, scale):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    y = rng.integers(0, k, n)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(xp.asarray(z), xp.asarray(y))
    grad = loss_fn.backward()
    tz = T(z)
    tl = F.cross_entropy(tz, torch.tensor(y))
    tl.backward()
    assert isinstance(loss, float)
    floor = function_floor(lambda t: F.cross_entropy(t, torch.tensor(y)), [z])
    for what, ours, theirs, key in [("loss", loss, tl, "out"), ("logit grad", grad, tz.grad, "grad:0")]:
        floor.check(ours, key, what=f"lenet_np {what}")
        floor.check(theirs, key, what=f"torch float32 {what} (cross-check of the bound)")


def torch_lenet(seed=0):
    """The seed's network, verbatim (Dive into Deep Learning), initialised by torch from ``seed``."""
    tnn = torch.nn
    torch.manual_seed(seed)

    class LeNet(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Sequential(
                tnn.Conv2d(1, 6, 5), tnn.Sigmoid(), tnn.MaxPool2d(2, 2),
                tnn.Conv2d(6, 16, 5), tnn.Sigmoid(), tnn.MaxPool2d(2, 2))
            self.fc = tnn.Sequential(
                tnn.Linear(16 * 4 * 4, 120), tnn.Sigmoid(), tnn.Linear(120, 84), tnn.Sigmoid(),
                tnn.Linear(84, 10))

        def forward(self, img):
            feature = self.conv(img)
            return self.fc(feature.view(img.shape[0], -1))

    return LeNet()


def test_lenet_state_dict_layout_matches_torch():
    ours, theirs = ln.LeNet(seed=0), torch_lenet()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for (k, a), (_, b) in zip(ours.state_dict().items(), theirs.state_dict().items()):
        assert a.shape == tuple(b.shape), k
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()) == 44426
    # both ways: torch weights into ours, ours into torch
    ours.load_state_dict(theirs.state_dict())
    theirs.load_state_dict({k: torch.tensor(v) for k, v in ln.LeNet(seed=5).state_dict().items()})


def test_lenet_repr_reads_like_torch():
    ours = repr(ln.LeNet()).splitlines()
    theirs = repr(torch_lenet()).splitlines()
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        assert a.split("(")[:2] == b.split("(")[:2]   # same names and nesting


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_lenet_forward_backward(xp, batch):
    lenet_against_torch(xp, torch_lenet(seed=batch), np.random.default_rng(batch), batch)


def against_floor(floor, ours: dict, theirs: dict, float32_ties=False):
    """Each of ours and torch's float32 values (a cross-check) within the floor's bound; with
    float32_ties, ours within twice the bound of torch's float32 values instead (both route
    max-pool gradients by float32 ties that float64 does not have)."""
    for key, value in ours.items():
        if float32_ties:
            floor.check_pair(value, theirs[key], key, what=f"lenet_np against torch float32: {key}")
            continue
        floor.check(value, key, what=f"lenet_np {key}")
        floor.check(theirs[key], key, what=f"torch float32 {key} (cross-check of the bound)")


def lenet_against_torch(xp, theirs, rng, batch, float32_ties=False):
    """LeNet with torch's weights and torch on one random batch: loss, logits, input and
    parameter gradients within the float64 floor of the step."""
    ours = ln.LeNet(seed=1)
    ours.load_state_dict(theirs.state_dict())
    ours.to("cuda" if xp is not np else "cpu")
    dev = torch_device(xp)
    theirs.to(dev)
    x = rng.random((batch, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    floor = torch_step_floor(theirs, x, y, device=dev)
    loss_fn = nn.CrossEntropyLoss()
    out = ours(xp.asarray(x))
    loss = loss_fn(out, xp.asarray(y))
    gx = ours.backward(loss_fn.backward())
    tx = T(x, dev)
    tout = theirs(tx)
    tl = F.cross_entropy(tout, torch.tensor(y, device=dev))
    tl.backward()
    against_floor(floor, dict(out=out, loss=loss, input=gx, **grads(ours)),
                  dict(out=tout, loss=tl, input=tx.grad, **grads(theirs)), float32_ties)


def grads(net) -> dict:
    return {"grad:" + n: p.grad for n, p in net.named_parameters()}


@pytest.mark.parametrize("seed", [0, 1, 8, 9, 20, 23])
def test_lenet_gradients_match_torch_for_many_initialisations(xp, seed):
    """The gradient goes to the first maximum of the *sigmoid outputs*, as torch's: float32
    sigmoids of distinct values can tie, and routing by the values before the sigmoid
    (pooling first in training) failed this for torch seeds 8, 9, 20 and 23 of 0-39 with
    this batch, with errors up to 0.1."""
    lenet_against_torch(xp, torch_lenet(seed=seed), np.random.default_rng(64), 64, float32_ties=True)

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
    from .numerics import conditioning_floor, rounding_mode

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


@pytest.mark.parametrize("opt_name,kwargs", OPTIMIZERS)
def test_optimizer_update_rule_float32(xp, opt_name, kwargs):
    """50 float32 steps with identical gradients: the update rules agree to the rounding of
    the float64 rule from the same gradients (Adam magnifies rounding where a gradient is near
    0, and the floor measures that)."""
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


@pytest.mark.parametrize("opt_name,kwargs", [o for o in OPTIMIZERS if o[0] == "sgd"])
def test_training_parity_float32(xp, opt_name, kwargs):
    """Network and SGD together, 10 float32 steps: the parameters within the float64 floor of
    the same training. SGD, because Adam's step is about lr * sign(g) and so turns rounding in
    a gradient near 0 into a whole step: Adam is checked from the same gradients above."""
    ours, tparams, start, batches, _ = train_both(xp, opt_name, kwargs, np.float32, steps=10)
    floor = torch_floor(start, batches, lambda ps: torch.optim.SGD(ps, **kwargs), device=torch_device(xp))
    for name, p in ours.named_parameters():
        floor.check(p.data, "param:" + name, what=f"lenet_np {name}")
        floor.check(tparams[name], "param:" + name, what=f"torch float32 {name} (cross-check of the bound)")
