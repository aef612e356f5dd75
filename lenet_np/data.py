"""Fashion-MNIST: find it, check it, read it, download it, and cut it into mini-batches.

The data set comes as four files in the IDX format of LeCun's MNIST, usually gzipped:

    train-images-idx3-ubyte   60,000 images of 28x28 pixels    train-labels-idx1-ubyte   their labels
    t10k-images-idx3-ubyte    10,000 test images               t10k-labels-idx1-ubyte    their labels

An IDX file is a big-endian header followed by the raw array in C order:

* a 4-byte magic number ``0x0000TTDD``: two zero bytes, the element type ``TT``
  (``0x08`` unsigned byte, ``0x09`` signed byte, ``0x0B`` int16, ``0x0C`` int32,
  ``0x0D`` float32, ``0x0E`` float64) and the number of dimensions ``DD``;
* ``DD`` sizes as unsigned 32-bit integers;
* the elements, big-endian.

So images start with ``0x00000803`` then count, rows, cols; labels with ``0x00000801``
then count. Images stay uint8 ``(N, 28, 28)`` and labels uint8 ``(N,)`` in memory (47 MB
for the training set); ``iterate_batches`` (lenet_np/batches.py, also importable from here)
converts one mini-batch at a time to float32 ``(B, 1, 28, 28)`` in [0, 1] on the arrays' own
device.

Where the files are looked for, in order (``find_data_dir``): the ``data_dir`` argument
(then only there), ``$LENET_NP_DATA``, the per-user cache
``$XDG_CACHE_HOME/lenet_np/fashion-mnist`` (``~/.cache/...`` by default), and
``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``). Each file may
be gzipped (``X.gz``) or not (``X``).

Command line::

    python -m lenet_np.data                      # where is the data?
    python -m lenet_np.data --verify             # ... and are its SHA-256 sums right?
    python -m lenet_np.data --download [--dest DIR] [--force]

Every problem with the files raises ``DataError`` with a message naming the file, what is
wrong with it, and how to fix it; the command line prints it and exits with status 1.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import os
import secrets
import shutil
import struct
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

from . import backend, cli
from .batches import iterate_batches, num_batches, to_float_images  # noqa: F401  (part of lenet_np.data's API)

CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")

# Field of FashionMNIST -> file name (without .gz), in the order of the fields.
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# SHA-256 of the *decompressed* files (Debian re-compressed the .gz files, so the
# compressed bytes differ between sources; the decompressed bytes do not).
SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

IMAGE_SHAPE = (28, 28)      # rows, cols: what LeNet takes
IMAGES_MAGIC = 0x00000803   # unsigned bytes, 3 dimensions: count, rows, cols
LABELS_MAGIC = 0x00000801   # unsigned bytes, 1 dimension: count
NUM_CLASSES = len(CLASS_NAMES)

DATA_ENV = "LENET_NP_DATA"
URL_ENV = "LENET_NP_DATA_URL"
DEFAULT_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
SYSTEM_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
FIX = "run `make data` or `python -m lenet_np.data --download`"

# IDX element type code -> NumPy dtype (big-endian, as stored).
_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DataError(ValueError):
    """The data set is missing, damaged or not what it should be; the message says which file and why."""


class FashionMNIST(NamedTuple):
    """The four arrays of Fashion-MNIST, all uint8, on the CPU."""

    train_images: np.ndarray   # (60000, 28, 28)
    train_labels: np.ndarray   # (60000,), values 0..9
    test_images: np.ndarray    # (10000, 28, 28)
    test_labels: np.ndarray    # (10000,)


# -- IDX files ------------------------------------------------------------------------------
def write_idx(path, array) -> Path:
    """Write ``array`` (any shape with at least one dimension; uint8, int8, int16, int32,
    float32 or float64) as an IDX file, gzipped when ``path`` ends with ``.gz``."""
    path = Path(path)
    array = backend.as_numpy(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in _IDX_TYPES.items()}
    code = codes.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise ValueError(f"write_idx: cannot store a {array.ndim}-d {array.dtype} array in IDX "
                         "(needs >= 1 dimension and dtype uint8, int8, int16, int32, float32 or float64)")
    header = struct.pack(f">I{array.ndim}I", (code << 8) | array.ndim, *array.shape)
    data = header + array.astype(_IDX_TYPES[code], copy=False).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def read_idx(path, magic: int | None = None) -> np.ndarray:
    """Read an IDX file into a NumPy array of its shape and (native-endian) dtype.

    ``path`` may name ``X`` or ``X.gz``; whichever exists is read (the exact name first).
    With ``magic`` (e.g. ``IMAGES_MAGIC``) the file must carry exactly that magic number.
    """
    path = Path(path)
    if not path.exists():
        other = path.with_name(path.name[:-3] if path.name.endswith(".gz") else path.name + ".gz")
        if not other.exists():
            raise DataError(f"{path}: no such file (nor {other.name}); {FIX}")
        path = other
    return _parse_idx(_read_bytes(path), path, magic)


def _read_bytes(path: Path) -> bytes:
    """The contents of a file, decompressed when its name ends with ``.gz``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    return _gunzip(raw, path) if path.name.endswith(".gz") else raw


def _gunzip(raw: bytes, path) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as exc:   # bad header, truncated stream, bad CRC, bad deflate data
        raise DataError(f"{path}: corrupt gzip file ({exc}); delete it and {FIX}") from None


def _parse_idx(data: bytes, path, magic: int | None = None) -> np.ndarray:
    """Check an IDX header against the payload's size and return the array (a copy)."""
    if len(data) < 4:
        raise DataError(f"{path}: truncated file: {len(data)} bytes, too short for an IDX header; {FIX}")
    got = int.from_bytes(data[:4], "big")
    if magic is not None and got != magic:
        raise DataError(f"{path}: wrong magic number 0x{got:08X}, expected 0x{magic:08X}; "
                        "this is not the IDX file it should be")
    code, ndim = (got >> 8) & 0xFF, got & 0xFF
    if got >> 16 or code not in _IDX_TYPES or ndim == 0:
        raise DataError(f"{path}: not an IDX file (magic number 0x{got:08X})")
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataError(f"{path}: truncated file: the header needs {start} bytes, the file has {len(data)}; {FIX}")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    dtype = _IDX_TYPES[code]
    expected, payload = math.prod(shape) * dtype.itemsize, len(data) - start
    if payload != expected:
        what = "truncated file" if payload < expected else "trailing bytes"
        raise DataError(f"{path}: {what}: expected {expected} bytes of payload for shape {shape}, got {payload}; "
                        f"{FIX}")
    array = np.frombuffer(data, dtype, count=math.prod(shape), offset=start).reshape(shape)
    return array.astype(dtype.newbyteorder("="))   # a writable copy in native byte order


def _check_sha256(data: bytes, path: Path, name: str) -> None:
    got, expected = hashlib.sha256(data).hexdigest(), SHA256[name]
    if got != expected:
        raise DataError(f"{path}: checksum mismatch: the SHA-256 of the decompressed bytes is {got}, expected "
                        f"{expected}; the file is damaged or not the official {name}. Delete it and {FIX}")


# -- finding the data -------------------------------------------------------------------------
def cache_dir() -> Path:
    """The per-user download directory: ``$XDG_CACHE_HOME/lenet_np/fashion-mnist``,
    ``~/.cache/lenet_np/fashion-mnist`` when XDG_CACHE_HOME is unset (or not absolute)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lenet_np" / "fashion-mnist"


def candidate_dirs(data_dir=None) -> list[tuple[Path, str]]:
    """The directories ``find_data_dir`` searches, in order, each with where it comes from."""
    if data_dir is not None:
        return [(Path(data_dir).expanduser(), "the data_dir argument")]
    found = []
    if os.environ.get(DATA_ENV):
        found.append((Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"))
    found.append((cache_dir(), "the per-user cache"))
    found.append((Path(SYSTEM_DATA_DIR), "Debian's dataset-fashion-mnist"))
    return found


def _find_file(directory: Path, name: str) -> Path | None:
    """``directory/name.gz`` or ``directory/name``, whichever exists (``.gz`` first), else None."""
    for path in (directory / f"{name}.gz", directory / name):
        if path.is_file():
            return path
    return None


def find_data_dir(data_dir=None) -> Path:
    """The first directory of the search path that holds all four files (each ``X`` or ``X.gz``).

    With ``data_dir`` only that directory is searched (and the DataError is one line).
    Raises DataError listing every place looked at and what was missing there.
    """
    tried = []
    for directory, origin in candidate_dirs(data_dir):
        missing = [name for name in FILES.values() if _find_file(directory, name) is None]
        if not missing:
            return directory
        why = "no such directory" if not directory.is_dir() else "missing " + ", ".join(missing)
        if data_dir is not None:            # one place, one line
            raise DataError(f"Fashion-MNIST not found in {directory} ({origin}): {why} (each gzipped or not); "
                            f"{FIX}, or pass a directory that holds the four files")
        tried.append(f"  {directory} ({origin}): {why}")
    raise DataError("Fashion-MNIST not found; looked for " + ", ".join(FILES.values())
                    + " (each gzipped or not) in:\n" + "\n".join(tried)
                    + f"\nFix: {FIX}, or set ${DATA_ENV} (or pass --data-dir) to a directory holding the four files.")


def load_fashion_mnist(data_dir=None, verify: bool = False) -> FashionMNIST:
    """Read the four files from ``find_data_dir(data_dir)``.

    Returns ``FashionMNIST(train_images, train_labels, test_images, test_labels)``: uint8
    NumPy arrays of shapes (60000, 28, 28), (60000,), (10000, 28, 28), (10000,) for the
    real data set. Any number of examples is accepted, but images must be 28x28 and labels
    0..9. ``verify=True`` also checks the SHA-256 of each decompressed file.
    """
    directory = find_data_dir(data_dir)
    arrays, paths = {}, {}
    for field, name in FILES.items():
        path = paths[field] = _find_file(directory, name)
        data = _read_bytes(path)
        arrays[field] = _parse_idx(data, path, IMAGES_MAGIC if field.endswith("images") else LABELS_MAGIC)
        if verify:
            _check_sha256(data, path, name)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        images_path, labels_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.shape[1:] != IMAGE_SHAPE:
            got = "x".join(map(str, images.shape[1:]))
            raise DataError(f"{images_path}: holds images of {got} pixels, expected "
                            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} (Fashion-MNIST's size, the input LeNet takes); "
                            f"this is not a Fashion-MNIST file. {FIX}")
        if len(images) != len(labels):
            raise DataError(f"{labels_path}: holds {len(labels)} labels but {images_path} holds {len(images)} "
                            f"images; the two files do not belong together. {FIX}")
        if len(images) == 0:
            raise DataError(f"{images_path}: holds no images (0 examples), and the {split} set needs at least one; "
                            f"the file is truncated or not the real one. {FIX}")
        bad = np.flatnonzero(labels >= NUM_CLASSES)
        if bad.size:
            raise DataError(f"{labels_path}: label {labels[bad[0]]} at index {bad[0]} is out of range "
                            f"0..{NUM_CLASSES - 1} ({bad.size} such label{'s' if bad.size > 1 else ''})")
    return FashionMNIST(**arrays)


# -- downloading ------------------------------------------------------------------------------
def _log(verbose: bool, message: str) -> None:
    if verbose:
        print(message, file=sys.stderr, flush=True)


def _is_valid(path: Path | None, name: str) -> bool:
    if path is None:
        return False
    try:
        _check_sha256(_read_bytes(path), path, name)
    except DataError:
        return False
    return True


def download(dest_dir=None, base_url: str | None = None, force: bool = False, verbose: bool = False) -> Path:
    """Download the four ``.gz`` files into ``dest_dir`` (default ``cache_dir()``) and return it.

    The URL base is ``base_url``, else ``$LENET_NP_DATA_URL``, else the official site; a
    ``file://`` URL works too. Files already in ``dest_dir`` with the right checksum are kept
    unless ``force``. Each file is written under a temporary name in ``dest_dir`` and renamed
    only once the SHA-256 of its decompressed bytes is right; otherwise the temporary file
    is deleted and DataError raised.
    """
    dest = Path(dest_dir).expanduser() if dest_dir is not None else cache_dir()
    base = (base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{dest}: cannot create the download directory: {exc.strerror or exc}") from None
    for name in FILES.values():
        if not force and _is_valid(_find_file(dest, name), name):
            _log(verbose, f"{dest / name}: already present and valid")
            continue
        url = f"{base}/{name}.gz"
        _log(verbose, f"downloading {url}")
        tmp = dest / f".{name}.gz.{os.getpid()}.{secrets.token_hex(4)}.part"   # same file system: atomic rename
        try:
            with open(tmp, "xb") as out:
                try:
                    with urllib.request.urlopen(url, timeout=60) as response:
                        shutil.copyfileobj(response, out)
                except (urllib.error.URLError, OSError, ValueError) as exc:
                    reason = getattr(exc, "reason", None) or exc
                    raise DataError(f"could not download {url}: {reason}. Check the network, set ${URL_ENV} to a "
                                    "mirror, or install the Debian package dataset-fashion-mnist") from None
            got = hashlib.sha256(_gunzip(tmp.read_bytes(), url)).hexdigest()
            if got != SHA256[name]:
                raise DataError(f"{url}: checksum mismatch: the SHA-256 of the decompressed bytes is {got}, "
                                f"expected {SHA256[name]}; the download was discarded")
            os.replace(tmp, dest / f"{name}.gz")
        finally:
            tmp.unlink(missing_ok=True)
    return dest


def ensure_data(dest_dir=None, base_url: str | None = None, force: bool = False, verbose: bool = False) -> Path:
    """Make Fashion-MNIST available and return its directory.

    If the search path already holds a copy whose checksums are right, nothing is done
    (unless ``force``); otherwise ``download(dest_dir, base_url, force)``.
    """
    if not force:
        try:
            found = find_data_dir()
            load_fashion_mnist(found, verify=True)
        except DataError as exc:
            _log(verbose, f"no usable copy of Fashion-MNIST yet ({str(exc).splitlines()[0]})")
        else:
            _log(verbose, f"Fashion-MNIST is already in {found} (checksums verified); nothing to download")
            return found
    dest = download(dest_dir, base_url, force=force, verbose=verbose)
    _log(verbose, f"Fashion-MNIST downloaded and verified in {dest}")
    if dest_dir is not None and dest.resolve() not in {d.resolve() for d, _ in candidate_dirs()}:
        _log(verbose, f"note: {dest} is not on the search path; pass --data-dir {dest} or set {DATA_ENV}={dest}")
    return dest


# -- command line -----------------------------------------------------------------------------
def _url(text: str) -> str:
    """A ``type=`` for --url: an http(s):// or file:// URL."""
    if not text.startswith(("http://", "https://", "file://")):
        raise argparse.ArgumentTypeError(f"expected an http://, https:// or file:// URL, got {text!r}")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = cli.Parser(prog="python -m lenet_np.data",
                                description="Find, verify or download Fashion-MNIST.")
    p.add_argument("--data-dir", type=cli.existing_dir, default=None, help="look only in this directory")
    p.add_argument("--verify", action="store_true", help="check the SHA-256 of every file")
    p.add_argument("--download", action="store_true",
                   help="download the data unless a valid copy is already on the search path")
    p.add_argument("--dest", type=cli.output_dir, default=None,
                   help=f"download into this directory (default: {cache_dir()})")
    p.add_argument("--force", action="store_true", help="with --download: download even if a copy exists")
    p.add_argument("--url", type=_url, default=None,
                   help=f"with --download: URL base (default: ${URL_ENV} or {DEFAULT_URL})")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    if not args.download and (args.dest or args.force or args.url):
        p.error("--dest, --force and --url go with --download")
    if args.download and args.data_dir:
        p.error("--data-dir does not go with --download (use --dest)")
    try:
        if args.download:
            directory = ensure_data(args.dest, args.url, force=args.force, verbose=True)
        else:
            directory = find_data_dir(args.data_dir)
            if args.verify:
                data = load_fashion_mnist(directory, verify=True)
                shape = "x".join(map(str, data.train_images.shape[1:]))
                print(f"checksums OK: {len(data.train_images)} training and {len(data.test_images)} test "
                      f"images of {shape} pixels")
        print(f"Fashion-MNIST found in {directory}")
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:                  # writing a download: a full disk, a vanished directory
        print(f"error: {cli.os_error_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:               # a download is written under a temporary name: nothing half-done
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
