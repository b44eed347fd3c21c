"""Pipelines (issue 14): outputs joined to their inputs, folders in natural order, pipes,
bulk and shard-stable generation, reconstruction layout, models by name, similarity.
Each behaviour through the CLI in a subprocess (exit codes, files, contents, order) and
through the API, on a shipped model (the MLP: the fastest to load)."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vae_format.grid import make_grid, to_pixels
from vae_format.idx import iter_idx_images
from vae_runtime import VAE, InputError
from vae_runtime.folders import natural_key
from vae_runtime.generation import BLOCK
from vae_runtime.names import data_name, display_name
from vae_runtime.similarity import cosine_similarity, similar

MODEL = "mnist-mlp-z20"
L = 20


@pytest.fixture(scope="module")
def vae() -> VAE:
    return VAE(MODEL, threads=1)


@pytest.fixture(scope="module")
def digits(data_dir) -> np.ndarray:
    return next(iter_idx_images(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", chunk=64))


def cli(*argv, stdin: bytes | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """vae-run in a fresh process (bytes in and out)."""
    cmd = [sys.executable, "-m", "vae_runtime.cli", *map(str, argv)]
    run_env = {**os.environ, **(env or {})}
    return subprocess.run(cmd, input=stdin, capture_output=True, env=run_env, timeout=600)


def ok(*argv, **kw) -> subprocess.CompletedProcess:
    proc = cli(*argv, **kw)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return proc


def fails(*argv, words: str, **kw) -> str:
    proc = cli(*argv, **kw)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vae-run: error: "), err
    assert words in lines[0], lines[0]
    return lines[0]


def save_digits(folder: Path, images: np.ndarray, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for image, name in zip(images, names, strict=True):
        Image.fromarray(image).save(folder / name, format="PNG")
        paths.append(folder / name)
    return paths


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- folders: order, skipped files, junk, subfolders ----------------------------------------


def test_natural_order_key():
    names = ["img10.png", "img2.png", "IMG1.png", "img1.png", "a", "img02.png"]
    assert sorted(names, key=natural_key) == [
        "a",
        "IMG1.png",
        "img1.png",
        "img02.png",  # equal numbers: the raw text decides
        "img2.png",
        "img10.png",
    ]


@pytest.fixture
def mixed(tmp_path, digits) -> Path:
    """img1, img2, img10 (natural order differs from string order), a bad file, junk,
    a hidden file and a subfolder with one more image."""
    folder = tmp_path / "mixed"
    save_digits(folder, digits[:3], ["img10.png", "img2.png", "img1.png"])
    save_digits(folder / "sub", digits[3:4], ["img3.png"])
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0junk")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return folder


def test_folder_embeds_in_natural_order_with_every_format(mixed, vae, digits, tmp_path):
    out = tmp_path / "out"
    outs = [out / f"e.{ext}" for ext in ("npy", "npz", "jsonl", "csv", "parquet")]
    if not _has_pyarrow():
        outs.pop()
    args = ["embed", mixed, "--model", MODEL, "--skip-bad", "--threads", 1]
    proc = ok(*args, *[a for o in outs for a in ("--out", o)])
    err = proc.stderr.decode()
    assert "skipped 1 unreadable file(s)" in err and "broken.png" in err
    assert "Thumbs.db" in err and "ignored 2" in err  # Thumbs.db and .DS_Store
    assert "did not read 1 subfolder(s)" in err and "sub" in err
    stdout = proc.stdout.decode()
    assert "embedded 3 of 4 images" in stdout

    order = ["img1.png", "img2.png", "img10.png"]  # digits[2], digits[1], digits[0]
    expected = vae.embed(digits[[2, 1, 0]])
    np.testing.assert_allclose(np.load(out / "e.npy"), expected, atol=1e-6)
    assert [Path(r["source"]).name for r in jsonl(out / "e.sources.jsonl")] == order

    npz = np.load(out / "e.npz")
    assert [Path(s).name for s in npz["source"]] == order
    np.testing.assert_array_equal(npz["index"], [0, 0, 0])
    np.testing.assert_allclose(npz["embedding"], expected, atol=1e-6)

    rows = jsonl(out / "e.jsonl")  # every input, the skipped one included, in input order
    assert [Path(r["source"]).name for r in rows] == ["broken.png", *order]
    assert rows[0]["status"] == "skipped" and rows[0]["embedding"] is None
    assert "broken.png" in rows[0]["error"]
    got = np.array([r["embedding"] for r in rows[1:]], np.float32)
    np.testing.assert_array_equal(got, np.load(out / "e.npy"))  # 9 digits read back exactly

    with open(out / "e.csv", newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0][:5] == ["source", "index", "status", "error", "embedding_0"]
    assert len(table[0]) == 4 + L and len(table) == 5
    assert table[1][2] == "skipped" and table[1][4:] == [""] * L
    np.testing.assert_array_equal(np.array([r[4:] for r in table[2:]], np.float32), got)

    if _has_pyarrow():
        import pyarrow.parquet as pq

        t = pq.read_table(out / "e.parquet")
        assert t.column_names == ["source", "index", "status", "error", "embedding"]
        kind = t.schema.field("embedding").type  # a fixed-size list of L float32
        assert (kind.list_size, str(kind.value_type)) == (L, "float")
        emb = t.column("embedding").to_pylist()
        assert emb[0] is None
        np.testing.assert_array_equal(np.array(emb[1:], np.float32), got)


def test_recursive_reads_subfolders_and_api_agrees(mixed, vae, digits, tmp_path):
    proc = ok("embed", mixed, "-r", "--skip-bad", "--model", MODEL, "--out", tmp_path / "e.jsonl")
    assert "did not read" not in proc.stderr.decode()
    rows = [r for r in jsonl(tmp_path / "e.jsonl") if r["status"] == "ok"]
    names = [Path(r["source"]).relative_to(mixed).as_posix() for r in rows]
    assert names == ["img1.png", "img2.png", "img10.png", "sub/img3.png"]
    records = list(vae.embed_files(mixed, recursive=True, skip_bad=True))
    assert [r.source for r in records] == [data_name(mixed / "broken.png")] + [
        r["source"] for r in rows
    ]
    assert records[0].embedding is None and "broken.png" in records[0].error
    np.testing.assert_allclose(
        np.stack([r.embedding for r in records[1:]]), vae.embed(digits[[2, 1, 0, 3]]), atol=1e-6
    )


def test_bad_file_fails_the_run_without_skip_bad(mixed, tmp_path):
    fails(
        "embed",
        mixed,
        "--model",
        MODEL,
        "--out",
        tmp_path / "e.jsonl",
        words="broken.png: not an image file",
    )
    assert not (tmp_path / "e.jsonl").exists()


def test_unknown_output_extension_is_an_error(mixed, tmp_path):
    fails(
        "embed",
        mixed,
        "--model",
        MODEL,
        "--skip-bad",
        "--out",
        tmp_path / "e.txt",
        words="unknown output format '.txt'",
    )
    fails(
        "embed",
        mixed,
        "--model",
        MODEL,
        "--skip-bad",
        "--out",
        tmp_path / "e.csv",
        "--format",
        "npy",
        words="--format applies to --out - only",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed"]


def test_csv_output_is_csv_not_npy(mixed, tmp_path):
    ok("embed", mixed, "--model", MODEL, "--skip-bad", "--out", tmp_path / "e.csv")
    assert not (tmp_path / "e.csv").read_bytes().startswith(b"\x93NUMPY")
    assert (tmp_path / "e.csv").read_text().startswith("source,index,status,error,")


# ---- names that are not text ------------------------------------------------------------


def test_display_and_data_names_escape_what_a_terminal_cannot_take():
    raw = os.fsdecode(b"a\xffb\nc\x1b[31m.png")
    assert display_name(raw) == "a\\xffb\\nc\\x1b[31m.png"
    assert data_name(raw) == "a\\xffb\nc\x1b[31m.png"  # newline kept: formats quote it
    data_name(raw).encode("utf-8")  # valid UTF-8 for JSON, CSV and Parquet
    assert display_name("héllo wörld.png") == "héllo wörld.png"


@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses non-UTF-8 file names")
def test_odd_file_names_under_strict_utf8_stdout(tmp_path, digits):
    folder = tmp_path / "odd"
    folder.mkdir()
    good = os.fsdecode(b"ok\xfe\n.png")  # a non-UTF-8 byte and a newline in one name
    Image.fromarray(digits[0]).save(os.path.join(folder, good), format="PNG")
    with open(os.path.join(folder, os.fsdecode(b"bad\xff\nname.png")), "wb") as f:
        f.write(b"not an image")
    strict = {"PYTHONIOENCODING": "utf-8:strict", "LC_ALL": "C.UTF-8"}
    out = tmp_path / "e.jsonl"
    for extra in ([], ["--json"], ["-v"]):
        proc = ok("embed", folder, "--model", MODEL, "--skip-bad", "--out", out, *extra, env=strict)
        err, stdout = proc.stderr.decode("utf-8"), proc.stdout.decode("utf-8")
        assert "Traceback" not in err
        if not extra or extra == ["-v"]:
            listing = err.splitlines()
            names = [line.split(": ")[0] for line in listing]
            assert names[1] == f"  {folder}/bad\\xff\\nname.png"
            assert len(listing) == 2  # the count line and one line for the one file
        if extra == ["--json"]:
            summary = json.loads(stdout)
            assert summary["skipped"][0]["file"].endswith("bad\\xff\nname.png")
    rows = jsonl(out)
    assert [r["status"] for r in rows] == ["skipped", "ok"]
    assert rows[1]["source"].endswith("ok\\xfe\n.png")


# ---- pipes ----------------------------------------------------------------------------------


def test_stdin_and_stdout_compose_in_a_pipe(vae, tmp_path):
    generated = ok("generate", "--model", MODEL, "--n", 40, "--seed", 5, "--out", "-").stdout
    images = np.load(io.BytesIO(generated))
    np.testing.assert_array_equal(images, vae.generate(40, seed=5))
    proc = ok("embed", "-", "--model", MODEL, "--out", "-", stdin=generated)
    rows = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert [(r["source"], r["index"]) for r in rows] == [("-", i) for i in range(40)]
    np.testing.assert_array_equal(
        np.array([r["embedding"] for r in rows], np.float32), vae.embed(images)
    )
    assert "embedded 40 of 40" in proc.stderr.decode()  # the summary keeps out of the pipe
    csv_out = ok(
        "score", "-", "--model", MODEL, "--out", "-", "--format", "csv", "-q", stdin=generated
    ).stdout.decode()
    table = list(csv.reader(io.StringIO(csv_out)))
    assert table[0] == ["source", "index", "status", "error", "score"]
    np.testing.assert_allclose(
        np.array([r[4] for r in table[1:]], np.float64), vae.score(images, seed=0), rtol=1e-12
    )
    npy_out = ok("embed", "-", "--model", MODEL, "--out", "-", "--format", "npy", stdin=generated)
    np.testing.assert_array_equal(np.load(io.BytesIO(npy_out.stdout)), vae.embed(images))


def test_stdin_takes_an_idx_stream_and_an_image(vae, data_dir, digits, tmp_path):
    gz = (data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()
    proc = ok("embed", "-", "--model", MODEL, "--out", tmp_path / "e.npy", stdin=gz)
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (10000, L)
    np.testing.assert_allclose(emb[:64], vae.embed(digits), atol=1e-6)
    assert "10000 embeddings" in proc.stdout.decode()
    png = io.BytesIO()
    Image.fromarray(digits[7]).save(png, format="PNG")
    ok("embed", "-", "--model", MODEL, "--out", tmp_path / "one.npy", stdin=png.getvalue())
    np.testing.assert_allclose(np.load(tmp_path / "one.npy"), vae.embed(digits[7]), atol=1e-6)
    fails("embed", "-", "--model", MODEL, "--out", tmp_path / "x.npy", stdin=b"", words="no data")


# ---- score --------------------------------------------------------------------------------


def test_score_writes_per_image_results(mixed, vae, digits, tmp_path):
    proc = ok(
        "score",
        mixed,
        "--model",
        MODEL,
        "--skip-bad",
        "--k",
        3,
        "--seed",
        2,
        "--json",
        "--out",
        tmp_path / "s.jsonl",
        "--out",
        tmp_path / "s.npy",
    )
    summary = json.loads(proc.stdout)
    expected = vae.score(digits[[2, 1, 0]], k=3, seed=2)
    assert summary["images"] == 3 and summary["k"] == 3
    assert summary["mean"] == pytest.approx(expected.mean(), rel=1e-9)
    assert [Path(s["file"]).name for s in summary["skipped"]] == ["broken.png"]
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), expected, rtol=1e-12)
    rows = [r for r in jsonl(tmp_path / "s.jsonl") if r["status"] == "ok"]
    np.testing.assert_allclose([r["score"] for r in rows], expected, rtol=1e-12)


def test_json_summary_on_every_command_that_prints_one(tmp_path, digits):
    np.save(tmp_path / "d.npy", digits[:4])
    m = ["--model", MODEL]
    commands = [
        ["generate", "--n", 3, "--out", tmp_path / "g.npy"],
        ["embed", tmp_path / "d.npy", "--out", tmp_path / "e.npy"],
        ["reconstruct", tmp_path / "d.npy", "--out", tmp_path / "r.png"],
        ["interpolate", tmp_path / "d.npy", tmp_path / "d.npy", "--out", tmp_path / "i.png"],
        ["score", tmp_path / "d.npy"],
        ["info"],
        ["models"],
    ]
    for argv in commands:
        if argv[0] == "interpolate":
            np.save(tmp_path / "d.npy", digits[:1])
        summary = json.loads(ok(*argv, *([] if argv[0] == "models" else m), "--json").stdout)
        assert summary, argv
        quiet = ok(*argv, *([] if argv[0] == "models" else m), "-q").stdout
        assert quiet == b"" or argv[0] in ("info", "models"), argv


# ---- generation ---------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_generation_is_shard_stable(shards, vae, tmp_path):
    """Images 1500..4099 of seed 11: one call, or `shards` calls with --start/--n at
    uneven cuts (mid-block and across block boundaries), give the same bytes."""
    start, n = 1500, 2600
    cuts = np.linspace(start, start + n, shards + 1).astype(int)
    cuts[1:-1] += 37  # off any round number
    parts = []
    for i, (lo, hi) in enumerate(itertools.pairwise(cuts)):
        out = tmp_path / f"part{i}.npy"
        ok(
            "generate",
            "--model",
            MODEL,
            "--seed",
            11,
            "--start",
            lo,
            "--n",
            hi - lo,
            "--out",
            out,
            "--out-dir",
            tmp_path / "pngs",
            "--batch-size",
            100 + 7 * i,
        )
        parts.append(np.load(out))
    joined = np.concatenate(parts)
    whole = vae.generate(n, seed=11, start=start)
    np.testing.assert_array_equal(joined, whole)
    np.testing.assert_array_equal(whole[:10], vae.generate(10, seed=11, start=start))
    np.testing.assert_array_equal(
        vae.generate(5, seed=11, start=BLOCK - 2), vae.generate(BLOCK + 3, seed=11)[-5:]
    )
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert len(pngs) == n and pngs[0].name == f"{start:08d}.png"
    for i in (0, 1234, n - 1):
        pixels = np.asarray(Image.open(pngs[i]))
        np.testing.assert_array_equal(pixels, to_pixels(whole[i, 0]))
    sidecars = sorted((tmp_path / "pngs").glob("images-*.jsonl"))
    assert len(sidecars) == shards
    rows = [r for s in sidecars for r in jsonl(s)]
    assert [r["index"] for r in rows] == list(range(start, start + n))
    assert {r["seed"] for r in rows} == {11} and rows[0]["file"] == f"{start:08d}.png"


def test_generate_dtype_grid_cap_and_parquet(vae, tmp_path):
    proc = ok(
        "generate",
        "--model",
        MODEL,
        "--n",
        300,
        "--seed",
        4,
        "--dtype",
        "uint8",
        "--out",
        tmp_path / "g.npy",
        "--out",
        tmp_path / "g.png",
        "--out",
        tmp_path / "g.jsonl",
    )
    x = vae.generate(300, seed=4)
    u8 = np.load(tmp_path / "g.npy")
    assert u8.dtype == np.uint8 and u8.shape == (300, 1, 28, 28)
    np.testing.assert_array_equal(u8, to_pixels(x))
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    np.testing.assert_array_equal(grid, make_grid(x[:256], 8, 2))
    assert "the first 256 of 300" in proc.stdout.decode()
    rows = jsonl(tmp_path / "g.jsonl")
    assert rows[299]["index"] == 299 and rows[299]["seed"] == 4
    np.testing.assert_array_equal(np.array(rows[299]["image"], np.uint8), u8[299].ravel())


def test_generate_streams_into_npy_of_the_right_shape(vae, tmp_path):
    """More images than one block and one batch, float32: the header is rewritten last."""
    ok(
        "generate",
        "--model",
        MODEL,
        "--n",
        2100,
        "--seed",
        1,
        "--out",
        tmp_path / "g.npy",
        "--batch-size",
        300,
    )
    got = np.load(tmp_path / "g.npy", mmap_mode="r")
    assert got.shape == (2100, 1, 28, 28) and got.dtype == np.float32
    np.testing.assert_array_equal(got[2000:], vae.generate(100, seed=1, start=2000))


def test_start_needs_a_seed(vae):
    with pytest.raises(InputError, match="start needs a seed"):
        vae.generate(3, rng=np.random.default_rng(0), start=5)
    with pytest.raises(InputError, match="start must be >= 0"):
        vae.generate(3, seed=0, start=-1)


# ---- reconstruct --------------------------------------------------------------------------


def test_reconstruct_layout_counts_and_all_outputs(vae, digits, tmp_path):
    np.save(tmp_path / "d.npy", digits[:50])
    proc = ok("reconstruct", tmp_path / "d.npy", "--model", MODEL, "--out", tmp_path / "r.png")
    assert "reconstructed 32 of 50 images" in proc.stdout.decode()
    x = digits[:50, None] / np.float32(255)
    recon = vae.reconstruct(x)
    rows = []
    for s in range(0, 32, 8):
        rows += [x[s : s + 8], recon[s : s + 8]]
    grid = np.asarray(Image.open(tmp_path / "r.png"))
    np.testing.assert_array_equal(grid, make_grid(np.concatenate(rows), 8, 2))

    proc = ok(
        "reconstruct",
        tmp_path / "d.npy",
        "--model",
        MODEL,
        "--out",
        tmp_path / "all.npy",
        "--out",
        tmp_path / "r.png",
        "--out-dir",
        tmp_path / "pngs",
    )
    assert "reconstructed 50 images" in proc.stdout.decode()
    np.testing.assert_allclose(np.load(tmp_path / "all.npy"), recon, atol=1e-6)
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 50

    np.save(tmp_path / "one.npy", digits[:1])  # one image: original above its reconstruction
    ok("reconstruct", tmp_path / "one.npy", "--model", MODEL, "--out", tmp_path / "one.png")
    assert np.asarray(Image.open(tmp_path / "one.png")).shape == (2 * 30 + 2, 30 + 2)


# ---- models by name, similarity -----------------------------------------------------------


def test_models_by_name(tmp_path):
    listed = json.loads(ok("models", "--json").stdout)
    names = {m["name"] for m in listed}
    assert {"mnist-conv-z20", "mnist-mlp-z20", "mnist-conv-z2", "fashion-mnist-conv-z20"} <= names
    for m in listed:
        assert "int8" in m["variants"] and m["bytes"] > m["variant_bytes"]["int8"] > 0
        assert m["quality"]["test_nelbo"] > 0
    assert [m["name"] for m in listed if m["default"]] == ["mnist-conv-z20"]
    text = ok("models").stdout.decode()
    assert "mnist-conv-z2 " in text and "int8" in text
    info = json.loads(ok("info", "--model", "mnist-conv-z2", "--json").stdout)
    assert info["latent_dim"] == 2 and info["name"] == "mnist-conv-z2"
    assert VAE("mnist-mlp-z20", variant="int8").info["arch"] == "mlp"
    fails("info", "--model", "no-such-model", words="shipped models: ")
    fails("info", "--model", "../artifacts", words="does not exist")


def test_similar_matches_brute_force():
    rng = np.random.default_rng(3)
    index = rng.standard_normal((500, 6)).astype(np.float32)
    query = rng.standard_normal((40, 6)).astype(np.float32)
    got = similar(query, index, k=5)
    sims = (query / np.linalg.norm(query, axis=1, keepdims=True)) @ (
        index / np.linalg.norm(index, axis=1, keepdims=True)
    ).T
    want = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(got.indices, want)
    np.testing.assert_allclose(got.scores, np.take_along_axis(sims, want, axis=1), atol=1e-6)
    np.testing.assert_allclose(cosine_similarity(query, index), sims, atol=1e-6)
    one = VAE.similar(query[0], index, k=1)
    assert one.indices.shape == (1, 1) and one.indices[0, 0] == want[0, 0]
    with pytest.raises(InputError, match="more than the 500"):
        similar(query, index, k=501)
    with pytest.raises(InputError, match="width"):
        similar(query[:, :3], index)


def test_embeddings_find_their_own_digit(vae, digits):
    emb = vae.embed(digits)
    found = vae.similar(emb[:10], emb, k=1)
    np.testing.assert_array_equal(found.indices[:, 0], np.arange(10))


# ---- the API streams paths ----------------------------------------------------------------


def test_embed_files_is_lazy(vae, digits, tmp_path, monkeypatch):
    import vae_runtime.sources as sources

    save_digits(tmp_path / "f", digits[:40], [f"{i}.png" for i in range(40)])
    reads = []
    real = sources.load_image

    def load_image(p, inv=False, reading=None):
        reads.append(p)
        return real(p, inv, reading)

    monkeypatch.setattr(sources, "load_image", load_image)
    it = vae.embed_files(tmp_path / "f", batch_size=8)
    first = next(it)
    assert len(reads) == 8 and first.source == data_name(tmp_path / "f" / "0.png")
    rest = list(it)
    assert len(reads) == 40 and [r.index for r in rest] == [0] * 39
    assert [Path(r.source).name for r in rest][:3] == ["1.png", "2.png", "3.png"]
    np.testing.assert_allclose(rest[8].embedding, vae.embed(digits[9])[0], atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_api_embed_of_a_path_streams(tmp_path):
    """VAE().embed("a.idx.gz") of 400,000 images holds batches, not the 1.25 GB of float
    images: peak RSS stays far below that."""
    import gzip

    path = tmp_path / "zeros.idx.gz"
    with gzip.open(path, "wb", compresslevel=1) as f:
        f.write(b"\x00\x00\x08\x03" + (400_000).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2)
        f.write(bytes(784 * 400_000))
    code = textwrap.dedent(
        f"""
        from vae_runtime import VAE
        vae = VAE({MODEL!r}, threads=1)
        emb = vae.embed({str(path)!r})
        s = vae.score({str(path)!r}, seed=0)
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(emb.shape[0], s.shape[0], int(status.split()[0]) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out[:2] == ["400000", "400000"]
    assert int(out[2]) < 400, f"peak RSS {out[2]} MB"


# ---- Parquet ------------------------------------------------------------------------------


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


needs_pyarrow = pytest.mark.skipif(
    not _has_pyarrow(), reason="pyarrow is not installed (the parquet extra; make test has it)"
)


@needs_pyarrow
def test_parquet_inputs_of_every_image_kind(vae, digits, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def png(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue()

    n = 20
    encoded = [png(d) for d in digits[:n]]
    table = pa.table(
        {
            "id": pa.array([f"img-{i}" for i in range(n)]),
            "png": pa.array(encoded, pa.binary()),
            "hf": pa.array([{"bytes": b, "path": f"{i}.png"} for i, b in enumerate(encoded)]),
            "pixels": pa.array([d.ravel().tolist() for d in digits[:n]], pa.list_(pa.uint8())),
            "fixed": pa.FixedSizeListArray.from_arrays(pa.array(digits[:n].ravel()), 784),
        }
    )
    pq.write_table(table, tmp_path / "data.parquet", row_group_size=7)
    expected = vae.embed(digits[:n])
    for column in ("png", "hf", "pixels", "fixed"):
        out = tmp_path / f"{column}.parquet"
        ok(
            "embed",
            tmp_path / "data.parquet",
            "--column",
            column,
            "--id-column",
            "id",
            "--model",
            MODEL,
            "--out",
            out,
            "--batch-size",
            8,
        )
        t = pq.read_table(out)
        assert t.column_names == ["id", "status", "error", "embedding"]
        assert t.column("id").to_pylist() == [f"img-{i}" for i in range(n)]
        got = np.array(t.column("embedding").to_pylist(), np.float32)
        np.testing.assert_allclose(got, expected, atol=1e-6, err_msg=column)
    ok(
        "embed",
        tmp_path / "data.parquet",
        "--column",
        "pixels",
        "--model",
        MODEL,
        "--out",
        tmp_path / "plain.jsonl",
    )
    rows = jsonl(tmp_path / "plain.jsonl")
    assert [r["index"] for r in rows] == list(range(n))
    assert rows[0]["source"] == data_name(tmp_path / "data.parquet")
    fails(
        "embed",
        tmp_path / "data.parquet",
        "--model",
        MODEL,
        "--out",
        tmp_path / "x.npy",
        words="several columns (png, hf, pixels, fixed) can hold images",
    )
    fails(
        "embed",
        tmp_path / "data.parquet",
        "--column",
        "id",
        "--model",
        MODEL,
        "--out",
        tmp_path / "x.npy",
        words="column 'id' has type string",
    )
    records = list(vae.embed_files(tmp_path / "data.parquet", column="fixed", batch_size=6))
    assert [r.index for r in records] == list(range(n))
    np.testing.assert_allclose(np.stack([r.embedding for r in records]), expected, atol=1e-6)


@needs_pyarrow
def test_parquet_bad_rows_are_skipped_with_skip_bad(vae, digits, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pixels = [d.ravel().tolist() for d in digits[:4]]
    pixels[1] = [0] * 10  # wrong length
    pixels[2] = None
    pq.write_table(
        pa.table({"image": pa.array(pixels, pa.list_(pa.uint8()))}), tmp_path / "d.parquet"
    )
    fails(
        "embed",
        tmp_path / "d.parquet",
        "--model",
        MODEL,
        "--out",
        tmp_path / "e.parquet",
        words="row 1: 10 values, expected 784",
    )
    assert not (tmp_path / "e.parquet").exists()
    ok(
        "embed",
        tmp_path / "d.parquet",
        "--model",
        MODEL,
        "--skip-bad",
        "--out",
        tmp_path / "e.parquet",
    )
    t = pq.read_table(tmp_path / "e.parquet")
    assert t.column("status").to_pylist() == ["ok", "skipped", "skipped", "ok"]
    emb = t.column("embedding").to_pylist()
    assert emb[1] is None and emb[2] is None
    np.testing.assert_allclose(
        np.array([emb[0], emb[3]], np.float32), vae.embed(digits[[0, 3]]), atol=1e-6
    )


def test_parquet_without_pyarrow_says_which_extra(tmp_path, mixed):
    blocker = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "pyarrow":
                    raise ImportError("blocked")
        sys.meta_path.insert(0, Block())
        from vae_runtime.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            blocker,
            "embed",
            str(mixed),
            "--skip-bad",
            "--model",
            MODEL,
            "--out",
            str(tmp_path / "e.parquet"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "vae-run: error: Parquet needs pyarrow, which is not installed: "
        "pip install 'vae-onnx[parquet]'"
    )
    assert not (tmp_path / "e.parquet").exists()


# ---- a 10,000-file folder ----------------------------------------------------------------


@pytest.mark.slow
def test_ten_thousand_files_round_trip_joined_by_name(vae, data_dir, tmp_path):
    images = np.concatenate(
        list(iter_idx_images(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", chunk=4096))
    )
    folder = tmp_path / "many"
    names = [f"digit{i}.png" for i in range(len(images))]  # natural order != string order
    save_digits(folder, images, names)
    (folder / "Thumbs.db").write_bytes(b"junk")
    proc = ok("embed", folder, "--model", MODEL, "--out", tmp_path / "e.jsonl", "--json")
    summary = json.loads(proc.stdout)
    assert summary["embedded"] == 10_000 and summary["ignored"][0].endswith("Thumbs.db")
    rows = jsonl(tmp_path / "e.jsonl")
    assert [Path(r["source"]).name for r in rows] == names  # natural order: digit2 < digit10
    by_name = {Path(r["source"]).name: r["embedding"] for r in rows}
    picks = np.random.default_rng(0).choice(len(images), 300, replace=False)
    got = np.array([by_name[names[i]] for i in picks], np.float32)
    np.testing.assert_allclose(got, vae.embed(images[picks]), atol=1e-6)


# ---- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (
            ["embed", "{d}", "--skip-bad", "--out", "-", "--format", "npy"],
            "needs the number of rows",
        ),
        (["embed", "{d}", "--out", "-", "--out", "-"], "standard output can take one output only"),
        (["embed", "{d}", "--out", "-", "--format", "parquet"], "invalid choice"),
        (["embed", "{d}", "--out", "{t}/e.png"], "a .png output holds images"),
        (["score", "{d}", "--out", "{t}/scores"], "unknown output format '(no extension)'"),
        (["generate", "--out-dir", "{t}/file.txt"], "exists and is not a folder"),
        (["generate", "--out", "{t}/g.jpg"], "(grids are written as PNG)"),
        (["reconstruct", "{d}", "--out", "-", "--format", "npy", "--skip-bad"], "in advance"),
    ],
)
def test_output_refusals(argv, words, tmp_path, digits):
    folder = tmp_path / "d"
    save_digits(folder, digits[:2], ["a.png", "b.png"])
    (tmp_path / "file.txt").write_text("a file")
    args = [a.format(d=folder, t=tmp_path) for a in argv]
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = cli(*args, "--model", MODEL)
    assert proc.returncode == 2, proc.stderr
    assert words in proc.stderr.decode()
    assert "Traceback" not in proc.stderr.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_only_text_and_npy_go_to_stdout():
    from vae_runtime.records import Column, Schema
    from vae_runtime.writers import open_writer

    schema = Schema(("seed", "index"), (Column("image", (1, 28, 28), np.dtype(np.float32)),))
    for fmt in ("npz", "parquet"):
        with pytest.raises(InputError, match="standard output takes jsonl, csv, npy"):
            open_writer("-", schema, fmt=fmt)


def test_a_failed_run_leaves_none_of_its_outputs(data_dir, tmp_path, vae):
    """reconstruct stops at a truncated IDX after 300 images: no output appears, an old
    file is kept, the PNGs the run created are removed, no temporary file stays."""
    import gzip

    raw = gzip.decompress((data_dir / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    (tmp_path / "cut-ubyte").write_bytes(raw[: 16 + 784 * 300])
    (tmp_path / "old.npy").write_bytes(b"old")
    (tmp_path / "pngs").mkdir()
    (tmp_path / "pngs" / "keep.txt").write_text("mine")
    proc = cli(
        "reconstruct",
        tmp_path / "cut-ubyte",
        "--model",
        MODEL,
        "--batch-size",
        64,
        "--out",
        tmp_path / "old.npy",
        "--out",
        tmp_path / "r.jsonl",
        "--out",
        tmp_path / "g.png",
        "--out-dir",
        tmp_path / "pngs",
    )
    assert proc.returncode == 2 and b"truncated" in proc.stderr
    assert (tmp_path / "old.npy").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut-ubyte", "old.npy", "pngs"]
    assert [p.name for p in (tmp_path / "pngs").iterdir()] == ["keep.txt"]


def test_ood_scores_go_to_every_format(mixed, vae, digits, tmp_path):
    proc = ok(
        "score",
        mixed,
        "--ood",
        "--skip-bad",
        "--model",
        MODEL,
        "--json",
        "--out",
        tmp_path / "o.jsonl",
        "--out",
        tmp_path / "o.npy",
    )
    summary = json.loads(proc.stdout)
    expected = vae.ood_score(digits[[2, 1, 0]])
    assert summary["flagged"] == int((expected > vae.ood_threshold(0.05)).sum())
    np.testing.assert_allclose(np.load(tmp_path / "o.npy"), expected, rtol=1e-12)
    rows = jsonl(tmp_path / "o.jsonl")
    assert [r["status"] for r in rows] == ["skipped", "ok", "ok", "ok"]
    np.testing.assert_allclose([r["ood_score"] for r in rows[1:]], expected, rtol=1e-12)
