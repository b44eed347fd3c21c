"""The negative ELBO against hand computations in plain Python math."""

from __future__ import annotations

import math

import pytest
import torch

from vae_train.losses import (
    kl_to_standard_normal,
    negative_elbo,
    reconstruction_nll,
)

X = [[0.0, 1.0, 0.25, 0.8], [1.0, 0.0, 0.5, 0.0]]
X_HAT = [[0.1, 0.7, 0.3, 0.95], [0.6, 0.2, 0.5, 0.05]]
MU = [[0.5, -1.0, 0.0], [2.0, 0.1, -0.3]]
LOGVAR = [[0.0, -0.5, 1.2], [0.3, -2.0, 0.0]]


def t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def hand_bce(x_hat: list[float], x: list[float]) -> float:
    return -sum(
        xi * math.log(p) + (1 - xi) * math.log(1 - p) for p, xi in zip(x_hat, x, strict=True)
    )


def hand_kl(mu: list[float], logvar: list[float]) -> float:
    # KL(N(m, s^2) || N(0, 1)) = 0.5 * (m^2 + s^2 - 1 - log s^2), summed over dimensions
    return sum(0.5 * (m * m + math.exp(lv) - 1 - lv) for m, lv in zip(mu, logvar, strict=True))


def hand_gauss(x_hat: list[float], x: list[float], sigma: float) -> float:
    # -sum log N(x_i | x_hat_i, sigma^2), one pixel at a time
    return sum(
        (xi - p) ** 2 / (2 * sigma**2) + math.log(sigma) + 0.5 * math.log(2 * math.pi)
        for p, xi in zip(x_hat, x, strict=True)
    )


def test_bernoulli_elbo_matches_hand_computation() -> None:
    parts = negative_elbo(t(X_HAT), t(X), t(MU), t(LOGVAR))
    recon = [hand_bce(p, x) for p, x in zip(X_HAT, X, strict=True)]
    kl = [hand_kl(m, lv) for m, lv in zip(MU, LOGVAR, strict=True)]
    assert parts.recon.shape == parts.kl.shape == parts.loss.shape == (2,)
    assert parts.recon.tolist() == pytest.approx(recon, rel=1e-12)
    assert parts.kl.tolist() == pytest.approx(kl, rel=1e-12)
    assert parts.loss.tolist() == pytest.approx(
        [r + k for r, k in zip(recon, kl, strict=True)], rel=1e-12
    )


def test_bernoulli_first_image_by_hand() -> None:
    # The first image spelled out term by term.
    bce = -(
        math.log(0.9)
        + math.log(0.7)
        + 0.25 * math.log(0.3)
        + 0.75 * math.log(0.7)
        + 0.8 * math.log(0.95)
        + 0.2 * math.log(0.05)
    )
    kl = (
        0.5 * (0.25 + 1 - 1 - 0)
        + 0.5 * (1 + math.exp(-0.5) - 1 + 0.5)
        + 0.5 * (math.exp(1.2) - 1 - 1.2)
    )
    parts = negative_elbo(t(X_HAT), t(X), t(MU), t(LOGVAR))
    assert parts.recon[0].item() == pytest.approx(bce, rel=1e-12)
    assert parts.kl[0].item() == pytest.approx(kl, rel=1e-12)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 0.37])
def test_gaussian_elbo_keeps_its_constant(sigma: float) -> None:
    parts = negative_elbo(t(X_HAT), t(X), t(MU), t(LOGVAR), likelihood="gaussian", sigma=sigma)
    recon = [hand_gauss(p, x, sigma) for p, x in zip(X_HAT, X, strict=True)]
    assert parts.recon.tolist() == pytest.approx(recon, rel=1e-12)
    assert parts.loss.tolist() == pytest.approx(
        [r + hand_kl(m, lv) for r, m, lv in zip(recon, MU, LOGVAR, strict=True)], rel=1e-12
    )


def test_gaussian_perfect_reconstruction_is_the_normalising_constant() -> None:
    # A full 28x28 image reconstructed exactly: only D/2 log(2 pi sigma^2) remains.
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    nll = reconstruction_nll(x, x, "gaussian", sigma=0.1)
    assert nll.tolist() == pytest.approx([392 * math.log(2 * math.pi * 0.01)] * 2, rel=1e-12)
    assert nll[0].item() == pytest.approx(-1084.779, abs=1e-3)  # negative: a density, not a mass


def test_losses_agree_with_torch_distributions() -> None:
    torch.manual_seed(1)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64).round()
    x_hat = torch.rand(3, 1, 28, 28, dtype=torch.float64).clamp(0.01, 0.99)
    mu, logvar = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    bern = -torch.distributions.Bernoulli(probs=x_hat).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_nll(x_hat, x, "bernoulli"), bern)
    normal = -torch.distributions.Normal(x_hat, 0.2).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(reconstruction_nll(x_hat, x, "gaussian", sigma=0.2), normal)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(
        kl_to_standard_normal(mu, logvar), torch.distributions.kl_divergence(q, p).sum(1)
    )


def test_kl_is_zero_at_the_prior() -> None:
    assert kl_to_standard_normal(torch.zeros(2, 4), torch.zeros(2, 4)).tolist() == [0.0, 0.0]


def test_unknown_likelihood_refused() -> None:
    with pytest.raises(ValueError, match="likelihood"):
        reconstruction_nll(t(X_HAT), t(X), "poisson")
