"""vae_runtime: run an exported vae-onnx model with ONNX Runtime and numpy (no torch).

    from vae_runtime import VAE
    vae = VAE()                      # the shipped default model (or $VAE_ONNX_MODEL)
    x = vae.generate(64, seed=0)     # (64, 1, 28, 28) float32 in [0, 1]
    vae.save_grid(x, "samples.png")

See docs/runtime.md. Pillow and tqdm are imported only by the functions that need them,
and an engine's library (onnxruntime) only when a model is loaded with it, so importing
this package costs numpy and vae_format (numpy and the standard library) only.
"""

from __future__ import annotations

from .errors import (
    InputError,
    ModelFormatError,
    ProviderError,
    ProviderWarning,
    RunError,
    VAEError,
)
from .model_dir import resolve_model_dir
from .outputs import make_grid, save_grid, save_reconstruction_grid
from .sampling import LOGVAR_MAX, LOGVAR_MIN
from .similarity import Neighbours, cosine_similarity, similar
from .sources import ImageSource, open_images
from .vae import VAE, FileEmbedding

__version__ = "0.1.0"

__all__ = [
    "LOGVAR_MAX",
    "LOGVAR_MIN",
    "VAE",
    "FileEmbedding",
    "ImageSource",
    "InputError",
    "ModelFormatError",
    "Neighbours",
    "ProviderError",
    "ProviderWarning",
    "RunError",
    "VAEError",
    "__version__",
    "cosine_similarity",
    "make_grid",
    "open_images",
    "resolve_model_dir",
    "save_grid",
    "save_reconstruction_grid",
    "similar",
]
