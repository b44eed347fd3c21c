"""A model directory's files are looked at before they are read (issue 13, items 3-4):
only a regular file of the listed size is opened (a FIFO never blocks, a device or a huge
sparse file costs nothing), manifest.json has a size limit, and its JSON is read strictly
(duplicate keys, NaN, overflowing numbers, lone surrogates are refused)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vae_format import Manifest, ModelFormatError
from vae_format.contract import MAX_FILE_BYTES, MAX_MANIFEST_BYTES
from vae_format.strict_json import StrictJSONError, loads
from vae_runtime import VAE

REPO = Path(__file__).resolve().parents[1]
MLP = REPO / "artifacts" / "mnist-mlp-z20"
FAST = 5.0  # seconds: a refusal by stat is immediate; reading 3 GiB is not


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MLP, tmp_path / "model"))


def refused(d: Path, *words: str) -> str:
    start = time.monotonic()
    with pytest.raises(ModelFormatError) as info:
        VAE(d, threads=1)
    assert time.monotonic() - start < FAST
    for word in words:
        assert word in str(info.value), str(info.value)
    return str(info.value)


def reseal_size(d: Path, rel: str, size: int) -> None:
    m = json.loads((d / "manifest.json").read_text())
    m["files"][rel]["bytes"] = size
    (d / "manifest.json").write_text(json.dumps(m))


# ---- 3. stat before read ---------------------------------------------------------------------


def _load_in_child(d: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """VAE(d) in a child process, so a hang would end in a timeout, not a stuck suite."""
    code = f"from vae_runtime import VAE\nVAE({str(d)!r}, threads=1)"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("which", ["encoder.onnx", "manifest.json"])
def test_fifo_in_place_of_a_file_is_refused_without_blocking(model: Path, which: str) -> None:
    (model / which).unlink()
    os.mkfifo(model / which)
    proc = _load_in_child(model)
    assert proc.returncode != 0
    assert f"{which}: is a FIFO, not a regular file" in proc.stderr, proc.stderr


def test_device_behind_a_manifest_symlink_is_refused(model: Path) -> None:
    (model / "manifest.json").unlink()
    (model / "manifest.json").symlink_to("/dev/zero")
    refused(model, "manifest.json: is a character device, not a regular file")


def test_graph_symlinked_to_a_device_inside_the_directory_is_refused(model: Path) -> None:
    """A device node reached through a symlink that stays inside the directory."""
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(model / "zero", 0o600 | 0o020000, os.makedev(1, 5))  # a copy of /dev/zero
    (model / "encoder.onnx").unlink()
    (model / "encoder.onnx").symlink_to("zero")
    refused(model, "encoder.onnx: is a character device")


def test_huge_sparse_graph_is_refused_by_its_size_before_reading(model: Path) -> None:
    """3 GiB of holes: the manifest's 7 KB entry does not match, nothing is read."""
    with open(model / "encoder.onnx", "r+b") as f:
        f.truncate(3 << 30)
    refused(model, "encoder.onnx: size is 3221225472 bytes, manifest.json says")


def test_huge_sparse_graph_listed_with_its_size_is_refused_by_the_manifest(model: Path) -> None:
    """A hostile manifest may list the sparse file's size: the format's per-file limit
    refuses it before anything is opened."""
    with open(model / "encoder.onnx", "r+b") as f:
        f.truncate(8 << 30)
    reseal_size(model, "encoder.onnx", 8 << 30)
    refused(model, "files['encoder.onnx'].bytes is 8589934592", f"the format's {MAX_FILE_BYTES}")


def test_oversized_manifest_is_refused_before_reading(model: Path) -> None:
    with open(model / "manifest.json", "r+b") as f:
        f.truncate(4 << 30)  # sparse: costs no disk, would cost 4 GiB of memory to read
    refused(model, "manifest.json: is 4294967296 bytes", f"({MAX_MANIFEST_BYTES})")


def test_a_file_in_place_of_the_directory_entry_kind_is_named(model: Path) -> None:
    (model / "encoder.onnx").unlink()
    (model / "encoder.onnx").mkdir()
    refused(model, "encoder.onnx: is a directory, not a regular file")


# ---- 4. strict manifest JSON -----------------------------------------------------------------


def _manifest_text(d: Path) -> str:
    return (d / "manifest.json").read_text()


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (
            lambda t: re.sub(r'("format_version": \d+,)', r'"format_version": 99, \1', t, count=1),
            ("'format_version' appears twice",),
        ),
        (
            lambda t: t.replace('"latent_dim": 20', '"latent_dim": ' + "9" * 5000, 1),
            ("more than 19 digits",),
        ),
        (lambda t: t.replace('"latent_dim": 20', '"latent_dim": 20, "x": NaN', 1), ("NaN",)),
        (
            lambda t: t.replace('"latent_dim": 20', '"latent_dim": 20, "x": -Infinity', 1),
            ("-Infinity",),
        ),
        (
            lambda t: t.replace('"latent_dim": 20', '"latent_dim": 20, "x": 1e400', 1),
            ("overflows a float",),
        ),
        (lambda t: t.replace('"name": "', '"name": "\\ud800', 1), ("lone surrogate",)),
        (lambda t: "\ufeff" + t, ("not readable JSON",)),
    ],
    ids=["duplicate-key", "huge-int", "nan", "infinity", "overflow", "surrogate", "bom"],
)
def test_json_oddities_are_refused(model: Path, edit, words) -> None:
    text = _manifest_text(model)
    assert edit(text) != text, "the edit found nothing to change in manifest.json"
    (model / "manifest.json").write_text(edit(text), encoding="utf-8")
    message = refused(model, "manifest.json", *words)
    assert "not readable JSON" in message


def test_huge_integer_is_one_line_in_the_cli(model: Path) -> None:
    text = _manifest_text(model).replace('"latent_dim": 20', '"latent_dim": ' + "9" * 5000, 1)
    (model / "manifest.json").write_text(text)
    vae_run = Path(sys.executable).parent / "vae-run"
    proc = subprocess.run(
        [str(vae_run), "info", "--model", str(model)], capture_output=True, text=True
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_strict_loads_accepts_what_the_writer_writes(model: Path) -> None:
    """The control: every shipped manifest, and a manifest written by Manifest.write."""
    for path in sorted((REPO / "artifacts").glob("*/manifest.json")):
        assert loads(path.read_bytes()) == json.loads(path.read_text())
    Manifest.load(model).write()
    assert Manifest.load(model).latent_dim == 20


def test_manifest_writer_refuses_what_the_reader_would(model: Path) -> None:
    before = _manifest_text(model)
    manifest = Manifest.load(model).with_section("quality", {"nelbo": float("nan")})
    with pytest.raises(ValueError, match="not JSON compliant"):
        manifest.write()
    assert _manifest_text(model) == before


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', "[NaN]", "[1e999]", '["\\udfff"]'])
def test_strict_loads_unit(text: str) -> None:
    with pytest.raises(StrictJSONError):
        loads(text)
    assert loads('{"a": [1, 2.5, "ü", null, true]}') == {"a": [1, 2.5, "ü", None, True]}
