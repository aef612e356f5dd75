"""The progress display of ``python -m lenet_np.train``: a tqdm bar on a terminal (when tqdm is
installed), else a plain line on stderr every ~10% of the epoch, or nothing with ``quiet``.
``update`` has the signature of ``training.train_epoch``'s ``report``."""

from __future__ import annotations

import sys
import time


class Progress:
    """tqdm on a terminal, a plain line every ~10% of the epoch otherwise."""

    def __init__(self, epoch, total, quiet):
        self.epoch, self.total, self.quiet = epoch, total, quiet
        self.bar = None
        self.start = time.perf_counter()
        if quiet:
            return
        if sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, desc=f"epoch {epoch}", unit="batch", leave=False)
            except ImportError:
                pass
        self.every = max(1, total // 10)

    def update(self, done, seen, running_loss):
        if self.quiet:
            return
        rate = seen / max(time.perf_counter() - self.start, 1e-9)
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(loss=f"{running_loss:.4f}", ex_s=f"{rate:,.0f}")
        elif done % self.every == 0 or done == self.total:
            print(f"  epoch {self.epoch} [{done}/{self.total}] loss {running_loss:.4f}, {rate:,.0f} examples/s",
                  file=sys.stderr, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
