"""The exceptions and warnings the runtime raises on purpose.

Every refusal is a :class:`VAEError`, so callers (and the CLI) can tell a documented
refusal from a bug. The subclasses also derive from the built-in exception a caller would
naturally catch (``ValueError`` for bad data, ``RuntimeError`` for an unusable provider).
"""

from __future__ import annotations


class VAEError(Exception):
    """Base class of every error the runtime raises on purpose."""


class InputError(VAEError, ValueError):
    """An image, latent, path or argument the runtime cannot use."""


class ModelFormatError(VAEError, ValueError):
    """A model directory that breaks docs/model-format.md; the message names file and reason."""


class ProviderError(VAEError, RuntimeError):
    """An ONNX Runtime execution provider that was asked for but cannot be used."""


class ProviderWarning(UserWarning):
    """The sessions run on other providers than asked for, or the install looks broken."""
