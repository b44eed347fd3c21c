"""Export of vae-onnx checkpoints to a validated ONNX model directory (``train`` extra)."""

from vae_export.errors import ExportError, ValidationError
from vae_export.exporter import ExportResult, export_model_dir

__all__ = ["ExportError", "ExportResult", "ValidationError", "export_model_dir"]
