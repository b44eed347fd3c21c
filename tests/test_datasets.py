"""IDX parsing and dataset loading: the real files, the layouts, and each kind of bad file."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from vae_train.datasets import DATASETS, DatasetError, load_dataset, parse_idx

FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
# The published md5 of each MNIST .gz file (shared/datasets/README.md).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def idx_bytes(magic: int, dims: list[int], payload: bytes | None = None) -> bytes:
    """An IDX file written field by field with struct (independent of parse_idx)."""
    header = struct.pack(f">I{len(dims)}I", magic, *dims)
    if payload is None:
        payload = bytes(i % 256 for i in range(int(np.prod(dims))))
    return header + payload


def link_mnist(src: Path, dst: Path, skip: tuple[str, ...] = ()) -> None:
    """Symlink the real MNIST .gz files into dst (no copies), except those in skip."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        if name not in skip:
            (dst / f"{name}.gz").symlink_to(src / f"{name}.gz")


@pytest.fixture(scope="module")
def mnist(data_dir: Path):
    return load_dataset("mnist", data_dir)


def test_mnist_loads(mnist, data_dir: Path) -> None:
    assert mnist.train.images.shape == (60000, 28, 28)
    assert mnist.test.images.shape == (10000, 28, 28)
    assert mnist.train.labels.shape == (60000,) and mnist.test.labels.shape == (10000,)
    assert mnist.train.images.dtype == np.uint8 and mnist.train.labels.dtype == np.uint8
    counts = np.bincount(mnist.train.labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.test.labels).sum() == 10000 and mnist.test.labels.max() == 9
    assert mnist.train.images.mean(dtype=np.float64) == pytest.approx(33.318, abs=5e-4)
    assert mnist.checksums == MNIST_MD5
    # the checksums are those of the files on disk
    for name, md5 in mnist.checksums.items():
        assert hashlib.md5((data_dir / "mnist" / name).read_bytes()).hexdigest() == md5


def test_pixels_match_an_independent_parse(mnist, data_dir: Path) -> None:
    raw = gzip.decompress((data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert struct.unpack(">IIII", raw[:16]) == (0x803, 10000, 28, 28)
    first = np.array(list(raw[16 : 16 + 784]), dtype=np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(mnist.test.images[0], first)
    labels = gzip.decompress((data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert mnist.test.labels[:10].tolist() == list(labels[8:18])
    assert mnist.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_fashion_mnist_loads(data_dir: Path) -> None:
    ds = load_dataset("fashion-mnist", data_dir)
    assert ds.train.images.shape == (60000, 28, 28) and ds.test.images.shape == (10000, 28, 28)
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(ds.train.labels).tolist() == [6000] * 10
    assert np.bincount(ds.test.labels).tolist() == [1000] * 10
    assert set(ds.checksums) == {f"{n}.gz" for n in FILES}


def test_raw_files_load(mnist, data_dir: Path, tmp_path: Path) -> None:
    for name in FILES:
        raw = gzip.decompress((data_dir / "mnist" / f"{name}.gz").read_bytes())
        (tmp_path / name).write_bytes(raw)
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(ds.train.images, mnist.train.images)
    np.testing.assert_array_equal(ds.test.labels, mnist.test.labels)
    assert set(ds.checksums) == set(FILES)  # the raw files were read, not some .gz
    assert ds.checksums["t10k-labels-idx1-ubyte"] == DATASETS["mnist"].files["test-labels"].md5_raw


def test_torchvision_layout_loads(mnist, data_dir: Path, tmp_path: Path) -> None:
    link_mnist(data_dir / "mnist", tmp_path / "MNIST" / "raw")
    ds = load_dataset("mnist", tmp_path)
    np.testing.assert_array_equal(ds.test.images, mnist.test.images)
    assert ds.checksums == MNIST_MD5


def test_dataset_subfolder_layout_loads(mnist, data_dir: Path, tmp_path: Path) -> None:
    link_mnist(data_dir / "mnist", tmp_path / "mnist")
    np.testing.assert_array_equal(load_dataset("mnist", tmp_path).train.labels, mnist.train.labels)


# -- structural problems, through parse_idx ---------------------------------------------------


def test_parse_idx_reads_a_small_file() -> None:
    data = idx_bytes(0x803, [2, 28, 28])
    arr = parse_idx(data, "small", "images")
    assert arr.shape == (2, 28, 28)
    assert arr[1, 0, 0] == 784 % 256 and arr[0, 0, 5] == 5
    labels = parse_idx(idx_bytes(0x801, [3], bytes([4, 0, 9])), "l", "labels")
    assert labels.tolist() == [4, 0, 9]


@pytest.mark.parametrize(
    ("data", "kind", "match"),
    [
        (idx_bytes(0x801, [2, 28, 28]), "images", "magic"),  # label magic on an image file
        (idx_bytes(0x803, [2]), "labels", "magic"),
        (idx_bytes(0x00000804, [2, 28, 28]), "images", "magic"),
        (b"\x1f\x8b\x08\x00" + bytes(30), "images", "magic"),  # gzip bytes read as raw IDX
        (idx_bytes(0x803, [2, 28, 28])[:-1], "images", "truncated"),
        (idx_bytes(0x803, [2, 28, 28])[:700], "images", "truncated"),
        (idx_bytes(0x801, [5], bytes(3)), "labels", "truncated"),
        (idx_bytes(0x803, [2, 28, 28]) + b"\0", "images", "trailing"),
        (idx_bytes(0x803, [2, 27, 28]), "images", "28x28"),
        (idx_bytes(0x803, [2, 28, 32]), "images", "28x28"),
        (idx_bytes(0x803, [2, 28, 28])[:10], "images", "header"),
        (b"", "labels", "header"),
    ],
)
def test_parse_idx_refuses_bad_structure(data: bytes, kind: str, match: str) -> None:
    with pytest.raises(DatasetError, match=match) as err:
        parse_idx(data, "/some/dir/bad-file-idx", kind)
    assert "/some/dir/bad-file-idx" in str(err.value)


# -- bad files on disk, through load_dataset --------------------------------------------------


def _refused(data_dir: Path, culprit: Path, match: str, verify: bool = True) -> None:
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset("mnist", data_dir, verify=verify)
    assert str(culprit) in str(err.value)


def test_checksum_mismatch_refused(data_dir: Path, tmp_path: Path) -> None:
    link_mnist(data_dir / "mnist", tmp_path, skip=("t10k-labels-idx1-ubyte",))
    raw = bytearray(gzip.decompress((data_dir / "mnist/t10k-labels-idx1-ubyte.gz").read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one wrong label: still a well-formed IDX file
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(bytes(raw)))
    _refused(tmp_path, bad, "md5")
    # and the same change in an uncompressed file is caught by the raw checksum
    bad.unlink()
    raw_file = tmp_path / "t10k-labels-idx1-ubyte"
    raw_file.write_bytes(bytes(raw))
    _refused(tmp_path, raw_file, "md5")
    # without verification the structurally sound file is accepted
    assert load_dataset("mnist", tmp_path, verify=False).test.labels[92] == raw[100]


def test_non_gzip_bytes_in_gz_refused(data_dir: Path, tmp_path: Path) -> None:
    link_mnist(data_dir / "mnist", tmp_path, skip=("train-labels-idx1-ubyte",))
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(idx_bytes(0x801, [60000]))  # raw IDX bytes under a .gz name
    _refused(tmp_path, bad, "gzip")


def test_truncated_gz_refused(data_dir: Path, tmp_path: Path) -> None:
    link_mnist(data_dir / "mnist", tmp_path, skip=("t10k-images-idx3-ubyte",))
    bad = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes((data_dir / "mnist/t10k-images-idx3-ubyte.gz").read_bytes()[:50_000])
    _refused(tmp_path, bad, "gzip")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("t10k-labels-idx1-ubyte", idx_bytes(0x803, [10000, 28, 28]), "magic"),
        ("t10k-labels-idx1-ubyte", idx_bytes(0x801, [10000], bytes(9999)), "truncated"),
        ("t10k-images-idx3-ubyte", idx_bytes(0x803, [10000, 28, 27]), "28x28"),
        ("t10k-images-idx3-ubyte", idx_bytes(0x803, [10000, 28, 28])[:-784], "truncated"),
    ],
)
def test_bad_file_on_disk_refused(
    data_dir: Path, tmp_path: Path, name: str, content: bytes, match: str
) -> None:
    link_mnist(data_dir / "mnist", tmp_path, skip=(name,))
    bad = tmp_path / f"{name}.gz"
    bad.write_bytes(gzip.compress(content))
    # structural checks come before (and without) the checksum check
    _refused(tmp_path, bad, match, verify=False)
    _refused(tmp_path, bad, match)


def test_image_label_count_mismatch_refused(data_dir: Path, tmp_path: Path) -> None:
    link_mnist(data_dir / "mnist", tmp_path, skip=("train-labels-idx1-ubyte",))
    bad = tmp_path / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(idx_bytes(0x801, [59999], bytes(59999))))
    _refused(tmp_path, bad, "59999", verify=False)
    _refused(tmp_path, bad, "md5|59999")


def test_missing_file_refused(data_dir: Path, tmp_path: Path) -> None:
    link_mnist(data_dir / "mnist", tmp_path, skip=("t10k-images-idx3-ubyte",))
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte") as err:
        load_dataset("mnist", tmp_path)
    assert "not found" in str(err.value) and "--download" in str(err.value)


def test_missing_directory_and_unknown_dataset_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("mnist", tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("cifar10", tmp_path)


def test_spec_md5s_are_the_published_ones() -> None:
    spec = DATASETS["mnist"]
    assert {f"{f.name}.gz": f.md5_gz for f in spec.files.values()} == MNIST_MD5
