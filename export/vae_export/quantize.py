"""The int8 variant: static QDQ quantization calibrated on training images.

How a graph is quantized (ReLU folded into its producer, one-channel Convs in float, the
phase decoder's last layer composed, ...) is int8_recipe.py's; the decoder's sigmoid output
always stays float: rounding Bernoulli means to steps of 1/255 costs about 3 nats per
image of BCE, whereas quantizing the layers themselves costs a few tenths.

Each graph gets the fastest recipe that stays within the ELBO budget and at least 3.5x
smaller (see _choose_recipes): "int8", "int8-float-last" (the final layer, which makes the
decoder's logits, in float) or "int8-float-outputs" (int8 weights and inputs, float
outputs: precise but no faster than fp32). The variant as a whole is then held to its own
bounds (INT8_TOLERANCE) against the PyTorch checkpoint and to at most 1 nat of test
negative ELBO against the fp32 graphs, all recorded in the manifest. A recipe is only
chosen if its graph meets INT8_TOLERANCE on the rows ``vae-export verify --variant int8``
checks (single images, batches, uniform noise), so every shipped variant passes verify.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from vae_export import graphs, int8_recipe, parity, validate, variant, verify
from vae_export.builder import changed_model_dir
from vae_export.data import as_float, prior_latents, sample_test_images, split_images
from vae_export.errors import ValidationError
from vae_export.int8_recipe import QUANTIZED_OPS, RECIPES, last_layer
from vae_runtime import likelihood as lik
from vae_runtime.sampling import clamp_logvar, reparameterize

VARIANT = "int8"
FILES = {"encoder": "encoder.int8.onnx", "decoder": "decoder.int8.onnx"}
INPUTS = {"encoder": "x", "decoder": "z"}
METHOD = (
    "onnxruntime static QDQ, per-channel int8 weights, uint8 activations, percentile "
    f"calibration ({int8_recipe.CALIBRATION_PERCENTILE}); "
    "Conv/ConvTranspose/Gemm/MatMul, ReLU folded into the producer's output range, "
    "one-channel Convs kept float (see int8_recipe.py; sigmoid output kept float)"
)
# Bounds for int8 against the fp32 PyTorch checkpoint: mean abs error per output, and the
# change in mean test negative ELBO (nats per image).
INT8_TOLERANCE = {"mean_abs": 0.05}
MAX_NELBO_CHANGE = 1.0
MIN_SIZE_RATIO = 3.5  # each int8 graph at least this much smaller than fp32
# Share of the encoder's calibration images replaced by uniform noise: ranges calibrated on
# digits alone clipped noise's activations (mnist-mlp-z20 logvar off by 0.29 on noise), and
# far-from-data inputs are what the out-of-distribution score must still rank.
NOISE_SHARE = 0.05
DECODER_MARGIN = 0.9  # the decoder is chosen against 90% of the budget; the rest is margin
# The recipes (in order of speed) and how each quantizes: int8_recipe.py.
__all__ = ["QUANTIZED_OPS", "RECIPES", "add_int8_variant", "last_layer"]


def add_int8_variant(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    calibration_size: int = 2000,
    seed: int = 0,
    eval_size: int | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Quantize ``model_dir``'s graphs, check them, and add them as variant "int8"."""
    check = variant.prepare(model_dir, data_dir, "quantize", eval_size=eval_size, seed=seed)
    source = check.source
    calib = _calibration_data(check, data_dir, calibration_size, seed)
    probe = sample_test_images(source.dataset, data_dir, max(parity.BATCH_SIZES))
    files = source.graph_files()
    fp32 = {r: validate.ort_session(str(source.path / f)) for r, f in files.items()}
    with changed_model_dir(source.path) as builder:
        t0 = time.perf_counter()
        recipes = _quantize_graphs(check, builder.root, fp32, calib, probe)
        seconds = time.perf_counter() - t0
        int8 = {r: validate.ort_session(str(builder.root / f)) for r, f in FILES.items()}
        rows = _parity(check, int8, probe)
        for rel in FILES.values():
            builder.add_existing(rel, "graph")
        quality = variant.score(builder, check, VARIANT, FILES, MAX_NELBO_CHANGE)
        info = variant.entry(
            FILES,
            method=METHOD,
            command=command,
            tolerance=INT8_TOLERANCE,
            max_nelbo_change=MAX_NELBO_CHANGE,
            rows=rows,
            quality=quality,
            size_ratio={
                r: source.fp32_graph_bytes(r) / (builder.root / f).stat().st_size
                for r, f in FILES.items()
            },
            seconds=seconds,
            recipes=recipes,
            session=dict(int8_recipe.SESSION),
            calibration={
                "dataset": source.dataset,
                "split": "train",
                "images": calibration_size,
                "uniform_noise": NOISE_SHARE,
                "latents": "posterior samples of those images + N(0,I) draws",
                "seed": seed,
            },
            speed=_speed(check, fp32, int8),
        )
        builder.add_variant(VARIANT, FILES, info)
    return info


def _calibration_data(
    check: variant.VariantCheck, data_dir: str | Path, size: int, seed: int
) -> dict[str, np.ndarray]:
    """Per role, the inputs to calibrate on: training images (NOISE_SHARE of them uniform
    noise instead) for the encoder; posterior samples of those images and prior draws for
    the decoder."""
    train = split_images(check.source.dataset, "train", data_dir, "int8 calibration")
    rng = np.random.default_rng(seed)
    x = as_float(train[rng.choice(len(train), size, replace=False)])
    posterior = check.fp32.sample(*check.fp32.encode(x), seed=seed)
    prior = prior_latents(check.source.latent_dim, size // 2, seed)
    noisy = rng.random(size) < NOISE_SHARE
    x[noisy] = rng.random((int(noisy.sum()), *x.shape[1:]), dtype=np.float32)
    return {"encoder": x, "decoder": np.concatenate([posterior, prior])}


def _role_rows(
    check: variant.VariantCheck, role: str, session: Any, probe: np.ndarray
) -> list[parity.ParityRow]:
    """One int8 graph against the PyTorch checkpoint, on verify's rows."""
    ckpt, sizes = check.source.checkpoint, parity.BATCH_SIZES
    if role == "encoder":
        return verify.encoder_rows(ckpt.encoder, session, probe, sizes)
    return verify.decoder_rows(ckpt.decoder, session, check.source.latent_dim, sizes)


def _parity(
    check: variant.VariantCheck, sessions: dict[str, Any], probe: np.ndarray
) -> list[parity.ParityRow]:
    """The int8 graphs against the PyTorch checkpoint, held to INT8_TOLERANCE."""
    rows = [r for role in FILES for r in _role_rows(check, role, sessions[role], probe)]
    parity.require_within(rows, INT8_TOLERANCE)
    return rows


def _speed(
    check: variant.VariantCheck, fp32: dict[str, Any], int8: dict[str, Any]
) -> dict[str, int]:
    """Images per second at batch 256, fp32 graphs against int8 ones (ORT, CPU)."""
    data = {"encoder": check.test_x[:256], "decoder": prior_latents(check.source.latent_dim, 256)}
    speed = {"batch": 256}
    for role, op in (("encoder", "encode"), ("decoder", "decode")):
        for kind, sessions in (("fp32", fp32), ("int8", int8)):
            rate = _throughput(sessions[role], INPUTS[role], data[role])
            speed[f"{op}_{kind}_per_s"] = round(rate)
    return speed


def _quantize(src: Path, dst: Path, name: str, data: np.ndarray, recipe: str) -> None:
    int8_recipe.quantize_graph(src, dst, name, data, recipe)


def _nelbo(enc: Any, dec: Any, x: np.ndarray, eps: np.ndarray, likelihood: dict) -> float:
    """Mean negative ELBO of two bare sessions (numpy, as the runtime computes it)."""
    total = 0.0
    for i in range(0, len(x), 1000):
        xs, e = x[i : i + 1000], eps[i : i + 1000]
        mu, logvar = enc.run(["mu", "logvar"], {"x": xs})
        (x_hat,) = dec.run(["x_hat"], {"z": reparameterize(mu, logvar, e)})
        recon = lik.reconstruction_nll(x_hat, xs, likelihood["name"], likelihood.get("sigma"))
        total += float((recon + lik.kl_to_standard_normal(mu, clamp_logvar(logvar))).sum())
    return total / len(x)


def _quantize_graphs(
    check: variant.VariantCheck,
    out: Path,
    fp32: dict[str, Any],
    calib: dict[str, np.ndarray],
    probe: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """Write FILES into ``out``, each quantized with the recipe _choose_recipes picks."""
    with tempfile.TemporaryDirectory(prefix="vae-int8-") as scratch:
        sources = _sources(check, Path(scratch))
        return _choose_recipes(check, out, fp32, calib, sources, probe)


def _choose_recipes(
    check: variant.VariantCheck,
    out: Path,
    fp32: dict[str, Any],
    calib: dict[str, np.ndarray],
    sources: dict[str, list[tuple[str, Path]]],
    probe: np.ndarray,
) -> dict[str, dict[str, Any]]:
    """The fastest recipe per graph that keeps the test negative ELBO within budget, the
    graph at least MIN_SIZE_RATIO smaller and within INT8_TOLERANCE of PyTorch on verify's
    rows: the encoder alone within half the ELBO budget, then the decoder together with the
    chosen encoder within DECODER_MARGIN of the budget.

    ``sources`` lists, per role, the (form, fp32 graph) pairs to quantize, in order of
    preference: the conv decoder's phase form quantizes to the faster int8 graph, but its
    extra intermediate (the per-tap products) can cost too much precision for a small
    latent, where the ConvTranspose form may still fit the budget."""
    likelihood = check.source.likelihood
    sessions = dict(fp32)
    base = _nelbo(sessions["encoder"], sessions["decoder"], check.test_x, check.eps, likelihood)
    bounds = {"encoder": MAX_NELBO_CHANGE / 2, "decoder": MAX_NELBO_CHANGE * DECODER_MARGIN}
    chosen: dict[str, dict[str, Any]] = {}
    for role in ("encoder", "decoder"):
        tried: dict[str, Any] = {}
        for (form, src), recipe in ((s, r) for s in sources[role] for r in RECIPES):
            key = f"{form}/{recipe}" if len(sources[role]) > 1 else recipe
            session = _quantize_role(out, role, src, calib[role], recipe)
            trial = {**sessions, role: session}
            nelbo = _nelbo(trial["encoder"], trial["decoder"], check.test_x, check.eps, likelihood)
            figures = {
                "nelbo_change": nelbo - base,
                "size_ratio": check.source.fp32_graph_bytes(role) / _size(out, role),
                "mean_abs": _worst_mean_abs(check, role, session, probe),
            }
            tried[key] = {k: round(v, 4) for k, v in figures.items()}
            if _fits(figures, bounds[role]):
                chosen[role] = {"recipe": recipe, "form": form, "tried": tried}
                sessions = trial  # the decoder is judged together with the chosen encoder
                break
        else:
            raise ValidationError(
                f"int8 {role}: no recipe keeps the test negative ELBO change within "
                f"{bounds[role]:g} nats and the mean abs difference from PyTorch within "
                f"{INT8_TOLERANCE['mean_abs']:g} at >= {MIN_SIZE_RATIO}x smaller ({tried})"
            )
    return chosen


def _quantize_role(out: Path, role: str, src: Path, data: np.ndarray, recipe: str) -> Any:
    _quantize(src, out / FILES[role], INPUTS[role], data, recipe)
    return validate.ort_session(str(out / FILES[role]))


def _size(out: Path, role: str) -> int:
    return (out / FILES[role]).stat().st_size


def _worst_mean_abs(
    check: variant.VariantCheck, role: str, session: Any, probe: np.ndarray
) -> float:
    return max(r.mean_abs for r in _role_rows(check, role, session, probe))


def _fits(trial: dict[str, float], nelbo_bound: float) -> bool:
    return (
        trial["nelbo_change"] <= nelbo_bound
        and trial["size_ratio"] >= MIN_SIZE_RATIO
        and trial["mean_abs"] <= INT8_TOLERANCE["mean_abs"]
    )


def _sources(check: variant.VariantCheck, scratch: Path) -> dict[str, list[tuple[str, Path]]]:
    """The fp32 graphs to quantize per role (see _choose_recipes)."""
    source = check.source
    files = {r: source.path / f for r, f in source.graph_files().items()}
    export = source.manifest.section("export", {})
    phase = export.get("decoder_form") == "phase" and bool(export.get("decoder_rewrites"))
    decoder = [("phase" if phase else "default", files["decoder"])]
    if phase:
        decoder.append(("convtranspose", _convtranspose_decoder(check, scratch)))
    return {"encoder": [("default", files["encoder"])], "decoder": decoder}


def _convtranspose_decoder(check: variant.VariantCheck, scratch: Path) -> Path:
    """The decoder exported again in its trained (ConvTranspose) form, carrying the shipped
    graph's metadata (the contract's vae_onnx.* keys) and producer."""
    source = check.source
    model, _ = graphs.export_decoder(
        source.checkpoint.decoder, source.latent_dim, form="convtranspose"
    )
    shipped_file = source.path / source.graph_files()["decoder"]
    shipped = onnx.load(str(shipped_file), load_external_data=False)
    model.metadata_props.extend(shipped.metadata_props)
    model.producer_name, model.producer_version = shipped.producer_name, shipped.producer_version
    path = scratch / "decoder.convtranspose.onnx"
    onnx.save(model, str(path))
    return path


def _throughput(session: Any, name: str, data: np.ndarray, repeats: int = 15) -> float:
    for _ in range(3):
        session.run(None, {name: data})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {name: data})
        times.append(time.perf_counter() - t)
    return len(data) / float(np.median(times))
