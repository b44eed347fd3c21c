"""vae_format: the model-directory format and the code every vae-onnx package shares.

numpy and the standard library only (Pillow when a PNG is written), so training, export
and the torch-free runtime can all import it. Its modules:

- ``contract``: format name and versions, the image, the graphs' tensors, metadata_props
- ``manifest``: :class:`Manifest`, manifest.json read with every check, and written
- ``verified``: reading a listed file only through its type, size and sha256
  (``regular_file``), and a graph held to the trust model (``graph_policy`` on
  ``onnx_wire``, an ONNX protobuf reader); ``strict_json`` reads manifest.json
- ``ood``: the manifest's out-of-distribution calibration section and its check
- ``atomic``: crash-safe file writes (temporary file, fsync, rename; the umask's or the
  replaced file's mode; symlinks followed, devices written through; ``check_output``);
  ``atomic_dir``: a directory staged and swapped in, a crashed swap recovered;
  ``temp_names``: our temporary names and the sweep of stale ones
- ``signals`` (SIGTERM as Ctrl-C in the CLIs), ``extras`` (which extras are installed)
- ``idx`` / ``datasets``: the IDX reader; MNIST-style files found and md5-checked
- ``grid``: image grids (round half up, as torchvision's save_image)
- ``errors``: :class:`VAEError` and its format and data-file subclasses
"""

from __future__ import annotations

from .contract import (
    FORMAT,
    FORMAT_VERSION,
    IMAGE_SHAPE,
    SUPPORTED_VERSIONS,
    GraphSpec,
    TensorSpec,
    contract,
    graph_metadata,
)
from .errors import DataFileError, ModelFormatError, VAEError
from .manifest import FileEntry, Manifest, graph_entry, likelihood_section
from .verified import read_graph, read_verified, verify_files

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "IMAGE_SHAPE",
    "SUPPORTED_VERSIONS",
    "DataFileError",
    "FileEntry",
    "GraphSpec",
    "Manifest",
    "ModelFormatError",
    "TensorSpec",
    "VAEError",
    "contract",
    "graph_entry",
    "graph_metadata",
    "likelihood_section",
    "read_graph",
    "read_verified",
    "verify_files",
]
