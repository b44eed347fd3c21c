"""Checkpoint -> validated model directory.

Everything is exported and checked in memory first; the directory is then assembled by the
builder (builder.py), which loads it back through ``vae_runtime`` before swapping it into
place, so a failed export never touches an existing directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx
import torch

from vae_export import flops, graphs, manifest, parity, shared_weights, validate
from vae_export.builder import ModelDirBuilder, check_target, new_model_dir
from vae_export.data import prior_latents, sample_test_images
from vae_export.errors import ExportError
from vae_export.model_source import CHECKPOINT_FILES, CHECKPOINT_SUBDIR, run_checkpoint
from vae_export.ood_calibration import calibrate_ood
from vae_export.quality import SECTION as QUALITY_SECTION
from vae_export.quality import quality
from vae_format.ood import SECTION as OOD_SECTION
from vae_train.architectures import get_architecture
from vae_train.checkpoint import CONFIG_FILE, DECODER_FILE, ENCODER_FILE, Checkpoint

ROLES = ("encoder", "decoder")
GRAPH_FILES = {"encoder": "encoder.onnx", "decoder": "decoder.onnx"}


@dataclass
class ExportResult:
    out_dir: Path
    manifest: dict[str, Any]
    parity: list[parity.ParityRow]
    seconds: float


@dataclass
class _Graphs:
    """The exported graphs, and the checkpoint bytes they read their weights from."""

    models: dict[str, onnx.ModelProto]
    external: dict[str, dict[str, bytes]]  # role -> {location: bytes}
    rewritten: int

    def serialized(self, role: str) -> bytes:
        return self.models[role].SerializeToString()


def export_model_dir(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    data_dir: str | Path,
    name: str | None = None,
    opset: int = graphs.DEFAULT_OPSET,
    decoder_form: str = "phase",
    which: str = "best",
    tolerance: float = parity.PARITY_TOLERANCE,
    command: str = "",
    self_contained: bool = False,
    evaluate_k: int = 0,
    ood: bool = True,
    preprocess: str = "dataset",
) -> ExportResult:
    """Export the checkpoint (a run directory or a checkpoint folder) to ``out_dir``.

    By default the graphs read the weights they share with the checkpoints from the
    checkpoint files (see shared_weights); ``self_contained=True`` keeps every weight
    inline, at about twice the directory size. ``evaluate_k`` > 0 also runs the
    torch-free evaluator (IW bound with that many samples) and records its figures.
    ``ood``: calibrate the out-of-distribution score on the training images (docs/ood.md).
    ``preprocess``: "dataset" declares the procedure the checkpoint's dataset was made
    with (docs/preprocessing.md); "none" declares raw images fitted whole into 28x28.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    check_target(out_dir)
    if opset < 18:
        raise ExportError(f"--opset {opset} is too old; 18 or newer is required")
    ckpt = run_checkpoint(checkpoint, which)
    manifest.preprocess_of(ckpt.config, preprocess)  # refused before the slow steps
    name = name or out_dir.name
    ckpt_bytes = {f: (ckpt.path / f).read_bytes() for f in CHECKPOINT_FILES}
    exported = _export_graphs(ckpt, name, opset, decoder_form, ckpt_bytes, self_contained)
    rows, lik_rows = _check_parity(ckpt, exported, data_dir, tolerance)
    summary = _parity_summary(rows, lik_rows, tolerance)
    export_info = {
        "command": command,
        "opset": opset,
        "decoder_form": decoder_form,
        "decoder_rewrites": exported.rewritten,
        "checkpoint_epoch": ckpt.config.get("epoch"),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    with new_model_dir(out_dir) as builder:
        _add_files(builder, exported, ckpt, ckpt_bytes)
        graph_sections = _graph_sections(exported, ckpt)
        builder.create_manifest(
            **manifest.new_manifest_fields(
                name, ckpt.config, graph_sections, opset, summary, export_info, preprocess
            )
        )
        if ood:
            section = {**calibrate_ood(builder.load(), ckpt.config, data_dir), "command": command}
            builder.set_section(OOD_SECTION, section)
        if evaluate_k:
            section = quality(builder.load(), ckpt.config, data_dir, evaluate_k)
            builder.set_section(QUALITY_SECTION, section)
    doc = builder.manifest.to_dict()
    return ExportResult(out_dir, doc, rows + lik_rows, time.perf_counter() - t0)


def _export_graphs(
    ckpt: Checkpoint,
    name: str,
    opset: int,
    decoder_form: str,
    ckpt_bytes: dict[str, bytes],
    self_contained: bool,
) -> _Graphs:
    """Both graphs, checked against the contract, with the shared weights pointed at the
    checkpoint files unless ``self_contained``."""
    config, latent_dim = ckpt.config, int(ckpt.config["latent_dim"])
    tail = get_architecture(config["arch"]).phase_tail
    try:
        decoder, rewritten = graphs.export_decoder(
            ckpt.decoder, latent_dim, opset, decoder_form, tail
        )
    except ValueError as exc:  # a phase_tail that does not name rewritable layers
        raise ExportError(f"cannot export the {config['arch']} decoder: {exc}") from None
    models = {"encoder": graphs.export_encoder(ckpt.encoder, opset), "decoder": decoder}
    external: dict[str, dict[str, bytes]] = {role: {} for role in ROLES}
    for role, model in models.items():
        graphs.set_metadata(model, manifest.graph_metadata(name, role, config))
        model.producer_name, model.producer_version = "vae-onnx", manifest.own_version()
        validate.check_graph(model, role, latent_dim)
        source = ENCODER_FILE if role == "encoder" else DECODER_FILE
        location = f"{CHECKPOINT_SUBDIR}/{source}"
        if not self_contained and shared_weights.share_weights(model, ckpt_bytes[source], location):
            external[role] = {location: ckpt_bytes[source]}
    return _Graphs(models, external, rewritten)


def _check_parity(
    ckpt: Checkpoint, exported: _Graphs, data_dir: str | Path, tolerance: float
) -> tuple[list[parity.ParityRow], list[parity.ParityRow]]:
    """ORT against PyTorch on exactly what ships (the graph bytes and their external data):
    (graph rows, likelihood rows), each held to its bound."""
    config, latent_dim = ckpt.config, int(ckpt.config["latent_dim"])
    images = sample_test_images(config.get("dataset", "mnist"), data_dir)
    sessions = {
        role: validate.ort_session(exported.serialized(role), external=exported.external[role])
        for role in ROLES
    }
    rows = validate.encoder_parity(ckpt.encoder, sessions["encoder"], images, "test images")
    latents = prior_latents(latent_dim)
    rows += validate.decoder_parity(ckpt.decoder, sessions["decoder"], latents, "N(0,I)")
    parity.require_within(rows, tolerance)
    lik_rows = validate.likelihood_parity(
        ckpt.encoder, ckpt.decoder, sessions["decoder"], images, manifest.likelihood_of(config)
    )
    parity.require_within(lik_rows, {"max_rel": parity.LIKELIHOOD_REL_TOLERANCE})
    return rows, lik_rows


def _parity_summary(
    rows: list[parity.ParityRow], lik_rows: list[parity.ParityRow], tolerance: float
) -> dict[str, Any]:
    """The manifest's ``parity`` section: the worst figures, their bounds, every row."""
    return {
        "tolerance": tolerance,
        **parity.maxima(rows),
        "likelihood_max_rel": max(r.max_rel for r in lik_rows),
        "likelihood_tolerance": parity.LIKELIHOOD_REL_TOLERANCE,
        "batch_sizes": list(parity.BATCH_SIZES),
        "rows": parity.rows_as_dicts(rows + lik_rows),
    }


def _add_files(
    builder: ModelDirBuilder, exported: _Graphs, ckpt: Checkpoint, ckpt_bytes: dict[str, bytes]
) -> None:
    for role in ROLES:
        builder.add_bytes(GRAPH_FILES[role], exported.serialized(role), "graph")
    for fname, data in ckpt_bytes.items():
        role = "config" if fname == CONFIG_FILE else "checkpoint"
        builder.add_bytes(f"{CHECKPOINT_SUBDIR}/{fname}", data, role)
    run_dir = _run_dir(ckpt.path)
    if run_dir is not None and (run_dir / "metrics.jsonl").is_file():
        builder.add_copy("training/metrics.jsonl", run_dir / "metrics.jsonl", "log")


def _graph_sections(exported: _Graphs, ckpt: Checkpoint) -> dict[str, dict[str, Any]]:
    """Per role: the file, its external-data files, and its FLOPs per image (the network's
    and the graph's)."""
    latent_dim = int(ckpt.config["latent_dim"])
    modules = {"encoder": ckpt.encoder, "decoder": ckpt.decoder}
    examples = {"encoder": torch.rand(1, 1, 28, 28), "decoder": torch.zeros(1, latent_dim)}
    return {
        role: {
            "file": GRAPH_FILES[role],
            "external_data": sorted(exported.external[role]),
            "flops_per_image": flops.model_flops(modules[role], examples[role]),
            "graph_flops_per_image": flops.graph_flops(exported.models[role]),
        }
        for role in ROLES
    }


def _run_dir(ckpt_dir: Path) -> Path | None:
    """The run directory a checkpoint folder belongs to, if it is inside one."""
    return ckpt_dir.parent.parent if ckpt_dir.parent.name == CHECKPOINT_SUBDIR else None
