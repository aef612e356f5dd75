"""Train the book's LeNet on Fashion-MNIST: ``python -m lenet_np.train``.

The defaults reproduce Dive into Deep Learning: Adam, lr 0.001, batch 256, 5 epochs,
sigmoid activations, max pooling. ``--variant d2l`` or ``--variant batchnorm`` trains the
book's other LeNets with the book's recipe for them (SGD, lr 0.1, batch 128, 10 epochs,
average pooling); flags given on the command line override any default. One line per
epoch in the book's format:

    epoch 1, loss 1.8135, train acc 0.328, test acc 0.586, time 4.1 sec

(loss and train acc are the true means over the epoch's examples; time is the
training time of the epoch). After each epoch a checkpoint is written atomically
(``--checkpoint``); it records the settings (the variant included), so ``--resume``,
evaluate, trace and visualize rebuild the same network. ``--resume`` continues a run bit
for bit on the CPU, and Ctrl-C saves the state reached so far (mid-epoch included) and
says how to resume.

Per-step metrics: with ``--metrics runs/m.csv``, ``runs/m.steps.csv`` (CSV or JSON as the
per-epoch file; ``lenet_np.metrics`` writes and reads both) gets one row every
``--log-every`` steps and at the last step of each epoch: the epoch, the global step
(1-based, counted across epochs and resumes), the mean loss per example of the steps since
the previous row, and the L2 norm of every parameter's gradient at that step (after
backward, before the optimizer's step), one ``grad_norm:<name>`` column per parameter in
``named_parameters()`` order. The norms are reduced on the device and read back in one
transfer with the loss, at the loop's periodic reads. The rows live in the checkpoint, so a
resumed run keeps those of the steps before it.
"""

from __future__ import annotations

import argparse
import io
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np

from . import backend, checkpoint, cli
from .data import DataError, iterate_batches, load_fashion_mnist, num_batches
from .evaluate import accuracy
from .metrics import EPOCH_FIELDS, STEP_FIELDS, step_fields, steps_path, write_rows
from .model import VARIANT_ALIASES, VARIANTS, LeNet, resolve_variant
from .nn import CrossEntropyLoss
from .optim import SGD, Adam
from .parallel import DataParallel, default_workers, uses_batch_statistics

SETTINGS = ("variant", "epochs", "batch_size", "lr", "optimizer", "momentum", "seed", "activation", "pool",
            "workers", "log_every")
FIXED = ("variant", "activation", "pool", "optimizer")      # cannot change when resuming
NEUTRAL = ("epochs", "log_every")        # changing these on resume does not change the trajectory
MAX_WORKERS = 256


DESCRIPTION = ("Train the book's LeNet on Fashion-MNIST (Adam, lr 0.001, batch 256, 5 epochs, sigmoid, max "
               "pooling by default; --variant d2l or batchnorm: SGD, lr 0.1, batch 128, 10 epochs, average "
               "pooling, the book's recipe). One line per epoch; a checkpoint after each epoch with --checkpoint; "
               "--resume continues a run; Ctrl-C saves the state reached and says how to resume.")


class TrainingError(RuntimeError):
    """Stops the run with a message for the user (exit status 1)."""


# The variant's own recipe (epochs, batch size, lr, optimizer) and its activation and pooling
# come from the one table of variants, lenet_np.model.VARIANTS; these are the rest.
DEFAULTS = {"variant": "classic", **VARIANTS["classic"]["recipe"], "momentum": 0.0, "seed": 0,
            "activation": VARIANTS["classic"]["activation"], "pool": VARIANTS["classic"]["pool"],
            "workers": 0, "log_every": 10}
# The book's recipe for its other LeNets (d2l.ai, chapters on LeNet and on batch normalization).
BOOK_RECIPE = dict(VARIANTS["d2l"]["recipe"], pool=VARIANTS["d2l"]["pool"])


def defaults_for(variant) -> dict:
    """The default settings of a variant (an earlier name, such as "seed", taken for today's):
    DEFAULTS, with the variant's recipe, activation and pooling from lenet_np.model.VARIANTS."""
    variant = resolve_variant(variant)[0]
    spec = VARIANTS[variant]
    return dict(DEFAULTS, variant=variant, **spec["recipe"], activation=spec["activation"], pool=spec["pool"])


def build_parser() -> argparse.ArgumentParser:
    """Settings default to None here and are filled in by ``resolve_settings``: from the
    checkpoint when resuming (so ``--resume ck.npz`` alone continues the same run), else
    from DEFAULTS (the book's settings). Every value is checked here, before any work."""
    d, b = DEFAULTS, BOOK_RECIPE
    p = cli.Parser(prog="python -m lenet_np.train", description=DESCRIPTION)
    p.add_argument("--variant", choices=(*VARIANTS, *VARIANT_ALIASES),
                   help="which of the book's LeNets: classic (the default; seed is its earlier name), d2l "
                   "(today's book: padding 2, average pooling, Xavier init) or batchnorm (d2l's LeNet with batch "
                   "normalization); d2l and batchnorm default to the book's recipe for them")
    p.add_argument("--epochs", type=cli.positive_int,
                   help=f"total epochs of the run, a resumed run included (default {d['epochs']}; "
                   f"d2l, batchnorm: {b['epochs']})")
    p.add_argument("--batch-size", type=cli.positive_int,
                   help=f"mini-batch size (default {d['batch_size']}; d2l, batchnorm: {b['batch_size']})")
    p.add_argument("--lr", type=cli.positive_float,
                   help=f"learning rate, a number > 0 (default {d['lr']}; d2l, batchnorm: {b['lr']})")
    p.add_argument("--optimizer", choices=("adam", "sgd"),
                   help=f"adam or sgd (default {d['optimizer']}; d2l, batchnorm: {b['optimizer']})")
    p.add_argument("--momentum", type=cli.non_negative_float, help=f"SGD momentum, >= 0 (default {d['momentum']})")
    p.add_argument("--device", type=cli.device, default="auto",
                   help="auto, cpu or cuda; auto picks cuda when CuPy sees a GPU (default auto)")
    p.add_argument("--seed", type=cli.non_negative_int,
                   help=f"seeds the initialisation and the shuffling, >= 0 (default {d['seed']})")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None,
                   help="directory with the four Fashion-MNIST IDX files (default: search the usual places)")
    p.add_argument("--activation", choices=("sigmoid", "relu"), help=f"sigmoid or relu (default {d['activation']})")
    p.add_argument("--pool", choices=("max", "avg"),
                   help=f"max or avg pooling (default {d['pool']}; d2l, batchnorm: {b['pool']})")
    p.add_argument("--checkpoint", type=cli.output_file(".npz"), default=None,
                   help="write a .npz checkpoint here after each epoch")
    p.add_argument("--resume", type=cli.existing_file, default=None,
                   help="continue the run saved in this checkpoint")
    p.add_argument("--metrics", type=cli.output_file(".csv", ".json"), default=None,
                   help="write per-epoch metrics here (.csv or .json), and per-step metrics (loss, gradient "
                   "norm of every parameter) beside it: runs/m.csv -> runs/m.steps.csv")
    p.add_argument("--log-every", type=cli.positive_int,
                   help=f"steps between two rows of the per-step metrics, >= 1; the last step of each epoch "
                   f"always has one (default {d['log_every']})")
    p.add_argument("--plot", type=cli.output_file(".png"), default=None,
                   help="write a .png of the loss and accuracy curves here (needs matplotlib)")
    p.add_argument("--workers", type=cli.int_in_range(0, MAX_WORKERS),
                   help=f"CPU threads that share each batch, 0 to {MAX_WORKERS}; 0: one per core, at most 4 "
                   "(a run is bit for bit reproducible for a given number) (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress output, only the epoch lines")
    p.add_argument("--eval-batch-size", type=cli.positive_int, default=1000, help=argparse.SUPPRESS)
    return p


def resolve_settings(args, saved=None) -> None:
    """Fill unset settings from the checkpoint being resumed (``saved``) or the variant's
    defaults (``defaults_for``). A checkpoint without a variant holds the default variant's
    network. A setting that cannot change in mid-run (the architecture, the optimizer) must
    match. Variants are compared by today's names ("seed" is "classic")."""
    if saved is not None:
        saved = dict(saved, variant=resolve_variant(saved.get("variant", DEFAULTS["variant"]))[0])
    if args.variant is not None:
        args.variant = resolve_variant(args.variant)[0]
    variant = args.variant or (saved["variant"] if saved is not None else DEFAULTS["variant"])
    for key, default in defaults_for(variant).items():
        given = getattr(args, key)
        if saved is None or key not in saved:
            setattr(args, key, default if given is None else given)
            continue
        if given is None:
            setattr(args, key, saved[key])
        elif given != saved[key] and key in FIXED:
            flag = "--" + key.replace("_", "-")
            raise checkpoint.CheckpointError(
                f"checkpoint {args.resume} was trained with {flag} {saved[key]}, but this run asks for "
                f"{flag} {given}; drop {flag} (or pass {flag} {saved[key]}) to resume it")
        elif given != saved[key] and key not in NEUTRAL:
            print(f"warning: resuming with --{key.replace('_', '-')} {given} instead of the checkpoint's "
                  f"{saved[key]}: the result will differ from an uninterrupted run", file=sys.stderr)


def check_args(args) -> None:
    """What argparse cannot check: a variant with an activation or pooling it does not take,
    matplotlib for --plot."""
    try:
        resolve_variant(args.variant, args.activation, args.pool)
    except ValueError as exc:
        raise TrainingError(f"{exc}: pick another --activation or --pool") from None
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise TrainingError("--plot needs matplotlib, which is not installed: "
                                "pip install matplotlib (or pip install -e '.[plot]'), or drop --plot") from None


def check_resume(meta, path, n_train, batch_size) -> None:
    """Raise CheckpointError unless ``meta`` can continue a run: every field a resumed run
    reads is there (their types were checked by checkpoint.load), each history entry holds
    the metrics, and a mid-epoch position fits the data and the batch size."""
    checkpoint.check_resumable(meta, path)
    for entry in meta["history"]:
        if set(entry) != set(EPOCH_FIELDS) or not all(isinstance(entry[k], (int, float)) for k in EPOCH_FIELDS):
            raise checkpoint.CheckpointError(
                f"checkpoint {path}: a history entry is {entry!r}, expected the numbers {', '.join(EPOCH_FIELDS)}; "
                "the file is damaged or not written by lenet_np.train")
    step, seen = meta["step"], meta["sums"][2]
    if step and not (step <= num_batches(n_train, batch_size) and 0 < seen <= n_train):
        raise checkpoint.CheckpointError(
            f"checkpoint {path}: it stopped at step {step} of an epoch having seen {seen} examples, which does not "
            f"fit {n_train} training examples in batches of {batch_size}; resume with the data and --batch-size "
            "it was written with")


def make_optimizer(args, net):
    if args.optimizer == "adam":
        return Adam(net.parameters(), lr=args.lr)
    return SGD(net.parameters(), lr=args.lr, momentum=args.momentum)


# -- progress -----------------------------------------------------------------------------
class Progress:
    """tqdm on a terminal, a plain line every ~10% of the epoch otherwise."""

    def __init__(self, epoch, total, quiet):
        self.epoch, self.total, self.quiet = epoch, total, quiet
        self.bar = None
        self.start = time.perf_counter()
        if quiet:
            return
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False)
            except ImportError:
                pass
        self.every = max(1, total // 10)

    def update(self, done, seen, running_loss):
        if self.quiet:
            return
        rate = seen / max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(loss=f"{running_loss:.4f}", ex_s=f"{rate:,.0f}")
        elif done % self.every == 0 or done == self.total:
            print(f"  epoch {self.epoch} [{done}/{self.total}] loss {running_loss:.4f}, {rate:,.0f} examples/s",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# -- per-step metrics and plot (the metrics files' format: lenet_np/metrics.py) ---------------
class StepLog:
    """The per-step metrics: a row every ``every`` steps and at the last step of each epoch.

    ``record`` runs after backward and before the optimizer's step: it reduces the window's
    loss and every parameter's squared gradient norm on the device and keeps the vector;
    ``flush`` reads every pending vector back in one transfer (called where the loop reads
    the device anyway) and turns them into rows. ``carry`` holds the loss sum and the
    examples of the window's steps that ran before a resume."""

    def __init__(self, net, every, rows=(), carry=(0.0, 0)):
        named = list(net.named_parameters())
        self.params = [p for _, p in named]
        self.fields = step_fields(name for name, _ in named)
        self.every = every
        self.rows = list(rows)
        self.carry = (float(carry[0]), int(carry[1]))
        self._pending = []

    def due(self, global_step, last_of_epoch) -> bool:
        return last_of_epoch or global_step % self.every == 0

    def record(self, epoch, global_step, window_losses, window_examples) -> None:
        """``window_losses``: the device array of loss * batch size of the window's steps."""
        xp = backend.get_array_module(window_losses)
        parts = [window_losses.sum().reshape(1).astype(np.float64)]
        for p in self.params:
            g = p.grad
            parts.append(xp.zeros(1, dtype=np.float64) if g is None
                         else (g.astype(np.float64) ** 2).sum().reshape(1))
        carry_loss, carry_n = self.carry
        self._pending.append((epoch, global_step, carry_loss, carry_n + window_examples, xp.concatenate(parts)))
        self.carry = (0.0, 0)

    def flush(self) -> None:
        if not self._pending:
            return
        xp = backend.get_array_module(self._pending[0][-1])
        values = backend.as_numpy(xp.stack([v for *_, v in self._pending]))     # one transfer
        for (epoch, global_step, carry_loss, n, _), v in zip(self._pending, values):
            row = {"epoch": epoch, "step": global_step, "loss": _short((carry_loss + v[0]) / max(n, 1))}
            row.update({f: _short(np.sqrt(x)) for f, x in zip(self.fields[len(STEP_FIELDS):], v[1:])})
            self.rows.append(row)
        self._pending = []


def _short(x) -> float:
    """A float with 7 significant digits (what float32 holds): gradient norms of the first
    layers of a sigmoid network can be 1e-6 and smaller, so a fixed number of decimals would not do."""
    return float(f"{float(x):.7g}")


def write_plot(path, history) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(epochs, [h["loss"] for h in history], "o-", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_title("Training loss")
    ax1.legend()
    ax2.plot(epochs, [h["train_acc"] for h in history], "o-", label="train acc")
    ax2.plot(epochs, [h["test_acc"] for h in history], "s-", label="test acc")
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("accuracy")
    ax2.set_title("Accuracy")
    ax2.legend()
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.set_xticks(epochs)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    checkpoint.atomic_write(path, lambda f: f.write(buf.getvalue()))


# -- interruption -------------------------------------------------------------------------
class StopOnInterrupt:
    """While active, the first Ctrl-C (SIGINT) only sets ``requested``: the loop finishes
    the step it is in, so the state it saves is never half-updated. A second Ctrl-C
    interrupts at once."""

    def __enter__(self):
        self.requested = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def _resume_command(path, argv) -> str:
    """The command line of this run, with --resume PATH in place of any earlier --resume."""
    out, skip_next = [], False
    for a in argv:
        if skip_next:
            skip_next = False
            continue
        if a == "--resume":
            skip_next = True
            continue
        if a.startswith("--resume="):
            continue
        out.append(a)
    return " ".join(["python -m lenet_np.train", "--resume", str(path), *out])


# -- the run ------------------------------------------------------------------------------
def check_last_batch(net, n_train, batch_size) -> None:
    """A network with batch statistics (BatchNorm in training) cannot train on a last batch of
    one example: say so before any work, with a batch size that fits."""
    if (batch_size > 1 and n_train % batch_size != 1) or not uses_batch_statistics(net):
        return
    if n_train < 2:
        raise TrainingError(f"batch normalization needs batches of at least 2 examples, and the training set "
                            f"holds {n_train}; train this variant on more data")
    fits = next(b for b in range(max(batch_size + 1, 2), n_train + 1) if n_train % b != 1)
    what = ("batches of one example" if batch_size == 1
            else f"a last batch of one example ({n_train} training examples)")
    raise TrainingError(f"--batch-size {batch_size} leaves {what}, and batch normalization cannot normalise a "
                        f"single example; choose a batch size that does not leave one over, e.g. --batch-size {fits}")


def run(args) -> list:
    meta = checkpoint.load(args.resume)["meta"] if args.resume else None
    resolve_settings(args, meta.get("settings", {}) if meta else None)
    check_args(args)
    device = args.device                              # "cpu" or "cuda", checked by the parser
    xp = backend.xp_for(device)
    data = load_fashion_mnist(args.data_dir)
    if meta is not None:
        check_resume(meta, args.resume, len(data.train_labels), args.batch_size)
    train_x, train_y, test_x, test_y = (xp.asarray(a) for a in data)   # uint8, once on the device

    net = LeNet(activation=args.activation, pool=args.pool, seed=args.seed, variant=args.variant).to(device)
    check_last_batch(net, len(data.train_labels), args.batch_size)
    opt = make_optimizer(args, net)
    if device == "cpu":
        args.workers = args.workers or default_workers()
        model = DataParallel(net, args.workers)      # the batch split across CPU threads
    else:
        args.workers, model = 1, net                  # one GPU stream: no threads
    data_rng = np.random.default_rng([args.seed, 1])   # shuffling: independent of the init stream
    history, start_epoch, skip, sums = [], 1, 0, (0.0, 0, 0)
    n_train = len(train_y)
    total = num_batches(n_train, args.batch_size)
    global_step, carried_rows = 0, []
    steps = StepLog(net, args.log_every) if args.metrics else None
    if meta is not None:
        global_step = meta.get("global_step", meta["epoch"] * total + meta["step"])
        rows = [r for r in meta.get("steps", []) if r.get("step", 0) <= global_step]
        steps = StepLog(net, args.log_every, rows, meta.get("step_window", (0.0, 0))) if args.metrics else None
        carried_rows = rows
        fields = StepLog(net, 1).fields
        bad = next((r for r in rows if tuple(r) != fields), None)
        if bad is not None:
            raise checkpoint.CheckpointError(
                f"checkpoint {args.resume}: a per-step metrics row has the keys {', '.join(bad)}, expected "
                f"{', '.join(fields)}; the file is damaged or not written by lenet_np.train")
        checkpoint.load_into(args.resume, net, opt)
        data_rng.bit_generator.state = meta["epoch_rng_state"]
        history = meta["history"]
        start_epoch, skip = meta["epoch"] + 1, meta["step"]
        sums = tuple(meta["sums"])
        if skip == 0:
            data_rng.bit_generator.state = meta["rng_state"]
        if start_epoch > args.epochs:
            print(f"checkpoint {args.resume} already holds {meta['epoch']} epochs (--epochs {args.epochs}): "
                  "nothing to train; raise --epochs to continue", file=sys.stderr)
            return history

    settings = {k: getattr(args, k) for k in SETTINGS}
    save_path = args.checkpoint

    def save(epoch_done, step, epoch_rng_state, sums, path=None, window=(0.0, 0)):
        if steps is not None:
            steps.flush()
        checkpoint.save(path or save_path, net, opt, {
            "epoch": epoch_done, "step": step, "sums": list(sums), "settings": settings,
            "epoch_rng_state": epoch_rng_state, "rng_state": data_rng.bit_generator.state,
            "history": history, "global_step": global_step,
            "steps": steps.rows if steps is not None else carried_rows,
            "step_window": list(window) if steps is not None else [0.0, 0]})

    loss_fn = CrossEntropyLoss()

    def check_labels(epoch, step):
        """Labels out of range, found on a GPU without a sync, are read here."""
        try:
            loss_fn.check()
        except ValueError as exc:
            raise TrainingError(f"{exc} (epoch {epoch}, by step {step + 1}/{total}); the training "
                                "labels must be class indices 0..9") from None
    check_every = 1 if device == "cpu" else 50      # reading the loss back syncs a GPU
    if not args.quiet:
        print(f"training LeNet ({args.variant}, {args.activation}, {args.pool} pool) on {device}: {n_train} examples, "
              f"batch {args.batch_size}, {args.optimizer} lr {args.lr}", file=sys.stderr)
    for epoch in range(start_epoch, args.epochs + 1):
        epoch_rng_state = data_rng.bit_generator.state
        losses = xp.zeros(total, dtype=np.float64)           # per-step losses, on the device
        correct = xp.zeros((), dtype=np.int64)
        loss_sum0, correct0, seen = sums if skip else (0.0, 0, 0)
        seen_before = seen                                   # examples done before a resume
        progress = Progress(epoch, total, args.quiet)
        start = time.perf_counter()
        step = skip
        row_start, window_examples = skip, 0                 # the steps since the last per-step row
        batches = iterate_batches(train_x, train_y, args.batch_size, shuffle=True, rng=data_rng)
        # a diverging run overflows on its way to NaN; the loss check below reports it
        with StopOnInterrupt() as interrupt, np.errstate(over="ignore", invalid="ignore"):
            for step, (x, y) in enumerate(batches):
                if step < skip:
                    continue
                opt.zero_grad()
                logits = model(x)
                loss = loss_fn.forward(logits, y)
                model.backward(loss_fn.backward(), input_grad=False)
                losses[step] = loss * len(y)
                global_step += 1
                window_examples += len(y)
                if steps is not None and steps.due(global_step, step + 1 == total):
                    steps.record(epoch, global_step, losses[row_start:step + 1], window_examples)
                    row_start, window_examples = step + 1, 0
                opt.step()
                correct += (logits.argmax(axis=1) == y).sum()
                seen += len(y)
                if (step + 1) % check_every == 0 or step + 1 == total or interrupt.requested:
                    check_labels(epoch, step)
                    if steps is not None:
                        steps.flush()
                    window = losses[:step + 1]
                    if not bool(xp.isfinite(window).all()):
                        bad = int(xp.argmax(~xp.isfinite(window)))
                        raise TrainingError(
                            f"the loss became {float(losses[bad])} at epoch {epoch}, step {bad + 1}/{total}: "
                            f"training diverged; try a lower learning rate (--lr {args.lr / 10:g})"
                            + (f"; the last good checkpoint stays at {save_path}" if save_path else ""))
                    progress.update(step + 1, seen, (loss_sum0 + float(window.sum())) / seen)
                if interrupt.requested:      # Ctrl-C: stop between two whole steps
                    progress.close()
                    done = step + 1
                    partial = (loss_sum0 + float(losses[:done].sum()), correct0 + int(correct), seen)
                    path = save_path or "lenet_np-interrupted.npz"
                    window = ((steps.carry[0] + float(losses[row_start:done].sum()), steps.carry[1] + window_examples)
                              if steps is not None else (0.0, 0))
                    save(epoch - 1, done, epoch_rng_state, partial, path, window)
                    again = _resume_command(path, args.argv)
                    print(f"\ninterrupted at epoch {epoch}, step {done}/{total}; state saved to {path}. "
                          f"Resume with:\n  {again}", file=sys.stderr)
                    raise SystemExit(130)
        progress.close()
        backend.synchronize(train_x)
        elapsed = time.perf_counter() - start
        train_loss = (loss_sum0 + float(losses.sum())) / seen
        train_acc = (correct0 + int(correct)) / seen
        test_acc = accuracy(model, test_x, test_y, args.eval_batch_size)
        skip = 0
        history.append({"epoch": epoch, "loss": round(train_loss, 6), "train_acc": round(train_acc, 6),
                        "test_acc": round(test_acc, 6), "time_sec": round(elapsed, 3),
                        "examples_per_sec": round((seen - seen_before) / elapsed, 1)})
        print(f"epoch {epoch}, loss {train_loss:.4f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}, "
              f"time {elapsed:.1f} sec", flush=True)
        if save_path:
            save(epoch, 0, epoch_rng_state, (0.0, 0, 0))
        if args.metrics:
            steps.flush()
            write_rows(args.metrics, history)
            write_rows(steps_path(args.metrics), steps.rows, steps.fields)
        if args.plot:
            write_plot(args.plot, history)
    return history


def _resume_hint(args) -> str:
    """How to continue after a failure: the last good checkpoint and the command, or ''."""
    path = args.checkpoint
    if not path or not Path(path).is_file():
        return ""
    return f"; the last good checkpoint stays at {path}; resume with: {_resume_command(path, args.argv)}"


def _run(args) -> int:
    try:
        run(args)
    except (TrainingError, DataError, checkpoint.CheckpointError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    # a full disk or a vanished directory while saving, or Ctrl-C outside the training steps
    # (loading, evaluating, saving): one line, and how to resume from the last good checkpoint
    return cli.guard(_run, args, hint=lambda: _resume_hint(args))


if __name__ == "__main__":
    sys.exit(main())
