"""Every bad request is a 4xx with one line of JSON saying what is wrong, and the server keeps
serving; the Host check; a taken port; the command line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lenet_np as ln
from lenet_np import checkpoint
from lenet_np.explore import ServeError, command, open_server

from .conftest import make_explorer

ROOT = Path(__file__).resolve().parents[2]
GOOD_PIXELS = [0.0] * 784


def one_line_error(data) -> str:
    assert isinstance(data, dict) and set(data) == {"error"}, data
    msg = data["error"]
    assert isinstance(msg, str) and msg and "\n" not in msg and "Traceback" not in msg, msg
    return msg


def check_refused(served, status, data, expected_status, expected_text):
    assert status == expected_status, (status, data)
    assert expected_text in one_line_error(data)
    assert served.request("GET", "/api/info")[0] == 200              # and it keeps serving


def with_image(served) -> str:
    sid = served.session()
    served.post("/api/show", {"session": sid, "input": {"source": "test", "index": 0}})
    return sid


BAD_BODIES = [   # (route, body given the session id, status, words of the message)
    ("show", lambda s: {"session": s, "input": {"source": "drawn", "pixels": [0.0] * 783}}, 400, "784 numbers"),
    ("show", lambda s: {"session": s, "input": {"source": "drawn", "pixels": [[0.0] * 28] * 28}}, 400, "numbers"),
    ("show", lambda s: {"session": s, "input": {"source": "drawn", "pixels": [0.0] * 783 + [2.0]}}, 400, "from 0 to 1"),
    ("show", lambda s: {"session": s, "input": {"source": "drawn", "pixels": [0.0] * 783 + [True]}}, 400, "numbers"),
    ("show", lambda s: {"session": s, "input": {"source": "drawn", "pixels": "0" * 784}}, 400, "784 numbers"),
    ("show", lambda s: {"session": s, "input": {"source": "test", "index": 40}}, 400, "index 40 is out of range"),
    ("show", lambda s: {"session": s, "input": {"source": "test", "index": -1}}, 400, "from 0 to 39"),
    ("show", lambda s: {"session": s, "input": {"source": "test", "index": 1.5}}, 400, "whole number"),
    ("show", lambda s: {"session": s, "input": {"source": "test", "index": "3"}}, 400, "whole number"),
    ("show", lambda s: {"session": s, "input": {"source": "test"}}, 400, "needs a field 'index'"),
    ("show", lambda s: {"session": s, "input": {"source": "class", "class": "Sock"}}, 400, "not a Fashion-MNIST class"),
    ("show", lambda s: {"session": s, "input": {"source": "class", "class": 10}}, 400, "from 0 to 9"),
    ("show", lambda s: {"session": s, "input": {"source": "class", "class": 1, "rank": 4}}, 400, "rank 4"),
    ("show", lambda s: {"session": s, "input": {"source": "mistake", "rank": 10 ** 30}}, 400, "out of range"),
    ("show", lambda s: {"session": s, "input": {"source": "camera"}}, 400, "input source must be"),
    ("show", lambda s: {"session": s, "input": [1, 2]}, 400, "input must be a JSON object"),
    ("show", lambda s: {"session": s, "target": 11}, 400, "target 11 is out of range"),
    ("show", lambda s: {"session": s, "target": "Sock"}, 400, "not a Fashion-MNIST class"),
    ("step", lambda s: {"session": s, "lr": 0}, 400, "does not step"),
    ("step", lambda s: {"session": s, "lr": -0.1}, 400, "does not step"),
    ("step", lambda s: {"session": s, "lr": 1e21}, 400, "too large"),
    ("step", lambda s: {"session": s, "lr": "0.1"}, 400, "finite number"),
    ("step", lambda s: {"session": s, "lr": 10 ** 400}, 400, "too large"),
    ("step", lambda s: {"session": s}, 400, "needs a field 'lr'"),
    ("step", lambda s: {"session": "nope", "lr": 0.1}, 404, "unknown session"),
    ("show", lambda s: {"session": 12, "input": {"source": "test", "index": 0}}, 404, "reload the page"),
    ("undo", lambda s: {}, 400, "needs a field 'session'"),
]


@pytest.mark.parametrize("route, make_body, status, text", BAD_BODIES,
                         ids=[f"{r}-{t[:24]}-{i}" for i, (r, _, _, t) in enumerate(BAD_BODIES)])
def test_bad_fields(served, route, make_body, status, text):
    sid = with_image(served)
    code, _, data = served.request("POST", f"/api/{route}", make_body(sid))
    check_refused(served, code, data, status, text)


BAD_RAW = [   # (path, raw body, content type, status, words)
    ("/api/show", b"{not json", "application/json", 400, "not valid JSON"),
    ("/api/show", b"[1, 2]", "application/json", 400, "must be a JSON object"),
    ("/api/show", b"\xff\xfe", "application/json", 400, "not UTF-8"),
    ("/api/show", b"[" * 5000 + b"]" * 5000, "application/json", 400, "not JSON the explorer can read"),
    ("/api/show", b'{"index": ' + b"9" * 5000 + b"}", "application/json", 400, "not JSON the explorer can read"),
    ("/api/show", b'{"session": "x"}', "text/plain", 415, "Content-Type: application/json"),
    ("/api/step", b" " * (64 * 1024 + 1), "application/json", 413, "more than the 65536"),
]


@pytest.mark.parametrize("path, raw, ctype, status, text", BAD_RAW, ids=[t for *_, t in BAD_RAW])
def test_bad_bodies(served, path, raw, ctype, status, text):
    code, _, data = served.request("POST", path, raw=raw, headers={"Content-Type": ctype})
    check_refused(served, code, data, status, text)


def test_nan_in_a_drawing_and_in_the_learning_rate(served):
    sid = with_image(served)
    raw = json.dumps({"session": sid, "input": {"source": "drawn", "pixels": [float("nan")] + GOOD_PIXELS[1:]}})
    assert "NaN" in raw                                    # Python writes the literal NaN, which JSON lacks
    code, _, data = served.request("POST", "/api/show", raw=raw.encode())
    check_refused(served, code, data, 400, "got NaN or infinity")
    for lr in (float("nan"), float("inf")):
        code, _, data = served.request("POST", "/api/step", raw=json.dumps({"session": sid, "lr": lr}).encode())
        check_refused(served, code, data, 400, "finite number > 0")


def test_step_before_an_image_is_a_conflict(served):
    code, _, data = served.request("POST", "/api/step", {"session": served.session(), "lr": 0.1})
    check_refused(served, code, data, 409, "pick a test image or draw one first")


@pytest.mark.parametrize("method, path, status, text", [
    ("GET", "/nope", 404, "no such address '/nope'"),
    ("POST", "/api/nope", 404, "no such address"),
    ("GET", "/api/show", 405, "takes POST, not GET"),
    ("POST", "/api/info", 405, "takes GET, not POST"),
    ("GET", "/static/../server.py", 404, "no static file"),
    ("GET", "/static/..%2fserver.py", 404, "no static file '../server.py'"),
    ("GET", "/static/%2e%2e/%2e%2e/__init__.py", 404, "no static file"),
    ("GET", "/static/", 404, "no static file ''"),
    ("GET", "/static/%2fetc%2fpasswd", 404, "no static file '/etc/passwd'"),
    ("PUT", "/api/show", 501, "Unsupported method"),
])
def test_unknown_paths_and_methods(served, method, path, status, text):
    body = {} if method in ("POST", "PUT") else None
    code, res, data = served.request(method, path, body)
    check_refused(served, code, data, status, text)
    if status == 405:
        assert res.getheader("Allow") in ("GET", "POST")


def test_http_servers_own_refusals_are_one_json_line(served):
    for raw, status, text in ((b"GARBAGE\r\n\r\n", b"400", "Bad request syntax"),
                              (b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n", b"505", "Invalid HTTP version")):
        head, _, body = served.raw(raw).partition(b"\r\n\r\n")
        assert head.split()[1] == status and b"application/json" in head
        assert text in one_line_error(json.loads(body))
    host = f"Host: 127.0.0.1:{served.port}\r\n".encode()
    for extra, status, text in ((b"", b"411", "Content-Length"),
                                (b"Transfer-Encoding: chunked\r\n", b"411", "chunked")):
        answer = served.raw(b"POST /api/show HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n" + extra
                            + b"Connection: close\r\n\r\n")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] == status and text in one_line_error(json.loads(body))
    assert served.request("GET", "/api/info")[0] == 200


def test_internal_errors_are_one_line_and_the_server_goes_on(served, monkeypatch, capsys):
    def broken():
        raise ZeroDivisionError("on purpose")

    monkeypatch.setattr(served.explorer, "info", broken)
    code, _, data = served.request("GET", "/api/info")
    assert code == 500 and "internal error (ZeroDivisionError: on purpose)" in one_line_error(data)
    monkeypatch.undo()
    assert served.request("GET", "/api/info")[0] == 200


# -- the Host check (DNS rebinding) and the origin ------------------------------------------------------
def test_host_header_must_be_the_loopback_address(served):
    for host in ("evil.example", f"evil.example:{served.port}", f"127.0.0.1:{served.port + 1}", "127.0.0.1",
                 f"10.0.0.1:{served.port}"):
        code, _, data = served.request("GET", "/api/info", headers={"Host": host})
        assert code == 403 and "DNS rebinding" in one_line_error(data), host
    for host in (f"127.0.0.1:{served.port}", f"localhost:{served.port}"):
        assert served.request("GET", "/api/info", headers={"Host": host})[0] == 200
    code, _, data = served.request("POST", "/api/session", {}, headers={"Origin": "http://evil.example"})
    assert code == 403 and "another site" in one_line_error(data)
    assert served.request("POST", "/api/session", {}, headers={"Origin": served.url.rstrip("/")})[0] == 200
    answer = served.raw(b"GET /api/info HTTP/1.0\r\n\r\n")                       # no Host at all
    assert answer.split()[1] == b"400" and b"one Host header" in answer
    two = f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert served.raw(two.encode()).split()[1] == b"400"


# -- ports ---------------------------------------------------------------------------------------------
@pytest.fixture
def taken_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_taken_port(taken_port):
    explorer = make_explorer()
    with pytest.raises(ServeError, match=f"port {taken_port} on 127.0.0.1 is taken") as info:
        open_server(explorer, taken_port)
    assert "\n" not in str(info.value)
    server, note = open_server(explorer, None, default_port=taken_port)       # the default: another port
    with server:
        assert server.server_port != taken_port and f"port {taken_port} is taken" in note
        assert server.server_address[0] == "127.0.0.1"


def run_command(*args, cwd=ROOT, timeout=60):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "lenet_np.explore", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_command_line_errors_are_one_line(capsys, monkeypatch):
    monkeypatch.setattr(command, "DEFAULT_CHECKPOINT", ROOT / "no-such-dir" / "lenet.npz")
    for args, status, text in ((["--port", "0"], 2, "argument --port"), (["--port", "65536"], 2, "argument --port"),
                               (["--checkpoint", "no/such.npz"], 2, "no such file"),
                               (["--activation", "tanh"], 2, "argument --activation"),
                               (["--data-dir", str(ROOT / "tests")], 1, "Fashion-MNIST not found")):
        try:
            code = command.main([*args, "--no-browser"])
        except SystemExit as exc:                    # argparse's refusal
            code = exc.code
        err = capsys.readouterr().err
        assert code == status and text in err and len(err.strip().splitlines()) == 1, (args, err)


def test_the_command_serves_and_says_where(tmp_path, taken_port):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "lenet_np.explore", "--port", str(free), "--no-browser"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(2)]
        assert "weights: freshly initialised (seed 0)" in lines[0]
        assert f"open http://127.0.0.1:{free}/ in a browser" in lines[1]
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{free}/api/info", timeout=30) as res:
            assert json.load(res)["untrained"] is True
        r = run_command("--port", str(free), "--no-browser", cwd=tmp_path)
        assert r.returncode == 1 and r.stderr.strip() == (
            f"error: port {free} on 127.0.0.1 is taken by another program; pass another --port, or leave --port "
            "out and the explorer picks a free one")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# -- choosing the network -----------------------------------------------------------------------------
def test_which_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(command, "load_test_set", lambda data_dir: (None, "no data in this test"))
    parse = command.build_parser().parse_args
    fresh = command.load_explorer(parse([]))
    assert fresh.untrained and fresh.net.activation == "sigmoid"
    net = ln.LeNet(activation="relu", seed=3)
    checkpoint.save(tmp_path / "runs" / "lenet.npz", net, None, {"epoch": 2, "settings": {"activation": "relu"}})
    found = command.load_explorer(parse([]))
    assert not found.untrained and found.net.activation == "relu" and "runs/lenet.npz (epoch 2)" in found.weights
    np.testing.assert_array_equal(found.state["fc.4.weight"], net.state_dict()["fc.4.weight"])
    asked = command.load_explorer(parse(["--variant", "d2l"]))           # a fresh network was asked for
    assert asked.untrained and asked.net.variant == "d2l"
    with pytest.raises(command.ToolError, match="--seed 1 seeds an untrained network"):
        command.load_explorer(parse(["--checkpoint", "runs/lenet.npz", "--seed", "1"]))
    (tmp_path / "runs" / "lenet.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(checkpoint.CheckpointError, match="runs/lenet.npz"):
        command.load_explorer(parse([]))
    note = " ".join(command.load_explorer(parse(["--seed", "0"])).info()["notes"])
    assert "only drawing works" in note and "make data" in note


def test_package_data_ships_every_static_file():
    import configparser
    import fnmatch
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    patterns = cfg["options.package_data"]["lenet_np.explore"].replace(",", " ").split()
    static = ROOT / "lenet_np" / "explore" / "static"
    files = [p.relative_to(static.parent).as_posix() for p in static.iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pat) for pat in patterns) for f in files), (files, patterns)
