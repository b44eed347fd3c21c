"""The fp16 variant (`vae-export fp16`): a float16 decoder for CUDA beside the fp32 encoder,
its float32 sigmoid, its bounds, and every shipped fp16 variant against PyTorch (on the CPU
execution provider here, and on CUDA where a GPU is present)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vae_export import ValidationError, export_model_dir, half
from vae_export.cli import main as export_main
from vae_runtime import VAE
from vae_train.architectures import build_decoder, build_encoder
from vae_train.checkpoint import load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "artifacts").glob("*/manifest.json"))
CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


@pytest.fixture
def model(model_dir_factory, tmp_path) -> Path:
    return Path(shutil.copytree(model_dir_factory("conv", 20), tmp_path / "model"))


def test_fp16_adds_a_checked_variant(model: Path, data_dir: Path, capsys) -> None:
    assert export_main(["fp16", str(model), "--data-dir", str(data_dir)]) == 0
    assert "added fp16 variant" in capsys.readouterr().out
    manifest = json.loads((model / "manifest.json").read_text())
    info = manifest["variants"]["fp16"]
    assert info["encoder"] == "encoder.onnx"  # the fp32 encoder, weights from the checkpoint
    assert info["decoder"] == "decoder.fp16.onnx"
    assert manifest["files"]["decoder.fp16.onnx"]["role"] == "graph"
    assert abs(info["quality"]["change"]) <= half.MAX_NELBO_CHANGE
    assert info["size_ratio"]["decoder"] > 1.9
    graph = onnx.load(model / "decoder.fp16.onnx")
    conv_weights = {n.input[1] for n in graph.graph.node if n.op_type == "Conv"}
    types = {i.data_type for i in graph.graph.initializer if i.name in conv_weights}
    assert types == {onnx.TensorProto.FLOAT16}
    vae, fp32 = VAE(model, variant="fp16"), VAE(model)
    x = np.random.default_rng(0).random((5, 1, 28, 28), dtype=np.float32)
    np.testing.assert_array_equal(vae.encode(x)[0], fp32.encode(x)[0])  # same encoder graph
    z = np.random.default_rng(1).standard_normal((64, 20)).astype(np.float32)
    ckpt = load_checkpoint(model / "checkpoints")
    with torch.no_grad():
        want = ckpt.decoder(torch.from_numpy(z)).numpy()
    got = vae.decode(z)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() <= half.FP16_TOLERANCE["max_abs"]
    assert np.abs(got - want).mean() <= half.FP16_TOLERANCE["mean_abs"]
    assert (
        export_main(
            [
                "verify",
                str(model),
                "--variant",
                "fp16",
                "--data-dir",
                str(data_dir),
                "--batch-sizes",
                "1,64",
            ]
        )
        == 0
    )


def test_fp16_sigmoid_stays_float32(tmp_path: Path, data_dir: Path) -> None:
    # Logits far below -11, where exp(-x) overflows float16: x_hat must stay tiny but
    # positive, as in PyTorch, or the Bernoulli likelihood of faint ink becomes 100 nats.
    torch.manual_seed(5)
    enc, dec = build_encoder("conv", 4), build_decoder("conv", 4)
    with torch.no_grad():
        dec.deconv2.bias.fill_(-40.0)
    config = {
        "arch": "conv",
        "latent_dim": 4,
        "dataset": "mnist",
        "likelihood": "bernoulli",
        "sigma": 0.1,
        "epoch": 0,
        "command": "test",
    }
    save_checkpoint(tmp_path / "run", enc, dec, config, {"epoch": 0}, epoch=0)
    model = export_model_dir(tmp_path / "run", tmp_path / "model", data_dir=data_dir).out_dir
    half.add_fp16_variant(model, data_dir, eval_size=200)
    z = np.random.default_rng(2).standard_normal((16, 4)).astype(np.float32)
    with torch.no_grad():
        want = dec(torch.from_numpy(z)).numpy()
    got = VAE(model, variant="fp16").decode(z)
    assert want.max() < 1e-12 and got.min() > 0
    assert np.abs(np.log(got) - np.log(want)).max() < 0.05


def test_fp16_refusal_leaves_directory_identical(
    model: Path, data_dir: Path, monkeypatch, tree_bytes
) -> None:
    before = tree_bytes(model)
    monkeypatch.setattr(half, "FP16_TOLERANCE", {"max_abs": 0.0})
    with pytest.raises(ValidationError, match="max abs"):
        half.add_fp16_variant(model, data_dir, eval_size=200)
    assert tree_bytes(model) == before
    assert sorted(p.name for p in model.parent.iterdir()) == ["model"]


def test_fp16_tail_needs_a_sigmoid() -> None:
    x = onnx.helper.make_tensor_value_info("z", onnx.TensorProto.FLOAT, ["N", 2])
    y = onnx.helper.make_tensor_value_info("x_hat", onnx.TensorProto.FLOAT, ["N", 2])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["z"], ["x_hat"], name="r")], "g", [x], [y]
    )
    with pytest.raises(ValueError, match="does not come from a sigmoid"):
        half.float32_tail(onnx.helper.make_model(graph))


def _check_shipped(model_dir: Path, providers: object, provider: str) -> None:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    info = manifest["variants"]["fp16"]
    assert abs(info["quality"]["change"]) <= half.MAX_NELBO_CHANGE
    vae = VAE(model_dir, variant="fp16", providers=providers)
    assert vae.info["decoder_providers"][0] == provider
    ckpt = load_checkpoint(model_dir / "checkpoints")
    z = np.random.default_rng(0).standard_normal((500, vae.latent_dim)).astype(np.float32)
    with torch.no_grad():
        want = ckpt.decoder(torch.from_numpy(z)).numpy()
    diff = np.abs(vae.decode(z) - want)
    assert diff.max() <= info["tolerance"]["max_abs"]
    assert diff.mean() <= info["tolerance"]["mean_abs"]


@pytest.mark.parametrize("model_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_fp16_variant_within_its_tolerance(model_dir: Path) -> None:
    _check_shipped(model_dir, "cpu", "CPUExecutionProvider")


@pytest.mark.skipif(
    not CUDA, reason="CUDAExecutionProvider unavailable (onnxruntime-gpu and a GPU needed)"
)
@pytest.mark.parametrize("model_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_fp16_variant_on_cuda(model_dir: Path) -> None:
    cuda = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    _check_shipped(model_dir, cuda, "CUDAExecutionProvider")
