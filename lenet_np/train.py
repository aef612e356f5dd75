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
``--log-every`` steps and at the last step of each epoch: the epoch, the global step, the
mean loss since the previous row, the L2 norm of every parameter's gradient
(``grad_norm:<name>``) and the run's variant, activation and pooling. ``--plot`` draws the
curves as ``visualize``'s curves.png does (``lenet_np.visualize.plot_curves``).

This module is the command line: its flags, their defaults and how a resumed run's settings
are resolved, the messages, Ctrl-C. The loop itself (start or restore a run, one epoch,
save) is ``lenet_np.training``, the progress display ``lenet_np.progress``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from . import backend, checkpoint, cli, training
from .data import DataError, load_fashion_mnist, num_batches
from .evaluate import accuracy
from .metrics import steps_from_rows, steps_path, write_rows, write_steps
from .model import VARIANT_ALIASES, VARIANTS, resolve_variant
from .progress import Progress
from .training import BOOK_RECIPE, DEFAULTS, SETTINGS, TrainingError, defaults_for
from .visualize.curves import plot_curves

FIXED = ("variant", "activation", "pool", "optimizer")      # cannot change when resuming
NEUTRAL = ("epochs", "log_every")        # changing these on resume does not change the trajectory
MAX_WORKERS = 256

DESCRIPTION = ("Train the book's LeNet on Fashion-MNIST (Adam, lr 0.001, batch 256, 5 epochs, sigmoid, max "
               "pooling by default; --variant d2l or batchnorm: SGD, lr 0.1, batch 128, 10 epochs, average "
               "pooling, the book's recipe). One line per epoch; a checkpoint after each epoch with --checkpoint; "
               "--resume continues a run; Ctrl-C saves the state reached and says how to resume.")


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


# -- Ctrl-C ---------------------------------------------------------------------------------
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
def write_plot(path, history, settings, steps=None, steps_source="") -> None:
    """--plot: the curves of visualize's curves.png (loss and accuracy per epoch, and the loss
    per logged step when the per-step metrics are kept)."""
    s = settings
    plot_curves(history, path, f"LeNet {s['variant']}, {s['activation']}, {s['pool']} pool, {s['optimizer']} "
                f"lr {s['lr']:g}", steps, steps_source)


def run(args) -> list:
    meta = checkpoint.load(args.resume)["meta"] if args.resume else None
    resolve_settings(args, meta.get("settings", {}) if meta else None)
    check_args(args)
    device = args.device                              # "cpu" or "cuda", checked by the parser
    xp = backend.xp_for(device)
    data = load_fashion_mnist(args.data_dir)
    n_train = len(data.train_labels)
    if meta is not None:
        training.check_resume(meta, args.resume, n_train, args.batch_size)
    train_x, train_y, test_x, test_y = (xp.asarray(a) for a in data)   # uint8, once on the device

    state = training.start({k: getattr(args, k) for k in SETTINGS}, device, log_steps=bool(args.metrics))
    training.check_last_batch(state.net, n_train, args.batch_size)
    if meta is not None:
        training.load_checkpoint(state, args.resume, meta, n_train)
        if state.epoch + 1 > args.epochs:
            print(f"checkpoint {args.resume} already holds {meta['epoch']} epochs (--epochs {args.epochs}): "
                  "nothing to train; raise --epochs to continue", file=sys.stderr)
            return state.history
    save_path, total = args.checkpoint, num_batches(n_train, args.batch_size)
    if not args.quiet:
        print(f"training LeNet ({args.variant}, {args.activation}, {args.pool} pool) on {device}: {n_train} examples, "
              f"batch {args.batch_size}, {args.optimizer} lr {args.lr}", file=sys.stderr)
    for epoch in range(state.epoch + 1, args.epochs + 1):
        progress = Progress(epoch, total, args.quiet)
        try:
            with StopOnInterrupt() as interrupt:
                result = training.train_epoch(state, train_x, train_y, report=progress.update,
                                              stop=lambda: interrupt.requested)
        except training.Diverged as exc:
            raise TrainingError(f"{exc}; try a lower learning rate (--lr {args.lr / 10:g})"
                                + (f"; the last good checkpoint stays at {save_path}" if save_path else "")) from None
        finally:
            progress.close()
        if result.stopped:                            # Ctrl-C: stopped between two whole steps
            path = save_path or "lenet_np-interrupted.npz"
            training.save(state, path)
            print(f"\ninterrupted at epoch {epoch}, step {result.done}/{total}; state saved to {path}. "
                  f"Resume with:\n  {_resume_command(path, args.argv)}", file=sys.stderr)
            raise SystemExit(130)
        test_acc = accuracy(state.model, test_x, test_y, args.eval_batch_size)
        training.record_epoch(state, result, test_acc)
        print(f"epoch {epoch}, loss {result.loss:.4f}, train acc {result.train_acc:.3f}, test acc {test_acc:.3f}, "
              f"time {result.elapsed:.1f} sec", flush=True)
        if save_path:
            training.save(state, save_path)
        steps = state.steps
        if args.metrics:
            steps.flush()
            write_rows(args.metrics, state.history)
            write_steps(steps_path(args.metrics), steps.rows, steps.fields, state.settings)
        if args.plot:
            write_plot(args.plot, state.history, state.settings, steps_from_rows(steps.rows) if steps else None,
                       str(steps_path(args.metrics)) if steps else "")
    return state.history


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
