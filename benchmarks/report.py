"""Formatting: times, ratios and rates, markdown tables, and results written as JSON."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .datasets import N_TEST, N_TRAIN
from .timing import Stats


def fmt_time(s) -> str:
    if s is None or not math.isfinite(s):
        return "-"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def fmt_ratio(r) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:.2f}x" if r < 10 else f"{r:.1f}x"


def fmt_rate(r) -> str:
    if r is None or not math.isfinite(r):
        return "-"
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"


def e2e_table(res, base):
    """End-to-end results (from ``end_to_end``) scaled to the full epoch (60,000) and test set (10,000)."""
    def times(r):
        return r["train"].median * N_TRAIN / r["n_train"], r["eval"].median * N_TEST / r["n_test"]
    t_base = sum(times(res[base]))
    rows = []
    for name, r in res.items():
        tr, ev = times(r)
        rows.append([name, fmt_time(tr), fmt_rate(N_TRAIN / tr), fmt_time(ev), fmt_rate(N_TEST / ev), fmt_time(tr + ev),
                     fmt_ratio((tr + ev) / t_base), f"{max(r['train'].spread, r['eval'].spread):.0%}",
                     f"{r['n_train']:,}", f"{r['loss']:.3f}", f"{r['accuracy']:.3f}"])
    return md_table(["contender", "train epoch", "train ex/s", "test eval", "eval ex/s", "epoch + eval",
                     f"vs {base}", "spread", "examples/run", "last loss", "test acc"], rows)


def md_table(headers, rows, align=None) -> str:
    """A markdown table whose columns line up in a terminal too. align: string of 'l'/'r' per column."""
    rows = [[str(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(cells):
        return "| " + " | ".join(c.ljust(w) if a == "l" else c.rjust(w)
                                 for c, w, a in zip(cells, widths, align)) + " |"
    sep = "|" + "|".join(("-" * (w + 1) + ":") if a == "r" else (":" + "-" * (w + 1))
                         for w, a in zip(widths, align)) + "|"
    return "\n".join([line([str(h) for h in headers]), sep, *(line(r) for r in rows)])


def write_json(path, obj) -> None:
    def default(o):
        if isinstance(o, Stats) or callable(getattr(o, "to_json", None)):     # Stats, DeviceProfile
            return o.to_json()
        if isinstance(o, (np.integer, np.floating)):
            return o.item()
        if isinstance(o, (np.ndarray, tuple)):
            return list(o)
        if isinstance(o, Path):
            return str(o)
        return repr(o)
    Path(path).write_text(json.dumps(obj, indent=1, default=default) + "\n")


def write_report(out_dir, stem, header, head, ctx) -> tuple[Path, Path]:
    """``stem``.md and ``stem``.json in ``out_dir``: the Markdown header lines, then the lines of
    each section (``ctx.lines``), then the errors (``ctx.errors``) if any; the JSON ``head``
    (meta, machine, ...), then each section's values (``ctx.results``), then the sections
    skipped and why (where any was), then the errors where the command collects them.
    Returns the two paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = [*header, *ctx.lines]
    if ctx.errors:
        md += ["## Errors", "", *[f"- {k}: `{v}`" for k, v in ctx.errors.items()], ""]
    md_path, json_path = out_dir / f"{stem}.md", out_dir / f"{stem}.json"
    md_path.write_text("\n".join(md))
    skipped = getattr(ctx, "skipped", None)
    write_json(json_path, {**head, **ctx.results, **({"skipped": skipped} if skipped else {}),
                           **({} if ctx.errors is None else {"errors": ctx.errors})})
    return md_path, json_path
