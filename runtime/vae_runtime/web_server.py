"""``vae-run web``: serve the interactive page (``web/demo``) and its models on 127.0.0.1.

Standard library only. The server answers a fixed set of paths and nothing else:

- ``/demo/...``, ``/src/...``: the page and the JS package, from the source checkout's web/;
- ``/vendor/onnxruntime-web/<file>``: the three onnxruntime-web files the page needs, from
  web/node_modules (``npm ci --ignore-scripts`` in web/ puts them there; no CDN);
- ``/models/<name>/<file>``: manifest.json and the files it lists, of the models served;
- ``/config.json``: which model is which, for the page.

Every response carries COOP/COEP (so WebAssembly threads are possible) and no-cache; text
and WebAssembly are gzipped once and kept in memory when the browser accepts it.
"""

from __future__ import annotations

import gzip
import json
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from vae_format.contract import MANIFEST_FILE
from vae_format.manifest import Manifest, check_relative_path

from .errors import InputError, VAEError
from .model_dir import resolve_model_dir

HOST = "127.0.0.1"  # loopback only: the page is for the person at this machine
WEB_DIR = Path(__file__).resolve().parents[2] / "web"
ORT_DIST = Path("node_modules/onnxruntime-web/dist")
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
EXPLORER_MODEL = "mnist-conv-z2"
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".onnx": "application/octet-stream",
    ".safetensors": "application/octet-stream",
}
COMPRESSIBLE = {".html", ".js", ".mjs", ".css", ".json", ".wasm", ".svg"}
HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Site:
    """What is served: the web/ folder and the model directories by URL name."""

    web: Path
    models: dict[str, tuple[Path, frozenset[str]]]  # URL name -> (directory, files served)
    config: dict[str, Any]

    def resolve(self, url_path: str) -> Path | None:
        """The file behind ``url_path``, or None for anything not served."""
        parts = url_path.lstrip("/").split("/", 1)
        head, rest = parts[0], parts[1] if len(parts) > 1 else ""
        if head in ("demo", "src"):
            if rest in ("", "index.html") and head == "demo":
                rest = "index.html"
            return _inside(self.web / head, rest)
        if head == "vendor" and rest.startswith("onnxruntime-web/"):
            name = rest.removeprefix("onnxruntime-web/")
            return self.web / ORT_DIST / name if name in ORT_FILES else None
        if head == "models":
            name, _, rel = rest.partition("/")
            directory, listed = self.models.get(name, (None, frozenset()))
            return _inside(directory, rel) if directory and rel in listed else None
        return None


def _inside(root: Path, rel: str) -> Path | None:
    try:
        rel = check_relative_path(rel, root)
    except VAEError:  # a path that would leave root is simply not served
        return None
    path = root / rel
    real = path.resolve()
    return path if real.is_relative_to(root.resolve()) and real.is_file() else None


def build_site(
    model: str | Path | None, explorer: str | Path | None, web: Path | None = None
) -> Site:
    """Check the pieces (with one-line errors) and name what the page loads."""
    web = WEB_DIR if web is None else web
    if not (web / "demo" / "index.html").is_file():
        raise InputError(
            f"{web}: the web demo is not here; `vae-run web` needs a source checkout of vae-onnx"
        )
    missing = [f for f in ORT_FILES if not (web / ORT_DIST / f).is_file()]
    if missing:
        raise InputError(
            f"{web / ORT_DIST}: {', '.join(missing)} missing; run `npm ci --ignore-scripts` in web/"
        )
    main_dir = resolve_model_dir(model)
    main = Manifest.load(main_dir)
    models = {main.name: _served(main)}
    explorer_dir = _explorer_dir(explorer, main_dir, main.latent_dim)
    config: dict[str, Any] = {
        "model": f"/models/{main.name}/",
        "explorer": None,
        "embeddings": None,
    }
    if explorer_dir is not None:
        second = Manifest.load(explorer_dir)
        if second.latent_dim != 2:
            raise InputError(
                f"--explorer {explorer_dir}: needs a 2-D model, not {second.latent_dim}"
            )
        models[second.name] = _served(second)
        config["explorer"] = f"/models/{second.name}/"
        scatter = web / "demo" / "assets" / f"{second.name}.embeddings.json"
        if scatter.is_file():
            config["embeddings"] = f"/demo/assets/{scatter.name}"
    return Site(web=web, models=models, config=config)


def _served(manifest: Manifest) -> tuple[Path, frozenset[str]]:
    """A model directory and the only files of it the server hands out."""
    return manifest.directory, frozenset([MANIFEST_FILE, *manifest.files])


def _explorer_dir(explorer: str | Path | None, main_dir: Path, main_dim: int) -> Path | None:
    if explorer is not None:
        return resolve_model_dir(explorer)
    if main_dim == 2:
        return main_dir
    shipped = main_dir.parent / EXPLORER_MODEL
    return shipped if (shipped / MANIFEST_FILE).is_file() else None


class GzipCache:
    """Each file gzipped once (per size and mtime), shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[Path, int, int], tuple[threading.Lock, list[bytes]]] = {}

    def get(self, path: Path) -> bytes:
        stat = path.stat()
        key = (path, stat.st_mtime_ns, stat.st_size)
        with self._lock:
            lock, slot = self._entries.setdefault(key, (threading.Lock(), []))
        with lock:  # one thread compresses, others wait for it; other files are not held up
            if not slot:
                slot.append(gzip.compress(path.read_bytes(), compresslevel=6, mtime=0))
            return slot[0]


class _Handler(BaseHTTPRequestHandler):
    site: Site
    gzipped: GzipCache
    server_version = "vae-run-web"

    def do_GET(self) -> None:
        self._respond(send_body=True)

    def do_HEAD(self) -> None:
        self._respond(send_body=False)

    def _respond(self, send_body: bool) -> None:
        url_path = unquote(urlsplit(self.path).path)
        if url_path in ("/", "/demo"):
            self.send_response(HTTPStatus.FOUND)
            self.send_header("Location", "/demo/")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if url_path == "/config.json":
            body, ctype, encoding = json.dumps(self.site.config).encode(), MIME_TYPES[".json"], None
        else:
            path = self.site.resolve(url_path)
            if path is None:
                self.send_error(HTTPStatus.NOT_FOUND)
                return
            body, encoding = self._body(path)
            ctype = MIME_TYPES.get(path.suffix, "application/octet-stream")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Accept-Encoding")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        for key, value in HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def _body(self, path: Path) -> tuple[bytes, str | None]:
        accepts = "gzip" in self.headers.get("Accept-Encoding", "")
        if not accepts or path.suffix not in COMPRESSIBLE:
            return path.read_bytes(), None
        return self.gzipped.get(path), "gzip"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: the page is the UI
        pass


def make_server(site: Site, port: int) -> ThreadingHTTPServer:
    cache = GzipCache()
    handler = type("Handler", (_Handler,), {"site": site, "gzipped": cache})
    try:
        server = ThreadingHTTPServer((HOST, port), handler)
    except OSError as exc:
        raise InputError(
            f"--port {port}: cannot listen on {HOST} ({exc.strerror or exc})"
        ) from None
    server.daemon_threads = True
    # The WebAssembly file takes ~1 s to gzip: start now, before the browser asks for it.
    warm = [site.web / ORT_DIST / name for name in ORT_FILES]
    threading.Thread(target=lambda: [cache.get(p) for p in warm], daemon=True).start()
    return server


def serve(
    model: str | Path | None, explorer: str | Path | None, port: int, web: Path | None = None
) -> None:
    """Serve until interrupted; prints the URL first (on its own line, flushed)."""
    site = build_site(model, explorer, web)
    server = make_server(site, port)
    print(f"serving the vae-onnx demo at http://{HOST}:{server.server_port}/ (Ctrl-C stops)",
          flush=True)  # fmt: skip
    try:
        server.serve_forever()
    finally:
        server.server_close()
