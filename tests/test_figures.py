"""docs/figures.py draws every figure the book shows, from the code.

The script runs into a temporary directory; every figure a page of docs/ references
must come out of it, be committed under docs/figures/, and stay small.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from .test_docs import DOCS, PAGES, figures_referenced

pytest.importorskip("matplotlib")

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    out = tmp_path_factory.mktemp("figures")
    run = subprocess.run([sys.executable, str(DOCS / "figures.py"), str(out)], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return out


def test_every_referenced_figure_is_drawn_and_committed(drawn):
    referenced = {name: page.name for page in PAGES for name in figures_referenced(page.read_text(encoding="utf-8"))}
    assert len(referenced) >= 7
    for name, page in referenced.items():
        assert (drawn / name).is_file(), f"{page} shows figures/{name}, which docs/figures.py does not draw"
        assert (DOCS / "figures" / name).is_file(), f"{page} shows figures/{name}: run make figures and commit it"


def test_drawn_figures_are_committed_and_small(drawn):
    names = sorted(p.name for p in drawn.iterdir())
    assert names == sorted(p.name for p in (DOCS / "figures").glob("*.png")), "run make figures"
    for name in names:
        data = (drawn / name).read_bytes()
        assert data.startswith(PNG), name
        assert 5_000 < len(data) < 150_000, f"{name}: {len(data)} bytes"


@pytest.fixture(scope="module")
def figures():
    spec = importlib.util.spec_from_file_location("figures", DOCS / "figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_drawing_is_deterministic(figures, drawn, tmp_path):
    """Two runs give the same bytes, so committed figures change only when the code does."""
    for name in ("im2col", "pooling", "call-chain"):
        path = figures.draw(name, tmp_path)
        assert path.read_bytes() == (drawn / path.name).read_bytes(), name


def test_bad_command_line(figures, capsys):
    assert figures.main(["a", "b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "usage" in err
