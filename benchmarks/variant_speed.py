"""Per-variant speed against torch: the training step and the evaluation of each book LeNet.

    python -m benchmarks.variant_speed                      # all three variants, 7 rounds
    python -m benchmarks.variant_speed --variants d2l,batchnorm --rounds 9
    python -m benchmarks.variant_speed --no-before          # only lenet_np (today) and torch
    python -m benchmarks.variant_speed --before-tree DIR    # "before" is DIR/lenet_np (e.g. a
                                                            # git worktree of an earlier commit)

Each variant runs as its recipe says (``lenet_np.model.VARIANTS``: optimizer, learning rate,
batch size) and as ``python -m lenet_np.train`` runs it on the CPU: lenet_np through
``ln.DataParallel`` (one thread per core, at most 4), torch with ``torch.set_num_threads`` of
the same count. The evaluation is the training command's: batches of 1,000 in eval mode
(torch under ``no_grad``).

Contenders, on the same batches, alternating round by round in one process (the order
rotates each round): ``lenet_np``, today's code; ``before``, the same code with this round's
new paths switched off (``BEFORE``, all of them or the ``--off`` names; what cannot be
switched off is listed below them), or with ``--before-tree`` the package of another tree,
imported beside today's under another name; and ``torch``. Each sample first runs its
contender untimed for ``--settle`` seconds (the other library's idle threads spin for tens
of milliseconds after a switch and slow the first calls), then times enough calls to last
``--sample`` seconds. Per round the ratio lenet_np / torch (and before / torch) is taken of
that round's samples; the table gives the median of the rounds' ratios and their range,
which says how noisy the machine was.

On a loaded machine torch's OpenMP threads, which spin while they wait, lose whole time
slices to the other processes: run with ``OMP_WAIT_POLICY=PASSIVE`` to see torch's compute
rather than that (lenet_np's BLAS uses its own threads, which the variable does not touch).
OpenBLAS's threads spin too, for about 0.1 s after their last product: a contender that runs
a network unsplit (BLAS on two threads; ``--off sync_batchnorm``) slows the split one that
follows it unless ``--settle`` is longer (0.6 s measured enough here); compare those two in
separate processes as well.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

VARIANTS = ("classic", "d2l", "batchnorm")
EVAL_BATCH = 1000        # lenet_np.evaluate.accuracy's batch, as the training command evaluates


# -- this round's new paths, and how to switch each off -----------------------------------------
def _avg_pool_reference(net, dp):
    """AvgPool2d's fast form (offset sums; backward with the activation's in one step) off."""
    from lenet_np.nn import AvgPool2d
    for _, m in net.named_modules():
        if isinstance(m, AvgPool2d) and "reference" in getattr(m, "IMPLS", ()):
            m.impl = "reference"


def _sync_batchnorm_off(net, dp):
    """Batch statistics across threads off: a network with a training-mode BatchNorm runs unsplit."""
    if dp is not None and hasattr(dp, "sync_batchnorm"):
        dp.sync_batchnorm = False


def _batchnorm_reference(net, dp):
    """BatchNorm's fast form (channel sums in memory order, fewer passes) off."""
    from lenet_np.nn import BatchNorm1d, BatchNorm2d
    for _, m in net.named_modules():
        if isinstance(m, (BatchNorm1d, BatchNorm2d)) and "reference" in getattr(m, "IMPLS", ()):
            m.impl = "reference"


def _fold_batchnorm_off(net, dp):
    """Evaluation: the BatchNorm after a convolution or linear layer folded into its weights, off."""
    if hasattr(net, "fold_batchnorm"):
        net.fold_batchnorm = False


BEFORE = {"avg_pool": _avg_pool_reference, "sync_batchnorm": _sync_batchnorm_off,
          "batchnorm_sums": _batchnorm_reference, "fold_batchnorm": _fold_batchnorm_off}
# Not switchable: the band form of a padded convolution without the padding columns (d2l's
# conv.0; nn/fast/conv.py), the flat index of the banded weights, and DataParallel's own
# threads. The code before all of them is measured by running this script on that tree.


# -- the contenders ------------------------------------------------------------------------------
def import_tree(tree):
    """DIR/lenet_np imported as the package ``lenet_np_before`` (copied to a temporary folder
    under that name: the package imports itself relatively)."""
    import importlib
    import shutil
    import sys
    import tempfile
    from pathlib import Path

    src = Path(tree) / "lenet_np"
    if not (src / "__init__.py").exists():
        raise SystemExit(f"--before-tree: {src} is not the lenet_np package")
    where = Path(tempfile.mkdtemp(prefix="variant_speed_"))
    shutil.copytree(src, where / "lenet_np_before", ignore=shutil.ignore_patterns("__pycache__"))
    sys.path.insert(0, str(where))
    return importlib.import_module("lenet_np_before")


class LenetNp:
    def __init__(self, variant, state, recipe, workers, before=(), ln=None):
        if ln is None:
            import lenet_np as ln
        DataParallel = ln.DataParallel

        self.net = ln.LeNet(variant=variant, seed=0)
        self.net.load_state_dict(state)
        for name in before:                          # before DataParallel copies the network
            BEFORE[name](self.net, None)
        self.model = DataParallel(self.net, workers) if workers > 1 else self.net
        for name in before if workers > 1 else ():
            BEFORE[name](self.net, self.model)
        self.loss_fn = ln.nn.CrossEntropyLoss()
        if recipe["optimizer"] == "adam":
            self.opt = ln.optim.Adam(self.net.parameters(), lr=recipe["lr"])
        else:
            self.opt = ln.optim.SGD(self.net.parameters(), lr=recipe["lr"])

    def step(self, x, y):
        self.net.train()
        self.opt.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        self.model.backward(self.loss_fn.backward(), input_grad=False)
        self.opt.step()
        return loss

    def evaluate(self, x):
        self.net.eval()
        return self.model(x).argmax(axis=1)


class Torch:
    def __init__(self, variant, state, recipe, threads):
        import torch

        from .torch_models import book_model

        torch.set_num_threads(threads)
        self.torch = torch
        self.net = book_model(variant)
        self.net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()})
        opt = torch.optim.Adam if recipe["optimizer"] == "adam" else torch.optim.SGD
        self.opt = opt(self.net.parameters(), lr=recipe["lr"])
        self.F = torch.nn.functional

    def step(self, x, y):
        self.net.train()
        self.opt.zero_grad()
        loss = self.F.cross_entropy(self.net(x), y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    def evaluate(self, x):
        self.net.eval()
        with self.torch.no_grad():
            return self.net(x).argmax(dim=1)


def batches(batch_size, count, seed):
    rng = np.random.default_rng(seed)
    return [(rng.random((batch_size, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch_size))
            for _ in range(count)]


def sample(fn, items, settle, length):
    """Seconds per call of fn(*items[i]) (cycling through items): run untimed for ``settle``
    seconds, then time whole calls until ``length`` seconds have passed."""
    i = 0
    end = time.perf_counter() + settle
    while time.perf_counter() < end:
        fn(*items[i % len(items)])
        i += 1
    calls, t0 = 0, time.perf_counter()
    while True:
        fn(*items[i % len(items)])
        i += 1
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= length:
            return elapsed / calls


def run_variant(variant, rounds, workers, settle, length, before=tuple(BEFORE), before_ln=None, log=print):
    import torch

    import lenet_np as ln
    from lenet_np.model import VARIANTS as RECIPES

    recipe = RECIPES[variant]["recipe"]
    state = ln.LeNet(variant=variant, seed=0).state_dict()
    contenders = {"lenet_np": LenetNp(variant, state, recipe, workers)}
    if before_ln is not None:
        contenders["before"] = LenetNp(variant, state, recipe, workers, ln=before_ln)
    elif before:
        contenders["before"] = LenetNp(variant, state, recipe, workers, before=before)
    contenders["torch"] = Torch(variant, state, recipe, workers)
    train = batches(recipe["batch_size"], 4, seed=1)
    test = batches(EVAL_BATCH, 2, seed=2)
    as_torch = {"train": [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in train],
                "eval": [(torch.from_numpy(x),) for x, _ in test]}
    as_np = {"train": train, "eval": [(x,) for x, _ in test]}
    times = {(name, what): [] for name in contenders for what in ("train", "eval")}
    names = list(contenders)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for what in ("train", "eval"):
            for name in order:
                c = contenders[name]
                fn = c.step if what == "train" else c.evaluate
                items = as_torch[what] if name == "torch" else as_np[what]
                times[name, what].append(sample(fn, items, settle, length))
        log(f"  {variant} round {r + 1}/{rounds}: " + ", ".join(
            f"{name} {times[name, 'train'][-1] * 1e3:.2f}/{times[name, 'eval'][-1] * 1e3:.1f} ms" for name in names))
    return recipe, times


def summarise(times, name, what, base="torch"):
    ratios = [a / b for a, b in zip(times[name, what], times[base, what])]
    return statistics.median(ratios), min(ratios), max(ratios), statistics.median(times[name, what])


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.variant_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated (default: all three)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None, help="threads (default: lenet_np's default_workers)")
    parser.add_argument("--settle", type=float, default=0.1, help="untimed seconds before each sample")
    parser.add_argument("--sample", type=float, default=0.3, help="timed seconds per sample")
    parser.add_argument("--no-before", action="store_true", help="leave out the contender with the new paths off")
    parser.add_argument("--before-tree", metavar="DIR", help="the 'before' contender is DIR/lenet_np instead")
    parser.add_argument("--off", default=",".join(BEFORE),
                        help=f"the new paths the 'before' contender switches off (default: all of {', '.join(BEFORE)})")
    args = parser.parse_args(argv)
    off = tuple(n.strip() for n in args.off.split(",") if n.strip())
    for n in off:
        if n not in BEFORE:
            parser.error(f"--off: {n!r} is not one of {', '.join(BEFORE)}")
    before_ln = import_tree(args.before_tree) if args.before_tree else None
    from lenet_np.parallel import default_workers

    workers = args.workers or default_workers()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"--variants: {v!r} is not one of {', '.join(VARIANTS)}")
    what = (f"{args.before_tree}/lenet_np" if before_ln else "none" if args.no_before
            else f"switched off: {', '.join(off)}")
    print(f"lenet_np with DataParallel({workers}), torch with set_num_threads({workers}); "
          f"{args.rounds} alternating rounds, samples of {args.sample} s after {args.settle} s untimed; before: {what}")
    has_before = before_ln is not None or (not args.no_before and bool(off))
    results = {}
    for v in variants:
        results[v] = run_variant(v, args.rounds, workers, args.settle, args.sample, () if args.no_before else off,
                                 before_ln)
    print()
    print("| variant | recipe | what | lenet_np | torch | lenet_np / torch (median, range of rounds) |"
          + (" before / torch | before / lenet_np |" if has_before else ""))
    print("|:--|:--|:--|--:|--:|--:|" + ("--:|--:|" if has_before else ""))
    for v, (recipe, times) in results.items():
        for what, label in (("train", f"step, batch {recipe['batch_size']}"), ("eval", f"eval, batch {EVAL_BATCH}")):
            med, lo, hi, t = summarise(times, "lenet_np", what)
            tt = statistics.median(times["torch", what])
            row = (f"| {v} | {recipe['optimizer']} lr {recipe['lr']} | {label} | {t * 1e3:.2f} ms | {tt * 1e3:.2f} ms "
                   f"| **{med:.2f}x** ({lo:.2f}-{hi:.2f}) |")
            if has_before:
                bmed, blo, bhi, _ = summarise(times, "before", what)
                gmed, glo, ghi, _ = summarise(times, "before", what, base="lenet_np")
                row += f" {bmed:.2f}x ({blo:.2f}-{bhi:.2f}) | {gmed:.2f}x ({glo:.2f}-{ghi:.2f}) |"
            print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
