"""The training loop of ``python -m lenet_np.train``, as functions to call from Python: start a
run or restore one from a checkpoint, train one epoch, record it, save a checkpoint.

    from lenet_np import training
    from lenet_np.data import load_fashion_mnist
    from lenet_np.evaluate import accuracy

    fm = load_fashion_mnist()
    state = training.start(training.defaults_for("classic"))       # or training.restore("ck.npz", 60000)
    for _ in range(5):
        result = training.train_epoch(state, fm.train_images, fm.train_labels)
        training.record_epoch(state, result, accuracy(state.model, fm.test_images, fm.test_labels))
        training.save(state, "ck.npz")

The command line (``lenet_np/train.py``) is these functions with settings, messages, a
progress display (``lenet_np/progress.py``) and Ctrl-C around them: the same steps give the
same checkpoints, bit for bit on the CPU.

A run's state (``TrainingState``) is the network, the optimizer, the shuffling RNG, the
history of finished epochs, the position reached (epochs done, steps done of the next one
and their sums, the global step) and the per-step metrics (``StepLog``). ``save`` writes
all of it; ``restore`` reads it back, and ``train_epoch`` continues an epoch stopped part
way (``stop``) where it stopped, replaying the epoch's shuffle.

Per-step metrics (``log_steps``): a row every ``log_every`` steps and at the last step of
each epoch: the epoch, the global step (1-based, counted across epochs and resumes), the
mean loss per example of the steps since the previous row, and the L2 norm of every
parameter's gradient at that step (after backward, before the optimizer's step), one
``grad_norm:<name>`` per parameter in ``named_parameters()`` order. The norms are reduced on
the device and read back in one transfer with the loss, at the loop's periodic reads. The
rows live in the checkpoint, so a resumed run keeps those of the steps before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import backend, checkpoint
from .data import iterate_batches, num_batches
from .metrics import EPOCH_FIELDS, STEP_FIELDS, step_fields
from .model import VARIANTS, LeNet, resolve_variant
from .nn import CrossEntropyLoss
from .optim import SGD, Adam
from .parallel import DataParallel, default_workers, uses_batch_statistics

SETTINGS = ("variant", "epochs", "batch_size", "lr", "optimizer", "momentum", "seed", "activation", "pool",
            "workers", "log_every")

# The variant's own recipe (epochs, batch size, lr, optimizer) and its activation and pooling
# come from the one table of variants, lenet_np.model.VARIANTS; these are the rest.
DEFAULTS = {"variant": "classic", **VARIANTS["classic"]["recipe"], "momentum": 0.0, "seed": 0,
            "activation": VARIANTS["classic"]["activation"], "pool": VARIANTS["classic"]["pool"],
            "workers": 0, "log_every": 10}
# The book's recipe for its other LeNets (d2l.ai, chapters on LeNet and on batch normalization).
BOOK_RECIPE = dict(VARIANTS["d2l"]["recipe"], pool=VARIANTS["d2l"]["pool"])


class TrainingError(RuntimeError):
    """Stops the run with a message for the user (exit status 1)."""


class Diverged(TrainingError):
    """The loss became inf or NaN."""


def defaults_for(variant) -> dict:
    """The default settings of a variant (an earlier name, such as "seed", taken for today's):
    DEFAULTS, with the variant's recipe, activation and pooling from lenet_np.model.VARIANTS."""
    variant = resolve_variant(variant)[0]
    spec = VARIANTS[variant]
    return dict(DEFAULTS, variant=variant, **spec["recipe"], activation=spec["activation"], pool=spec["pool"])


def settings_of(meta: dict) -> dict:
    """The settings of the run a checkpoint's meta holds; those an older checkpoint lacks are its
    variant's defaults (a checkpoint without a variant holds the default variant's network)."""
    saved = meta.get("settings", {})
    variant = resolve_variant(saved.get("variant", DEFAULTS["variant"]))[0]
    return {**defaults_for(variant), **{k: saved[k] for k in SETTINGS if k in saved}, "variant": variant}


# -- per-step metrics ------------------------------------------------------------------------------
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


# -- the state of a run ----------------------------------------------------------------------------
@dataclass
class TrainingState:
    """Everything a run carries from one step to the next, and what ``save`` writes."""
    settings: dict                   # SETTINGS, as the checkpoint records them
    device: str                      # "cpu" or "cuda"
    net: LeNet
    optimizer: object
    model: object                    # what runs the batches: DataParallel(net) on the CPU, net on a GPU
    data_rng: np.random.Generator    # the shuffling, independent of the initialisation's stream
    steps: StepLog | None            # the per-step metrics, when logged
    history: list = field(default_factory=list)           # one row (EPOCH_FIELDS) per finished epoch
    epoch: int = 0                   # epochs finished
    step: int = 0                    # steps of the next epoch done already (a run stopped part way)
    sums: tuple = (0.0, 0, 0)        # their loss * examples, correct predictions, examples
    global_step: int = 0             # steps done in all, across epochs and resumes
    epoch_rng_state: dict | None = None     # data_rng's state at the start of the epoch in progress
    carried_rows: list = field(default_factory=list)      # a restored run's per-step rows, kept when not logging
    loss_fn: CrossEntropyLoss = field(default_factory=CrossEntropyLoss)


class EpochResult(NamedTuple):
    """What ``train_epoch`` did: the epoch, the steps done of its ``total``, whether ``stop``
    ended it early, and for a finished epoch its mean loss and accuracy over all its examples
    (those before a resume included), the seconds it took and the examples it trained on."""
    epoch: int
    done: int
    total: int
    stopped: bool
    loss: float = float("nan")
    train_acc: float = float("nan")
    elapsed: float = 0.0
    examples: int = 0


def make_optimizer(settings, net):
    if settings["optimizer"] == "adam":
        return Adam(net.parameters(), lr=settings["lr"])
    return SGD(net.parameters(), lr=settings["lr"], momentum=settings["momentum"])


def start(settings: dict, device: str = "cpu", log_steps: bool = False) -> TrainingState:
    """A new run: the network of ``settings`` (SETTINGS, e.g. ``defaults_for("classic")``) on
    ``device``, initialised from its seed, its optimizer, and the batches split over
    ``settings["workers"]`` CPU threads (0: one per core, at most 4; a GPU runs one stream)."""
    settings = {k: settings[k] for k in SETTINGS}
    net = LeNet(activation=settings["activation"], pool=settings["pool"], seed=settings["seed"],
                variant=settings["variant"]).to(device)
    opt = make_optimizer(settings, net)
    if device == "cpu":
        settings["workers"] = settings["workers"] or default_workers()
        model = DataParallel(net, settings["workers"])      # the batch split across CPU threads
    else:
        settings["workers"], model = 1, net                  # one GPU stream: no threads
    data_rng = np.random.default_rng([settings["seed"], 1])
    return TrainingState(settings, device, net, opt, model, data_rng,
                         StepLog(net, settings["log_every"]) if log_steps else None,
                         epoch_rng_state=data_rng.bit_generator.state)


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


def load_checkpoint(state: TrainingState, path, meta: dict, n_train: int) -> TrainingState:
    """Continue in ``state`` (a ``start`` of the same network and optimizer) the run saved at
    ``path``, whose meta (checked by ``check_resume``) is ``meta``: the weights, the optimizer's
    moments, the RNG, the history, the position and the per-step rows. ``n_train``: the
    training examples (a checkpoint older than the global step counts its steps from them)."""
    global_step = meta.get("global_step", meta["epoch"] * num_batches(n_train, state.settings["batch_size"])
                           + meta["step"])
    rows = [r for r in meta.get("steps", []) if r.get("step", 0) <= global_step]
    fields = StepLog(state.net, 1).fields
    bad = next((r for r in rows if tuple(r) != fields), None)
    if bad is not None:
        raise checkpoint.CheckpointError(
            f"checkpoint {path}: a per-step metrics row has the keys {', '.join(bad)}, expected "
            f"{', '.join(fields)}; the file is damaged or not written by lenet_np.train")
    if state.steps is not None:
        state.steps = StepLog(state.net, state.settings["log_every"], rows, meta.get("step_window", (0.0, 0)))
    checkpoint.load_into(path, state.net, state.optimizer)
    state.data_rng.bit_generator.state = meta["rng_state"]
    state.epoch_rng_state = meta["epoch_rng_state"]
    state.history = meta["history"]
    state.epoch, state.step, state.sums = meta["epoch"], meta["step"], tuple(meta["sums"])
    state.global_step, state.carried_rows = global_step, rows
    return state


def restore(path, n_train: int, device: str = "cpu", log_steps: bool = False) -> TrainingState:
    """The run saved in the checkpoint at ``path``, ready to continue on ``n_train`` training
    examples: its settings (``settings_of``), network, optimizer and position."""
    meta = checkpoint.load(path)["meta"]
    settings = settings_of(meta)
    check_resume(meta, path, n_train, settings["batch_size"])
    return load_checkpoint(start(settings, device, log_steps), path, meta, n_train)


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


# -- one epoch -------------------------------------------------------------------------------------
def _check_labels(loss_fn, epoch, step, total) -> None:
    """Labels out of range, found on a GPU without a sync, are read here."""
    try:
        loss_fn.check()
    except ValueError as exc:
        raise TrainingError(f"{exc} (epoch {epoch}, by step {step + 1}/{total}); the training "
                            "labels must be class indices 0..9") from None


def train_epoch(state: TrainingState, images, labels, report=None, stop=None, check_every=None) -> EpochResult:
    """Train the next epoch (or the rest of one stopped part way) on ``images``, ``labels`` (the
    training set's uint8 arrays, on the run's device), shuffled by the run's RNG.

    Every ``check_every`` steps (default 1 on the CPU, 50 on a GPU, where reading the loss back
    waits for the device) and at the epoch's last step, the loop reads the loss: it raises
    Diverged when it is inf or NaN, TrainingError for labels out of range, and calls
    ``report(steps done, examples seen, mean loss so far)``. ``stop()``, asked after every step,
    ends the epoch there when true: the state then holds the position reached, ready for
    ``save``. A finished epoch moves the state to the next one; ``record_epoch`` adds it to the
    history."""
    s, xp = state.settings, backend.xp_for(state.device)
    epoch, total = state.epoch + 1, num_batches(len(labels), s["batch_size"])
    check_every = check_every or (1 if state.device == "cpu" else 50)
    skip = state.step
    if skip:                                                 # replay the shuffle of the epoch in progress
        state.data_rng.bit_generator.state = state.epoch_rng_state
    epoch_rng_state = state.data_rng.bit_generator.state
    losses = xp.zeros(total, dtype=np.float64)               # per-step losses, on the device
    correct = xp.zeros((), dtype=np.int64)
    loss_sum0, correct0, seen = state.sums if skip else (0.0, 0, 0)
    seen_before = seen                                       # examples done before a resume
    model, opt, loss_fn, steps = state.model, state.optimizer, state.loss_fn, state.steps
    begin = time.perf_counter()
    row_start, window_examples = skip, 0                     # the steps since the last per-step row
    batches = iterate_batches(images, labels, s["batch_size"], shuffle=True, rng=state.data_rng)
    # a diverging run overflows on its way to NaN; the loss check below reports it
    with np.errstate(over="ignore", invalid="ignore"):
        for step, (x, y) in enumerate(batches):
            if step < skip:
                continue
            opt.zero_grad()
            logits = model(x)
            loss = loss_fn.forward(logits, y)
            model.backward(loss_fn.backward(), input_grad=False)
            losses[step] = loss * len(y)
            state.global_step += 1
            window_examples += len(y)
            if steps is not None and steps.due(state.global_step, step + 1 == total):
                steps.record(epoch, state.global_step, losses[row_start:step + 1], window_examples)
                row_start, window_examples = step + 1, 0
            opt.step()
            correct += (logits.argmax(axis=1) == y).sum()
            seen += len(y)
            stopping = stop is not None and stop()
            if (step + 1) % check_every == 0 or step + 1 == total or stopping:
                _check_labels(loss_fn, epoch, step, total)
                if steps is not None:
                    steps.flush()
                window = losses[:step + 1]
                if not bool(xp.isfinite(window).all()):
                    bad = int(xp.argmax(~xp.isfinite(window)))
                    raise Diverged(f"the loss became {float(losses[bad])} at epoch {epoch}, step {bad + 1}/{total}: "
                                   "training diverged")
                if report is not None:
                    report(step + 1, seen, (loss_sum0 + float(window.sum())) / seen)
            if stopping:                                     # stop between two whole steps
                done = step + 1
                state.step, state.epoch_rng_state = done, epoch_rng_state
                state.sums = (loss_sum0 + float(losses[:done].sum()), correct0 + int(correct), seen)
                if steps is not None:
                    steps.carry = (steps.carry[0] + float(losses[row_start:done].sum()),
                                   steps.carry[1] + window_examples)
                return EpochResult(epoch, done, total, True)
    backend.synchronize(images)
    elapsed = time.perf_counter() - begin
    train_loss = (loss_sum0 + float(losses.sum())) / seen
    train_acc = (correct0 + int(correct)) / seen
    state.epoch, state.step, state.sums, state.epoch_rng_state = epoch, 0, (0.0, 0, 0), epoch_rng_state
    return EpochResult(epoch, total, total, False, train_loss, train_acc, elapsed, seen - seen_before)


def record_epoch(state: TrainingState, result: EpochResult, test_acc: float) -> dict:
    """Add a finished epoch to the history, with the test accuracy measured after it; the row."""
    row = {"epoch": result.epoch, "loss": round(result.loss, 6), "train_acc": round(result.train_acc, 6),
           "test_acc": round(test_acc, 6), "time_sec": round(result.elapsed, 3),
           "examples_per_sec": round(result.examples / result.elapsed, 1)}
    state.history.append(row)
    return row


def save(state: TrainingState, path) -> None:
    """Write the run's checkpoint at ``path`` atomically: weights, optimizer, settings, RNG,
    history, position and per-step rows; ``restore`` continues from it."""
    if state.steps is not None:
        state.steps.flush()
    checkpoint.save(path, state.net, state.optimizer, {
        "epoch": state.epoch, "step": state.step, "sums": list(state.sums), "settings": state.settings,
        "epoch_rng_state": state.epoch_rng_state, "rng_state": state.data_rng.bit_generator.state,
        "history": state.history, "global_step": state.global_step,
        "steps": state.steps.rows if state.steps is not None else state.carried_rows,
        "step_window": list(state.steps.carry) if state.steps is not None else [0.0, 0]})
