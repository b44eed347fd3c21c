"""vae_format, the shared format package: the manifest written and read back, verified
reads, the one atomic writer (and the file mode it leaves), the IDX reader, the dataset
finder and the image grid's pixel rule."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from vae_format import (
    FORMAT_VERSION,
    FileEntry,
    Manifest,
    ModelFormatError,
    VAEError,
    contract,
    graph_entry,
    graph_metadata,
    likelihood_section,
    read_verified,
    verify_files,
)
from vae_format.atomic import atomic_path, save_npy, write_bytes, write_json
from vae_format.datasets import DATASETS, find_file, read_split
from vae_format.errors import DataFileError
from vae_format.grid import make_grid, to_pixels
from vae_format.idx import iter_idx_images, parse_idx, read_idx, read_idx_header
from vae_format.preprocess_spec import builtin

L = 4


def _graph_dir(tmp_path: Path) -> tuple[Path, dict[str, FileEntry]]:
    """A directory with two stand-in graph files (the format checks bytes, not ONNX)."""
    d = tmp_path / "model"
    d.mkdir()
    files = {}
    for role in ("encoder", "decoder"):
        (d / f"{role}.onnx").write_bytes(f"{role} graph bytes".encode())
        files[f"{role}.onnx"] = FileEntry.of_file(d / f"{role}.onnx", "graph")
    return d, files


def _new_manifest(d: Path, files: dict[str, FileEntry], **sections) -> Manifest:
    return Manifest.create(
        d,
        name="tiny",
        arch="conv",
        latent_dim=L,
        likelihood=likelihood_section("bernoulli"),
        graphs={r: graph_entry(r, L, f"{r}.onnx") for r in ("encoder", "decoder")},
        files=files,
        preprocess=sections.pop("preprocess", builtin("mnist")),
        **sections,
    )


# ---- manifest: written, then read back ------------------------------------------------------


def test_a_created_manifest_round_trips_through_the_reader(tmp_path):
    d, files = _graph_dir(tmp_path)
    m = _new_manifest(d, files, training={"epoch": 3}, created="2026-01-01T00:00:00Z")
    path = m.write()
    assert path == d / "manifest.json"
    loaded = Manifest.load(d)
    assert loaded == m
    assert loaded.to_dict() == json.loads(path.read_text())
    doc = loaded.to_dict()
    assert list(doc)[:9] == [
        "format",
        "format_version",
        "name",
        "arch",
        "latent_dim",
        "image",
        "likelihood",
        "graphs",
        "files",
    ]
    assert doc["graphs"]["encoder"]["outputs"] == {"mu": [None, L], "logvar": [None, L]}
    assert doc["graphs"]["decoder"]["inputs"] == {"z": [None, L]}
    assert loaded.section("training") == {"epoch": 3}
    assert loaded.graph_files() == {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}


def test_a_gaussian_likelihood_keeps_sigma(tmp_path):
    d, files = _graph_dir(tmp_path)
    m = Manifest.create(
        d,
        name="g",
        arch="mlp",
        latent_dim=L,
        likelihood=likelihood_section("gaussian", 0.25),
        graphs={r: graph_entry(r, L, f"{r}.onnx") for r in ("encoder", "decoder")},
        files=files,
        preprocess="none",
    )
    assert (m.likelihood, m.sigma) == ("gaussian", 0.25)
    assert Manifest.load(Path(m.write()).parent).raw["likelihood"] == {
        "name": "gaussian",
        "sigma": 0.25,
    }


def test_variants_files_and_sections_are_added_and_checked(tmp_path):
    d, files = _graph_dir(tmp_path)
    m = _new_manifest(d, files)
    (d / "decoder.int8.onnx").write_bytes(b"small decoder")
    with pytest.raises(ModelFormatError, match="not listed under 'files'"):
        m.with_variant("int8", {"encoder": "encoder.onnx", "decoder": "decoder.int8.onnx"})
    m2 = m.with_files({"decoder.int8.onnx": FileEntry.of_file(d / "decoder.int8.onnx", "graph")})
    m3 = m2.with_variant(
        "int8", {"encoder": "encoder.onnx", "decoder": "decoder.int8.onnx"}, method="test"
    )
    m4 = m3.with_section("quality", {"test_nelbo": 90.0}).with_graph_info(
        "decoder", flops_per_image=123
    )
    m4.write()
    back = Manifest.load(d)
    assert back.graph_files("int8")["decoder"] == "decoder.int8.onnx"
    assert back.raw["variants"]["int8"]["method"] == "test"
    assert back.raw["quality"] == {"test_nelbo": 90.0}
    assert back.raw["graphs"]["decoder"]["flops_per_image"] == 123
    assert "variants" not in m.raw  # each with_* returns a new manifest
    with pytest.raises(ValueError, match="own method"):
        m.with_section("files", {})
    with pytest.raises(ValueError, match="graph_entry"):
        m.with_graph_info("encoder", file="other.onnx")


def _int8_manifest(tmp_path: Path) -> Manifest:
    d, files = _graph_dir(tmp_path)
    return _new_manifest(d, files)


@pytest.mark.parametrize(
    ("session", "words"),
    [
        ("all", "must be an object"),
        ({"optimisation": "all"}, "unknown key"),
        ({"min_optimization": "fast"}, "min_optimization is 'fast'"),
        ({"optimization": 99}, "optimization is 99"),
        ({"min_optimization": "extended", "optimization": "basic"}, "below its min_optimization"),
    ],
)
def test_a_variants_session_entry_is_checked(tmp_path, session, words):
    m = _int8_manifest(tmp_path)
    roles = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    with pytest.raises(ModelFormatError, match=words):
        m.with_variant("int8", roles, session=session)
    doc = m.to_dict()  # and a reader refuses it as a writer does
    doc["variants"] = {"int8": {**roles, "session": session}}
    (m.directory / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match=words):
        Manifest.load(m.directory)


def test_a_variants_session_entry_is_read(tmp_path):
    m = _int8_manifest(tmp_path)
    roles = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}
    wanted = {"min_optimization": "extended", "optimization": "all"}
    m.with_variant("int8", roles, session=wanted).with_variant("plain", roles).write()
    back = Manifest.load(m.directory)
    assert back.session("int8") == wanted
    assert back.session("plain") == {} and back.session(None) == {}
    with pytest.raises(ModelFormatError, match="no variant 'fp8'"):
        back.session("fp8")


def test_unknown_sections_are_kept(tmp_path):
    d, files = _graph_dir(tmp_path)
    doc = _new_manifest(d, files).to_dict()
    doc["annotations"] = {"future": True}
    doc["variants"] = {}
    (d / "manifest.json").write_text(json.dumps(doc))
    assert Manifest.load(d).raw["annotations"] == {"future": True}


def test_writing_a_manifest_the_reader_refuses_is_impossible(tmp_path):
    d, files = _graph_dir(tmp_path)
    with pytest.raises(ModelFormatError, match="latent_dim must be >= 1"):
        Manifest.create(
            d,
            name="x",
            arch="conv",
            latent_dim=0,
            likelihood={"name": "bernoulli"},
            graphs={r: graph_entry(r, 0, f"{r}.onnx") for r in ("encoder", "decoder")},
            files=files,
            preprocess="none",
        )
    with pytest.raises(ModelFormatError, match=r"likelihood\.sigma"):
        Manifest.create(
            d,
            name="x",
            arch="conv",
            latent_dim=L,
            likelihood={"name": "gaussian"},
            graphs={r: graph_entry(r, L, f"{r}.onnx") for r in ("encoder", "decoder")},
            files=files,
            preprocess="none",
        )
    with pytest.raises(ModelFormatError, match=r"'\.\.'"):
        _new_manifest(d, files).with_files({"../x.onnx": files["encoder.onnx"]})
    assert not (d / "manifest.json").exists()


def test_moved_to_names_the_new_directory_in_refusals(tmp_path):
    d, files = _graph_dir(tmp_path)
    m = _new_manifest(d, files).moved_to(tmp_path / "staged")
    assert m.directory == tmp_path / "staged"
    with pytest.raises(ModelFormatError, match=str(tmp_path / "staged" / "manifest.json")):
        m.graph_files("fp16")


def test_file_entries_from_bytes_and_from_files_agree(tmp_path):
    data = os.urandom(3 << 20)  # several hashing blocks
    (tmp_path / "f").write_bytes(data)
    entry = FileEntry.of_file(tmp_path / "f", "checkpoint")
    assert entry == FileEntry.of_bytes(data, "checkpoint")
    assert entry.sha256 == hashlib.sha256(data).hexdigest() and entry.bytes == len(data)
    assert entry.to_dict() == {"sha256": entry.sha256, "bytes": len(data), "role": "checkpoint"}


def test_contract_and_metadata():
    enc = contract("encoder", 7)
    assert enc.input_names == ("x",) and enc.output_names == ("mu", "logvar")
    assert [t.shape for t in enc.outputs] == [(None, 7), (None, 7)]
    assert contract("decoder", 7).inputs[0].shape == (None, 7)
    with pytest.raises(ValueError, match="unknown graph role"):
        contract("critic", 7)
    meta = graph_metadata(
        name="m", role="decoder", arch="mlp", latent_dim=7, likelihood="bernoulli", dataset="mnist"
    )
    assert (
        meta["vae_onnx.format_version"] == str(FORMAT_VERSION) == "2"
        and meta["vae_onnx.latent_dim"] == "7"
    )
    assert all(isinstance(v, str) for v in meta.values())


def test_format_errors_are_vae_errors_and_value_errors():
    assert issubclass(ModelFormatError, VAEError) and issubclass(ModelFormatError, ValueError)
    assert issubclass(DataFileError, VAEError) and issubclass(DataFileError, ValueError)


# ---- verified reads -------------------------------------------------------------------------


def test_read_verified_returns_the_checked_bytes_and_refuses_changes(tmp_path):
    d, files = _graph_dir(tmp_path)
    m = _new_manifest(d, files)
    assert read_verified(m, "encoder.onnx") == b"encoder graph bytes"
    verify_files(m)
    (d / "decoder.onnx").write_bytes(b"decoder graph bytez")  # same size
    with pytest.raises(ModelFormatError, match="sha256"):
        read_verified(m, "decoder.onnx")
    with pytest.raises(ModelFormatError, match=r"decoder\.onnx"):
        verify_files(m)
    (d / "decoder.onnx").write_bytes(b"short")
    with pytest.raises(ModelFormatError, match="size is 5 bytes"):
        read_verified(m, "decoder.onnx")
    (d / "decoder.onnx").unlink()
    with pytest.raises(ModelFormatError, match="missing"):
        read_verified(m, "decoder.onnx")


def test_read_verified_refuses_a_symlink_out_of_the_directory(tmp_path):
    d, files = _graph_dir(tmp_path)
    m = _new_manifest(d, files)
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((d / "encoder.onnx").read_bytes())
    (d / "encoder.onnx").unlink()
    (d / "encoder.onnx").symlink_to(outside)
    with pytest.raises(ModelFormatError, match="outside the model directory"):
        read_verified(m, "encoder.onnx")


# ---- the atomic writer ----------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_bytes(tmp_path / "a.bin", b"x")
        write_json(tmp_path / "b.json", {"k": 1})
        save_npy(tmp_path / "c.npy", np.zeros(3))
        (tmp_path / "reference").write_bytes(b"")  # an ordinary new file, for comparison
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    for name in ("a.bin", "b.json", "c.npy", "reference"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == want, name


def test_atomic_path_leaves_the_old_file_on_failure(tmp_path):
    (tmp_path / "f").write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "f") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert (tmp_path / "f").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f"]
    write_json(tmp_path / "f", {"b": 1, "a": 2})
    assert (tmp_path / "f").read_text() == '{\n  "a": 2,\n  "b": 1\n}\n'
    assert np.load(save_npy(tmp_path / "n.npy", np.arange(4))).tolist() == [0, 1, 2, 3]


# ---- IDX and the datasets -------------------------------------------------------------------


def _idx(magic: int, dims: list[int], payload: bytes | None = None) -> bytes:
    body = bytes(i % 256 for i in range(int(np.prod(dims)))) if payload is None else payload
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + body


def test_streamed_and_in_memory_reads_agree(tmp_path, data_dir):
    gz = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(gz.read_bytes())
    reference = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)  # by hand
    np.testing.assert_array_equal(np.concatenate(list(iter_idx_images(gz, 4096))), reference)
    np.testing.assert_array_equal(parse_idx(raw, gz, "images"), reference)
    np.testing.assert_array_equal(read_idx(gz, "images"), reference)
    header = read_idx_header(gz)
    assert (header.count, header.rows, header.cols, header.offset) == (10000, 28, 28, 16)
    labels = read_idx(data_dir / "mnist" / "t10k-labels-idx1-ubyte.gz", "labels")
    assert labels.shape == (10000,) and labels.max() == 9


@pytest.mark.parametrize(
    ("data", "kind", "words"),
    [
        (_idx(0x801, [3]), "images", "holds labels"),
        (_idx(0x803, [1, 28, 28]), "labels", "holds images"),
        (_idx(0xD03, [1, 28, 28]), "images", "not unsigned byte"),
        (b"\x1f\x8b\x08\x00" + bytes(30), "images", "not an IDX file"),
        (_idx(0x803, [1, 28, 28])[:9], "images", "truncated IDX header"),
        (_idx(0x803, [2, 28, 28])[:-1], "images", "truncated"),
        (_idx(0x803, [2, 28, 28]) + b"\0", "images", "trailing bytes"),
        (_idx(0x803, [2, 27, 28]), "images", "27x28"),
    ],
)
def test_bad_idx_is_refused_alike_in_memory_and_streamed(tmp_path, data, kind, words):
    with pytest.raises(DataFileError, match=words) as err:
        parse_idx(data, "/data/bad-idx", kind)
    assert str(err.value).startswith("/data/bad-idx: ")
    if kind == "images":
        (tmp_path / "bad").write_bytes(gzip.compress(data))
        with pytest.raises(DataFileError, match=words):
            list(iter_idx_images(tmp_path / "bad"))


def test_dataset_folders_are_searched_dataset_first(tmp_path, data_dir):
    spec = DATASETS["mnist"]
    name = spec.files["test-labels"].name + ".gz"
    for folder in (tmp_path, tmp_path / "MNIST" / "raw", tmp_path / "mnist"):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).symlink_to(data_dir / "mnist" / name)
        assert find_file(spec, "test-labels", tmp_path) == folder / name


def test_read_split_checks_the_published_md5(tmp_path, data_dir):
    split = read_split("mnist", "test", data_dir)
    assert split.images.shape == (10000, 28, 28) and len(split) == 10000
    assert split.checksums["t10k-images-idx3-ubyte.gz"] == "9fb629c4189551a2d022fa330f9573f3"
    # a Fashion-MNIST file where MNIST's belongs: well formed, refused by its md5
    (tmp_path / "mnist").mkdir()
    for key in ("test-images", "test-labels"):
        name = DATASETS["mnist"].files[key].name + ".gz"
        (tmp_path / "mnist" / name).symlink_to(data_dir / "fashion-mnist" / name)
    with pytest.raises(DataFileError, match="md5"):
        read_split("mnist", "test", tmp_path)
    assert len(read_split("mnist", "test", tmp_path, verify=False)) == 10000
    with pytest.raises(DataFileError, match="not found"):
        read_split("mnist", "train", tmp_path)


# ---- the grid -------------------------------------------------------------------------------


def test_grid_pixels_round_half_up_like_torchvision():
    values = np.array([0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 127.5 / 255, 1.0, -0.2, 1.3])
    assert to_pixels(values).tolist() == [0, 1, 2, 3, 128, 255, 0, 255]


def test_grid_layout():
    x = np.ones((5, 1, 28, 28), np.float32)
    grid = make_grid(x, nrow=2, pad=2)
    assert grid.shape == (3 * 30 + 2, 2 * 30 + 2)
    assert grid[2:30, 2:30].min() == 255 and grid[:2].max() == 0
    assert grid[62:90, 32:60].max() == 0  # the sixth cell stays black
    with pytest.raises(ValueError):
        make_grid(np.zeros((0, 28, 28)))


# ---- the preprocess section (format version 2) ----------------------------------------------


def test_version_2_writes_and_reads_the_preprocess_section(tmp_path):
    d, files = _graph_dir(tmp_path)
    m = _new_manifest(d, files, preprocess=builtin("fashion-mnist"))
    loaded = Manifest.load(Path(m.write()).parent)
    assert loaded.format_version == 2 and loaded.raw["format_version"] == 2
    assert loaded.preprocess == builtin("fashion-mnist")
    assert loaded.raw["preprocess"]["sharpen"] == {"sigma": 1.0, "radius": 1, "amount": 1.0}
    none = _new_manifest(d, files, preprocess="none")
    assert none.raw["preprocess"] == "none" and none.preprocess is None
    with pytest.raises(ValueError, match="own method"):
        m.with_section("preprocess", "none")


def test_a_version_1_manifest_loads_without_a_section(tmp_path):
    d, files = _graph_dir(tmp_path)
    doc = _new_manifest(d, files).to_dict()
    doc["format_version"] = 1
    del doc["preprocess"]
    (d / "manifest.json").write_text(json.dumps(doc))
    loaded = Manifest.load(d)
    assert loaded.format_version == 1 and loaded.preprocess is None
    doc["preprocess"] = builtin("mnist")
    (d / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match="format_version 1 has no 'preprocess' section"):
        Manifest.load(d)


def _spec_with(path: tuple[str, ...], value):
    spec = builtin("mnist")
    node = spec
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return spec


@pytest.mark.parametrize(
    ("section", "words"),
    [
        (KeyError, "missing required key 'preprocess'"),
        ("auto", 'must be "none" or an object'),
        (_spec_with(("size",), [32, 32]), r"preprocess\.size \[32, 32\] must be the image's"),
        (_spec_with(("fit", "box"), 40), r"fit\.box: must lie in|does not fit"),
        (_spec_with(("polarity", "threshold"), 1.5), r"polarity\.threshold: must lie in"),
        (_spec_with(("ink", "levels", "method"), "gamma"), r"levels\.method: must be one of"),
        (_spec_with(("center",), KeyError), r"missing step\(s\) \['center'\]"),
        (_spec_with(("version",), 2), r"version: must be 1"),
        (_spec_with(("quantize",), True), r"quantize: must be an integer"),
    ],
)
def test_a_bad_preprocess_section_is_refused_on_load(tmp_path, section, words):
    d, files = _graph_dir(tmp_path)
    doc = _new_manifest(d, files).to_dict()
    if section is KeyError:
        del doc["preprocess"]
    else:
        doc["preprocess"] = section
    (d / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError, match=words) as info:
        Manifest.load(d)
    assert str(info.value).startswith(str(d / "manifest.json"))
    assert "\n" not in str(info.value)
