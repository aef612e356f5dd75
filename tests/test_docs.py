"""The docs are tested: every ```python block of docs/*.md runs, page by page.

The blocks of one page run in order in one namespace (a later block uses the names
of an earlier one); their ``assert`` lines are the claims of the text. A traceback
points at the line of the Markdown file. The pointers to the code (``file.py: Name``)
must name functions and classes that exist.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```([\w+-]*)[ \t]*$")
POINTER = re.compile(r"`(lenet_np/[\w/]+\.py): ([A-Za-z_][\w.]*)`")
LINK = re.compile(r"\]\(([\w-]+\.md)\)")
ANY_LINK = re.compile(r"\]\(([^)\s]+)\)")                   # [text](target) and ![alt](target)
FIGURE = re.compile(r"!\[[^\]\n]+\]\(figures/([\w-]+\.png)\)")
SCREENSHOT = re.compile(r"!\[[^\]\n]+\]\(screenshots/([\w-]+\.png)\)")    # taken by tests/explore/walkthrough.py


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the first code line, code) of every ```python block."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        lang, start = m.group(1), i + 1
        i = start
        while i < len(lines) and not lines[i].startswith("```"):
            i += 1
        if i == len(lines):
            raise ValueError(f"unclosed code fence at line {start}")
        if lang == "python":
            blocks.append((start + 1, "\n".join(lines[start:i]) + "\n"))
        i += 1
    return blocks


def test_there_are_pages():
    names = {p.name for p in PAGES}
    assert {"index.md", "network.md", "linear.md", "sigmoid.md", "relu.md", "softmax-cross-entropy.md",
            "convolution.md", "pooling.md", "flatten.md", "gradient-check.md", "tools.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_snippets_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                    # a snippet that writes files writes here
    namespace = {"__name__": f"docs.{page.stem}"}
    for lineno, code in python_blocks(page.read_text(encoding="utf-8")):
        # pad with blank lines so that tracebacks show the line number in the .md file
        exec(compile("\n" * (lineno - 1) + code, str(page), "exec"), namespace)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_code_pointers_exist(page):
    """`lenet_np/nn/conv.py: Conv2d._backward_reference` must name a real attribute."""
    for path, qualname in POINTER.findall(page.read_text(encoding="utf-8")):
        assert (ROOT / path).is_file(), f"{page.name}: {path} does not exist"
        module = importlib.import_module(path[:-3].replace("/", "."))
        obj = module
        for part in qualname.split("."):
            assert hasattr(obj, part), f"{page.name}: {path} has no {qualname}"
            obj = getattr(obj, part)


def test_index_links_every_page():
    index = (DOCS / "index.md").read_text(encoding="utf-8")
    linked = set(LINK.findall(index))
    for name in linked:
        assert (DOCS / name).is_file(), f"index.md links to a missing page {name}"
    mine = {"network.md", "linear.md", "sigmoid.md", "relu.md", "softmax-cross-entropy.md", "convolution.md",
            "pooling.md", "flatten.md", "gradient-check.md", "tools.md", "batchnorm.md", "exercises.md",
            "reproduction.md", "performance.md"}
    assert mine <= linked


def test_layer_pages_have_snippets_and_pointers():
    for name in ("linear", "sigmoid", "relu", "softmax-cross-entropy", "convolution", "pooling", "flatten"):
        text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
        assert python_blocks(text), f"{name}.md has no python snippet"
        assert POINTER.search(text), f"{name}.md points at no code"


def test_block_extraction():
    text = "a\n```python\nx = 1\n```\n```text\nnot code\n```\n```python\ny = x\n```\n"
    assert python_blocks(text) == [(3, "x = 1\n"), (9, "y = x\n")]


def prose(text: str) -> str:
    """text without its fenced code blocks and inline code spans (where [a](b) is code, not a link)."""
    text = re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def figures_referenced(text: str) -> list[str]:
    """The figures/NAME.png a page shows, written as ![alt text](figures/NAME.png)."""
    return FIGURE.findall(prose(text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_figures_referenced_exist(page):
    text = page.read_text(encoding="utf-8")
    for name in figures_referenced(text):
        assert (DOCS / "figures" / name).is_file(), f"{page.name}: figures/{name} is missing (run make figures)"
    shots = SCREENSHOT.findall(prose(text))
    for name in shots:
        assert (DOCS / "screenshots" / name).is_file(), \
            f"{page.name}: screenshots/{name} is missing (python -m tests.explore.walkthrough docs/screenshots)"
    images = re.findall(r"!\[[^\]]*\]\(([^)]*)\)", prose(text))
    assert len(images) == len(figures_referenced(text)) + len(shots), \
        f"{page.name}: write every image as ![alt text](figures/NAME.png) or (screenshots/NAME.png), got {images}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_stay_in_the_repository(page):
    """No web links, nothing outside the repository; every relative link names an existing file."""
    text = page.read_text(encoding="utf-8")
    assert not re.search(r"https?://", text), f"{page.name}: links outside the repository"
    for target in ANY_LINK.findall(prose(text)):
        path = (DOCS / target.split("#")[0]).resolve()
        assert path.is_relative_to(ROOT) and not path.is_relative_to(ROOT.parent / "shared"), \
            f"{page.name}: {target} lies outside the repository"
        assert path.exists(), f"{page.name}: {target} does not exist"


def test_book_pages_end_with_exercises():
    for name in ("index", "network", "linear", "sigmoid", "relu", "softmax-cross-entropy", "convolution", "pooling",
                 "flatten", "gradient-check", "performance", "tools", "batchnorm", "exercises"):
        text = (DOCS / f"{name}.md").read_text(encoding="utf-8")
        assert "\n## Exercises\n" in text, f"{name}.md has no section ## Exercises"
        tail = text.split("\n## Exercises\n")[-1]
        assert "\n## " not in tail, f"{name}.md: ## Exercises must be the last section"
        items = re.findall(r"^\d+\. ", tail, flags=re.M)
        assert 2 <= len(items) <= 4, f"{name}.md: {len(items)} exercises, want two or three"


def test_figure_extraction():
    text = "![im2col of a 4x4 image](figures/im2col.png) and ![x](figures/a-b.png) but not [t](figures/c.png)"
    assert figures_referenced(text) == ["im2col.png", "a-b.png"]


def test_readme_api_block_runs(tmp_path, monkeypatch, capsys):
    """The README's first ```python block (the API in 20 lines) runs as written: the loss falls
    over its three steps, and the gradient check it prints passes."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    lineno, code = python_blocks(readme)[0]
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "readme"}
    exec(compile("\n" * (lineno - 1) + code, str(ROOT / "README.md"), "exec"), namespace)
    losses = [float(line.split()[1]) for line in capsys.readouterr().out.splitlines() if re.match(r"^\d ", line)]
    assert len(losses) == 3 and losses[2] < losses[0]
    assert max(namespace["errors"].values()) < 1e-6


def test_batchnorm_staged_table_is_the_backward():
    """The staged-backward table of batchnorm.md, its backward column run bottom-up (steps 1 to 9) on
    one channel, gives the layer's dx, dgamma and dbeta."""
    import numpy as np

    from lenet_np import nn

    text = (DOCS / "batchnorm.md").read_text(encoding="utf-8")
    table = text.split("    forward                              backward, G = dL/dy\n", 1)[1].split("\n\n", 1)[0]
    column = [line[41:].split("  (")[0].strip() for line in table.splitlines()]
    steps = [re.sub(r"^\d+\s+", "", s).replace("^2", " ** 2") for s in reversed(column) if s]
    statements = [part.strip() for s in steps for part in s.split(",  ")]
    assert len(statements) == 12 and statements[-1].startswith("dx ")

    rng = np.random.default_rng(0)
    x, G, gamma, eps = rng.standard_normal(20) * 3 + 2, rng.standard_normal(20), 1.5, 1e-5
    m = x.size
    mu = x.sum() / m
    xc = x - mu
    std = np.sqrt((xc ** 2).sum() / m + eps)
    scope = {"sum": np.sum, "G": G, "gamma": gamma, "m": m, "xc": xc, "std": std, "inv_std": 1 / std,
             "xhat": xc / std}
    for statement in statements:
        exec(statement, scope)
    bn = nn.BatchNorm1d(1, eps=eps, dtype=np.float64)
    bn.weight.data[...] = gamma
    bn(x.reshape(-1, 1))
    np.testing.assert_allclose(scope["dx"], bn.backward(G.reshape(-1, 1)).ravel(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose([scope["dgamma"], scope["dbeta"]], [bn.weight.grad[0], bn.bias.grad[0]], rtol=1e-12)
