"""MNIST and Fashion-MNIST from their IDX files, parsed with numpy.

Files may be gzip-compressed or raw, and may sit flat in the data directory, in
``<data_dir>/<dataset>/`` or in the ``<data_dir>/<MNIST|FashionMNIST>/raw/`` layout that
torchvision writes. Every file is checked (magic number, dimensions, length, checksum)
before any training starts; a bad file raises :class:`DatasetError` naming it.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned byte, 1 dimension
ROWS = COLS = 28


class DatasetError(ValueError):
    """A dataset file is missing, malformed or does not match its published checksum."""


@dataclass(frozen=True)
class FileSpec:
    name: str  # the published file name, without .gz
    md5_gz: str  # md5 of the published .gz file
    md5_raw: str  # md5 of its decompressed content
    count: int


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    torchvision_dir: str
    mirrors: tuple[str, ...]
    files: dict[str, FileSpec] = field(default_factory=dict)  # key: "<split>-<kind>"


def _mnist_like(name: str, tv_dir: str, mirrors: tuple[str, ...], sums: list[tuple[str, str]]):
    names = [
        ("train-images", "train-images-idx3-ubyte", 60000),
        ("train-labels", "train-labels-idx1-ubyte", 60000),
        ("test-images", "t10k-images-idx3-ubyte", 10000),
        ("test-labels", "t10k-labels-idx1-ubyte", 10000),
    ]
    files = {
        key: FileSpec(fname, md5_gz, md5_raw, count)
        for (key, fname, count), (md5_gz, md5_raw) in zip(names, sums, strict=True)
    }
    return DatasetSpec(name, tv_dir, mirrors, files)


DATASETS: dict[str, DatasetSpec] = {
    "mnist": _mnist_like(
        "mnist",
        "MNIST",
        (
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        [
            ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6bbc9ace898e44ae57da46a324031adb"),
            ("d53e105ee54ea40749a09fcbcd1e9432", "a25bea736e30d166cdddb491f175f624"),
            ("9fb629c4189551a2d022fa330f9573f3", "2646ac647ad5339dbf082846283269ea"),
            ("ec29112dd5afa0611ce80d1b7f02629c", "27ae3e4e09519cfbb04c329615203637"),
        ],
    ),
    "fashion-mnist": _mnist_like(
        "fashion-mnist",
        "FashionMNIST",
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        [
            ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "f4a8712d7a061bf5bd6d2ca38dc4d50a"),
            ("25c81989df183df01b3e8a0aad5dffbe", "9018921c3c673c538a1fc5bad174d6f9"),
            ("bef4ecab320f06d8554ea6380940ec79", "8181f5470baa50b63fa0f6fddb340f0a"),
            ("bb300cfdad3c16e7a12a480ee83cd310", "15d484375f8d13e6eb1aabb0c3f46965"),
        ],
    ),
}


@dataclass(frozen=True)
class Split:
    """One split held in memory: uint8 images (N, 28, 28) and uint8 labels (N,)."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    checksums: dict[str, str]  # file actually read -> its md5


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}"
        ) from None


def candidate_dirs(spec: DatasetSpec, data_dir: Path) -> list[Path]:
    return [data_dir, data_dir / spec.name, data_dir / spec.torchvision_dir / "raw"]


def find_file(spec: DatasetSpec, key: str, data_dir: Path) -> Path | None:
    fname = spec.files[key].name
    for d in candidate_dirs(spec, data_dir):
        for candidate in (d / f"{fname}.gz", d / fname):
            if candidate.is_file():
                return candidate
    return None


def _read_bytes(path: Path) -> tuple[bytes, bytes]:
    """(content as stored on disk, decompressed content)."""
    stored = path.read_bytes()
    if path.suffix != ".gz":
        return stored, stored
    try:
        return stored, gzip.decompress(stored)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc})") from None


def parse_idx(data: bytes, path: Path | str, kind: str) -> np.ndarray:
    """Parse an IDX image ("images") or label ("labels") file held in memory."""
    want_magic, ndim = (IMAGE_MAGIC, 3) if kind == "images" else (LABEL_MAGIC, 1)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{path}: truncated header ({len(data)} bytes)")
    magic = int.from_bytes(data[:4], "big")
    if magic != want_magic:
        raise DatasetError(
            f"{path}: bad magic number 0x{magic:08x}, expected 0x{want_magic:08x} for {kind}"
        )
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    if kind == "images" and dims[1:] != [ROWS, COLS]:
        raise DatasetError(f"{path}: images are {dims[1]}x{dims[2]}, expected {ROWS}x{COLS}")
    expected = int(np.prod(dims))
    got = len(data) - header
    if got != expected:
        what = "truncated" if got < expected else "has trailing bytes"
        raise DatasetError(
            f"{path}: {what}: header promises {dims[0]} {kind} ({expected} bytes), "
            f"file holds {got} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def load_file(
    spec: DatasetSpec, key: str, data_dir: Path, verify: bool = True
) -> tuple[np.ndarray, str, str]:
    """(array, file name read, md5 of the file as stored)."""
    fspec = spec.files[key]
    path = find_file(spec, key, data_dir)
    if path is None:
        raise DatasetError(
            f"{spec.name}: {fspec.name}(.gz) not found in {data_dir} "
            f"(looked in {', '.join(str(d) for d in candidate_dirs(spec, data_dir))}); "
            "pass --download to fetch it"
        )
    stored, raw = _read_bytes(path)
    array = parse_idx(raw, path, key.split("-")[1])
    md5 = hashlib.md5(stored).hexdigest()
    if verify:
        want = fspec.md5_gz if path.suffix == ".gz" else fspec.md5_raw
        if md5 != want:
            raise DatasetError(f"{path}: md5 {md5} does not match the published {want}")
    if len(array) != fspec.count:
        raise DatasetError(f"{path}: holds {len(array)} records, expected {fspec.count}")
    return array, path.name, md5


def load_split(
    spec: DatasetSpec, split: str, data_dir: Path, checksums: dict[str, str], verify: bool = True
) -> Split:
    """Load one split; the md5 of each file read is added to ``checksums``."""
    images, iname, imd5 = load_file(spec, f"{split}-images", data_dir, verify)
    labels, lname, lmd5 = load_file(spec, f"{split}-labels", data_dir, verify)
    if len(images) != len(labels):
        raise DatasetError(f"{spec.name} {split}: {len(images)} images but {len(labels)} labels")
    checksums.update({iname: imd5, lname: lmd5})
    return Split(images, labels)


def load_dataset(name: str, data_dir: str | Path, verify: bool = True) -> Dataset:
    """Load both splits of ``name`` into memory as uint8, checking every file."""
    spec = get_spec(name)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DatasetError(f"data directory {data_dir} does not exist")
    checksums: dict[str, str] = {}
    train = load_split(spec, "train", data_dir, checksums, verify)
    test = load_split(spec, "test", data_dir, checksums, verify)
    return Dataset(spec.name, train, test, checksums)
