"""How long the explorer takes to answer a pick: ``python -m benchmarks.explore_roundtrip``.

One round trip is what the page does when a learner picks a test image: POST /api/show over
a kept-alive HTTP connection to a real ExplorerServer on 127.0.0.1, the whole network
forward and backward (``lenet_np.backprop``), every layer's output and gradient encoded
(float32 in base64) into JSON, sent, and parsed again on the client's side. The server runs
in a thread of this process, as ``python -m lenet_np.explore`` runs it (BLAS on one thread,
as ``ExplorerServer.serve_forever`` sets it); the images are random (the cost does not
depend on what they show). The aim: well under 100 ms on 2 cores.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import threading
import time

import numpy as np

import lenet_np as ln
from lenet_np.explore import Explorer, ExplorerServer
from lenet_np.model import VARIANTS


def roundtrip_times(variant: str = "classic", repeats: int = 50, warmup: int = 5, images: int = 100) -> dict:
    """Time ``repeats`` pick-and-show round trips (after ``warmup`` untimed ones) for a LeNet of
    ``variant``: {"variant", "times_ms" (each round trip), "median_ms", "p90_ms", "bytes" (of one answer)}."""
    rng = np.random.default_rng(0)
    test_set = (rng.random((images, 1, 28, 28), dtype=np.float32), np.arange(images) % 10)
    server = ExplorerServer(Explorer(ln.LeNet(variant=variant, seed=0), "freshly initialised (seed 0)",
                                     test_set=test_set, untrained=True), 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=60)
    headers = {"Content-Type": "application/json"}

    def post(path, body) -> tuple[dict, int]:
        conn.request("POST", path, body=json.dumps(body), headers=headers)
        res = conn.getresponse()
        data = res.read()
        if res.status != 200:
            raise RuntimeError(f"{path} answered {res.status}: {data[:200]!r}")
        return json.loads(data), len(data)

    try:
        session = post("/api/session", {})[0]["session"]
        times, size = [], 0
        for i in range(warmup + repeats):
            start = time.perf_counter()
            _, size = post("/api/show", {"session": session, "input": {"source": "test", "index": i % images}})
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1e3)
    finally:
        conn.close()
        server.shutdown()
        server.server_close()
    return {"variant": variant, "times_ms": times, "median_ms": statistics.median(times),
            "p90_ms": float(np.percentile(times, 90)), "bytes": size}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.explore_roundtrip",
                                description="Median and 90th percentile of the explorer's pick-and-show round trip.")
    p.add_argument("--repeats", type=int, default=50, help="timed round trips per variant (default 50)")
    p.add_argument("--variant", choices=sorted(VARIANTS), action="append",
                   help="the LeNet to time (repeatable; default: all three)")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error(f"--repeats must be >= 1, got {args.repeats}")
    print(f"{'variant':<10}{'median ms':>11}{'p90 ms':>9}{'answer kB':>11}   ({args.repeats} round trips each, "
          "POST /api/show over one HTTP connection)")
    for variant in args.variant or list(VARIANTS):
        r = roundtrip_times(variant, args.repeats)
        print(f"{variant:<10}{r['median_ms']:>11.1f}{r['p90_ms']:>9.1f}{r['bytes'] / 1e3:>11.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
