"""The pooch downloader, for real, against an HTTP server on 127.0.0.1 only."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import ipaddress
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from vae_train.datasets import DATASETS, DatasetError, load_dataset
from vae_train.download import download_dataset

FILES = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
]
# Published md5s (shared/datasets/README.md), written out independently of datasets.py.
MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail any connection to a non-loopback address, and keep proxies out of the way."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0]  # type: ignore[index]
            if not ipaddress.ip_address(host).is_loopback:
                raise AssertionError(f"test tried to contact {host}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)


class Server:
    def __init__(self, root: Path) -> None:
        self.requests: list[tuple[str, int]] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                server.requests.append((self.path, int(code) if str(code).isdigit() else 0))

            def log_message(self, format: str, *args: object) -> None:
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator:
    servers: list[Server] = []

    def start(root: Path) -> Server:
        servers.append(Server(root))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def test_download_succeeds_and_verifies(serve, data_dir: Path, tmp_path: Path) -> None:
    server = serve(data_dir / "mnist")
    out = tmp_path / "data"
    paths = download_dataset("mnist", out, mirrors=[server.url], progress=False)
    assert set(paths) == {"train-images", "train-labels", "test-images", "test-labels"}
    assert files_under(out) == sorted(out / "mnist" / f for f in FILES)
    for f in FILES:
        assert md5(out / "mnist" / f) == MD5[f]
        assert not (out / "mnist" / f).is_symlink()
    assert sorted(p for p, _ in server.requests) == sorted(f"/{f}" for f in FILES)
    ds = load_dataset("mnist", out)
    assert len(ds.train) == 60000 and ds.checksums == MD5


def test_corrupted_file_refused_and_nothing_left_behind(
    serve, data_dir: Path, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for f in FILES:
        (mirror / f).symlink_to(data_dir / "mnist" / f)
    bad_name = "t10k-labels-idx1-ubyte.gz"  # fetched last, after three good files
    corrupt = bytearray((data_dir / "mnist" / bad_name).read_bytes())
    corrupt[2000] ^= 0xFF
    (mirror / bad_name).unlink()
    (mirror / bad_name).write_bytes(bytes(corrupt))
    bad_md5 = hashlib.md5(bytes(corrupt)).hexdigest()
    server = serve(mirror)
    out = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        download_dataset("mnist", out, mirrors=[server.url], progress=False)
    msg = str(err.value)
    assert bad_name in msg and f"{server.url}{bad_name}" in msg
    assert bad_md5 in msg and MD5[bad_name] in msg
    # only the three good files remain: no corrupt file, no temporary file
    good = sorted(out / "mnist" / f for f in FILES if f != bad_name)
    assert files_under(out) == good
    assert all(md5(p) == MD5[p.name] for p in good)


def test_corrupted_first_file_leaves_data_dir_empty(serve, data_dir: Path, tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / FILES[0]).write_bytes(b"\x1f\x8b not really gzip")
    server = serve(mirror)
    out = tmp_path / "data"
    out.mkdir()
    with pytest.raises(DatasetError, match=FILES[0]):
        download_dataset("mnist", out, mirrors=[server.url], progress=False)
    assert list(out.rglob("*")) == []


def test_404_and_dead_mirrors_fall_through(serve, data_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    missing, good = serve(empty), serve(data_dir / "mnist")
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/"
    out = tmp_path / "data"
    download_dataset("mnist", out, mirrors=[dead, missing.url, good.url], progress=False)
    assert all(md5(out / "mnist" / f) == MD5[f] for f in FILES)
    assert sorted(missing.requests) == sorted((f"/{f}", 404) for f in FILES)
    assert sorted(good.requests) == sorted((f"/{f}", 200) for f in FILES)


def test_every_mirror_failing_lists_them(serve, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    a, b = serve(empty), serve(empty)
    out = tmp_path / "data"
    with pytest.raises(DatasetError) as err:
        download_dataset("mnist", out, mirrors=[a.url, b.url + "sub/"], progress=False)
    msg = str(err.value)
    assert f"{a.url}{FILES[0]}" in msg and f"{b.url}sub/{FILES[0]}" in msg
    assert "404" in msg
    assert files_under(out) == []


def test_present_valid_files_are_not_fetched(serve, data_dir: Path, tmp_path: Path) -> None:
    server = serve(data_dir / "mnist")
    out = tmp_path / "data"
    (out / "mnist").mkdir(parents=True)
    for f in FILES[:3]:
        (out / "mnist" / f).symlink_to(data_dir / "mnist" / f)
    # the fourth is present but corrupt: it alone is fetched again and replaced
    stale = out / "mnist" / FILES[3]
    stale.write_bytes(b"partial")
    paths = download_dataset("mnist", out, mirrors=[server.url], progress=False)
    assert server.requests == [(f"/{FILES[3]}", 200)]
    assert md5(stale) == MD5[FILES[3]]
    assert paths["test-labels"] == stale and paths["train-images"] == out / "mnist" / FILES[0]
    # everything valid now: a second call fetches nothing
    download_dataset("mnist", out, mirrors=[server.url], progress=False)
    assert len(server.requests) == 1


def test_files_in_other_layouts_count_as_present(serve, data_dir: Path, tmp_path: Path) -> None:
    server = serve(data_dir / "mnist")
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in FILES:
        (raw / f).symlink_to(data_dir / "mnist" / f)
    paths = download_dataset("mnist", tmp_path, mirrors=[server.url], progress=False)
    assert server.requests == []
    assert paths["test-images"] == raw / FILES[2]


def test_progress_bar(serve, data_dir: Path, tmp_path: Path, capfd) -> None:
    server = serve(data_dir / "mnist")
    download_dataset("mnist", tmp_path, mirrors=[server.url], progress=True)
    assert "B/s" in capfd.readouterr().err


def test_cli_download_then_train(
    serve, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vae_train import cli

    server = serve(data_dir / "mnist")
    spec = DATASETS["mnist"]
    monkeypatch.setitem(DATASETS, "mnist", dataclasses.replace(spec, mirrors=(server.url,)))
    run = tmp_path / "run"
    argv = [
        "--download",
        "--data-dir",
        str(tmp_path / "data"),
        "--out",
        str(run),
        "--arch",
        "mlp",
        "--epochs",
        "1",
        "--limit-train",
        "256",
        "--limit-test",
        "100",
        "--threads",
        "1",
        "--no-progress",
    ]
    assert cli.main(argv) == 0
    assert len(server.requests) == 4
    assert (run / "checkpoints" / "latest.json").is_file()


def test_unknown_dataset_refused(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="unknown dataset"):
        download_dataset("cifar", tmp_path, mirrors=["http://127.0.0.1:9/"])
    assert list(tmp_path.iterdir()) == []
