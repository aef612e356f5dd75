"""Tests of lenet_np.data: IDX files, error messages, the search path, downloads, mini-batches.

Everything runs on tiny fake data sets written with ``write_idx`` in a temporary directory;
no test touches the network, and only ``test_real_fashion_mnist`` reads the real files.
"""

from __future__ import annotations

import gzip
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lenet_np import data
from lenet_np.data import DataError

NAMES = list(data.FILES.values())
TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS = NAMES


def fake_arrays(n_train=12, n_test=7, rows=28, cols=28, seed=0):
    """A tiny data set: uint8 arrays keyed by file name."""
    rng = np.random.default_rng(seed)
    return {
        TRAIN_IMAGES: rng.integers(0, 256, (n_train, rows, cols), dtype=np.uint8),
        TRAIN_LABELS: rng.integers(0, 10, n_train, dtype=np.uint8),
        TEST_IMAGES: rng.integers(0, 256, (n_test, rows, cols), dtype=np.uint8),
        TEST_LABELS: rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_fake(directory, gz=True, arrays=None):
    """Write the four files of a fake data set into ``directory``; returns the arrays."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = fake_arrays() if arrays is None else arrays
    for name, array in arrays.items():
        data.write_idx(directory / (name + (".gz" if gz else "")), array)
    return arrays


def idx_sha256(path):
    raw = path.read_bytes()
    return hashlib.sha256(gzip.decompress(raw) if path.name.endswith(".gz") else raw).hexdigest()


@pytest.fixture
def fake_dir(tmp_path):
    directory = tmp_path / "fake"
    write_fake(directory, gz=False)
    return directory


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No data anywhere: a fresh HOME, no XDG_CACHE_HOME, no LENET_NP_DATA and a system
    directory that does not exist (so /usr/share/datasets is never picked up)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("XDG_CACHE_HOME", data.DATA_ENV, data.URL_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(data, "SYSTEM_DATA_DIR", tmp_path / "system")
    return tmp_path


# -- IDX round trip ---------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_write_read_round_trip(tmp_path, suffix, dtype):
    array = (np.arange(2 * 3 * 4) - 7).astype(dtype).reshape(2, 3, 4)
    path = data.write_idx(tmp_path / f"a{suffix}", array)
    back = data.read_idx(path)
    assert back.dtype == array.dtype and back.dtype.isnative and back.shape == (2, 3, 4)
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1                                   # a writable copy


def test_idx_header_layout(tmp_path):
    path = data.write_idx(tmp_path / "images", np.full((2, 3, 4), 7, np.uint8))
    raw = path.read_bytes()
    assert raw[:16] == bytes.fromhex("00000803 00000002 00000003 00000004")
    assert raw[16:] == bytes([7]) * 24
    raw = data.write_idx(tmp_path / "labels", np.arange(5, dtype=np.uint8)).read_bytes()
    assert raw == bytes.fromhex("00000801 00000005") + bytes(range(5))
    assert gzip.decompress(data.write_idx(tmp_path / "labels.gz", np.arange(5, dtype=np.uint8)).read_bytes()) == raw


def test_read_idx_finds_the_other_spelling(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    data.write_idx(tmp_path / "only-gz.gz", array)
    data.write_idx(tmp_path / "only-raw", array)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "only-gz"), array)
    np.testing.assert_array_equal(data.read_idx(tmp_path / "only-raw.gz"), array)
    with pytest.raises(DataError, match="neither|no such file") as err:
        data.read_idx(tmp_path / "absent")
    assert "absent" in str(err.value) and "make data" in str(err.value)


def test_write_idx_rejects_what_idx_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        data.write_idx(tmp_path / "x", np.zeros(3, np.int64))
    with pytest.raises(ValueError, match="0-d"):
        data.write_idx(tmp_path / "x", np.uint8(3))


def test_load_fake_dataset_raw_and_gz(tmp_path):
    for gz in (False, True):
        arrays = write_fake(tmp_path / str(gz), gz=gz)
        ds = data.load_fashion_mnist(tmp_path / str(gz))
        assert isinstance(ds, data.FashionMNIST) and ds._fields == tuple(data.FILES)
        for got, name in zip(ds, NAMES):
            assert got.dtype == np.uint8
            np.testing.assert_array_equal(got, arrays[name])


def test_load_mixed_gz_and_raw(tmp_path):
    arrays = fake_arrays()
    for i, (name, array) in enumerate(arrays.items()):
        data.write_idx(tmp_path / (name + (".gz" if i % 2 else "")), array)
    np.testing.assert_array_equal(data.load_fashion_mnist(tmp_path).test_labels, arrays[TEST_LABELS])


def test_the_labels_taken_are_the_indices_of_the_class_names(tmp_path):
    """A label names its class by index into CLASS_NAMES: a split holding every class, the last one
    included, loads label for label; one past the last name is refused, with the range it names."""
    arrays = fake_arrays(n_train=len(data.CLASS_NAMES))
    arrays[TRAIN_LABELS] = np.arange(len(data.CLASS_NAMES), dtype=np.uint8)[::-1].copy()
    write_fake(tmp_path / "every-class", arrays=arrays)
    labels = data.load_fashion_mnist(tmp_path / "every-class").train_labels
    assert [data.CLASS_NAMES[k] for k in labels] == list(reversed(data.CLASS_NAMES))
    arrays[TEST_LABELS][-1] = len(data.CLASS_NAMES)
    write_fake(tmp_path / "one-past", arrays=arrays)
    message = load_error(tmp_path / "one-past")
    assert f"label {len(data.CLASS_NAMES)} at index 6 is out of range 0..{len(data.CLASS_NAMES) - 1}" in message


# -- bad files: a DataError naming the file and the problem -------------------------------------
def load_error(directory, **kwargs) -> str:
    with pytest.raises(DataError) as err:
        data.load_fashion_mnist(directory, **kwargs)
    return str(err.value)


def test_truncated_payload(fake_dir):
    path = fake_dir / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:-5])
    message = load_error(fake_dir)
    assert str(path) in message and "truncated" in message
    assert f"expected {12 * 28 * 28} bytes of payload" in message and f"got {12 * 28 * 28 - 5}" in message


def test_trailing_bytes(fake_dir):
    path = fake_dir / TEST_LABELS
    path.write_bytes(path.read_bytes() + b"\0\0")
    message = load_error(fake_dir)
    assert str(path) in message and "expected 7 bytes of payload" in message and "got 9" in message


@pytest.mark.parametrize("keep", [0, 3, 9])
def test_truncated_header(fake_dir, keep):
    path = fake_dir / TRAIN_IMAGES
    path.write_bytes(path.read_bytes()[:keep])
    message = load_error(fake_dir)
    assert str(path) in message and "truncated" in message


def test_wrong_magic_number(fake_dir):
    (fake_dir / TEST_IMAGES).write_bytes((fake_dir / TEST_LABELS).read_bytes())   # a labels file for images
    message = load_error(fake_dir)
    assert str(fake_dir / TEST_IMAGES) in message
    assert "wrong magic number 0x00000801, expected 0x00000803" in message


def test_not_an_idx_file(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"\x12\x34\x08\x01" + bytes(8))
    with pytest.raises(DataError, match="not an IDX file") as err:
        data.read_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_corrupt_gzip(tmp_path, damage):
    write_fake(tmp_path, gz=True)
    path = tmp_path / f"{TRAIN_LABELS}.gz"
    raw = path.read_bytes()
    if damage == "garbage":
        raw = b"this is not gzip" + raw
    elif damage == "truncated":
        raw = raw[: len(raw) // 2]
    else:
        raw = raw[:-8] + bytes(b ^ 0xFF for b in raw[-8:])     # CRC and length trailer
    path.write_bytes(raw)
    message = load_error(tmp_path)
    assert str(path) in message and "corrupt gzip file" in message


def test_count_mismatch(tmp_path):
    arrays = fake_arrays()
    arrays[TRAIN_LABELS] = arrays[TRAIN_LABELS][:-1]
    write_fake(tmp_path, arrays=arrays)
    message = load_error(tmp_path)
    assert TRAIN_LABELS in message and TRAIN_IMAGES in message
    assert "11 labels" in message and "12 images" in message


def test_label_out_of_range(tmp_path):
    arrays = fake_arrays()
    arrays[TEST_LABELS][3] = 10
    write_fake(tmp_path, arrays=arrays)
    message = load_error(tmp_path)
    assert TEST_LABELS in message and "label 10 at index 3 is out of range 0..9" in message


@pytest.mark.parametrize("name,shape", [(TRAIN_IMAGES, (12, 32, 32)), (TEST_IMAGES, (7, 28, 27))])
def test_images_not_28x28(tmp_path, name, shape):
    """Files that parse but hold images LeNet cannot take are refused when loading."""
    arrays = fake_arrays()
    arrays[name] = np.zeros(shape, np.uint8)
    write_fake(tmp_path, arrays=arrays)
    message = load_error(tmp_path)
    expected = "x".join(map(str, shape[1:]))
    assert str(tmp_path / name) in message and f"images of {expected} pixels, expected 28x28" in message


def test_images_of_the_wrong_rank(tmp_path):
    arrays = fake_arrays()
    arrays[TEST_IMAGES] = np.zeros((7, 28, 28, 1), np.uint8)
    write_fake(tmp_path, arrays=arrays)
    message = load_error(tmp_path)
    assert str(tmp_path / TEST_IMAGES) in message and "wrong magic number 0x00000804, expected 0x00000803" in message


def test_missing_file(fake_dir):
    (fake_dir / TEST_LABELS).unlink()
    message = load_error(fake_dir)
    assert str(fake_dir) in message and f"missing {TEST_LABELS}" in message
    assert "make data" in message and "python -m lenet_np.data --download" in message


def test_checksum_mismatch_when_verifying(fake_dir, monkeypatch):
    data.load_fashion_mnist(fake_dir)                                   # fine without verify
    message = load_error(fake_dir, verify=True)                        # the real sums do not match fake files
    assert str(fake_dir / TRAIN_IMAGES) in message and "checksum mismatch" in message
    assert data.SHA256[TRAIN_IMAGES] in message
    for name in NAMES:
        monkeypatch.setitem(data.SHA256, name, idx_sha256(fake_dir / name))
    data.load_fashion_mnist(fake_dir, verify=True)


def test_cli_reports_errors_without_traceback(fake_dir, capsys):
    (fake_dir / TRAIN_IMAGES).write_bytes(b"\0\0\x08\x03")
    assert data.main(["--data-dir", str(fake_dir)]) == 0             # found: it only checks presence
    assert data.main(["--data-dir", str(fake_dir), "--verify"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and TRAIN_IMAGES in err and "Traceback" not in err


def test_cli_subprocess_exit_status(tmp_path):
    result = subprocess.run([sys.executable, "-m", "lenet_np.data", "--data-dir", str(tmp_path / "none")],
                            capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert result.returncode == 2                                       # a bad argument: argparse's status
    assert "Traceback" not in result.stderr and "argument --data-dir" in result.stderr
    assert "no such directory" in result.stderr


# -- the search path --------------------------------------------------------------------------
def test_nothing_found_lists_every_place(isolated, monkeypatch):
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))
    (isolated / "env").mkdir()
    data.write_idx(isolated / "env" / TRAIN_LABELS, np.zeros(3, np.uint8))
    with pytest.raises(DataError) as err:
        data.find_data_dir()
    message = str(err.value)
    for place in (isolated / "env", isolated / "home" / ".cache" / "lenet_np" / "fashion-mnist",
                  isolated / "system"):
        assert str(place) in message
    assert f"missing {TRAIN_IMAGES}, {TEST_IMAGES}, {TEST_LABELS}" in message
    assert "no such directory" in message and "make data" in message


def test_system_dir_is_the_last_resort(isolated):
    write_fake(isolated / "system")
    assert data.find_data_dir() == isolated / "system"


def test_cache_before_system(isolated):
    write_fake(isolated / "system")
    cache = isolated / "home" / ".cache" / "lenet_np" / "fashion-mnist"
    write_fake(cache)
    assert data.cache_dir() == cache
    assert data.find_data_dir() == cache


def test_xdg_cache_home(isolated, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(isolated / "xdg"))
    write_fake(isolated / "home" / ".cache" / "lenet_np" / "fashion-mnist")     # ignored now
    write_fake(isolated / "xdg" / "lenet_np" / "fashion-mnist")
    assert data.find_data_dir() == isolated / "xdg" / "lenet_np" / "fashion-mnist"


def test_env_var_before_cache(isolated, monkeypatch):
    write_fake(isolated / "home" / ".cache" / "lenet_np" / "fashion-mnist")
    write_fake(isolated / "env")
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))
    assert data.find_data_dir() == isolated / "env"


def test_incomplete_dirs_are_skipped(isolated, monkeypatch):
    write_fake(isolated / "env")
    (isolated / "env" / f"{TEST_IMAGES}.gz").unlink()
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))
    write_fake(isolated / "system", gz=False)
    assert data.find_data_dir() == isolated / "system"


def test_explicit_dir_is_the_only_place(isolated, monkeypatch):
    write_fake(isolated / "env")
    monkeypatch.setenv(data.DATA_ENV, str(isolated / "env"))
    write_fake(isolated / "mine")
    assert data.find_data_dir(isolated / "mine") == isolated / "mine"
    assert data.find_data_dir(str(isolated / "mine")) == isolated / "mine"
    (isolated / "empty").mkdir()
    with pytest.raises(DataError) as err:
        data.find_data_dir(isolated / "empty")
    message = str(err.value)
    assert str(isolated / "empty") in message and "data_dir" in message and str(isolated / "env") not in message


# -- downloading ------------------------------------------------------------------------------
@pytest.fixture
def mirror(isolated, monkeypatch):
    """A directory of fake .gz files served by a file:// URL, with the checksum table patched to match."""
    source = isolated / "mirror"
    arrays = write_fake(source, gz=True)
    for name in NAMES:
        monkeypatch.setitem(data.SHA256, name, idx_sha256(source / f"{name}.gz"))
    return source, source.as_uri(), arrays


def leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".") or p.suffix == ".part")


def test_download(mirror, isolated):
    source, url, arrays = mirror
    dest = data.download(isolated / "dest", base_url=url)
    assert dest == isolated / "dest"
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{name}.gz" for name in NAMES)
    ds = data.load_fashion_mnist(dest, verify=True)
    np.testing.assert_array_equal(ds.train_images, arrays[TRAIN_IMAGES])


def test_download_defaults_to_the_cache_and_env_url(mirror, monkeypatch):
    source, url, _ = mirror
    monkeypatch.setenv(data.URL_ENV, url)
    assert data.download() == data.cache_dir()
    assert data.find_data_dir() == data.cache_dir()


def test_download_skips_valid_files_unless_forced(mirror, isolated):
    source, url, _ = mirror
    dest = data.download(isolated / "dest", base_url=url)
    stamps = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    data.download(dest, base_url=(isolated / "nowhere").as_uri())      # would fail if it fetched anything
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == stamps
    with pytest.raises(DataError, match="could not download"):
        data.download(dest, base_url=(isolated / "nowhere").as_uri(), force=True)
    data.download(dest, base_url=url, force=True)
    assert leftovers(dest) == []


def test_download_replaces_a_damaged_file(mirror, isolated):
    source, url, _ = mirror
    dest = data.download(isolated / "dest", base_url=url)
    (dest / f"{TRAIN_LABELS}.gz").write_bytes(b"junk")
    data.download(dest, base_url=url)
    data.load_fashion_mnist(dest, verify=True)


def test_download_checksum_mismatch_leaves_nothing(mirror, isolated, monkeypatch):
    source, url, _ = mirror
    monkeypatch.setitem(data.SHA256, TEST_IMAGES, "0" * 64)
    dest = isolated / "dest"
    with pytest.raises(DataError) as err:
        data.download(dest, base_url=url)
    message = str(err.value)
    assert f"{TEST_IMAGES}.gz" in message and "checksum mismatch" in message and "0" * 64 in message
    assert not (dest / f"{TEST_IMAGES}.gz").exists() and leftovers(dest) == []


def test_download_corrupt_gzip_leaves_nothing(mirror, isolated):
    source, url, _ = mirror
    (source / f"{TRAIN_LABELS}.gz").write_bytes(b"not gzip at all")
    dest = isolated / "dest"
    with pytest.raises(DataError, match="corrupt gzip") as err:
        data.download(dest, base_url=url)
    assert TRAIN_LABELS in str(err.value)
    assert not (dest / f"{TRAIN_LABELS}.gz").exists() and leftovers(dest) == []


def test_download_missing_remote_file(mirror, isolated):
    source, url, _ = mirror
    (source / f"{TRAIN_LABELS}.gz").unlink()
    with pytest.raises(DataError) as err:
        data.download(isolated / "dest", base_url=url)
    assert "could not download" in str(err.value) and f"{TRAIN_LABELS}.gz" in str(err.value)
    assert leftovers(isolated / "dest") == []


def test_ensure_data_does_nothing_when_a_valid_copy_exists(mirror, isolated):
    source, url, _ = mirror
    data.download(isolated / "system", base_url=url)
    nowhere = (isolated / "nowhere").as_uri()
    assert data.ensure_data(base_url=nowhere) == isolated / "system"
    assert not data.cache_dir().exists()


def test_ensure_data_downloads_when_missing_or_invalid(mirror, isolated):
    source, url, _ = mirror
    write_fake(isolated / "system", arrays=fake_arrays(seed=1))         # present, but wrong checksums
    assert data.ensure_data(base_url=url) == data.cache_dir()
    assert data.find_data_dir() == data.cache_dir()
    data.load_fashion_mnist(verify=True)


def test_cli_download_and_find(mirror, isolated, monkeypatch, capsys):
    source, url, _ = mirror
    monkeypatch.setenv(data.URL_ENV, url)
    assert data.main(["--download"]) == 0
    assert data.main([]) == 0
    assert data.main(["--verify"]) == 0
    out = capsys.readouterr().out
    assert f"Fashion-MNIST found in {data.cache_dir()}" in out and "checksums OK: 12 training and 7 test" in out
    assert data.main(["--download", "--dest", str(isolated / "d"), "--url", (isolated / "nowhere").as_uri()]) == 0
    assert data.main(["--download", "--force", "--dest", str(isolated / "d"),
                      "--url", (isolated / "nowhere").as_uri()]) == 1
    assert "could not download" in capsys.readouterr().err


# -- the real data set ------------------------------------------------------------------------
def real_data_installed() -> bool:
    return all((data.SYSTEM_DATA_DIR / f"{name}.gz").is_file() or (data.SYSTEM_DATA_DIR / name).is_file()
               for name in NAMES)


@pytest.mark.skipif(not real_data_installed(), reason="Fashion-MNIST is not installed in "
                    "/usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist():
    ds = data.load_fashion_mnist(data.SYSTEM_DATA_DIR, verify=True)
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert ds.train_labels.shape == (60000,) and ds.test_labels.shape == (10000,)
    assert all(a.dtype == np.uint8 for a in ds)
    assert np.array_equal(np.bincount(ds.train_labels), [6000] * 10)
    assert np.array_equal(np.bincount(ds.test_labels), [1000] * 10)
    x, y = next(data.iterate_batches(ds.test_images, ds.test_labels, 256))
    assert x.shape == (256, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64


@pytest.mark.parametrize("n_train,n_test,empty", [(5, 0, "t10k-images"), (0, 3, "train-images")])
def test_an_empty_split_is_one_clear_error(tmp_path, n_train, n_test, empty):
    """A set of 0 examples is refused when loaded (it failed later, deep in training or evaluation)."""
    from .test_train import make_dataset

    root = make_dataset(tmp_path / "data", n_train=n_train, n_test=n_test)
    with pytest.raises(DataError, match=rf"{empty}-idx3-ubyte.*holds no images \(0 examples\)") as info:
        data.load_fashion_mnist(root)
    assert "\n" not in str(info.value)
