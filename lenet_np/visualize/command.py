"""The command line: ``python -m lenet_np.visualize --checkpoint PATH --out DIR ...``: load the
network, the metrics and the test images, check them before any picture, then draw every
picture of ``registry.PICTURES``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from .. import cli
from ..checkpoint import CheckpointError, load_network
from ..metrics import MetricsError, epoch_rows, read_epochs, read_steps, steps_path
from ..trace import CLASS_NAMES, ToolError, describe_weights, load_test_set
from .arrays import describe
from .plotting import pyplot
from .registry import Scene, draw

MAX_MISTAKES = 100
MAX_STEPS_FILES = 4
DEFAULT_CLASSES = ("Pullover", "Coat")


def _class_key(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def class_name(text: str) -> int:
    """A ``type=`` for a Fashion-MNIST class name, in any case (spaces, hyphens and the slash
    may be left out: "ankle-boot", "tshirttop"); returns its index."""
    key = _class_key(text)
    for k, name in enumerate(CLASS_NAMES):
        if key and key == _class_key(name):
            return k
    raise argparse.ArgumentTypeError(f"expected a class name, one of {', '.join(CLASS_NAMES)} (any case), "
                                     f"got {text!r}")


class_name.__name__ = "class name"


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m lenet_np.visualize",
                   description="Draw a trained LeNet, forward and backward: filters (and how training changed "
                               "them), feature maps and every layer's gradient for one image, activations of two "
                               "classes, saliency (dL/dimage), the most confident mistakes, gradient norms over "
                               "training, training curves (PNG files).")
    p.add_argument("--checkpoint", type=cli.existing_file, required=True,
                   help="a .npz checkpoint written by python -m lenet_np.train")
    p.add_argument("--out", type=cli.output_dir, required=True,
                   help="directory for the PNG files (created if needed)")
    p.add_argument("--metrics", type=cli.existing_file, default=None,
                   help="per-epoch metrics (.csv or .json) for curves.png; default: the checkpoint's history")
    p.add_argument("--steps", type=cli.existing_file, nargs="+", default=None, metavar="FILE",
                   help=f"per-step metrics files (1 to {MAX_STEPS_FILES}) for gradient_norms.png, one panel each "
                        "(e.g. a sigmoid run and a ReLU run), and for the per-step loss in curves.png (the first "
                        "file); default: the .steps file beside --metrics, when there is one")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None,
                   help="directory of the Fashion-MNIST files (default: search; random images when none is found)")
    p.add_argument("--image", type=cli.non_negative_int, default=0,
                   help="index of the test image for feature_maps.png and gradient_maps.png (default 0)")
    p.add_argument("--classes", type=class_name, nargs=2, default=None, metavar="NAME",
                   help=f"two different classes for activations_compare.png, by name in any case "
                        f"(default {' '.join(DEFAULT_CLASSES)})")
    p.add_argument("--max-mistakes", type=cli.int_in_range(1, MAX_MISTAKES), default=25,
                   help=f"images in mistakes.png, 1 to {MAX_MISTAKES} (default 25)")
    return p


def parse_args(argv=None):
    """The parsed command line; what argparse cannot check alone ends it the same way (exit 2)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps is not None and len(args.steps) > MAX_STEPS_FILES:
        parser.error(f"argument --steps: expected 1 to {MAX_STEPS_FILES} files, got {len(args.steps)}")
    if args.classes is None:
        args.classes = [CLASS_NAMES.index(c) for c in DEFAULT_CLASSES]
    elif args.classes[0] == args.classes[1]:
        parser.error(f"argument --classes: expected two different classes, got {CLASS_NAMES[args.classes[0]]} twice")
    return args


def steps_files(steps, metrics) -> list[Path]:
    """The per-step files to draw: those given (--steps), else the .steps file beside the
    per-epoch metrics when there is one, else none."""
    if steps:
        return [Path(f) for f in steps]
    if metrics and steps_path(metrics).is_file():
        return [steps_path(metrics)]
    return []


def _note(text: str) -> None:
    print(f"note: {text}", file=sys.stderr)


def run(args) -> list[Path]:
    """Load and check everything the pictures need, then draw them into --out; the paths written."""
    pyplot()                                                     # fail early without matplotlib
    net, meta = load_network(args.checkpoint)
    settings, where = meta.get("settings", {}), describe_weights(args.checkpoint, meta)
    history = read_epochs(args.metrics) if args.metrics else None
    runs = [(Path(f), read_steps(f)) for f in steps_files(args.steps, args.metrics)]
    test, why = load_test_set(args.data_dir)
    if test is not None:
        (images, labels), source = test, "Fashion-MNIST test set"
    else:
        rng = np.random.default_rng(0)
        images = rng.random((200, 1, 28, 28), dtype=np.float32)
        labels = rng.integers(0, 10, len(images))
        source = "RANDOM images and labels, no data found"
        _note(f"{why}; drawing random images instead")
    if not 0 <= args.image < len(images):
        raise ToolError(f"--image must lie in 0..{len(images) - 1} ({source}), got {args.image}")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolError(f"--out {out}: cannot create the directory ({exc.strerror})") from None
    if history is None:                                          # the history train.py stores in the meta
        hist_source = f"history in {args.checkpoint}"
        try:
            history = epoch_rows(meta.get("history", []))
        except ValueError:                                       # a foreign history: no curves
            history = None
    else:
        hist_source = str(args.metrics)
    scene = Scene(net=net, settings=settings, images=images, labels=labels, source=source, image=args.image,
                  classes=args.classes, max_mistakes=args.max_mistakes, runs=runs, history=history,
                  history_source=hist_source)
    written = draw(scene, out, _note)
    print(f"{describe(net)}, weights: {where}")
    return written


def _run(args) -> int:
    try:
        written = run(args)
    except (ToolError, CheckpointError, MetricsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    return cli.guard(_run, parse_args(argv))

