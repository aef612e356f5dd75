"""Turn every page of the book into a Jupyter notebook: ``python docs/notebooks.py OUTDIR``.

Each ``docs/<page>.md`` becomes ``OUTDIR/<page>.ipynb`` (``make notebooks`` writes them to
notebooks/). The reader sees the same text and runs the same code:

- every ```python block becomes a code cell, in order; everything else, ```text blocks and
  blocks in any other language included, stays Markdown (the split is jupytext's);
- every relative image (``![alt](figures/NAME.png)``, ``<img src="...">``) is embedded in its
  cell as an attachment, so the notebook shows it wherever it is opened; an image that does
  not exist stops the conversion with one line naming the page and the image;
- a link to another page, ``(page.md)`` or ``(page.md#a-section)``, points at
  ``page.ipynb`` and at the section's anchor as Jupyter names it; a link to any other file of
  the repository (``../benchmarks/...``) is rewritten relative to OUTDIR so that it still
  resolves from there (kept as plain text only where no relative path exists, such as
  another drive on Windows);
- the notebook has a python3 kernelspec, and cell ids numbered in order, so the same pages
  give byte-identical notebooks; a notebook whose content did not change is not rewritten.

The notebooks expect ``lenet_np`` to be importable (``make notebooks`` installs it) and run
in any working directory: a snippet that writes a file writes it beside the notebook.
"""

from __future__ import annotations

import base64
import os
import re
import sys
from pathlib import Path
from urllib.parse import quote, unquote

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
if str(ROOT) not in sys.path:                      # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".svg": "image/svg+xml"}

# a fence opens a block at the start of a line; only ```python (what tests/test_docs.py runs)
# is code, every other fence is hidden from jupytext, which would turn ```bash into a cell
FENCE_OPEN = re.compile(r"^```([\w+-]*)[ \t]*$")
PLACEHOLDER = "lenet-np-fence-{}"
PLACEHOLDER_LINE = re.compile(r"^```lenet-np-fence-(\d+)$", re.M)

_PAREN_TARGET = r"<[^<>\n]*>|[^\s()<>]+(?:\([^\s()]*\)[^\s()<>]*)*"
_TITLE = r"""(?:\s+(?:"[^"\n]*"|'[^'\n]*'|\([^()\n]*\)))?"""
IMAGE = re.compile(r"!\[(?P<alt>[^\]\n]*)\]\(\s*(?P<target>" + _PAREN_TARGET + r")(?P<title>" + _TITLE + r")\s*\)")
LINK = re.compile(r"(?<!!)\[(?P<text>(?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(?P<target>" + _PAREN_TARGET + r")(?P<title>"
                  + _TITLE + r")\s*\)")
HTML_IMG = re.compile(r"""(?P<head><img\b[^>]*?\bsrc\s*=\s*)(?P<q>["'])(?P<target>[^"'\n]*)(?P=q)""", re.I)
REF_DEF = re.compile(r"^(?P<head> {0,3}\[[^\]\n]+\]:[ \t]*)(?P<target><[^<>\n]*>|\S+)", re.M)
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
SCHEME = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:|//)")
HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")


class ConversionError(Exception):
    """A page that cannot become a notebook (a missing image); the message is one line."""


# -- splitting a page into cells ------------------------------------------------------------------
def _hide_other_fences(text: str) -> tuple[str, list[str]]:
    """Replace the opening line of every fenced block that is not ```python by a placeholder
    jupytext leaves in Markdown; return the new text and the original lines, in order."""
    lines, hidden, i = text.split("\n"), [], 0
    while i < len(lines):
        if not lines[i].startswith("```"):
            i += 1
            continue
        m = FENCE_OPEN.match(lines[i])
        if m is None or m.group(1) != "python":
            hidden.append(lines[i])
            lines[i] = "```" + PLACEHOLDER.format(len(hidden) - 1)
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        i += 1                                     # past the closing fence
    return "\n".join(lines), hidden


def split_cells(text: str) -> list[tuple[str, str]]:
    """(cell type, source) of a page, in order: ```python blocks are "code", the rest "markdown"."""
    import jupytext

    masked, hidden = _hide_other_fences(text)
    cells = []
    for cell in jupytext.reads(masked, fmt="md").cells:
        source = cell.source
        if cell.cell_type != "code":
            source = PLACEHOLDER_LINE.sub(lambda m: hidden[int(m.group(1))], source)
            kind = "markdown"
        else:
            kind = "code"
        cells.append((kind, source))
    return cells


# -- anchors ----------------------------------------------------------------------------------------
def _plain(heading: str) -> str:
    """The text a heading shows: links and images by their text, no code or emphasis marks."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text)
    text = text.replace("`", "")
    text = re.sub(r"(\*{1,3}|\b_{1,3})(\S(?:.*?\S)?)\1(?!\w)", r"\2", text)
    return re.sub(r"\\([\\`*_{}\[\]()#+\-.!])", r"\1", text).strip()


def anchors(text: str) -> dict[str, str]:
    """Map each heading's anchor as GitHub writes it (lower case, punctuation dropped, a
    suffix -1, -2 for repeats) to its anchor in Jupyter (the text, spaces made dashes)."""
    out, seen, fenced = {}, {}, False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m is None:
            continue
        shown = _plain(m.group(2))
        slug = re.sub(r"[^\w\- ]", "", shown.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out[slug if count == 0 else f"{slug}-{count}"] = shown.replace(" ", "-")
    return out


def _fragment(frag: str, page_anchors: dict[str, str] | None) -> str:
    if not frag:
        return ""
    target = (page_anchors or {}).get(unquote(frag).lower())
    return "#" + (quote(target, safe="-_.~!$&'*+,;=:@/?") if target is not None else frag)


# -- rewriting a Markdown cell ------------------------------------------------------------------------
class _Page:
    """What rewriting the links and images of one page needs to know."""

    def __init__(self, page: Path, docs: Path, outdir: Path, all_anchors: dict[str, dict[str, str]]):
        self.page, self.docs, self.outdir, self.all_anchors = page, docs, outdir, all_anchors
        self.attachments: dict[str, dict[str, str]] = {}
        self._names: dict[str, str] = {}          # image path -> attachment name in this cell

    def where(self, target: str) -> tuple[str, str] | None:
        """(path, fragment) of a relative target, None for a URL, a bare anchor or an absolute path."""
        if target.startswith("<") and target.endswith(">"):
            target = target[1:-1]
        if SCHEME.match(target) or target.startswith("/"):
            return None
        path, _, frag = target.partition("#")
        return unquote(path.partition("?")[0]), frag

    def attach(self, target: str) -> str | None:
        """The attachment reference for an image target (embedding the file), None to leave it."""
        found = self.where(target)
        if found is None or not found[0]:
            return None
        path = Path(os.path.normpath(self.docs / found[0]))
        if not path.is_file():
            raise ConversionError(f"{self.page.name}: image {found[0]} not found (looked for {path})")
        mime = IMAGE_TYPES.get(path.suffix.lower())
        if mime is None:
            raise ConversionError(f"{self.page.name}: image {found[0]} is not one of "
                                  f"{', '.join(sorted(IMAGE_TYPES))}")
        key = str(path)
        if key not in self._names:
            name, n = path.name, 1
            while name in self.attachments:        # two images of one name in one cell
                n += 1
                name = f"{path.stem}-{n}{path.suffix}"
            data = path.read_bytes()
            value = data.decode("utf-8") if mime == "image/svg+xml" else base64.b64encode(data).decode("ascii")
            self.attachments[name] = {mime: value}
            self._names[key] = name
        return "attachment:" + quote(self._names[key])

    def link(self, target: str) -> str | None:
        """The new target of a link (None: leave it as it is; "" : no path exists, make it text)."""
        if target.startswith("#"):
            return _fragment(target[1:], self.all_anchors.get(self.page.name))
        found = self.where(target)
        if found is None or not found[0]:
            return None
        path, frag = found
        resolved = Path(os.path.normpath(self.docs / path))
        if resolved.parent == self.docs and resolved.suffix == ".md":
            return quote(resolved.stem + ".ipynb") + _fragment(frag, self.all_anchors.get(resolved.name))
        try:
            rel = os.path.relpath(resolved, self.outdir)
        except ValueError:                         # another drive: no relative path
            return ""
        return quote(Path(rel).as_posix(), safe="/-_.~") + ("#" + frag if frag else "")

    def rewrite(self, source: str) -> str:
        """Images embedded, links retargeted, outside fenced blocks and inline code."""
        self._names = {}
        self.attachments = {}
        chunks, fenced = [(True, [])], False      # (prose?, lines), fenced blocks kept as they are
        for line in source.split("\n"):
            indent = len(line) - len(line.lstrip(" "))
            if indent < 4 and line.lstrip(" ").startswith(("```", "~~~")):
                if not fenced:
                    chunks.append((False, []))
                chunks[-1][1].append(line)
                if fenced:
                    chunks.append((True, []))
                fenced = not fenced
                continue
            chunks[-1][1].append(line)
        return "\n".join(self._prose("\n".join(lines)) if prose else "\n".join(lines)
                         for prose, lines in chunks if lines)

    def _prose(self, text: str) -> str:
        def outside_code(sub, spans):
            def apply(m):
                if any(a <= m.start() < b for a, b in spans):
                    return m.group(0)
                return sub(m)
            return apply

        def image(m):
            new = self.attach(m.group("target"))
            return m.group(0) if new is None else f"![{m.group('alt')}]({new}{m.group('title')})"

        def html_image(m):
            new = self.attach(m.group("target"))
            return m.group(0) if new is None else f"{m.group('head')}{m.group('q')}{new}{m.group('q')}"

        def link(m):
            new = self.link(m.group("target"))
            if new is None:
                return m.group(0)
            if new == "":
                return m.group("text")
            return f"[{m.group('text')}]({new}{m.group('title')})"

        def ref_def(m):
            new = self.link(m.group("target"))
            return m.group(0) if not new else m.group("head") + new

        for pattern, sub in ((IMAGE, image), (HTML_IMG, html_image), (LINK, link), (REF_DEF, ref_def)):
            spans = [m.span() for m in CODE_SPAN.finditer(text)]      # inline code, left as it is
            text = pattern.sub(outside_code(sub, spans), text)
        return text


# -- pages and notebooks -----------------------------------------------------------------------------
def pages(docs: Path = DOCS) -> list[Path]:
    """The pages of the book, in the order of their names."""
    return sorted(docs.glob("*.md"))


def notebook(page: Path, outdir: Path, docs: Path | None = None,
             all_anchors: dict[str, dict[str, str]] | None = None) -> str:
    """The notebook of one page as the text of an .ipynb file (nbformat 4.5, sorted keys)."""
    import nbformat
    from nbformat import v4

    docs = page.parent if docs is None else docs
    if all_anchors is None:
        all_anchors = {p.name: anchors(p.read_text(encoding="utf-8")) for p in pages(docs)}
    rewriter = _Page(page, docs.resolve(), outdir.resolve(), all_anchors)
    cells = []
    for index, (kind, source) in enumerate(split_cells(page.read_text(encoding="utf-8"))):
        if kind == "code":
            cell = v4.new_code_cell(source)
        else:
            cell = v4.new_markdown_cell(rewriter.rewrite(source))
            if rewriter.attachments:
                cell.attachments = rewriter.attachments
        cell.id = f"cell-{index}"
        cells.append(cell)
    nb = v4.new_notebook(cells=cells, metadata={"kernelspec": dict(KERNELSPEC),
                                                "language_info": {"name": "python"}})
    nbformat.validate(nb)
    return nbformat.writes(nb, version=4).rstrip("\n") + "\n"


def convert(outdir: Path, docs: Path = DOCS) -> list[tuple[Path, bool]]:
    """Write OUTDIR/<page>.ipynb for every page; return (path, whether it changed). Every page is
    converted before any file is written, so a bad page leaves OUTDIR as it was."""
    found = pages(docs)
    all_anchors = {p.name: anchors(p.read_text(encoding="utf-8")) for p in found}
    texts = {outdir / f"{p.stem}.ipynb": notebook(p, outdir, docs, all_anchors) for p in found}
    outdir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, text in texts.items():
        data = text.encode("utf-8")
        changed = not path.is_file() or path.read_bytes() != data
        if changed:
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        written.append((path, changed))
    return written


def build_parser():
    from lenet_np import cli

    p = cli.Parser(prog="python docs/notebooks.py",
                   description="Turn every page of the book (docs/*.md) into a Jupyter notebook "
                               "OUTDIR/<page>.ipynb, with the figures inline.")
    p.add_argument("outdir", type=cli.output_dir, metavar="OUTDIR",
                   help="directory for the notebooks (created if needed), e.g. notebooks")
    return p


def _run(args) -> int:
    try:
        import jupytext  # noqa: F401
        import nbformat  # noqa: F401
    except ImportError as exc:
        print(f"python docs/notebooks.py: error: {exc.name} is not installed; "
              "install the docs extra: pip install -e '.[docs]'", file=sys.stderr)
        return 1
    try:
        written = convert(args.outdir, DOCS)
    except ConversionError as exc:
        print(f"python docs/notebooks.py: error: {exc}", file=sys.stderr)
        return 1
    for path, changed in written:
        print(path if changed else f"{path} (unchanged)")
    return 0


def main(argv=None) -> int:
    from lenet_np import cli

    return cli.guard(_run, build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
