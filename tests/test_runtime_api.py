"""The VAE API against independent computations: bare ONNX Runtime sessions, numpy, and the
training code's own PyTorch losses; sampling, reproducibility, grids and atomic writes,
providers, thread-safety and import weight."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

import vae_runtime
import vae_runtime.engines.ort as providers_mod
from vae_runtime import (
    VAE,
    InputError,
    ProviderError,
    ProviderWarning,
    RunError,
    make_grid,
    save_grid,
)
from vae_runtime.sampling import LOGVAR_MAX, LOGVAR_MIN

torch = pytest.importorskip("torch")  # the reference losses; the fixture models need it too

L = 8
RNG = np.random.default_rng(1)
IMAGES = RNG.random((37, 1, 28, 28), dtype=np.float32)


@pytest.fixture(scope="module")
def conv_dir(model_dir_factory) -> Path:
    return model_dir_factory(arch="conv", latent_dim=L)


@pytest.fixture(scope="module")
def vae(conv_dir) -> VAE:
    return VAE(conv_dir, threads=1)


@pytest.fixture(scope="module")
def bare(conv_dir):
    """Plain ORT sessions on the same files: the independent reference."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    make = lambda role: ort.InferenceSession(  # noqa: E731
        str(conv_dir / f"{role}.onnx"), options, providers=["CPUExecutionProvider"]
    )
    return make("encoder"), make("decoder")


def ref_encode(bare, x):
    return bare[0].run(["mu", "logvar"], {"x": x})


def ref_decode(bare, z):
    return bare[1].run(["x_hat"], {"z": np.asarray(z, np.float32)})[0]


# ---- the graphs -----------------------------------------------------------------------------


def test_encode_and_embed_match_a_bare_session(vae, bare):
    mu, logvar = vae.encode(IMAGES)
    ref_mu, ref_logvar = ref_encode(bare, IMAGES)
    assert mu.shape == logvar.shape == (37, L) and mu.dtype == logvar.dtype == np.float32
    np.testing.assert_allclose(mu, ref_mu, atol=1e-6)
    np.testing.assert_allclose(logvar, ref_logvar, atol=1e-6)
    np.testing.assert_array_equal(vae.embed(IMAGES), mu)


def test_decode_matches_a_bare_session(vae, bare):
    z = RNG.standard_normal((11, L), dtype=np.float32)
    x = vae.decode(z)
    assert x.shape == (11, 1, 28, 28) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    np.testing.assert_allclose(x, ref_decode(bare, z), atol=1e-6)


def test_batches_larger_than_batch_size_run_in_chunks(conv_dir, vae, monkeypatch):
    small = VAE(conv_dir, threads=1, batch_size=5)
    np.testing.assert_allclose(small.encode(IMAGES)[0], vae.encode(IMAGES)[0], atol=1e-6)
    np.testing.assert_allclose(
        vae.encode(IMAGES, batch_size=4)[1], vae.encode(IMAGES)[1], atol=1e-6
    )
    z = RNG.standard_normal((23, L), dtype=np.float32)
    np.testing.assert_allclose(small.decode(z), vae.decode(z), atol=1e-6)
    sizes = []
    real_run = small._decoder.run

    class Spy:
        def run(self, names, feed):
            sizes.append(len(feed["z"]))
            return real_run(names, feed)

    monkeypatch.setattr(small, "_decoder", Spy())
    small.decode(z)
    assert sizes == [5, 5, 5, 5, 3]


def test_embed_iter_takes_an_image_source(vae, tmp_path):
    np.save(tmp_path / "x.npy", IMAGES)
    parts = list(vae.embed_iter(vae_runtime.open_images(tmp_path / "x.npy"), batch_size=16))
    assert [len(p) for p in parts] == [16, 16, 5]
    np.testing.assert_allclose(np.concatenate(parts), vae.embed(IMAGES), atol=1e-6)


def test_embed_iter_streams_per_chunk(vae):
    parts = list(vae.embed_iter((IMAGES[i : i + 10] for i in range(0, 37, 10)), batch_size=4))
    assert [len(p) for p in parts] == [4, 4, 2] * 3 + [4, 3]
    np.testing.assert_allclose(np.concatenate(parts), vae.embed(IMAGES), atol=1e-6)


# ---- sampling -------------------------------------------------------------------------------


def test_generate_decodes_the_documented_prior_stream(vae, bare):
    """seed s: block b of 1024 images draws from SeedSequence(s, spawn_key=(b,)) (the
    rule of docs/runtime.md); rng: that generator's next draws."""
    x = vae.generate(1030, seed=7)
    blocks = [np.random.SeedSequence(7).spawn(2)[b] for b in (0, 1)]
    z = np.concatenate(
        [
            np.random.default_rng(blocks[0]).standard_normal((1024, L), dtype=np.float32),
            np.random.default_rng(blocks[1]).standard_normal((6, L), dtype=np.float32),
        ]
    )
    np.testing.assert_allclose(x, ref_decode(bare, z), atol=1e-6)
    np.testing.assert_array_equal(vae.generate(1030, seed=7), x)
    assert not np.array_equal(vae.generate(20, seed=8), x[:20])
    rng = np.random.default_rng(7)
    y = vae.generate(20, rng=rng)
    z = np.random.default_rng(7).standard_normal((20, L), dtype=np.float32)
    np.testing.assert_allclose(y, ref_decode(bare, z), atol=1e-6)
    assert not np.array_equal(vae.generate(20, rng=rng), y)  # the generator moved on
    assert not np.array_equal(vae.generate(4), vae.generate(4))  # no seed: fresh entropy


def test_generation_is_identical_across_processes(conv_dir):
    code = textwrap.dedent(
        f"""
        import hashlib, sys
        from vae_runtime import VAE
        x = VAE({str(conv_dir)!r}, threads=1).generate(16, seed=3)
        sys.stdout.write(hashlib.sha256(x.tobytes()).hexdigest())
        """
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }
    assert len(runs) == 1


def test_sample_with_injected_eps_is_the_reparameterization(vae):
    mu = RNG.standard_normal((6, L)).astype(np.float32)
    logvar = RNG.uniform(-3, 2, (6, L)).astype(np.float32)
    eps = RNG.standard_normal((6, L)).astype(np.float32)
    z = vae.sample(mu, logvar, eps=eps)
    assert z.dtype == np.float32
    np.testing.assert_allclose(
        z, mu + np.exp(0.5 * logvar.astype(np.float64)) * eps, rtol=1e-5, atol=1e-6
    )
    eps3 = RNG.standard_normal((6, 4, L)).astype(np.float32)
    z3 = vae.sample(mu, logvar, eps=eps3)
    assert z3.shape == (6, 4, L)
    np.testing.assert_allclose(z3[:, 2], vae.sample(mu, logvar, eps=eps3[:, 2]), rtol=1e-6)


def test_sample_seed_and_n(vae):
    mu, logvar = np.zeros((3, L), np.float32), np.zeros((3, L), np.float32)
    z = vae.sample(mu, logvar, n=5, seed=0)
    assert z.shape == (3, 5, L)
    np.testing.assert_array_equal(
        z, np.random.default_rng(0).standard_normal((3, 5, L), dtype=np.float32)
    )
    np.testing.assert_array_equal(vae.sample(mu, logvar, seed=0), vae.sample(mu, logvar, seed=0))


def test_logvar_is_clamped_before_exp(vae):
    mu = np.zeros((1, L), np.float32)
    logvar = np.tile(np.array([1000.0, -1000.0], np.float32), L // 2)[None]
    z = vae.sample(mu, logvar, eps=np.ones((1, L), np.float32))
    expected = np.tile([math.exp(0.5 * LOGVAR_MAX), math.exp(0.5 * LOGVAR_MIN)], L // 2)[None]
    np.testing.assert_allclose(z, expected, rtol=1e-6)
    assert (LOGVAR_MIN, LOGVAR_MAX) == (-30.0, 20.0)


def test_sampling_statistics(vae):
    mu = np.full((1, L), 1.5, np.float32)
    logvar = np.full((1, L), math.log(4.0), np.float32)  # std 2
    z = vae.sample(mu, logvar, n=40000, seed=11)[0]
    assert abs(z.mean() - 1.5) < 0.03  # standard error 2 / sqrt(320000) = 0.0035
    assert abs(z.std() - 2.0) < 0.03
    corr = np.corrcoef(z[:, 0], z[:, 1])[0, 1]
    assert abs(corr) < 0.03  # dimensions independent
    prior = np.random.default_rng(5).standard_normal((20000, L), dtype=np.float32)
    assert abs(prior.mean()) < 0.01 and abs(prior.std() - 1) < 0.01


def test_reconstruct_decodes_mu_or_a_sample(vae, bare):
    mu, logvar = ref_encode(bare, IMAGES[:9])
    np.testing.assert_allclose(vae.reconstruct(IMAGES[:9]), ref_decode(bare, mu), atol=1e-6)
    z = mu + np.exp(0.5 * logvar) * np.random.default_rng(4).standard_normal(
        mu.shape, dtype=np.float32
    )
    np.testing.assert_allclose(
        vae.reconstruct(IMAGES[:9], sample=True, seed=4), ref_decode(bare, z), atol=1e-5
    )


def test_interpolate(vae, bare):
    a, b = IMAGES[0], IMAGES[1]
    mu = ref_encode(bare, IMAGES[:2])[0]
    strip = vae.interpolate(a, b, steps=5)
    assert strip.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(strip[0], ref_decode(bare, mu[:1])[0], atol=1e-5)
    np.testing.assert_allclose(strip[-1], ref_decode(bare, mu[1:])[0], atol=1e-5)
    np.testing.assert_allclose(strip[2], ref_decode(bare, mu.mean(0, keepdims=True))[0], atol=1e-5)


# ---- score ----------------------------------------------------------------------------------


def torch_negative_elbo(bare, x, eps):
    """The training loss (vae_train.losses) on ORT's mu, logvar and x_hat for the given eps."""
    from vae_train.losses import negative_elbo

    mu, logvar = ref_encode(bare, x)
    z = mu + np.exp(0.5 * logvar) * eps
    x_hat = ref_decode(bare, z)
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))  # noqa: E731
    return negative_elbo(t(x_hat), t(x), t(mu), t(logvar)).loss.double().numpy()


def test_score_k1_equals_the_training_loss_with_injected_eps(vae, bare):
    eps = RNG.standard_normal((37, L)).astype(np.float32)
    s = vae.score(IMAGES, eps=eps)
    assert s.shape == (37,) and s.dtype == np.float64
    np.testing.assert_allclose(s, torch_negative_elbo(bare, IMAGES, eps), rtol=1e-5)


def test_score_on_binary_mnist_like_images(vae, bare, data_dir):
    from vae_format.datasets import read_split

    x = read_split("mnist", "test", data_dir).images[:64].astype(np.float32)[:, None] / 255
    eps = RNG.standard_normal((64, L)).astype(np.float32)
    np.testing.assert_allclose(vae.score(x, eps=eps), torch_negative_elbo(bare, x, eps), rtol=1e-5)


def test_score_seed_uses_the_documented_stream_and_ignores_batch_size(vae):
    eps = np.random.default_rng(9).standard_normal((37, 3, L), dtype=np.float32)
    s = vae.score(IMAGES, k=3, seed=9)
    np.testing.assert_allclose(s, vae.score(IMAGES, k=3, eps=eps), rtol=1e-12)
    np.testing.assert_allclose(s, vae.score(IMAGES, k=3, seed=9, batch_size=7), rtol=1e-9)
    s1 = vae.score(IMAGES, seed=2)
    e1 = np.random.default_rng(2).standard_normal((37, L), dtype=np.float32)
    np.testing.assert_allclose(s1, vae.score(IMAGES, eps=e1), rtol=1e-12)


def test_importance_weighted_bound_against_torch(vae, bare):
    k = 6
    x = IMAGES[:10]
    eps = RNG.standard_normal((10, k, L)).astype(np.float32)
    mu, logvar = ref_encode(bare, x)
    t = lambda a: torch.from_numpy(np.asarray(a)).double()  # noqa: E731
    std = torch.exp(0.5 * t(logvar))[:, None]
    z = t(mu)[:, None] + std * t(eps)
    x_hat = ref_decode(bare, z.float().numpy().reshape(-1, L)).reshape(10, k, -1)
    target = t(x).reshape(10, 1, -1).expand(-1, k, -1)
    log_px = -torch.nn.functional.binary_cross_entropy(t(x_hat), target, reduction="none").sum(-1)
    normal = torch.distributions.Normal
    log_pz = normal(0.0, 1.0).log_prob(z).sum(-1)
    log_qz = normal(t(mu)[:, None], std).log_prob(z).sum(-1)
    expected = -(torch.logsumexp(log_px + log_pz - log_qz, dim=1) - math.log(k))
    np.testing.assert_allclose(vae.score(x, k=k, eps=eps), expected.numpy(), rtol=1e-5)


def test_likelihood_terms_against_torch():
    import torch.nn.functional as F

    from vae_runtime import likelihood as lik
    from vae_train.losses import kl_to_standard_normal, reconstruction_nll

    x_hat = RNG.random((4, 784)).astype(np.float32)
    x_hat[0, :10] = 0.0  # log(0) and log(1 - 1): the -100 clamp
    x_hat[1, :10] = 1.0
    x = RNG.random((4, 784)).astype(np.float32)
    t = torch.from_numpy
    np.testing.assert_allclose(
        lik.reconstruction_nll(x_hat, x),
        F.binary_cross_entropy(t(x_hat), t(x), reduction="none").sum(1).numpy(),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        lik.reconstruction_nll(x_hat, x, "gaussian", 0.1),
        reconstruction_nll(t(x_hat), t(x), "gaussian", 0.1).numpy(),
        rtol=1e-5,
    )
    mu = RNG.standard_normal((4, L)).astype(np.float32)
    lv = RNG.standard_normal((4, L)).astype(np.float32)
    np.testing.assert_allclose(
        lik.kl_to_standard_normal(mu, lv), kl_to_standard_normal(t(mu), t(lv)).numpy(), rtol=1e-5
    )
    values = np.array([[1000.0, 1000.0], [-1000.0, -1001.0]])
    np.testing.assert_allclose(
        lik.log_mean_exp(values), torch.logsumexp(t(values), 1).numpy() - math.log(2)
    )


def test_gaussian_likelihood_model(conv_dir, tmp_path, bare):
    """A model whose manifest and graphs say gaussian, sigma 0.2, scores by that formula."""
    import hashlib
    import shutil

    import onnx

    d = Path(shutil.copytree(conv_dir, tmp_path / "g"))
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["likelihood"] = {"name": "gaussian", "sigma": 0.2}
    for role in ("encoder", "decoder"):
        model = onnx.load(d / f"{role}.onnx")
        for prop in model.metadata_props:
            if prop.key == "vae_onnx.likelihood":
                prop.value = "gaussian"
        data = model.SerializeToString()
        (d / f"{role}.onnx").write_bytes(data)
        manifest["files"][f"{role}.onnx"].update(
            sha256=hashlib.sha256(data).hexdigest(), bytes=len(data)
        )
    (d / "manifest.json").write_text(json.dumps(manifest))
    vae = VAE(d, threads=1)
    eps = RNG.standard_normal((5, L)).astype(np.float32)
    mu, logvar = ref_encode(bare, IMAGES[:5])
    x_hat = ref_decode(bare, mu + np.exp(0.5 * logvar) * eps).reshape(5, -1).astype(np.float64)
    x = IMAGES[:5].reshape(5, -1)
    recon = ((x - x_hat) ** 2).sum(1) / (2 * 0.04) + 392 * math.log(2 * math.pi * 0.04)
    kl = -0.5 * (1 + logvar - mu.astype(np.float64) ** 2 - np.exp(logvar.astype(np.float64))).sum(1)
    np.testing.assert_allclose(vae.score(IMAGES[:5], eps=eps), recon + kl, rtol=1e-5)


# ---- grids and atomic writes ----------------------------------------------------------------


def test_save_grid_layout(tmp_path):
    x = RNG.random((10, 1, 28, 28), dtype=np.float32)
    path = save_grid(x, tmp_path / "g.png", nrow=4, pad=3)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (3 * 31 + 3, 4 * 31 + 3)
    for i in range(10):
        r, c = divmod(i, 4)
        tile = grid[3 + r * 31 : 3 + r * 31 + 28, 3 + c * 31 : 3 + c * 31 + 28]
        np.testing.assert_array_equal(tile, np.floor(x[i, 0] * 255 + 0.5).astype(np.uint8))
    assert grid[:3].max() == 0 and grid[2 * 31 + 3 :, 2 * 31 + 3 :].max() == 0  # pad, empty cells
    np.testing.assert_array_equal(make_grid(x, nrow=4, pad=3), grid)
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left


def test_vae_save_grid_is_the_standalone_function(vae, tmp_path):
    x = vae.generate(8, seed=0)
    vae.save_grid(x, tmp_path / "a.png")
    vae_runtime.save_grid(x, tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


@pytest.mark.parametrize(
    ("images", "name", "words"),
    [
        (np.zeros((0, 28, 28), np.float32), "g.png", "no images"),
        (np.zeros((2, 28, 28), np.float32), "g.jpg", ".png"),
        (np.full((2, 28, 28), 2.0, np.float32), "g.png", "[0, 1]"),
    ],
)
def test_save_grid_refusals_leave_the_old_file(tmp_path, images, name, words):
    (tmp_path / name).write_bytes(b"old")
    with pytest.raises(InputError, match=words.replace("[", r"\[").replace("]", r"\]")):
        save_grid(images, tmp_path / name)
    assert (tmp_path / name).read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == [name]


def test_a_crash_while_writing_leaves_the_old_file(tmp_path, monkeypatch):
    (tmp_path / "g.png").write_bytes(b"old")

    def explode(self, fp, format=None, **params):
        Path(fp).write_bytes(b"half a PNG")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", explode)
    with pytest.raises(OSError, match="disk full"):
        save_grid(np.zeros((2, 28, 28), np.float32), tmp_path / "g.png")
    assert (tmp_path / "g.png").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["g.png"]


# ---- providers and sessions -----------------------------------------------------------------


def test_info_reports_providers_in_use(vae):
    info = vae.info
    assert info["providers"] == info["decoder_providers"] == ["CPUExecutionProvider"]
    assert info["providers_requested"] == ["CPUExecutionProvider"]
    assert "CPUExecutionProvider" in info["providers_available"]
    assert info["onnxruntime"] == ort.__version__
    json.dumps(info)  # plain data


@pytest.mark.parametrize(
    "spec",
    [
        "cpu",
        "CPU",
        ["cpu"],
        ["CPUExecutionProvider"],
        ("CPUExecutionProvider", {}),
        [("CPUExecutionProvider", {})],
    ],
)
def test_cpu_provider_spellings(conv_dir, spec):
    assert VAE(conv_dir, providers=spec, threads=1).info["providers"] == ["CPUExecutionProvider"]


def test_unavailable_provider_is_refused_with_the_available_list(conv_dir, monkeypatch):
    monkeypatch.setattr(providers_mod, "available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(
        ProviderError, match=r"CUDAExecutionProvider.*available: CPUExecutionProvider"
    ):
        VAE(conv_dir, providers="cuda")
    with pytest.raises(ProviderError, match="TensorrtExecutionProvider"):
        VAE(conv_dir, providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])


def test_fallback_runs_on_cpu_with_a_warning(conv_dir, monkeypatch):
    monkeypatch.setattr(providers_mod, "available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.warns(ProviderWarning, match="falling back"):
        vae = VAE(conv_dir, providers="cuda", fallback=True, threads=1)
    assert vae.info["providers"] == ["CPUExecutionProvider"]


def test_silent_cpu_fallback_by_onnxruntime_is_reported(conv_dir, monkeypatch, capsys):
    """If ORT is asked for CUDA that then fails to start, the session lands on CPU: warn, and
    keep ORT's own fallback banner off stdout. Where CUDA works, a GPU that does not exist
    makes it fail for real; elsewhere this build is made to list CUDA."""
    providers: object = "cuda"
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers = [("CUDAExecutionProvider", {"device_id": 99}), "CPUExecutionProvider"]
    else:
        monkeypatch.setattr(
            providers_mod,
            "available_providers",
            lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"],
        )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vae = VAE(conv_dir, providers=providers, threads=1)
    reported = [str(w.message) for w in caught if issubclass(w.category, ProviderWarning)]
    assert reported and all("runs on CPUExecutionProvider" in m for m in reported)
    assert vae.info["providers"] == ["CPUExecutionProvider"]
    assert capsys.readouterr().out == ""
    if providers != "cuda":  # ORT's reason, from the banner it printed
        assert all("device" in m.lower() for m in reported), reported


@pytest.mark.filterwarnings("ignore::vae_runtime.ProviderWarning")  # each session warns
@pytest.mark.filterwarnings("ignore:Specified provider:UserWarning")  # ORT's, on a CPU build
def test_ort_prints_during_session_creation_stay_off_stdout_but_are_not_lost(capfd) -> None:
    """Sessions that ask for a GPU provider are made with stdout caught (ORT's fallback
    banner); eight threads doing so while another prints: every line printed meanwhile still
    reaches stdout, and stdout is the real one afterwards. This build has no CUDA: each
    session warns that it runs on the CPU."""
    path = SHIPPED_INT8 / "encoder.int8.onnx"  # a graph without external weights
    model = path.read_bytes()
    real = sys.stdout
    stop = threading.Event()

    printed = []

    def chatter() -> None:
        i = 0
        while not stop.is_set() or i < 50:
            print(f"line {i}")
            i += 1
        printed.append(i)

    def make(_: int) -> None:
        options = providers_mod.session_options(1, "all", False)
        asked = ["CUDAExecutionProvider", providers_mod.CPU]
        providers_mod.create_session(model, path, asked, options)

    printer = threading.Thread(target=chatter)
    printer.start()
    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    printer.join()
    assert sys.stdout is real
    # Every line whole, none lost, in the order printed (a print's text and its newline are
    # two writes: one of them used to land in a swapped-out buffer and be dropped).
    assert capfd.readouterr().out.splitlines() == [f"line {i}" for i in range(printed[0])]


ORT_BANNER = (  # what ORT's InferenceSession prints when a provider fails to start
    "*************** EP Error ***************",
    "EP Error [ONNXRuntimeError] : 1 : FAIL : provider_bridge_ort.cc:1:\n"
    "Invalid device ID: 99, must be < 1 when using ['CUDAExecutionProvider']",
    "Falling back to ['CPUExecutionProvider'] and retrying.",
    "****************************************",
)


def test_ort_banner_is_kept_back_while_other_lines_pass_in_order(capfd) -> None:
    """The banner printed by the thread making the session goes to the caught list, not
    stdout; that thread's other lines and another thread's lines (printed while the banner is
    half written) reach stdout, and so does a print begun inside the block and ended after."""
    from vae_runtime.engines.ort_banner import banner_caught, banner_reason

    with banner_caught() as banner:
        print("before")
        print(*ORT_BANNER[:2], sep="\n")
        other = threading.Thread(target=print, args=("other thread",))
        other.start()
        other.join()
        print(*ORT_BANNER[2:], sep="\n")
        sys.stdout.write("unfinished")
        late = sys.stdout  # as another thread's print would hold it
    late.write(" line\n")
    print("after")
    assert sys.stdout is not late
    assert capfd.readouterr().out == "before\nother thread\nunfinished line\nafter\n"
    assert "".join(banner) == "\n".join(ORT_BANNER) + "\n"
    reason = banner_reason(banner)
    assert reason.endswith("Invalid device ID: 99, must be < 1"), reason


def test_ort_banner_catch_works_without_a_stdout(monkeypatch) -> None:
    """Under pythonw or a daemon sys.stdout may be None: print drops text, and so does the
    filter, which still keeps the banner for the warning and puts None back."""
    from vae_runtime.engines.ort_banner import banner_caught

    monkeypatch.setattr(sys, "stdout", None)
    with banner_caught() as banner:
        print("dropped")
        print(*ORT_BANNER, sep="\n")
    assert sys.stdout is None
    assert "".join(banner) == "\n".join(ORT_BANNER) + "\n"


def test_gpu_failure_inside_a_run_is_an_error_not_a_silent_cpu_fallback(conv_dir) -> None:
    """ORT would print "EP Error" to stdout and switch to the CPU mid-run; the runtime turns
    its fallback off, so such a failure is a one-line RunError."""
    vae = VAE(conv_dir, threads=1)
    assert vae._encoder.session._enable_fallback is False  # ORT's own switch, read back

    def fail(names, feeds):
        raise providers_mod._ort_state.EPFail("CUDA failure 2: out of memory")

    vae._encoder._session_run = fail
    with pytest.raises(RunError, match=r"encoder.onnx: ONNX Runtime failed to run it \(CUDA"):
        vae.embed(RNG.random((2, 28, 28), dtype=np.float32))


@pytest.mark.parametrize("spec", [123, [], [42], [("CPUExecutionProvider", "opts")]])
def test_malformed_provider_specs(conv_dir, spec):
    with pytest.raises(ProviderError):
        VAE(conv_dir, providers=spec)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"threads": -1}, "threads"),
        ({"threads": 1.5}, "threads"),
        ({"optimization": "max"}, "optimization"),
    ],
)
def test_bad_session_options(conv_dir, kwargs, words):
    with pytest.raises(InputError, match=words):
        VAE(conv_dir, **kwargs)


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_optimization_levels_give_the_same_results(conv_dir, vae, level):
    other = VAE(conv_dir, threads=1, optimization=level)
    np.testing.assert_allclose(other.embed(IMAGES), vae.embed(IMAGES), atol=1e-5)


SHIPPED_INT8 = Path(__file__).resolve().parents[1] / "artifacts" / "mnist-conv-z20"


def test_a_variants_session_settings_are_honoured():
    """The int8 variant records min_optimization "extended", optimization "all": it runs at
    "all" unless told otherwise, at "extended" when asked, and a lower level is refused."""
    session = VAE(SHIPPED_INT8, variant="int8", threads=1).manifest["variants"]["int8"]["session"]
    assert session == {"min_optimization": "extended", "optimization": "all"}
    assert VAE(SHIPPED_INT8, variant="int8", threads=1).info["optimization"] == "all"
    extended = VAE(SHIPPED_INT8, variant="int8", threads=1, optimization="extended")
    assert extended.info["optimization"] == "extended"
    for level in ("basic", "disable"):
        with pytest.raises(InputError, match=f"optimization='{level}' is below .* 'extended'"):
            VAE(SHIPPED_INT8, variant="int8", optimization=level)
    # The default graphs have no such entry: every level loads.
    assert VAE(SHIPPED_INT8, threads=1, optimization="basic").info["optimization"] == "basic"


def test_large_batches_run_in_chunks_with_the_same_results(conv_dir):
    """rows_per_run splits a batch into consecutive runs; the outputs are those of one run."""
    x = RNG.random((300, 1, 28, 28), dtype=np.float32)
    whole = VAE(conv_dir, threads=1, batch_size=300, engine_options={"rows_per_run": 0})
    chunked = VAE(conv_dir, threads=1, batch_size=300, engine_options={"rows_per_run": 128})
    assert chunked.info["rows_per_run"] == 128
    for got, want in zip(chunked.encode(x), whole.encode(x), strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert got.shape == (300, L)
    z = RNG.standard_normal((257, L)).astype(np.float32)
    np.testing.assert_allclose(chunked.decode(z), whole.decode(z), atol=1e-6)
    runner, seen = chunked._encoder, []
    real = runner._session_run
    runner._session_run = lambda names, feeds: seen.append(len(feeds["x"])) or real(names, feeds)
    chunked.encode(x)
    assert seen == [128, 128, 44]  # the rows each ORT run received
    with pytest.raises(InputError, match="rows_per_run"):
        VAE(conv_dir, engine_options={"rows_per_run": -1})


def test_rows_per_run_defaults_to_whole_batches_on_a_gpu_provider(conv_dir):
    """Runs of 128 rows suit MLAS's caches; on CUDA they cost a third of the throughput (an
    H100: 0.63-0.79x of one run), so a session on a GPU provider runs a batch whole."""
    vae = VAE(conv_dir, threads=1)
    assert vae.info["rows_per_run"] == providers_mod.ROWS_PER_RUN
    assert vae.info["decoder_rows_per_run"] == providers_mod.ROWS_PER_RUN

    class ReportsCuda:  # the real CPU session, reporting the providers a CUDA one has
        def __init__(self, real):
            self._real = real

        def __getattr__(self, name):
            return getattr(self._real, name)

        def get_providers(self):
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    seen = []
    session = ReportsCuda(vae._encoder.session)
    session.run = lambda names, feeds: (
        seen.append(len(feeds["x"])) or session._real.run(names, feeds)
    )
    runner = providers_mod.OrtRunner(session, conv_dir / "encoder.onnx")
    assert runner.rows_per_run == 0 and runner.describe()["rows_per_run"] == 0
    x = RNG.random((300, 1, 28, 28), dtype=np.float32)
    runner.run(None, {"x": x})
    assert seen == [300]
    assert providers_mod.OrtRunner(session, conv_dir, rows_per_run=64).rows_per_run == 64


def test_conflicting_onnxruntime_installs_warn(conv_dir, monkeypatch):
    monkeypatch.setattr(
        providers_mod, "installed_ort_distributions", lambda: ("onnxruntime", "onnxruntime-gpu")
    )
    with pytest.warns(ProviderWarning, match="onnxruntime, onnxruntime-gpu"):
        VAE(conv_dir, threads=1)


def test_this_environment_has_one_onnxruntime():
    providers_mod.installed_ort_distributions.cache_clear()
    assert providers_mod.installed_ort_distributions() in (("onnxruntime",), ("onnxruntime-gpu",))


def test_two_distributions_in_one_site_folder_are_detected(tmp_path, monkeypatch):
    """A site folder where onnxruntime and onnxruntime-gpu both wrote `onnxruntime/`."""
    (tmp_path / "onnxruntime").mkdir()
    (tmp_path / "onnxruntime" / "__init__.py").write_text("")
    for dist, name in (
        ("onnxruntime-1.31.1", "onnxruntime"),
        ("onnxruntime_gpu-1.31.1", "onnxruntime-gpu"),
    ):
        info = tmp_path / f"{dist}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.31.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        providers_mod.ort, "__file__", str(tmp_path / "onnxruntime" / "__init__.py")
    )
    providers_mod.installed_ort_distributions.cache_clear()
    try:
        assert providers_mod.installed_ort_distributions() == ("onnxruntime", "onnxruntime-gpu")
        with pytest.warns(ProviderWarning, match="Keep exactly one"):
            providers_mod.warn_if_conflicting_install()
    finally:
        providers_mod.installed_ort_distributions.cache_clear()


@pytest.mark.cuda
@pytest.mark.skipif(
    "CUDAExecutionProvider" not in ort.get_available_providers(),
    reason="CUDAExecutionProvider is not available in this onnxruntime build "
    "(install vae-onnx[gpu] on a CUDA machine)",
)
def test_cuda_matches_cpu(conv_dir, vae):
    gpu = VAE(conv_dir, providers="cuda")
    assert gpu.info["providers"][0] == "CUDAExecutionProvider"
    assert gpu.info["rows_per_run"] == 0  # whole batches on the GPU
    np.testing.assert_allclose(gpu.embed(IMAGES), vae.embed(IMAGES), atol=1e-4)
    z = RNG.standard_normal((8, L), dtype=np.float32)
    np.testing.assert_allclose(gpu.decode(z), vae.decode(z), atol=1e-4)


# ---- concurrency and overhead ---------------------------------------------------------------


def test_one_vae_shared_by_eight_threads(vae):
    inputs = [IMAGES[i % 30 : i % 30 + 1 + i % 7] for i in range(200)]
    latents = [RNG.standard_normal((1 + i % 5, L), dtype=np.float32) for i in range(200)]

    def call(i):
        kind = i % 3
        if kind == 0:
            return vae.encode(inputs[i])
        if kind == 1:
            return vae.decode(latents[i])
        return vae.generate(1 + i % 4, seed=i)

    serial = [call(i) for i in range(200)]
    results: dict[int, list] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def worker(t):
        try:
            start.wait()
            order = list(range(200))
            np.random.default_rng(t).shuffle(order)  # each thread its own interleaving
            out = [None] * 200
            for i in order:
                out[i] = call(i)
            results[t] = out
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for out in results.values():
        for got, want in zip(out, serial, strict=True):
            if isinstance(want, tuple):
                for g, w in zip(got, want, strict=True):
                    np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_array_equal(got, want)
    assert len(results) == 8


# ---- import weight --------------------------------------------------------------------------


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_cold_start_imports_stay_light(conv_dir):
    """A fresh process: import, load, generate 64; Pillow and tqdm stay unimported. (Time
    and memory of this path are benchmark figures: `vae-run bench` prints them.)"""
    code = textwrap.dedent(
        f"""
        import json, sys, time
        t0 = time.perf_counter()
        import vae_runtime
        light = not any(m in sys.modules for m in ("PIL", "tqdm", "torch", "onnx"))
        x = vae_runtime.VAE({str(conv_dir)!r}).generate(64, seed=0)
        seconds = time.perf_counter() - t0
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(json.dumps({{"light": light, "seconds": seconds, "mb": int(status.split()[0]) / 1024,
                           "still_light": not any(m in sys.modules for m in ("PIL", "tqdm"))}}))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "VAE_ONNX_MODEL"}
    out = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        ).stdout
    )
    assert out["light"] and out["still_light"], out
