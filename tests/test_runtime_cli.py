"""vae-run: every subcommand against the Python API on a real exported model, the one-line
errors with exit status 2, atomic outputs, bounded memory on a 100k-image IDX stream, and a
process in which torch and onnx cannot be imported."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_runtime import VAE, make_grid
from vae_runtime.cli import SUBCOMMANDS, main

L = 8
RNG = np.random.default_rng(2)
DIGITS = RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8)


@pytest.fixture(scope="module")
def model(model_dir_factory) -> Path:
    return model_dir_factory(arch="conv", latent_dim=L)


@pytest.fixture(scope="module")
def vae(model) -> VAE:
    return VAE(model, threads=1)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys, *argv) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return out


def fails(capsys, *argv, words: str = "") -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vae-run: error: "), err
    assert "Traceback" not in err
    assert words in lines[0], lines[0]
    return lines[0]


def mnist_reference(data_dir: Path) -> np.ndarray:
    path = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"  # parsed by hand, independently
    return np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=16).reshape(
        -1, 28, 28
    )


# ---- commands -------------------------------------------------------------------------------


def test_generate_writes_grid_and_npy(capsys, model, vae, tmp_path):
    ok(
        capsys,
        "generate",
        "--model",
        model,
        "--n",
        10,
        "--seed",
        3,
        "--out",
        tmp_path / "g.png",
        "--npy",
        tmp_path / "g.npy",
        "--nrow",
        5,
    )
    images = np.load(tmp_path / "g.npy")
    np.testing.assert_allclose(images, vae.generate(10, seed=3), atol=1e-6)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    np.testing.assert_array_equal(grid, make_grid(images, nrow=5))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npy", "g.png"]


def test_generate_needs_an_output(capsys, model):
    fails(capsys, "generate", "--model", model, words="nothing to write")


def test_embed_image_folder_npy_and_idx(capsys, model, vae, tmp_path, data_dir):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, d in enumerate(DIGITS):
        Image.fromarray(d).save(folder / f"{i:02d}.png")
    np.save(tmp_path / "digits.npy", DIGITS)
    expected = vae.embed(DIGITS)
    for source in (folder, tmp_path / "digits.npy"):
        ok(
            capsys,
            "embed",
            source,
            "--model",
            model,
            "--out",
            tmp_path / "e.npy",
            "--batch-size",
            5,
        )
        np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-5)
    ok(capsys, "embed", folder / "03.png", "--model", model, "--out", tmp_path / "one.npy")
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), expected[3:4], atol=1e-5)

    gz = data_dir / "mnist" / "t10k-images-idx3-ubyte.gz"
    out = ok(capsys, "embed", gz, "--model", model, "--out", tmp_path / "m.npy", "--no-progress")
    emb = np.load(tmp_path / "m.npy")
    assert emb.shape == (10000, L) and emb.dtype == np.float32 and "10000 embeddings" in out
    ref = mnist_reference(data_dir)
    np.testing.assert_allclose(emb[::997], vae.embed(ref[::997]), atol=1e-5)


def test_embed_folder_with_a_bad_file(capsys, model, tmp_path):
    folder = tmp_path / "digits"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(DIGITS[i]).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("hello")
    fails(capsys, "embed", folder, "--model", model, "--out", tmp_path / "e.npy", words="notes.txt")
    assert not (tmp_path / "e.npy").exists()
    code, _, err = run(
        capsys, "embed", folder, "--model", model, "--out", tmp_path / "e.npy", "--skip-bad"
    )
    assert code == 0 and "skipped 1" in err and "notes.txt" in err
    assert np.load(tmp_path / "e.npy").shape == (3, L)
    # The sidecar names the file of each row: the skipped one has no row.
    rows = [json.loads(line) for line in (tmp_path / "e.sources.jsonl").read_text().splitlines()]
    assert [Path(r["source"]).name for r in rows] == ["0.png", "1.png", "2.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits", "e.npy", "e.sources.jsonl"]


def test_reconstruct(capsys, model, vae, tmp_path):
    np.save(tmp_path / "d.npy", DIGITS)
    ok(
        capsys,
        "reconstruct",
        tmp_path / "d.npy",
        "--model",
        model,
        "--n",
        10,
        "--out",
        tmp_path / "r.png",
        "--npy",
        tmp_path / "r.npy",
        "--batch-size",
        4,
    )
    recon = np.load(tmp_path / "r.npy")
    np.testing.assert_allclose(recon, vae.reconstruct(DIGITS[:10]), atol=1e-5)
    grid = np.asarray(Image.open(tmp_path / "r.png"))
    x = DIGITS[:10, None] / np.float32(255)
    blank = np.zeros((6, 1, 28, 28), np.float32)  # the short row is padded: no mixed rows
    pairs = np.concatenate([x[:8], recon[:8], x[8:], blank, recon[8:], blank])
    np.testing.assert_array_equal(grid, make_grid(pairs, nrow=8))


def test_interpolate(capsys, model, vae, tmp_path):
    Image.fromarray(DIGITS[0]).save(tmp_path / "a.png")
    Image.fromarray(DIGITS[1]).save(tmp_path / "b.png")
    ok(
        capsys,
        "interpolate",
        tmp_path / "a.png",
        tmp_path / "b.png",
        "--model",
        model,
        "--steps",
        6,
        "--out",
        tmp_path / "s.png",
        "--npy",
        tmp_path / "s.npy",
    )
    strip = np.load(tmp_path / "s.npy")
    np.testing.assert_allclose(strip, vae.interpolate(DIGITS[0], DIGITS[1], steps=6), atol=1e-5)
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (32, 6 * 30 + 2)
    np.save(tmp_path / "two.npy", DIGITS[:2])
    fails(
        capsys,
        "interpolate",
        tmp_path / "two.npy",
        tmp_path / "b.png",
        "--model",
        model,
        "--out",
        tmp_path / "x.png",
        words="exactly one image",
    )


def test_score(capsys, model, vae, tmp_path):
    np.save(tmp_path / "d.npy", DIGITS)
    out = ok(
        capsys,
        "score",
        tmp_path / "d.npy",
        "--model",
        model,
        "--k",
        3,
        "--seed",
        4,
        "--out",
        tmp_path / "s.npy",
        "--batch-size",
        5,
    )
    scores = np.load(tmp_path / "s.npy")
    np.testing.assert_allclose(scores, vae.score(DIGITS, k=3, seed=4), rtol=1e-6)
    assert f"{scores.mean():.4f}" in out and "12 images" in out
    out1 = ok(capsys, "score", tmp_path / "d.npy", "--model", model)
    assert f"{vae.score(DIGITS, seed=0).mean():.4f}" in out1 and "negative ELBO" in out1


def test_info(capsys, model, vae):
    facts = json.loads(ok(capsys, "info", "--model", model, "--json", "--threads", 1))
    assert facts == json.loads(json.dumps(vae.info))
    text = ok(capsys, "info", "--model", model, "--threads", 1)
    assert f"latent_dim: {L}" in text and "providers: " in text


def test_default_model_comes_from_the_environment(capsys, model, monkeypatch):
    monkeypatch.setenv("VAE_ONNX_MODEL", str(model))
    assert json.loads(ok(capsys, "info", "--json"))["model_dir"] == str(model)


# ---- errors ---------------------------------------------------------------------------------


def _tampered(model: Path, tmp_path: Path) -> Path:
    import shutil

    d = Path(shutil.copytree(model, tmp_path / "tampered"))
    data = bytearray((d / "decoder.onnx").read_bytes())
    data[-100] ^= 1
    (d / "decoder.onnx").write_bytes(bytes(data))
    return d


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["embed", "{tmp}/missing.png", "--out", "{tmp}/e.npy"], "missing.png: no such file"),
        (["embed", "{tmp}/bad.npy", "--out", "{tmp}/e.npy"], "3-channel"),
        (["embed", "{tmp}/nan.npy", "--out", "{tmp}/e.npy"], "NaN"),
        (["embed", "{tmp}/text.png", "--out", "{tmp}/e.npy"], "not an image file"),
        (
            ["generate", "--out", "{tmp}/g.png", "--model", "{tmp}/nomodel"],
            "model directory does not exist",
        ),
        (["generate", "--out", "{tmp}/g.png", "--model", "{tampered}"], "sha256"),
        (["generate", "--out", "{tmp}/g.jpg"], "PNG"),
        (["generate", "--out", "{tmp}/g.png", "--variant", "int8"], "no variant 'int8'"),
        (["info", "--device", "cuda"], "not available"),
        (["score", "{tmp}/empty", "--k", "2"], "holds no images"),
        (["generate", "--npy", "{tmp}/file.txt/sub/x.npy"], "file.txt"),
    ],
)
def test_user_errors_print_one_line_and_exit_2(capsys, model, tmp_path, argv, words):
    np.save(tmp_path / "bad.npy", np.zeros((2, 3, 28, 28), np.float32))
    np.save(tmp_path / "nan.npy", np.full((2, 28, 28), np.nan, np.float32))
    (tmp_path / "text.png").write_text("hello")
    (tmp_path / "file.txt").write_text("a file, not a folder")
    (tmp_path / "empty").mkdir()
    fmt = {"tmp": tmp_path, "tampered": _tampered(model, tmp_path)}
    args = [a.format(**fmt) for a in argv]
    if "--model" not in args:
        args += ["--model", str(model)]
    if (
        "cuda" in args
        and "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers()
    ):
        pytest.skip("CUDA is available here")
    fails(capsys, *args, words=words)


@pytest.mark.parametrize(
    "argv",
    [
        ["generate", "--n", "0", "--out", "g.png"],
        ["generate", "--n", "many"],
        ["generate", "--seed", "-1"],
        ["embed", "x.png", "--out", "e.npy", "--batch-size", "0"],
        ["info", "--device", "tpu"],
        ["frobnicate"],
        [],
        ["embed", "x.png"],
    ],
)
def test_usage_errors_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_failed_embed_leaves_no_partial_output(capsys, model, tmp_path, data_dir):
    """The stream breaks after 9000 images: the old output stays and no temp file is left."""
    raw = gzip.decompress((data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "cut-ubyte").write_bytes(raw[: 16 + 784 * 9000])
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw[: 16 + 784 * 9000], 1))
    (tmp_path / "e.npy").write_bytes(b"old")
    fails(
        capsys,
        "embed",
        tmp_path / "cut-ubyte",
        "--model",
        model,
        "--out",
        tmp_path / "e.npy",
        words="truncated",
    )
    fails(
        capsys,
        "embed",
        tmp_path / "cut.gz",
        "--model",
        model,
        "--out",
        tmp_path / "e.npy",
        words="truncated",
    )
    assert (tmp_path / "e.npy").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut-ubyte", "cut.gz", "e.npy"]


def test_subcommand_table_lists_every_runtime_command():
    names = [entry[0] for entry in SUBCOMMANDS]
    assert {"generate", "embed", "reconstruct", "interpolate", "score", "info"} <= set(names)
    assert len(names) == len(set(names))


# ---- separate processes ---------------------------------------------------------------------

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "onnx", "onnxscript", "vae_train", "vae_export"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Block())
    """
)


def test_runtime_and_cli_never_import_torch_or_onnx(model, tmp_path):
    np.save(tmp_path / "d.npy", DIGITS)
    Image.fromarray(DIGITS[0]).save(tmp_path / "a.png")
    code = BLOCKER + textwrap.dedent(
        f"""
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("the blocker does not work")
        import vae_runtime
        from vae_runtime.cli import main
        m, t = {str(model)!r}, {str(tmp_path)!r}
        steps = [
            ["generate", "--n", "8", "--out", t + "/g.png", "--npy", t + "/g.npy"],
            ["embed", t + "/d.npy", "--out", t + "/e.npy"],
            ["embed", t + "/a.png", "--out", t + "/e1.npy"],
            ["reconstruct", t + "/d.npy", "--out", t + "/r.png"],
            ["interpolate", t + "/a.png", t + "/a.png", "--out", t + "/i.png"],
            ["score", t + "/d.npy", "--k", "2"],
            ["info", "--json"],
        ]
        for argv in steps:
            assert main(argv + ["--model", m]) == 0, argv
        banned = ("torch", "onnx", "vae_train", "vae_export")
        bad = sorted(n for n in sys.modules if n.split(".")[0] in banned)
        assert not bad, bad
        print("clean")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("clean")


def test_console_script_exit_codes(model, tmp_path):
    exe = Path(sys.executable).parent / "vae-run"
    if not exe.exists():
        pytest.skip("vae-run is not installed in this environment")
    good = subprocess.run([exe, "info", "--model", model], capture_output=True, text=True)
    assert good.returncode == 0 and "latent_dim" in good.stdout
    bad = subprocess.run(
        [exe, "embed", tmp_path / "nope.png", "--out", tmp_path / "e.npy", "--model", model],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        f"vae-run: error: {tmp_path / 'nope.png'}: no such file or directory"
    ]
    piped = subprocess.run(
        f"'{exe}' info --model '{model}' | head -1", shell=True, capture_output=True, text=True
    )
    assert piped.stderr == "" and piped.stdout.startswith("name:")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_embed_100k_idx_images_in_bounded_memory(model_dir_factory, data_dir, tmp_path):
    """100k images (a raw IDX, 78 MB) stream through embed at well under 300 MB RSS."""
    mlp = model_dir_factory(arch="mlp", latent_dim=5)
    images = mnist_reference(data_dir)
    path = tmp_path / "big-ubyte"
    with open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (100_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        for _ in range(10):
            f.write(images.tobytes())
    code = textwrap.dedent(
        f"""
        import sys
        from vae_runtime.cli import main
        rc = main(["embed", {str(path)!r}, "--out", {str(tmp_path / "e.npy")!r},
                   "--model", {str(mlp)!r}, "--batch-size", "512", "--threads", "1"])
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(rc, int(status.split()[0]) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[-2] == "0"
    assert int(out[-1]) < 200, f"peak RSS {out[-1]} MB"
    emb = np.load(tmp_path / "e.npy", mmap_mode="r")
    assert emb.shape == (100_000, 5)
    check = VAE(mlp, threads=1).embed(images[:50])
    np.testing.assert_allclose(emb[50_000:50_050], check, atol=1e-5)
    np.testing.assert_allclose(emb[99_950:], VAE(mlp, threads=1).embed(images[-50:]), atol=1e-5)
    del emb
    os.remove(tmp_path / "e.npy")
