"""Negative ELBO per image, in nats.

The Bernoulli reconstruction term is the summed binary cross-entropy that
pytorch/examples' VAE prints, so test losses compare with its figures. The Gaussian
option uses a fixed standard deviation ``sigma`` and keeps the normalising constant,
so it too is a true negative log-likelihood in nats:

    -log N(x | x_hat, sigma^2 I) = sum (x - x_hat)^2 / (2 sigma^2) + D/2 log(2 pi sigma^2)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

LIKELIHOODS = ("bernoulli", "gaussian")
DEFAULT_GAUSSIAN_SIGMA = 0.1


class ElboParts(NamedTuple):
    """Per-image terms, each of shape (N,)."""

    loss: Tensor
    recon: Tensor
    kl: Tensor


def reconstruction_nll(
    x_hat: Tensor, x: Tensor, likelihood: str = "bernoulli", sigma: float = DEFAULT_GAUSSIAN_SIGMA
) -> Tensor:
    """-log p(x | z) per image, shape (N,)."""
    x_hat = x_hat.flatten(1)
    x = x.flatten(1)
    if likelihood == "bernoulli":
        # BCE refuses inputs outside [0, 1], NaN included: on the CPU it raises, on CUDA a
        # device-side assert leaves the process's CUDA context unusable. A non-finite output
        # makes its term NaN instead (the trainer stops on it); finite ones pass unchanged,
        # bit for bit, gradients included.
        finite = torch.isfinite(x_hat)
        bce = F.binary_cross_entropy(torch.where(finite, x_hat, 0.5), x, reduction="none")
        return torch.where(finite, bce, math.nan).sum(1)
    if likelihood == "gaussian":
        d = x.shape[1]
        const = 0.5 * d * math.log(2 * math.pi * sigma**2)
        return ((x - x_hat) ** 2).sum(1) / (2 * sigma**2) + const
    raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")


def kl_to_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, shape (N,)."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)


def negative_elbo(
    x_hat: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    likelihood: str = "bernoulli",
    sigma: float = DEFAULT_GAUSSIAN_SIGMA,
) -> ElboParts:
    recon = reconstruction_nll(x_hat, x, likelihood, sigma)
    kl = kl_to_standard_normal(mu, logvar)
    return ElboParts(recon + kl, recon, kl)
