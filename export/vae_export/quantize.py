"""The int8 variant: static QDQ quantization calibrated on training images.

Only Conv, ConvTranspose, Gemm and MatMul are quantized (per-channel int8 weights, uint8
activations). The decoder's sigmoid output stays float: rounding Bernoulli means to steps
of 1/255 costs about 3 nats per image of BCE, whereas quantizing the layers themselves
costs a few tenths.

Each graph gets the fastest of three recipes that stays within the ELBO budget and at
least 3.5x smaller (see _choose_recipes): "int8" (layer outputs quantized too, so ORT runs
whole int8 chains), "int8-float-last" (the final layer, which makes the decoder's logits,
in float) and "int8-float-outputs" (int8 weights and inputs, float outputs: precise but
no faster than fp32; a 2-D latent decoder needs it). The variant as a whole is then held
to its own bounds (INT8_TOLERANCE) against the PyTorch checkpoint and to at most 1 nat of
test negative ELBO against the fp32 graphs, all recorded in the manifest.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

from vae_export import graphs, validate
from vae_export.errors import ExportError, ValidationError
from vae_export.exporter import prior_latents, staged_copy, write_manifest
from vae_export.manifest import file_entry
from vae_export.verify import check_files, model_checkpoint, read_manifest
from vae_runtime import VAE
from vae_runtime import likelihood as lik
from vae_runtime.sampling import clamp_logvar, reparameterize
from vae_train.datasets import DatasetError, get_spec, load_split

VARIANT = "int8"
QUANTIZED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FILES = {"encoder": "encoder.int8.onnx", "decoder": "decoder.int8.onnx"}
# Bounds for int8 against the fp32 PyTorch checkpoint: mean abs error per output, and the
# change in mean test negative ELBO (nats per image).
INT8_TOLERANCE = {"mean_abs": 0.05}
MAX_NELBO_CHANGE = 1.0
MIN_SIZE_RATIO = 3.5  # each int8 graph at least this much smaller than fp32
DECODER_MARGIN = 0.9  # the decoder is chosen against 90% of the budget; the rest is margin
# In order of speed. "int8-float-last" keeps the final layer (the decoder's logits) in
# float (see last_layer); "int8-float-outputs" keeps every layer's output in float (int8
# weights and inputs).
RECIPES: tuple[str, ...] = ("int8", "int8-float-last", "int8-float-outputs")


class _Batches(CalibrationDataReader):
    def __init__(self, name: str, data: np.ndarray, batch: int = 200) -> None:
        self._it = iter([{name: data[i : i + batch]} for i in range(0, len(data), batch)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def split_images(dataset: str, split: str, data_dir: Path, purpose: str = "int8 calibration"
            ) -> np.ndarray:  # fmt: skip
    try:
        s = load_split(get_spec(dataset), split, data_dir, {})
    except DatasetError as exc:
        raise ExportError(f"{purpose} needs the {dataset} files: {exc}") from None
    return s.images


def _recipe_options(recipe: str, src: Path) -> dict[str, Any]:
    if recipe == "int8-float-outputs":
        return {"extra_options": {"OpTypesToExcludeOutputQuantization": list(QUANTIZED_OPS)}}
    if recipe == "int8-float-last":
        return {"nodes_to_exclude": last_layer(onnx.load(str(src), load_external_data=False))}
    return {}


def last_layer(model: onnx.ModelProto) -> list[str]:
    """The quantizable nodes after the graph's last ReLU: the final layer, which makes the
    decoder's logits (two Convs in the phase-form decoder, see phase.py) or the encoder's
    heads; the last such node where the graph has no ReLU."""
    nodes = list(model.graph.node)  # topologically sorted, as ONNX requires
    relus = [i for i, n in enumerate(nodes) if n.op_type == "Relu"]
    after = nodes[relus[-1] + 1 :] if relus else nodes
    names = [n.name for n in after if n.op_type in QUANTIZED_OPS]
    return names or [n.name for n in nodes if n.op_type in QUANTIZED_OPS][-1:]


def _quantize(src: Path, dst: Path, name: str, data: np.ndarray, recipe: str) -> None:
    quantize_static(
        str(src), str(dst), _Batches(name, data), quant_format=QuantFormat.QDQ,
        op_types_to_quantize=list(QUANTIZED_OPS), per_channel=True,
        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
        calibrate_method=CalibrationMethod.MinMax, **_recipe_options(recipe, src),
    )  # fmt: skip


def fp32_graph_bytes(model_dir: Path, manifest: dict, role: str) -> int:
    """The size of a default graph: its file plus the checkpoint it reads its weights from."""
    graph = manifest["graphs"][role]
    return sum((model_dir / f).stat().st_size
               for f in (graph["file"], *graph.get("external_data", [])))  # fmt: skip


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


def _choose_recipes(
    model_dir: Path, manifest: dict, tmp: Path, fp32: dict[str, Any],
    calib: dict[str, np.ndarray], test_x: np.ndarray, eps: np.ndarray,
    sources: dict[str, list[tuple[str, Path]]],
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The fastest recipe per graph that keeps the test negative ELBO within budget and the
    graph at least MIN_SIZE_RATIO smaller: the encoder alone within half the budget, then
    the decoder together with the chosen encoder within DECODER_MARGIN of the budget.

    ``sources`` lists, per role, the (form, fp32 graph) pairs to quantize, in order of
    preference: the conv decoder's phase form quantizes to the faster int8 graph, but its
    extra intermediate (the per-tap products) can cost too much precision for a small
    latent, where the ConvTranspose form may still fit the budget."""
    likelihood = manifest["likelihood"]
    sessions = dict(fp32)
    base = _nelbo(sessions["encoder"], sessions["decoder"], test_x, eps, likelihood)
    bounds = {"encoder": MAX_NELBO_CHANGE / 2, "decoder": MAX_NELBO_CHANGE * DECODER_MARGIN}
    chosen: dict[str, dict[str, Any]] = {}
    for role, name in (("encoder", "x"), ("decoder", "z")):
        tried: dict[str, Any] = {}
        for form, src in sources[role]:
            for recipe in RECIPES:
                _quantize(src, tmp / FILES[role], name, calib[role], recipe)
                size = (tmp / FILES[role]).stat().st_size
                ratio = fp32_graph_bytes(model_dir, manifest, role) / size
                trial = {**sessions, role: validate.ort_session(str(tmp / FILES[role]))}
                change = _nelbo(trial["encoder"], trial["decoder"], test_x, eps, likelihood) - base
                key = f"{form}/{recipe}" if len(sources[role]) > 1 else recipe
                tried[key] = {"nelbo_change": round(change, 4), "size_ratio": round(ratio, 2)}
                if change <= bounds[role] and ratio >= MIN_SIZE_RATIO:
                    chosen[role] = {"recipe": recipe, "form": form, "tried": tried}
                    sessions = trial  # the decoder is judged together with the chosen encoder
                    break
            if role in chosen:
                break
        else:
            raise ValidationError(
                f"int8 {role}: no recipe keeps the test negative ELBO change within "
                f"{bounds[role]:g} nats at >= {MIN_SIZE_RATIO}x smaller ({tried})"
            )
    return chosen


def _sources(model_dir: Path, manifest: dict, ckpt: Any, scratch: Path
             ) -> dict[str, list[tuple[str, Path]]]:  # fmt: skip
    """The fp32 graphs to quantize per role (see _choose_recipes)."""
    export = manifest.get("export", {})
    phase = export.get("decoder_form") == "phase" and bool(export.get("decoder_rewrites"))
    decoder = [("phase" if phase else "default", model_dir / manifest["graphs"]["decoder"]["file"])]
    if phase:
        model, _ = graphs.export_decoder(ckpt.decoder, int(manifest["latent_dim"]),
                                         form="convtranspose")  # fmt: skip
        shipped = onnx.load(str(decoder[0][1]), load_external_data=False)
        model.metadata_props.extend(shipped.metadata_props)  # the contract's vae_onnx.* keys
        model.producer_name, model.producer_version = (
            shipped.producer_name,
            shipped.producer_version,
        )
        onnx.save(model, str(scratch / "decoder.convtranspose.onnx"))
        decoder.append(("convtranspose", scratch / "decoder.convtranspose.onnx"))
    return {
        "encoder": [("default", model_dir / manifest["graphs"]["encoder"]["file"])],
        "decoder": decoder,
    }


def _throughput(session: Any, name: str, data: np.ndarray, repeats: int = 15) -> float:
    for _ in range(3):
        session.run(None, {name: data})
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, {name: data})
        times.append(time.perf_counter() - t)
    return len(data) / float(np.median(times))


def add_int8_variant(
    model_dir: str | Path, data_dir: str | Path, *, calibration_size: int = 2000, seed: int = 0,
    eval_size: int | None = None, command: str = "",
) -> dict[str, Any]:  # fmt: skip
    """Quantize ``model_dir``'s graphs, check them, and add them as variant "int8"."""
    model_dir, data_dir = Path(model_dir), Path(data_dir)
    manifest = read_manifest(model_dir)
    check_files(model_dir, manifest)
    ckpt = model_checkpoint(model_dir, "quantize")
    dataset = manifest.get("dataset", {}).get("name") or "mnist"
    latent = int(manifest["latent_dim"])
    rng = np.random.default_rng(seed)
    train = split_images(dataset, "train", data_dir)
    calib = train[rng.choice(len(train), calibration_size, replace=False)]
    calib_x = (calib.astype(np.float32) / 255.0)[:, None]
    test = split_images(dataset, "test", data_dir)[:eval_size]
    test_x = (test.astype(np.float32) / 255.0)[:, None]

    fp32 = VAE(model_dir, threads=None)
    mu, logvar = fp32.encode(calib_x)
    posterior = fp32.sample(mu, logvar, seed=seed)
    calib_z = np.concatenate([posterior, prior_latents(latent, calibration_size // 2, seed)])

    with staged_copy(model_dir) as tmp:
        eps = np.random.default_rng(seed + 1).standard_normal((len(test_x), latent))
        eps = eps.astype(np.float32)
        t0 = time.perf_counter()
        calib = {"encoder": calib_x, "decoder": calib_z}
        fp32_sessions = {r: validate.ort_session(str(model_dir / f"{r}.onnx")) for r in FILES}
        with tempfile.TemporaryDirectory(prefix="vae-int8-") as scratch:
            sources = _sources(model_dir, manifest, ckpt, Path(scratch))
            recipes = _choose_recipes(model_dir, manifest, tmp, fp32_sessions, calib, test_x,
                                      eps, sources)  # fmt: skip
        seconds = time.perf_counter() - t0

        enc8 = validate.ort_session(str(tmp / FILES["encoder"]))
        dec8 = validate.ort_session(str(tmp / FILES["decoder"]))
        rows = validate.encoder_parity(ckpt.encoder, enc8, test_x[:128], "test images")
        rows += validate.decoder_parity(ckpt.decoder, dec8, prior_latents(latent), "N(0,I)")
        validate.require_within(rows, INT8_TOLERANCE)

        nelbo32 = float(fp32.score(test_x, eps=eps).mean())
        # The variant is not in the manifest yet: score it through a manifest that names it.
        doc = json.loads((tmp / "manifest.json").read_text())
        for rel in FILES.values():
            doc["files"][rel] = file_entry(tmp, rel, "graph")
        doc.setdefault("variants", {})[VARIANT] = dict(FILES)
        write_manifest(tmp, doc)
        int8 = VAE(tmp, variant=VARIANT)
        nelbo8 = float(int8.score(test_x, eps=eps).mean())
        if nelbo8 - nelbo32 > MAX_NELBO_CHANGE:
            raise ValidationError(
                f"int8 variant raises the test negative ELBO by {nelbo8 - nelbo32:.3f} nats "
                f"(bound {MAX_NELBO_CHANGE})"
            )
        batch = test_x[:256]
        z = prior_latents(latent, 256)
        enc32, dec32 = fp32_sessions["encoder"], fp32_sessions["decoder"]
        speed = {
            "batch": 256,
            "encode_fp32_per_s": round(_throughput(enc32, "x", batch)),
            "encode_int8_per_s": round(_throughput(enc8, "x", batch)),
            "decode_fp32_per_s": round(_throughput(dec32, "z", z)),
            "decode_int8_per_s": round(_throughput(dec8, "z", z)),
        }
        sizes = {r: fp32_graph_bytes(tmp, doc, r) / (tmp / FILES[r]).stat().st_size for r in FILES}
        doc["variants"][VARIANT] = {
            **FILES,
            "method": "onnxruntime static QDQ, per-channel int8 weights, uint8 activations, "
            "MinMax calibration; Conv/ConvTranspose/Gemm/MatMul only (sigmoid output kept float)",
            "recipes": recipes,
            "command": command,
            "calibration": {"dataset": dataset, "split": "train", "images": calibration_size,
                            "latents": "posterior samples of those images + N(0,I) draws",
                            "seed": seed},
            "tolerance": dict(INT8_TOLERANCE),
            "max_nelbo_change": MAX_NELBO_CHANGE,
            "parity": {"max_abs": validate.maxima(rows),
                       "mean_abs": validate.maxima(rows, "mean_abs")},
            "quality": {"test_images": len(test_x), "test_nelbo_fp32": round(nelbo32, 4),
                        "test_nelbo_int8": round(nelbo8, 4),
                        "change": round(nelbo8 - nelbo32, 4)},
            "size_ratio": {r: round(v, 3) for r, v in sizes.items()},
            "speed": speed,
            "seconds": round(seconds, 2),
        }  # fmt: skip
        write_manifest(tmp, doc)
        VAE(tmp, variant=VARIANT)  # the runtime accepts the finished directory
    return doc["variants"][VARIANT]
