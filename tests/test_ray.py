"""Ray Data jobs (``vae-run embed/generate --ray``) against the single-process runtime.

Every Ray here is started by the test and runs in a subprocess, inside a network namespace
that holds only loopback where the machine allows one (the ``loopback`` fixture): a local
Ray (2 CPUs, actors at 0.5 CPU with 1 ONNX Runtime thread each), and a two-node cluster on
127.0.0.2 / 127.0.0.3 with token authentication (tests/ray_loopback.py), whose nodes are
stopped by their own PIDs. The last test checks that no Ray process is left.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pytest.importorskip("ray")

from PIL import Image  # noqa: E402

from vae_format.idx import read_idx  # noqa: E402
from vae_runtime import VAE  # noqa: E402
from vae_runtime.distributed import ActorPool, check_pool  # noqa: E402
from vae_runtime.errors import InputError  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PARTS = [(0, 3000), (3000, 5000), (5000, 7500), (7500, 10000)]  # rows of each input file
LOCAL = ["--ray", "--cpus", "2", "--actors", "2", "--threads", "1", "--cpus-per-actor", "0.5"]


def vae_run() -> str:
    return str(Path(sys.executable).with_name("vae-run"))


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def mnist(data_dir: Path) -> np.ndarray:
    return read_idx(data_dir / "mnist" / "t10k-images-idx3-ubyte.gz", "images")


def write_parts(root: Path, mnist: np.ndarray, columns) -> list[Path]:
    """The 10,000 MNIST test images in four Parquet files (rows PARTS), row groups of
    1,000, each row with an id ``img-<position>``; ``columns[k]`` stores file k's images."""
    files = []
    for k, (lo, hi) in enumerate(PARTS):
        ids = pa.array([f"img-{i}" for i in range(lo, hi)])
        table = pa.table({"image": columns[k](mnist[lo:hi]), "label_id": ids})
        files.append(root / f"part-{k}.parquet")
        pq.write_table(table, files[-1], row_group_size=1000)
    return files


def png_bytes(images: np.ndarray) -> pa.Array:
    return pa.array([png(a) for a in images], pa.binary())


def hf_structs(images: np.ndarray) -> pa.Array:  # Hugging Face's Image feature
    return pa.array([{"bytes": png(a), "path": f"{i}.png"} for i, a in enumerate(images)])


def uint8_lists(images: np.ndarray) -> pa.Array:
    return pa.array(list(images.reshape(len(images), -1)), pa.list_(pa.uint8()))


def fixed_lists(images: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(images.reshape(-1)), 784)


@pytest.fixture(scope="module")
def encoded(mnist: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Files of PNG bytes and of {bytes, path} structs, alternately."""
    root = tmp_path_factory.mktemp("encoded")
    return write_parts(root, mnist, [png_bytes, hf_structs, png_bytes, hf_structs])


@pytest.fixture(scope="module")
def pixels(mnist: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Files of uint8 lists and of fixed-size uint8 lists, alternately."""
    root = tmp_path_factory.mktemp("pixels")
    return write_parts(root, mnist, [uint8_lists, fixed_lists, uint8_lists, fixed_lists])


@pytest.fixture(scope="module")
def reference(mnist: np.ndarray) -> np.ndarray:
    """Single-process embeddings of the 10,000 images, in order."""
    return VAE().embed(mnist)


@pytest.fixture(scope="module")
def ray_env():
    """The environment of every Ray run: a token of its own (nothing is written to
    ~/.ray), Ray's files in a short temporary folder (its socket paths are limited)."""
    temp = tempfile.mkdtemp(prefix="vr", dir="/tmp")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
        "TMPDIR": temp,
    }
    yield env
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working folder of every Ray run (and so of every Ray process they start)."""
    return tmp_path_factory.mktemp("ray-runs")


def run(cmd: list[str], env: dict[str, str], cwd: Path, loopback: list[str]):
    return subprocess.run(
        [*loopback, *map(str, cmd)], env=env, cwd=cwd, capture_output=True, text=True, timeout=600
    )


def read_rows(folder: Path, key: str) -> dict[str, pa.Table]:
    table = pq.read_table(folder)
    return {"table": table, "keys": table.column(key).to_pylist()}


def embeddings(table: pa.Table) -> np.ndarray:
    column = table.column("embedding").combine_chunks()
    return column.flatten().to_numpy().reshape(len(table), -1)


# -- a local Ray --------------------------------------------------------------------------------


@pytest.mark.slow
def test_local_ray_embeddings_equal_single_process(
    encoded, reference, ray_env, workdir, loopback, tmp_path
) -> None:
    inputs = encoded
    out = tmp_path / "embeddings"
    cmd = [vae_run(), "embed", *inputs, "--out", out, *LOCAL, "--batch-size", "500", "--json"]
    proc = run(cmd, ray_env, workdir, loopback)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["ray"]["nodes"] == 1 and summary["ray"]["actors"] == 2
    assert summary["outputs"][0]["rows"] == 10_000
    table = pq.read_table(out)
    assert table.column_names == ["source", "index", "status", "error", "embedding"]
    assert set(table.column("status").to_pylist()) == {"ok"}
    # Each row's (source, index) names an image; its embedding is that image's, exactly.
    first = {str(f): lo for f, (lo, _) in zip(inputs, PARTS, strict=True)}
    keys = zip(table["source"].to_pylist(), table["index"].to_pylist(), strict=True)
    position = np.array([first[s] + i for s, i in keys])
    assert sorted(position) == list(range(10_000))
    assert np.array_equal(embeddings(table), reference[position])
    # ... and the table is the one vae-run writes without Ray, row for row.
    single = tmp_path / "single.parquet"
    code = subprocess.run(
        [vae_run(), "embed", *map(str, inputs), "--out", str(single), "-q"], capture_output=True
    ).returncode
    assert code == 0
    order = [("source", "ascending"), ("index", "ascending")]
    assert table.sort_by(order).equals(pq.read_table(single).sort_by(order))
    assert not list(tmp_path.glob(".embeddings.*"))  # no staging folder left


@pytest.mark.slow
def test_local_ray_generation_equals_single_machine(ray_env, workdir, loopback, tmp_path) -> None:
    out = tmp_path / "images"
    cmd = [vae_run(), "generate", "--n", "5000", "--seed", "7", "--start", "1500"]
    proc = run([*cmd, "--out", out, *LOCAL, "--json"], ray_env, workdir, loopback)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = pq.read_table(out).sort_by("index")
    assert len(list(out.glob("*.parquet"))) >= 4  # the range was cut into several tasks
    assert table.column("index").to_pylist() == list(range(1500, 6500))
    assert set(table.column("seed").to_pylist()) == {7}
    images = table.column("image").combine_chunks().flatten().to_numpy().reshape(-1, 1, 28, 28)
    assert np.array_equal(images, VAE().generate(5000, seed=7, start=1500))


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory, mnist: np.ndarray) -> Path:
    """Three rows of pixel lists, the middle one 5 values long."""
    path = tmp_path_factory.mktemp("broken") / "broken.parquet"
    rows = [mnist[0].reshape(-1), np.arange(5, dtype=np.uint8), mnist[1].reshape(-1)]
    column = pa.array(rows, pa.list_(pa.uint8()))
    ids = pa.array(["ok-0", "bad-1", "ok-2"])
    pq.write_table(pa.table({"image": column, "label_id": ids}), path)
    return path


@pytest.mark.slow
def test_a_bad_row_on_an_actor_is_one_line(broken, ray_env, workdir, loopback, tmp_path) -> None:
    out = tmp_path / "out"
    cmd = [vae_run(), "embed", broken, "--id-column", "label_id", "--out", out, *LOCAL]
    proc = run(cmd, ray_env, workdir, loopback)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("vae-run: error: label_id 'bad-1': 5 values, expected 784")
    assert "--skip-bad" in lines[-1] and "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # no output, no staging folder


# -- two nodes ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_node_loopback_cluster_end_to_end(
    pixels, broken, reference, ray_env, workdir, loopback, tmp_path
) -> None:
    """Head on 127.0.0.2, worker on 127.0.0.3 (1 CPU each, token auth): the 10,000 images
    as pixel lists and a broken row, keyed by the input's own id column, skipping the bad
    row."""
    inputs = pixels
    out, stats = tmp_path / "embeddings", tmp_path / "stats.json"
    job = [vae_run(), "embed", *inputs, broken, "--id-column", "label_id", "--skip-bad"]
    job += ["--out", out, "--ray", "{address}", "--actors", "2", "--batch-size", "500", "--json"]
    cluster = [sys.executable, REPO / "tests" / "ray_loopback.py", "--stats", stats, "--", *job]
    proc = run(cluster, ray_env, workdir, loopback)
    assert proc.returncode == 0, proc.stderr[-3000:]
    facts = json.loads(stats.read_text())
    assert facts["actor_processes"]["head"] >= 1 and facts["actor_processes"]["worker"] >= 1
    assert json.loads(proc.stdout)["ray"]["nodes"] == 2
    table = pq.read_table(out)
    rows = dict(zip(table["label_id"].to_pylist(), range(len(table)), strict=True))
    assert len(rows) == 10_003
    bad = rows.pop("bad-1")
    assert table["status"][bad].as_py() == "skipped"
    assert table["error"][bad].as_py() == "label_id 'bad-1': 5 values, expected 784"
    assert table["embedding"][bad].as_py() is None
    ok = [k for k in rows if k.startswith("img-")]
    position = np.array([int(k[4:]) for k in ok])
    got = embeddings(table.take([rows[k] for k in ok]))
    assert np.array_equal(got, reference[position])
    assert table["embedding"][rows["ok-2"]].as_py() == pytest.approx(reference[1].tolist())


@pytest.mark.slow
def test_no_ray_process_is_left(workdir: Path, ray_env) -> None:
    """Every Ray process of this module worked in ``workdir``; none is alive now (after a
    grace of a few seconds for one caught mid-exit: its cmdline is already empty)."""
    deadline = time.monotonic() + 10.0
    while (alive := _processes_in(workdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert alive == []


def _processes_in(workdir: Path) -> list[tuple[str, bytes]]:
    alive = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if Path(os.readlink(proc / "cwd")).is_relative_to(workdir):
                alive.append((proc.name, (proc / "cmdline").read_bytes()[:80]))
        except OSError:  # gone, or a zombie: no cwd
            continue
    return alive


# -- refusals before any Ray starts -----------------------------------------------------------


@pytest.mark.parametrize(
    ("pool", "resources", "match"),
    [
        (ActorPool(actors=3, threads=1), {"CPU": 2}, "3 threads, more than the cluster's 2 CPUs"),
        (ActorPool(actors=2, threads=1, cpus_per_actor=1), {"CPU": 2}, "would hang"),
        (ActorPool(actors=2, threads=1, cpus_per_actor=0.8), {"CPU": 2}, "would hang"),
        (ActorPool(actors=4, device="cuda"), {"CPU": 8, "GPU": 1}, "more than the cluster's 1"),
        (ActorPool(actors=1, cpus_per_actor=2), {"CPU": 8}, "cpus_per_actor must lie in"),
        (ActorPool(actors=0), {"CPU": 8}, "actors must be"),
    ],
)
def test_pools_the_cluster_cannot_run_are_refused(pool, resources, match) -> None:
    with pytest.raises(InputError, match=match):
        check_pool(pool, resources)
    check_pool(ActorPool(actors=2, threads=1), {"CPU": 2})  # the test setting is fine


def cli(args: list[str], capsys) -> tuple[int, str]:
    from vae_runtime.cli import main

    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--out", "{tmp}/a", "--out", "{tmp}/b"], "give one --out FOLDER"),
        (["--out", "{tmp}/full"], "exists; --ray writes a new folder"),
        (["--out", "{tmp}/missing/out"], "missing: no such folder"),
        (["--out", "{tmp}/new", "--column", "nope"], "no column 'nope'"),
        (["--out", "{tmp}/new", "--id-column", "nope"], "no id column 'nope'"),
        (["--out", "{tmp}/new", "--ray", "127.0.0.9:1", "--cpus", "2"], "--cpus sizes a local"),
    ],
)
def test_embed_refusals_before_ray_starts(encoded, tmp_path, capsys, extra, match) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    args = ["embed", encoded[0], "--ray", *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    code, err = cli(args, capsys)
    assert code == 2
    assert err.startswith("vae-run: error: ") and match in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]


def test_non_parquet_input_refused(tmp_path, capsys) -> None:
    (tmp_path / "x.parquet").write_bytes(b"not parquet")
    code, err = cli(["embed", tmp_path / "x.parquet", "--out", tmp_path / "o", "--ray"], capsys)
    assert code == 2 and "x.parquet: not a readable Parquet file" in err
    code, err = cli(["embed", tmp_path / "none", "--out", tmp_path / "o", "--ray"], capsys)
    assert code == 2 and "none: no such file or directory" in err


def test_generate_out_dir_refused(tmp_path, capsys) -> None:
    code, err = cli(["generate", "--out-dir", tmp_path / "d", "--ray"], capsys)
    assert code == 2 and "give --out FOLDER, not --out-dir" in err


@pytest.mark.parametrize("command", ["embed", "generate"])
def test_backend_auto_refused(command, encoded, tmp_path, capsys) -> None:
    """Each actor would run its own probe, and actors could pick different graphs."""
    inputs = [encoded[0]] if command == "embed" else []
    args = [command, *inputs, "--out", tmp_path / "o", "--ray", "--backend", "auto"]
    code, err = cli(args, capsys)
    assert code == 2 and "--backend auto probes per process" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_ray_missing_says_which_extra(encoded, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code, err = cli(["embed", encoded[0], "--out", tmp_path / "o", "--ray"], capsys)
    assert code == 2 and "pip install 'vae-onnx[ray]'" in err


def test_mixed_storage_across_files_refused(encoded, pixels, tmp_path, capsys) -> None:
    """Ray Data batches rows of several files together: encoded images and pixel lists
    cannot share a job (PNG bytes with structs can, lists with fixed-size lists can)."""
    code, err = cli(["embed", encoded[0], pixels[1], "--out", tmp_path / "o", "--ray"], capsys)
    assert code == 2
    assert f"{pixels[1]}: its images are pixel lists, but {encoded[0]}'s are encoded" in err
