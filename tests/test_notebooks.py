"""The book as notebooks: docs/notebooks.py turns every page into a notebook, and every notebook runs.

All pages are converted into a temporary directory and executed with nbclient, cell by cell,
in one IPython kernel started from the interpreter that runs the tests (``sys.executable``,
through a kernelspec written to a temporary directory, so no system-wide "python3" kernel is
needed). Between notebooks the kernel's namespace is reset and its working directory moved
to a fresh temporary directory: each notebook starts as in a new kernel (as tests/test_docs.py
runs each page in a new namespace) without paying a kernel start-up per page. Matplotlib
draws inline, as in Jupyter, so a figure is an output of its cell; "cuda" is the CuPy stand-in
where there is no GPU, as in tests/conftest.py.

An executed notebook shows what its asserts check: most of its code cells print an array, a
shape or a number, or draw a small plot (``test_notebook_runs`` counts them).
"""

from __future__ import annotations

import base64
import copy
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .test_docs import DOCS, PAGES, ROOT, python_blocks

pytest.importorskip("jupytext")
pytest.importorskip("ipykernel")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

CELL_TIMEOUT = 120          # seconds for one cell on a busy machine; the book's cells take well under 1
INLINE = "module://matplotlib_inline.backend_inline"        # Jupyter's own: a figure becomes a PNG output
# pages whose code cells do not (yet) mostly show output: the number of cells that do may not drop
QUIET = {"explorer.md": 0, "index.md": 0, "tools.md": 3}
PLOT_MAX_PIXELS = (640, 480)                                # a plot of the book is small
KERNEL = "lenet-np-test"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# a PNG of one red pixel
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")


def _load_converter():
    spec = importlib.util.spec_from_file_location("docs_notebooks", DOCS / "notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nbconv = _load_converter()


# -- running notebooks ---------------------------------------------------------------------------
# run before each notebook: the same surroundings as tests/test_docs.py, then an empty namespace
RESET = """\
import os as _os, sys as _sys
_os.chdir({cwd!r})
if "matplotlib.pyplot" in _sys.modules:
    _sys.modules["matplotlib.pyplot"].close("all")
from lenet_np import backend as _backend
if not _backend.cupy_available():
    from tests import cupy_standin as _standin
    _backend.use_cuda_module(_standin.module)
%reset -f
"""


class Kernel:
    """One IPython kernel of this interpreter, reused for every notebook (restarted if it dies)."""

    def __init__(self, base: Path):
        from jupyter_client import AsyncKernelManager
        from jupyter_client.kernelspec import KernelSpecManager

        spec = base / "kernels" / KERNEL
        spec.mkdir(parents=True)
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        (spec / "kernel.json").write_text(json.dumps({
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "lenet_np tests", "language": "python",
            "env": {"MPLBACKEND": INLINE, "PYTHONPATH": path, "IPYTHONDIR": str(base / "ipython")},
        }))
        self.base = base
        self.km = AsyncKernelManager(kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(base / "kernels")]),
                                     kernel_name=KERNEL, connection_file=str(base / "connection.json"))
        self.kc = None                             # one client too, made by the first NotebookClient
        self._sync = nbclient.util.run_sync

    def ensure_running(self):
        if not self.km.has_kernel:
            self._sync(self.km.start_kernel)(cwd=str(self.base),
                                             extra_arguments=["--HistoryManager.hist_file=:memory:"])
        elif not self._sync(self.km.is_alive)():
            self._drop_client()
            self._sync(self.km.restart_kernel)(now=True)

    def _drop_client(self):
        if self.kc is not None:
            self.kc.stop_channels()
            self.kc = None

    def shutdown(self):
        self._drop_client()
        if self.km.has_kernel:
            self._sync(self.km.shutdown_kernel)(now=True)

    def run(self, nb, cwd: Path, label: str, lines: list[int] | None = None):
        """Execute the code cells of ``nb`` in order in a clean namespace with ``cwd`` as working
        directory; a failing cell fails the test with the page, the cell and the error."""
        from nbclient.exceptions import CellExecutionError

        self.ensure_running()
        work = copy.deepcopy(nb)                   # the reset runs as an extra first cell
        work.cells.insert(0, nbformat.v4.new_code_cell(RESET.format(cwd=str(cwd))))
        client = nbclient.NotebookClient(work, km=self.km, timeout=CELL_TIMEOUT, interrupt_on_timeout=True,
                                         allow_errors=False, kernel_name=KERNEL)
        code = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"]
        failure = None
        client.kc = self.kc
        with client.setup_kernel():
            self.kc = client.kc
            try:
                client.execute_cell(work.cells[0], 0, store_history=False)
                for k, index in enumerate(code):
                    where = f"{label}: code cell {k + 1} of {len(code)} (notebook cell {index}"
                    where += f", page line {lines[k]})" if lines and k < len(lines) else ")"
                    try:
                        client.execute_cell(work.cells[index + 1], index + 1)
                    except CellExecutionError as exc:
                        if exc.ename == "KeyboardInterrupt":        # interrupted at the timeout
                            failure = f"{where} ran past the timeout of {CELL_TIMEOUT} s"
                        else:
                            failure = f"{where} failed: {exc.ename}: {exc.evalue}\n{ANSI.sub('', exc.traceback)}"
                    except Exception as exc:       # a dead kernel
                        failure = f"{where} failed: {type(exc).__name__}: {exc}"
                    if failure:
                        break
            except BaseException:
                self._drop_client()                # a fresh client for the next notebook
                raise
        if failure:
            pytest.fail(failure, pytrace=False)     # outside the except: no chained nbclient report
        return work.cells[1:]


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    k = Kernel(tmp_path_factory.mktemp("kernel"))
    try:
        yield k
    finally:
        k.shutdown()


def convert(page: Path, tmp_path: Path):
    """(the page's text, its notebook), converted now: the pages may be edited while the tests run."""
    text = page.read_text(encoding="utf-8")
    return text, nbformat.reads(nbconv.notebook(page, tmp_path / "notebooks", DOCS), as_version=4)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_notebook_runs(page, kernel, tmp_path):
    text, nb = convert(page, tmp_path)
    (tmp_path / "cwd").mkdir()
    ran = kernel.run(nb, tmp_path / "cwd", page.name, [line for line, _ in python_blocks(text)])
    code = [cell for cell in ran if cell.cell_type == "code"]
    assert all(cell.execution_count for cell in code)
    shown = [k for k, cell in enumerate(code) if cell.outputs]
    if page.name in QUIET:
        assert len(shown) >= QUIET[page.name], f"{page.name}: {len(shown)} of {len(code)} code cells show output"
    elif code:
        silent = [k + 1 for k in range(len(code)) if k not in shown]
        assert 2 * len(shown) > len(code), (f"{page.name}: only {len(shown)} of {len(code)} code cells show output "
                                            f"(silent: {silent}); print what the asserts check, or plot it")
    for k, cell in enumerate(code):
        for out in cell.outputs:
            assert out.get("name") != "stderr", f"{page.name}: code cell {k + 1} writes to stderr: {out.text[:200]}"
            if "image/png" in out.get("data", {}):
                width, height = png_size(base64.b64decode(out.data["image/png"]))
                assert width <= PLOT_MAX_PIXELS[0] and height <= PLOT_MAX_PIXELS[1], \
                    f"{page.name}: code cell {k + 1} draws a {width}x{height} plot"


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_failing_cell_names_page_cell_and_error(kernel, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# t"), nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("assert x == 2, 'x is not 2'")])
    with pytest.raises(pytest.fail.Exception) as info:
        kernel.run(nb, tmp_path, "some.md", [3, 7])
    first = str(info.value).splitlines()[0]
    assert first == "some.md: code cell 2 of 2 (notebook cell 2, page line 7) failed: AssertionError: x is not 2"


def test_cells_start_clean_in_their_own_directory(kernel, tmp_path):
    """A name from the previous notebook is gone; files land in the notebook's directory."""
    first = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "leftover = 1\nwith open('out.txt', 'w') as f:\n    f.write('x')\nprint('wrote')\nleftover + 1")])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    outputs = kernel.run(first, tmp_path / "a", "first")[0].outputs
    assert [o.get("text") for o in outputs if o.output_type == "stream"] == ["wrote\n"]
    assert [o.data["text/plain"] for o in outputs if o.output_type == "execute_result"] == ["2"]
    second = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import os, matplotlib\nassert 'leftover' not in dir()\nassert not os.path.exists('out.txt')\n"
        f"assert matplotlib.get_backend() == {INLINE!r}")])
    kernel.run(second, tmp_path / "b", "second")
    assert (tmp_path / "a" / "out.txt").read_text() == "x"


# -- the conversion -------------------------------------------------------------------------------
def _targets(text: str) -> str:
    """The text with every link and image target blanked, blank lines dropped."""
    text = re.sub(r"\]\((?:<[^>]*>|[^()\s]+(?:\([^()\s]*\))*)(\s+\"[^\"]*\")?\)", "]()", text)
    text = re.sub(r"""(<img\b[^>]*?\bsrc\s*=\s*)(["'])[^"']*\2""", r"\1\2\2", text, flags=re.I)
    text = re.sub(r"^( {0,3}\[[^\]\n]+\]:[ \t]*)\S+", r"\1", text, flags=re.M)
    return "\n".join(line for line in text.splitlines() if line.strip())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_notebook_is_the_page(page, tmp_path):
    """Same code cells as tests/test_docs.py runs, same text; a python3 kernel; ids in order."""
    text, nb = convert(page, tmp_path)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec == {"display_name": "Python 3 (ipykernel)", "language": "python",
                                      "name": "python3"}
    assert [c.source + "\n" for c in nb.cells if c.cell_type == "code"] == [b for _, b in python_blocks(text)]
    shown = "\n".join(c.source if c.cell_type == "markdown" else f"```python\n{c.source}\n```" for c in nb.cells)
    assert _targets(shown) == _targets(text)
    assert [c.id for c in nb.cells] == [f"cell-{i}" for i in range(len(nb.cells))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_links_notebooks_and_embeds_its_figures(page, tmp_path):
    """No link to a page's .md is left, every relative image is attached."""
    name, (text, nb) = page.name, convert(page, tmp_path)
    embedded = {value for cell in nb.cells for bundle in cell.get("attachments", {}).values()
                for value in bundle.values()}
    prose = re.sub(r"`[^`\n]*`", "", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
    for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", prose):
        if not re.match(r"[a-z]+:", target):
            data = (DOCS / target).read_bytes()
            assert base64.b64encode(data).decode() in embedded or data.decode(errors="replace") in embedded, target
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        prose = re.sub(r"^```.*?^```", "", cell.source, flags=re.S | re.M)
        prose = re.sub(r"`[^`]*`", "", prose)
        for target in re.findall(r"\]\(([\w-]+\.md)(?:#[^)]*)?\)", prose):
            assert not (DOCS / target).is_file(), f"{name}: link to {target} not rewritten"
        for target in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", prose):
            assert target.startswith(("attachment:", "http:", "https:", "data:")), f"{name}: {target} not embedded"
            if target.startswith("attachment:"):
                assert target[len("attachment:"):] in cell.get("attachments", {}), f"{name}: {target} missing"


def make_book(tmp_path: Path, pages: dict[str, str]) -> Path:
    """A small repository: tmp/repo/docs/<pages>, a figure, and a file outside docs."""
    docs = tmp_path / "repo" / "docs"
    (docs / "figures").mkdir(parents=True)
    (docs / "figures" / "dot.png").write_bytes(PNG)
    (tmp_path / "repo" / "bench").mkdir()
    (tmp_path / "repo" / "bench" / "r.md").write_text("# r\n")
    for name, text in pages.items():
        (docs / name).write_text(text, encoding="utf-8")
    return docs


A = """\
# Page A

The figure: ![a dot](figures/dot.png "one pixel"), again ![same](figures/dot.png) and
<img src="figures/dot.png" width="10">. On the web: ![w](https://example.com/w.png).

See [page B](b.md), [its second part](b.md#the-second-part-x), [this page's end](#the-end),
[the bench](../bench/r.md#top), [the web](https://example.com/b.md) and [ref][r].
In code: `[b](b.md)` and `![x](figures/none.png)`.

[r]: b.md

```text
$ see [b](b.md) and ![x](figures/none.png)
```

```bash
ls
```

```python
x = 1
```

## The end
"""

B = "# B\n\n## The second part: x\n\n```python\ny = 2\nprint(y)\n```\n"


def test_images_are_attached(tmp_path):
    docs = make_book(tmp_path, {"a.md": A, "b.md": B})
    nb = nbformat.reads(nbconv.notebook(docs / "a.md", tmp_path / "out", docs), as_version=4)
    first = nb.cells[0]
    assert first.attachments == {"dot.png": {"image/png": base64.b64encode(PNG).decode()}}
    assert '![a dot](attachment:dot.png "one pixel")' in first.source
    assert "![same](attachment:dot.png)" in first.source
    assert '<img src="attachment:dot.png" width="10">' in first.source
    assert "![w](https://example.com/w.png)" in first.source
    # in code, inline or fenced, nothing is touched (figures/none.png does not exist)
    assert "`![x](figures/none.png)`" in first.source
    assert "$ see [b](b.md) and ![x](figures/none.png)" in first.source
    shown = "\n".join(c.source if c.cell_type == "markdown" else f"```python\n{c.source}\n```" for c in nb.cells)
    assert _targets(shown) == _targets(A)                                 # the same text otherwise


def test_links_are_rewritten(tmp_path):
    docs = make_book(tmp_path, {"a.md": A, "b.md": B})
    inside = tmp_path / "repo" / "notebooks"
    nb = nbformat.reads(nbconv.notebook(docs / "a.md", inside, docs), as_version=4)
    text = nb.cells[0].source
    assert "[page B](b.ipynb)" in text
    assert "[its second part](b.ipynb#The-second-part:-x)" in text      # Jupyter's anchor of the heading
    assert "[this page's end](#The-end)" in text
    assert "[the bench](../bench/r.md#top)" in text
    assert "[the web](https://example.com/b.md)" in text
    assert "[r]: b.ipynb" in text
    assert "`[b](b.md)`" in text and "$ see [b](b.md)" in text        # code stays as it is
    # from a directory elsewhere, the link to a file outside docs still resolves
    elsewhere = tmp_path / "far" / "away"
    text = nbformat.reads(nbconv.notebook(docs / "a.md", elsewhere, docs), as_version=4).cells[0].source
    target = re.search(r"\[the bench\]\(([^)#]+)#top\)", text).group(1)
    assert not target.startswith("/")
    assert (elsewhere / target).resolve() == (tmp_path / "repo" / "bench" / "r.md").resolve()


def test_only_python_blocks_are_code(tmp_path):
    docs = make_book(tmp_path, {"a.md": A, "b.md": B})
    nb = nbformat.reads(nbconv.notebook(docs / "a.md", tmp_path / "out", docs), as_version=4)
    assert [c.source for c in nb.cells if c.cell_type == "code"] == ["x = 1"]
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "```bash\nls\n```" in markdown and "```text\n$ see" in markdown
    assert "%%bash" not in markdown


def test_missing_image_is_one_line(tmp_path, monkeypatch, capsys):
    docs = make_book(tmp_path, {"a.md": A, "b.md": B, "c.md": "# C\n\n![gone](figures/gone.png)\n"})
    with pytest.raises(nbconv.ConversionError) as info:
        nbconv.convert(tmp_path / "out", docs)
    assert str(info.value).startswith("c.md: image figures/gone.png not found")
    monkeypatch.setattr(nbconv, "DOCS", docs)
    assert nbconv.main([str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "c.md" in err and "figures/gone.png" in err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())   # nothing half-written


def test_output_is_deterministic(tmp_path):
    """A separate process (another hash seed) writes the same bytes; a rerun changes nothing."""
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run([sys.executable, str(DOCS / "notebooks.py"), str(one)], check=True, capture_output=True,
                   env=dict(os.environ, PYTHONHASHSEED="1"), cwd=tmp_path)
    nbconv.convert(two, DOCS)
    names = sorted(p.name for p in one.iterdir())
    assert names == sorted(p.with_suffix(".ipynb").name for p in nbconv.pages(DOCS))
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    mtimes = {p: p.stat().st_mtime_ns for p in one.iterdir()}
    assert all(not changed for _, changed in nbconv.convert(one, DOCS))
    assert {p: p.stat().st_mtime_ns for p in one.iterdir()} == mtimes
