"""``vae-export web-golden``: the files the JavaScript package and page are checked against.

For every model directory it writes ``web/test/golden/<name>.json``: fixed test images and
latents with what the Python runtime (:class:`vae_runtime.VAE`) outputs for them, per
variant (fp32 = the default graphs, int8, fp16), plus the reparameterization on chosen
(mu, logvar, eps) and the prior samples of the JavaScript PRNG (re-implemented below, so
a seed means the same latents in both languages). For the 2-D model it also writes the
page's scatter of test-set embeddings, ``web/demo/assets/<name>.embeddings.json``.

The output is deterministic (no timestamps, sorted keys), so a test can regenerate it and
compare with the committed files. Arrays are base64 of little-endian float32 / uint8.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from vae_export.errors import ExportError
from vae_format import atomic
from vae_format.datasets import read_split
from vae_runtime import VAE

GOLDEN_FORMAT = "vae-onnx-web-golden"
EMBEDDINGS_FORMAT = "vae-onnx-web-embeddings"
VERSION = 1
TEST_IMAGES = (0, 1, 2)  # indices into the model's test split
GENERATE_SEED = 0
GENERATE_COUNT = 4
EMBEDDING_DECIMALS = 2  # the plane is ~8 units over ~400 px: 0.01 is below a pixel
MASK32 = 0xFFFFFFFF


# ---- the JavaScript PRNG (web/src/random.js), bit for bit -------------------------------


def _splitmix32(state: int) -> tuple[int, int]:
    state = (state + 0x9E3779B9) & MASK32
    z = state
    z = ((z ^ (z >> 16)) * 0x85EBCA6B) & MASK32
    z = ((z ^ (z >> 13)) * 0xC2B2AE35) & MASK32
    return state, z ^ (z >> 16)


def _rotl(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & MASK32


def js_normals(seed: int, count: int) -> np.ndarray:
    """``count`` float32 standard normals as ``web/src/random.js`` draws them for ``seed``.

    xoshiro128** seeded by splitmix32; two 32-bit draws make a 53-bit uniform in (0, 1);
    Box-Muller turns two uniforms into two normals (cos first, then sin).
    """
    state, s = seed & MASK32, []
    for _ in range(4):
        state, z = _splitmix32(state)
        s.append(z)

    def next_u32() -> int:
        result = (_rotl((s[1] * 5) & MASK32, 7) * 9) & MASK32
        t = (s[1] << 9) & MASK32
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 11)
        return result

    def uniform() -> float:
        a, b = next_u32() >> 5, next_u32() >> 6
        return (a * 67108864.0 + b + 0.5) / 9007199254740992.0

    out: list[float] = []
    while len(out) < count:
        u1, u2 = uniform(), uniform()
        r = math.sqrt(-2.0 * math.log(u1))
        theta = 2.0 * math.pi * u2
        out += [r * math.cos(theta), r * math.sin(theta)]
    return np.array(out[:count], dtype=np.float32)


# ---- golden files -----------------------------------------------------------------------


def _b64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _f32(array: np.ndarray) -> str:
    return _b64(array, "<f4")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def variant_names(manifest: dict[str, Any]) -> list[str]:
    """fp32 (the default graphs) and every variant the manifest lists."""
    return ["fp32", *sorted(manifest.get("variants", {}))]


def _latents(latent_dim: int) -> np.ndarray:
    """The origin, a prior draw and a far one (2.5 sigma): inside and at the edge of the data."""
    draw = np.random.default_rng(0).standard_normal((1, latent_dim), dtype=np.float32)
    return np.concatenate([np.zeros((1, latent_dim), np.float32), draw, 2.5 * draw])


def _sample_case(vae: VAE) -> dict[str, str]:
    """Reparameterization inputs that reach both clamps of logvar (-30 and 20)."""
    rng = np.random.default_rng(1)
    shape = (4, vae.latent_dim)
    mu = rng.standard_normal(shape, dtype=np.float32)
    logvar = rng.uniform(-3, 1, shape).astype(np.float32)
    logvar[0, 0], logvar[1, 0] = -100.0, 50.0
    eps = rng.standard_normal(shape, dtype=np.float32)
    z = vae.sample(mu, logvar, eps=eps)
    return {"mu": _f32(mu), "logvar": _f32(logvar), "eps": _f32(eps), "z": _f32(z)}


def golden(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """The golden record of one model directory (see the module docstring)."""
    fp32 = VAE(model_dir, threads=1)
    manifest = fp32.manifest
    dataset = manifest.get("dataset", {}).get("name", "mnist")
    images = read_split(dataset, "test", data_dir).images[list(TEST_IMAGES)]
    latents = _latents(fp32.latent_dim)
    outputs = {}
    for name in variant_names(manifest):
        vae = fp32 if name == "fp32" else VAE(model_dir, variant=name, threads=1)
        mu, logvar = vae.encode(images)
        outputs[name] = {"mu": _f32(mu), "logvar": _f32(logvar), "x_hat": _f32(vae.decode(latents))}
    z = js_normals(GENERATE_SEED, GENERATE_COUNT * fp32.latent_dim).reshape(GENERATE_COUNT, -1)
    used = sorted(rel for rel, entry in manifest["files"].items() if entry["role"] != "log")
    record = {
        "format": GOLDEN_FORMAT,
        "version": VERSION,
        "generator": "vae-export web-golden",
        "model": manifest["name"],
        "latent_dim": fp32.latent_dim,
        "dataset": dataset,
        "files": {rel: manifest["files"][rel]["sha256"] for rel in used},
        "images": {"split": "test", "indices": list(TEST_IMAGES), "uint8": _b64(images, "u1")},
        "latents": _f32(latents),
        "outputs": outputs,
        "sample": _sample_case(fp32),
        "generate": {
            "seed": GENERATE_SEED,
            "count": GENERATE_COUNT,
            "z": _f32(z),
            "x_hat": _f32(fp32.decode(z)),
        },
    }
    return record


def embeddings(model_dir: Path, data_dir: Path) -> dict[str, Any]:
    """Test-set means of a 2-D model, rounded for the page's scatter, with their labels."""
    vae = VAE(model_dir, threads=1)
    manifest = vae.manifest
    if vae.latent_dim != 2:
        raise ExportError(
            f"{model_dir}: the page's scatter needs a 2-D model, not {vae.latent_dim}"
        )
    dataset = manifest.get("dataset", {}).get("name", "mnist")
    split = read_split(dataset, "test", data_dir)
    images, labels = split.images, split.labels
    mu = np.round(vae.embed(images).astype(np.float64), EMBEDDING_DECIMALS)
    encoder = manifest["graphs"]["encoder"]
    # The files that fix the encoder: the page draws the scatter only for this model.
    files = [encoder["file"], *encoder.get("external_data", [])]
    return {
        "format": EMBEDDINGS_FORMAT,
        "version": VERSION,
        "model": manifest["name"],
        "dataset": dataset,
        "split": "test",
        "count": len(labels),
        "files": {rel: manifest["files"][rel]["sha256"] for rel in files},
        "x": [float(v) for v in mu[:, 0]],
        "y": [float(v) for v in mu[:, 1]],
        "labels": "".join(str(int(v)) for v in labels),
    }


def dumps(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":")) + "\n"


def golden_path(web_dir: Path, name: str) -> Path:
    return web_dir / "test" / "golden" / f"{name}.json"


def embeddings_path(web_dir: Path, name: str) -> Path:
    return web_dir / "demo" / "assets" / f"{name}.embeddings.json"


def write_web_assets(
    model_dirs: list[Path], web_dir: Path, data_dir: Path, preprocess: bool | None = None
) -> list[Path]:
    """Write the golden file of every model, the scatter of every 2-D one and the
    preprocessing parity vectors (:mod:`vae_export.web_preprocess`; ``preprocess`` None:
    when this runtime has the preprocessing of issue 12)."""
    from vae_export.web_preprocess import available, vectors, vectors_path

    written = []
    if preprocess or (preprocess is None and available()):
        path = vectors_path(web_dir)
        atomic.write_bytes(path, dumps(vectors(data_dir)).encode())
        written.append(path)
    for model_dir in model_dirs:
        record = golden(model_dir, data_dir)
        path = golden_path(web_dir, record["model"])
        atomic.write_bytes(path, dumps(record).encode())
        written.append(path)
        if record["latent_dim"] == 2:
            path = embeddings_path(web_dir, record["model"])
            atomic.write_bytes(path, dumps(embeddings(model_dir, data_dir)).encode())
            written.append(path)
    return written
