"""Section 2, the parity subset: CuPy's parity tests in a pytest child, read line by line and
killed (with its workers) at its limit."""

from __future__ import annotations

import collections
import importlib.metadata
import importlib.util
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time

from benchmarks.gpu.common import REPO, child_env, require_gpu
from benchmarks.sections import Part, log, time_left

OUTCOMES = ("PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL", "XPASS")
_XDIST_LINE = re.compile(r"^\[gw\d+\] \[\s*\d+%\] (" + "|".join(OUTCOMES) + r") (\S+::\S+)")
_PLAIN_LINE = re.compile(r"^(\S+::\S+) (" + "|".join(OUTCOMES) + r")\b")
_COLLECTED = (re.compile(r"collected (\d+) items? / \d+ deselected / (\d+) selected"),
              re.compile(r"\d+ workers? \[(\d+) items?\]"), re.compile(r"collected (\d+) items?"))


def has_module(name) -> bool:
    return importlib.util.find_spec(name) is not None


def parity_command(prof, limit, workers=None) -> list:
    """The parity subset's pytest command: the cupy cases (``-k``) of the files that matter on a
    GPU, verbose (one line per test, so a run stopped at its limit still says what ran), in
    parallel with pytest-xdist and with a per-test limit from pytest-timeout where installed."""
    cmd = [sys.executable, "-m", "pytest", "-v", "-rfE", "--color=no", "-p", "no:cacheprovider",
           "-k", prof["parity_k"]]
    workers = min(prof["parity_workers"], max(1, (os.cpu_count() or 1) // 2)) if workers is None else workers
    if workers > 1 and has_module("xdist"):
        try:
            version = tuple(int(v) for v in importlib.metadata.version("pytest-xdist").split(".")[:2])
        except Exception:
            version = (0, 0)
        cmd += ["-n", str(workers), "--dist", "worksteal" if version >= (3, 2) else "load"]
    if has_module("pytest_timeout"):
        cmd += ["--timeout", str(int(min(prof["parity_test_timeout"], max(5, limit))))]
    return cmd + list(prof["parity_files"])


def parse_pytest_line(line, outcomes: dict, found: dict) -> None:
    """Read one line of ``pytest -v`` (with or without xdist): a test's outcome into ``outcomes``
    (test id -> outcome; a failure or an error is never overwritten by a later pass), the number
    of tests selected into ``found["collected"]``."""
    m = _XDIST_LINE.match(line)
    if m:
        outcome, test = m.groups()
    else:
        m = _PLAIN_LINE.match(line)
        test, outcome = m.groups() if m else (None, None)
    if test is not None and outcomes.get(test) not in ("FAILED", "ERROR"):
        outcomes[test] = outcome
    if "collected" not in found:
        for pattern in _COLLECTED:
            c = pattern.search(line)
            if c:
                found["collected"] = int(c.groups()[-1])
                break


def run_parity(cmd, limit, log_path, env=None) -> dict:
    """Run the parity subset, its output into ``log_path``, its failures logged as they come;
    killed with all its workers (its own process group) after ``limit`` seconds."""
    log(f"$ python {shlex.join(cmd[1:])}   (hard limit {limit:.0f} s; output in {log_path.name})")
    t0 = time.perf_counter()
    outcomes, found, tail = {}, {}, []
    with open(log_path, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, start_new_session=True)
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(limit, kill)
        timer.start()
        try:
            for line in proc.stdout:
                out.write(line)
                parse_pytest_line(line, outcomes, found)
                if line.startswith(("FAILED ", "ERROR ")) or " FAILED " in line or " ERROR " in line:
                    log("  " + line.rstrip())
                tail = (tail + [line.rstrip()])[-5:]
            rc = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:                       # interrupted: take the workers down too
                kill()
                proc.wait()
    seconds = time.perf_counter() - t0
    counts = collections.Counter(outcomes.values())
    collected = found.get("collected")
    failures = sorted(t for t, o in outcomes.items() if o in ("FAILED", "ERROR"))
    res = {"rc": rc, "seconds": seconds, "timed_out": timed_out.is_set(), "collected": collected,
           "counts": dict(counts), "not_run": None if collected is None else max(0, collected - len(outcomes)),
           "failures": failures, "summary": next((t for t in reversed(tail) if t.strip()), ""),
           "command": "python " + shlex.join(cmd[1:]), "log": log_path.name}
    log(f"  {describe_parity(res)}")
    return res


def describe_parity(res) -> str:
    counts = res["counts"]
    done = ", ".join(f"{n} {o.lower()}" for o, n in sorted(counts.items(), key=lambda kv: OUTCOMES.index(kv[0])))
    state = (f"stopped at its limit after {res['seconds']:.0f} s" if res["timed_out"]
             else f"finished in {res['seconds']:.0f} s (exit {res['rc']})")
    not_run = f", {res['not_run']} not run" if res["not_run"] else ""
    of = (f" of {res['collected']} selected" if res["collected"] is not None
          else " (stopped before pytest said how many it selected)")
    return f"{done or 'no test finished'}{not_run}{of}; {state}"


def parity(ctx) -> Part:
    require_gpu(ctx)
    prof = ctx.prof
    limit = max(5.0, time_left(ctx))
    if ctx.args.pytest_timeout is not None:
        limit = ctx.args.pytest_timeout
    cmd = parity_command(prof, limit)
    res = run_parity(cmd, limit, ctx.out_dir / f"{ctx.stem}-parity.log", env=child_env())
    ok = res["rc"] == 0 and not res["timed_out"]
    state = "passed" if ok else "FAILED" if res["failures"] else "incomplete"
    lines = ["## CuPy parity subset", "",
             f"`{res['command']}`: **{state}**: {describe_parity(res)}. Full output: `{res['log']}`.", ""]
    lines += [f"- `{t}`" for t in res["failures"]] + ([""] if res["failures"] else [])
    return Part({"parity": res}, lines)
