"""Checkpoints as plain .npz files (no pickle), written atomically.

Layout of the archive (every entry a NumPy array):

    param/<state_dict name>    the network's parameters (conv.0.weight ... fc.4.bias)
    optim/<key>                the optimizer's state_dict (moments, step counts, hyper-parameters)
    meta                       a JSON string: format, epoch, step, settings, RNG states, history

``save`` writes to a temporary file in the target's directory and renames it over
the target, so a kill at any moment leaves either the old or the new checkpoint,
never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import backend

FORMAT = "lenet_np-checkpoint-1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model."""


def atomic_write(path, write) -> None:
    """Call write(file_object) on a temporary file, then rename it to path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


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
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    params = {k[len("param/"):]: v for k, v in files.items() if k.startswith("param/")}
    optim = {k[len("optim/"):]: v for k, v in files.items() if k.startswith("optim/")}
    return {"params": params, "optim": optim, "meta": meta}


def load_into(path, net, optimizer=None) -> dict:
    """Load a checkpoint's parameters (and optimizer state) into net; returns its meta.

    A checkpoint of another architecture raises CheckpointError with both descriptions."""
    ck = load(path)
    try:
        net.load_state_dict(ck["params"])
        if optimizer is not None:
            optimizer.load_state_dict(ck["optim"])
    except (KeyError, ValueError) as exc:
        msg = exc.args[0] if exc.args else str(exc)
        raise CheckpointError(f"checkpoint {path} does not fit this model: {msg}") from None
    return ck["meta"]
