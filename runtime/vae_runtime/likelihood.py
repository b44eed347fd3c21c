"""Per-image negative ELBO and importance-weighted bound, in numpy, in nats.

The formulas are those of docs/model-format.md and of vae_train.losses: Bernoulli is the
summed binary cross-entropy with each log clamped at -100 (as
torch.nn.functional.binary_cross_entropy does), Gaussian keeps its normalising constant.
Sums run in float64, so the result is at least as accurate as the float32 training loss.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ModelFormatError

LOG_CLAMP = -100.0
LOG_2PI = math.log(2.0 * math.pi)


def reconstruction_nll(
    x_hat: np.ndarray, x: np.ndarray, likelihood: str = "bernoulli", sigma: float | None = None
) -> np.ndarray:
    """-log p(x | z) per row, shape (N,); x_hat and x are (N, ...) with the same size."""
    p = x_hat.reshape(len(x_hat), -1).astype(np.float64)
    t = x.reshape(len(x), -1).astype(np.float64)
    if likelihood == "bernoulli":
        with np.errstate(divide="ignore"):  # log(0) = -inf is clamped to -100 right after
            log_p = np.maximum(np.log(p), LOG_CLAMP)
            log_1mp = np.maximum(np.log1p(-p), LOG_CLAMP)
        return -(t * log_p + (1.0 - t) * log_1mp).sum(axis=1)
    if likelihood == "gaussian":
        if sigma is None or not sigma > 0:
            raise ModelFormatError(f"gaussian likelihood needs sigma > 0, got {sigma!r}")
        d = t.shape[1]
        const = 0.5 * d * math.log(2.0 * math.pi * sigma**2)
        return ((t - p) ** 2).sum(axis=1) / (2.0 * sigma**2) + const
    raise ModelFormatError(f"unknown likelihood {likelihood!r}")


def kl_to_standard_normal(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, shape (N,)."""
    mu = mu.astype(np.float64)
    logvar = logvar.astype(np.float64)
    return -0.5 * (1.0 + logvar - mu**2 - np.exp(logvar)).sum(axis=-1)


def log_standard_normal(z: np.ndarray) -> np.ndarray:
    """log N(z; 0, I), summed over the last axis."""
    z = z.astype(np.float64)
    return -0.5 * (LOG_2PI + z**2).sum(axis=-1)


def log_posterior(eps: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """log q(z | x) for z = mu + exp(0.5 logvar) eps, summed over the last axis.

    Written with eps rather than (z - mu) / std, which would lose precision when std is tiny.
    """
    eps = eps.astype(np.float64)
    logvar = logvar.astype(np.float64)
    return -0.5 * (LOG_2PI + logvar + eps**2).sum(axis=-1)


def log_mean_exp(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """log(mean(exp(values))) along ``axis``, without overflow (the log-sum-exp trick)."""
    top = np.max(values, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    out = np.log(np.mean(np.exp(values - top), axis=axis)) + np.squeeze(top, axis=axis)
    return out


def importance_weighted_bound(
    recon_nll: np.ndarray, z: np.ndarray, eps: np.ndarray, logvar: np.ndarray
) -> np.ndarray:
    """-log mean_k exp(log p(x|z_k) + log p(z_k) - log q(z_k|x)), shape (N,).

    recon_nll: (N, k); z, eps: (N, k, L); logvar: (N, L), the clamped one used to draw z.
    """
    log_w = -recon_nll + log_standard_normal(z) - log_posterior(eps, logvar[:, None, :])
    return -log_mean_exp(log_w, axis=1)
