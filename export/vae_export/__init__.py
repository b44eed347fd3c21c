"""Export of vae-onnx checkpoints to a validated ONNX model directory (``train`` extra).

Importing the package is light: ``export_model_dir`` and ``ExportResult`` (which need
torch and onnx) are loaded on first use, so ``vae-export --help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vae_export.errors import ExportError, ValidationError

if TYPE_CHECKING:
    from vae_export.exporter import ExportResult, export_model_dir

__all__ = ["ExportError", "ExportResult", "ValidationError", "export_model_dir"]


def __getattr__(name: str) -> Any:
    if name in ("ExportResult", "export_model_dir"):
        from vae_export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'vae_export' has no attribute {name!r}")
