"""Which optional parts of vae-onnx this install has, and the one line that says how to
add a missing one (a bare ``pip install vae-onnx`` has neither ONNX Runtime nor torch).

Checked with ``importlib.util.find_spec`` (nothing is imported), so a command can refuse
in one line before it imports a library it cannot have.
"""

from __future__ import annotations

import importlib.util

RUNTIME_INSTALL = "pip install 'vae-onnx[cpu]' (or 'vae-onnx[gpu]' for CUDA)"
# torch is pinned to its CPU build: an unpinned torch pulls several GB of CUDA packages.
TRAIN_INSTALL = (
    "pip install 'vae-onnx[train]' 'torch==2.13.0' "
    "--extra-index-url https://download.pytorch.org/whl/cpu"
)
TRAIN_MODULES = ("torch", "safetensors")  # what vae-train imports
EXPORT_MODULES = ("torch", "onnx", "onnxscript", "safetensors")  # and vae-export


def missing(modules: tuple[str, ...]) -> list[str]:
    """The top-level modules of ``modules`` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def missing_train_extra(tool: str, modules: tuple[str, ...] = TRAIN_MODULES) -> str | None:
    """None, or why ``tool`` (vae-train, vae-export) cannot run here and how to fix it."""
    absent = missing(modules)
    if not absent:
        return None
    return f"{tool} needs the 'train' extra ({', '.join(absent)} missing): {TRAIN_INSTALL}"
