"""Shared fixtures. The datasets are read from ../shared/datasets (never copied into the
project); VAE_ONNX_DATA_DIR overrides that location."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("VAE_ONNX_DATA_DIR", REPO.parent / "shared" / "datasets"))


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="session")
def tree_bytes() -> Callable[[Path], dict[str, bytes]]:
    """Every file under a folder, path -> bytes: for "a refusal leaves it byte-identical"."""
    return _tree_bytes


@cache
def _loopback_prefix() -> tuple[str, ...]:
    prefix = ("unshare", "--net", "--map-root-user", "sh", "-c", 'ip link set lo up && exec "$@"')
    try:
        probe = subprocess.run([*prefix, "sh", "true"], capture_output=True, timeout=30)
        ok = probe.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return (*prefix, "sh") if ok else ()


@pytest.fixture(scope="session")
def loopback() -> list[str]:
    """A command prefix that runs its command in a fresh network namespace holding only
    loopback (``unshare --net``), or nothing where the machine allows none. torchrun's
    store and Ray's nodes listen on every interface; inside it that is loopback alone."""
    return list(_loopback_prefix())


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST files not found under {DATA_DIR} (set VAE_ONNX_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def model_dir_factory(tmp_path_factory, data_dir):
    """``make(arch, latent_dim)`` -> a model directory exported from freshly initialised
    weights (seeded), cached for the session. Needs torch (the ``train`` extra)."""
    cache: dict[tuple[str, int, str, bool], Path] = {}

    def make(
        arch: str = "conv",
        latent_dim: int = 20,
        decoder_form: str = "phase",
        self_contained: bool = False,
    ) -> Path:
        key = (arch, latent_dim, decoder_form, self_contained)
        if key not in cache:
            root = tmp_path_factory.mktemp(f"{arch}-z{latent_dim}")
            cache[key] = export_fresh_model(
                root, data_dir, arch, latent_dim, decoder_form, self_contained
            )
        return cache[key]

    return make


def export_fresh_model(
    root: Path,
    data_dir: Path,
    arch: str,
    latent_dim: int,
    decoder_form: str = "phase",
    self_contained: bool = False,
) -> Path:
    import torch

    from vae_export import export_model_dir
    from vae_train.architectures import build_decoder, build_encoder
    from vae_train.checkpoint import save_checkpoint

    torch.manual_seed(1234 + latent_dim)
    enc, dec = build_encoder(arch, latent_dim), build_decoder(arch, latent_dim)
    config = {
        "arch": arch,
        "latent_dim": latent_dim,
        "dataset": "mnist",
        "likelihood": "bernoulli",
        "sigma": 0.1,
        "epoch": 0,
        "command": "fixture",
    }
    save_checkpoint(root / "run", enc, dec, config, {"epoch": 0}, epoch=0)
    out = root / "model"
    export_model_dir(
        root / "run",
        out,
        data_dir=data_dir,
        decoder_form=decoder_form,
        self_contained=self_contained,
    )
    return out
