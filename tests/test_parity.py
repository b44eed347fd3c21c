"""ONNX Runtime (through vae_runtime, the product) against PyTorch (the checkpoints a model
directory carries): encoder, decoder, reparameterization, the whole encode-sample-decode
path and the loss, for freshly initialised models and for every shipped model."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vae_runtime import VAE
from vae_runtime.evaluate import load_split
from vae_train.architectures import ARCHITECTURES
from vae_train.checkpoint import Checkpoint, load_checkpoint
from vae_train.losses import negative_elbo
from vae_train.models import reparameterize

TOL = 1e-5  # max abs difference, every output
REPARAM_TOL = 1e-6
LOSS_REL_TOL = 1e-3
BATCHES = (1, 2, 7, 64, 1000)
REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent.name for p in (REPO / "artifacts").glob("*/manifest.json"))
FRESH = [f"fresh-{arch}-z{z}" for arch in sorted(ARCHITECTURES) for z in (2, 20)]
MODELS = FRESH + SHIPPED
CUDA = "CUDAExecutionProvider" in ort.get_available_providers()
NO_CUDA = "CUDAExecutionProvider unavailable (onnxruntime-gpu and a GPU needed)"
PROVIDERS = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not CUDA, reason=NO_CUDA))]


@functools.cache
def _pair(model_dir: Path, provider: str) -> tuple[VAE, Checkpoint]:
    # Thread spinning off: spinning ORT threads would starve torch in this same process.
    providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"]
    chosen = providers if provider == "cuda" else "cpu"
    vae = VAE(model_dir, spinning=False, batch_size=1000, providers=chosen)
    return vae, load_checkpoint(model_dir / "checkpoints")


@pytest.fixture(params=MODELS)
def model_dir(request, model_dir_factory) -> Path:
    name: str = request.param
    if name.startswith("fresh-"):
        arch, z = name.removeprefix("fresh-").rsplit("-z", 1)
        return model_dir_factory(arch, int(z))
    return REPO / "artifacts" / name


@pytest.fixture(params=PROVIDERS)
def pair(request, model_dir) -> tuple[VAE, Checkpoint]:
    return _pair(model_dir, request.param)


@functools.cache
def _images(data_dir: Path, dataset: str) -> np.ndarray:
    images, _ = load_split(data_dir, dataset, "test")
    return images[np.random.default_rng(0).choice(len(images), max(BATCHES), replace=False)]


def image_inputs(kind: str, data_dir: Path) -> np.ndarray:
    """uint8 (1000, 1, 28, 28) for the uint8 kind, else float32 in [0, 1]."""
    n = max(BATCHES)
    if kind == "mnist":
        return _images(data_dir, "mnist")[:, None].astype(np.float32) / 255
    if kind == "fashion":
        return _images(data_dir, "fashion-mnist")[:, None].astype(np.float32) / 255
    if kind == "noise":
        return np.random.default_rng(1).random((n, 1, 28, 28), dtype=np.float32)
    if kind == "zeros":
        return np.zeros((n, 1, 28, 28), np.float32)
    if kind == "ones":
        return np.ones((n, 1, 28, 28), np.float32)
    if kind == "uint8":
        return np.random.default_rng(2).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    raise AssertionError(kind)


def torch_encode(ckpt: Checkpoint, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xf = x.astype(np.float32) / 255 if x.dtype == np.uint8 else x
    with torch.no_grad():
        mu, logvar = ckpt.encoder(torch.from_numpy(np.ascontiguousarray(xf)))
    return mu.numpy(), logvar.numpy()


def torch_decode(ckpt: Checkpoint, z: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return ckpt.decoder(torch.from_numpy(np.ascontiguousarray(z, np.float32))).numpy()


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0


@pytest.mark.parametrize("kind", ["mnist", "fashion", "noise", "zeros", "ones", "uint8"])
def test_encoder_parity(pair, kind: str, data_dir: Path) -> None:
    vae, ckpt = pair
    images = image_inputs(kind, data_dir)
    for n in BATCHES:
        mu, logvar = vae.encode(images[:n], preprocess="none")
        mu_t, logvar_t = torch_encode(ckpt, images[:n])
        assert mu.shape == logvar.shape == (n, vae.latent_dim)
        assert max_abs(mu, mu_t) <= TOL, f"mu, batch {n}, {kind}"
        assert max_abs(logvar, logvar_t) <= TOL, f"logvar, batch {n}, {kind}"


@pytest.mark.parametrize("kind", ["prior", "encoder_means", "extreme"])
def test_decoder_parity(pair, kind: str, data_dir: Path) -> None:
    vae, ckpt = pair
    n_max, latent = max(BATCHES), vae.latent_dim
    rng = np.random.default_rng(3)
    if kind == "prior":
        z = rng.standard_normal((n_max, latent), dtype=np.float32)
    elif kind == "encoder_means":
        z = torch_encode(ckpt, image_inputs("mnist", data_dir))[0]
    else:  # |z| up to 10, corners included
        z = rng.uniform(-10, 10, (n_max, latent)).astype(np.float32)
        z[:2] = [[10.0] * latent, [-10.0] * latent]
    for n in BATCHES:
        x_hat = vae.decode(z[:n])
        assert x_hat.shape == (n, 1, 28, 28)
        assert max_abs(x_hat, torch_decode(ckpt, z[:n])) <= TOL, f"x_hat, batch {n}, {kind}"


def test_reparameterization_matches_torch(pair) -> None:
    vae, _ = pair
    rng = np.random.default_rng(4)
    mu = rng.standard_normal((500, vae.latent_dim)).astype(np.float32) * 2
    logvar = rng.uniform(-8, 2, (500, vae.latent_dim)).astype(np.float32)
    eps = rng.standard_normal((500, vae.latent_dim)).astype(np.float32)
    expected = reparameterize(*(torch.from_numpy(a) for a in (mu, logvar, eps))).numpy()
    got = vae.sample(mu, logvar, eps=eps)
    # numpy's and torch's float32 exp may round differently by one ulp, which exceeds 1e-6
    # once |z| > 8; so the bound is 1e-6 absolute, relative beyond |z| = 1.
    assert np.all(np.abs(got - expected) <= REPARAM_TOL * np.maximum(1.0, np.abs(expected)))
    np.testing.assert_array_equal(vae.sample(mu, logvar, seed=9), vae.sample(mu, logvar, seed=9))
    assert not np.array_equal(vae.sample(mu, logvar, seed=9), vae.sample(mu, logvar, seed=10))


def test_reparameterization_statistics(pair) -> None:
    vae, _ = pair
    n = 100_000
    mu = np.array([[1.5, -2.0] + [0.0] * (vae.latent_dim - 2)][:1], np.float32)[:, : vae.latent_dim]
    logvar = np.full_like(mu, np.log(0.25))  # sigma = 0.5
    z = vae.sample(np.repeat(mu, n, 0), np.repeat(logvar, n, 0), seed=0)
    sigma = 0.5
    # 6 standard errors: a false alarm has probability ~1e-9 per coordinate.
    assert np.all(np.abs(z.mean(0) - mu[0]) <= 6 * sigma / np.sqrt(n))
    assert np.all(np.abs(z.std(0) - sigma) <= 6 * sigma / np.sqrt(2 * n))


def test_whole_path_matches_torch(pair, data_dir: Path) -> None:
    vae, ckpt = pair
    x = image_inputs("mnist", data_dir)[:256]
    eps = np.random.default_rng(5).standard_normal((256, vae.latent_dim)).astype(np.float32)
    mu, logvar = vae.encode(x)
    got = vae.decode(vae.sample(mu, logvar, eps=eps))
    with torch.no_grad():
        mu_t, logvar_t = ckpt.encoder(torch.from_numpy(x))
        want = ckpt.decoder(reparameterize(mu_t, logvar_t, torch.from_numpy(eps))).numpy()
    assert max_abs(got, want) <= TOL


def test_score_matches_training_loss(pair, data_dir: Path) -> None:
    vae, ckpt = pair
    x = image_inputs("mnist", data_dir)[:300]
    eps = np.random.default_rng(6).standard_normal((300, vae.latent_dim)).astype(np.float32)
    got = vae.score(x, eps=eps)
    with torch.no_grad():
        xt = torch.from_numpy(x)
        mu, logvar = ckpt.encoder(xt)
        x_hat = ckpt.decoder(reparameterize(mu, logvar, torch.from_numpy(eps)))
        want = negative_elbo(x_hat, xt, mu, logvar).loss.numpy()
    assert np.max(np.abs(got - want) / np.abs(want)) <= LOSS_REL_TOL


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(1, 40),
    seed=st.integers(0, 2**32 - 1),
    scale=st.floats(0.0, 10.0),
    as_uint8=st.booleans(),
)
def test_parity_property(model_dir_factory, n: int, seed: int, scale: float, as_uint8: bool):
    for arch, latent in (("conv", 2), ("mlp", 20)):
        vae, ckpt = _pair(model_dir_factory(arch, latent), "cpu")
        rng = np.random.default_rng(seed)
        if as_uint8:
            x = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
        else:
            x = rng.random((n, 1, 28, 28), dtype=np.float32)
        mu, logvar = vae.encode(x, preprocess="none")
        mu_t, logvar_t = torch_encode(ckpt, x)
        assert max_abs(mu, mu_t) <= TOL and max_abs(logvar, logvar_t) <= TOL
        z = (rng.standard_normal((n, latent)) * scale).astype(np.float32)
        assert max_abs(vae.decode(z), torch_decode(ckpt, z)) <= TOL
