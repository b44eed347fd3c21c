"""``vae-export``: checkpoints -> a validated ONNX model directory; ``verify`` re-checks one."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from vae_export import validate
from vae_export.errors import ExportError, ValidationError
from vae_runtime.cli import int_list
from vae_runtime.errors import VAEError

DEFAULT_DATA_DIR = os.environ.get("VAE_ONNX_DATA_DIR", "data")


def export_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vae-export",
        description="Export a training run to a model directory (encoder.onnx, decoder.onnx, "
        "manifest.json, checkpoints/), validated against PyTorch before anything is written. "
        "Subcommands: 'vae-export verify MODEL_DIR' re-checks an existing directory; "
        "'vae-export quantize MODEL_DIR' adds an int8 variant, 'vae-export fp16 MODEL_DIR' an "
        "fp16-decoder variant for CUDA; 'vae-export bench PATH' "
        "compares PyTorch eager and the runtime; 'vae-export figures' draws the README's "
        "pictures.",
    )
    p.add_argument("run", type=Path, help="run directory (or a checkpoint folder)")
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--name", help="model name (default: the --out folder's name)")
    p.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="folder with the dataset's IDX files (validation uses test images)",
    )
    p.add_argument("--opset", type=int, default=18, help="ONNX opset (>= 18)")
    p.add_argument(
        "--checkpoint",
        choices=("best", "latest"),
        default="best",
        help="which checkpoint of a run directory to export",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=validate.PARITY_TOLERANCE,
        help="max abs difference allowed between ORT and PyTorch",
    )
    p.add_argument(
        "--decoder-form",
        choices=("phase", "convtranspose"),  # graphs.DECODER_FORMS, without importing torch
        default="phase",
        help="phase (default): the conv decoder's ConvTranspose layers as Convs over a phase "
        "grid, exact and faster in ONNX Runtime; convtranspose: as trained",
    )
    p.add_argument(
        "--evaluate",
        type=int,
        default=0,
        metavar="K",
        help="also evaluate (torch-free: test ELBO, IW bound with K samples, 5-NN accuracy, "
        "OOD AUROC) and record the figures in the manifest",
    )
    p.add_argument(
        "--self-contained",
        action="store_true",
        help="keep all weights inside the .onnx files instead of reading the shared ones "
        "from checkpoints/ (about twice the size)",
    )
    return p


def verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vae-export verify",
        description="Re-run the parity check of model directories against their checkpoints.",
    )
    p.add_argument("model_dirs", type=Path, nargs="+")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--batch-sizes", type=int_list, default=list(validate.BATCH_SIZES))
    p.add_argument("--variant", default=None, help="check a variant's graphs (e.g. int8)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="fail above this max abs difference (default: the manifest's)",
    )
    return p  # fmt: skip


def quantize_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vae-export quantize",
        description="Add an int8 variant (static QDQ, calibrated on training images) to a "
        "model directory, after checking it against its PyTorch checkpoint and its test "
        "negative ELBO against the fp32 graphs.",
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--calibration-size", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    return p


def run_quantize(argv: list[str]) -> int:
    args = quantize_parser().parse_args(argv)
    from vae_export.quantize import add_int8_variant

    info = add_int8_variant(
        args.model_dir,
        args.data_dir,
        calibration_size=args.calibration_size,
        seed=args.seed,
        command=shlex.join(["vae-export", "quantize", *argv]),
    )
    q, s = info["quality"], info["speed"]
    print(f"added int8 variant to {args.model_dir}: {info['encoder']}, {info['decoder']}")
    print(f"  size: encoder {info['size_ratio']['encoder']:.2f}x, decoder "
          f"{info['size_ratio']['decoder']:.2f}x smaller")  # fmt: skip
    print(f"  test negative ELBO: fp32 {q['test_nelbo_fp32']:.3f}, int8 {q['test_nelbo_int8']:.3f} "
          f"({q['change']:+.3f} nats)")  # fmt: skip
    print(f"  mean abs vs PyTorch: {info['parity']['mean_abs']}")
    print(f"  batch {s['batch']}: encode {s['encode_fp32_per_s']}/s -> {s['encode_int8_per_s']}/s, "
          f"decode {s['decode_fp32_per_s']}/s -> {s['decode_int8_per_s']}/s")  # fmt: skip
    return 0


def fp16_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vae-export fp16",
        description="Add an fp16 variant for the CUDA execution provider (float16 decoder, "
        "fp32 encoder) to a model directory, after checking it against its PyTorch checkpoint "
        "and its test negative ELBO against the fp32 graphs.",
    )
    p.add_argument("model_dir", type=Path)
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    return p


def run_fp16(argv: list[str]) -> int:
    args = fp16_parser().parse_args(argv)
    from vae_export.half import add_fp16_variant

    info = add_fp16_variant(args.model_dir, args.data_dir,
                            command=shlex.join(["vae-export", "fp16", *argv]))  # fmt: skip
    q, parity = info["quality"], info["parity"]
    print(f"added fp16 variant to {args.model_dir}: {info['encoder']}, {info['decoder']}")
    print(f"  decoder {info['size_ratio']['decoder']:.2f}x smaller")
    print(f"  test negative ELBO: fp32 {q['test_nelbo_fp32']:.3f}, fp16 {q['test_nelbo_fp16']:.3f} "
          f"({q['change']:+.4f} nats)")  # fmt: skip
    print(f"  vs PyTorch ({parity['provider']}): max abs {parity['max_abs']}, "
          f"mean abs {parity['mean_abs']}")  # fmt: skip
    return 0


def bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vae-export bench",
        description="PyTorch eager against vae_runtime on the same weights, in one process, "
        "alternating; prints throughput per batch size and the runtime/torch ratio.",
    )
    p.add_argument("path", type=Path, help="model directory, or a run directory to export")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="for exporting a run directory")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 64, 256, 1024])
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--variant", default=None,
        help="run a variant's graphs (e.g. int8) against the fp32 PyTorch modules",
    )  # fmt: skip
    p.add_argument("--json", action="store_true")
    return p


def run_bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    import json

    from vae_export import bench

    rows = bench.run(args.path, args.data_dir, args.batch_sizes, args.threads, args.rounds,
                     args.variant)  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        peak = bench.gemm_peak_gflops(args.threads)
        print(bench.format_rows(rows, args.threads, peak, args.variant))
    return 0


def figures_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="vae-export figures",
        description="Draw the README's pictures from the shipped model directories.",
    )
    p.add_argument("artifacts", type=Path, nargs="?", default=Path("artifacts"))
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    p.add_argument("--table-only", action="store_true", help="print the model table only")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    return p


def run_figures(argv: list[str]) -> int:
    args = figures_parser().parse_args(argv)
    from vae_export.figures import make_all, model_table

    if not args.table_only:
        for path in make_all(args.artifacts, args.out, Path(args.data_dir)):
            print(f"wrote {path}")
    print(model_table(args.artifacts))
    return 0


def run_export(argv: list[str]) -> int:
    args = export_parser().parse_args(argv)
    from vae_export.exporter import export_model_dir

    result = export_model_dir(
        args.run, args.out, data_dir=args.data_dir, name=args.name, opset=args.opset,
        decoder_form=args.decoder_form, which=args.checkpoint, tolerance=args.tolerance,
        command=shlex.join(["vae-export", *argv]), self_contained=args.self_contained,
        evaluate_k=args.evaluate,
    )  # fmt: skip
    print(f"wrote {result.out_dir} in {result.seconds:.1f}s")
    for rel, entry in result.manifest["files"].items():
        print(f"  {rel:34} {entry['bytes']:>10,d} bytes  sha256 {entry['sha256'][:16]}")
    print(validate.format_table(result.parity))
    q = result.manifest.get("quality")
    if q:
        print(f"quality: test negative ELBO {q['test_nelbo']:.3f}, IW bound (k={q['iw_k']}) "
              f"{q['test_iw_bound']:.3f}, 5-NN {100 * q['knn_accuracy']:.2f}%, OOD AUROC "
              f"vs {q['ood_dataset']} {q['ood_auroc']:.5f}")  # fmt: skip
    return 0


def run_verify(argv: list[str]) -> int:
    args = verify_parser().parse_args(argv)
    from vae_export.verify import read_manifest, verify_model_dir

    data_dir = args.data_dir if Path(args.data_dir).is_dir() else None
    failed = False
    for model_dir in args.model_dirs:
        rows = verify_model_dir(model_dir, data_dir, args.batch_sizes, args.variant)
        manifest = read_manifest(model_dir)
        if args.tolerance is not None:
            bounds = {"max_abs": args.tolerance}
        elif args.variant:
            bounds = manifest["variants"][args.variant]["tolerance"]
        else:
            bounds = {"max_abs": manifest.get("parity", {}).get("tolerance", 1e-5)}
        print(f"== {model_dir}" + (f" ({args.variant})" if args.variant else ""))
        print(validate.format_table(rows))
        graph_rows = [r for r in rows if r.output != "nll"]
        problems = validate.violations(graph_rows, bounds)
        if not args.variant:  # int8 is held to its ELBO budget instead (see quantize)
            problems += validate.violations(
                [r for r in rows if r.output == "nll"],
                {"max_rel": validate.LIKELIHOOD_REL_TOLERANCE},
            )
        failed |= bool(problems)
        for line in problems[:5]:
            print(f"FAILED: {line}")
        worst = {f: max(getattr(r, f) for r in graph_rows) for f in bounds}
        figures = ", ".join(f"{f.replace('_', ' ')} {v:.2e} (bound {bounds[f]:g})"
                            for f, v in worst.items())  # fmt: skip
        print(f"{figures}: {'FAILED' if problems else 'ok'}\n")
    return 1 if failed else 0


COMMANDS = {
    "verify": run_verify,
    "quantize": run_quantize,
    "fp16": run_fp16,
    "bench": run_bench,
    "figures": run_figures,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in COMMANDS:
            return COMMANDS[argv[0]](argv[1:])
        return run_export(argv)
    except ValidationError as exc:
        print(f"vae-export: validation failed, nothing written: {exc}", file=sys.stderr)
        return 1
    except (ExportError, VAEError) as exc:
        print(f"vae-export: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
