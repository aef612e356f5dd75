"""What the benchmark commands share: a section, the context its function reads, and the loop
that runs a command's list of sections.

A section is one ``Section``: its name, the heading it logs, what it measures, and a function
that takes the command's ``Context`` and returns its ``Part`` of the report (values for the
JSON file, lines of the Markdown file). A command (``benchmarks/run.py``,
``benchmarks/gpu_check.py``) is one list of sections, run in order by ``run_sections``, and
one header; ``report.write_report`` writes the two files. A new section is one more entry in
a command's list.

A command with a time limit (``ctx.deadline``, a ``time.perf_counter`` time) gives each section
a budget (``run_sections(..., budget=)``): the section runs only while at least half of it is
left of the whole, and reads its own deadline from ``ctx.section_deadline``; a section left out
for want of time, or one that raises ``Skipped``, gets a note in the report instead of its part.

Nothing here needs NumPy: ``gpu_check`` imports this before it knows whether the benchmark
code can run at all.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace

MIN_SHARE = 0.5      # a section with a budget runs only while this share of it is left of the whole


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
    the report when it is not chosen. ``heading``: its heading in the report, for the note
    when it is skipped (default: ``title`` up to its first ``"   ("``).
    """

    name: str
    title: str
    measures: str
    run: Callable[[SimpleNamespace], Part]
    keys: tuple = ()
    timed: bool = True
    absent: tuple = ()
    heading: str = ""

    @property
    def report_heading(self) -> str:
        return self.heading or self.title.split("   (")[0]


class Skipped(Exception):
    """Raised by a section that cannot run here (no GPU, out of time, a failed preflight): its
    message becomes the report's note, and it is not an error."""


class Context(SimpleNamespace):
    """What one run of a command hands its sections: ``args``, ``prof`` (the profile: sizes,
    repeats), ``results`` (JSON key -> value of the sections so far, where a later section reads
    an earlier one's), ``lines`` and ``files`` of the report so far, ``errors`` (section name ->
    message; None where the command lets a failure stop it), and what the command adds (the
    machine, the device, the contenders to run). ``skipped``: section name -> why it did not run.
    ``deadline`` (optional): when the whole command must end; ``section_deadline``: when the
    running section must (set by ``run_sections`` from the section's budget)."""

    def __init__(self, **fields):
        super().__init__(**{"results": {}, "lines": [], "files": [], "errors": None, "skipped": {}, **fields})


def time_left(ctx: Context) -> float:
    """Seconds left to the running section: to its own deadline or the command's, whichever
    comes first (infinite without either)."""
    ends = [t for t in (getattr(ctx, "deadline", None), getattr(ctx, "section_deadline", None)) if t is not None]
    return min(ends) - time.perf_counter() if ends else float("inf")


def failed(ctx: Context, name: str, exc: BaseException) -> None:
    """Record and log a section's failure; the command goes on with the next section."""
    ctx.errors[name] = f"{type(exc).__name__}: {exc}"
    log(f"  FAILED: {ctx.errors[name]}")


def skip(ctx: Context, section: Section, why: str) -> None:
    """Leave ``section`` out with a note saying why (its JSON keys null)."""
    ctx.skipped[section.name] = why
    ctx.results.update(dict.fromkeys(section.keys))
    ctx.lines += [f"## {section.report_heading}", "", f"Skipped: {why}", ""]
    log(f"  skipped: {why}")


def run_sections(sections, ctx: Context, chosen=lambda section: True, watch=lambda section: {},
                 budget=lambda section: None) -> None:
    """Run the ``chosen`` sections in order, each after its heading, and add each one's Part
    to ``ctx``. ``watch(section)`` is called as each chosen section starts (and with None once
    after the last); it returns the fields of the section's title. Where ``ctx.errors`` is a
    dict, a section that raises is recorded there and the next one runs.

    ``budget(section)``: the seconds the section may take, or None. With ``ctx.deadline`` set,
    a section whose budget is more than twice the time left (``MIN_SHARE``) is skipped with a
    note; one that runs finds ``ctx.section_deadline`` = now + its budget (or the command's
    deadline, if that comes first). A section that raises ``Skipped`` gets its message as the
    note."""
    for section in sections:
        if not chosen(section):
            ctx.results.update(dict.fromkeys(section.keys))
            ctx.lines += section.absent
            continue
        log("\n## " + section.title.format(**watch(section)))
        seconds, deadline = budget(section), getattr(ctx, "deadline", None)
        ctx.section_deadline = None
        if seconds is not None and deadline is not None:
            now = time.perf_counter()
            if deadline - now < seconds * MIN_SHARE:
                skip(ctx, section, f"out of time ({max(0.0, deadline - now):.0f} s of the whole run's budget left, "
                                   f"this section's budget is {seconds:.0f} s).")
                continue
            ctx.section_deadline = min(deadline, now + seconds)
        try:
            part = section.run(ctx)
        except Skipped as why:
            skip(ctx, section, str(why))
            continue
        except Exception as exc:
            if ctx.errors is None:
                raise
            failed(ctx, section.name, exc)
            part = Part(dict.fromkeys(section.keys))
        finally:
            ctx.section_deadline = None
        unknown = set(part.json) - set(section.keys)
        if unknown:
            raise ValueError(f"section {section.name}: its part fills {sorted(unknown)}, not among its keys")
        ctx.results.update({key: part.json.get(key) for key in section.keys})
        ctx.lines += part.lines
        ctx.files += part.files
    watch(None)
