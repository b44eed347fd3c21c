"""A worked proof of the seams: a third architecture, defined only in this file, is
registered, trained with vae-train's library API, exported to a model directory and served
by vae_runtime, without a line of library code outside the registry knowing about it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import Tensor, nn

from vae_export import export_model_dir
from vae_export.verify import check_model_dir
from vae_format.datasets import read_split
from vae_runtime import VAE
from vae_train.architectures import ARCHITECTURES, Architecture, register
from vae_train.checkpoint import CheckpointError, load_checkpoint
from vae_train.trainer import TrainConfig, train


class TinyEncoder(nn.Module):
    """Conv(1->8) - Conv(8->16), both 4x4 stride 2, heads 784 -> L: no layer named as in
    the shipped architectures."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 4, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 4, 2, 1), nn.ReLU(), nn.Flatten()
        )
        self.mu = nn.Linear(16 * 7 * 7, latent_dim)
        self.logvar = nn.Linear(16 * 7 * 7, latent_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.features(x)
        return self.mu(h), self.logvar(h)


class TinyDecoder(nn.Module):
    """Linear L -> 784, then a ConvTranspose tail inside a Sequential (``up.0``, ``up.2``)."""

    def __init__(self, latent_dim: int) -> None:
        super().__init__()
        self.project = nn.Linear(latent_dim, 16 * 7 * 7)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(16, 8, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(8, 1, 4, 2, 1)
        )

    def forward(self, z: Tensor) -> Tensor:
        h = torch.relu(self.project(z)).view(-1, 16, 7, 7)
        return torch.sigmoid(self.up(h))


TINY = Architecture(
    "tiny-conv", TinyEncoder, TinyDecoder, phase_tail=("up.0", "up.2"), summary="test only"
)


@pytest.fixture
def tiny() -> Iterator[Architecture]:
    register(TINY)
    try:
        yield TINY
    finally:
        ARCHITECTURES.pop(TINY.name)


def test_a_new_architecture_goes_from_training_to_the_runtime(
    tiny: Architecture, tmp_path: Path, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = {"epochs": 2, "batch_size": 64, "limit_train": 1024, "limit_test": 256}
    cfg = TrainConfig(arch=tiny.name, latent_dim=3, data_dir=str(data_dir), threads=1, **settings)
    history = train(cfg, tmp_path / "run", progress=False, log=lambda _: None)
    assert history[-1]["test_loss"] < history[0]["test_loss"]  # it trained for real

    # the checkpoint is rebuilt through the registry, not guessed from layer names
    ckpt = load_checkpoint(tmp_path / "run")
    assert type(ckpt.encoder) is TinyEncoder and type(ckpt.decoder) is TinyDecoder

    result = export_model_dir(tmp_path / "run", tmp_path / "model", data_dir=data_dir)
    manifest = result.manifest
    assert (manifest["arch"], manifest["latent_dim"]) == (tiny.name, 3)
    # the declared tail was rewritten into the phase form, and still matched PyTorch
    assert manifest["export"]["decoder_rewrites"] == 2
    ops = {n.op_type for n in onnx.load(tmp_path / "model" / "decoder.onnx").graph.node}
    assert "ConvTranspose" not in ops and "DepthToSpace" in ops
    assert manifest["parity"]["x_hat"] <= 1e-5

    # the runtime serves it: its outputs against the PyTorch modules, on real test images
    vae = VAE(tmp_path / "model")
    assert (vae.info["arch"], vae.latent_dim) == (tiny.name, 3)
    x = read_split("mnist", "test", data_dir).images[:64, None].astype(np.float32) / 255
    mu, logvar = vae.encode(x)
    with torch.no_grad():
        mu_t, logvar_t = ckpt.encoder(torch.from_numpy(x))
        x_hat_t = ckpt.decoder(mu_t)
    np.testing.assert_allclose(mu, mu_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(logvar, logvar_t.numpy(), atol=1e-5)
    np.testing.assert_allclose(vae.decode(mu), x_hat_t.numpy(), atol=1e-5)
    assert check_model_dir(tmp_path / "model", data_dir, (1, 16)).ok

    # and without its registry entry the checkpoint is refused by name
    monkeypatch.delitem(ARCHITECTURES, tiny.name)
    with pytest.raises(CheckpointError, match="unknown arch 'tiny-conv'"):
        load_checkpoint(tmp_path / "run")
