"""Every command against bad input: generated argument lists and a corpus of corrupt files.

Each command's ``main(argv)`` runs here on tiny IDX files written with ``write_idx`` (64
training and 32 test images). A generated command line is one of three kinds, each with one
right outcome, and none may print a traceback or leave a temporary or partial file:

* every value valid: exit status 0, the command's output and the files it promises, no
  ``error:`` line; or, for the combinations a command documents as failing at run time (a
  checkpoint resumed with another architecture, a run that diverges, ...: the ``expect_*``
  functions below), exit status 1 and that error;
* one value the parser must refuse: exit status 2 and one line on stderr,
  ``python -m lenet_np.<command>: error: ... (see --help)``, naming the flag; nothing written;
* one value the parser accepts and the run must refuse (a damaged checkpoint, a directory
  without the data, a file of the wrong kind): exit status 1 and one ``error:`` line saying
  why; nothing written.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

import lenet_np
import lenet_np.gradcheck as gradcheck
from lenet_np import checkpoint, cli, data, evaluate, exercises, summary, trace, train, visualize
from tests.test_train import make_dataset

bench = pytest.importorskip("benchmarks.run")

EXAMPLES = settings(deadline=None, derandomize=True, max_examples=30,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

HUGE = "99999999999999999999999"                 # a whole number > 2**64: valid where there is no upper bound
HUGE_SEED = "123456789012345678901234567890"
BAD_INTS = ("-5", "0", "-1", "", "nan", "inf", "3.5", "1e3", "abc")
BAD_FLOATS = ("nan", "inf", "-inf", "-1", "0", "", "abc", "1e-400")


# -- the world the commands run in ----------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Paths the generated arguments point to: good and bad data, checkpoints, metrics, exercises."""
    root = tmp_path_factory.mktemp("world")
    w = {"data": make_dataset(root / "data", n_train=64, n_test=32), "empty": root / "empty",
         "file": root / "a-file.txt", "missing": root / "missing" / "nothing", "ck": root / "ck.npz",
         "bad_ck": root / "bad.npz", "csv": root / "metrics.csv", "bad_csv": root / "bad.csv",
         "steps": root / "metrics.steps.csv", "solved": root / "solved", "skeleton": root / "skeleton"}
    w["empty"].mkdir()
    w["file"].write_text("not what you think")
    assert train.main(["--data-dir", str(w["data"]), "--epochs", "1", "--batch-size", "16", "--quiet",
                       "--device", "cpu", "--checkpoint", str(w["ck"]), "--metrics", str(w["csv"])]) == 0
    w["bad_ck"].write_bytes(w["ck"].read_bytes()[:300])
    w["bad_csv"].write_text("a,b\n1,2\n")
    assert w["steps"].exists()                     # train writes the per-step file beside --metrics
    assert exercises.main(["solutions", str(w["solved"])]) == 0
    assert exercises.main(["new", str(w["skeleton"])]) == 0
    return {k: str(v) for k, v in w.items()}


# The settings of world["ck"] that a resumed run or a tool given the checkpoint cannot change
# ("seed" is the earlier name of the classic variant, still taken).
CK_ARCH = {"--variant": "classic", "--activation": "sigmoid", "--pool": "max"}


def other_network(given, held=CK_ARCH) -> bool:
    """Whether the valid values ``given`` ask for another network than ``held``."""
    return any({"seed": "classic"}.get(given.get(f, v), given.get(f, v)) != v for f, v in held.items())


def leftovers(directory: Path) -> list[str]:
    """Temporary or probe files anywhere under ``directory``."""
    return [str(p) for p in directory.rglob("*") if p.name.endswith((".tmp", ".part")) or "probe" in p.name]


def run_main(main, argv) -> int:
    """main(argv)'s exit status, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


# -- generated command lines ---------------------------------------------------------------------
class Flag(NamedTuple):
    """The values generated for one flag. A value is a string, None (the flag alone) or a tuple
    (several values after the flag), and may hold {out}, {data}, ... (filled in by ``fill``).

    ok: valid values; usage: values the parser must refuse (exit 2); refused: (value, what the
    error line says) for values the parser accepts and the run must refuse (exit 1)."""
    ok: tuple = ()
    usage: tuple = ()
    refused: tuple = ()


class Case(NamedTuple):
    """A generated command line: ``argv`` (templates), the valid values in it (``given``: flag ->
    value), its kind ("ok", "usage" or "refused"), the flag with the bad value and, for "refused",
    what the error line says."""
    argv: list
    given: dict
    kind: str
    flag: str | None = None
    says: str = ""


class Expect(NamedTuple):
    """How a command line of valid values ends. Exit 0: ``says`` is in its output (stdout or
    stderr) and every file of ``writes`` exists. Exit 1: ``says`` is in its one ``error:`` line
    (``one_line``: stderr holds nothing else but note: and warning: lines); or, without an
    ``error_line``, the command reports on stdout (``says`` there) and stderr has no error line."""
    status: int = 0
    says: str = ""
    writes: tuple = ()
    one_line: bool = True
    error_line: bool = True


def value_args(flag, value) -> list:
    if value is None:
        return [flag]
    return [flag, *value] if isinstance(value, tuple) else [flag, value]


def cases(options: dict, always=()):
    """Command lines of one kind, drawn first: "ok", the flags of ``always`` and up to four others,
    each with a valid value; "usage" or "refused", the same plus one flag (any, ``always`` included)
    with a value of that kind, at any position."""
    kinds = ["ok"] + [k for k in ("usage", "refused") if any(getattr(o, k) for o in options.values())]

    @st.composite
    def build(draw):
        kind = draw(st.sampled_from(kinds))
        bad = None if kind == "ok" else draw(st.sampled_from([f for f, o in options.items() if getattr(o, kind)]))
        optional = [f for f, o in options.items() if o.ok and f not in always and f != bad]
        flags = [f for f in always if f != bad] + draw(st.lists(st.sampled_from(optional), unique=True, max_size=4))
        given = {f: draw(st.sampled_from(options[f].ok)) for f in flags}
        parts = [value_args(f, v) for f, v in given.items()]
        says = ""
        if kind == "usage":
            parts.insert(draw(st.integers(0, len(parts))), value_args(bad, draw(st.sampled_from(options[bad].usage))))
        elif kind == "refused":
            value, says = draw(st.sampled_from(options[bad].refused))
            parts.insert(draw(st.integers(0, len(parts))), value_args(bad, value))
        return Case([a for part in parts for a in part], given, kind, bad, says)
    return build()


def valid(*pairs) -> Case:
    """A command line of valid values, written out (for @example)."""
    return Case([a for flag, value in pairs for a in value_args(flag, value)], dict(pairs), "ok")


def invalid(flag, value, *pairs) -> Case:
    """A command line of valid values and one the parser must refuse, written out (for @example)."""
    case = valid(*pairs, (flag, value))
    return case._replace(given=dict(pairs), kind="usage", flag=flag)


def fill(text, world, out):
    return text.format(out=out, **world)


USAGE_LINE = re.compile(r"python -m [\w.]+( \w+)?: error: .+ \(see --help\)")


def the_error_line(err: str, one_line: bool = True) -> str:
    """The one ``error: `` line of stderr; with ``one_line`` every other line is a note or a warning."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    if one_line:
        assert all(line.startswith(("note: ", "warning: ")) for line in lines if line != errors[0]), err
    return errors[0]


def drive(main, case: Case, world, capsys, expect=lambda given: Expect()) -> int:
    """Run main on the case's argv (placeholders filled, a fresh output directory) and check that it
    ends as the case's kind says (``expect(case.given)`` for a command line of valid values)."""
    out = Path(tempfile.mkdtemp(prefix="lenet-np-cli-"))
    try:
        argv = [fill(a, world, out) for a in case.argv]
        capsys.readouterr()
        status = run_main(main, argv)
        stdout, err = capsys.readouterr()
        if currently_in_test_context():              # pytest --hypothesis-show-statistics: the mix drawn
            event(f"{case.kind}, exit {status}")
        why = (case.kind, argv, status, err, stdout[-1000:])
        assert "Traceback" not in stdout + err, why
        assert not leftovers(out), (why, leftovers(out))
        wrote = sorted(str(p) for p in out.rglob("*"))
        if case.kind == "usage":                      # the parser's one line, naming the flag; no work done
            lines = err.strip().splitlines()
            assert status == 2 and len(lines) == 1 and USAGE_LINE.fullmatch(lines[0]), why
            assert case.flag in lines[0] and not stdout and not wrote, (why, wrote)
            return status
        expected = expect(case.given)
        if case.kind == "refused":                    # the value's error (or an earlier documented one)
            assert status == 1, why
            line = the_error_line(err)
            says = {fill(case.says, world, out)} | ({expected.says} if expected.status == 1 else set())
            assert any(text in line for text in says), (why, says)
            assert not wrote, (why, wrote)
            return status
        assert status == expected.status, (why, expected)
        if status == 0:
            assert "error:" not in err and expected.says in stdout + err, (why, expected.says)
            missing = [f for f in (fill(w, world, out) for w in expected.writes) if not Path(f).is_file()]
            assert not missing, (why, missing)
        elif expected.error_line:
            assert expected.says in the_error_line(err, expected.one_line), (why, expected.says)
            assert not wrote, (why, wrote)
        else:
            assert "error:" not in err and expected.says in stdout, (why, expected.says)
        return status
    finally:
        shutil.rmtree(out, ignore_errors=True)


NOT_NPZ = "not an .npz"
DATA_DIR = Flag(("{data}",), ("{missing}", "{file}", ""), (("{empty}", "Fashion-MNIST not found in {empty}"),))
CHECKPOINT = Flag(("{ck}",), ("{missing}", "{empty}", ""),
                  (("{bad_ck}", f"checkpoint {{bad_ck}}: {NOT_NPZ}"), ("{file}", f"checkpoint {{file}}: {NOT_NPZ}")))
DEVICE = Flag(("cpu", "CPU", "auto"), ("tpu", "", "cuda:x"))
VARIANT = Flag(("classic", "seed", "d2l", "batchnorm"), ("lenet5", "D2L", "Classic", ""))


# -- generated argument lists, one test per command ------------------------------------------------
TRAIN = {
    "--data-dir": DATA_DIR,
    "--epochs": Flag(("1",), BAD_INTS),
    "--batch-size": Flag(("16", "1000000000", HUGE), BAD_INTS),
    "--lr": Flag(("0.01", "1e308", "1e-300"), BAD_FLOATS),
    "--momentum": Flag(("0.9", "0"), ("-0.1", "nan", "inf", "")),
    "--optimizer": Flag(("adam", "sgd"), ("rmsprop", "Adam", "")),
    "--device": DEVICE,
    "--seed": Flag(("0", "7", HUGE_SEED), ("-5", "nan", "")),
    "--activation": Flag(("sigmoid", "relu"), ("tanh",)),
    "--pool": Flag(("max", "avg"), ("min",)),
    "--variant": VARIANT,
    "--log-every": Flag(("1", "7", HUGE), BAD_INTS),
    "--workers": Flag(("0", "1", "2", "256"), ("-1", "257", "x")),
    "--checkpoint": Flag(("{out}/ck.npz", "{out}/sub/dir/ck.npz", "{out}/CK.NPZ"),
                         ("{out}/ck.txt", "{out}", "/proc/nope/ck.npz", "{file}/ck.npz", "")),
    "--resume": CHECKPOINT,
    "--metrics": Flag(("{out}/m.csv", "{out}/m.json", "{out}/M.JSON"),
                      ("{out}/m.txt", "/proc/nope/m.csv", "{out}", "")),
    "--plot": Flag(("{out}/curves.png",), ("{out}/curves.txt", "/proc/nope/p.png", "")),
}


def expect_train(given) -> Expect:
    """Resuming world["ck"] (1 epoch of 1) has nothing to train, and refuses another architecture or
    optimizer; at --lr 1e308 the second step's loss is NaN (a diverging run; --batch-size 16: 4 steps,
    the other sizes one step of the 64 images); else it trains and writes what it was asked to."""
    if "--resume" in given:
        if other_network(given, {**CK_ARCH, "--optimizer": "adam"}):
            return Expect(1, "was trained with")
        return Expect(0, "already holds 1 epochs")
    if given.get("--lr") == "1e308" and given.get("--batch-size") == "16":
        return Expect(1, "training diverged")
    writes = [given[f] for f in ("--checkpoint", "--metrics", "--plot") if f in given]
    if "--metrics" in given:
        writes.append(str(train.steps_path(given["--metrics"])))
    return Expect(0, "epoch 1, loss", tuple(writes))


@settings(EXAMPLES, max_examples=50)
@given(case=cases(TRAIN, always=("--data-dir",)))
@example(case=valid(("--data-dir", "{data}"), ("--workers", "256"), ("--batch-size", "16")))
@example(case=invalid("--workers", "257", ("--data-dir", "{data}")))
@example(case=valid(("--data-dir", "{data}"), ("--batch-size", HUGE), ("--log-every", HUGE), ("--seed", HUGE_SEED)))
@example(case=valid(("--data-dir", "{data}"), ("--resume", "{ck}"), ("--variant", "d2l")))
@example(case=valid(("--data-dir", "{data}"), ("--resume", "{ck}"), ("--variant", "seed")))
@example(case=valid(("--data-dir", "{data}"), ("--resume", "{ck}"), ("--lr", "0.5"), ("--checkpoint", "{out}/ck.npz")))
@example(case=valid(("--data-dir", "{data}"), ("--lr", "1e308"), ("--batch-size", "16")))
@example(case=valid(("--data-dir", "{data}"), ("--lr", "1e-300"), ("--checkpoint", "{out}/CK.NPZ"),
                    ("--metrics", "{out}/M.JSON"), ("--plot", "{out}/curves.png")))
def test_train_arguments(world, capsys, case):
    drive(train.main, case._replace(argv=["--quiet", "--epochs", "1", *case.argv]), world, capsys, expect_train)


EVALUATE = {"--checkpoint": CHECKPOINT, "--data-dir": DATA_DIR, "--device": DEVICE,
            "--batch-size": Flag(("1", "7", "100000", HUGE), BAD_INTS)}


@settings(EXAMPLES, max_examples=40)
@given(case=cases(EVALUATE, always=("--checkpoint", "--data-dir")))
def test_evaluate_arguments(world, capsys, case):
    drive(evaluate.main, case, world, capsys, lambda given: Expect(0, "test accuracy 0."))


TRACE = {"--batch-size": Flag(("1", "3", "50", "10000"), ("10001", HUGE, *BAD_INTS)),
         "--activation": Flag(("sigmoid", "relu"), ("tanh", "")), "--pool": Flag(("max", "avg"), ("sum",)),
         "--variant": VARIANT,
         "--checkpoint": CHECKPOINT, "--data-dir": DATA_DIR,
         "--seed": Flag(("0", "5", HUGE_SEED), ("-5", "-1", "", "nan"))}


def expect_trace(given) -> Expect:
    """A checkpoint's network cannot change; a batch of one cannot be normalised (batchnorm)."""
    if "--checkpoint" in given:
        if other_network(given):
            return Expect(1, "holds a LeNet with")
    elif given.get("--variant") == "batchnorm" and given.get("--batch-size") == "1":
        return Expect(1, "needs a batch of at least 2")
    return Expect(0, "BACKWARD: what each layer's backward returns")


@settings(EXAMPLES, max_examples=60)
@given(case=cases(TRACE))
@example(case=valid(("--data-dir", "{data}"), ("--batch-size", "10000")))
@example(case=invalid("--batch-size", "10001", ("--data-dir", "{data}")))
@example(case=valid(("--checkpoint", "{ck}"), ("--pool", "avg")))
@example(case=valid(("--variant", "batchnorm"), ("--batch-size", "1")))
def test_trace_arguments(world, capsys, no_data, case):
    if case.given.get("--data-dir") != "{data}":       # 10,000 random images: valid but slow
        case = case._replace(argv=["40" if a == "10000" else a for a in case.argv])
    drive(trace.main, case, world, capsys, expect_trace)


MAX_MISTAKES = Flag(("1", "25", "100"), ("0", "-3", "101", "nan"))
VISUALIZE = {"--checkpoint": CHECKPOINT,
             "--out": Flag(("{out}/pictures", "{out}"), ("{file}", "/proc/nope/pics", "")),
             "--metrics": Flag(("{csv}",), ("{missing}", "{empty}", ""),
                               (("{bad_csv}", "metrics {bad_csv}: cannot read it as per-epoch metrics"),)),
             "--data-dir": DATA_DIR,
             "--image": Flag(("0", "31", "32"), ("-1", "x", ""),
                             (("100000", "--image must lie in 0.."), (HUGE, "--image must lie in 0.."))),
             "--max-mistakes": MAX_MISTAKES,
             "--steps": Flag(("{steps}", ("{steps}", "{steps}")), ("{missing}", "{empty}", ("{steps}",) * 5),
                             (("{bad_csv}", "steps {bad_csv}: cannot read it as per-step metrics"),
                              ("{csv}", "steps {csv}: cannot read it as per-step metrics"))),
             "--classes": Flag((("coat", "Ankle-Boot"), ("Pullover", "Coat"), ("tshirttop", "BAG")),
                               (("Sweater", "Coat"), ("Coat", "coat"), ("", "Bag"), ("Coat",)))}
PICTURES = ("filters.png", "filters_change.png", "feature_maps.png", "saliency.png", "mistakes.png", "curves.png")


def expect_visualize(given) -> Expect:
    """--image indexes the test images: 32 of them in world["data"], 200 random ones without data."""
    if given.get("--image") == "32" and given.get("--data-dir") == "{data}":
        return Expect(1, "--image must lie in 0..31")
    pictures = PICTURES + (("gradient_norms.png",) if "--steps" in given or "--metrics" in given else ())
    return Expect(0, "wrote ", tuple(f"{given['--out']}/{name}" for name in pictures))


@settings(EXAMPLES, max_examples=6)            # each valid draw draws every picture: seconds each
@given(case=cases(VISUALIZE, always=("--checkpoint", "--out")))
@example(case=valid(("--checkpoint", "{ck}"), ("--out", "{out}"), ("--data-dir", "{data}"), ("--image", "32")))
@example(case=invalid("--max-mistakes", "101", ("--checkpoint", "{ck}"), ("--out", "{out}")))
def test_visualize_arguments(world, capsys, no_data, case):
    drive(visualize.main, case, world, capsys, expect_visualize)


SUMMARY = {"--batch-size": Flag(("1", "256", str(10 ** 12), str(10 ** 30)), BAD_INTS),
           "--activation": Flag(("sigmoid", "relu"), ("elu", "")), "--pool": Flag(("max", "avg"), ("", "Max")),
           "--variant": VARIANT}


@settings(EXAMPLES, max_examples=100)
@given(case=cases(SUMMARY))
def test_summary_arguments(world, capsys, case):
    drive(summary.main, case, world, capsys, lambda given: Expect(0, "Total params"))


# every layer but lenet and all (the whole network: seconds, valid all the same)
GRADCHECK = {"--layer": Flag(("conv", "pool", "maxpool", "avgpool", "linear", "sigmoid", "relu", "flatten", "loss",
                              "batchnorm"),
                             ("everything", "Linear", "")),
             "--seed": Flag(("0", "3", HUGE_SEED), ("-1", "nan", "")),
             "--max-elements": Flag(("1", "3"), ("0", "-2", "inf"))}


@settings(EXAMPLES, max_examples=60)
@given(case=cases(GRADCHECK, always=("--layer",)))
def test_gradcheck_arguments(world, capsys, case):
    drive(gradcheck.main, case._replace(argv=["--max-elements", "3", *case.argv]), world, capsys,
          lambda given: Expect(0, "All float64 errors are below"))


# --dest, --force and --url go with --download only (which would go to the network)
DATA = {"--data-dir": DATA_DIR, "--verify": Flag((None,)),
        "--dest": Flag(usage=("{out}/dl", "/proc/nope", "{file}")), "--force": Flag(usage=(None,)),
        "--url": Flag(usage=("ftp://nowhere", "", "file:///nowhere"))}


def expect_data(given) -> Expect:
    """No data on the search path (no_data), and world["data"] is not the real data set."""
    if "--data-dir" not in given:
        return Expect(1, "Fashion-MNIST not found;", one_line=False)     # it goes on to list the places
    if "--verify" in given:
        return Expect(1, "checksum mismatch")
    return Expect(0, "Fashion-MNIST found in")


@settings(EXAMPLES, max_examples=60)
@given(case=cases(DATA))
@example(case=valid(("--data-dir", "{data}"), ("--verify", None)))
def test_data_arguments(world, capsys, no_data, case):
    drive(data.main, case, world, capsys, expect_data)


COMMANDS = "{new,check,solutions}"


@st.composite
def exercise_cases(draw):
    """(case, how a valid one ends): new and solutions write only under {out}; check reads the
    world's solved files (all pass) or the skeletons (none does: exit 1, a line per layer)."""
    layers = draw(st.lists(st.sampled_from(sorted(exercises.EXERCISES)), min_size=1, max_size=3, unique=True))
    select = (["--layer", *layers] if draw(st.booleans()) else []) + ["--examples", draw(st.sampled_from("12"))]
    wrote = ("README.md", "linear.py")
    ok = [(["new", d], Expect(0, f"wrote {len(exercises.EXERCISES)} exercises", tuple(f"{d}/{f}" for f in wrote)))
          for d in ("{out}/ex", "{out}")]
    ok += [(["solutions", d], Expect(0, "wrote the solutions", tuple(f"{d}/{f}" for f in wrote)))
           for d in ("{out}/sol", "{out}")]
    ok += [(["check", "{solved}", *select], Expect(0, "layers pass: each backward agrees")),
           (["check", "{skeleton}", *select], Expect(1, "layers pass; next: ", error_line=False))]
    usage = [(argv, COMMANDS) for argv in (["nonsense", "{out}"], ["", "{out}"], [])]
    usage += [([command, d], "DIR") for command in ("new", "solutions") for d in ("{file}", "/proc/nope/ex", "")]
    usage += [(["new"], "DIR"), (["check", "{missing}"], "DIR"), (["check", "{file}"], "DIR"), (["check", ""], "DIR")]
    usage += [(["check", "{solved}", *select, "--layer", name], "--layer") for name in ("conv", "")]
    usage += [(["check", "{solved}", "--examples", n], "--examples") for n in ("0", "1001", "x")]
    usage += [(["new", "{out}/ex", "--layer", "linear"], "--layer"),
              (["solutions", "{out}", "--examples", "1"], "--examples")]
    refused = [(["check", d, *select], "holds none of") for d in ("{empty}", "{out}")]
    refused += [([command, d], f"{d} already holds") for command in ("new", "solutions")
                for d in ("{solved}", "{skeleton}")]
    kind = draw(st.sampled_from(["ok", "usage", "refused"]))
    if kind == "ok":
        argv, expect = draw(st.sampled_from(ok))
        return Case(argv, {}, kind), expect
    argv, detail = draw(st.sampled_from(usage if kind == "usage" else refused))
    return (Case(argv, {}, kind, flag=detail) if kind == "usage" else Case(argv, {}, kind, says=detail)), Expect()


# check runs Hypothesis itself (lenet_np's layer on random shapes): a @given inside this test's @given
@settings(EXAMPLES, max_examples=60,
          suppress_health_check=[*EXAMPLES.suppress_health_check, HealthCheck.nested_given])
@given(case_expect=exercise_cases())
@example(case_expect=(Case(["check", "{skeleton}", "--layer", "linear", "--examples", "1"], {}, "ok"),
                      Expect(1, "0 of 1 layers pass; next: linear.py", error_line=False)))
def test_exercises_arguments(world, capsys, case_expect):
    case, expect = case_expect
    drive(exercises.main, case, world, capsys, lambda given: expect)


@pytest.mark.parametrize("argv,flag", [
    (["--download", "--dest", "/proc/nope"], "--dest"), (["--download", "--dest", "{file}"], "--dest"),
    (["--download", "--url", "ftp://x"], "--url"), (["--download", "--data-dir", "{data}"], "--data-dir"),
    (["--download", "--data-dir", "{missing}"], "--data-dir"),
])
def test_data_download_arguments(world, capsys, argv, flag):
    assert drive(data.main, Case(argv, {}, "usage", flag), world, capsys) == 2


@pytest.mark.parametrize("argv,flag", [
    (["--only", "foo"], "--only"), (["--only", ""], "--only"), (["--only", "e2e,nothing"], "--only"),
    (["--torch-threads", "0"], "--torch-threads"), (["--torch-threads", "-1"], "--torch-threads"),
    (["--torch-threads", "abc"], "--torch-threads"), (["--out", "/proc/nope"], "--out"), (["--out", "{file}"], "--out"),
    (["--epochs-data", "fake"], "--epochs-data"), (["--child-batches", "0"], "--child-batches"),
    (["--quick", "--torch-threads", "nan"], "--torch-threads"),
])
def test_benchmark_arguments(world, capsys, argv, flag):
    assert drive(bench.main, Case(argv, {}, "usage", flag), world, capsys) == 2


# -- --help ------------------------------------------------------------------------------------------
PARSERS = {"train": train.build_parser, "evaluate": evaluate.build_parser, "trace": trace.build_parser,
           "visualize": visualize.build_parser, "summary": summary.build_parser,
           "gradcheck": gradcheck.build_parser, "data": data.build_parser, "benchmarks.run": bench.build_parser,
           "exercises": exercises.build_parser}


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_is_plain_text_with_help_on_every_flag(name, capsys):
    parser = PARSERS[name]()
    for action in parser._actions:
        assert action.help, f"{name}: {action.option_strings} has no help"
    with pytest.raises(SystemExit) as exc:
        parser.parse_args(["--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text and "::" not in text and "usage: python -m " in text


# -- a corpus of corrupt files ------------------------------------------------------------------------
def damage_idx(directory: Path, how: str) -> str:
    """Damage one file of the data set in ``directory`` and return its name."""
    images, labels = directory / "t10k-images-idx3-ubyte.gz", directory / "t10k-labels-idx1-ubyte.gz"
    if how == "bad magic":
        raw = bytearray(gzip_decompress(images))
        raw[2] = 0x0C
        write_gz(images, bytes(raw))
    elif how == "wrong rank":
        data.write_idx(images, np.zeros((32, 28, 28, 1), np.uint8))
    elif how == "not an IDX file":
        write_gz(images, b"\x12\x34\x08\x03" + bytes(100))
    elif how == "truncated":
        write_gz(images, gzip_decompress(images)[:-100])
    elif how == "truncated header":
        write_gz(images, gzip_decompress(images)[:6])
    elif how == "trailing bytes":
        write_gz(images, gzip_decompress(images) + b"\0" * 10)
    elif how == "count mismatch":
        data.write_idx(labels, data.read_idx(labels)[:-3])
        return labels.name
    elif how == "32x32 images":
        data.write_idx(images, np.zeros((32, 32, 32), np.uint8))
    elif how == "labels out of range":
        lab = data.read_idx(labels)
        lab[5] = 12
        data.write_idx(labels, lab)
        return labels.name
    elif how == "not gzip":
        images.write_bytes(gzip_decompress(images))                 # raw bytes under a .gz name
    elif how == "truncated gzip":
        images.write_bytes(images.read_bytes()[:40])
    else:
        raise ValueError(how)
    return images.name


def gzip_decompress(path: Path) -> bytes:
    import gzip
    return gzip.decompress(path.read_bytes())


def write_gz(path: Path, raw: bytes) -> None:
    import gzip
    path.write_bytes(gzip.compress(raw))


IDX_DAMAGE = ["bad magic", "wrong rank", "not an IDX file", "truncated", "truncated header", "trailing bytes",
              "count mismatch", "32x32 images", "labels out of range", "not gzip", "truncated gzip"]


def fail_if_training_starts(monkeypatch):
    monkeypatch.setattr("lenet_np.training.iterate_batches", lambda *a, **k: pytest.fail("training started"))


def one_error_line(capsys, *must) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for text in must:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.mark.parametrize("how", IDX_DAMAGE)
def test_corrupt_idx_files(world, tmp_path, capsys, monkeypatch, how):
    bad = Path(shutil.copytree(world["data"], tmp_path / "data"))
    name = damage_idx(bad, how)
    fail_if_training_starts(monkeypatch)
    assert train.main(["--data-dir", str(bad), "--quiet", "--checkpoint", str(tmp_path / "ck.npz")]) == 1
    one_error_line(capsys, str(bad / name))
    assert not (tmp_path / "ck.npz").exists()
    assert evaluate.main(["--checkpoint", world["ck"], "--data-dir", str(bad)]) == 1
    one_error_line(capsys, str(bad / name))
    assert trace.main(["--data-dir", str(bad)]) == 1
    one_error_line(capsys, str(bad / name))
    assert visualize.main(["--checkpoint", world["ck"], "--out", str(tmp_path / "pics"), "--data-dir", str(bad)]) == 1
    one_error_line(capsys, str(bad / name))
    assert not (tmp_path / "pics").exists()


def tamper(path: Path, good: Path, how: str) -> None:
    """Write at ``path`` a damaged copy of the checkpoint ``good``."""
    with np.load(good, allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    meta = json.loads(str(files["meta"]))

    def with_meta(change):
        change(meta)
        files["meta"] = np.array(json.dumps(meta))
        np.savez(path, **files)

    if how == "truncated":
        path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign npz":
        np.savez(path, weights=np.zeros(3))
    elif how == "another model":
        net = lenet_np.nn.Sequential(lenet_np.nn.Linear(3, 2))
        checkpoint.save(path, net, None, meta)
    elif how == "wrong shapes":
        files["param/fc.0.weight"] = np.zeros((120, 400), np.float32)          # the classic LeNet-5's
        np.savez(path, **files)
    elif how == "pickle inside":
        files["param/conv.0.weight"] = np.array([object()], dtype=object)
        np.savez(path, **files)
    elif how == "meta not JSON":
        files["meta"] = np.array("{not json")
        np.savez(path, **files)
    elif how == "meta a list":
        files["meta"] = np.array("[1, 2]")
        np.savez(path, **files)
    elif how == "no meta":
        del files["meta"]
        np.savez(path, **files)
    elif how == "unknown activation":
        with_meta(lambda m: m["settings"].update(activation="tanh"))
    elif how == "pool of wrong type":
        with_meta(lambda m: m["settings"].update(pool=["max"]))
    elif how == "epoch a string":
        with_meta(lambda m: m.update(epoch="3"))
    elif how == "lr a string":
        with_meta(lambda m: m["settings"].update(lr="fast"))
    elif how == "settings a list":
        with_meta(lambda m: m.update(settings=[1]))
    elif how == "rng state garbage":
        with_meta(lambda m: m.update(rng_state={"bit_generator": "PCG64", "state": 5}))
    elif how == "sums short":
        with_meta(lambda m: m.update(sums=[0.0]))
    elif how == "history not a list":
        with_meta(lambda m: m.update(history={"epoch": 1}))
    else:
        raise ValueError(how)


# how: (what the one line must say, whether the tools that only read weights see it too)
CHECKPOINT_DAMAGE = {
    "truncated": ("not an .npz", True), "empty": ("not an .npz", True),
    "foreign npz": ("no 'meta' entry", True), "another model": ("does not fit", True),
    "wrong shapes": ("fc.0.weight", True), "pickle inside": ("not a readable .npz", True),
    "meta not JSON": ("not valid JSON", True), "meta a list": ("not a JSON object", True),
    "no meta": ("no 'meta' entry", True),
    "unknown activation": ("settings.activation is 'tanh', expected 'sigmoid' or 'relu'", True),
    "pool of wrong type": ("settings.pool is ['max']", True),
    "epoch a string": ("meta field epoch is '3', expected a whole number >= 0", True),
    "lr a string": ("settings.lr is 'fast', expected a finite number > 0", True),
    "settings a list": ("meta field settings is [1], expected a JSON object", True),
    "rng state garbage": ("meta field rng_state", True),
    "sums short": ("meta field sums is [0.0], expected a list of three numbers", True),
    "history not a list": ("meta field history", True),
}


@pytest.mark.parametrize("how", sorted(CHECKPOINT_DAMAGE))
def test_corrupt_checkpoints(world, tmp_path, capsys, monkeypatch, no_data, how):
    bad = tmp_path / "bad.npz"
    tamper(bad, Path(world["ck"]), how)
    must, tools_too = CHECKPOINT_DAMAGE[how]
    tools_must = (must,) if tools_too else ()
    fail_if_training_starts(monkeypatch)
    assert train.main(["--data-dir", world["data"], "--quiet", "--resume", str(bad), "--epochs", "2"]) == 1
    one_error_line(capsys, f"checkpoint {bad}", must)
    assert evaluate.main(["--checkpoint", str(bad), "--data-dir", world["data"]]) == 1
    one_error_line(capsys, f"checkpoint {bad}", *tools_must)
    assert trace.main(["--checkpoint", str(bad)]) == 1
    one_error_line(capsys, f"checkpoint {bad}", *tools_must)
    assert visualize.main(["--checkpoint", str(bad), "--out", str(tmp_path / "pics")]) == 1
    one_error_line(capsys, f"checkpoint {bad}", *tools_must)
    assert not (tmp_path / "pics").exists()


@pytest.mark.parametrize("how", ["history entry", "mid-epoch past the end", "mid-epoch nothing seen",
                                 "missing rng state"])
def test_checkpoints_that_cannot_resume(world, tmp_path, capsys, monkeypatch, how):
    """Fields only a resumed run reads: refused before the first step, with the file's name."""
    with np.load(world["ck"], allow_pickle=False) as z:
        files = {k: z[k] for k in z.files}
    meta = json.loads(str(files["meta"]))
    if how == "history entry":
        meta["history"][0] = {"epoch": 1}
    elif how == "mid-epoch past the end":
        meta["step"], meta["sums"] = 99, [1.0, 2, 16]
    elif how == "mid-epoch nothing seen":
        meta["step"], meta["sums"] = 2, [0.0, 0, 0]
    else:
        del meta["rng_state"]
    files["meta"] = np.array(json.dumps(meta))
    bad = tmp_path / "bad.npz"
    np.savez(bad, **files)
    fail_if_training_starts(monkeypatch)
    assert train.main(["--data-dir", world["data"], "--quiet", "--resume", str(bad), "--epochs", "2",
                       "--batch-size", "16"]) == 1
    one_error_line(capsys, f"checkpoint {bad}")


def test_cli_types_name_the_value_and_what_is_right():
    cases = [(cli.positive_int, "0", "expected a whole number >= 1, got '0'"),
             (cli.int_in_range(1, 100), "101", "expected a whole number from 1 to 100, got '101'"),
             (cli.positive_float, "nan", "expected a finite number > 0, got 'nan'"),
             (cli.non_negative_float, "-inf", "expected a finite number >= 0, got '-inf'"),
             (cli.device, "tpu", "unknown device 'tpu'"),
             (cli.existing_dir, "/nonexistent/dir", "/nonexistent/dir: no such directory"),
             (cli.existing_file, "/nonexistent/f.npz", "/nonexistent/f.npz: no such file"),
             (cli.output_file(".png"), "plot.txt", "plot.txt: the file name must end in .png"),
             (cli.output_file(".csv"), "/proc/nope/m.csv", "/proc/nope/m.csv: cannot write there")]
    import argparse
    for parse, text, message in cases:
        with pytest.raises(argparse.ArgumentTypeError) as exc:
            parse(text)
        assert message in str(exc.value), (text, str(exc.value))


@pytest.mark.parametrize("error,status,line", [
    (OSError(28, "No space left on device", "/x/ck.npz"), 1, "error: /x/ck.npz: No space left on device; hint"),
    (MemoryError("Unable to allocate 2.79 PiB"), 1,
     "error: out of memory (Unable to allocate 2.79 PiB); try a smaller --batch-size; hint"),
    (KeyboardInterrupt(), 130, "interrupted; hint"),
])
def test_guard_turns_late_failures_into_one_line(capsys, error, status, line):
    def body():
        raise error
    assert cli.guard(body, hint=lambda: "; hint") == status
    assert capsys.readouterr().err.strip() == line
