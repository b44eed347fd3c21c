"""Checkpoints: encoder and decoder weights in separate safetensors files, a JSON config,
and the training state (optimizer, epoch) for ``--resume``.

A run directory keeps each checkpoint in its own folder and names the current one in
``checkpoints/latest.json`` (and the best on validation in ``best.json``). A checkpoint
folder is complete before the pointer is atomically replaced, so a run killed at any
moment leaves the previous checkpoint loadable. Nothing is ever unpickled: weights are
safetensors and the training state is loaded with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from vae_format import atomic
from vae_train.architectures import ROLES, build_modules, get_architecture

ENCODER_FILE = "encoder.safetensors"
DECODER_FILE = "decoder.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "train_state.pt"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or its config does not match its weights."""


@dataclass
class Checkpoint:
    encoder: nn.Module
    decoder: nn.Module
    config: dict[str, Any]
    path: Path


def save_checkpoint(
    run_dir: Path,
    encoder: nn.Module,
    decoder: nn.Module,
    config: dict[str, Any],
    train_state: dict[str, Any],
    epoch: int,
    best: bool = False,
) -> Path:
    """Write checkpoint ``epoch-NNNN`` completely, then point ``latest`` (and ``best``) at it."""
    root = run_dir / CHECKPOINT_DIR
    name = f"epoch-{epoch:04d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    meta = {"arch": str(config["arch"]), "latent_dim": str(config["latent_dim"])}
    _save_safetensors(_cpu_state(encoder), tmp / ENCODER_FILE, {**meta, "role": "encoder"})
    _save_safetensors(_cpu_state(decoder), tmp / DECODER_FILE, {**meta, "role": "decoder"})
    atomic.write_json(tmp / CONFIG_FILE, config)
    torch.save(train_state, tmp / STATE_FILE)
    for f in tmp.iterdir():
        atomic.fsync_file(f)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic.fsync_dir(root)
    atomic.write_json(root / "latest.json", {"dir": name, "epoch": epoch})
    if best:
        atomic.write_json(root / "best.json", {"dir": name, "epoch": epoch})
    _prune(root)
    return final


def _save_safetensors(
    tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """Like safetensors' ``save_file``, but byte-for-byte reproducible: safetensors keeps the
    metadata in a Rust HashMap, so its key order in the JSON header (and thus the file's
    bytes) changes from call to call. The header is rewritten with sorted keys."""
    blob = save(tensors, metadata=metadata)
    n = int.from_bytes(blob[:8], "little")
    header = json.dumps(json.loads(blob[8 : 8 + n]), sort_keys=True, separators=(",", ":"))
    head = header.encode()
    head += b" " * (-len(head) % 8)  # the data stays 8-byte aligned, as safetensors writes it
    path.write_bytes(len(head).to_bytes(8, "little") + head + blob[8 + n :])


def _cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def _pointer(root: Path, which: str) -> str | None:
    """The checkpoint folder that ``which.json`` names: a plain folder name inside ``root``
    (never a path leading elsewhere, e.g. into another run)."""
    path = root / f"{which}.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is unreadable: {exc}") from None
    name = data.get("dir") if isinstance(data, dict) else None
    if not isinstance(name, str):
        raise CheckpointError(f'{path} must hold {{"dir": "<checkpoint folder name>", ...}}')
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise CheckpointError(
            f"{path} names {name!r}; it must name a checkpoint folder inside {root}"
        )
    target = (root / name).resolve()
    if target.parent != root.resolve():
        raise CheckpointError(f"{path} names {name!r}, which resolves outside {root}")
    epoch = data.get("epoch")
    if epoch is not None and (type(epoch) is not int or epoch < 0):
        raise CheckpointError(f"{path}: epoch must be an integer >= 0, got {epoch!r}")
    return name


def _prune(root: Path) -> None:
    """Keep only the folders that latest.json and best.json point at."""
    keep = {_pointer(root, "latest"), _pointer(root, "best")}
    for d in root.iterdir():
        if d.is_dir() and d.name not in keep:
            shutil.rmtree(d, ignore_errors=True)


def resolve_checkpoint(path: str | Path, which: str = "best") -> Path:
    """Accept a run directory (using ``which`` then ``latest``) or a checkpoint folder."""
    path = Path(path)
    if (path / ENCODER_FILE).exists() or (path / CONFIG_FILE).exists():
        return path
    root = path / CHECKPOINT_DIR
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    for name in (which, "latest"):
        d = _pointer(root, name)
        if d is not None:
            return root / d
    raise CheckpointError(
        f"{path} holds no checkpoint (expected {ENCODER_FILE}, {DECODER_FILE} and "
        f"{CONFIG_FILE}, or a run directory with {CHECKPOINT_DIR}/latest.json)"
    )


def read_config(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"missing checkpoint config {path}")
    try:
        config = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    for key in ("arch", "latent_dim"):
        if key not in config:
            raise CheckpointError(f"{path} lacks the key {key!r}")
    return config


def _read_weights(path: Path, role: str) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"missing {role} checkpoint {path}")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from None


def _check_keys(module: nn.Module, state: dict[str, torch.Tensor], path: Path, role: str) -> None:
    own = module.state_dict()
    missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or extra:
        raise CheckpointError(
            f"{path} does not match the {role} that {CONFIG_FILE} describes: config does not "
            f"match the weights (missing {missing or 'none'}, unexpected {extra or 'none'})"
        )


def _load_into(module: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    own = module.state_dict()
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"{path}: {key} has shape {tuple(tensor.shape)} but {CONFIG_FILE} "
                f"implies {tuple(own[key].shape)}"
            )
    module.load_state_dict(state, strict=True)


def load_checkpoint(path: str | Path, which: str = "best") -> Checkpoint:
    """Rebuild the encoder and decoder that a checkpoint's config records (through the
    architecture registry) and load its weights into them, strictly."""
    ckpt_dir = resolve_checkpoint(path, which)
    config = read_config(ckpt_dir)
    try:
        arch = get_architecture(config["arch"])
        modules = dict(zip(ROLES, build_modules(config), strict=True))
    except ValueError as exc:
        raise CheckpointError(f"{ckpt_dir / CONFIG_FILE}: {exc}") from None
    files = {"encoder": ckpt_dir / ENCODER_FILE, "decoder": ckpt_dir / DECODER_FILE}
    states = {role: _read_weights(files[role], role) for role in ROLES}
    for role in ROLES:
        _check_keys(modules[role], states[role], files[role], role)
    enc_l, dec_l = (arch.latent_size(role, states[role]) for role in ROLES)
    if enc_l is not None and dec_l is not None and enc_l != dec_l:
        raise CheckpointError(
            f"{ckpt_dir}: encoder latent size {enc_l} differs from decoder latent size {dec_l}"
        )
    for role in ROLES:
        _load_into(modules[role], states[role], files[role])
    return Checkpoint(modules["encoder"].eval(), modules["decoder"].eval(), config, ckpt_dir)


def load_train_state(ckpt_dir: Path) -> dict[str, Any]:
    path = ckpt_dir / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"missing training state {path}; cannot resume")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise CheckpointError(
            f"{path} is not a loadable training state ({_one_line(exc)}); training states are "
            "only loaded with torch.load(weights_only=True)"
        ) from None


def _one_line(exc: Exception) -> str:
    """The gist of a torch.load error, whose message spans many lines and suggests
    retrying with weights_only=False (never do that here)."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    text = " ".join(text.split("Check the documentation", 1)[0].split())
    gist = text.split(". ", 1)[0].rstrip(".")
    return f"{type(exc).__name__}: {gist}" if gist else type(exc).__name__
