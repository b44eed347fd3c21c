"""ONNX Runtime stays quiet and writes nothing outside the outputs on a locked-down
machine (issue 13, item 15): ORT 1.29+ has telemetry on Linux that persists a device ID
and an event store under ~/.cache/Microsoft and warns, in colour, on every run where home
is not writable. vae_runtime sets ORT_DISABLE_TELEMETRY=1 (ORT's documented full opt-out)
before onnxruntime is imported, unless the user has set it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

VAE_RUN = str(Path(sys.executable).parent / "vae-run")


def _env(home: Path, **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("ORT_", "XDG_"))}
    return {**keep, "HOME": str(home), "NO_COLOR": "1", **extra}


def _generate(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    out = tmp_path / "out" / "x.npy"
    cmd = [VAE_RUN, "generate", "--n", "2", "--npy", str(out), "--threads", "1"]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)


def test_unwritable_home_gives_no_warning(tmp_path: Path) -> None:
    """A home that cannot hold ~/.cache (a regular file: even root cannot create in it)."""
    home = tmp_path / "home-is-a-file"
    home.write_text("")
    proc = _generate(tmp_path, _env(home))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr


def test_writable_home_stays_empty(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    proc = _generate(tmp_path, _env(home))
    assert proc.returncode == 0, proc.stderr
    assert list(home.rglob("*")) == []


def test_the_users_own_setting_is_respected(tmp_path: Path) -> None:
    """The control: with telemetry explicitly allowed, this ORT does write under home, so
    the two tests above can fail."""
    home = tmp_path / "home"
    home.mkdir()
    proc = _generate(tmp_path, _env(home, ORT_DISABLE_TELEMETRY="0"))
    assert proc.returncode == 0, proc.stderr
    written = [p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file()]
    if not written:
        pytest.skip("this onnxruntime has no telemetry to turn off")
    assert any(p.startswith(".cache/Microsoft") for p in written), written
