"""The metrics files of ``python -m lenet_np.train --metrics PATH``: their format, writer and readers.

Two files, each a CSV with a header or, when PATH ends in ``.json``, a JSON list of objects:

    PATH              one row per epoch, EPOCH_FIELDS:
                      epoch, loss, train_acc, test_acc, time_sec, examples_per_sec
    steps_path(PATH)  runs/m.csv -> runs/m.steps.csv: a row every --log-every steps and at the
                      last step of each epoch, STEP_FIELDS then one column per parameter,
                      then the run's network (RUN_FIELDS, the same in every row):
                      epoch, step, loss, grad_norm:<parameter name> ... (named_parameters() order),
                      variant, activation, pool

``write_rows`` writes either file atomically (the whole file or none), ``write_steps`` the
per-step rows with the run's settings. ``read_epochs`` and ``read_steps`` read them back; a
malformed file raises MetricsError, one line naming the file, the row where there is one,
and the problem. A per-step file written before the run's settings were recorded has no
RUN_FIELDS columns: it reads the same, with no settings.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from .checkpoint import NETWORK_SETTINGS, atomic_write

EPOCH_FIELDS = ("epoch", "loss", "train_acc", "test_acc", "time_sec", "examples_per_sec")
EPOCH_NEEDED = ("epoch", "loss", "train_acc", "test_acc")      # what a reader needs; the timings may be absent
STEP_FIELDS = ("epoch", "step", "loss")
GRAD_PREFIX = "grad_norm:"
RUN_FIELDS = NETWORK_SETTINGS                                 # variant, activation, pool: which network ran


class MetricsError(ValueError):
    """A metrics file that cannot be read (the message is one line)."""


def steps_path(path) -> Path:
    """Where the per-step rows of ``--metrics PATH`` go: runs/m.csv -> runs/m.steps.csv, m.json -> m.steps.json."""
    path = Path(path)
    return path.with_name(path.stem + ".steps" + path.suffix)


def step_fields(parameter_names) -> tuple[str, ...]:
    """The columns of a per-step file for parameters of these names."""
    return (*STEP_FIELDS, *(GRAD_PREFIX + name for name in parameter_names))


def write_rows(path, rows, fields=EPOCH_FIELDS) -> None:
    """Rows (dicts with the keys ``fields``) as a CSV with a header, or as a JSON list of
    objects when ``path`` ends in .json; atomically."""
    path = Path(path)
    if path.suffix.lower() == ".json":
        data = json.dumps(list(rows), indent=2).encode()
    else:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        data = buf.getvalue().encode()
    atomic_write(path, lambda f: f.write(data))


def write_steps(path, rows, fields, settings: dict) -> None:
    """Per-step rows (dicts with the keys ``fields``), each followed by the run's network
    ``settings`` (RUN_FIELDS: variant, activation, pool), as ``write_rows`` writes them."""
    run = {k: settings[k] for k in RUN_FIELDS}
    write_rows(path, [{**r, **run} for r in rows], (*fields, *RUN_FIELDS))


# -- reading ----------------------------------------------------------------------------------
def _read_rows(path: Path) -> list[dict]:
    """The rows of a CSV with a header, or of a JSON list of objects."""
    if path.suffix.lower() == ".json":
        rows = json.loads(path.read_text())
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError("not a JSON list of objects")
        return rows
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _whole(value, key) -> int:
    number = float(value)
    if not math.isfinite(number) or number != int(number) or number < 1:
        raise ValueError(f"{key} {value!r} is not a whole number >= 1")
    return int(number)


def _number(value, key) -> float:
    if value in (None, "") or isinstance(value, bool):
        raise ValueError(f"no number for {key}")
    return float(value)


def _read(path, what: str, kind: str, parse):
    """parse(rows) of the file at ``path``; every problem a MetricsError of one line."""
    path = Path(path)
    if not path.is_file():
        raise MetricsError(f"{what} {path}: no such file")
    try:
        rows = _read_rows(path)
        if not rows:
            raise ValueError("no rows in it")
        return parse(rows)
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError, OverflowError, csv.Error) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MetricsError(f"{what} {path}: cannot read it as {kind} metrics ({msg})") from None


def epoch_rows(rows) -> list[dict]:
    """Per-epoch rows (dicts, e.g. a checkpoint's history) checked and as numbers: each holds
    EPOCH_NEEDED, and the timings when there; the epoch a whole number, the others floats.
    ValueError naming the row otherwise."""
    out = []
    for i, r in enumerate(rows, start=1):
        try:
            missing = [k for k in EPOCH_NEEDED if k not in r]
            if None in r:                                    # a CSV row longer than its header
                raise ValueError("too many values")
            if missing:
                raise ValueError(f"missing column(s) {', '.join(missing)}; expected {', '.join(EPOCH_NEEDED)}")
            row = {k: _number(r[k], k) for k in EPOCH_FIELDS if k in r}
            row["epoch"] = _whole(r["epoch"], "epoch")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"row {i}: {exc}") from None
        out.append(row)
    return out


def read_epochs(path) -> list[dict]:
    """The per-epoch rows of a metrics file (see ``epoch_rows``); MetricsError for a malformed file."""
    return _read(path, "metrics", "per-epoch", epoch_rows)


def _step_row(r: dict, names: list[str]) -> tuple[int, int, float, list[float]]:
    """(epoch, step, loss, [norm per name]) of one row of a per-step file."""
    if None in r or any(r.get(k) in (None, "") for k in STEP_FIELDS):      # a CSV row too long or too short
        raise ValueError(f"{'too many' if None in r else 'missing'} values")
    norms = [_number(r.get(GRAD_PREFIX + name), GRAD_PREFIX + name) for name in names]
    for name, norm in zip(names, norms):
        if norm < 0:
            raise ValueError(f"{GRAD_PREFIX}{name} is {r[GRAD_PREFIX + name]}, a norm is >= 0")
    return _whole(r["epoch"], "epoch"), _whole(r["step"], "step"), _number(r["loss"], "loss"), norms


def _steps_of(rows: list[dict]) -> dict:
    keys = list(rows[0])
    missing = [k for k in STEP_FIELDS if k not in keys]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}; expected {', '.join(STEP_FIELDS)}, "
                         f"then {GRAD_PREFIX}<parameter> columns")
    names = [k[len(GRAD_PREFIX):] for k in keys if isinstance(k, str) and k.startswith(GRAD_PREFIX)]
    parsed = []
    for i, r in enumerate(rows, start=1):
        try:
            parsed.append(_step_row(r, names))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"row {i}: {exc}") from None
    settings = _run_settings(rows, [k for k in RUN_FIELDS if k in keys])
    epoch = np.array([p[0] for p in parsed], dtype=np.int64)
    step = np.array([p[1] for p in parsed], dtype=np.int64)
    backwards = (np.diff(step) <= 0) | (np.diff(epoch) < 0)
    if backwards.any():
        raise ValueError(f"row {int(np.flatnonzero(backwards)[0]) + 2}: the steps and epochs must increase "
                         "from row to row")
    return {"epoch": epoch, "step": step, "loss": np.array([p[2] for p in parsed], dtype=np.float64),
            "grad_norms": {name: np.array([p[3][j] for p in parsed], dtype=np.float64)
                           for j, name in enumerate(names)},
            "settings": settings}


def _run_settings(rows: list[dict], keys: list[str]) -> dict:
    """The run's settings of the columns ``keys``: each a word, the same in every row."""
    settings = {}
    for key in keys:
        first = rows[0][key]
        for i, r in enumerate(rows, start=1):
            value = r[key]
            if not isinstance(value, str) or not value.isidentifier():
                raise ValueError(f"row {i}: {key} {value!r} is not a name such as {_EXAMPLE[key]!r}")
            if value != first:
                raise ValueError(f"row {i}: {key} is {value!r}, row 1 says {first!r}; a file holds one run")
        settings[key] = first
    return settings


_EXAMPLE = {"variant": "classic", "activation": "sigmoid", "pool": "max"}


def steps_from_rows(rows) -> dict:
    """Per-step rows as dicts (a StepLog's, as the checkpoint holds them) in the arrays of ``read_steps``."""
    return _steps_of(list(rows))


def read_steps(path) -> dict:
    """A per-step file as NumPy arrays: {"epoch": int (R,), "step": int (R,), "loss": float (R,),
    "grad_norms": {parameter name: float (R,)}, "settings": {"variant": ..., "activation": ...,
    "pool": ...}}, one entry of grad_norms per ``grad_norm:<name>`` column in the file's order,
    one of settings per RUN_FIELDS column the file has (none in a file of an older version);
    other columns are ignored. MetricsError for a malformed file."""
    return _read(path, "steps", "per-step", _steps_of)
