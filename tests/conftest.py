"""Shared fixtures. The datasets are read from ../shared/datasets (never copied into the
project); VAE_ONNX_DATA_DIR overrides that location."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("VAE_ONNX_DATA_DIR", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "mnist" / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"MNIST files not found under {DATA_DIR} (set VAE_ONNX_DATA_DIR)")
    return DATA_DIR
