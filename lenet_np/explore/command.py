"""``python -m lenet_np.explore``: start the explorer's server and open its page.

The weights: ``--checkpoint``, else ``runs/lenet.npz`` when it is there (and no option of a
fresh network is given), else a fresh, untrained LeNet (``--variant``, ``--activation``,
``--pool``, ``--seed``), which the page says. The images: the Fashion-MNIST test set where
``lenet_np.data`` finds it; without it, drawing still works and the page says how to get
the data. The server listens on 127.0.0.1, on ``--port`` (an error when it is taken) or on
port 8765, or on a free port when 8765 is taken; it prints the address.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import webbrowser
from pathlib import Path

from .. import cli
from ..checkpoint import CheckpointError
from ..model import ACTIVATIONS, POOLS, VARIANT_ALIASES, VARIANTS
from ..trace import ToolError, build_network, load_test_set
from .server import DEFAULT_PORT, ServeError, open_server
from .state import Explorer

PROG = "python -m lenet_np.explore"
DEFAULT_CHECKPOINT = Path("runs/lenet.npz")
FRESH_OPTIONS = ("variant", "activation", "pool", "seed")


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog=PROG, description="The backprop explorer: a local page that shows one image's pass through "
                   "LeNet, every layer's output and gradient, and what one SGD step changes.")
    p.add_argument("--checkpoint", type=cli.existing_file, default=None,
                   help=f"a .npz checkpoint of lenet_np.train (default: {DEFAULT_CHECKPOINT} when it is there, else "
                   "an untrained network)")
    p.add_argument("--port", type=cli.int_in_range(1, 65535), default=None,
                   help=f"the port on 127.0.0.1, 1 to 65535; an error when taken (default {DEFAULT_PORT}, or a free "
                   "port when that is taken)")
    p.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None,
                   help="directory of the Fashion-MNIST files (default: search; without them only drawing works)")
    p.add_argument("--variant", choices=(*VARIANTS, *VARIANT_ALIASES), default=None,
                   help="classic (default), d2l or batchnorm, for an untrained network; taken from the checkpoint "
                   "when one is given")
    p.add_argument("--activation", choices=sorted(ACTIVATIONS), default=None,
                   help="sigmoid (default) or relu, for an untrained network; taken from the checkpoint when one "
                   "is given")
    p.add_argument("--pool", choices=sorted(POOLS), default=None,
                   help="max or avg, for an untrained network; taken from the checkpoint when one is given")
    p.add_argument("--seed", type=cli.non_negative_int, default=None,
                   help="seeds an untrained network's weights, >= 0 (default 0)")
    return p


def load_explorer(args) -> Explorer:
    """The Explorer the arguments ask for (ToolError or CheckpointError, one line, otherwise)."""
    path = args.checkpoint
    fresh = any(getattr(args, k) is not None for k in FRESH_OPTIONS)
    if path is None and not fresh and DEFAULT_CHECKPOINT.is_file():
        path = DEFAULT_CHECKPOINT
    if path is not None and args.seed is not None:
        raise ToolError(f"--seed {args.seed} seeds an untrained network, but the weights come from {path}; "
                        "drop --seed or --checkpoint")
    net, weights = build_network(path, args.activation, args.pool, args.seed or 0, args.variant)
    test, why = load_test_set(args.data_dir)
    return Explorer(net, weights, test_set=test, data_note=None if test is not None else why, untrained=path is None)


def open_browser(url: str) -> None:
    """Open ``url`` in the user's browser, in the background; on Linux only where there is a
    display (without one, Python's webbrowser would start a text browser in this terminal)."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("no graphical display here: open the address above in a browser", flush=True)
        return
    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


def run(args) -> int:
    try:
        server, note = open_server(None, args.port)          # a taken port is said before the data is read
    except ServeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with server:
        try:
            explorer = server.explorer = load_explorer(args)
        except (ToolError, CheckpointError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"lenet_np explorer: {explorer.describe()}, weights: {explorer.weights}")
        if note:
            print(note)
        print(f"open {server.url} in a browser (Ctrl-C stops the explorer)", flush=True)
        if not args.no_browser:
            open_browser(server.url)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            print("\nstopped")
    return 0


def main(argv=None) -> int:
    return cli.guard(run, build_parser().parse_args(argv))
