"""A learner's walk through the explorer page, in headless Chromium driven by Playwright.

``walk(url, out_dir)`` clicks through as a learner would: pick a test image by its index,
draw a stroke on the pad, go back to the test image and take one SGD step, undo it. It
reads what the page shows from its data- attributes (numbers written with all their
digits), records the browser's console errors and every address the page loaded, and saves
screenshots. tests/explore/test_browser.py checks the observations against lenet_np.

The same walk draws the screenshots of docs/explorer.md, from the repository's root:

    python -m tests.explore.walkthrough docs/screenshots [--checkpoint runs/lenet.npz] [--index 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage"]
VIEWPORT = {"width": 1400, "height": 900}


def find_chromium() -> str | None:
    """A Chromium to drive: Debian's (apt-get install chromium), another on the PATH, or None."""
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def browser_missing() -> str | None:
    """Why the walk cannot run here (naming what is missing), or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed (pip install -e '.[test]', or make test)"
    if find_chromium() is None:
        return "Chromium is not installed (apt-get install chromium as root, or make test)"
    return None


class Watched:
    """A Playwright page, with its console errors, uncaught errors, requests and the last
    body the page sent to /api/show."""

    def __init__(self, page):
        self.page = page
        self.console_errors, self.page_errors, self.hosts, self.shows = [], [], set(), []
        page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        page.on("request", self._request)

    def _request(self, req):
        self.hosts.add(urlsplit(req.url).netloc or req.url)
        if req.url.endswith("/api/show"):
            self.shows.append(req.post_data_json)

    def updates(self) -> int:
        return int(self.page.get_attribute("body", "data-updates"))

    def act(self, action) -> None:
        """Do ``action`` and wait until the page has drawn the answer (and has nothing pending)."""
        before = self.updates()
        action()
        self.page.wait_for_function(
            "n => Number(document.body.dataset.updates) > n && !document.body.dataset.busy", arg=before,
            timeout=30_000)

    def attr(self, selector: str, name: str) -> str:
        return self.page.get_attribute(selector, name)

    def number(self, selector: str, name: str = "data-value") -> float:
        return float(self.attr(selector, name))

    def status(self) -> str:
        return self.page.text_content("#status")

    def reading(self, layer: str) -> dict:
        """What the page shows now: the loss, one layer's gradient norm, the probabilities."""
        import json
        return {"loss": self.number("#loss"), "grad_norm": self.number(f"tr[data-layer='{layer}']", "data-grad-norm"),
                "probs": json.loads(self.attr("#probs", "data-values")), "pred": int(self.attr("#pred", "data-value")),
                "steps": int(self.attr("#steps", "data-value")), "status": self.status()}


def walk(url: str, out_dir, index: int = 12, layer: str = "conv.3", lr: float = 0.01) -> dict:
    """Click through the page at ``url``; screenshots go to ``out_dir``. Returns what was seen."""
    from playwright.sync_api import sync_playwright

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen = {"index": index, "layer": layer, "lr": lr, "shots": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
            w = Watched(page)
            page.goto(url)
            page.wait_for_function("() => Number(document.body.dataset.updates) >= 1 && !document.body.dataset.busy",
                                   timeout=30_000)
            # 1. a test image by its index
            page.fill("#index", str(index))
            w.act(lambda: page.dispatch_event("#index", "change"))
            seen["first"] = w.reading(layer)
            # hovering a heatmap cell shows its value: conv.0's channel 0, row 5, column 10 (2 pixels a cell)
            box = page.locator("tr[data-layer='conv.0'] td:nth-child(2) canvas").bounding_box()
            page.mouse.move(box["x"] + 10 * 2 + 1, box["y"] + 5 * 2 + 1)
            seen["tooltip"] = page.text_content("#tooltip") if page.is_visible("#tooltip") else None
            seen["shots"].append(shot(page, out_dir / "explorer-forward.png"))
            page.mouse.move(1, 1)                                  # the tooltip goes
            seen["shots"].append(shot(page, out_dir / "explorer-backward.png", "#layers-panel", clip_height=1400))
            seen["shots"].append(shot(page, out_dir / "explorer-norms.png", "#norms-panel"))
            # 2. a stroke on the drawing pad
            w.act(lambda: page.check("input[name=source][value=drawn]"))
            seen["blank"] = w.reading(layer)
            box = page.locator("#pad").bounding_box()
            x0, y0 = box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.15

            def stroke():
                page.mouse.move(x0, y0)
                page.mouse.down()
                for k in range(1, 21):
                    page.mouse.move(x0 + box["width"] * 0.05 * (k % 2), y0 + box["height"] * 0.035 * k)
                page.mouse.up()

            w.act(stroke)
            page.mouse.move(1, 1)                                  # off the pad: no tooltip in the picture
            seen["drawn"] = dict(w.reading(layer), sent=w.shows[-1])
            seen["shots"].append(shot(page, out_dir / "explorer-draw.png", "#controls", clip_height=900))
            # 3. back to the test image, one SGD step with a small learning rate
            w.act(lambda: page.check("input[name=source][value=test]"))
            seen["again_first"] = w.reading(layer)
            page.fill("#lr", str(lr))
            w.act(lambda: page.click("#step"))
            seen["step"] = dict(w.reading(layer), before=w.number("#change-loss", "data-loss-before"),
                                after=w.number("#change-loss", "data-loss-after"))
            page.locator("#stepper").scroll_into_view_if_needed()
            seen["shots"].append(shot(page, out_dir / "explorer-step.png", "#stepper"))
            # 4. undo
            w.act(lambda: page.click("#undo"))
            seen["undone"] = w.reading(layer)
            # 5. what the browser said, and where the page went
            seen.update(console_errors=w.console_errors, page_errors=w.page_errors, hosts=sorted(w.hosts))
        finally:
            browser.close()
    return seen


def shot(page, path: Path, selector: str | None = None, clip_height: int | None = None) -> Path:
    """A screenshot of the viewport, or of one element (its top ``clip_height`` pixels), saved
    with a palette of 256 colours (a third of the size, and the same picture to the eye)."""
    if selector is None:
        page.screenshot(path=str(path))
    else:
        box = page.locator(selector).bounding_box()
        height = min(box["height"], clip_height) if clip_height else box["height"]
        page.screenshot(path=str(path), full_page=True,
                        clip={"x": box["x"], "y": box["y"] + page.evaluate("window.scrollY"), "width": box["width"],
                              "height": height})
    try:
        from PIL import Image
    except ImportError:                                           # the full-colour PNG then
        return path
    with Image.open(path) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, "PNG", optimize=True)
    return path


def main(argv=None) -> int:
    """Draw docs/screenshots/explorer-*.png: the walk on the real test set, with a checkpoint."""
    parser = argparse.ArgumentParser(prog="python -m tests.explore.walkthrough",
                                     description="Take the explorer's screenshots for docs/explorer.md.")
    parser.add_argument("out_dir", type=Path, help="where the PNGs go (docs/screenshots for the book)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="weights to show (default: runs/lenet.npz when it is there, else an untrained network)")
    parser.add_argument("--index", type=int, default=12, help="the test image to pick (default 12)")
    args = parser.parse_args(argv)
    missing = browser_missing()
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 1
    from lenet_np.explore import ExplorerServer, command

    cli_args = command.build_parser().parse_args(["--checkpoint", str(args.checkpoint)] if args.checkpoint else [])
    server = ExplorerServer(command.load_explorer(cli_args), 0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        seen = walk(server.url, args.out_dir, index=args.index)
    finally:
        server.shutdown()
        server.server_close()
    for path in seen["shots"]:
        print(f"wrote {path}")
    problems = seen["console_errors"] + seen["page_errors"]
    if problems:
        print("browser errors: " + "; ".join(problems), file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
