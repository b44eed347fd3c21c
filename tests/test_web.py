"""The Python side of web/: the golden files and the page's scatter match what
`vae-export web-golden` makes from the shipped models now (so they cannot go stale), and
`vae-run web` serves exactly what the page needs, on 127.0.0.1, with the right headers.
The JS package and the page themselves are tested by `make test-web` (web/test/)."""

from __future__ import annotations

import base64
import gzip
import json
import shutil
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from vae_export import web_preprocess
from vae_export.web_assets import embeddings_path, golden_path, js_normals, write_web_assets
from vae_runtime import web_server
from vae_runtime.cli import main
from vae_runtime.errors import InputError

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts"
WEB = REPO / "web"
SHIPPED = sorted(p.parent for p in ARTIFACTS.glob("*/manifest.json"))
# Regenerated outputs may differ from the committed ones by what another CPU or ONNX Runtime
# build rounds differently; a changed model changes the recorded sha256s instead.
FLOAT_SLACK = {"fp32": 1e-6, "fp16": 1e-6, "int8": 1e-5}
STALE = "is stale: run `vae-export web-golden` and commit web/"


# ---- golden files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory, data_dir) -> Path:
    out = tmp_path_factory.mktemp("web")
    write_web_assets(SHIPPED, out, data_dir)
    return out


def test_preprocess_vectors_match_the_runtime(regenerated):
    """The vectors the JS preprocessing is checked against are what vae_runtime.preprocess
    makes of their inputs now: inputs, specs and decisions exactly, outputs within 1e-6."""
    if not web_preprocess.available():
        pytest.skip("the runtime has no preprocessing yet (issue 12 not integrated)")
    path = web_preprocess.vectors_path(WEB)
    assert path.is_file(), f"{path} is missing: run `vae-export web-golden`"
    committed = json.loads(path.read_text())
    fresh = json.loads(web_preprocess.vectors_path(regenerated).read_text())
    where = f"{path.relative_to(REPO)} {STALE}"
    assert committed["specs"] == fresh["specs"], f"{where} (specs)"
    assert len(committed["cases"]) == len(fresh["cases"]), where
    for old, new in zip(committed["cases"], fresh["cases"], strict=True):
        for key in ("name", "spec", "invert", "input", "info"):
            assert old[key] == new[key], f"{where} ({old['name']}: {key})"
        _close(old["output"], new["output"], 1e-6, f"{where} ({old['name']})")


def _floats(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4")


def _close(committed: str, fresh: str, slack: float, where: str) -> None:
    a, b = _floats(committed), _floats(fresh)
    assert a.shape == b.shape, f"{where}: {a.shape} vs {b.shape}"
    worst = float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))) if a.size else 0.0
    assert worst <= slack, f"{where} differs by {worst:.2e}"


@pytest.mark.parametrize("model", [p.name for p in SHIPPED])
def test_golden_file_matches_the_shipped_model(regenerated, model):
    path = golden_path(WEB, model)
    assert path.is_file(), f"{path} is missing: run `vae-export web-golden`"
    committed = json.loads(path.read_text())
    fresh = json.loads(golden_path(regenerated, model).read_text())
    where = f"{path.relative_to(REPO)} {STALE}"
    # Everything but the engines' float outputs must be identical: the model's files
    # (sha256), the inputs, the seeds and the variants.
    exact = ("format", "version", "model", "latent_dim", "dataset", "files", "images", "latents")
    for key in exact:
        assert committed[key] == fresh[key], f"{where} ({key})"
    assert committed["outputs"].keys() == fresh["outputs"].keys(), where
    for variant, outputs in fresh["outputs"].items():
        for name, text in outputs.items():
            _close(committed["outputs"][variant][name], text, FLOAT_SLACK[variant], where)
    for key in ("mu", "logvar", "eps"):
        assert committed["sample"][key] == fresh["sample"][key], where
    _close(committed["sample"]["z"], fresh["sample"]["z"], 1e-6, where)
    gen_c, gen_f = committed["generate"], fresh["generate"]
    assert (gen_c["seed"], gen_c["count"], gen_c["z"]) == (
        gen_f["seed"],
        gen_f["count"],
        gen_f["z"],
    )
    _close(gen_c["x_hat"], gen_f["x_hat"], FLOAT_SLACK["fp32"], where)


def test_no_golden_file_for_a_model_that_is_not_shipped():
    names = {p.stem for p in (WEB / "test" / "golden").glob("*.json")}
    assert names == {p.name for p in SHIPPED}


def test_page_scatter_matches_the_2d_model(regenerated):
    path = embeddings_path(WEB, "mnist-conv-z2")
    committed = json.loads(path.read_text())
    fresh = json.loads(embeddings_path(regenerated, "mnist-conv-z2").read_text())
    for key in ("format", "model", "dataset", "count", "files", "labels"):
        assert committed[key] == fresh[key], f"{path} {STALE} ({key})"
    for axis in ("x", "y"):  # rounded to 0.01: a float wobble may flip the last digit
        diff = np.abs(np.array(committed[axis]) - np.array(fresh[axis]))
        assert diff.max() <= 0.0101, f"{path} {STALE} ({axis})"
    assert committed["count"] == len(committed["x"]) == len(committed["labels"]) == 10000


def test_js_prng_reimplementation_is_a_plausible_standard_normal():
    # The bit-exact agreement with web/src/random.js is tested on the JS side against the
    # golden files; here: the stream itself is N(0, 1) and depends on the seed.
    z = js_normals(7, 20000)
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1) < 0.03
    assert not np.array_equal(js_normals(1, 8), js_normals(2, 8))
    assert np.array_equal(js_normals(1, 8), js_normals(1, 9)[:8])


# ---- vae-run web ----------------------------------------------------------------------------

ORT_STUBS = {name: f"stub of {name}".encode() * 50 for name in web_server.ORT_FILES}


@pytest.fixture
def web_dir(tmp_path) -> Path:
    """web/ without node_modules' real files: the demo and src, and stand-ins for ORT's."""
    web = tmp_path / "web"
    shutil.copytree(WEB / "demo", web / "demo")
    shutil.copytree(WEB / "src", web / "src")
    dist = web / web_server.ORT_DIST
    dist.mkdir(parents=True)
    for name, data in ORT_STUBS.items():
        (dist / name).write_bytes(data)
    (dist / "ort.all.min.js").write_text("not served")
    return web


@pytest.fixture
def server(web_dir, tmp_path) -> Iterator[str]:
    model = tmp_path / "mnist-conv-z20"  # a copy holding one file its manifest does not list
    shutil.copytree(ARTIFACTS / "mnist-conv-z20", model)
    (model / "unlisted.txt").write_text("not served")
    site = web_server.build_site(model, ARTIFACTS / "mnist-conv-z2", web_dir)
    httpd = web_server.make_server(site, 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    assert httpd.server_address[0] == "127.0.0.1"
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str, gzip_ok: bool = False) -> tuple[int, dict[str, str], bytes]:
    headers = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, headers=headers)) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), b""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def test_serves_the_page_package_and_models_with_their_types(server):
    status, headers, _ = get(server + "/")
    assert status == 302 and headers["Location"] == "/demo/"
    expected = {
        "/demo/": "text/html; charset=utf-8",
        "/demo/demo.js": "text/javascript; charset=utf-8",
        "/src/index.js": "text/javascript; charset=utf-8",
        "/vendor/onnxruntime-web/ort.wasm.min.mjs": "text/javascript; charset=utf-8",
        "/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm": "application/wasm",
        "/models/mnist-conv-z20/manifest.json": "application/json",
        "/models/mnist-conv-z20/decoder.onnx": "application/octet-stream",
        "/models/mnist-conv-z2/checkpoints/encoder.safetensors": "application/octet-stream",
        "/demo/assets/mnist-conv-z2.embeddings.json": "application/json",
    }
    for path, ctype in expected.items():
        status, headers, body = get(server + path)
        assert status == 200, path
        assert headers["Content-Type"] == ctype, path
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert int(headers["Content-Length"]) == len(body) > 0
    _, _, body = get(server + "/models/mnist-conv-z20/decoder.onnx")
    assert body == (ARTIFACTS / "mnist-conv-z20" / "decoder.onnx").read_bytes()


def test_config_names_the_models_and_the_scatter(server):
    _, _, body = get(server + "/config.json")
    assert json.loads(body) == {
        "model": "/models/mnist-conv-z20/",
        "explorer": "/models/mnist-conv-z2/",
        "embeddings": "/demo/assets/mnist-conv-z2.embeddings.json",
    }


def test_gzips_text_and_wasm_for_browsers_that_accept_it(server):
    path = "/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm"
    status, headers, body = get(server + path, gzip_ok=True)
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == ORT_STUBS["ort-wasm-simd-threaded.wasm"]
    _, headers, body = get(server + "/models/mnist-conv-z20/decoder.onnx", gzip_ok=True)
    assert "Content-Encoding" not in headers  # weights barely compress: sent as they are


@pytest.mark.parametrize(
    "path",
    [
        "/pyproject.toml",
        "/src/../../pyproject.toml",
        "/src/%2e%2e/%2e%2e/pyproject.toml",
        "/demo/../src/index.js",
        "/vendor/onnxruntime-web/ort.all.min.js",  # in dist, but not one the page needs
        "/models/mnist-conv-z20/../mnist-conv-z2/manifest.json",
        "/models/mnist-conv-z20/unlisted.txt",
        "/models/mnist-mlp-z20/manifest.json",  # a model that is not served
        "/models/mnist-conv-z20",
    ],
)
def test_serves_nothing_else(server, path):
    status, _, _ = get(server + path)
    assert status == 404, path


def fails(capsys, *argv: str, words: str) -> None:
    code = main(["web", *argv])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("vae-run: error: "), err
    assert words in lines[0], lines[0]


def test_cli_without_onnxruntime_web_files(capsys, monkeypatch, web_dir):
    shutil.rmtree(web_dir / "node_modules")
    monkeypatch.setattr(web_server, "WEB_DIR", web_dir)
    fails(capsys, "--port", "0", words="missing; run `npm ci --ignore-scripts` in web/")


def test_cli_without_the_web_folder(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(web_server, "WEB_DIR", tmp_path)
    fails(capsys, "--port", "0", words="needs a source checkout of vae-onnx")


def test_cli_port_in_use(capsys, monkeypatch, web_dir):
    monkeypatch.setattr(web_server, "WEB_DIR", web_dir)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        fails(capsys, "--port", port, words=f"--port {port}: cannot listen on 127.0.0.1")


def test_cli_explorer_must_be_2d(capsys, monkeypatch, web_dir):
    monkeypatch.setattr(web_server, "WEB_DIR", web_dir)
    fails(capsys, "--explorer", str(ARTIFACTS / "mnist-mlp-z20"), words="needs a 2-D model")


def test_cli_bad_model_dir(capsys, monkeypatch, web_dir, tmp_path):
    monkeypatch.setattr(web_server, "WEB_DIR", web_dir)
    fails(capsys, "--model", str(tmp_path / "nope"), words="model directory does not exist")


def test_a_2d_model_is_its_own_explorer(web_dir):
    site = web_server.build_site(ARTIFACTS / "mnist-conv-z2", None, web_dir)
    assert site.config["model"] == site.config["explorer"] == "/models/mnist-conv-z2/"


def test_a_model_without_its_scatter_gets_none(web_dir, tmp_path):
    copy = tmp_path / "my-z2"
    shutil.copytree(ARTIFACTS / "mnist-conv-z2", copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["name"] = "my-z2"
    (copy / "manifest.json").write_text(json.dumps(manifest))
    site = web_server.build_site(copy, None, web_dir)
    assert site.config["explorer"] == "/models/my-z2/" and site.config["embeddings"] is None


def test_build_site_refusal_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="the web demo is not here"):
        web_server.build_site(None, None, tmp_path)
