"""What the tests of python -m lenet_np.exercises share: running the command line, reading its
report, and writing a solution with one deliberate mistake in it."""

from __future__ import annotations

from pathlib import Path

from lenet_np.exercises import EXERCISES, main
from lenet_np.exercises.command import solved, source

ROOT = Path(__file__).resolve().parent.parent.parent


def run(capsys, *argv):
    """(exit status, stdout, stderr) of the command line."""
    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return status, out, err


def layer_lines(out: str) -> dict:
    """{layer: [its status line, hint lines...]} from check's output."""
    lines, current = {}, None
    for line in out.splitlines():
        name = line.split(" ", 1)[0]
        if name in EXERCISES:
            current = name
            lines[name] = [line]
        elif line.startswith(" ") and current:
            lines[current].append(line.strip())
    return lines


def write_layer(directory: Path, name: str, old: str = "", new: str = "", edits: tuple = ()) -> Path:
    """The solution of one layer with ``old`` replaced by ``new``, and each (old, new) of ``edits``
    after it: the deliberate mistakes."""
    text = solved(source(name))
    for before, after in ((old, new), *edits):
        if before:
            assert text.count(before) == 1, before
            text = text.replace(before, after)
    directory.mkdir(exist_ok=True)
    path = directory / f"{name}.py"
    path.write_text(text)
    return path


def check_hint(tmp_path, capsys, name, old, new, tensor, words, edits=()):
    """The layer with ``old`` replaced by ``new`` (and ``edits``) fails, names ``tensor`` as wrong and
    gives a hint holding ``words``; the rules it does not match stay silent. Returns the hint lines."""
    write_layer(tmp_path, name, old, new, edits)
    status, out, err = run(capsys, "check", tmp_path, "--layer", name)
    assert status == 1
    (line, *hints) = layer_lines(out)[name]
    assert "FAIL" in line and f"{tensor}" in line.split("FAIL", 1)[1].split(":")[0], line
    assert any(words in h for h in hints), (words, hints)
    # the other rules stay silent: each speaks only where its premise holds
    if "= where += belongs" not in words:
        assert not any("= where += belongs" in h for h in hints), hints
    assert not any("returns zeros" in h for h in hints), hints
    assert len(set(hints)) == len(hints), hints
    return hints
