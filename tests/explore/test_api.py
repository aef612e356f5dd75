"""The explorer's API through a real HTTP connection: every route, the numbers against
``backprop``, the SGD step, undo and reset, sessions, and every refusal."""

from __future__ import annotations

import base64
import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest

import lenet_np as ln
from lenet_np.backprop import backprop
from lenet_np.explore import state as explore_state

from .conftest import Served, make_explorer, synthetic_test_set


def decode(arr) -> np.ndarray:
    return np.frombuffer(base64.b64decode(arr["data"]), dtype="<f4").reshape(arr["shape"])


def reference(index: int, target: int, net=None):
    """What lenet_np computes for test image ``index`` of the synthetic set, in evaluation mode."""
    net = net or ln.LeNet(seed=0)
    images, _ = synthetic_test_set()
    return backprop(net.eval(), images[index:index + 1], np.array([target]))


# -- the page and its files -----------------------------------------------------------------------
def test_the_page_and_its_files(served):
    status, res, body = served.request("GET", "/")
    assert status == 200 and res.getheader("Content-Type").startswith("text/html")
    csp = res.getheader("Content-Security-Policy")
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    page = body.decode()
    for name, ctype in (("explorer.js", "text/javascript"), ("draw.js", "text/javascript"),
                        ("explorer.css", "text/css"), ("favicon.svg", "image/svg+xml")):
        assert f"/static/{name}" in page
        status, res, data = served.request("GET", f"/static/{name}")
        assert status == 200 and res.getheader("Content-Type").startswith(ctype) and len(data) > 100
    links = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert links and all(link.startswith("/static/") for link in links), links   # nothing from another server


def test_info(served):
    status, _, info = served.request("GET", "/api/info")
    assert status == 200
    net = ln.LeNet(seed=0)
    assert [layer["name"] for layer in info["layers"]] == [n for n, _ in net.named_layers()]
    assert info["print"] == repr(net)
    assert info["untrained"] and any("untrained" in n for n in info["notes"])
    assert info["data"] == {"available": True, "count": 40, "per_class": [4] * 10}
    assert info["classes"][9] == "Ankle boot" and info["loss_doc"] == "docs/softmax-cross-entropy.md"


# -- showing an image ------------------------------------------------------------------------------
def test_show_a_test_image_gives_backprops_numbers(served):
    sid = served.session()
    view = served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 7}})["view"]
    bp = reference(7, 7)                                  # label 7: the target defaults to it
    assert view["input"]["index"] == 7 and view["input"]["label"] == 7 and view["input"]["target"] == 7
    assert view["loss"] == bp.loss
    np.testing.assert_array_equal(view["probs"], bp.probabilities()[0])
    assert view["pred"] == int(np.argmax(bp.probabilities()[0]))
    assert [v["name"] for v in view["layers"]] == [p.name for p in bp.layers]
    for v, p in zip(view["layers"], bp.layers):
        assert v["shape"] == list(p.output.shape)
        assert v["layout"] == ("maps" if p.output.ndim == 4 else "bars")
        np.testing.assert_array_equal(decode(v["output"]), p.output[0])
        np.testing.assert_array_equal(decode(v["grad"]), p.grad[0])
        assert v["grad_norm"] == float(np.linalg.norm(p.grad.astype(np.float64)))
    conv = view["layers"][0]
    np.testing.assert_array_equal(decode(conv["filters"]["grad"]), bp.layers[0].param_grads["weight"])
    np.testing.assert_array_equal(decode(view["input_grad"]), bp.input_grad[0, 0])
    assert view["steps"] == 0 and view["warning"] is None


def test_each_layer_names_its_page_of_the_book(served):
    docs = Path(__file__).resolve().parents[2] / "docs"
    for variant in ("classic", "batchnorm"):
        info = make_explorer(variant).info()
        pages = {layer["doc"] for layer in info["layers"]} | {info["loss_doc"]}
        assert all((docs.parent / p).is_file() for p in pages), pages
    assert {"docs/convolution.md", "docs/pooling.md", "docs/sigmoid.md", "docs/linear.md", "docs/flatten.md"} <= \
        {layer["doc"] for layer in served.request("GET", "/api/info")[2]["layers"]}


def test_pick_by_class_and_by_mistake(served):
    sid = served.session()
    view = served.post("/api/show", {"session": sid, "input": {"source": "class", "class": "ankle boot", "rank": 2}})
    assert view["view"]["input"]["index"] == 29 and view["view"]["input"]["label"] == 9   # labels 0..9 in turn
    _, _, m = served.request("GET", "/api/mistakes")
    images, labels = synthetic_test_set()
    probs = ln.LeNet(seed=0).eval()(images)
    pred = probs.argmax(axis=1)
    assert m["total"] == int((pred != labels).sum())
    conf = [x["confidence"] for x in m["mistakes"]]
    assert conf == sorted(conf, reverse=True) and all(x["pred"] != x["label"] for x in m["mistakes"])
    view = served.post("/api/show", {"session": sid, "input": {"source": "mistake", "rank": 0}})["view"]
    assert view["input"]["index"] == m["mistakes"][0]["index"] and view["input"]["source"] == "mistake"


def test_a_drawing_and_the_target(served):
    sid = served.session()
    pixels = np.zeros((28, 28))
    pixels[5:23, 12:16] = 1.0                                  # a trouser leg, more or less
    view = served.post("/api/show", {"session": sid, "input": {"source": "drawn", "pixels": pixels.ravel().tolist()}})
    view = view["view"]
    assert view["input"]["source"] == "drawn" and view["input"]["label"] is None
    assert view["input"]["target"] == view["pred"]             # no label: the loss is for the prediction
    x = pixels.astype(np.float32).reshape(1, 1, 28, 28)
    assert view["loss"] == backprop(ln.LeNet(seed=0).eval(), x, np.array([view["pred"]])).loss
    view = served.post("/api/show", {"session": sid, "target": "Bag"})["view"]       # the same drawing
    assert view["input"]["source"] == "drawn" and view["input"]["target"] == 8
    assert view["loss"] == backprop(ln.LeNet(seed=0).eval(), x, np.array([8])).loss
    drawn = {"source": "drawn", "pixels": pixels.ravel().tolist(), "label": 1}
    view = served.post("/api/show", {"session": sid, "input": drawn})["view"]
    assert view["input"]["label"] == 1 and view["input"]["target"] == 1


# -- the SGD step, undo, reset ---------------------------------------------------------------------
def test_step_undo_reset(served):
    sid = served.session()
    first = served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 3}})["view"]
    lr = 0.01
    out = served.post("/api/step", {"session": sid, "lr": lr})
    view, change = out["view"], out["change"]
    assert change["loss_before"] == first["loss"] and change["loss_after"] == view["loss"]
    assert view["loss"] < first["loss"] and view["steps"] == 1
    # the step is p -= lr * dL/dp with the gradients the page showed before it
    net = ln.LeNet(seed=0).eval()
    bp = reference(3, 3, net)
    for p in net.parameters():
        p.data -= np.float32(lr) * p.grad
    assert view["loss"] == backprop(net, synthetic_test_set()[0][3:4], np.array([3])).loss
    conv0 = next(c for c in change["layers"] if c["name"] == "conv.0")
    # ΔW = W_after - W_before = -lr * dL/dW, up to the float32 rounding of W_after (half its spacing)
    expected = -lr * bp.layers[0].param_grads["weight"].astype(np.float64)
    bound = np.spacing(np.abs(net.conv[0].weight.data)) + 1e-6 * np.abs(expected)
    assert np.all(np.abs(decode(conv0["delta"]) - expected) <= bound)
    assert len(conv0["delta_per_filter"]) == 6
    assert {c["name"] for c in change["layers"]} == {"conv.0", "conv.3", "fc.0", "fc.2", "fc.4"}
    again = served.post("/api/step", {"session": sid, "lr": lr})["view"]
    assert again["steps"] == 2 and again["loss"] < view["loss"]
    assert served.post("/api/undo", {"session": sid})["view"]["loss"] == view["loss"]
    back = served.post("/api/undo", {"session": sid})["view"]
    assert back["loss"] == first["loss"] and back["steps"] == 0
    assert "nothing to undo" in served.post("/api/undo", {"session": sid}, expect=409)["error"]
    for _ in range(2):
        served.post("/api/step", {"session": sid, "lr": 0.5})
    reset = served.post("/api/reset", {"session": sid})["view"]
    assert reset["loss"] == first["loss"] and reset["steps"] == 0


def test_undo_history_is_bounded(served):
    sid = served.session()
    served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 0}})
    for _ in range(5):
        served.post("/api/step", {"session": sid, "lr": 0.01})
    for _ in range(3):                                         # max_undo=3 in the fixture
        served.post("/api/undo", {"session": sid})
    assert "undo history (3 steps)" in served.post("/api/undo", {"session": sid}, expect=409)["error"]


def test_sessions_are_separate_and_bounded(served):
    a, b = served.session(), served.session()
    for sid in (a, b):
        served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 1}})
    served.post("/api/step", {"session": a, "lr": 0.1})
    va = served.post("/api/show", {"session": a})["view"]
    vb = served.post("/api/show", {"session": b})["view"]
    assert va["steps"] == 1 and vb["steps"] == 0 and va["loss"] != vb["loss"]
    c = served.session()
    served.post("/api/show", {"session": a})                  # a is now the most recently used
    served.session()                                           # a fourth: b, the least recently used, goes
    assert "unknown session" in served.post("/api/show", {"session": b}, expect=404)["error"]
    for sid in (a, c):
        served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 0}})
    assert len(served.explorer.sessions) == 3


def test_concurrent_requests_on_one_session(served):
    sid = served.session()
    expected = served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 2}})["view"]["loss"]
    results = []

    def hammer():
        for _ in range(4):
            results.append(served.post("/api/show", {"session": sid})["view"]["loss"])

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 16


@pytest.mark.parametrize("variant", ["classic", "d2l", "batchnorm"])
def test_every_variant_shows_and_steps(variant):
    served = Served(make_explorer(variant))
    try:
        info = served.request("GET", "/api/info")[2]
        assert info["variant"] == variant and info["batch_statistics"] == (variant == "batchnorm")
        assert any("evaluation mode" in n for n in info["notes"]) == (variant == "batchnorm")
        sid = served.session()
        view = served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 5}})["view"]
        net = ln.LeNet(variant=variant, seed=0)
        stats = {k: v.copy() for k, v in net.state_dict().items() if "running" in k}
        assert view["loss"] == backprop(net.eval(), synthetic_test_set()[0][5:6], np.array([5])).loss
        after = served.post("/api/step", {"session": sid, "lr": 0.01})["view"]
        assert after["loss"] < view["loss"]
        session_net = next(iter(served.explorer.sessions.values())).net
        for k, v in stats.items():                             # evaluation mode: running statistics untouched
            np.testing.assert_array_equal(session_net.state_dict()[k], v)
    finally:
        served.close()


def test_a_huge_learning_rate_gives_a_message_not_a_broken_page():
    served = Served(make_explorer(activation="relu"))
    try:
        sid = served.session()
        served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 0}})
        out = served.post("/api/step", {"session": sid, "lr": 1e12})       # accepted, and too large
        view = out["view"]
        assert view["loss"] is None and "no longer finite" in view["warning"]
        assert not view["layers"][-1]["output"]["finite"]
        assert served.post("/api/undo", {"session": sid})["view"]["warning"] is None
    finally:
        served.close()


# -- without the data set ---------------------------------------------------------------------------
def test_without_the_data_drawing_still_works():
    served = Served(make_explorer(test_set=None))
    try:
        info = served.request("GET", "/api/info")[2]
        assert not info["data"]["available"]
        assert any("make data" in n and "only drawing works" in n for n in info["notes"])
        sid = served.session()
        for spec in ({"source": "test", "index": 0}, {"source": "class", "class": 1}, {"source": "mistake"}):
            refused = served.post("/api/show", {"session": sid, "input": spec}, expect=409)
            assert "draw an image instead" in refused["error"]
        assert served.request("GET", "/api/mistakes")[0] == 409
        view = served.post("/api/show", {"session": sid, "input": {"source": "drawn", "pixels": [0.5] * 784}})["view"]
        assert view["loss"] is not None
    finally:
        served.close()


def test_the_learning_rate_bound_is_what_the_check_says():
    assert explore_state.learning_rate(explore_state.MAX_LR) == explore_state.MAX_LR
    with pytest.raises(explore_state.RequestError, match="too large"):
        explore_state.learning_rate(explore_state.MAX_LR * 10)
    assert json.loads(json.dumps(make_explorer().info()))["max_lr"] == explore_state.MAX_LR
