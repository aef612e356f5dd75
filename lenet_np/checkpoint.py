"""Checkpoints as plain .npz files (no pickle), written atomically.

Layout of the archive (every entry a NumPy array):

    param/<state_dict name>    the network's parameters (conv.0.weight ... fc.4.bias)
    optim/<key>                the optimizer's state_dict (moments, step counts, hyper-parameters)
    meta                       a JSON string: format, epoch, step, settings, RNG states, history,
                               and the per-step metrics (global_step, steps, step_window)

The settings name the network (variant, activation, pool); a checkpoint written before
variants existed has no variant and holds LeNet's default variant. ``load_network`` turns a
checkpoint into that network, with its weights: evaluate, trace and visualize use it.

``save`` writes to a temporary file in the target's directory and renames it over
the target, so a kill at any moment leaves either the old or the new checkpoint,
never half of one. The file gets the permissions ``open()`` would give it (0666 less
the umask), and the directory is synced after the rename, so a power cut cannot undo it.

``load`` checks the meta's fields it knows (types and values) and raises CheckpointError
naming the field, so a damaged or hand-edited checkpoint is refused when it is read,
not later in the middle of a run. Every CheckpointError is one line that names the file.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import zipfile
from pathlib import Path

import numpy as np

from . import backend
from .model import ACTIVATIONS, POOLS, VARIANTS, LeNet, resolve_variant

FORMAT = "lenet_np-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def atomic_write(path, write) -> None:
    """Call write(file_object) on a temporary file next to ``path``, then rename it to ``path``.

    On any error (KeyboardInterrupt included) the temporary file is removed and ``path``
    is left as it was. The new file's mode is 0666 less the umask, as with ``open()``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)   # the umask applies, as for open()
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (where the platform allows it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:          # some file systems do not sync directories
        pass
    finally:
        os.close(fd)


def save(path, net, optimizer, meta: dict) -> None:
    arrays = {f"param/{k}": backend.as_numpy(v) for k, v in net.state_dict().items()}
    if optimizer is not None:
        arrays.update({f"optim/{k}": np.asarray(v) for k, v in optimizer.state_dict().items()})
    arrays["meta"] = np.array(json.dumps(dict(meta, format=FORMAT)))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def load(path) -> dict:
    """Read a checkpoint: {"params": {...}, "optim": {...}, "meta": {...}}.

    Raises CheckpointError naming the file and the problem for a missing, truncated,
    corrupt or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"checkpoint {path}: not an .npz (zip) archive; the file is corrupt or truncated, "
                              "or not a lenet_np checkpoint")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path}: not a readable .npz archive ({exc}); "
                              "the file is corrupt or truncated, or not a lenet_np checkpoint") from None
    if "meta" not in files:
        raise CheckpointError(f"checkpoint {path}: no 'meta' entry, so not a lenet_np checkpoint")
    try:
        meta = json.loads(str(files.pop("meta")))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: its 'meta' entry is not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path}: its 'meta' entry is not a JSON object")
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    check_meta(meta, path)
    params = {k[len("param/"):]: v for k, v in files.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in files.items() if k.startswith("optim/")}
    return {"params": params, "optim": optim, "meta": meta}


# -- the meta's fields ------------------------------------------------------------------------
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (_is_int(v) or isinstance(v, float)) and math.isfinite(v)


def _is_variant(v) -> bool:
    """True for a variant name LeNet takes (today's names and the earlier ones it maps to them)."""
    try:
        resolve_variant(v)
    except (ValueError, TypeError):
        return False
    return True


def _check_rng_state(v) -> bool:
    """True when ``v`` is a bit-generator state NumPy accepts (PCG64, as train.py saves)."""
    if not isinstance(v, dict):
        return False
    try:
        np.random.default_rng().bit_generator.state = v
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


# Each known setting: (test, what it must be). Unknown settings are ignored.
SETTING_CHECKS = {
    "variant": (lambda v: isinstance(v, str) and _is_variant(v), " or ".join(map(repr, VARIANTS))),
    "epochs": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "log_every": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "batch_size": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "lr": (lambda v: _is_number(v) and v > 0, "a finite number > 0"),
    "momentum": (lambda v: _is_number(v) and v >= 0, "a finite number >= 0"),
    "seed": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "workers": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "optimizer": (lambda v: isinstance(v, str) and v in ("adam", "sgd"), "'adam' or 'sgd'"),
    "activation": (lambda v: isinstance(v, str) and v in ACTIVATIONS, " or ".join(map(repr, ACTIVATIONS))),
    "pool": (lambda v: isinstance(v, str) and v in POOLS, " or ".join(map(repr, POOLS))),
}

# Each known field of the meta: (test, what it must be). Absent fields are allowed here;
# ``check_resumable`` asks for the ones a resumed run needs.
META_CHECKS = {
    "epoch": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "step": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "sums": (lambda v: isinstance(v, list) and len(v) == 3 and all(_is_number(x) for x in v),
             "a list of three numbers"),
    "settings": (lambda v: isinstance(v, dict), "a JSON object"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(h, dict) for h in v), "a list of JSON objects"),
    "epoch_rng_state": (_check_rng_state, "a NumPy PCG64 generator state"),
    "rng_state": (_check_rng_state, "a NumPy PCG64 generator state"),
    "global_step": (lambda v: _is_int(v) and v >= 0, "a whole number >= 0"),
    "steps": (lambda v: isinstance(v, list) and all(
        isinstance(r, dict) and all(isinstance(k, str) and (_is_int(x) or isinstance(x, float)) for k, x in r.items())
        for r in v), "a list of JSON objects of numbers"),
    "step_window": (lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(x) for x in v),
                    "a list of two numbers"),
}
RESUME_FIELDS = ("epoch", "step", "sums", "settings", "history", "epoch_rng_state", "rng_state")


def _field_error(path, name, value, expected) -> CheckpointError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return CheckpointError(f"checkpoint {path}: its meta field {name} is {shown}, expected {expected}; "
                           "the file is damaged or not written by lenet_np.train")


def check_meta(meta: dict, path) -> None:
    """Raise CheckpointError for a known meta field or setting of the wrong type or value."""
    for name, (ok, expected) in META_CHECKS.items():
        if name in meta and not ok(meta[name]):
            raise _field_error(path, name, meta[name], expected)
    for name, (ok, expected) in SETTING_CHECKS.items():
        settings = meta.get("settings", {})
        if name in settings and not ok(settings[name]):
            raise _field_error(path, f"settings.{name}", settings[name], expected)


def check_resumable(meta: dict, path) -> None:
    """Raise CheckpointError unless the meta holds every field a resumed run reads."""
    missing = [name for name in RESUME_FIELDS if name not in meta]
    if missing:
        raise CheckpointError(f"checkpoint {path}: cannot resume from it: its meta lacks {', '.join(missing)} "
                              "(it was not written by lenet_np.train)")


def _fit(path, net, ck, optimizer, what) -> None:
    """Load the checkpoint ``ck`` (as ``load`` returns it) into net (and optimizer), or raise
    CheckpointError saying that it does not fit ``what``."""
    try:
        net.load_state_dict(ck["params"])
        if optimizer is not None:
            optimizer.load_state_dict(ck["optim"])
    except (KeyError, ValueError, TypeError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise CheckpointError(f"checkpoint {path} does not fit {what}: {msg}") from None


def load_into(path, net, optimizer=None) -> dict:
    """Load a checkpoint's parameters (and optimizer state) into net; returns its meta.

    A checkpoint of another architecture raises CheckpointError with both descriptions."""
    ck = load(path)
    _fit(path, net, ck, optimizer, "this model")
    return ck["meta"]


NETWORK_SETTINGS = ("variant", "activation", "pool")       # the settings that choose the network


def load_network(path, device="cpu"):
    """(net, meta): the LeNet a checkpoint holds, with its weights (and BatchNorm's running
    statistics), on ``device``, in training mode like any new network.

    The network's variant, activation and pooling come from the checkpoint's settings; one
    that is absent takes LeNet's default (a checkpoint written before variants existed holds
    the default variant). CheckpointError, one line naming the file, for a missing, truncated,
    corrupt or foreign file, and for weights that do not fit the network the settings name."""
    ck = load(path)
    settings = ck["meta"].get("settings", {})
    chosen = {k: settings[k] for k in NETWORK_SETTINGS if k in settings}
    described = "LeNet(" + ", ".join(f"{k}={v!r}" for k, v in chosen.items()) + ")"
    try:
        net = LeNet(**chosen)
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: its settings name no LeNet: {exc}") from None
    _fit(path, net, ck, None, described)
    return net.to(device), ck["meta"]
