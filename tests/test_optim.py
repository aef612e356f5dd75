"""The optimizers (lenet_np/optim.py): state_dict, resuming, torch's update rules."""

from __future__ import annotations

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import nn


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
