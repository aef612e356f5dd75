"""The book's other LeNets, lenet_np against PyTorch, epoch by epoch:
``python -m benchmarks.reproduce_variants --variant d2l``.

Both start from the same weights (``lenet_np.LeNet(variant=..., seed=SEED).state_dict()``
loaded into the book's torch model) and see the same batches in the same order (those of
``python -m lenet_np.train --seed SEED``: ``lenet_np.data.iterate_batches`` with the
generator ``numpy.random.default_rng([SEED, 1])``, one permutation per epoch), with the same
recipe (the book's: SGD, lr 0.1, batch 128, 10 epochs). lenet_np runs as the training command
does (``lenet_np.train.main``, its metrics file read back); torch runs the same loop in
float32 on the CPU. Prints a Markdown table: loss, train acc and test acc of both, per epoch,
and writes the numbers to ``--out`` (JSON) when given.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import lenet_np as ln
from lenet_np import cli, train
from lenet_np.data import iterate_batches, load_fashion_mnist


def book_model(variant, activation="sigmoid", pool="avg"):
    """The book's torch model: one nn.Sequential named ``net`` (the layer lists of d2l.ai)."""
    from torch import nn
    act = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU}[activation]
    pool_cls = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}[pool]
    if variant == "d2l":
        layers = [nn.Conv2d(1, 6, kernel_size=5, padding=2), act(), pool_cls(kernel_size=2, stride=2),
                  nn.Conv2d(6, 16, kernel_size=5), act(), pool_cls(kernel_size=2, stride=2), nn.Flatten(),
                  nn.Linear(16 * 5 * 5, 120), act(), nn.Linear(120, 84), act(), nn.Linear(84, 10)]
    else:
        layers = [nn.Conv2d(1, 6, kernel_size=5), nn.BatchNorm2d(6), act(), pool_cls(kernel_size=2, stride=2),
                  nn.Conv2d(6, 16, kernel_size=5), nn.BatchNorm2d(16), act(), pool_cls(kernel_size=2, stride=2),
                  nn.Flatten(), nn.Linear(256, 120), nn.BatchNorm1d(120), act(),
                  nn.Linear(120, 84), nn.BatchNorm1d(84), act(), nn.Linear(84, 10)]

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(*layers)

        def forward(self, x):
            return self.net(x)

    return LeNet()


def run_torch(variant, data, seed, epochs, batch_size, lr, threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    model = book_model(variant)
    model.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in
                           ln.LeNet(variant=variant, seed=seed).state_dict().items()})
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rng = np.random.default_rng([seed, 1])                     # the generator train uses
    test_x = torch.tensor(data.test_images.reshape(-1, 1, 28, 28).astype(np.float32) / 255)
    test_y = torch.tensor(data.test_labels.astype(np.int64))
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        start = time.perf_counter()
        for x, y in iterate_batches(data.train_images, data.train_labels, batch_size, shuffle=True, rng=rng):
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
        with torch.no_grad():
            pred = torch.cat([model(test_x[i:i + 1000]).argmax(1) for i in range(0, len(test_x), 1000)])
        history.append({"epoch": epoch, "loss": loss_sum / seen, "train_acc": correct / seen,
                        "test_acc": int((pred == test_y).sum()) / len(test_y), "time_sec": elapsed})
        print(f"torch epoch {epoch}, loss {loss_sum / seen:.4f}, train acc {correct / seen:.3f}, "
              f"test acc {history[-1]['test_acc']:.3f}, time {elapsed:.1f} sec", file=sys.stderr, flush=True)
    return history


def run_lenet_np(variant, data_dir, seed, epochs, batch_size, lr):
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.json"
        argv = ["--variant", variant, "--seed", str(seed), "--epochs", str(epochs), "--batch-size", str(batch_size),
                "--lr", str(lr), "--device", "cpu", "--metrics", str(metrics), "--quiet"]
        if data_dir:
            argv += ["--data-dir", str(data_dir)]
        if train.main(argv) != 0:
            raise SystemExit("lenet_np.train failed")
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
    r = train.BOOK_RECIPE
    p = cli.Parser(prog="python -m benchmarks.reproduce_variants",
                   description="Train the book's d2l or batchnorm LeNet with lenet_np and with PyTorch from the same "
                               "weights on the same batches; print both epoch by epoch.")
    p.add_argument("--variant", choices=("d2l", "batchnorm"), required=True, help="d2l or batchnorm")
    p.add_argument("--epochs", type=cli.positive_int, default=r["epochs"], help=f"epochs (default {r['epochs']})")
    p.add_argument("--batch-size", type=cli.positive_int, default=r["batch_size"],
                   help=f"mini-batch size (default {r['batch_size']})")
    p.add_argument("--lr", type=cli.positive_float, default=r["lr"], help=f"SGD learning rate (default {r['lr']})")
    p.add_argument("--seed", type=cli.non_negative_int, default=0, help="initialisation and shuffling (default 0)")
    p.add_argument("--threads", type=cli.positive_int, default=2, help="torch threads (default 2)")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None, help="the Fashion-MNIST files (default: search)")
    p.add_argument("--out", type=cli.output_file(".json"), default=None, help="write both histories here")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    data = load_fashion_mnist(args.data_dir)
    ours = run_lenet_np(args.variant, args.data_dir, args.seed, args.epochs, args.batch_size, args.lr)
    theirs = run_torch(args.variant, data, args.seed, args.epochs, args.batch_size, args.lr, args.threads)
    print(table(ours, theirs))
    if args.out:
        Path(args.out).write_text(json.dumps({"variant": args.variant, "argv": sys.argv[1:] if argv is None else argv,
                                              "lenet_np": ours, "torch": theirs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
