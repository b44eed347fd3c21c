"""The OpenVINO engine against ONNX Runtime on every shipped model: f32 matches, bf16 stays
within its test negative ELBO budget, int8 variants load, and nothing unverified is read.
Skipped where the `openvino` extra is not installed (`make test` installs it)."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from vae_format import Manifest, read_verified
from vae_runtime import VAE, InputError, ModelFormatError
from vae_runtime.engine_parity import (
    BF16_MAX_NELBO_CHANGE,
    F32_MAX_ABS,
    load_runners,
    parity,
    reference_runners,
)
from vae_runtime.evaluate import load_split

pytest.importorskip("openvino", reason="the openvino extra is not installed")
from vae_runtime.engines import openvino as ov_engine

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "artifacts").glob("*/manifest.json"))


@pytest.fixture(scope="module")
def test_images(data_dir: Path):
    cache: dict[str, np.ndarray] = {}

    def get(dataset: str) -> np.ndarray:
        if dataset not in cache:
            images, _ = load_split(data_dir, dataset, "test")
            cache[dataset] = images[:, None].astype(np.float32) / 255
        return cache[dataset]

    return get


@pytest.mark.parametrize("model_dir", SHIPPED, ids=[p.name for p in SHIPPED])
@pytest.mark.parametrize("precision", ["f32", "bf16"])
def test_shipped_model_parity(model_dir: Path, precision: str, test_images) -> None:
    manifest = Manifest.load(model_dir)
    engine = ov_engine.create({"threads": 1, "precision": precision})
    x = test_images(manifest.raw["dataset"]["name"])
    found = parity(load_runners(engine, manifest), reference_runners(manifest), manifest, x)
    if precision == "f32":
        assert max(found["max_abs"].values()) <= F32_MAX_ABS, found
    assert found["nelbo_change"] <= BF16_MAX_NELBO_CHANGE, found
    assert found["test_images"] == 10000


@pytest.mark.parametrize("model_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_int8_variant_runs_in_int8_close_to_onnxruntime(model_dir: Path) -> None:
    manifest = Manifest.load(model_dir)
    engine = ov_engine.create({"threads": 1, "precision": "f32"})
    runners = load_runners(engine, manifest, "int8")
    z = np.random.default_rng(0).standard_normal((64, manifest.latent_dim)).astype(np.float32)
    want = VAE(model_dir, variant="int8", threads=1).decode(z)
    (got,) = runners["decoder"].run(["x_hat"], {"z": z})
    # Two int8 engines round differently; both stay near the float decoder's output.
    assert np.abs(got - want).mean() <= 0.01
    assert "u8" in runners["decoder"].describe()["execution_precision"]  # uint8 activations


def test_static_shapes_match_the_dynamic_graph() -> None:
    manifest = Manifest.load(SHIPPED[0])
    x = np.random.default_rng(0).random((1100, 1, 28, 28), dtype=np.float32)
    dynamic = load_runners(ov_engine.create({"static_batches": 0, "precision": "f32"}),
                           manifest)["encoder"]  # fmt: skip
    static = load_runners(ov_engine.create({"static_batches": 2, "precision": "f32"}),
                          manifest)["encoder"]  # fmt: skip
    for n in (1, 7, 64, 7, 1100):
        np.testing.assert_allclose(static.run(None, {"x": x[:n]})[0],
                                   dynamic.run(None, {"x": x[:n]})[0], atol=1e-5)  # fmt: skip
    assert static.describe()["static_shapes_compiled"] == [7, 64]  # 2 kept; 1100 > STATIC_MAX
    assert dynamic.describe()["static_shapes_compiled"] == []


def test_runner_is_thread_safe() -> None:
    manifest = Manifest.load(SHIPPED[0])
    runner = load_runners(ov_engine.create({"threads": 1}), manifest)["decoder"]
    zs = [np.random.default_rng(i).standard_normal((16, manifest.latent_dim)).astype(np.float32)
          for i in range(4)]  # fmt: skip
    want = [runner.run(None, {"z": z})[0] for z in zs]
    got: dict[int, list[np.ndarray]] = {}

    def work(i: int) -> None:
        got[i] = [runner.run(None, {"z": zs[i]})[0] for _ in range(20)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        assert all(np.array_equal(g, want[i]) for g in got[i])


def test_describe_says_what_was_chosen() -> None:
    engine = ov_engine.create({})
    facts = engine.describe()
    assert facts["precision"] == ov_engine.machine_precision(engine._core)
    assert facts["precision_chosen_by"] == "machine"
    assert ov_engine.create({"precision": "f32"}).describe()["precision_chosen_by"] == "argument"
    runner = load_runners(ov_engine.create({"precision": "f32"}), Manifest.load(SHIPPED[0]))
    assert set(runner["encoder"].describe()["execution_precision"]) == {"f32"}
    assert [t.name for t in runner["encoder"].outputs] == ["mu", "logvar"]
    assert runner["encoder"].metadata["vae_onnx.role"] == "encoder"


@pytest.mark.parametrize(
    ("options", "match"),
    [({"precision": "fp16"}, "precision must be"), ({"threads": -1}, "threads must be"),
     ({"spinning": False}, "no option spinning"), ({"static_batches": True}, "static_batches")],
)  # fmt: skip
def test_bad_options_are_refused(options, match) -> None:
    with pytest.raises(InputError, match=match):
        ov_engine.create(options)


def test_never_opens_the_files_a_graph_names(tmp_path: Path, monkeypatch) -> None:
    """OpenVINO given raw bytes reads external data relative to the working directory; the
    engine inlines the verified bytes, so a planted file there changes nothing, and without
    the verified bytes the graph is refused."""
    model = Path(shutil.copytree(SHIPPED[0], tmp_path / "model"))
    manifest = Manifest.load(model)
    rel = manifest.graphs["encoder"]
    (ext,) = manifest.external_files("encoder")
    planted = tmp_path / "cwd" / ext
    planted.parent.mkdir(parents=True)
    planted.write_bytes(os.urandom(len(read_verified(manifest, ext))))
    monkeypatch.chdir(tmp_path / "cwd")
    engine = ov_engine.create({"precision": "f32"})
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    runner = engine.load(read_verified(manifest, rel), {ext: read_verified(manifest, ext)}, model)
    want = reference_runners(manifest)["encoder"].run(["mu"], {"x": x})[0]
    np.testing.assert_allclose(runner.run(["mu"], {"x": x})[0], want, atol=F32_MAX_ABS)
    with pytest.raises(ModelFormatError, match="not one of the verified files"):
        engine.load(read_verified(manifest, rel), {}, model / rel)


def test_vae_backend_openvino_end_to_end(data_dir: Path) -> None:
    """Through the seam: VAE(backend="openvino") loads, checks and runs like the default."""
    vae = VAE(SHIPPED[0], backend="openvino", threads=1, engine_options={"precision": "f32"})
    ref = VAE(SHIPPED[0], threads=1)
    x = np.random.default_rng(0).random((300, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(vae.embed(x, batch_size=128), ref.embed(x), atol=F32_MAX_ABS)
    np.testing.assert_allclose(vae.score(x, seed=0), ref.score(x, seed=0), rtol=1e-4)
    facts = vae.info
    assert facts["backend"] == "openvino" and facts["precision"] == "f32"
    with pytest.raises(InputError, match="no option providers"):
        VAE(SHIPPED[0], backend="openvino", providers="cuda")
