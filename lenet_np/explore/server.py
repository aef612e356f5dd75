"""The explorer's HTTP server: the standard library's ``ThreadingHTTPServer`` on 127.0.0.1.

Why the standard library: it adds no dependency, and one local user with one page open
needs no more (each request is a few milliseconds of NumPy; a thread per connection keeps
a slow request from blocking the page's next one). ``http.server`` parses every request;
this module only routes it.

Routes (every answer of /api is JSON; every refusal is a 4xx with ``{"error": "<one line>"}``):

    GET  /                  the page (static/index.html)
    GET  /static/NAME       the page's CSS, JavaScript and icon (only the files shipped there)
    GET  /api/info          the network, its layers, the data, notes for the page
    GET  /api/mistakes      the checkpoint's most confident mistakes on the test set
    POST /api/session       a new copy of the network for one page: {"session": id}
    POST /api/show          {"session", "input"?, "target"?} -> {"view"}
    POST /api/step          {"session", "lr"} -> {"view", "change"}
    POST /api/undo          {"session"} -> {"view"}
    POST /api/reset         {"session"} -> {"view"}

Safety for a server on the user's own machine: it listens on 127.0.0.1 only; it answers
only requests whose Host header is 127.0.0.1:PORT or localhost:PORT (a page of another site
whose name was re-pointed at 127.0.0.1, "DNS rebinding", sends its own name); a POST needs
a JSON Content-Type (a cross-site form cannot send one) and a same-origin Origin when there
is one; bodies are at most MAX_BODY bytes; static files are served from a fixed list of
names, so no path reaches outside. An unexpected error answers 500 with one line, never a
traceback, and the server keeps serving.
"""

from __future__ import annotations

import errno
import json
import socketserver
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import unquote, urlsplit

from threadpoolctl import threadpool_limits

from .state import RequestError

HOST = "127.0.0.1"
DEFAULT_PORT = 8765
BLAS_THREADS = 1
MAX_BODY = 64 * 1024              # a drawing is about 5 kB of JSON
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
                ".js": "text/javascript; charset=utf-8", ".svg": "image/svg+xml"}
# Everything the page loads comes from this server: no CDN, no inline script.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
GET_ROUTES = {"/api/info": "info", "/api/mistakes": "mistakes"}
POST_ROUTES = {"/api/session": "new_session", "/api/show": "show", "/api/step": "step", "/api/undo": "undo",
               "/api/reset": "reset"}


class ServeError(RuntimeError):
    """The server cannot start (a taken port): one line for the command line."""


def static_files() -> dict[str, bytes]:
    """The page's files, by name, read once from the package data (lenet_np/explore/static)."""
    root = resources.files(__package__) / "static"
    return {f.name: f.read_bytes() for f in root.iterdir()
            if f.is_file() and "." + f.name.rsplit(".", 1)[-1] in STATIC_TYPES}


def shown(text, limit: int = 60) -> str:
    """repr of ``text``, cut to ``limit`` characters (what a message quotes of a request)."""
    r = repr(text)
    return r if len(r) <= limit else r[:limit - 3] + "..."


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"          # keep-alive: the page's requests share one connection
    server_version = "lenet_np-explore"
    sys_version = ""
    timeout = 120                          # an idle connection is closed after two minutes

    # -- answering --
    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj, extra: dict | None = None) -> None:
        try:
            body = json.dumps(obj, allow_nan=False, separators=(",", ":")).encode()
        except ValueError as exc:            # a NaN the views did not catch: say so, do not send broken JSON
            status, body = 500, json.dumps({"error": f"internal error: the answer held a non-finite number ({exc})"
                                            }).encode()
        self._send(status, body, "application/json", extra)

    def send_error(self, code, message=None, explain=None):
        """http.server's own refusals (a malformed request line, an unsupported method) as one JSON line,
        with a status line even where the request line was too broken to name its HTTP version."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":          # no client speaks it: answer as HTTP/1.0 does
            self.request_version = "HTTP/1.0"
        self._json(code, {"error": message or HTTPStatus(code).phrase})

    def log_message(self, format, *args):   # quiet: the terminal is the learner's, not an access log
        pass

    # -- the checks every request passes --
    def _check_host(self) -> None:
        hosts = self.headers.get_all("Host") or []
        url = self.server.url
        if len(hosts) != 1:
            raise RequestError(f"the request needs one Host header, got {len(hosts)}; open {url}", 400)
        if hosts[0].strip().lower() not in self.server.hosts:
            raise RequestError(f"Host {shown(hosts[0])} refused: the explorer answers only requests for "
                               f"{HOST}:{self.server.server_port} (a guard against DNS rebinding); open {url}", 403)
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() not in self.server.origins:
            raise RequestError(f"a request from the page of another site ({shown(origin)}) is refused; "
                               f"open {url}", 403)

    def _body(self) -> dict:
        """The request's JSON object (Content-Length bytes; at most MAX_BODY)."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            raise RequestError("send the body with a Content-Length header (chunked bodies are not read)", 411)
        length = self.headers.get("Content-Length")
        if length is None:
            raise RequestError("the request needs a Content-Length header and a JSON body", 411)
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(f"Content-Length must be a whole number >= 0, got {shown(length)}", 400) from None
        if n > MAX_BODY:
            self.close_connection = True       # the body is not read: the connection cannot be reused
            raise RequestError(f"the body has {n} bytes, more than the {MAX_BODY} the explorer reads; "
                               "send a smaller request (a drawing is about 5 kB)", 413)
        raw = self.rfile.read(n)
        if self.headers.get_content_type() != "application/json":
            raise RequestError("send the body as JSON, with the header Content-Type: application/json", 415)
        try:
            body = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise RequestError("the body is not UTF-8 text; send a JSON object", 400) from None
        except json.JSONDecodeError as exc:
            raise RequestError(f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                               "send a JSON object", 400) from None
        except (ValueError, RecursionError) as exc:
            raise RequestError(f"the body is not JSON the explorer can read ({str(exc)[:80]}); "
                               "send a flat JSON object", 400) from None
        if not isinstance(body, dict):
            raise RequestError(f"the body must be a JSON object, such as {{\"session\": \"...\"}}, "
                               f"got a JSON {type(body).__name__}", 400)
        return body

    # -- routing --
    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def _handle(self, method: str) -> None:
        unread = method == "POST"              # a refusal before the body is read ends the connection
        try:
            self._check_host()
            path = urlsplit(self.path).path
            if method == "POST":
                name = POST_ROUTES.get(path)
                if name is None:
                    self._not_found(path, method)
                body = self._body()
                unread = False
                self._json(200, getattr(self.server.explorer, name)(*([body] if name != "new_session" else [])))
                return
            if path in GET_ROUTES:
                self._json(200, getattr(self.server.explorer, GET_ROUTES[path])())
            elif path in ("/", "/index.html"):
                self._static("index.html")
            elif path.startswith("/static/"):
                self._static(unquote(path[len("/static/"):]))
            else:
                self._not_found(path, method)
        except RequestError as exc:
            if unread:
                self.close_connection = True
            self._json(exc.status, {"error": str(exc)}, getattr(exc, "headers", None))
        except Exception as exc:               # never a traceback to the page; the server keeps serving
            print(f"lenet_np explorer: internal error on {method} {self.path[:80]}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            self.close_connection = True
            self._json(500, {"error": f"internal error ({type(exc).__name__}: {str(exc)[:120]}); "
                                      "the explorer keeps serving"})

    def _not_found(self, path: str, method: str):
        other = GET_ROUTES if method == "POST" else POST_ROUTES
        if path in other:
            exc = RequestError(f"{path} takes {'GET' if method == 'POST' else 'POST'}, not {method}", 405)
            exc.headers = {"Allow": "GET" if method == "POST" else "POST"}
            raise exc
        raise RequestError(f"no such address {shown(path)}: the explorer serves the page at / and its API "
                           "under /api/", 404)

    def _static(self, name: str) -> None:
        data = self.server.static.get(name)
        if data is None:
            raise RequestError(f"no static file {shown(name)}: the page's files are "
                               f"{', '.join(sorted(self.server.static))}", 404)
        ctype = STATIC_TYPES["." + name.rsplit(".", 1)[-1]]
        self._send(200, data, ctype, {"Content-Security-Policy": CSP} if name.endswith(".html") else None)


class ExplorerServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1:``port`` (0: any free port) answering for ``explorer``."""

    daemon_threads = True

    def __init__(self, explorer, port: int):
        self.explorer = explorer
        self.static = static_files()
        super().__init__((HOST, port), Handler)

    def server_bind(self):
        socketserver.TCPServer.server_bind(self)       # not HTTPServer's, which looks the host up in DNS
        self.server_name, self.server_port = HOST, self.server_address[1]
        self.hosts = {f"{HOST}:{self.server_port}", f"localhost:{self.server_port}"}
        self.origins = {f"http://{h}" for h in self.hosts}

    def serve_forever(self, poll_interval: float = 0.5):
        """Serve until ``shutdown()``, with BLAS on one thread: one image through LeNet is too small
        to share, and a second BLAS thread waiting for a busy core made a round trip 5 times slower."""
        with threadpool_limits(BLAS_THREADS, user_api="blas"):
            super().serve_forever(poll_interval)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_port}/"

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):     # a closed tab is no news
            print(f"lenet_np explorer: connection error: {type(exc).__name__}: {exc}", file=sys.stderr)


def open_server(explorer, port: int | None = None, default_port: int = DEFAULT_PORT):
    """(server, note): listen on ``port``, or on ``default_port`` when it is None, or, when
    that is taken, on a free port (``note`` then says so). A taken explicit ``port`` raises
    ServeError."""
    if port is not None:
        try:
            return ExplorerServer(explorer, port), None
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ServeError(f"port {port} on {HOST} is taken by another program; pass another --port, or leave "
                                 "--port out and the explorer picks a free one") from None
            raise ServeError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}; pass another --port") from None
    try:
        return ExplorerServer(explorer, default_port), None
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
            raise
    server = ExplorerServer(explorer, 0)
    return server, f"port {default_port} is taken, so the explorer listens on port {server.server_port} instead"
