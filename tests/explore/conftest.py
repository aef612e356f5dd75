"""Fixtures of the explorer's tests: a small Explorer on synthetic images, its server in a
thread, and a client that speaks HTTP through a real connection."""

from __future__ import annotations

import http.client
import json
import socket
import threading

import numpy as np
import pytest

import lenet_np as ln
from lenet_np.explore import Explorer, ExplorerServer


def synthetic_test_set(n: int = 40, seed: int = 0):
    """n images (float32 (n, 1, 28, 28) in [0, 1]) with labels 0..9 in turn: a stand-in
    for the test set that needs no download."""
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 28, 28), dtype=np.float32), np.arange(n, dtype=np.int64) % 10


def make_explorer(variant="classic", activation=None, test_set="synthetic", **kw) -> Explorer:
    net = ln.LeNet(variant=variant, activation=activation, seed=0)
    data = synthetic_test_set() if test_set == "synthetic" else test_set
    return Explorer(net, "freshly initialised (seed 0)", test_set=data,
                    data_note=None if data is not None else "Fashion-MNIST not found", untrained=True, **kw)


class Served:
    """A running ExplorerServer on a free port, with a few ways to talk to it."""

    def __init__(self, explorer):
        self.explorer = explorer
        self.server = ExplorerServer(explorer, 0)
        self.port = self.server.server_port
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def request(self, method, path, body=None, headers=None, raw=None):
        """(status, headers, parsed JSON or bytes) of one request on a new connection."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            hdrs = {"Content-Type": "application/json"} if body is not None or raw is not None else {}
            hdrs.update(headers or {})
            data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            conn.request(method, path, body=data, headers=hdrs)
            res = conn.getresponse()
            payload = res.read()
            ctype = res.getheader("Content-Type", "")
            parsed = json.loads(payload, parse_constant=_no_nan) if ctype == "application/json" else payload
            return res.status, res, parsed
        finally:
            conn.close()

    def post(self, path, body, expect=200):
        status, _, data = self.request("POST", path, body)
        assert status == expect, (status, data)
        return data

    def session(self) -> str:
        return self.post("/api/session", {})["session"]

    def raw(self, data: bytes) -> bytes:
        """Send bytes as they are (for requests http.client will not write) and read the answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(data)
            chunks = []
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)


def _no_nan(token):
    raise AssertionError(f"the server sent {token}, which is not JSON")


@pytest.fixture
def served():
    s = Served(make_explorer(max_sessions=3, max_undo=3))
    yield s
    s.close()
