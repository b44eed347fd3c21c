"""The wheel, installed alone in a fresh virtual environment: bare (`pip install vae-onnx`),
every command says in one line which extra to install; with the `cpu` extra, no torch, no
onnx, and the same outputs as the in-repo runtime."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_runtime import VAE

REPO = Path(__file__).resolve().parents[1]
CONSTRAINTS = str(REPO / "constraints.txt")
pytestmark = pytest.mark.slow


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the wheel, installed bare (no extra)."""
    if not (REPO / "artifacts" / "mnist-conv-z20" / "manifest.json").is_file():
        pytest.fail("artifacts/mnist-conv-z20 is missing: the wheel ships it as the default model")
    root = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(REPO)])
    (wheel,) = (root / "dist").glob("vae_onnx-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "-c", CONSTRAINTS, str(wheel)])
    return venv


def _has_ort(venv: Path) -> bool:
    code = "import importlib.util as u; print(u.find_spec('onnxruntime') is not None)"
    return run([str(venv / "bin" / "python"), "-c", code]).stdout.strip() == "True"


@pytest.fixture
def bare_venv(venv: Path) -> Path:
    """The wheel as `pip install vae-onnx` leaves it: no ONNX Runtime, no torch."""
    if _has_ort(venv):
        run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-q", "-y", "onnxruntime"])
    return venv


@pytest.fixture
def wheel_venv(venv: Path) -> Path:
    """The wheel with its `cpu` extra (`pip install 'vae-onnx[cpu]'`)."""
    if not _has_ort(venv):
        run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "-c",
                CONSTRAINTS,
                "onnxruntime",
            ]
        )
    return venv


def refused(cmd: list[str], *words: str, **kw) -> str:
    """``cmd`` exits 2 with one line on stderr holding ``words`` (no traceback)."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert proc.returncode == 2, f"{cmd}: {proc.returncode}\n{proc.stdout}{proc.stderr}"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_bare_install_says_which_extra_to_install(bare_venv: Path, tmp_path: Path) -> None:
    bin_ = bare_venv / "bin"
    for flag in ("--help", "--version"):
        run([str(bin_ / "vae-run"), flag], cwd=tmp_path)
    for command in (
        ["info"],
        ["generate", "--n", "2", "--out", str(tmp_path / "g.png")],
        ["embed", str(REPO / "docs" / "figures"), "--out", str(tmp_path / "e.npy")],
    ):
        refused(
            [str(bin_ / "vae-run"), *command],
            "pip install 'vae-onnx[cpu]'",
            "vae-onnx[gpu]",
            cwd=tmp_path,
        )
    assert not list(tmp_path.iterdir())  # nothing written, nothing left
    code = (
        "import vae_runtime\n"
        "try:\n"
        "    vae_runtime.VAE()\n"
        "except vae_runtime.VAEError as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    out = run([str(bin_ / "python"), "-c", code], cwd=tmp_path).stdout
    assert out.startswith("InputError ") and "pip install 'vae-onnx[cpu]'" in out, out


def test_training_tools_without_torch_say_which_extra(bare_venv: Path, tmp_path: Path) -> None:
    bin_ = bare_venv / "bin"
    for cmd in (
        ["vae-train", "--help"],
        ["vae-train", "--out", "run"],
        ["vae-export", "run", "--out", "m"],
        ["vae-export", "quantize", "m"],
    ):
        refused(
            [str(bin_ / cmd[0]), *cmd[1:]],
            f"{cmd[0]} needs the 'train' extra",
            "pip install 'vae-onnx[train]' 'torch==2.13.0'",
            cwd=tmp_path,
        )
    run([str(bin_ / "vae-export"), "--help"], cwd=tmp_path)  # its help needs no torch


def test_wheel_installs_without_torch_or_onnx(wheel_venv: Path) -> None:
    proc = run([str(wheel_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"])
    installed = {line.split("==")[0].lower() for line in proc.stdout.splitlines()}
    assert "vae-onnx" in installed and "onnxruntime" in installed
    assert not installed & {"torch", "onnx", "onnxscript", "safetensors", "pooch"}
    code = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('onnx'))"
    assert run([str(wheel_venv / "bin" / "python"), "-c", code]).stdout.split() == ["None"] * 2


def test_wheel_cli_matches_in_repo_runtime(wheel_venv: Path, tmp_path: Path, data_dir) -> None:
    from PIL import Image

    from vae_format.idx import iter_idx_images

    images = next(iter_idx_images(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", chunk=12))
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    env = {k: v for k, v in os.environ.items() if k != "VAE_ONNX_MODEL"}
    bin_ = wheel_venv / "bin"
    # Run outside the repository so that nothing can be picked up from the checkout.
    vae_run = [str(bin_ / "vae-run")]
    outputs = ["--out", str(tmp_path / "g.png"), "--npy", str(tmp_path / "g.npy")]
    generate = [*vae_run, "generate", "--n", "16", "--seed", "3", "--threads", "1", *outputs]
    run(generate, cwd=tmp_path, env=env)
    embed = [*vae_run, "embed", str(folder), "--threads", "1", "--out", str(tmp_path / "e.npy")]
    run(embed, cwd=tmp_path, env=env)
    info = run([str(bin_ / "vae-run"), "info", "--json"], cwd=tmp_path, env=env).stdout
    assert "site-packages" in info, "the wheel's runtime must load its own bundled model"

    here = VAE(threads=1)
    assert here.info["name"] == "mnist-conv-z20"
    np.testing.assert_array_equal(np.load(tmp_path / "g.npy"), here.generate(16, seed=3))
    files = sorted(folder.glob("*.png"))
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), here.embed(files))


def test_wheel_default_model_carries_its_variants(wheel_venv: Path, tmp_path: Path) -> None:
    code = (
        "import json, numpy as np; from vae_runtime import VAE\n"
        "z = np.zeros((2, 20), np.float32)\n"
        "out = {v: VAE(variant=v, threads=1).decode(z).tolist() for v in ('int8', 'fp16')}\n"
        "print(json.dumps(out))"
    )
    env = {k: v for k, v in os.environ.items() if k != "VAE_ONNX_MODEL"}
    out = run([str(wheel_venv / "bin" / "python"), "-c", code], cwd=tmp_path, env=env).stdout
    for variant, images in json.loads(out).items():
        here = VAE(variant=variant, threads=1).decode(np.zeros((2, 20), np.float32))
        np.testing.assert_allclose(np.array(images, np.float32), here, rtol=0, atol=1e-6)


def test_wheel_ships_every_model_by_name_under_40_mb(wheel_venv: Path, tmp_path: Path) -> None:
    """Each model directory of artifacts/ (with its variants) loads by name from the
    installed wheel and matches the in-repo one; the wheel stays under 40 MB."""
    (wheel,) = (wheel_venv.parent / "dist").glob("vae_onnx-*.whl")
    assert wheel.stat().st_size < 40e6, f"wheel is {wheel.stat().st_size / 1e6:.1f} MB"
    names = sorted(p.parent.name for p in (REPO / "artifacts").glob("*/manifest.json"))
    assert len(names) >= 4
    code = (
        "import json, sys, numpy as np; from vae_runtime import VAE\n"
        "out = {}\n"
        "for name in sys.argv[1:]:\n"
        "    for variant in (None, 'int8'):\n"
        "        v = VAE(name, variant=variant, threads=1)\n"
        "        assert 'site-packages' in v.info['model_dir'], v.info['model_dir']\n"
        "        z = np.full((2, v.latent_dim), 0.5, np.float32)\n"
        "        out[f'{name}/{variant}'] = v.decode(z).tolist()\n"
        "print(json.dumps(out))"
    )
    env = {k: v for k, v in os.environ.items() if k != "VAE_ONNX_MODEL"}
    python = str(wheel_venv / "bin" / "python")
    out = run([python, "-c", code, *names], cwd=tmp_path, env=env).stdout
    decoded = json.loads(out)
    assert len(decoded) == 2 * len(names)
    for key, images in decoded.items():
        name, variant = key.split("/")
        here = VAE(REPO / "artifacts" / name, variant=None if variant == "None" else variant)
        z = np.full((2, here.latent_dim), 0.5, np.float32)
        np.testing.assert_allclose(np.array(images, np.float32), here.decode(z), atol=1e-6)
    listed = run([str(wheel_venv / "bin" / "vae-run"), "models", "--json"], cwd=tmp_path, env=env)
    assert sorted(m["name"] for m in json.loads(listed.stdout)) == names
