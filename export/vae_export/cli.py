"""``vae-export``: a training run -> a validated ONNX model directory, and the subcommands
that re-check (verify), extend (quantize, fp16, ood), evaluate, measure (bench) or draw
(figures) one.

As in ``vae-run``, each subcommand is an entry in SUBCOMMANDS: a function that adds its
arguments and one that runs it and returns the exit status. The runners import the
library (and with it torch) only when they run, so ``vae-export --help`` stays light.
``vae-export RUN --out DIR`` is the ``export`` subcommand, whose name may be left out.

A refusal prints one line, ``vae-export: error: ...``, and exits 2; a failed validation
exits 1 and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from vae_export import parity
from vae_export.errors import ExportError, ValidationError
from vae_format.errors import VAEError
from vae_format.extras import EXPORT_MODULES, missing_train_extra
from vae_format.signals import EXIT_TERMINATED, Terminated, sigterm_raises
from vae_runtime.cli import Subcommand, int_list
from vae_runtime.cli_types import positive_int

PROG = "vae-export"
DEFAULT_DATA_DIR = os.environ.get("VAE_ONNX_DATA_DIR", "data")


def add_data_dir(p: argparse.ArgumentParser, help_text: str | None = None) -> None:
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help=help_text)


# ---- export ---------------------------------------------------------------------------------


def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "run_dir", metavar="run", type=Path, help="run directory (or a checkpoint folder)"
    )
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--name", help="model name (default: the --out folder's name)")
    add_data_dir(p, "folder with the dataset's IDX files (validation uses test images)")
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
        default=parity.PARITY_TOLERANCE,
        help="max abs difference allowed between ORT and PyTorch",
    )
    p.add_argument(
        "--decoder-form",
        choices=("phase", "convtranspose"),  # graphs.DECODER_FORMS, without importing torch
        default="phase",
        help="phase (default): the decoder's ConvTranspose tail as Convs over a phase grid, "
        "exact and faster in ONNX Runtime; convtranspose: as trained",
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
        "--no-ood",
        action="store_true",
        help="skip the out-of-distribution calibration (docs/ood.md; without it, "
        "VAE.ood_score refuses the directory until `vae-export ood` adds one)",
    )
    p.add_argument(
        "--preprocess",
        choices=("dataset", "none"),  # manifest.PREPROCESS_CHOICES
        default="dataset",
        help="how raw images become inputs, declared in the manifest (docs/preprocessing.md): "
        "dataset (default) = the procedure the checkpoint's dataset was made with; none = "
        "the whole image fitted into 28x28",
    )
    p.add_argument(
        "--self-contained",
        action="store_true",
        help="keep all weights inside the .onnx files instead of reading the shared ones "
        "from checkpoints/ (about twice the size)",
    )


def run_export(args: argparse.Namespace) -> int:
    from vae_export.exporter import export_model_dir

    result = export_model_dir(
        args.run_dir,
        args.out,
        data_dir=args.data_dir,
        name=args.name,
        opset=args.opset,
        decoder_form=args.decoder_form,
        which=args.checkpoint,
        tolerance=args.tolerance,
        command=args.command_line,
        self_contained=args.self_contained,
        evaluate_k=args.evaluate,
        ood=not args.no_ood,
        preprocess=args.preprocess,
    )
    print(f"wrote {result.out_dir} in {result.seconds:.1f}s")
    for rel, entry in result.manifest["files"].items():
        print(f"  {rel:34} {entry['bytes']:>10,d} bytes  sha256 {entry['sha256'][:16]}")
    print(parity.format_table(result.parity))
    if "ood" in result.manifest:
        _print_ood(result.manifest["ood"])
    if "quality" in result.manifest:
        _print_quality(result.manifest["quality"])
    return 0


def _print_quality(q: dict[str, Any]) -> None:
    iw = f", IW bound (k={q['iw_k']}) {q['test_iw_bound']:.3f}" if "iw_k" in q else ""
    print(
        f"quality: test negative ELBO {q['test_nelbo']:.3f}{iw}, 5-NN "
        f"{100 * q['knn_accuracy']:.2f}%, OOD AUROC vs {q['ood_dataset']} {q['ood_auroc']:.5f}"
    )
    if "validation" in q:
        v = q["validation"]
        print(
            f"validation ({v['images']} images held out in training): negative ELBO "
            f"{v['nelbo']:.3f}, 5-NN {100 * v['knn_accuracy']:.2f}%"
        )


def _print_ood(section: dict[str, Any]) -> None:
    rows = ", ".join(
        f"{r['fpr']:g}: {r['threshold']:.3f} (held-out FPR {r['measured_fpr']:.3f}"
        + (f", TPR {r['tpr']:.3f})" if "tpr" in r else ")")
        for r in section["thresholds"]
    )
    ref = section.get("reference")
    vs = f"; TPR on {ref['dataset']} training images" if ref else ""
    print(f"ood calibration ({section['method']}), thresholds at FPR {rows}{vs}")


# ---- ood ------------------------------------------------------------------------------------


def add_ood(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path)
    add_data_dir(p, "folder with the model's training dataset (and the other one, for TPR)")


def run_ood(args: argparse.Namespace) -> int:
    from vae_export.ood_calibration import add_ood_calibration

    section = add_ood_calibration(args.model_dir, args.data_dir, command=args.command_line)
    print(f"added the ood calibration to {args.model_dir}")
    _print_ood(section)
    return 0


# ---- evaluate -------------------------------------------------------------------------------


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path)
    add_data_dir(p, "folder with the model's dataset (and the other one, for OOD AUROC)")
    p.add_argument(
        "--k", type=positive_int, default=100, help="samples of the IW bound (default 100)"
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from vae_export.quality import add_quality

    section = add_quality(args.model_dir, args.data_dir, args.k)
    print(f"wrote the quality section of {args.model_dir}")
    _print_quality(section)
    return 0


# ---- verify ---------------------------------------------------------------------------------


def add_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dirs", type=Path, nargs="+")
    add_data_dir(p, "test images for the parity check (skipped if the folder is missing)")
    p.add_argument("--batch-sizes", type=int_list, default=list(parity.BATCH_SIZES))
    p.add_argument("--variant", default=None, help="check a variant's graphs (e.g. int8)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="fail above this max abs difference (default: the manifest's)",
    )


def run_verify(args: argparse.Namespace) -> int:
    from vae_export.verify import check_model_dir

    data_dir = args.data_dir if Path(args.data_dir).is_dir() else None
    failed = False
    for model_dir in args.model_dirs:
        report = check_model_dir(
            model_dir, data_dir, args.batch_sizes, args.variant, args.tolerance
        )
        print(report.format())
        failed |= not report.ok
    return 1 if failed else 0


# ---- variants -------------------------------------------------------------------------------


def add_quantize(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path)
    add_data_dir(p)
    p.add_argument("--calibration-size", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)


def run_quantize(args: argparse.Namespace) -> int:
    from vae_export.quantize import add_int8_variant

    info = add_int8_variant(
        args.model_dir,
        args.data_dir,
        calibration_size=args.calibration_size,
        seed=args.seed,
        command=args.command_line,
    )
    q, s, ratio = info["quality"], info["speed"], info["size_ratio"]
    print(f"added int8 variant to {args.model_dir}: {info['encoder']}, {info['decoder']}")
    print(f"  size: encoder {ratio['encoder']:.2f}x, decoder {ratio['decoder']:.2f}x smaller")
    _print_nelbo(q, "int8", ".3f")
    print(f"  mean abs vs PyTorch: {info['parity']['mean_abs']}")
    print(
        f"  batch {s['batch']}: encode {s['encode_fp32_per_s']}/s -> {s['encode_int8_per_s']}/s, "
        f"decode {s['decode_fp32_per_s']}/s -> {s['decode_int8_per_s']}/s"
    )
    return 0


def add_fp16(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", type=Path)
    add_data_dir(p)


def run_fp16(args: argparse.Namespace) -> int:
    from vae_export.half import add_fp16_variant

    info = add_fp16_variant(args.model_dir, args.data_dir, command=args.command_line)
    result = info["parity"]
    print(f"added fp16 variant to {args.model_dir}: {info['encoder']}, {info['decoder']}")
    print(f"  decoder {info['size_ratio']['decoder']:.2f}x smaller")
    _print_nelbo(info["quality"], "fp16", ".4f")
    print(
        f"  vs PyTorch ({result['provider']}): max abs {result['max_abs']}, "
        f"mean abs {result['mean_abs']}"
    )
    return 0


def _print_nelbo(q: dict[str, Any], name: str, fmt: str) -> None:
    fp32, other = q["test_nelbo_fp32"], q[f"test_nelbo_{name}"]
    print(
        f"  test negative ELBO: fp32 {fp32:.3f}, {name} {other:.3f} "
        f"({format(q['change'], '+' + fmt)} nats)"
    )


# ---- bench and figures ----------------------------------------------------------------------


def add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", type=Path, help="model directory, or a run directory to export")
    add_data_dir(p, "for exporting a run directory, and --compare's ELBO column")
    p.add_argument(
        "--batch-sizes", type=int_list, help="default 1,64,256,1024 (--compare: 1,256,1024)"
    )
    p.add_argument("--threads", type=int, help="default: every core (--compare: 1)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument(
        "--variant",
        default=None,
        help="run a variant's graphs (e.g. int8) against the fp32 PyTorch modules",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="vae-run bench --compare (every backend x variant x precision, images per "
        "CPU-second) with PyTorch eager fp32 and bf16 autocast added; --threads default 1",
    )
    p.add_argument("--seconds", type=float, default=1.0, help="--compare: per contender")
    p.add_argument("--json", action="store_true")


def run_bench(args: argparse.Namespace) -> int:
    from vae_export import bench

    if args.compare:
        sizes = args.batch_sizes or [1, 256, 1024]
        report = bench.compare_all(
            args.path, args.data_dir, sizes, args.threads or 1, args.rounds, args.seconds
        )
        print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
        return 0
    threads = args.threads or os.cpu_count() or 1
    sizes = args.batch_sizes or [1, 64, 256, 1024]
    rows = bench.run(args.path, args.data_dir, sizes, threads, args.rounds, args.variant)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        peak = bench.gemm_peak_gflops(threads)
        mm = bench.torch_mm_gflops(threads)
        print(bench.format_rows(rows, threads, peak, args.variant, mm))
    return 0


def add_figures(p: argparse.ArgumentParser) -> None:
    p.add_argument("artifacts", type=Path, nargs="?", default=Path("artifacts"))
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    p.add_argument("--table-only", action="store_true", help="print the model table only")
    add_data_dir(p)


def run_figures(args: argparse.Namespace) -> int:
    from vae_export.figures import make_all, model_table

    if not args.table_only:
        for path in make_all(args.artifacts, args.out, Path(args.data_dir)):
            print(f"wrote {path}")
    print(model_table(args.artifacts))
    return 0


def add_web_golden(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dirs", type=Path, nargs="*", help="default: every model in artifacts/")
    p.add_argument("--web", type=Path, default=Path("web"), help="the JS package folder")
    add_data_dir(p)


def run_web_golden(args: argparse.Namespace) -> int:
    from vae_export.web_assets import write_web_assets

    dirs = args.model_dirs or sorted(p.parent for p in Path("artifacts").glob("*/manifest.json"))
    if not dirs:
        raise ExportError("no model directories given and none found in artifacts/")
    from vae_export.web_preprocess import available

    if not available():
        print("vae-export: note: this runtime has no preprocessing (issue 12) yet; "
              "the preprocessing vectors are not written", file=sys.stderr)  # fmt: skip
    for path in write_web_assets(dirs, args.web, Path(args.data_dir)):
        print(f"wrote {path}")
    return 0


# ---- the command line -----------------------------------------------------------------------


# vae-run's Subcommand: (name, help, shared option groups, add, run); vae-export's
# subcommands share no option group.
SUBCOMMANDS = [
    Subcommand(
        "export",
        "export a training run to a model directory, validated against PyTorch before "
        "anything is written (the default subcommand)",
        (),
        add_export,
        run_export,
    ),
    Subcommand(
        "verify",
        "re-run the parity check of model directories against their checkpoints",
        (),
        add_verify,
        run_verify,
    ),
    Subcommand(
        "quantize",
        "add an int8 variant (static QDQ, calibrated on training images), checked against "
        "the PyTorch checkpoint and the fp32 graphs' test negative ELBO",
        (),
        add_quantize,
        run_quantize,
    ),
    Subcommand(
        "fp16",
        "add an fp16 variant for CUDA (float16 decoder, fp32 encoder), checked against the "
        "PyTorch checkpoint and the fp32 graphs' test negative ELBO",
        (),
        add_fp16,
        run_fp16,
    ),
    Subcommand(
        "ood",
        "calibrate the out-of-distribution score of a model directory on its training "
        "images (export does this unless --no-ood)",
        (),
        add_ood,
        run_ood,
    ),
    Subcommand(
        "evaluate",
        "evaluate a model directory torch-free (test figures, and validation figures when "
        "its run held a split out) and record them as its quality section",
        (),
        add_evaluate,
        run_evaluate,
    ),
    Subcommand(
        "bench",
        "PyTorch eager against vae_runtime on the same weights, in one process, alternating",
        (),
        add_bench,
        run_bench,
    ),
    Subcommand(
        "figures",
        "draw the README's pictures from the shipped models",
        (),
        add_figures,
        run_figures,
    ),
    Subcommand(
        "web-golden",
        "write web/'s golden files (the Python runtime's outputs for fixed inputs, per "
        "variant) and the 2-D model's scatter for the page",
        (),
        add_web_golden,
        run_web_golden,
    ),
]
DEFAULT_SUBCOMMAND = "export"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Export a training run to a validated ONNX model directory "
        f"(`{PROG} RUN --out DIR`), or work on one.",
    )
    sub = parser.add_subparsers(dest="subcommand", required=True, metavar="COMMAND")
    for name, help_text, _, add, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add(p)
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    named = bool(argv) and argv[0] in {s.name for s in SUBCOMMANDS} | {"-h", "--help"}
    args = build_parser().parse_args(argv if named else [DEFAULT_SUBCOMMAND, *argv])
    args.command_line = shlex.join([PROG, *argv])  # recorded in the manifest
    problem = missing_train_extra(PROG, EXPORT_MODULES)
    if problem:  # a runtime-only install has the command but not torch/onnx
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    try:
        with sigterm_raises():  # cleaned up (staging folder removed) as for Ctrl-C
            return int(args.run(args))
    except ValidationError as exc:
        print(f"{PROG}: validation failed, nothing written: {exc}", file=sys.stderr)
        return 1
    except (ExportError, VAEError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"{PROG}: terminated; nothing written", file=sys.stderr)
        return EXIT_TERMINATED


if __name__ == "__main__":
    sys.exit(main())
