"""lenet_np against PyTorch, epoch by epoch, on the same training run:
``python -m benchmarks.reproduce`` (the book's LeNet and recipe: Adam, lr 0.001, batch 256,
5 epochs, sigmoid, max pooling), ``--variant d2l`` or ``--variant batchnorm`` (the book's
other LeNets and their recipe: SGD, lr 0.1, batch 128, 10 epochs, average pooling).

Settings default to those of ``python -m lenet_np.train --variant V`` (``train.defaults_for``)
and the same flags override them, for both sides: ``--activation``, ``--pool``,
``--optimizer``, ``--lr``, ``--momentum``, ``--epochs``, ``--batch-size``, ``--seed``.

Both sides start from the same weights (``lenet_np.LeNet(variant=..., activation=..., pool=...,
seed=SEED).state_dict()`` loaded into the book's PyTorch model) and see the same batches in
the same order (those of ``python -m lenet_np.train --seed SEED``: ``lenet_np.data.iterate_batches``
with the generator ``numpy.random.default_rng([SEED, 1])``, one permutation per epoch).
lenet_np runs as the training command does (``lenet_np.train.main``, its metrics file read
back); torch runs the same loop in float32 on the CPU with ``torch.optim.Adam`` or ``SGD``.

The PyTorch models are the book's (``benchmarks/torch_models.py: book_model``): for ``classic``
the older edition's class with keys ``conv.N`` and ``fc.N``, for ``d2l`` and ``batchnorm`` one
``nn.Sequential`` named ``net`` (the layer lists of today's d2l.ai); another activation or
pooling replaces each of their activations and 2x2 poolings.

Prints a Markdown table (loss, train acc and test acc of both, per epoch) and the median
training time per epoch of each; ``--out`` writes both histories as JSON.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lenet_np as ln
from lenet_np import cli, train
from lenet_np.data import DataError, iterate_batches, load_fashion_mnist
from lenet_np.model import VARIANT_ALIASES, VARIANTS, resolve_variant

SETTINGS = ("epochs", "batch_size", "lr", "optimizer", "momentum", "seed", "activation", "pool")


def run_torch(args, data, threads):
    """Train the book's PyTorch model as ``python -m lenet_np.train`` trains lenet_np; the history."""
    import torch
    import torch.nn.functional as F

    from benchmarks.torch_models import book_model
    torch.set_num_threads(threads)
    model = book_model(resolve_variant(args.variant)[0], args.activation, args.pool)
    start_weights = ln.LeNet(activation=args.activation, pool=args.pool, seed=args.seed,
                             variant=args.variant).state_dict()          # as train builds it
    model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in start_weights.items()})
    if args.optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    rng = np.random.default_rng([args.seed, 1])                # the generator train shuffles with
    history = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        for x, y in iterate_batches(data.train_images, data.train_labels, args.batch_size, shuffle=True, rng=rng):
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            opt.zero_grad()
            logits = model(tx)
            loss = F.cross_entropy(logits, ty)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == ty).sum())
            seen += len(y)
        elapsed = time.perf_counter() - start
        model.eval()
        test_correct = 0
        with torch.no_grad():
            for x, y in iterate_batches(data.test_images, data.test_labels, 1000):
                test_correct += int((model(torch.from_numpy(x)).argmax(1) == torch.from_numpy(y)).sum())
        history.append({"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
                        "test_acc": test_correct / len(data.test_labels), "time_sec": elapsed})
        print(f"torch epoch {epoch}, loss {loss_sum / seen:.4f}, train acc {correct / seen:.3f}, "
              f"test acc {history[-1]['test_acc']:.3f}, time {elapsed:.1f} sec", file=sys.stderr, flush=True)
    return history


def run_lenet_np(args):
    """``python -m lenet_np.train`` with the same settings on the CPU; its per-epoch metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.json"
        argv = ["--variant", args.variant, "--device", "cpu", "--metrics", str(metrics), "--quiet"]
        for key in SETTINGS:
            argv += ["--" + key.replace("_", "-"), str(getattr(args, key))]
        if args.data_dir:
            argv += ["--data-dir", str(args.data_dir)]
        if train.main(argv) != 0:
            raise RuntimeError(f"python -m lenet_np.train {' '.join(argv)} failed (see above)")
        return json.loads(metrics.read_text())


def table(ours, theirs) -> str:
    lines = ["| epoch | loss, lenet_np | loss, PyTorch | train acc, lenet_np | train acc, PyTorch "
             "| test acc, lenet_np | test acc, PyTorch |",
             "|------:|------:|------:|------:|------:|------:|------:|"]
    for a, b in zip(ours, theirs):
        lines.append(f"| {a['epoch']} | {a['loss']:.4f} | {b['loss']:.4f} | {a['train_acc']:.4f} | "
                     f"{b['train_acc']:.4f} | {a['test_acc']:.4f} | {b['test_acc']:.4f} |")
    return "\n".join(lines)


def build_parser():
    d, b = train.DEFAULTS, train.BOOK_RECIPE
    p = cli.Parser(prog="python -m benchmarks.reproduce",
                   description="Train one of the book's LeNets with lenet_np (python -m lenet_np.train) and with the "
                               "book's PyTorch model from the same weights on the same batches; print both epoch by "
                               "epoch. Settings default to train's for the variant; the flags override them for both.")
    p.add_argument("--variant", choices=(*VARIANTS, *VARIANT_ALIASES), default="classic",
                   help="classic (the default; seed is its earlier name), d2l or batchnorm, as "
                        "python -m lenet_np.train --variant")
    p.add_argument("--epochs", type=cli.positive_int,
                   help=f"epochs (default {d['epochs']}; d2l, batchnorm: {b['epochs']})")
    p.add_argument("--batch-size", type=cli.positive_int,
                   help=f"mini-batch size (default {d['batch_size']}; d2l, batchnorm: {b['batch_size']})")
    p.add_argument("--lr", type=cli.positive_float,
                   help=f"learning rate (default {d['lr']}; d2l, batchnorm: {b['lr']})")
    p.add_argument("--optimizer", choices=("adam", "sgd"),
                   help=f"adam or sgd (default {d['optimizer']}; d2l, batchnorm: {b['optimizer']})")
    p.add_argument("--momentum", type=cli.non_negative_float, help=f"SGD momentum (default {d['momentum']})")
    p.add_argument("--activation", choices=("sigmoid", "relu"), help=f"sigmoid or relu (default {d['activation']})")
    p.add_argument("--pool", choices=("max", "avg"),
                   help=f"max or avg pooling (default {d['pool']}; d2l, batchnorm: {b['pool']})")
    p.add_argument("--seed", type=cli.non_negative_int, help="initialisation and shuffling (default 0)")
    p.add_argument("--threads", type=cli.positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None, help="the Fashion-MNIST files (default: search)")
    p.add_argument("--out", type=cli.output_file(".json"), default=None, help="write both histories here (.json)")
    return p


def parse_args(argv=None):
    """The command line with every unset setting filled in from ``train.defaults_for(variant)``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, default in train.defaults_for(args.variant).items():
        if key in SETTINGS and getattr(args, key) is None:
            setattr(args, key, default)
    try:
        resolve_variant(args.variant, args.activation, args.pool)
    except ValueError as exc:
        parser.error(f"{exc}: pick another --activation or --pool")
    return args


def run(args) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        print("error: this comparison needs torch (pip install -e '.[test]')", file=sys.stderr)
        return 1
    try:
        data = load_fashion_mnist(args.data_dir)
        ours = run_lenet_np(args)
    except (DataError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    theirs = run_torch(args, data, args.threads)
    print(table(ours, theirs))
    print(f"\nmedian training time per epoch: lenet_np {statistics.median(h['time_sec'] for h in ours):.1f} s, "
          f"PyTorch {statistics.median(h['time_sec'] for h in theirs):.1f} s")
    if args.out:
        settings = {"variant": args.variant, **{key: getattr(args, key) for key in SETTINGS}}
        Path(args.out).write_text(json.dumps({"settings": settings, "lenet_np": ours, "torch": theirs}, indent=2))
    return 0


def main(argv=None) -> int:
    return cli.guard(run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
