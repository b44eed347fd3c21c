"""MNIST and Fashion-MNIST held in memory for training: both splits of a dataset, every
file checked (structure and published md5) by vae_format's reader before any training
starts; a bad file raises :class:`DatasetError` naming it."""

from __future__ import annotations

import os
from dataclasses import dataclass

from vae_format.datasets import DATASETS, DatasetSpec, Split, find_file, get_spec, read_split
from vae_format.errors import DataFileError as DatasetError
from vae_format.idx import parse_idx

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Split",
    "find_file",
    "get_spec",
    "load_dataset",
    "parse_idx",
]


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    checksums: dict[str, str]  # file actually read -> its md5


def load_dataset(name: str, data_dir: str | os.PathLike[str], verify: bool = True) -> Dataset:
    """Load both splits of ``name`` into memory as uint8, checking every file."""
    train = read_split(name, "train", data_dir, verify=verify)
    test = read_split(name, "test", data_dir, verify=verify)
    return Dataset(name, train, test, {**train.checksums, **test.checksums})
