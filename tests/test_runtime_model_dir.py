"""vae_runtime's model-directory checks: a freshly exported directory loads; every damage
the format (docs/model-format.md) rules out is refused with a ModelFormatError naming the
file and the reason; variants and the default-model search work."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vae_runtime.model_dir as model_dir_mod
from vae_format import Manifest
from vae_runtime import VAE, ModelFormatError, resolve_model_dir

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

L = 8


@pytest.fixture(scope="module")
def conv_dir(model_dir_factory) -> Path:
    return model_dir_factory(arch="conv", latent_dim=L)


@pytest.fixture(scope="module")
def mlp_dir(model_dir_factory) -> Path:
    return model_dir_factory(arch="mlp", latent_dim=5)


@pytest.fixture
def model(conv_dir, tmp_path) -> Path:
    """A private copy of the conv model directory, free to damage."""
    return Path(shutil.copytree(conv_dir, tmp_path / "model"))


def read_manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def write_manifest(d: Path, manifest: dict) -> None:
    (d / "manifest.json").write_text(json.dumps(manifest))


def reseal(d: Path, rel: str) -> None:
    """Update the manifest's size and sha256 of ``rel`` so only the intended damage remains."""
    m = read_manifest(d)
    data = (d / rel).read_bytes()
    m["files"][rel] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "role": "graph",
    }
    write_manifest(d, m)


def refused(d: Path, *words: str, **kwargs) -> str:
    with pytest.raises(ModelFormatError) as info:
        VAE(d, threads=1, **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, message
    return message


# ---- a good directory -----------------------------------------------------------------------


def test_exported_directory_loads_and_reports_manifest_facts(conv_dir):
    manifest = read_manifest(conv_dir)
    vae = VAE(conv_dir, threads=1)
    info = vae.info
    assert info["name"] == manifest["name"]
    assert info["latent_dim"] == manifest["latent_dim"] == vae.latent_dim == L
    assert info["arch"] == "conv"
    assert info["likelihood"] == manifest["likelihood"]
    assert info["providers"] == ["CPUExecutionProvider"]
    assert info["versions"] == manifest["versions"]
    assert Path(info["files"]["encoder"]) == conv_dir / manifest["graphs"]["encoder"]["file"]
    assert vae.manifest == manifest
    info["name"] = "changed"  # info is a copy: the VAE does not change
    assert vae.info["name"] == manifest["name"]


def test_checkpoint_config_may_be_absent(model):
    (model / "checkpoints" / "config.json").unlink()  # only vae-export verify reads it
    assert VAE(model, threads=1).latent_dim == L


def test_shared_weights_file_is_required(model):
    (model / "checkpoints" / "decoder.safetensors").unlink()
    refused(model, "decoder.safetensors", "missing")


def test_tampered_shared_weights_are_refused(model):
    path = model / "checkpoints" / "encoder.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    refused(model, "encoder.safetensors", "sha256")


def test_self_contained_directory_needs_no_checkpoints(model_dir_factory, tmp_path):
    d = Path(shutil.copytree(model_dir_factory("conv", L, self_contained=True), tmp_path / "m"))
    shutil.rmtree(d / "checkpoints")
    assert VAE(d, threads=1).latent_dim == L


def test_path_to_manifest_file_means_its_folder(conv_dir):
    assert resolve_model_dir(conv_dir / "manifest.json") == conv_dir


# ---- refusals: files ------------------------------------------------------------------------


def test_missing_directory(tmp_path):
    refused(tmp_path / "nope", "nope", "does not exist")


def test_missing_manifest(model):
    (model / "manifest.json").unlink()
    refused(model, "manifest.json", "missing")


@pytest.mark.parametrize("content", [b"", b"{not json", b"\xff\xfe\x00", b"[1, 2]", b"null"])
def test_unreadable_manifest(model, content):
    (model / "manifest.json").write_bytes(content)
    refused(model, "manifest.json")


def test_missing_graph_file(model):
    (model / "decoder.onnx").unlink()
    refused(model, "decoder.onnx", "missing")


def test_truncated_graph_file(model):
    data = (model / "encoder.onnx").read_bytes()
    (model / "encoder.onnx").write_bytes(data[: len(data) // 2])
    refused(model, "encoder.onnx", "size")


def test_truncated_graph_with_matching_manifest_is_refused_before_any_engine(model):
    data = (model / "encoder.onnx").read_bytes()
    (model / "encoder.onnx").write_bytes(data[: len(data) // 2])
    reseal(model, "encoder.onnx")
    refused(model, "encoder.onnx", "not a readable ONNX model", "truncated")


def test_random_bytes_graph(model):
    (model / "decoder.onnx").write_bytes(np.random.default_rng(0).bytes(5000))
    reseal(model, "decoder.onnx")
    refused(model, "decoder.onnx", "not a readable ONNX model")


def test_well_formed_graph_the_engine_cannot_load_is_refused_by_it(model):
    """Past the format's checks, ONNX Runtime's own refusal is a ModelFormatError too."""
    graph = onnx.load_from_string(tiny_encoder())
    graph.graph.node[1].input[1] = "no_such_tensor"
    put_encoder(model, graph.SerializeToString())
    refused(model, "encoder.onnx", "ONNX Runtime cannot load", "no_such_tensor")


def test_sha256_mismatch_same_size(model):
    data = bytearray((model / "encoder.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    (model / "encoder.onnx").write_bytes(bytes(data))
    refused(model, "encoder.onnx", "sha256", "modified")


@pytest.mark.parametrize(
    ("bad_path", "reason"),
    [
        ("../encoder.onnx", "'..'"),
        ("sub/../../encoder.onnx", "'..'"),
        ("/tmp/encoder.onnx", "absolute"),
        ("C:/encoder.onnx", "absolute"),
        ("sub\\encoder.onnx", "backslash"),
        ("", "non-empty"),
    ],
)
def test_manifest_paths_must_stay_inside(model, bad_path, reason):
    m = read_manifest(model)
    m["files"][bad_path] = m["files"].pop("encoder.onnx")
    m["graphs"]["encoder"]["file"] = bad_path
    write_manifest(model, m)
    refused(model, "manifest.json", reason)


def test_escape_through_dotdot_in_graphs_only(model):
    m = read_manifest(model)
    m["graphs"]["decoder"]["file"] = "../model/decoder.onnx"
    write_manifest(model, m)
    refused(model, "manifest.json", "'..'")


def test_symlink_leaving_the_directory(model, tmp_path):
    outside = tmp_path / "outside.onnx"
    shutil.copy(model / "encoder.onnx", outside)
    (model / "encoder.onnx").unlink()
    (model / "encoder.onnx").symlink_to(outside)
    refused(model, "encoder.onnx", "outside the model directory")


def test_graph_file_not_listed_under_files(model):
    m = read_manifest(model)
    del m["files"]["encoder.onnx"]
    write_manifest(model, m)
    refused(model, "manifest.json", "not listed")


def test_graph_file_with_checkpoint_role(model):
    m = read_manifest(model)
    m["files"]["encoder.onnx"]["role"] = "checkpoint"
    write_manifest(model, m)
    refused(model, "manifest.json", "role")


# ---- refusals: manifest content -------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "format",
        "format_version",
        "name",
        "arch",
        "latent_dim",
        "image",
        "likelihood",
        "graphs",
        "files",
    ],
)
def test_required_keys(model, key):
    m = read_manifest(model)
    del m[key]
    write_manifest(model, m)
    refused(model, "manifest.json", f"missing required key {key!r}")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("format_version", 3, ("format_version 3", "not supported")),
        ("format_version", 0, ("format_version 0",)),
        ("format_version", "1", ("must be an integer",)),
        ("format_version", True, ("must be an integer",)),
        ("format", "something-else", ("format",)),
        ("latent_dim", 0, ("latent_dim",)),
        ("latent_dim", 7, ("expected [N, 7]",)),
        ("likelihood", {"name": "poisson"}, ("likelihood.name",)),
        ("likelihood", {"name": "gaussian"}, ("sigma",)),
        ("likelihood", {"name": "gaussian", "sigma": -1.0}, ("sigma",)),
        ("image", {"shape": [3, 28, 28], "dtype": "float32"}, ("image",)),
        ("variants", [], ("variants",)),
    ],
)
def test_bad_manifest_values(model, key, value, words):
    m = read_manifest(model)
    m[key] = value
    write_manifest(model, m)
    refused(model, "manifest.json", *words)


def test_bad_sha256_field(model):
    m = read_manifest(model)
    m["files"]["encoder.onnx"]["sha256"] = "xyz"
    write_manifest(model, m)
    refused(model, "manifest.json", "sha256")


def test_manifest_latent_mismatch_between_encoder_and_decoder(model):
    m = read_manifest(model)
    m["graphs"]["decoder"]["inputs"]["z"] = [None, L + 1]
    write_manifest(model, m)
    refused(model, "manifest.json", "latent size mismatch", str(L), str(L + 1))


def test_manifest_declares_wrong_graph_names(model):
    m = read_manifest(model)
    m["graphs"]["encoder"]["inputs"] = {"input": [None, 1, 28, 28]}
    write_manifest(model, m)
    refused(model, "manifest.json", "graphs.encoder.inputs")


def test_decoder_graph_of_another_latent_size(model, mlp_dir):
    """The manifest is consistent, but decoder.onnx really takes z of width 5."""
    shutil.copy(mlp_dir / "decoder.onnx", model / "decoder.onnx")
    reseal(model, "decoder.onnx")
    refused(model, "decoder.onnx", "latent size 5", f"latent_dim {L}")


@pytest.mark.parametrize("self_contained", [False, True])
def test_swapped_graphs(model_dir_factory, tmp_path, self_contained):
    """encoder.onnx and decoder.onnx exchanged (and resealed): with shared weights the
    encoder slot's graph asks for the decoder's weights; self-contained, names disagree."""
    source = model_dir_factory("conv", L, self_contained=self_contained)
    model = Path(shutil.copytree(source, tmp_path / "model"))
    enc, dec = (model / "encoder.onnx").read_bytes(), (model / "decoder.onnx").read_bytes()
    (model / "encoder.onnx").write_bytes(dec)
    (model / "decoder.onnx").write_bytes(enc)
    reseal(model, "encoder.onnx")
    reseal(model, "decoder.onnx")
    reason = "inputs are ['z']" if self_contained else "checkpoints/decoder.safetensors"
    refused(model, "encoder.onnx", reason)


# ---- refusals: the graphs themselves --------------------------------------------------------


def tiny_encoder(
    latent_dim: int = L,
    in_name: str = "x",
    in_shape: tuple = ("N", 1, 28, 28),
    elem: int = TensorProto.FLOAT,
    out_names: tuple[str, str] = ("mu", "logvar"),
    out_rank3: bool = False,
    meta: dict[str, str] | None = None,
) -> bytes:
    """A hand-built encoder graph (Reshape + Gemm, operators export writes) with a chosen
    signature."""
    pixels = int(np.prod(in_shape[1:]))
    np_type = np.float32 if elem == TensorProto.FLOAT else np.float64
    w = numpy_helper.from_array(np.full((pixels, latent_dim), 0.01, np_type), "w")
    flat = numpy_helper.from_array(np.array([-1, pixels], np.int64), "flat_shape")
    nodes = [
        helper.make_node("Reshape", [in_name, "flat_shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "w"], ["h"]),
    ]
    out_shape: list = ["N", latent_dim]
    if out_rank3:
        rank3 = numpy_helper.from_array(np.array([-1, latent_dim, 1], np.int64), "rank3")
        nodes += [helper.make_node("Reshape", ["h", "rank3"], [out_names[0]])]
        inits = [w, flat, rank3]
        out_shape = ["N", latent_dim, 1]
    else:
        nodes += [helper.make_node("Identity", ["h"], [out_names[0]])]
        inits = [w, flat]
    nodes += [helper.make_node("Neg", ["h"], [out_names[1]])]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info(in_name, elem, list(in_shape))],
        [
            helper.make_tensor_value_info(out_names[0], elem, out_shape),
            helper.make_tensor_value_info(out_names[1], elem, ["N", latent_dim]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    default_meta = {
        "vae_onnx.format_version": "2",
        "vae_onnx.role": "encoder",
        "vae_onnx.latent_dim": str(latent_dim),
        "vae_onnx.arch": "conv",
        "vae_onnx.likelihood": "bernoulli",
    }
    helper.set_model_props(model, default_meta if meta is None else meta)
    return model.SerializeToString()


def put_encoder(d: Path, data: bytes) -> None:
    (d / "encoder.onnx").write_bytes(data)
    reseal(d, "encoder.onnx")


def test_hand_built_encoder_with_the_right_signature_loads(model):
    """The control for the graph refusals below: only the named damage makes them fail."""
    put_encoder(model, tiny_encoder())
    mu, logvar = VAE(model, threads=1).encode(np.full((2, 28, 28), 0.5, np.float32))
    np.testing.assert_allclose(mu, np.full((2, L), 784 * 0.5 * 0.01), rtol=1e-5)
    np.testing.assert_allclose(logvar, -mu)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"in_name": "input"}, ("inputs are ['input']",)),
        ({"out_names": ("mean", "logvar")}, ("outputs are",)),
        ({"in_shape": ("N", 1, 32, 32)}, ("[N, 1, 32, 32]", "expected [N, 1, 28, 28]")),
        ({"in_shape": (1, 1, 28, 28)}, ("fixed batch size 1",)),
        ({"in_shape": ("N", 784)}, ("rank 2",)),
        ({"elem": TensorProto.DOUBLE}, ("element type 11 (double)", "not one export writes")),
        ({"out_rank3": True}, ("rank 3",)),
        ({"latent_dim": L + 2}, ("latent size",)),
        ({"meta": {}}, ("metadata_props lacks",)),
        (
            {
                "meta": {
                    "vae_onnx.format_version": "2",
                    "vae_onnx.role": "decoder",
                    "vae_onnx.latent_dim": str(L),
                }
            },
            ("vae_onnx.role",),
        ),
        (
            {
                "meta": {
                    "vae_onnx.format_version": "1",
                    "vae_onnx.role": "encoder",
                    "vae_onnx.latent_dim": str(L),
                }
            },
            ("vae_onnx.format_version",),
        ),
        (
            {
                "meta": {
                    "vae_onnx.format_version": "2",
                    "vae_onnx.role": "encoder",
                    "vae_onnx.latent_dim": "9",
                }
            },
            ("vae_onnx.latent_dim",),
        ),
        (
            {
                "meta": {
                    "vae_onnx.format_version": "2",
                    "vae_onnx.role": "encoder",
                    "vae_onnx.latent_dim": str(L),
                    "vae_onnx.arch": "mlp",
                }
            },
            ("vae_onnx.arch",),
        ),
    ],
)
def test_graph_signature_and_metadata_are_checked(model, kwargs, words):
    put_encoder(model, tiny_encoder(**kwargs))
    refused(model, "encoder.onnx", *words)


# ---- variants -------------------------------------------------------------------------------


def add_int8_variant(d: Path) -> None:
    """Static QDQ int8 graphs, as `vae-export quantize` writes (calibrated on noise)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Noise(CalibrationDataReader):
        def __init__(self, name: str, shape: tuple[int, ...]) -> None:
            data = np.random.default_rng(0).random(shape, dtype=np.float32)
            self.items = iter([{name: data}])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.items, None)

    inputs = {"encoder": ("x", (64, 1, 28, 28)), "decoder": ("z", (64, L))}

    m = read_manifest(d)
    for role in ("encoder", "decoder"):
        plain = onnx.load(d / f"{role}.onnx")
        del plain.graph.value_info[:]  # stale shape annotations trip the quantizer's inference
        onnx.save(plain, d / f"{role}.plain.tmp.onnx")
        quantize_static(
            d / f"{role}.plain.tmp.onnx",
            d / f"{role}.int8.onnx",
            Noise(*inputs[role]),
            quant_format=QuantFormat.QDQ,
        )
        (d / f"{role}.plain.tmp.onnx").unlink()
        data = (d / f"{role}.int8.onnx").read_bytes()
        m["files"][f"{role}.int8.onnx"] = {
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "role": "graph",
        }
    m["variants"] = {"int8": {"encoder": "encoder.int8.onnx", "decoder": "decoder.int8.onnx"}}
    write_manifest(d, m)


def test_int8_variant(model):
    add_int8_variant(model)
    full = VAE(model, threads=1)
    small = VAE(model, variant="int8", threads=1)
    assert small.info["variant"] == "int8"
    assert small.info["files"]["encoder"].endswith("encoder.int8.onnx")
    assert full.info["variants"] == ["int8"]
    z = np.random.default_rng(0).standard_normal((16, L), dtype=np.float32)
    a, b = full.decode(z), small.decode(z)
    assert not np.array_equal(a, b)  # really another graph
    assert np.abs(a - b).max() < 0.1  # ... of the same model
    refused(model, "no variant 'fp16'", "int8", variant="fp16")


def test_variant_file_is_verified_too(model):
    add_int8_variant(model)
    with open(model / "decoder.int8.onnx", "ab") as f:
        f.write(b"\0")
    assert VAE(model, threads=1).latent_dim == L  # the default variant does not read it
    refused(model, "decoder.int8.onnx", "size", variant="int8")


def test_variant_with_path_outside(model):
    m = read_manifest(model)
    m["variants"] = {"evil": {"encoder": "../x.onnx", "decoder": "decoder.onnx"}}
    write_manifest(model, m)
    refused(model, "'..'")


# ---- default model --------------------------------------------------------------------------


def test_env_variable_selects_the_default_model(conv_dir, monkeypatch):
    monkeypatch.setenv("VAE_ONNX_MODEL", str(conv_dir))
    assert VAE(threads=1).info["model_dir"] == str(conv_dir)


def test_env_variable_pointing_nowhere(monkeypatch, tmp_path):
    monkeypatch.setenv("VAE_ONNX_MODEL", str(tmp_path / "missing"))
    with pytest.raises(ModelFormatError, match="missing: model directory does not exist"):
        VAE()


def test_packaged_model_comes_before_the_repository_one(conv_dir, mlp_dir, monkeypatch):
    monkeypatch.delenv("VAE_ONNX_MODEL", raising=False)
    monkeypatch.setattr(model_dir_mod, "PACKAGED_MODEL", mlp_dir)
    monkeypatch.setattr(model_dir_mod, "REPO_MODEL", conv_dir)
    assert resolve_model_dir() == mlp_dir
    monkeypatch.setattr(model_dir_mod, "PACKAGED_MODEL", conv_dir.parent / "absent")
    assert resolve_model_dir() == conv_dir


def test_no_default_model_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("VAE_ONNX_MODEL", raising=False)
    monkeypatch.setattr(model_dir_mod, "PACKAGED_MODEL", tmp_path / "a")
    monkeypatch.setattr(model_dir_mod, "REPO_MODEL", tmp_path / "b")
    with pytest.raises(ModelFormatError, match="no default model found"):
        VAE()


def test_repository_default_location_is_the_artifacts_folder():
    repo = Path(__file__).resolve().parents[1]
    assert repo / "artifacts" / "mnist-conv-z20" == model_dir_mod.REPO_MODEL


# ---- fuzzing --------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_fuzz_arbitrary_manifest_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "manifest.json").write_bytes(data)
        with pytest.raises(ModelFormatError):
            Manifest.load(Path(tmp))


def _paths(obj, prefix=()):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield (*prefix, i)
            yield from _paths(v, (*prefix, i))


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fuzz_mutated_manifest_loads_or_is_refused(conv_dir, data):
    """Replace or delete any one value of a real manifest: VAE() loads or raises
    ModelFormatError, nothing else."""
    m = read_manifest(conv_dir)
    path = data.draw(st.sampled_from(sorted(_paths(m), key=str)))
    parent = m
    for key in path[:-1]:
        parent = parent[key]
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = data.draw(json_values)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(
            shutil.copytree(conv_dir, Path(tmp) / "m", ignore=shutil.ignore_patterns("config.json"))
        )
        write_manifest(d, m)
        try:
            vae = VAE(d, threads=1)
        except ModelFormatError as exc:
            assert str(exc)
        else:
            assert vae.latent_dim == L


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=2000))
def test_fuzz_arbitrary_graph_bytes(conv_dir, data):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(
            shutil.copytree(conv_dir, Path(tmp) / "m", ignore=shutil.ignore_patterns("config.json"))
        )
        (d / "encoder.onnx").write_bytes(data)
        reseal(d, "encoder.onnx")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(ModelFormatError, match=re.escape("encoder.onnx")):
                VAE(d, threads=1)


def test_bare_onnxruntime_agrees_the_fixture_graphs_are_valid(conv_dir):
    """Guards the refusal tests: the undamaged graphs load in plain ORT too."""
    for role in ("encoder", "decoder"):
        ort.InferenceSession(str(conv_dir / f"{role}.onnx"), providers=["CPUExecutionProvider"])
