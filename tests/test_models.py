"""The encoder/decoder networks: parameter counts, shapes, argument checks, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from vae_train.architectures import (
    ARCHITECTURES,
    Architecture,
    build_decoder,
    build_encoder,
    build_modules,
    register,
)
from vae_train.models import (
    ConvDecoder,
    ConvEncoder,
    MLPDecoder,
    MLPEncoder,
    count_parameters,
    reparameterize,
)

ARCHS = sorted(ARCHITECTURES)  # every registered architecture


def _linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def _conv(c_in: int, c_out: int, k: int = 4) -> int:
    return c_in * c_out * k * k + c_out


# Parameter counts worked out from the layer sizes of the design notes, layer by layer.
def expected_counts(arch: str, latent: int) -> tuple[int, int]:
    if arch == "conv":
        enc = _conv(1, 32) + _conv(32, 64) + _linear(3136, 256) + 2 * _linear(256, latent)
        dec = _linear(latent, 256) + _linear(256, 3136) + _conv(64, 32) + _conv(32, 1)
    else:
        enc = _linear(784, 400) + 2 * _linear(400, latent)
        dec = _linear(latent, 400) + _linear(400, 784)
    return enc, dec


def test_parameter_counts_latent_20() -> None:
    # Hand-checked totals (the design notes' 844,705 for the conv decoder is an arithmetic slip:
    # fc2 5,376 + fc3 805,952 + deconv1 32,800 + deconv2 513 = 844,641).
    assert count_parameters(build_encoder("conv", 20)) == 846_728
    assert count_parameters(build_decoder("conv", 20)) == 844_641
    assert count_parameters(build_encoder("mlp", 20)) == 330_040
    assert count_parameters(build_decoder("mlp", 20)) == 322_784


@pytest.mark.parametrize("arch", ["conv", "mlp"])  # the layer sizes worked out above
@pytest.mark.parametrize("latent", [1, 2, 20])
def test_parameter_counts_follow_layer_sizes(arch: str, latent: int) -> None:
    enc, dec = expected_counts(arch, latent)
    encoder, decoder = build_encoder(arch, latent), build_decoder(arch, latent)
    assert count_parameters(encoder) == enc
    assert count_parameters(decoder) == dec
    # count_parameters agrees with an independent count over the state dict
    by_shape = sum(int(np.prod(t.shape)) for t in encoder.state_dict().values())
    assert count_parameters(encoder) == by_shape


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("latent", [1, 2, 20])
def test_shapes(arch: str, latent: int) -> None:
    torch.manual_seed(0)
    encoder, decoder = build_encoder(arch, latent), build_decoder(arch, latent)
    x = torch.rand(5, 1, 28, 28)
    mu, logvar = encoder(x)
    assert mu.shape == (5, latent) and logvar.shape == (5, latent)
    out = decoder(mu)
    assert out.shape == (5, 1, 28, 28)
    assert out.dtype == torch.float32
    assert bool(((out > 0) & (out < 1)).all())
    # a batch of one works too (no squeezing of the batch axis)
    assert decoder(torch.zeros(1, latent)).shape == (1, 1, 28, 28)
    assert encoder(x[:1])[0].shape == (1, latent)


CLASSES = {"conv": (ConvEncoder, ConvDecoder), "mlp": (MLPEncoder, MLPDecoder)}


def test_the_shipped_architectures_are_registered() -> None:
    assert set(CLASSES) <= set(ARCHITECTURES)


@pytest.mark.parametrize("arch", ARCHS)
def test_encoder_and_decoder_are_separate_modules(arch: str) -> None:
    encoder, decoder = build_encoder(arch, 3), build_decoder(arch, 3)
    if arch in CLASSES:
        enc_cls, dec_cls = CLASSES[arch]
        assert type(encoder) is enc_cls and type(decoder) is dec_cls
    assert isinstance(encoder, nn.Module) and isinstance(decoder, nn.Module)
    enc_ids = {id(p) for p in encoder.parameters()}
    assert enc_ids.isdisjoint(id(p) for p in decoder.parameters())
    # neither module contains the other
    assert all(m is not decoder for m in encoder.modules())
    assert all(m is not encoder for m in decoder.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_modules_hold_no_randomness(arch: str) -> None:
    encoder, decoder = build_encoder(arch, 4).train(), build_decoder(arch, 4).train()
    x = torch.rand(3, 1, 28, 28)
    mu1, lv1 = encoder(x)
    mu2, lv2 = encoder(x)
    assert torch.equal(mu1, mu2) and torch.equal(lv1, lv2)
    assert torch.equal(decoder(mu1), decoder(mu1))


@pytest.mark.parametrize("arch", ["resnet", "", "CONV", None])
def test_unknown_arch_refused(arch: object) -> None:
    with pytest.raises(ValueError, match="arch"):
        build_encoder(arch, 20)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="arch"):
        build_decoder(arch, 20)  # type: ignore[arg-type]


@pytest.mark.parametrize("latent", [0, -1, 2.5, "20", True, None])
def test_invalid_latent_refused(latent: object) -> None:
    for build in (build_encoder, build_decoder):
        with pytest.raises(ValueError, match="latent_dim"):
            build("conv", latent)  # type: ignore[arg-type]


def test_reparameterize_with_given_noise() -> None:
    rng = np.random.default_rng(3)
    mu = rng.normal(size=(4, 6)).astype(np.float32)
    logvar = rng.normal(size=(4, 6)).astype(np.float32)
    eps = rng.normal(size=(4, 6)).astype(np.float32)
    z = reparameterize(torch.from_numpy(mu), torch.from_numpy(logvar), torch.from_numpy(eps))
    expected = [
        [m + e * math.exp(0.5 * lv) for m, lv, e in zip(rm, rl, re, strict=True)]
        for rm, rl, re in zip(mu.tolist(), logvar.tolist(), eps.tolist(), strict=True)
    ]
    np.testing.assert_allclose(z.numpy(), np.array(expected), rtol=1e-6, atol=1e-6)


def test_reparameterize_samples_have_the_right_moments() -> None:
    torch.manual_seed(0)
    n = 200_000
    mu = torch.full((n, 2), 3.0)
    logvar = torch.log(torch.tensor([[4.0, 0.25]])).expand(n, 2)
    z = reparameterize(mu, logvar)
    assert z.shape == (n, 2)
    np.testing.assert_allclose(z.mean(0).numpy(), [3.0, 3.0], atol=0.02)
    np.testing.assert_allclose(z.std(0).numpy(), [2.0, 0.5], rtol=0.01)
    # fresh noise on every call
    assert not torch.equal(z, reparameterize(mu, logvar))


# -- the architecture registry ----------------------------------------------------------------


def test_modules_are_rebuilt_from_a_recorded_config() -> None:
    config = {"arch": "conv", "latent_dim": 5, "dataset": "mnist", "epoch": 3}
    encoder, decoder = build_modules(config)
    assert type(encoder) is ConvEncoder and type(decoder) is ConvDecoder
    assert encoder(torch.rand(2, 1, 28, 28))[0].shape == (2, 5)
    with pytest.raises(ValueError, match="unknown arch 'resnet'; expected one of conv, mlp"):
        build_modules({**config, "arch": "resnet"})
    with pytest.raises(ValueError, match="latent_dim"):
        build_modules({"arch": "mlp"})


def test_register_refuses_a_taken_or_empty_name() -> None:
    before = dict(ARCHITECTURES)
    for name in ("conv", ""):
        with pytest.raises(ValueError, match="already registered"):
            register(Architecture(name, MLPEncoder, MLPDecoder))
    assert before == ARCHITECTURES


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("latent", [1, 3, 20])
def test_latent_size_is_read_from_the_weights(arch: str, latent: int) -> None:
    entry = ARCHITECTURES[arch]
    for role, build in (("encoder", build_encoder), ("decoder", build_decoder)):
        assert entry.latent_size(role, build(arch, latent).state_dict()) == latent
        assert entry.latent_size(role, {}) is None
