"""The explorer's state: the checkpoint's network, the test set, and one copy of the network
per page (a session), each with its own undo history.

``Explorer`` answers the API's requests as Python dicts (the server turns them into JSON);
a request it cannot answer raises ``RequestError`` with the HTTP status and one line that
says what is wrong and how to fix it. Every number it sends is computed by
``lenet_np.backprop.backprop`` on the session's network in evaluation mode, on one image.

Sessions live in memory, at most ``max_sessions`` of them: a new one drops the one used
least recently. Each keeps up to ``max_undo`` earlier states of its weights for "undo".
One lock per session: a network caches what its backward needs, so two requests must not
run through the same copy at once.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from ..backprop import backprop
from ..data import FIX as DATA_FIX
from ..evaluate import predict_logits
from ..model import LeNet
from ..nn import BatchNorm1d, BatchNorm2d
from ..optim import SGD
from . import views
from .views import CLASS_NAMES

MAX_SESSIONS = 8
MAX_UNDO = 20
MAX_LR = 1e20          # float32 ends near 3.4e38: a step this large already overflows most networks
MISTAKES_LISTED = 100
PIXELS = 28 * 28


class RequestError(ValueError):
    """A request the explorer refuses: ``status`` (4xx) and a one-line message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


class Picked(NamedTuple):
    """The image a page looks at: (1, 1, 28, 28) float32, where it comes from, its true label."""
    image: np.ndarray
    source: dict          # {"source": "test", "index": 7} (+ "class", "rank"), or {"source": "drawn"}
    label: int | None


class Session:
    def __init__(self, net):
        self.net = net
        self.lock = threading.Lock()
        self.undo: list[dict] = []         # earlier state_dicts, the newest last
        self.picked: Picked | None = None
        self.target: int | None = None


# -- reading the fields of a request ------------------------------------------------------------
def _field(body: dict, name: str, required: bool = True):
    if name not in body or body[name] is None:
        if required:
            raise RequestError(f"the request needs a field {name!r}")
        return None
    return body[name]


def whole_number(value, name: str, low: int, high: int) -> int:
    """``value`` as an int in low..high, or RequestError naming the field and the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise RequestError(f"{name} must be a whole number from {low} to {high}, got {repr(value)[:40]}")
    if not low <= value <= high:
        raise RequestError(f"{name} {repr(int(value))[:40]} is out of range: take a whole number from {low} to {high}")
    return int(value)


def _class_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def class_index(value, name: str = "class") -> int:
    """A class as 0..9 or by its name (any case; spaces, hyphens and the slash may be left out)."""
    if isinstance(value, str):
        key = _class_key(value)
        for k, cls in enumerate(CLASS_NAMES):
            if key and key == _class_key(cls):
                return k
        raise RequestError(f"{name} {value!r} is not a Fashion-MNIST class: take 0 to 9 or one of "
                           f"{', '.join(CLASS_NAMES)}")
    return whole_number(value, name, 0, len(CLASS_NAMES) - 1)


def learning_rate(value) -> float:
    """The step's learning rate: a number > 0 and <= MAX_LR."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise RequestError(f"lr must be a finite number > 0 and <= {MAX_LR:g}, got {repr(value)[:40]}")
    if value <= 0:
        raise RequestError(f"lr {value!r} does not step: take a learning rate > 0 (0.1 is a good start)")
    if value > MAX_LR:
        raise RequestError(f"lr {repr(value)[:40]} is too large: take a learning rate > 0 and <= {MAX_LR:g}")
    return float(value)


def drawn_pixels(value) -> np.ndarray:
    """The 784 pixels of a drawing (row by row, 0 black to 1 white) as (1, 1, 28, 28) float32."""
    if not isinstance(value, list) or len(value) != PIXELS:
        size = f"{len(value)} values" if isinstance(value, list) else type(value).__name__
        raise RequestError(f"pixels must be a list of {PIXELS} numbers (28 rows of 28, 0 to 1), got {size}")
    wrong = [v for v in value if isinstance(v, bool) or not isinstance(v, (int, float))]
    if wrong:
        raise RequestError(f"pixels must be numbers from 0 to 1, got {repr(wrong[0])[:40]}")
    a = np.asarray(value, dtype=np.float64)
    if not np.isfinite(a).all():
        raise RequestError("pixels must be finite numbers from 0 to 1, got NaN or infinity")
    if a.min() < 0 or a.max() > 1:
        raise RequestError(f"pixels must lie from 0 to 1, got values from {a.min():g} to {a.max():g}")
    return a.astype(np.float32).reshape(1, 1, 28, 28)


# -- the explorer -------------------------------------------------------------------------------
class Explorer:
    """The state behind the page. ``net``: the network of the checkpoint (or a fresh one),
    described by ``weights``; ``test_set``: (float32 images (N, 1, 28, 28) in [0, 1], int
    labels (N,)) or None with ``data_note`` saying why and how to get it."""

    def __init__(self, net: LeNet, weights: str, test_set=None, data_note: str | None = None, untrained=False,
                 max_sessions: int = MAX_SESSIONS, max_undo: int = MAX_UNDO):
        self.net = net.eval()
        self.weights = weights
        self.untrained = untrained
        self.state = {k: np.array(v, copy=True) for k, v in net.state_dict().items()}
        self.batch_statistics = any(isinstance(m, (BatchNorm1d, BatchNorm2d)) for _, m in net.named_modules())
        self.images, self.labels = test_set if test_set is not None else (None, None)
        self.data_note = data_note
        self.max_sessions, self.max_undo = max_sessions, max_undo
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        self.lock = threading.Lock()
        self.mistakes_lock = threading.Lock()
        self._mistakes = None
        if self.labels is not None:
            self.by_class = [np.flatnonzero(self.labels == k) for k in range(len(CLASS_NAMES))]

    # -- what the page shows first --
    def describe(self) -> str:
        net = self.net
        return f"LeNet(variant={net.variant!r}, activation={net.activation!r}, pool={net.pool!r})"

    def info(self) -> dict:
        net, has_bn = self.net, self.batch_statistics
        notes = []
        if self.untrained:
            notes.append(f"No checkpoint: this network is untrained, {self.weights}, so its answers are guesses. "
                         "Train one with `make train` (it writes runs/lenet.npz) or pass --checkpoint.")
        if has_bn:
            notes.append("This network normalises with batch statistics while training. On one image it runs in "
                         "evaluation mode (BatchNorm uses its running mean and variance), and the SGD step uses "
                         "evaluation mode's backward.")
        data = {"available": self.labels is not None}
        if self.labels is not None:
            data.update(count=len(self.labels), per_class=[len(ix) for ix in self.by_class])
        else:
            data["reason"] = self.data_note
            notes.append(f"Fashion-MNIST was not found, so only drawing works here. To get it, {DATA_FIX}, "
                         "then start the explorer again.")
        layers = [{"name": name, "type": type(layer).__name__, "repr": repr(layer), "doc": views.doc_page(layer)}
                  for name, layer in net.named_layers()]
        return {"network": self.describe(), "variant": net.variant, "activation": net.activation, "pool": net.pool,
                "weights": self.weights, "untrained": self.untrained, "eval_mode": True, "batch_statistics": has_bn,
                "print": repr(net), "layers": layers, "classes": list(CLASS_NAMES), "data": data, "notes": notes,
                "max_lr": MAX_LR, "loss_doc": views.LOSS_DOC,
                "limits": {"sessions": self.max_sessions, "undo": self.max_undo}}

    # -- sessions --
    def new_session(self) -> dict:
        net = LeNet(variant=self.net.variant, activation=self.net.activation, pool=self.net.pool, seed=0,
                    dtype=self.net.first_conv().weight.dtype)
        net.load_state_dict(self.state)
        sid = secrets.token_urlsafe(16)
        with self.lock:
            self.sessions[sid] = Session(net.eval())
            while len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)          # the least recently used
        return {"session": sid}

    def session(self, body: dict) -> Session:
        sid = _field(body, "session")
        with self.lock:
            s = self.sessions.get(sid) if isinstance(sid, str) else None
            if s is None:
                raise RequestError(f"unknown session {str(sid)[:40]!r}: it expired (the explorer keeps the "
                                   f"{self.max_sessions} most recent pages) or never existed; reload the page", 404)
            self.sessions.move_to_end(sid)
        return s

    # -- inputs --
    def _need_data(self, what: str):
        if self.labels is None:
            raise RequestError(f"{what} needs the Fashion-MNIST test set, which is not here; draw an image instead, "
                               f"or {DATA_FIX} and restart the explorer", 409)

    def _test_image(self, index: int, source: dict) -> Picked:
        return Picked(self.images[index:index + 1], dict(source, index=index), int(self.labels[index]))

    def pick(self, spec) -> Picked:
        """The image an ``input`` field names: {"source": "test", "index": i}, {"source":
        "class", "class": k, "rank": r} (the r-th test image of class k), {"source":
        "mistake", "rank": r} (the r-th most confident mistake of the checkpoint's network),
        or {"source": "drawn", "pixels": [784 numbers], "label": k or null}."""
        if not isinstance(spec, dict):
            raise RequestError(f"input must be a JSON object such as {{\"source\": \"test\", \"index\": 0}}, "
                               f"got {type(spec).__name__}")
        source = spec.get("source")
        if source == "drawn":
            label = spec.get("label")
            return Picked(drawn_pixels(_field(spec, "pixels")), {"source": "drawn"},
                          None if label is None else class_index(label, "label"))
        if source == "test":
            self._need_data("a test image")
            index = whole_number(_field(spec, "index"), "index", 0, len(self.labels) - 1)
            return self._test_image(index, {"source": "test"})
        if source == "class":
            self._need_data("a test image by class")
            k = class_index(_field(spec, "class"))
            members = self.by_class[k]
            rank = whole_number(spec.get("rank", 0), "rank", 0, len(members) - 1)
            return self._test_image(int(members[rank]), {"source": "class", "class": k, "rank": rank})
        if source == "mistake":
            self._need_data("a mistake")
            found = self.mistakes()["mistakes"]
            if not found:
                raise RequestError("the checkpoint's network makes no mistakes on the test set", 409)
            rank = whole_number(spec.get("rank", 0), "rank", 0, len(found) - 1)
            return self._test_image(found[rank]["index"], {"source": "mistake", "rank": rank})
        raise RequestError(f"input source must be 'test', 'class', 'mistake' or 'drawn', got {source!r}")

    def mistakes(self) -> dict:
        """The checkpoint's most confident mistakes on the test set (computed once, on first use)."""
        self._need_data("the list of mistakes")
        with self.mistakes_lock:
            if self._mistakes is None:
                with np.errstate(all="ignore"):
                    z = predict_logits(self.net, self.images, batch_size=500).astype(np.float64)
                probs = np.exp(z - z.max(axis=1, keepdims=True))
                probs /= probs.sum(axis=1, keepdims=True)
                pred = probs.argmax(axis=1)
                wrong = np.flatnonzero(pred != self.labels)
                wrong = wrong[np.argsort(-probs[wrong, pred[wrong]], kind="stable")]     # most confident first
                self._mistakes = {"total": len(wrong), "mistakes": [
                    {"index": int(i), "label": int(self.labels[i]), "pred": int(pred[i]),
                     "confidence": float(probs[i, pred[i]])} for i in wrong[:MISTAKES_LISTED]]}
        return self._mistakes

    # -- the requests that compute --
    def _pass(self, s: Session):
        """backprop on the session's network for its image and target (warnings of overflow
        are silenced: a non-finite result is reported in the view)."""
        with np.errstate(all="ignore"):
            return backprop(s.net, s.picked.image, np.array([s.target], dtype=np.int64))

    def _view(self, s: Session) -> dict:
        return views.view(self._pass(s), s.picked, s.target, len(s.undo))

    def _current(self, s: Session):
        if s.picked is None:
            raise RequestError("this page has no image yet: pick a test image or draw one first", 409)

    def show(self, body: dict) -> dict:
        """Pick an image (``input``; the page's current one when absent) and a ``target``
        class (the true label when absent, else the predicted class) and show the pass."""
        s = self.session(body)
        picked = self.pick(body["input"]) if body.get("input") is not None else None   # checked before the lock
        target = body.get("target")
        target = None if target is None else class_index(target, "target")
        with s.lock:
            if picked is None:
                self._current(s)
                picked = s.picked
            if target is None:
                if picked.label is not None:
                    target = picked.label
                else:
                    with np.errstate(all="ignore"):
                        logits = s.net(picked.image)
                    target = int(np.nan_to_num(np.asarray(logits[0]), nan=-np.inf).argmax())
            s.picked, s.target = picked, target
            return {"view": self._view(s)}

    def step(self, body: dict) -> dict:
        """One SGD step on the session's network for its image and target: the new view and
        the change (loss, prediction, ΔW per filter)."""
        s = self.session(body)
        lr = learning_rate(_field(body, "lr"))
        with s.lock:
            self._current(s)
            with np.errstate(all="ignore"):
                before_bp = self._pass(s)                          # fills every p.grad
                before = views.view(before_bp, s.picked, s.target, len(s.undo))
                params = views.parameters(s.net)
                s.undo.append({k: np.array(v, copy=True) for k, v in s.net.state_dict().items()})
                del s.undo[:-self.max_undo]
                SGD(s.net.parameters(), lr=lr).step()
                after = self._view(s)
                return {"view": after, "change": views.change(before, after, params, s.net, lr)}

    def undo(self, body: dict) -> dict:
        """Back to the weights before the last step (of the last ``max_undo``)."""
        s = self.session(body)
        with s.lock:
            if not s.undo:
                raise RequestError("nothing to undo: this page's network is as the checkpoint left it, "
                                   f"or its earlier steps are beyond the undo history ({self.max_undo} steps)", 409)
            s.net.load_state_dict(s.undo.pop())
            return {"view": self._view(s)}

    def reset(self, body: dict) -> dict:
        """Back to the checkpoint's weights (the view is null when no image is picked yet)."""
        s = self.session(body)
        with s.lock:
            s.net.load_state_dict(self.state)
            s.undo.clear()
            return {"view": self._view(s) if s.picked is not None else None}
