"""The backprop explorer: ``python -m lenet_np.explore [--checkpoint runs/lenet.npz] [--port N] [--no-browser]``.

A local page to pick an image (a test image, a mistake, or a drawing), see every layer's
output and gradient side by side, take one SGD step on it and see what changed. Python
computes every number (``lenet_np.backprop.backprop``); the browser only draws.

    state.py     Explorer: the network, the test set, one copy of the network per page
    views.py     one backprop pass as the page's JSON (float32 arrays in base64)
    server.py    the HTTP server (the standard library's ThreadingHTTPServer on 127.0.0.1)
    command.py   the command line
    static/      the page: plain HTML, CSS and JavaScript, shipped with the package

docs/explorer.md says what to try with it.
"""

from .server import DEFAULT_PORT, ExplorerServer, ServeError, open_server
from .state import Explorer, RequestError

__all__ = ["DEFAULT_PORT", "Explorer", "ExplorerServer", "RequestError", "ServeError", "open_server"]
