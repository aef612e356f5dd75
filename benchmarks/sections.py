"""What the benchmark commands share: a section, the context its function reads, and the loop
that runs a command's list of sections.

A section is one ``Section``: its name, the heading it logs, what it measures, and a function
that takes the command's ``Context`` and returns its ``Part`` of the report (values for the
JSON file, lines of the Markdown file). A command (``benchmarks/run.py``,
``benchmarks/gpu_check.py``) is one list of sections, run in order by ``run_sections``, and
one header; ``report.write_report`` writes the two files. A new section is one more entry in
a command's list.

Nothing here needs NumPy: ``gpu_check`` imports this before it knows whether the benchmark
code can run at all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace


def log(*args, **kwargs):
    """print, flushed at once (the commands' progress goes to a terminal, a pipe or a log file)."""
    print(*args, **kwargs, flush=True)


@dataclass
class Part:
    """A section's part of the report: JSON key -> value, Markdown lines, and the paths of any
    files it wrote beside the report (a plot)."""

    json: dict
    lines: list = field(default_factory=list)
    files: list = field(default_factory=list)


@dataclass(frozen=True)
class Section:
    """One part of a benchmark command.

    ``name``: what ``--only`` and the report's errors call it. ``title``: its heading in the
    log, ``{fields}`` filled from what the command's ``watch`` returns. ``measures``: what it
    measures, in one line (the command's docstring lists it). ``run``: context -> Part.
    ``keys``: the JSON keys its Part fills (null when it does not run). ``timed``: it measures
    something (the command watches the machine while it runs and may leave it out); False for
    a section that reads other sections' results or runs no timing. ``absent``: its lines in
    the report when it does not run.
    """

    name: str
    title: str
    measures: str
    run: Callable[[SimpleNamespace], Part]
    keys: tuple = ()
    timed: bool = True
    absent: tuple = ()


class Context(SimpleNamespace):
    """What one run of a command hands its sections: ``args``, ``prof`` (the profile: sizes,
    repeats), ``results`` (JSON key -> value of the sections so far, where a later section reads
    an earlier one's), ``lines`` and ``files`` of the report so far, ``errors`` (section name ->
    message; None where the command lets a failure stop it), and what the command adds (the
    machine, the device, the contenders to run)."""

    def __init__(self, **fields):
        super().__init__(**{"results": {}, "lines": [], "files": [], "errors": None, **fields})


def failed(ctx: Context, name: str, exc: BaseException) -> None:
    """Record and log a section's failure; the command goes on with the next section."""
    ctx.errors[name] = f"{type(exc).__name__}: {exc}"
    log(f"  FAILED: {ctx.errors[name]}")


def run_sections(sections, ctx: Context, chosen=lambda section: True, watch=lambda section: {}) -> None:
    """Run the ``chosen`` sections in order, each after its heading, and add each one's Part
    to ``ctx``. ``watch(section)`` is called as each chosen section starts (and with None once
    after the last); it returns the fields of the section's title. Where ``ctx.errors`` is a
    dict, a section that raises is recorded there and the next one runs."""
    for section in sections:
        if not chosen(section):
            ctx.results.update(dict.fromkeys(section.keys))
            ctx.lines += section.absent
            continue
        log("\n## " + section.title.format(**watch(section)))
        try:
            part = section.run(ctx)
        except Exception as exc:
            if ctx.errors is None:
                raise
            failed(ctx, section.name, exc)
            part = Part(dict.fromkeys(section.keys))
        unknown = set(part.json) - set(section.keys)
        if unknown:
            raise ValueError(f"section {section.name}: its part fills {sorted(unknown)}, not among its keys")
        ctx.results.update({key: part.json.get(key) for key in section.keys})
        ctx.lines += part.lines
        ctx.files += part.files
    watch(None)
