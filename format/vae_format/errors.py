"""The errors vae-onnx raises on purpose, shared by every package.

Every documented refusal is a :class:`VAEError`, so a caller (or a CLI) can tell a refusal
from a bug. The subclasses also derive from ``ValueError``, the built-in exception a caller
would naturally catch for bad data. ``vae_runtime`` re-exports these classes as its own.
"""

from __future__ import annotations


class VAEError(Exception):
    """Base class of every error vae-onnx raises on purpose."""


class ModelFormatError(VAEError, ValueError):
    """A model directory that breaks docs/model-format.md; the message names file and reason."""


class DataFileError(VAEError, ValueError):
    """A dataset or IDX file that is missing, malformed or fails its published checksum."""
