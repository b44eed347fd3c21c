"""PyTorch training of the vae-onnx models (needs the ``train`` extra).

Importing the package is light, so that ``vae-train`` can say in one line which extra to
install when torch is missing; the names below load their modules (and torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
_MODULES = {
    "ARCHITECTURES": "architectures",
    "Architecture": "architectures",
    "build_decoder": "architectures",
    "build_encoder": "architectures",
    "register": "architectures",
    "negative_elbo": "losses",
    "count_parameters": "models",
    "reparameterize": "models",
}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        return getattr(importlib.import_module(f"vae_train.{_MODULES[name]}"), name)
    raise AttributeError(f"module 'vae_train' has no attribute {name!r}")
