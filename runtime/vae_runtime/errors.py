"""The exceptions and warnings the runtime raises on purpose.

Every refusal is a :class:`VAEError`, so callers (and the CLI) can tell a documented
refusal from a bug. The subclasses also derive from the built-in exception a caller would
naturally catch (``ValueError`` for bad data, ``RuntimeError`` for an unusable provider).
``VAEError`` and ``ModelFormatError`` are vae_format's own classes: the format package
raises them when it reads a model directory.
"""

from __future__ import annotations

from vae_format.errors import DataFileError, ModelFormatError, VAEError

__all__ = [
    "DataFileError",
    "InputError",
    "ModelFormatError",
    "ProviderError",
    "ProviderWarning",
    "RunError",
    "VAEError",
]


class InputError(VAEError, ValueError):
    """An image, latent, path or argument the runtime cannot use."""


class ProviderError(VAEError, RuntimeError):
    """An engine or execution provider that was asked for but cannot be used."""


class RunError(VAEError, RuntimeError):
    """An engine failed while running a graph (e.g. it could not allocate a buffer); the
    message names the graph file and the engine's own one-line reason."""


class ProviderWarning(UserWarning):
    """The graphs run on other providers than asked for, or the install looks broken."""
