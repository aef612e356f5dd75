"""Loading a student's file, and finding the student's line in a traceback."""

from __future__ import annotations

import sys
import traceback
import types
import warnings
from pathlib import Path

from .cases import LoadError


def student_frame(exc: BaseException, directory: Path):
    """The innermost traceback frame in a file of the student's directory, or None."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename).parent == directory]
    return frames[-1] if frames else None


def qualname(exc: BaseException, directory: Path) -> str:
    """The qualified name (``Linear.backward``) of the innermost function of the student's that raised."""
    name, tb = "", exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        if Path(code.co_filename).parent == directory:
            name = getattr(code, "co_qualname", code.co_name)       # co_qualname: Python 3.11+
        tb = tb.tb_next
    return name


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def load(path: Path) -> types.ModuleType:
    """Run a student's file as a module (without writing bytecode next to it: a file edited twice
    in one second must not be served from a stale cache). Raises LoadError."""
    try:
        source = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise LoadError(f"{path.name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        code = compile(source, str(path), "exec")
    except SyntaxError as exc:
        raise LoadError(f"{path.name}:{exc.lineno}: {type(exc).__name__}: {exc.msg}") from None
    module = types.ModuleType(f"lenet_np_exercise_{path.stem}")
    module.__file__ = str(path)
    sys.path.insert(0, str(path.parent))          # the student's files may import each other
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        frame = student_frame(exc, path.parent)
        where = f"{Path(frame.filename).name}:{frame.lineno}" if frame else path.name
        raise LoadError(f"{where}: {type(exc).__name__}: {first_line(exc)}") from None
    finally:
        sys.path.remove(str(path.parent))
    return module
