"""The reparameterization and the prior, in numpy (the graphs hold no random operator).

Noise comes from ``numpy.random.default_rng(seed)`` (PCG64), whose float32 normal stream is
the same on every platform and numpy 2.x release, so a seed fixes the result everywhere.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import InputError

# exp(0.5 * logvar) overflows float32 above logvar ~ 177 and underflows to 0 below ~ -200;
# clamping to [-30, 20] keeps std within [3e-7, 2.2e4], wide of anything a trained VAE emits.
LOGVAR_MIN = -30.0
LOGVAR_MAX = 20.0


def make_rng(seed: Any = None, rng: Any = None) -> np.random.Generator:
    """A Generator from ``seed`` or ``rng`` (at most one); neither: fresh OS entropy."""
    if rng is not None:
        if seed is not None:
            raise InputError("pass seed or rng, not both")
        if not isinstance(rng, np.random.Generator):
            raise InputError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
        return rng
    if isinstance(seed, (bool, float, np.bool_, np.floating)):
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise InputError(f"seed must be a non-negative integer, got {seed!r} ({exc})") from None


def clamp_logvar(logvar: np.ndarray) -> np.ndarray:
    return np.clip(logvar, LOGVAR_MIN, LOGVAR_MAX)


def reparameterize(mu: np.ndarray, logvar: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """z = mu + exp(0.5 * clamp(logvar)) * eps, float32.

    mu, logvar: (N, L); eps: (N, L) or (N, n, L) for n samples per input.
    """
    std = np.exp(np.float32(0.5) * clamp_logvar(logvar), dtype=np.float32)
    if eps.ndim == 3:
        mu, std = mu[:, None, :], std[:, None, :]
    with np.errstate(over="ignore", invalid="ignore"):  # refused just below
        z = (mu + std * eps).astype(np.float32, copy=False)
    if not np.isfinite(z).all():
        raise InputError("z = mu + std * eps overflows float32: mu or eps is too large")
    return z


def eps_array(eps: Any) -> np.ndarray:
    """``eps`` as a numeric array (its shape is checked by :func:`check_eps`)."""
    try:
        array = np.asarray(eps)
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a ragged nested list
        raise InputError(f"cannot make a numeric array of eps ({exc})") from None
    if array.dtype.kind not in "fiu":
        raise InputError(f"eps: dtype {array.dtype} is not a real number type")
    return array


def check_eps(eps: Any, shape: tuple[int, ...]) -> np.ndarray:
    array = eps_array(eps)
    if array.dtype.kind not in "fiu":
        raise InputError(f"eps: dtype {array.dtype} is not a real number type")
    if array.shape != shape:
        raise InputError(f"eps has shape {array.shape}, expected {shape}")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputError("eps contains NaN or infinite values")
    return array
