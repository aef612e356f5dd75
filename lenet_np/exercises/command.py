"""The command line: ``python -m lenet_np.exercises new DIR | check DIR [--layer NAME ...] [--show] | solutions DIR``.

``new`` writes one file per layer, each with its forward written and its backward raising
NotImplementedError under a docstring that says what to compute; ``check`` runs the
student's backward against finite differences, lenet_np's layers and the traps
(checker.py) and prints one line per layer (with --show, the smallest failing case: show.py);
``solutions`` writes the same files solved.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .. import cli
from .checker import NAME_WIDTH, LoadError, Result, check, format_result, load
from .layers import EXERCISES
from .show import show

SOURCES = Path(__file__).resolve().parent / "solutions"
BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
PROG = "python -m lenet_np.exercises"
ORDER = tuple(EXERCISES)


def source(name: str) -> str:
    """The solved file of one exercise, markers included."""
    return (SOURCES / f"{name}.py").read_text(encoding="utf-8")


def skeleton(text: str) -> str:
    """The file with every solution block replaced by ``raise NotImplementedError(...)``."""
    out, inside, owner = [], False, ""
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        m = re.match(r"\s*(?:class|def)\s+(\w+)", line)
        if m:
            owner = m.group(1) if line.startswith(("class", "def")) else f"{owner.split('.')[0]}.{m.group(1)}"
        if stripped == BEGIN:
            indent = line[:len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("{owner}: yours to write, see the docstring above")\n')
            inside = True
        elif stripped == END:
            inside = False
        elif not inside:
            out.append(line)
    return "".join(out)


def solved(text: str) -> str:
    """The file without its marker lines."""
    return "".join(line for line in text.splitlines(keepends=True) if line.strip() not in (BEGIN, END))


def readme(directory: str, solutions: bool) -> str:
    files = "\n".join(f"    {name}.py" for name in ORDER)
    if solutions:
        return (f"# Backprop exercises: the solutions\n\nEach file solves one layer's backward, written to be read "
                f"(loops where they are clearest):\n\n{files}\n\nThey pass every check:\n\n"
                f"    {PROG} check {directory}\n")
    return (f"# Backprop exercises\n\nEach file holds one layer. Its forward is written; its backward raises "
            f"NotImplementedError under a docstring that says what to compute, with shapes. Write it, then check "
            f"it.\nA good order:\n\n{files}\n\nCheck one layer, or all of them:\n\n"
            f"    {PROG} check {directory} --layer linear\n    {PROG} check {directory}\n\n"
            "A failure prints the worst error and a hint: which gradient is wrong (dx, dW, db) and the likely "
            "mistake;\n--show adds the smallest failing case, every number of it, to work through by hand:\n\n"
            f"    {PROG} check {directory} --layer linear --show\n\n"
            "Stuck? The reference solutions, to compare with once you have tried:\n\n"
            f"    {PROG} solutions SOME_OTHER_DIR\n")


def write_files(directory: Path, text: str, files: dict) -> int:
    """Write ``files`` ({name: text}) into directory, refusing to replace any that exists."""
    existing = [name for name in files if (directory / name).exists()]
    if existing:
        shown = ", ".join(existing[:3]) + (f" and {len(existing) - 3} more" if len(existing) > 3 else "")
        print(f"error: {directory} already holds {shown}: {text} never overwrites files (choose another "
              "directory, or remove those files to start over)", file=sys.stderr)
        return 1
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(content, encoding="utf-8")
    return 0


def run_new(args) -> int:
    files = {f"{name}.py": skeleton(source(name)) for name in ORDER}
    files["README.md"] = readme(str(args.dir), solutions=False)
    status = write_files(args.dir, "new", files)
    if status == 0:
        print(f"wrote {len(ORDER)} exercises to {args.dir} (see its README.md); start with linear.py, then\n"
              f"    {PROG} check {args.dir} --layer linear")
    return status


def run_solutions(args) -> int:
    files = {f"{name}.py": solved(source(name)) for name in ORDER}
    files["README.md"] = readme(str(args.dir), solutions=True)
    status = write_files(args.dir, "solutions", files)
    if status == 0:
        print(f"wrote the solutions of {len(ORDER)} exercises to {args.dir}")
    return status


def run_check(args) -> int:
    directory = args.dir
    names = list(dict.fromkeys(args.layer or EXERCISES))
    if not any((directory / EXERCISES[name].file).is_file() for name in names):
        wanted = ", ".join(EXERCISES[name].file for name in names)
        print(f"error: {directory} holds none of {wanted}; write the exercises there with {PROG} new {directory}",
              file=sys.stderr)
        return 1
    passed, todo = 0, []
    for name in names:
        ex = EXERCISES[name]
        path = directory / ex.file
        module = None
        if not path.is_file():
            result = Result("missing", f"no {ex.file} in {directory} ({PROG} new OTHER_DIR writes a fresh copy)")
        else:
            try:
                module = load(path)
                result = check(ex, module, args.examples)
            except LoadError as exc:
                result = Result("cannot load", f"{exc} (the other layers are checked all the same)")
            except (Exception, SystemExit) as exc:   # not foreseen by the checks: say it, check the others
                result = Result("FAIL", f"the check stopped: {type(exc).__name__}: {exc}")
        lines = format_result(ex, result)
        if args.show and result.status == "FAIL" and result.failures and module is not None:
            try:
                lines += show(ex, module, result)
            except (Exception, SystemExit) as exc:
                lines.append(f"{'':<{NAME_WIDTH}}show stopped: {type(exc).__name__}: {exc}")
        for line in lines:
            print(line, flush=True)
        if result.status == "pass":
            passed += 1
        else:
            todo.append(ex.file)
    print()
    if not todo:
        print(f"All {passed} layers pass: each backward agrees with finite differences, with lenet_np's layer on "
              "random shapes and on every trap.")
        return 0
    print(f"{passed} of {len(names)} layers pass; next: {todo[0]}")
    return 1


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(
        prog=PROG,
        description="Write the backward pass of LeNet's layers yourself, and have it checked: against finite "
                    "differences, against lenet_np's own layers on random shapes, and on the traps that catch "
                    "real mistakes.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=cli.Parser, metavar="{new,check,solutions}",
                           help="new: write the exercises; check: check them; solutions: write the solutions")
    new = sub.add_parser("new", help="write the exercises (one file per layer) into DIR",
                         description="Write one file per layer into DIR: the forward written, the backward raising "
                                     "NotImplementedError under a docstring that says what to compute. Existing "
                                     "files are never overwritten.")
    new.add_argument("dir", type=cli.output_dir, metavar="DIR", help="the directory to write to (created if needed)")
    new.set_defaults(run=run_new)
    chk = sub.add_parser("check", help="check the backward passes written in DIR",
                         description="Check each layer's backward in DIR against central finite differences "
                                     "(float64), against lenet_np's layer on random shapes (Hypothesis, fixed seed) "
                                     "and on traps; print one line per layer and, for a failure, the worst error "
                                     "and a hint. Exit status 0 only when every selected layer passes.")
    chk.add_argument("dir", type=cli.existing_dir, metavar="DIR", help="the directory that new wrote")
    chk.add_argument("--layer", nargs="+", action="extend", choices=list(EXERCISES), metavar="NAME",
                     help=f"check only these layers: {', '.join(EXERCISES)} (default: all)")
    chk.add_argument("--examples", type=cli.int_in_range(1, 1000), default=15,
                     help="random shapes compared with lenet_np per layer, 1..1000 (default 15)")
    chk.add_argument("--show", action="store_true",
                     help="for a failing layer, print its smallest failing case: x, G = dL/dy, your gradient, "
                          "the expected one and their difference")
    chk.set_defaults(run=run_check)
    sol = sub.add_parser("solutions", help="write the reference solutions into DIR",
                         description="Write the solved files into DIR, written for reading. Existing files are never "
                                     "overwritten.")
    sol.add_argument("dir", type=cli.output_dir, metavar="DIR", help="the directory to write to (created if needed)")
    sol.set_defaults(run=run_solutions)
    return p


def main(argv=None) -> int:
    """Run the command line; the exit status (0: done or all pass, 1: a check fails or a file error, 2: bad
    arguments)."""
    args = build_parser().parse_args(argv)
    return cli.guard(args.run, args)


assert NAME_WIDTH > max(len(name) for name in EXERCISES)
