"""The trust model on load (docs/model-format.md): a consistent but hostile model directory
(every sha256 right) still cannot make an engine read a file the manifest did not verify,
run an operator export never writes, or allocate absurd memory from declared sizes; and
an engine that fails while running is one line, not a traceback.

Each case edits one graph of a copy of a shipped model with onnx and reseals the manifest,
so only the intended damage remains; the unedited copy loads (the control)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from vae_format.graph_policy import ALLOWED_OPS, MAX_TENSOR_ELEMENTS, check_graph_bytes
from vae_format.manifest import Manifest
from vae_runtime import VAE, InputError, ModelFormatError, RunError
from vae_runtime.engines import ENGINES

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402
from onnx.external_data_helper import load_external_data_for_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MLP = REPO / "artifacts" / "mnist-mlp-z20"
CKPT = "checkpoints/encoder.safetensors"


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return Path(shutil.copytree(MLP, tmp_path / "model"))


def edit(d: Path, rel: str, change: Callable[[onnx.ModelProto], None], external=None) -> None:
    """Apply ``change`` to graph ``rel`` and reseal it in the manifest (``external``: the
    graph's new external_data list, for a default graph)."""
    graph = onnx.load(d / rel, load_external_data=False)
    change(graph)
    data = graph.SerializeToString()
    (d / rel).write_bytes(data)
    m = json.loads((d / "manifest.json").read_text())
    m["files"][rel] = {
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "role": "graph",
    }
    if external is not None:
        m["graphs"][Path(rel).name.split(".")[0]]["external_data"] = external
    (d / "manifest.json").write_text(json.dumps(m))


def refused(d: Path, *words: str, variant: str | None = None) -> None:
    with pytest.raises(ModelFormatError) as info:
        VAE(d, variant=variant, threads=1)
    for word in words:
        assert word in str(info.value), str(info.value)


def tensor(g: onnx.ModelProto, name: str) -> onnx.TensorProto:
    return next(t for t in g.graph.initializer if t.name == name)


def point_at(
    t: onnx.TensorProto, location: str, offset: int = 0, length: int | None = None
) -> None:
    """Make ``t`` external data at ``location`` (its own bytes dropped)."""
    size = int(np.prod(t.dims)) * 4
    t.ClearField("raw_data")
    del t.external_data[:]
    t.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", offset), ("length", length or size)):
        t.external_data.add(key=key, value=str(value))


def test_unedited_copy_loads(model: Path) -> None:
    assert VAE(model, threads=1).embed(np.zeros((1, 28, 28), np.float32)).shape == (1, 20)


# ---- 1. external data: only from the files the manifest lists for that graph ----------------


def test_external_data_from_the_working_directory_is_refused(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reproduced hole: a relative location ("passwd") with external_data [] made ONNX
    Runtime read the file from the caller's working directory into the embeddings."""
    secret = tmp_path / "cwd"
    secret.mkdir()
    (secret / "passwd").write_bytes(b"root:x:0:0:root:/root:/bin/sh\n" * 4)
    monkeypatch.chdir(secret)

    def leak(g: onnx.ModelProto) -> None:  # the other weights inlined: only the leak remains
        load_external_data_for_model(g, str(model))
        point_at(tensor(g, "fc_mu.bias"), "passwd")

    edit(model, "encoder.onnx", leak, [])
    refused(model, "encoder.onnx", "'fc_mu.bias'", "'passwd'", "not one of the verified files")


@pytest.mark.parametrize(
    ("location", "listed"),
    [
        ("passwd", [CKPT]),  # the graph lists its checkpoint, one tensor reads elsewhere
        ("./" + CKPT, [CKPT]),  # another spelling of a listed file: ORT would open it by path
        ("checkpoints/decoder.safetensors", [CKPT]),  # listed, but for the other graph
        ("/etc/passwd", [CKPT]),
        ("../model/" + CKPT, [CKPT]),
    ],
)
def test_external_data_outside_the_graphs_own_list_is_refused(
    model: Path, location: str, listed: list[str]
) -> None:
    edit(model, "encoder.onnx", lambda g: point_at(tensor(g, "fc_mu.bias"), location), listed)
    refused(model, "encoder.onnx", repr(location), "not one of the verified files")


def test_a_variant_graph_may_not_read_the_checkpoints(model: Path) -> None:
    """A variant's own graphs are self-contained: none of the files is theirs to read."""
    edit(model, "encoder.int8.onnx", lambda g: point_at(g.graph.initializer[0], CKPT, 0, None))
    assert VAE(model, threads=1).latent_dim == 20  # the default graphs do not read it
    refused(model, "encoder.int8.onnx", repr(CKPT), "(none)", variant="int8")


def test_external_data_hidden_in_a_node_attribute_is_refused(model: Path) -> None:
    def hide(g: onnx.ModelProto) -> None:
        value = onnx.TensorProto()
        value.CopyFrom(tensor(g, "fc_mu.bias"))
        value.name = "k"
        point_at(value, "passwd")
        g.graph.node.insert(0, helper.make_node("Constant", [], ["k"], value=value, name="c"))

    edit(model, "encoder.onnx", hide)
    refused(model, "tensor 'k'", "'passwd'")


def test_external_data_hidden_in_a_subgraph_is_refused(model: Path) -> None:
    def hide(g: onnx.ModelProto) -> None:
        inner = onnx.TensorProto()
        inner.CopyFrom(tensor(g, "fc_mu.bias"))
        inner.name = "deep"
        point_at(inner, "passwd")
        out = [helper.make_tensor_value_info("o", TensorProto.FLOAT, [20])]
        branch = helper.make_graph(
            [helper.make_node("Identity", ["deep"], ["o"])], "b", [], out, [inner]
        )
        g.graph.initializer.append(numpy_helper.from_array(np.array(True), "cond"))
        g.graph.node.append(
            helper.make_node(
                "If", ["cond"], ["unused"], then_branch=branch, else_branch=branch, name="if"
            )
        )

    edit(model, "encoder.onnx", hide)
    refused(model, "tensor 'deep'", "'passwd'")


def test_ort_memory_address_tag_is_refused_even_when_listed(model: Path) -> None:
    """A location holding _ORT_MEM_ADDR_ makes ONNX Runtime read a raw process address;
    even a manifest that lists (and hashes) a file of that name cannot make it pass."""
    tag = "*/_ORT_MEM_ADDR_/*"
    (model / "*" / "_ORT_MEM_ADDR_").mkdir(parents=True)
    (model / tag).write_bytes(bytes(80))
    m = json.loads((model / "manifest.json").read_text())
    m["files"][tag] = {
        "sha256": hashlib.sha256(bytes(80)).hexdigest(),
        "bytes": 80,
        "role": "checkpoint",
    }
    (model / "manifest.json").write_text(json.dumps(m))
    edit(model, "encoder.onnx", lambda g: point_at(tensor(g, "fc_mu.bias"), tag), [CKPT, tag])
    refused(model, repr(tag), "not one of the verified files")


@pytest.mark.parametrize(("offset", "length"), [(10**9, None), (0, 4), (-8, None)])
def test_external_data_out_of_bounds_is_refused(model: Path, offset: int, length: int) -> None:
    edit(model, "encoder.onnx", lambda g: point_at(tensor(g, "fc_mu.bias"), CKPT, offset, length))
    refused(model, "encoder.onnx", "does not hold its 80 bytes")


# ---- 2. what export writes, and nothing else ---------------------------------------------------


def _prepend(node: onnx.NodeProto, *inits: onnx.TensorProto) -> Callable[[onnx.ModelProto], None]:
    def change(g: onnx.ModelProto) -> None:
        g.graph.node.insert(0, node)
        g.graph.initializer.extend(inits)

    return change


BIG_SHAPE = numpy_helper.from_array(np.array([20000, 1000000], np.int64), "big_shape")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            _prepend(helper.make_node("RandomNormal", [], ["eps"], shape=[1], name="r")),
            ("'RandomNormal'", "export never writes"),
        ),
        (
            _prepend(
                helper.make_node("ConstantOfShape", ["big_shape"], ["b"], name="huge"), BIG_SHAPE
            ),
            ("'ConstantOfShape'",),
        ),
        (
            _prepend(
                helper.make_node("FusedConv", ["x"], ["f"], domain="com.microsoft", name="ms")
            ),
            ("'com.microsoft.FusedConv'",),
        ),
        (
            _prepend(helper.make_node("Relu", ["x"], ["r"], name="r", pads=[0, 4096])),
            ("'pads'", "4096", "beyond the format's 16"),
        ),
        (
            _prepend(helper.make_node("Gemm", ["a", "b"], ["c"], name="g", alpha=float("inf"))),
            ("non-finite",),
        ),
        (
            _prepend(
                helper.make_node("Identity", ["x"], ["i"], name="i"),
                numpy_helper.from_array(np.zeros(2), "doubles"),
            ),
            ("element type 11 (double)",),
        ),
        (
            _prepend(
                helper.make_node("Identity", ["x"], ["i"], name="i"),
                TensorProto(
                    name="huge", data_type=TensorProto.FLOAT, dims=[MAX_TENSOR_ELEMENTS + 1]
                ),
            ),
            ("declares", "elements", "more than the format's"),
        ),
        (
            _prepend(
                helper.make_node("Identity", ["x"], ["i"], name="i"),
                TensorProto(name="short", data_type=TensorProto.FLOAT, dims=[4], raw_data=bytes(8)),
            ),
            ("declares 4 elements but holds 8",),
        ),
    ],
    ids=[
        "random-op",
        "allocating-op",
        "custom-domain",
        "huge-pads",
        "inf-alpha",
        "double",
        "huge-tensor",
        "short-tensor",
    ],
)
def test_what_export_never_writes_is_refused(model: Path, change, words) -> None:
    edit(model, "encoder.onnx", change)
    refused(model, "encoder.onnx", *words)


RANDOM_OP = _prepend(helper.make_node("RandomNormal", [], ["eps"], shape=[1], name="r"))


def _engine(backend: str):
    from vae_runtime.engines import create_engine

    try:
        return create_engine(backend, {"threads": 1})
    except InputError as exc:  # the engine's library is an extra not installed here
        pytest.skip(str(exc))


@pytest.mark.parametrize("backend", list(ENGINES))
def test_every_engine_gets_only_graphs_held_to_the_policy(model: Path, backend: str) -> None:
    """Each way the runtime opens a graph, on each engine: VAE, backend="auto"'s probe,
    engine parity (vae-run bench --compare), and the Ray actors' constructors (what each
    actor runs on its node). The refusal is the policy's, before the engine sees the graph
    (which would load it)."""
    from vae_runtime.distributed import ActorPool, _Embedder, _Generator
    from vae_runtime.engine_parity import load_runners

    engine = _engine(backend)
    edit(model, "encoder.onnx", RANDOM_OP)
    words = ("encoder.onnx", "'RandomNormal'", "export never writes")
    opens = {
        "VAE": lambda: VAE(model, backend=backend, threads=1),
        "auto's probe": lambda: VAE(model, backend="auto", threads=1),
        "parity": lambda: load_runners(engine, Manifest.load(model)),
        "ray embed actor": lambda: _Embedder(
            str(model), None, backend, ActorPool(), "image", (), False, "declared", False, False
        ),
        "ray generate actor": lambda: _Generator(
            str(model), None, backend, ActorPool(), 0, "float32"
        ),
    }
    for how, open_graph in opens.items():
        with pytest.raises(ModelFormatError) as info:
            open_graph()
        assert all(w in str(info.value) for w in words), (how, str(info.value))


def test_absurd_declared_shapes_are_refused(model: Path) -> None:
    def declare(g: onnx.ModelProto) -> None:
        g.graph.value_info.append(
            helper.make_tensor_value_info("h", TensorProto.FLOAT, ["N", 1 << 20, 1 << 20])
        )

    edit(model, "encoder.onnx", declare)
    refused(model, "declared value 'h'", "dimensions up to")


@pytest.mark.parametrize("what", ["function", "training", "ort_config", "opset"])
def test_model_level_extras_are_refused(model: Path, what: str) -> None:
    def add(g: onnx.ModelProto) -> None:
        if what == "function":
            g.functions.append(
                helper.make_function(
                    "local",
                    "f",
                    ["a"],
                    ["b"],
                    [helper.make_node("Relu", ["a"], ["b"])],
                    [helper.make_opsetid("", 18)],
                )
            )
        elif what == "training":
            g.training_info.add().algorithm.CopyFrom(helper.make_graph([], "t", [], []))
        elif what == "ort_config":
            g.metadata_props.add(key="ort_config", value='{"session_options": {}}')
        else:
            g.opset_import.append(helper.make_opsetid("com.microsoft", 1))

    edit(model, "encoder.onnx", add)
    refused(
        model,
        "encoder.onnx",
        {
            "function": "local functions",
            "training": "training graphs",
            "ort_config": "'ort_config'",
            "opset": "com.microsoft",
        }[what],
    )


def test_allow_list_is_exactly_what_the_shipped_graphs_use() -> None:
    """Every allowed operator appears in a shipped graph or an exported form, and every
    operator of a shipped graph is allowed: the list neither lags nor pads export."""
    used = set()
    for path in sorted((REPO / "artifacts").glob("*/*.onnx")):
        model = check_graph_bytes(path.read_bytes(), _externals(path), path)
        used |= {n.op_type for n in model.all_nodes()}
    # ConvTranspose: the --decoder-form convtranspose export (tests/test_export.py).
    assert used | {"ConvTranspose"} == ALLOWED_OPS


def _externals(path: Path) -> dict[str, bytes]:
    m = json.loads((path.parent / "manifest.json").read_text())
    role = path.name.split(".")[0]
    if m["graphs"][role]["file"] != path.name:
        return {}
    return {f: (path.parent / f).read_bytes() for f in m["graphs"][role]["external_data"]}


# ---- an engine failing at run time ------------------------------------------------------------


def test_engine_failure_at_run_time_is_one_line(model: Path, tmp_path: Path) -> None:
    """A graph that loads but fails while running (its Reshape cannot hold the batch) is
    one line from vae-run. (A batch ONNX Runtime cannot allocate no longer reaches it from
    the CLI: runs are cut into rows_per_run chunks; the API test below asks for one run.)"""

    def bad_reshape(g: onnx.ModelProto) -> None:
        tensor(g, "val_5").CopyFrom(numpy_helper.from_array(np.array([-1, 783]), "val_5"))

    edit(model, "encoder.onnx", bad_reshape)
    images = tmp_path / "zeros.npy"
    np.save(images, np.zeros((3, 28, 28), np.uint8))
    vae_run = Path(sys.executable).parent / "vae-run"
    out = tmp_path / "e.npy"
    cmd = [str(vae_run), "embed", str(images), "--model", str(model), "--out", str(out)]
    proc = subprocess.run([*cmd, "--threads", "1", "--no-progress"], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "encoder.onnx: ONNX Runtime failed to run it" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".e.npy.*"))  # no temporary file left


def test_run_error_is_a_vae_error_in_the_api() -> None:
    code = (
        "import resource, numpy as np\n"
        "from vae_runtime import VAE, RunError\n"
        "vae = VAE(threads=1, batch_size=10**6, engine_options={'rows_per_run': 0})\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "try:\n"
        "    vae.decode(np.zeros((300_000, 20), np.float32))\n"
        "except RunError as exc:\n"
        "    print('RunError', exc)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.stdout.startswith("RunError "), proc.stdout + proc.stderr
    assert "decoder.onnx" in proc.stdout
    assert issubclass(RunError, RuntimeError)
