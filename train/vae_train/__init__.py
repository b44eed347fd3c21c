"""PyTorch training of the vae-onnx models (needs the ``train`` extra)."""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "vae_train needs PyTorch: pip install 'vae-onnx[train]' -c constraints.txt"
    ) from exc

from vae_train.architectures import (
    ARCHITECTURES,
    Architecture,
    build_decoder,
    build_encoder,
    register,
)
from vae_train.losses import negative_elbo
from vae_train.models import count_parameters, reparameterize

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "build_decoder",
    "build_encoder",
    "count_parameters",
    "negative_elbo",
    "register",
    "reparameterize",
]
