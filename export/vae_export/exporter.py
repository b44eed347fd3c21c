"""Checkpoint -> validated model directory, written atomically.

Everything is exported and checked in memory first; the directory is then assembled in a
temporary sibling folder, loaded back through ``vae_runtime`` (the format's consumer), and
only then swapped into place, so a failed export never touches an existing directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from vae_export import flops, graphs, manifest, shared_weights, validate
from vae_export.errors import ExportError, ValidationError
from vae_runtime import VAE
from vae_runtime.errors import VAEError
from vae_runtime.evaluate import evaluate
from vae_train.checkpoint import (
    CONFIG_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    CheckpointError,
    load_checkpoint,
)
from vae_train.datasets import DatasetError, get_spec, load_split

CHECKPOINT_SUBDIR = "checkpoints"


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    parity: list[validate.ParityRow]
    seconds: float


def test_images(dataset: str, data_dir: str | Path, n: int = 128, seed: int = 0) -> np.ndarray:
    """``n`` real test images (float32 in [0, 1], (n, 1, 28, 28)), a seeded selection."""
    try:
        split = load_split(get_spec(dataset), "test", Path(data_dir), {})
    except DatasetError as exc:
        raise ExportError(f"validation needs the {dataset} test images: {exc}") from None
    idx = np.random.default_rng(seed).choice(len(split), size=n, replace=False)
    return (split.images[idx].astype(np.float32) / 255.0)[:, None]


def prior_latents(latent_dim: int, n: int = 128, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)


def _write_model(path: Path, model: onnx.ModelProto) -> None:
    path.write_bytes(model.SerializeToString())


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
        backup.rmdir()
        os.rename(out_dir, backup)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            os.rename(backup, out_dir)
            raise
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)


@contextlib.contextmanager
def staged_copy(model_dir: Path) -> Iterator[Path]:
    """A copy of ``model_dir`` beside it, for a change that must land whole: swapped into
    place when the block ends, removed if it raises (``model_dir`` stays byte-identical)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}.tmp-", dir=model_dir.parent))
    try:
        tmp.rmdir()
        shutil.copytree(model_dir, tmp)
        yield tmp
        _swap_into_place(tmp, model_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_manifest(model_dir: Path, doc: dict[str, Any]) -> None:
    (model_dir / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")


def _check_target(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
        raise ExportError(
            f"refusing to replace {out_dir}: it is not empty and holds no manifest.json "
            "(not a model directory)"
        )


def _load_back(tmp: Path) -> VAE:
    """Load the assembled directory with the runtime, which checks the whole contract."""
    try:
        return VAE(tmp)
    except VAEError as exc:
        raise ValidationError(f"the runtime refused the exported directory: {exc}") from None


def quality(vae: VAE, dataset: str, data_dir: str | Path, k: int) -> dict[str, Any]:
    """The torch-free evaluator's figures (test ELBO, IW bound, 5-NN, OOD AUROC)."""
    ood = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}.get(dataset)
    try:
        result = evaluate(vae, data_dir, dataset, k=k, seed=0, neighbours=5, ood_dataset=ood)
    except VAEError as exc:
        raise ExportError(f"evaluation failed: {exc}") from None
    return {"evaluator": "vae-run evaluate", **result}


def _run_dir(ckpt_dir: Path) -> Path | None:
    """The run directory a checkpoint folder belongs to, if it is inside one."""
    return ckpt_dir.parent.parent if ckpt_dir.parent.name == "checkpoints" else None


def export_model_dir(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    data_dir: str | Path,
    name: str | None = None,
    opset: int = graphs.DEFAULT_OPSET,
    decoder_form: str = "phase",
    which: str = "best",
    tolerance: float = validate.PARITY_TOLERANCE,
    command: str = "",
    self_contained: bool = False,
    evaluate_k: int = 0,
) -> ExportResult:
    """Export the checkpoint (a run directory or a checkpoint folder) to ``out_dir``.

    By default the graphs read the weights they share with the checkpoints from the
    checkpoint files (see shared_weights); ``self_contained=True`` keeps every weight
    inline, at about twice the directory size. ``evaluate_k`` > 0 also runs the
    torch-free evaluator (IW bound with that many samples) and records its figures.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    _check_target(out_dir)
    if opset < 18:
        raise ExportError(f"--opset {opset} is too old; 18 or newer is required")
    try:
        ckpt = load_checkpoint(checkpoint, which)
    except CheckpointError as exc:
        raise ExportError(str(exc)) from None
    config = ckpt.config
    latent_dim = int(config["latent_dim"])
    name = name or out_dir.name

    enc_model = graphs.export_encoder(ckpt.encoder, opset)
    dec_model, rewritten = graphs.export_decoder(ckpt.decoder, latent_dim, opset, decoder_form)
    for role, model in (("encoder", enc_model), ("decoder", dec_model)):
        graphs.set_metadata(model, manifest.graph_metadata(name, role, config))
        model.producer_name, model.producer_version = (
            "vae-onnx",
            manifest.versions(opset)["vae_onnx"],
        )
        validate.check_graph(model, role, latent_dim)

    ckpt_bytes = {
        f: (ckpt.path / f).read_bytes() for f in (ENCODER_FILE, DECODER_FILE, CONFIG_FILE)
    }
    external: dict[str, dict[str, bytes]] = {"encoder": {}, "decoder": {}}
    if not self_contained:
        for role, model, fname in (("encoder", enc_model, ENCODER_FILE),
                                   ("decoder", dec_model, DECODER_FILE)):  # fmt: skip
            location = f"{CHECKPOINT_SUBDIR}/{fname}"
            if shared_weights.share_weights(model, ckpt_bytes[fname], location):
                external[role] = {location: ckpt_bytes[fname]}
    enc_bytes, dec_bytes = enc_model.SerializeToString(), dec_model.SerializeToString()
    images = test_images(config.get("dataset", "mnist"), data_dir)
    # Parity is measured on exactly what ships: the graph bytes and their external data.
    enc_sess = validate.ort_session(enc_bytes, external=external["encoder"])
    dec_sess = validate.ort_session(dec_bytes, external=external["decoder"])
    rows = validate.encoder_parity(ckpt.encoder, enc_sess, images, "test images")
    rows += validate.decoder_parity(ckpt.decoder, dec_sess, prior_latents(latent_dim), "N(0,I)")
    validate.require_within(rows, tolerance)
    lik_rows = validate.likelihood_parity(ckpt.encoder, ckpt.decoder, dec_sess, images,
                                          manifest.likelihood_of(config))  # fmt: skip
    validate.require_within(lik_rows, {"max_rel": validate.LIKELIHOOD_REL_TOLERANCE})

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes 0700; a model directory is meant to be shared
        (tmp / "encoder.onnx").write_bytes(enc_bytes)
        (tmp / "decoder.onnx").write_bytes(dec_bytes)
        (tmp / CHECKPOINT_SUBDIR).mkdir()
        for fname, data in ckpt_bytes.items():
            (tmp / CHECKPOINT_SUBDIR / fname).write_bytes(data)
        run_dir = _run_dir(ckpt.path)
        log = None
        if run_dir is not None and (run_dir / "metrics.jsonl").is_file():
            log = "training/metrics.jsonl"
            (tmp / "training").mkdir()
            shutil.copyfile(run_dir / "metrics.jsonl", tmp / log)
        files = {
            "encoder.onnx": manifest.file_entry(tmp, "encoder.onnx", "graph"),
            "decoder.onnx": manifest.file_entry(tmp, "decoder.onnx", "graph"),
            f"{CHECKPOINT_SUBDIR}/{ENCODER_FILE}": manifest.file_entry(
                tmp, f"{CHECKPOINT_SUBDIR}/{ENCODER_FILE}", "checkpoint"),
            f"{CHECKPOINT_SUBDIR}/{DECODER_FILE}": manifest.file_entry(
                tmp, f"{CHECKPOINT_SUBDIR}/{DECODER_FILE}", "checkpoint"),
            f"{CHECKPOINT_SUBDIR}/{CONFIG_FILE}": manifest.file_entry(
                tmp, f"{CHECKPOINT_SUBDIR}/{CONFIG_FILE}", "config"),
        }  # fmt: skip
        if log:
            files[log] = manifest.file_entry(tmp, log, "log")
        parity = {"tolerance": tolerance, **validate.maxima(rows),
                  "likelihood_max_rel": max(r.max_rel for r in lik_rows),
                  "likelihood_tolerance": validate.LIKELIHOOD_REL_TOLERANCE,
                  "batch_sizes": list(validate.BATCH_SIZES),
                  "rows": validate.rows_as_dicts(rows + lik_rows)}  # fmt: skip
        rows = rows + lik_rows
        export_info = {"command": command, "opset": opset, "decoder_form": decoder_form,
                       "decoder_rewrites": rewritten,
                       "checkpoint_epoch": config.get("epoch"),
                       "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
        doc = manifest.build_manifest(name, config, files, opset, parity, export_info)
        examples = {"encoder": torch.rand(1, 1, 28, 28), "decoder": torch.zeros(1, latent_dim)}
        for role, module, model in (("encoder", ckpt.encoder, enc_model),
                                    ("decoder", ckpt.decoder, dec_model)):  # fmt: skip
            doc["graphs"][role]["flops_per_image"] = flops.model_flops(module, examples[role])
            doc["graphs"][role]["graph_flops_per_image"] = flops.graph_flops(model)
            doc["graphs"][role]["external_data"] = sorted(external[role])
        (tmp / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
        vae = _load_back(tmp)
        if evaluate_k:
            doc["quality"] = quality(vae, config.get("dataset", "mnist"), data_dir, evaluate_k)
            (tmp / "manifest.json").write_text(json.dumps(doc, indent=2) + "\n")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out_dir, doc, rows, time.perf_counter() - t0)
