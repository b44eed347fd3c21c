"""MNIST and Fashion-MNIST: their published files, where to find them, and reading them
checked (structure and published md5), for training, export and the runtime's evaluator.

A file may be gzip-compressed (``name.gz``) or raw (``name``). The folders searched, in
order: ``<data_dir>/<dataset>/``, the ``<data_dir>/<MNIST|FashionMNIST>/raw/`` layout that
torchvision writes, then ``<data_dir>`` itself. The flat folder comes last because MNIST
and Fashion-MNIST share file names; the md5 check refuses a file of the wrong dataset.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import DataFileError
from .idx import parse_idx

SPLITS = ("train", "test")


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


def _mnist_like(
    name: str, tv_dir: str, mirrors: tuple[str, ...], sums: list[tuple[str, str]]
) -> DatasetSpec:
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
    """One split in memory: uint8 images (N, 28, 28), uint8 labels (N,), and the md5 (as
    stored) of each file read, by file name."""

    images: np.ndarray
    labels: np.ndarray
    checksums: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.labels)


def get_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DataFileError(
            f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}"
        ) from None


def candidate_dirs(spec: DatasetSpec, data_dir: str | os.PathLike[str]) -> list[Path]:
    data_dir = Path(data_dir)
    return [data_dir / spec.name, data_dir / spec.torchvision_dir / "raw", data_dir]


def find_file(spec: DatasetSpec, key: str, data_dir: str | os.PathLike[str]) -> Path | None:
    """The first ``name.gz`` or ``name`` of file ``key`` in the searched folders."""
    fname = spec.files[key].name
    for d in candidate_dirs(spec, data_dir):
        for candidate in (d / f"{fname}.gz", d / fname):
            if candidate.is_file():
                return candidate
    return None


def published_md5(spec: DatasetSpec, key: str, path: Path) -> str:
    """The md5 the file at ``path`` must have: the .gz's or the raw content's."""
    fspec = spec.files[key]
    return fspec.md5_gz if path.suffix == ".gz" else fspec.md5_raw


def _read_stored(path: Path) -> tuple[bytes, bytes]:
    """(content as stored on disk, decompressed content); a .gz name means gzip."""
    try:
        stored = path.read_bytes()
    except OSError as exc:
        raise DataFileError(f"{path}: not readable ({exc.strerror or exc})") from None
    if path.suffix != ".gz":
        return stored, stored
    try:
        return stored, gzip.decompress(stored)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFileError(f"{path}: not a readable gzip file ({exc})") from None


def load_file(
    spec: DatasetSpec, key: str, data_dir: str | os.PathLike[str], *, verify: bool = True
) -> tuple[np.ndarray, str, str]:
    """(array, file name read, md5 of the file as stored); structure is checked before the
    md5, so a damaged file is named for what is wrong with it."""
    fspec = spec.files[key]
    path = find_file(spec, key, data_dir)
    if path is None:
        looked = ", ".join(str(d) for d in candidate_dirs(spec, data_dir))
        raise DataFileError(
            f"{spec.name}: {fspec.name}(.gz) not found in {data_dir} (looked in {looked}); "
            "vae-train --download fetches it"
        )
    stored, raw = _read_stored(path)
    array = parse_idx(raw, path, key.split("-")[1])
    md5 = hashlib.md5(stored).hexdigest()
    if verify and md5 != published_md5(spec, key, path):
        raise DataFileError(
            f"{path}: md5 {md5} does not match the published {published_md5(spec, key, path)}"
        )
    if len(array) != fspec.count:
        raise DataFileError(f"{path}: holds {len(array)} records, expected {fspec.count}")
    return array, path.name, md5


def read_split(
    name: str, split: str, data_dir: str | os.PathLike[str], *, verify: bool = True
) -> Split:
    """Split ``split`` ("train" or "test") of dataset ``name``, every file checked."""
    spec = get_spec(name)
    if not Path(data_dir).is_dir():
        raise DataFileError(f"data directory {data_dir} does not exist")
    images, iname, imd5 = load_file(spec, f"{split}-images", data_dir, verify=verify)
    labels, lname, lmd5 = load_file(spec, f"{split}-labels", data_dir, verify=verify)
    if len(images) != len(labels):
        raise DataFileError(f"{name} {split}: {len(images)} images but {len(labels)} labels")
    return Split(images, labels, {iname: imd5, lname: lmd5})


def validation_split(count: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation indices, training indices), both sorted, of a training set of ``count``
    images: the split ``vae-train --val-size`` makes, the first ``val_size`` entries of a
    ``default_rng(seed)`` permutation held out. Export recomputes it to find the images a
    model never saw."""
    perm = np.random.default_rng(seed).permutation(count)
    return np.sort(perm[:val_size]), np.sort(perm[val_size:])
