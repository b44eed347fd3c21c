"""The training state a resume reads (``train_state.pt``), checked field by field.

``torch.load(weights_only=True)`` only guarantees that nothing was unpickled; a damaged or
hand-edited state could still hold any value of the allowed types. Every field is held to
what the trainer writes before any of it is used, so a bad state is refused with one line
naming the file instead of a traceback, or a run that silently trains nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vae_train.checkpoint import CheckpointError


@dataclass
class TrainState:
    optimizer: dict[str, Any]
    epoch: int
    best_val: float
    history: list[dict[str, Any]]
    raw: dict[str, dict[str, torch.Tensor]]  # role -> raw weights (EMA runs only)
    ema_steps: int


def _is_int(value: object) -> bool:
    return type(value) is int


def _check_tensors(
    value: object, like: dict[str, torch.Tensor], what: str, bad: list[str]
) -> dict[str, torch.Tensor]:
    if not isinstance(value, dict) or set(value) != set(like):
        bad.append(f"{what} must hold exactly the tensors {sorted(like)}")
        return {}
    for key, ref in like.items():
        t = value[key]
        if not isinstance(t, torch.Tensor) or t.shape != ref.shape or t.dtype != ref.dtype:
            bad.append(f"{what}[{key!r}] must be a {ref.dtype} tensor of shape {tuple(ref.shape)}")
            return {}
    return value


def _check_optimizer(value: object, optimizer: torch.optim.Optimizer, bad: list[str]) -> None:
    """The layout ``optimizer.state_dict()`` has, with per-parameter tensors of the right
    shapes (Adam's moments), so that neither loading nor the next step can fail."""
    own = optimizer.state_dict()
    if not isinstance(value, dict) or set(value) != {"state", "param_groups"}:
        bad.append("optimizer must be an optimizer state (keys 'state' and 'param_groups')")
        return
    groups = value["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(own["param_groups"]):
        bad.append(f"optimizer.param_groups must be a list of {len(own['param_groups'])}")
        return
    for group, ref in zip(groups, own["param_groups"], strict=True):
        if not isinstance(group, dict) or group.get("params") != ref["params"]:
            bad.append("optimizer.param_groups does not describe this model's parameters")
            return
        odd = [k for k, v in ref.items() if type(group.get(k)) is not type(v)]
        if odd:
            bad.append(f"optimizer.param_groups[{odd[0]!r}] must be a {type(ref[odd[0]]).__name__}")
            return
    params = [p for g in optimizer.param_groups for p in g["params"]]
    states = value["state"]
    if not isinstance(states, dict) or not set(states) <= set(range(len(params))):
        bad.append("optimizer.state must map parameter indices to their state")
        return
    for index, entry in states.items():
        if not isinstance(entry, dict):
            bad.append(f"optimizer.state[{index}] must be a dict")
            return
        for name, t in entry.items():
            shape = () if name == "step" else params[index].shape
            if not isinstance(t, torch.Tensor) or t.shape != shape or not t.is_floating_point():
                bad.append(f"optimizer.state[{index}][{name!r}] must be a tensor of shape {shape}")
                return


def check_train_state(
    state: object,
    path: Path,
    *,
    optimizer: torch.optim.Optimizer,
    raw_modules: dict[str, nn.Module] | None,
    checkpoint_epoch: object,
) -> TrainState:
    """Validate a loaded ``train_state.pt`` against the trainer that will resume from it.

    ``raw_modules`` (EMA runs) are the modules whose raw weights the state carries;
    ``checkpoint_epoch`` is the epoch the checkpoint's config.json records."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is not a training state (a {type(state).__name__})")
    bad: list[str] = []
    epoch = state.get("epoch")
    if not _is_int(epoch) or epoch < 0:
        bad.append(f"epoch must be an integer >= 0, got {epoch!r}")
    elif epoch != checkpoint_epoch:
        bad.append(f"epoch {epoch} differs from config.json's epoch {checkpoint_epoch!r}")
    best = state.get("best_val")
    if type(best) not in (int, float) or math.isnan(best):
        bad.append(f"best_val must be a number, got {best!r}")
    history = state.get("history")
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        bad.append("history must be a list of epoch records")
    elif _is_int(epoch) and [r.get("epoch") for r in history] != list(range(1, len(history) + 1)):
        bad.append("history must hold one record per epoch, numbered from 1")
    elif _is_int(epoch) and len(history) != epoch:
        bad.append(f"history holds {len(history)} epochs, but the state is at epoch {epoch}")
    _check_optimizer(state.get("optimizer"), optimizer, bad)
    raw: dict[str, dict[str, torch.Tensor]] = {}
    steps = state.get("ema_steps", 0)
    if raw_modules is not None:
        for role, module in raw_modules.items():
            raw[role] = _check_tensors(
                state.get(f"raw_{role}"), module.state_dict(), f"raw_{role}", bad
            )
        if not _is_int(steps) or steps < 0:
            bad.append(f"ema_steps must be an integer >= 0, got {steps!r}")
    if bad:
        raise CheckpointError(f"{path}: {bad[0]}; not a training state of this run")
    return TrainState(state["optimizer"], epoch, float(best), history, raw, int(steps))
