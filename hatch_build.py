"""Wheel build hook: every model directory under artifacts/ ships in the wheel, as
vae_runtime/models/<name>/, with exactly the files its manifest.json lists (so a model
retrained, re-exported or added under artifacts/ ships without editing this project)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

ARTIFACTS = "artifacts"
TARGET = "vae_runtime/models"


def model_files(root: Path) -> dict[str, str]:
    """Source path -> path in the wheel, for every artifacts/<name>/manifest.json."""
    mapping = {}
    for manifest in sorted((root / ARTIFACTS).glob("*/manifest.json")):
        folder = manifest.parent
        listed = json.loads(manifest.read_text(encoding="utf-8"))["files"]
        for rel in ["manifest.json", *sorted(listed)]:
            mapping[str(folder / rel)] = f"{TARGET}/{folder.name}/{rel}"
    return mapping


class ModelsHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name == "wheel":
            build_data["force_include"].update(model_files(Path(self.root)))
