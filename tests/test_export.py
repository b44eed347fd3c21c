"""vae_export: graph contract, dynamic batch, no random ops, metadata, manifest checksums,
refusals, and atomicity of a failed export."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from safetensors.torch import load_file, save_file

import vae_export
from vae_export import ExportError, ValidationError, export_model_dir
from vae_export.cli import main as export_main
from vae_export.graphs import random_ops
from vae_export.phase import FromPhases, ToPhases, phases_to_map, rewrite_decoder
from vae_format.preprocess_spec import builtin
from vae_train.architectures import ARCHITECTURES, build_decoder, build_encoder
from vae_train.checkpoint import save_checkpoint

ARCH_LATENTS = [(arch, latent) for arch in sorted(ARCHITECTURES) for latent in (2, 20)]


def dims(vi: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value or d.dim_param for d in vi.type.tensor_type.shape.dim]


def make_run(root: Path, arch: str = "conv", latent: int = 20, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    config = {"arch": arch, "latent_dim": latent, "dataset": "mnist", "likelihood": "bernoulli"}
    save_checkpoint(
        root,
        build_encoder(arch, latent),
        build_decoder(arch, latent),
        config,
        {"epoch": 1},
        epoch=1,
    )
    return root


@pytest.mark.parametrize(("arch", "latent"), ARCH_LATENTS)
def test_graph_contract(model_dir_factory, arch: str, latent: int) -> None:
    model_dir = model_dir_factory(arch, latent)
    enc = onnx.load(model_dir / "encoder.onnx")
    dec = onnx.load(model_dir / "decoder.onnx")
    assert [i.name for i in enc.graph.input] == ["x"]
    assert [o.name for o in enc.graph.output] == ["mu", "logvar"]
    assert [i.name for i in dec.graph.input] == ["z"]
    assert [o.name for o in dec.graph.output] == ["x_hat"]
    batch = dims(enc.graph.input[0])[0]
    assert isinstance(batch, str) and batch, "batch dimension must be symbolic"
    assert dims(enc.graph.input[0])[1:] == [1, 28, 28]
    assert dims(enc.graph.output[0])[1:] == dims(enc.graph.output[1])[1:] == [latent]
    assert dims(dec.graph.input[0])[1:] == [latent]
    assert dims(dec.graph.output[0])[1:] == [1, 28, 28]
    for vi in [*enc.graph.input, *enc.graph.output, *dec.graph.input, *dec.graph.output]:
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    for model in (enc, dec):
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 18
        onnx.checker.check_model(model, full_check=True)
        assert not any(
            t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
        )
        assert random_ops(model) == []


@pytest.mark.parametrize("batch", [1, 10_000])
def test_dynamic_batch_runs(model_dir_factory, batch: int) -> None:
    model_dir = model_dir_factory("conv", 20)
    enc = ort.InferenceSession(str(model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    dec = ort.InferenceSession(str(model_dir / "decoder.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    mu, logvar = enc.run(None, {"x": x})
    assert mu.shape == logvar.shape == (batch, 20)
    (x_hat,) = dec.run(None, {"z": mu})
    assert x_hat.shape == (batch, 1, 28, 28)
    assert x_hat.min() >= 0 and x_hat.max() <= 1


def test_shared_weights_shrink_graphs_and_self_contained_opt_out(
    tmp_path: Path, data_dir: Path
) -> None:
    run = make_run(tmp_path / "run", "conv", 20)
    shared = export_model_dir(run, tmp_path / "shared", data_dir=data_dir).out_dir
    alone = export_model_dir(
        run, tmp_path / "alone", data_dir=data_dir, self_contained=True
    ).out_dir
    ckpt = (shared / "checkpoints/encoder.safetensors").stat().st_size
    assert (shared / "encoder.onnx").stat().st_size < 0.01 * ckpt
    assert (alone / "encoder.onnx").stat().st_size > ckpt
    manifest = json.loads((alone / "manifest.json").read_text())
    assert manifest["graphs"]["encoder"]["external_data"] == []
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    outs = []
    for d in (shared, alone):
        sess = ort.InferenceSession(str(d / "encoder.onnx"), providers=["CPUExecutionProvider"])
        outs.append(sess.run(None, {"x": x}))
    np.testing.assert_array_equal(outs[0][0], outs[1][0])


def test_random_op_detector_finds_injected_node(model_dir_factory) -> None:
    dec = onnx.load(model_dir_factory("conv", 20) / "decoder.onnx")
    node = onnx.helper.make_node("RandomNormal", [], ["noise"], shape=[1], name="eps")
    dec.graph.node.insert(0, node)
    assert random_ops(dec) == ["RandomNormal (eps)"]


def test_metadata_and_manifest(model_dir_factory) -> None:
    model_dir = model_dir_factory("mlp", 2)
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["format"] == "vae-onnx-model" and manifest["format_version"] == 2
    assert manifest["preprocess"] == builtin("mnist")  # the fixture's dataset
    assert (manifest["arch"], manifest["latent_dim"]) == ("mlp", 2)
    assert manifest["likelihood"] == {"name": "bernoulli"}
    for key in ("dataset", "training", "versions", "created", "parity", "image", "graphs"):
        assert key in manifest
    assert manifest["versions"]["opset"] >= 18
    assert set(manifest["files"]) == {
        "encoder.onnx",
        "decoder.onnx",
        "checkpoints/encoder.safetensors",
        "checkpoints/decoder.safetensors",
        "checkpoints/config.json",
    }
    for rel, entry in manifest["files"].items():
        data = (model_dir / rel).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["bytes"] == len(data)
    for out in ("mu", "logvar", "x_hat"):
        assert 0 <= manifest["parity"][out] <= 1e-5
    for role in ("encoder", "decoder"):
        props = {p.key: p.value for p in onnx.load(model_dir / f"{role}.onnx").metadata_props}
        assert props["vae_onnx.role"] == role
        assert props["vae_onnx.latent_dim"] == "2"
        assert props["vae_onnx.arch"] == "mlp"
        assert props["vae_onnx.format_version"] == "2"
        assert props["vae_onnx.dataset"] == "mnist"


@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 3, 1, 1), (3, 4, 7, 7)])
def test_phase_rewrite_is_exact(shape: tuple[int, int, int, int]) -> None:
    torch.manual_seed(3)
    c_in = shape[1]
    first = torch.nn.ConvTranspose2d(c_in, 3, 4, 2, 1)
    second = torch.nn.ConvTranspose2d(3, 2, 4, 2, 1)
    x = torch.randn(*shape)
    with torch.no_grad():
        phases = ToPhases(first)(x)
        assert phases.shape == (shape[0], 4 * 3, shape[2], shape[3])
        assert torch.allclose(phases_to_map(phases), first(x), atol=1e-6)
        expected = second(torch.relu(first(x)))
        assert torch.allclose(FromPhases(second)(torch.relu(phases)), expected, atol=1e-6)


def test_phase_rewrite_of_the_conv_decoder() -> None:
    torch.manual_seed(4)
    decoder = build_decoder("conv", 6).eval()
    rewritten, count = rewrite_decoder(decoder, ARCHITECTURES["conv"].phase_tail)
    assert count == 2
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in rewritten.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in decoder.modules())  # a copy
    z = torch.randn(9, 6) * 3
    with torch.no_grad():
        assert torch.allclose(rewritten(z), decoder(z), atol=1e-6)
    mlp = build_decoder("mlp", 6)
    assert rewrite_decoder(mlp, ARCHITECTURES["mlp"].phase_tail) == (mlp, 0)
    with pytest.raises(ValueError, match="kernel 4, stride 2"):
        ToPhases(torch.nn.ConvTranspose2d(2, 2, 3, 1, 1))
    with pytest.raises(ValueError, match="no output padding"):
        FromPhases(torch.nn.ConvTranspose2d(2, 2, 4, 2, 1, output_padding=1))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_declared_phase_tail_is_rewritten_exactly(arch: str) -> None:
    torch.manual_seed(5)
    decoder = build_decoder(arch, 3).eval()
    tail = ARCHITECTURES[arch].phase_tail
    rewritten, count = rewrite_decoder(decoder, tail)
    assert count == (2 if tail else 0)
    if tail:
        names = {name for name, m in rewritten.named_modules()}
        assert set(tail) <= names
        assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in rewritten.modules())
    z = torch.randn(7, 3) * 3
    with torch.no_grad():
        assert torch.allclose(rewritten(z), decoder(z), atol=1e-6)


def test_decoder_graph_phase_form_by_default(model_dir_factory) -> None:
    default = model_dir_factory("conv", 20)
    ops = [n.op_type for n in onnx.load(default / "decoder.onnx").graph.node]
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops and ops.count("Conv") == 6
    assert "Pad" not in ops  # folded into the phase Convs' own pads
    manifest = json.loads((default / "manifest.json").read_text())
    assert manifest["export"]["decoder_form"] == "phase"
    assert manifest["export"]["decoder_rewrites"] == 2
    graph = manifest["graphs"]["decoder"]
    assert graph["graph_flops_per_image"] > graph["flops_per_image"]  # zero taps not credited
    plain = model_dir_factory("conv", 20, decoder_form="convtranspose")
    ops = [n.op_type for n in onnx.load(plain / "decoder.onnx").graph.node]
    assert ops.count("ConvTranspose") == 2
    assert json.loads((plain / "manifest.json").read_text())["export"]["decoder_rewrites"] == 0


def test_missing_checkpoint_file_refused(tmp_path: Path, data_dir: Path) -> None:
    run = make_run(tmp_path / "run")
    ckpt = next((run / "checkpoints").glob("epoch-*"))
    (ckpt / "decoder.safetensors").unlink()
    with pytest.raises(ExportError, match=r"missing decoder checkpoint .*decoder\.safetensors"):
        export_model_dir(run, tmp_path / "out", data_dir=data_dir)
    assert not (tmp_path / "out").exists()


def test_latent_mismatch_refused(tmp_path: Path, data_dir: Path) -> None:
    run = make_run(tmp_path / "run", latent=20)
    ckpt = next((run / "checkpoints").glob("epoch-*"))
    save_file(build_decoder("conv", 8).state_dict(), ckpt / "decoder.safetensors")
    with pytest.raises(
        ExportError, match="encoder latent size 20 differs from decoder latent size 8"
    ):
        export_model_dir(run, tmp_path / "out", data_dir=data_dir)


def test_config_not_matching_weights_refused(tmp_path: Path, data_dir: Path) -> None:
    run = make_run(tmp_path / "run", arch="conv")
    ckpt = next((run / "checkpoints").glob("epoch-*"))
    config = json.loads((ckpt / "config.json").read_text())
    config["arch"] = "mlp"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="config does not match the weights"):
        export_model_dir(run, tmp_path / "out", data_dir=data_dir)


def test_failed_validation_leaves_existing_directory_identical(
    tmp_path: Path, data_dir: Path, tree_bytes
) -> None:
    run = make_run(tmp_path / "run", seed=1)
    out = tmp_path / "model"
    export_model_dir(run, out, data_dir=data_dir)
    before = tree_bytes(out)
    # A second run whose export cannot meet a zero tolerance: validation must fail.
    other = make_run(tmp_path / "run2", seed=2)
    with pytest.raises(ValidationError, match=r"parity check failed: .* tolerance 0"):
        export_model_dir(other, out, data_dir=data_dir, tolerance=0.0)
    assert tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run", "run2"]


def test_reexport_replaces_directory(tmp_path: Path, data_dir: Path) -> None:
    out = tmp_path / "model"
    export_model_dir(make_run(tmp_path / "a", seed=1), out, data_dir=data_dir)
    first = (out / "checkpoints/encoder.safetensors").read_bytes()
    export_model_dir(make_run(tmp_path / "b", seed=2), out, data_dir=data_dir)
    assert (out / "checkpoints/encoder.safetensors").read_bytes() != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "model"]


def test_preprocess_declared_from_the_dataset_or_none(tmp_path: Path, data_dir: Path) -> None:
    run = make_run(tmp_path / "run", arch="mlp", latent=3)
    ckpt = next((run / "checkpoints").glob("epoch-*"))
    config = json.loads((ckpt / "config.json").read_text())
    config["dataset"] = "fashion-mnist"
    (ckpt / "config.json").write_text(json.dumps(config))
    out = tmp_path / "fashion"
    assert export_main([str(run), "--out", str(out), "--data-dir", str(data_dir), "--no-ood"]) == 0
    assert json.loads((out / "manifest.json").read_text())["preprocess"] == builtin("fashion-mnist")
    flags = ["--data-dir", str(data_dir), "--no-ood", "--preprocess", "none"]
    assert export_main([str(run), "--out", str(tmp_path / "none"), *flags]) == 0
    assert json.loads((tmp_path / "none" / "manifest.json").read_text())["preprocess"] == "none"
    config["dataset"] = "kmnist"
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="no preprocessing is known for the checkpoint's"):
        export_model_dir(run, tmp_path / "k", data_dir=data_dir, ood=False)
    assert not (tmp_path / "k").exists()


def test_refuses_to_replace_a_non_model_directory(tmp_path: Path, data_dir: Path) -> None:
    target = tmp_path / "precious"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a model directory"):
        export_model_dir(make_run(tmp_path / "run"), target, data_dir=data_dir)
    assert (target / "notes.txt").read_text() == "keep me"


def test_cli_export_and_verify(tmp_path: Path, data_dir: Path, capsys) -> None:
    run = make_run(tmp_path / "run", arch="mlp", latent=3)
    out = tmp_path / "model"
    assert export_main([str(run), "--out", str(out), "--data-dir", str(data_dir)]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "max abs" in text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["export"]["command"].startswith("vae-export ")
    code = export_main(["verify", str(out), "--data-dir", str(data_dir), "--batch-sizes", "1,5"])
    text = capsys.readouterr().out
    assert code == 0
    rows = [line.split() for line in text.splitlines() if line.startswith(("encoder", "decoder"))]
    assert {r[1] for r in rows} == {"mu", "logvar", "x_hat", "nll"}
    assert all(float(r[-3]) <= 1e-5 for r in rows if r[1] != "nll")
    # nll: per-image -log p(x|z) of decoded test images, held to 1e-4 relative
    assert all(float(r[-2]) <= 1e-4 for r in rows if r[1] == "nll")
    assert {r[-4] for r in rows} == {"1", "5"}


def test_cli_verify_detects_tampered_checkpoint(tmp_path: Path, data_dir: Path, capsys) -> None:
    out = tmp_path / "model"
    export_model_dir(make_run(tmp_path / "run"), out, data_dir=data_dir)
    state = load_file(out / "checkpoints/decoder.safetensors")
    state["fc2.bias"] += 1.0
    save_file(state, out / "checkpoints/decoder.safetensors")
    assert export_main(["verify", str(out), "--data-dir", str(data_dir)]) == 2
    assert "sha256 differs" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert export_main([str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-export: error:") and "does not exist" in err[0]
    assert not (tmp_path / "o").exists()
    shutil.rmtree(tmp_path, ignore_errors=True)


def _sigmoid_graph() -> onnx.ModelProto:
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, None])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, None])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Sigmoid", ["x"], ["y"])], "g", [x], [y])
    return onnx.helper.make_model(
        graph, opset_imports=[onnx.helper.make_opsetid("", 18)], ir_version=10
    )


def test_exact_sigmoid_matches_torch_through_saturation() -> None:
    from vae_export.graphs import exact_sigmoid

    x = np.linspace(-120, 40, 8001, dtype=np.float32)[None]
    want = torch.sigmoid(torch.from_numpy(x)).numpy()
    model = _sigmoid_graph()
    plain = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert exact_sigmoid(model) == 1
    assert "Sigmoid" not in {n.op_type for n in model.graph.node}
    exact = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = exact.run(None, {"x": x})[0]
    # Zero exactly where torch underflows, and the same logarithm everywhere else.
    np.testing.assert_array_equal(got == 0, want == 0)
    pos = want > 0
    assert np.max(np.abs(np.log(got[pos].astype(np.float64)) - np.log(want[pos]))) < 1e-5
    # The reason for the rewrite: ORT's own Sigmoid flushes far more outputs to zero.
    assert (plain.run(None, {"x": x})[0] == 0).sum() > (want == 0).sum() + 1000


def test_likelihood_parity_catches_flushed_outputs(data_dir: Path, monkeypatch) -> None:
    """A decoder whose outputs reach 1e-12 (faint-ink pixels): with ORT's plain Sigmoid the
    per-image -log p(x|z) is far off; the exported form matches PyTorch."""
    from vae_export import graphs, validate
    from vae_export.data import sample_test_images
    from vae_export.parity import LIKELIHOOD_REL_TOLERANCE

    torch.manual_seed(0)
    enc, dec = build_encoder("conv", 4), build_decoder("conv", 4)
    with torch.no_grad():
        dec.deconv2.bias.fill_(-24.0)  # logits near -24: sigmoid ~ 4e-11
    images = sample_test_images("mnist", data_dir, 16)
    lik = {"name": "bernoulli"}
    tail = ARCHITECTURES["conv"].phase_tail
    exported, _ = graphs.export_decoder(dec, 4, tail=tail)
    good = validate.likelihood_parity(
        enc, dec, validate.ort_session(exported.SerializeToString()), images, lik, (16,)
    )
    assert good[0].max_rel <= LIKELIHOOD_REL_TOLERANCE
    monkeypatch.setattr(graphs, "exact_sigmoid", lambda model: 0)
    plain, _ = graphs.export_decoder(dec, 4, tail=tail)
    bad = validate.likelihood_parity(
        enc, dec, validate.ort_session(plain.SerializeToString()), images, lik, (16,)
    )
    assert bad[0].max_rel > 100 * LIKELIHOOD_REL_TOLERANCE


def test_the_cli_and_the_package_import_without_torch() -> None:
    """`vae-export --help` must not pay for torch: the package import is light and the
    subcommands import the library only when they run."""
    code = (
        "import sys, vae_export, vae_export.cli\n"
        "vae_export.cli.build_parser()\n"
        "print(sorted(m for m in ('torch', 'onnx', 'vae_train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    # the lazy attributes still resolve
    assert callable(vae_export.export_model_dir) and vae_export.ExportResult.__name__


def test_builder_refuses_what_the_runtime_refuses_and_leaves_the_directory(
    model_dir_factory, tmp_path: Path, tree_bytes
) -> None:
    from vae_export.builder import changed_model_dir

    # self-contained: a variant's own graph gets no external data from the checkpoints
    source = model_dir_factory("mlp", 2, self_contained=True)
    model = Path(shutil.copytree(source, tmp_path / "model"))
    before = tree_bytes(model)
    refused = pytest.raises(ValidationError, match=r"runtime refused .*decoder\.bad\.onnx")
    with refused, changed_model_dir(model) as builder:
        builder.add_bytes("decoder.bad.onnx", b"not an onnx graph", "graph")
        builder.add_variant("bad", {"encoder": "encoder.onnx", "decoder": "decoder.bad.onnx"}, {})
    assert tree_bytes(model) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    # the same change with a real graph lands whole, listed and loadable
    with changed_model_dir(model) as builder:
        graph = (model / "decoder.onnx").read_bytes()
        builder.add_bytes("decoder.copy.onnx", graph, "graph")
        builder.add_variant("copy", {"encoder": "encoder.onnx", "decoder": "decoder.copy.onnx"}, {})
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["variants"]["copy"]["decoder"] == "decoder.copy.onnx"
    assert manifest["files"]["decoder.copy.onnx"]["sha256"] == hashlib.sha256(graph).hexdigest()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
