"""What every command line of lenet_np shares: checking its arguments, and ending cleanly.

The ``type=`` functions below are given to ``argparse``: a value that does not fit makes
the command stop before any work with exit status 2 and one line (``Parser``), for example

    python -m lenet_np.train: error: argument --epochs: expected a whole number >= 1, got '0' (see --help)

``guard`` runs a command's body so that a failure to write an output (a full disk, a
vanished directory), running out of memory, or a Ctrl-C outside the training steps also
ends in one line (exit status 1 or 130), never in a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import sys
from pathlib import Path

from . import backend


class Parser(argparse.ArgumentParser):
    """argparse's parser, but a bad command line is one line on stderr (no usage block):
    the program, the flag, the value and what would be right; exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _fail(value, expected: str):
    """The ArgumentTypeError argparse turns into ``argument --flag: <message>``."""
    return argparse.ArgumentTypeError(f"expected {expected}, got {value!r}")


# -- numbers --------------------------------------------------------------------------------
def int_in_range(low: int | None = None, high: int | None = None):
    """A ``type=`` for a whole number in ``low..high`` (either bound may be None: open)."""
    if low is not None and high is not None:
        expected = f"a whole number from {low} to {high}"
    elif low is not None:
        expected = f"a whole number >= {low}"
    elif high is not None:
        expected = f"a whole number <= {high}"
    else:
        expected = "a whole number"

    def parse(text: str) -> int:
        try:
            value = int(text.strip())
        except ValueError:
            raise _fail(text, expected) from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise _fail(text, expected)
        return value

    parse.__name__ = "int"   # argparse names the type in some messages
    return parse


positive_int = int_in_range(1)
non_negative_int = int_in_range(0)


def _float(text: str, expected: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _fail(text, expected) from None
    if not math.isfinite(value):
        raise _fail(text, expected)
    return value


def positive_float(text: str) -> float:
    """A ``type=`` for a finite number > 0 (a learning rate)."""
    expected = "a finite number > 0"
    value = _float(text, expected)
    if value <= 0:
        raise _fail(text, expected)
    return value


def non_negative_float(text: str) -> float:
    """A ``type=`` for a finite number >= 0 (a momentum)."""
    expected = "a finite number >= 0"
    value = _float(text, expected)
    if value < 0:
        raise _fail(text, expected)
    return value


# -- devices --------------------------------------------------------------------------------
def device(text: str) -> str:
    """A ``type=`` for a device: "auto", "cpu", "cuda" (or "cuda:0"); returns "cpu" or "cuda".

    "cuda" without CuPy or without a GPU is rejected here, with the reason."""
    try:
        return backend.parse_device(text)
    except (ValueError, RuntimeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# -- paths ----------------------------------------------------------------------------------
def existing_dir(text: str) -> Path:
    """A ``type=`` for a directory that must exist."""
    if not text:
        raise _fail(text, "a directory")
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such directory")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: not a directory")
    return path


def existing_file(text: str) -> Path:
    """A ``type=`` for a file that must exist (a checkpoint, a metrics file)."""
    if not text:
        raise _fail(text, "a file name")
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a file")
    return path


def _nearest_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_dir(directory: Path, text: str) -> None:
    """Raise ArgumentTypeError unless a new file can be created in ``directory`` (the
    directory itself or its nearest existing ancestor): tried with a probe file that is
    removed at once, since permission bits do not tell (root, read-only mounts, /proc)."""
    base = _nearest_existing(directory)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: {base} is not a directory")
    probe = base / f".lenet_np-probe-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        where = "" if base == directory.absolute() else f" (creating directories under {base})"
        raise argparse.ArgumentTypeError(f"{text}: cannot write there{where}: {exc.strerror or exc}") from None
    os.unlink(probe)


def output_file(*suffixes: str):
    """A ``type=`` for a file to be written: its name ends with one of ``suffixes`` (any
    when none is given), it is not a directory, and its directory exists or can be
    created and takes new files."""
    wanted = " or ".join(suffixes)

    def parse(text: str) -> Path:
        if not text:
            raise _fail(text, f"a file name ending in {wanted}" if suffixes else "a file name")
        path = Path(text).expanduser()
        if path.is_dir():
            raise argparse.ArgumentTypeError(f"{text}: is a directory, expected a file name")
        if suffixes and path.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(f"{text}: the file name must end in {wanted}")
        _check_writable_dir(path.parent, text)
        return path

    parse.__name__ = "output file"
    return parse


def output_dir(text: str) -> Path:
    """A ``type=`` for a directory to write into: an existing directory, or a path that can
    be created (it is created only when the command writes)."""
    if not text:
        raise _fail(text, "a directory")
    path = Path(text).expanduser()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: exists and is not a directory")
    _check_writable_dir(path, text)
    return path


# -- ending cleanly -----------------------------------------------------------------------------
def os_error_line(exc: OSError) -> str:
    """One line for an OSError (a full disk, a vanished directory): the file and the system's reason."""
    return f"{exc.filename}: {exc.strerror or exc}" if exc.filename is not None else str(exc.strerror or exc)


def guard(body, *args, hint=None) -> int:
    """Run ``body(*args)`` and return its exit status; an OSError or a MemoryError becomes one
    line on stderr and status 1, a Ctrl-C the line "interrupted" and status 130. ``hint()``,
    when given, returns text for the end of each line (e.g. where the last checkpoint is and
    how to resume)."""
    try:
        return body(*args)
    except KeyboardInterrupt:
        print(f"\ninterrupted{hint() if hint else ''}", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"error: {os_error_line(exc)}{hint() if hint else ''}", file=sys.stderr)
        return 1
    except MemoryError as exc:
        print(f"error: out of memory ({exc or 'no details'}); try a smaller --batch-size{hint() if hint else ''}",
              file=sys.stderr)
        return 1
