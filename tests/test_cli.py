"""Every command against bad input: generated argument lists and a corpus of corrupt files.

Each command's ``main(argv)`` runs here on tiny IDX files written with ``write_idx`` (64
training and 32 test images). Whatever the arguments, a command must end with exit status
0, 2 (a bad argument, refused before any work) or 1 (a damaged file, a file of the wrong
kind, a diverging run: the documented runtime errors), print one ``error:`` line and no
traceback, and leave no temporary or partial file in its output directory.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lenet_np
from lenet_np import checkpoint, cli, data, evaluate, exercises, summary, trace, train, visualize
from tests.test_train import make_dataset

gradcheck = __import__("sys").modules["lenet_np.gradcheck"]
bench = pytest.importorskip("benchmarks.run")

EXAMPLES = settings(deadline=None, derandomize=True, max_examples=30,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

BAD_INTS = ["-5", "0", "-1", "", "nan", "inf", "3.5", "1e3", "abc", "99999999999999999999999"]
BAD_FLOATS = ["nan", "inf", "-inf", "-1", "0", "", "abc", "1e-400"]


# -- the world the commands run in ----------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Paths the generated arguments point to: good and bad data, checkpoints, metrics."""
    root = tmp_path_factory.mktemp("world")
    w = {"data": make_dataset(root / "data", n_train=64, n_test=32), "empty": root / "empty",
         "file": root / "a-file.txt", "missing": root / "missing" / "nothing", "ck": root / "ck.npz",
         "bad_ck": root / "bad.npz", "csv": root / "metrics.csv", "bad_csv": root / "bad.csv",
         "steps": root / "metrics.steps.csv"}
    w["empty"].mkdir()
    w["file"].write_text("not what you think")
    assert train.main(["--data-dir", str(w["data"]), "--epochs", "1", "--batch-size", "16", "--quiet",
                       "--device", "cpu", "--checkpoint", str(w["ck"]), "--metrics", str(w["csv"])]) == 0
    w["bad_ck"].write_bytes(w["ck"].read_bytes()[:300])
    w["bad_csv"].write_text("a,b\n1,2\n")
    assert w["steps"].exists()                     # train writes the per-step file beside --metrics
    return {k: str(v) for k, v in w.items()}


def leftovers(directory: Path) -> list[str]:
    """Temporary or probe files anywhere under ``directory``."""
    return [str(p) for p in directory.rglob("*") if p.name.endswith((".tmp", ".part")) or "probe" in p.name]


def run_main(main, argv) -> int:
    """main(argv)'s exit status, argparse's SystemExit included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def check_outcome(status, captured, argv) -> None:
    """0, or 2 with argparse's one line, or 1 with one 'error:' line (only "Fashion-MNIST not found",
    without --data-dir, goes on to list the places searched); never a traceback."""
    out, err = captured.out, captured.err
    assert "Traceback" not in out + err, argv
    assert status in (0, 1, 2), (status, argv, err)
    errors = [line for line in err.splitlines() if "error:" in line]
    if status == 2:                   # one line in all: no usage block
        assert len(err.strip().splitlines()) == 1 and ": error: " in err, (argv, err)
    elif status == 1:
        assert len(errors) == 1 and errors[0].startswith("error: "), (argv, err)
    else:
        assert not errors, (argv, err)


def choose(options: dict, always=()):
    """Argument lists: the flags of ``always`` plus any subset of the others. ``options`` maps a flag to
    (good values, bad values); a flag gets a bad value about one time in three (None: a flag without a
    value; --dest, --force and --url are bad without --download, which would go to the network).
    Values may hold {out}, {data}, ... filled in by ``fill``."""
    def one(flag):
        good, bad = options[flag]
        if not good or not bad:
            values = st.sampled_from(good or bad)
        else:
            values = st.one_of(st.sampled_from(good), st.sampled_from(good), st.sampled_from(bad))
        return values.map(lambda v: [flag] if v is None else [flag, v])

    @st.composite
    def build(draw):
        flags = list(always) + draw(st.lists(st.sampled_from([f for f in options if f not in always]),
                                             unique=True, max_size=4))
        argv = []
        for flag in flags:
            argv += draw(one(flag))
        return argv
    return build()


def fill(argv, world, out):
    return [a.format(out=out, **world) for a in argv]


def drive(main, argv, world, capsys):
    """Run main on argv (placeholders filled, a fresh output directory) and check the outcome."""
    out = Path(tempfile.mkdtemp(prefix="lenet-np-cli-"))
    try:
        argv = fill(argv, world, out)
        capsys.readouterr()
        status = run_main(main, argv)
        check_outcome(status, capsys.readouterr(), argv)
        assert not leftovers(out), (argv, leftovers(out))
        return status
    finally:
        shutil.rmtree(out, ignore_errors=True)


DATA_DIRS = (["{data}"], ["{missing}", "{file}", "{empty}", ""])
CHECKPOINTS = (["{ck}"], ["{bad_ck}", "{missing}", "{empty}", "{file}", ""])
DEVICES = (["cpu", "CPU", "auto"], ["tpu", "", "cuda:x"])


# -- generated argument lists, one test per command ------------------------------------------------
TRAIN = {
    "--data-dir": DATA_DIRS,
    "--epochs": (["1"], BAD_INTS),
    "--batch-size": (["16", "1000000000"], BAD_INTS),
    "--lr": (["0.01", "1e308"], BAD_FLOATS),
    "--momentum": (["0.9", "0"], ["-0.1", "nan", "inf"]),
    "--optimizer": (["adam", "sgd"], ["rmsprop", ""]),
    "--device": DEVICES,
    "--seed": (["0", "7", "123456789012345678901234567890"], ["-5", "nan", ""]),
    "--activation": (["sigmoid", "relu"], ["tanh"]),
    "--pool": (["max", "avg"], ["min"]),
    "--variant": (["seed", "d2l", "batchnorm"], ["lenet5", "D2L", ""]),
    "--log-every": (["1", "7", "1000000"], BAD_INTS),
    "--workers": (["1", "2", "256"], ["-1", "257", "x"]),
    "--checkpoint": (["{out}/ck.npz", "{out}/sub/dir/ck.npz"],
                     ["{out}/ck.txt", "{out}", "/proc/nope/ck.npz", "{file}/ck.npz", ""]),
    "--resume": CHECKPOINTS,
    "--metrics": (["{out}/m.csv", "{out}/m.json"], ["{out}/m.txt", "/proc/nope/m.csv", "{out}"]),
    "--plot": (["{out}/curves.png"], ["{out}/curves.txt", "/proc/nope/p.png", ""]),
}


@settings(EXAMPLES, max_examples=60)
@given(argv=choose(TRAIN, always=("--data-dir",)))
def test_train_arguments(world, capsys, argv):
    drive(train.main, ["--quiet", "--epochs", "1", *argv], world, capsys)


EVALUATE = {"--checkpoint": CHECKPOINTS, "--data-dir": DATA_DIRS, "--device": DEVICES,
            "--batch-size": (["7", "100000"], BAD_INTS)}


@EXAMPLES
@given(argv=choose(EVALUATE, always=("--checkpoint", "--data-dir")))
def test_evaluate_arguments(world, capsys, argv):
    drive(evaluate.main, argv, world, capsys)


TRACE = {"--batch-size": (["1", "3", "50", "10000"], ["10001", "12000", *BAD_INTS]),
         "--activation": (["sigmoid", "relu"], ["tanh", ""]), "--pool": (["max", "avg"], ["sum"]),
         "--variant": (["seed", "d2l", "batchnorm"], ["lenet5", ""]),
         "--checkpoint": CHECKPOINTS, "--data-dir": DATA_DIRS,
         "--seed": (["0", "5", "123456789012345678901234567890"], ["-5", "-1", "", "nan"])}


@EXAMPLES
@given(argv=choose(TRACE))
def test_trace_arguments(world, capsys, no_data, argv):
    if "10000" in argv and "--data-dir" not in argv:
        argv = [a if a != "10000" else "40" for a in argv]     # 10,000 random images: valid but slow
    drive(trace.main, argv, world, capsys)


VISUALIZE = {"--checkpoint": CHECKPOINTS,
             "--out": (["{out}/pictures", "{out}"], ["{file}", "/proc/nope/pics", ""]),
             "--metrics": (["{csv}"], ["{bad_csv}", "{missing}", "{empty}"]),
             "--data-dir": DATA_DIRS,
             "--image": (["0", "31"], ["32", "100000", "-1", "x"]),
             "--max-misclassified": (["1", "2", "100"], ["0", "-3", "101", "nan"]),
             "--max-mistakes": (["1", "25", "100"], ["0", "-3", "101", "nan"]),
             "--steps": (["{steps}"], ["{bad_csv}", "{csv}", "{missing}", "{empty}"]),
             "--classes": ([], ["Sweater", "", "coat"])}


@settings(EXAMPLES, max_examples=20)
@given(argv=choose(VISUALIZE, always=("--checkpoint", "--out")))
def test_visualize_arguments(world, capsys, no_data, argv):
    drive(visualize.main, argv, world, capsys)


SUMMARY = {"--batch-size": (["1", "256", str(10 ** 12), str(10 ** 30)], BAD_INTS),
           "--activation": (["sigmoid", "relu"], ["elu"]), "--pool": (["max", "avg"], [""]),
           "--variant": (["seed", "d2l", "batchnorm"], ["lenet5", ""])}


@EXAMPLES
@given(argv=choose(SUMMARY))
def test_summary_arguments(world, capsys, argv):
    drive(summary.main, argv, world, capsys)


GRADCHECK = {"--layer": (["linear", "flatten", "sigmoid", "relu", "loss"], ["everything", ""]),
             "--seed": (["0", "3"], ["-1", "nan", ""]), "--max-elements": (["1", "3"], ["0", "-2", "inf"])}


@EXAMPLES
@given(argv=choose(GRADCHECK, always=("--layer",)))
def test_gradcheck_arguments(world, capsys, argv):
    drive(gradcheck.main, ["--max-elements", "3", *argv], world, capsys)


DATA = {"--data-dir": DATA_DIRS, "--verify": ([None], []),
        "--dest": ([], ["{out}/dl", "/proc/nope", "{file}"]), "--force": ([], [None]),
        "--url": ([], ["ftp://nowhere", "", "file:///nowhere"])}


@EXAMPLES
@given(argv=choose(DATA))
def test_data_arguments(world, capsys, no_data, argv):
    drive(data.main, argv, world, capsys)


# new and solutions write only under {out}: a directory they fill outside it would change what check finds
EXERCISE_DIRS = {"new": ["{out}/ex", "{out}", "{file}", "/proc/nope/ex", ""],
                 "solutions": ["{out}/sol", "{out}", "{file}", "/proc/nope/sol", ""],
                 "check": ["{out}", "{empty}", "{missing}", "{file}", ""], "nonsense": ["{out}"], "": ["{out}"]}


@EXAMPLES
@given(command=st.sampled_from(sorted(EXERCISE_DIRS)), pick=st.integers(0, 4),
       layers=st.lists(st.sampled_from(["linear", "relu", "conv", ""]), max_size=2),
       examples=st.sampled_from([[], ["--examples", "1"], ["--examples", "0"], ["--examples", "x"]]))
def test_exercises_arguments(world, capsys, command, pick, layers, examples):
    dirs = EXERCISE_DIRS[command]
    argv = [command, dirs[pick % len(dirs)]] + (["--layer", *layers] if layers else []) + examples
    drive(exercises.main, argv, world, capsys)


@pytest.mark.parametrize("argv", [
    ["--download", "--dest", "/proc/nope"], ["--download", "--dest", "{file}"], ["--download", "--url", "ftp://x"],
    ["--download", "--data-dir", "{data}"], ["--download", "--data-dir", "{missing}"],
])
def test_data_download_arguments(world, capsys, argv):
    assert drive(data.main, argv, world, capsys) == 2


@pytest.mark.parametrize("argv", [
    ["--only", "foo"], ["--only", ""], ["--only", "e2e,nothing"], ["--torch-threads", "0"],
    ["--torch-threads", "-1"], ["--torch-threads", "abc"], ["--out", "/proc/nope"], ["--out", "{file}"],
    ["--epochs-data", "fake"], ["--child-batches", "0"], ["--quick", "--torch-threads", "nan"],
])
def test_benchmark_arguments(world, capsys, argv):
    assert drive(bench.main, argv, world, capsys) == 2


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
    monkeypatch.setattr(train, "iterate_batches", lambda *a, **k: pytest.fail("training started"))


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
    must, _ = CHECKPOINT_DAMAGE[how]
    fail_if_training_starts(monkeypatch)
    assert train.main(["--data-dir", world["data"], "--quiet", "--resume", str(bad), "--epochs", "2"]) == 1
    one_error_line(capsys, f"checkpoint {bad}", must)
    assert evaluate.main(["--checkpoint", str(bad), "--data-dir", world["data"]]) == 1
    one_error_line(capsys, f"checkpoint {bad}")
    assert trace.main(["--checkpoint", str(bad)]) == 1
    one_error_line(capsys, f"checkpoint {bad}")
    assert visualize.main(["--checkpoint", str(bad), "--out", str(tmp_path / "pics")]) == 1
    one_error_line(capsys, f"checkpoint {bad}")
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
