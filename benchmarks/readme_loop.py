"""The README's training loop, run as written, against the training command's step.

The README's first code block is what a newcomer copies. ``readme_loop`` takes its
statements up to the training loop as the set-up, and the loop itself with its step count
raised (its ``range(3)`` becomes ``range(steps)``) and its ``print`` silenced; nothing else
changes, so the benchmark times exactly the code on the page. The command's step time is
the time of the second epoch that ``python -m lenet_np.train --epochs 2 --metrics M.json``
writes (``time_sec``, the training loop alone, on the real data) divided by its number of
steps: warmed up, as the README loop is (one untimed run before the timed ones).
"""

from __future__ import annotations

import ast
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .machine import REPO

README = REPO / "README.md"


def readme_code(path=README) -> str:
    """The README's first Python code block."""
    match = re.search(r"```python\n(.*?)```", Path(path).read_text(), re.S)
    if match is None:
        raise ValueError(f"{path}: no ```python block")
    return match.group(1)


def readme_loop(steps: int, path=README):
    """(run, namespace): ``run()`` executes the README's training loop for ``steps`` steps on
    the state its set-up made in ``namespace`` (the same network keeps training from call to
    call; ``namespace["loss"]`` is the last step's loss)."""
    tree = ast.parse(readme_code(path))
    loops = [i for i, node in enumerate(tree.body) if isinstance(node, ast.For)]
    if not loops:
        raise ValueError(f"{path}: the first Python block has no for loop")
    first = loops[0]
    loop = tree.body[first]
    if not (isinstance(loop.iter, ast.Call) and getattr(loop.iter.func, "id", None) == "range"):
        raise ValueError(f"{path}: the training loop is not `for ... in range(...)`")
    loop.iter.args = [ast.Constant(int(steps))]
    setup = compile(ast.Module(body=tree.body[:first], type_ignores=[]), str(path), "exec")
    body = compile(ast.fix_missing_locations(ast.Module(body=[loop], type_ignores=[])), str(path), "exec")
    namespace = {"__name__": "readme", "print": lambda *a, **k: None}
    exec(setup, namespace)

    def run():
        exec(body, namespace)
    return run, namespace


def command_step(data_dir=None, timeout=600, epochs=2) -> dict:
    """The last of ``epochs`` epochs of ``python -m lenet_np.train``: seconds per step, steps,
    examples/s."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.json"
        cmd = [sys.executable, "-m", "lenet_np.train", "--epochs", str(epochs), "--quiet", "--metrics", str(metrics)]
        if data_dir is not None:
            cmd += ["--data-dir", str(data_dir)]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} failed: {done.stderr.strip().splitlines()[-1:]}")
        epoch = json.loads(metrics.read_text())[-1]
    examples = epoch["examples_per_sec"] * epoch["time_sec"]
    steps = math.ceil(round(examples) / 256)
    return {"step": epoch["time_sec"] / steps, "steps": steps, "examples_per_sec": epoch["examples_per_sec"]}


def compare(rounds=3, steps=235, log=print) -> dict:
    """The README loop and the command, alternating: ``rounds`` samples of each, medians."""
    run, namespace = readme_loop(steps)
    run()                                           # warm up (and build DataParallel's replicas)
    readme, command = [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        run()
        readme.append((time.perf_counter() - t0) / steps)
        command.append(command_step()["step"])
        log(f"  round {r + 1}: README loop {readme[-1] * 1e3:.2f} ms a step, "
            f"python -m lenet_np.train {command[-1] * 1e3:.2f} ms a step")
    med = {k: sorted(v)[len(v) // 2] for k, v in (("readme", readme), ("command", command))}
    return {"readme": readme, "command": command, "median": med, "batch": len(namespace["x"]), "steps": steps,
            "ratio": med["readme"] / med["command"]}
