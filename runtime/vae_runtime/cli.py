"""vae-run: the runtime's command line (argparse, no torch).

Each subcommand is an entry in SUBCOMMANDS: a function that adds its arguments and a
function that runs it and returns the exit status. To add one, write those two and append
a line; ``model_options()`` and ``input_options()`` give the shared flags, ``load_vae()``
and ``open_input()`` turn them into objects.

A refusal (any VAEError, or an OSError on a path) prints one line, ``vae-run: error: ...``,
and exits 2, like argparse's own usage errors. Tracebacks are left for genuine bugs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vae_format.atomic import check_output, save_npy
from vae_format.signals import EXIT_TERMINATED, Terminated, sigterm_raises

from . import __version__
from .cli_types import (  # int_list is also vae-export's
    count_list,
    int_at_least,
    int_list,
    positive_int,
    precision_list,
    seed_int,
)
from .engines import DEFAULT_ENGINE, ENGINES
from .errors import InputError, VAEError
from .jobs import (
    GENERATED_KEYS,
    drain,
    embed_results,
    embed_schema,
    generate_results,
    image_schema,
    ood_results,
    reconstruct_results,
    score_results,
    score_schema,
)
from .names import display_name
from .outputs import check_grid_name, save_grid
from .ray_cli import ray_options, run_embed_on_ray, run_generate_on_ray
from .records import ImageSource, ResultBatch, Schema
from .reporting import notes, progress, report, source_facts
from .vae import VAE
from .writers import (
    GRID_MAX,
    STDOUT,
    STDOUT_FORMATS,
    GridWriter,
    PngDirWriter,
    Writer,
    open_writer,
    output_format,
)
from .writers.images import ReconstructionGridWriter

PROG = "vae-run"
EXIT_USAGE = 2
RECONSTRUCT_GRID = 32  # originals in a reconstruction grid unless asked for more
FAR_FPR = 0.01  # score flags images whose OOD score is above the threshold at this rate
INVERT_CHOICES: dict[str, bool | str] = {"auto": "auto", "yes": True, "no": False}


# ---- shared options -------------------------------------------------------------------------


def model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model")
    group.add_argument(
        "--model", metavar="DIR", help="model directory (default: $VAE_ONNX_MODEL, else shipped)"
    )
    group.add_argument("--variant", metavar="NAME", help="a variant listed in the manifest")
    group.add_argument(
        "--backend",
        choices=[*sorted(ENGINES), "auto"],
        default=DEFAULT_ENGINE,
        help="default: %(default)s; auto: the fastest engine, graphs and precision per graph "
        "on this machine within the model's quality budget (a probe at load; info says which)",
    )
    group.add_argument("--device", choices=("cpu", "cuda"), help="onnxruntime: default cpu")
    group.add_argument(
        "--fallback", action="store_true", help="run on the CPU if --device is unavailable"
    )
    group.add_argument("--threads", type=positive_int, metavar="N", help="ORT intra-op threads")
    return parent


def input_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("input")
    group.add_argument(
        "--invert",
        nargs="?",
        choices=INVERT_CHOICES,
        default="auto",
        const="yes",
        help="polarity: auto (default) decides per image from its border; yes (or --invert "
        "alone): dark ink on light paper; no: light ink on dark",
    )
    group.add_argument(
        "--preprocess",
        choices=("declared", "none"),
        default="declared",
        help="declared (default): the model's preprocessing (docs/preprocessing.md); none: "
        "the whole image fitted into 28x28, as before, no polarity decision",
    )
    group.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip files (or table rows) that are not readable images (default: fail)",
    )
    group.add_argument(
        "-r", "--recursive", action="store_true", help="read subfolders of input folders too"
    )
    group.add_argument("--column", metavar="NAME", help="Parquet: the image column")
    group.add_argument(
        "--id-column", metavar="NAME", help="Parquet: a column of ids to carry to the outputs"
    )
    group.add_argument("--batch-size", type=positive_int, default=256, metavar="N")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parent


def output_options(default_format: str, required: bool = False) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("output")
    group.add_argument(
        "--out",
        action="append",
        default=[],
        required=required,
        metavar="FILE",
        help="output file, repeatable; the format follows the name: .npy .npz .jsonl .csv "
        ".parquet (.png: a grid of images); - is standard output",
    )
    group.add_argument(
        "--format",
        choices=STDOUT_FORMATS,
        help=f"format of --out - (default {default_format})",
    )
    group.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    return parent


def common_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-q", "--quiet", action="store_true", help="print no summary")
    parent.add_argument("-v", "--verbose", action="store_true", help="print more detail")
    return parent


def load_vae(args: argparse.Namespace) -> VAE:
    return VAE(
        args.model,
        variant=args.variant,
        backend=args.backend,
        providers=args.device,
        threads=args.threads,
        fallback=args.fallback,
        batch_size=getattr(args, "batch_size", 256),
    )


def invert_of(args: argparse.Namespace) -> bool | str:
    """--invert as the API takes it: "auto", True or False."""
    return INVERT_CHOICES[args.invert]


def preprocess_of(args: argparse.Namespace) -> str | None:
    return "none" if args.preprocess == "none" else None


def open_input(args: argparse.Namespace, paths: str | list[str], vae: VAE) -> ImageSource:
    """The inputs, read through the model's preprocessing (or as --preprocess says)."""
    return vae.open_images(
        paths,
        invert=invert_of(args),
        preprocess=preprocess_of(args),
        skip_bad=args.skip_bad,
        recursive=getattr(args, "recursive", False),
        column=getattr(args, "column", None),
        id_column=getattr(args, "id_column", None),
    )


def open_outputs(
    args: argparse.Namespace,
    schema: Schema,
    paths: list[str],
    *,
    expected: int | None,
    default_format: str,
    per_file: bool = False,
    grid: type[GridWriter] = GridWriter,
) -> list[Writer]:
    """A writer per output, opened before any work (a bad path fails at once)."""
    if sum(p == STDOUT for p in paths) > 1:
        raise InputError("--out -: standard output can take one output only")
    if args.format and STDOUT not in paths:
        raise InputError("--format applies to --out - only; files take their name's format")
    writers: list[Writer] = []
    try:
        for path in paths:
            fmt = (args.format or default_format) if path == STDOUT else None
            if output_format(path, fmt) == "png" and hasattr(args, "grid_max"):
                writers.append(grid(path, schema, nrow=args.nrow, limit=args.grid_max))
            else:
                writers.append(
                    open_writer(path, schema, fmt=fmt, expected=expected, with_sidecar=per_file)
                )
    except BaseException as exc:
        for w in writers:
            w.abort(exc)
        raise
    return writers


def exact_count(args: argparse.Namespace, source: ImageSource) -> int | None:
    """The number of images the source will give, when it is known in advance (not for
    a stream, nor where files may be skipped)."""
    return None if source.count < 0 or args.skip_bad else source.count


def wrote_lines(writers: list[Writer], total: int, what: str, unit: str) -> list[str]:
    lines = []
    for w in writers:
        if isinstance(w, GridWriter):
            extra = ""
            if w.shown < total:
                extra = f" (the first {w.shown} of {total}; --grid-max sets how many)"
            lines.append(f"wrote {w.name}: a grid of {w.shown} {what}{extra}")
        elif isinstance(w, PngDirWriter):
            lines.append(f"wrote {w.rows} PNG files to {w.name}")
        else:
            lines.append(f"wrote {w.name}: {w.rows} {unit}")
    return lines


def outputs_json(writers: list[Writer]) -> list[dict[str, Any]]:
    facts = []
    for w in writers:
        fact: dict[str, Any] = {"path": w.name, "rows": w.rows}
        if isinstance(w, GridWriter):
            fact["grid_images"] = w.shown
        facts.append(fact)
    return facts


def model_line(vae: VAE) -> str:
    facts = vae.runs_on
    return f"model {vae.info['name']} ({vae.info['model_dir']}), {facts.get('backend')}"


def check_outputs(grid: Path | None, *paths: Path | None) -> None:
    """Refuse, before any work, a ``grid`` not named .png and an output that cannot be
    written (an OSError naming it), for commands that write after computing."""
    if grid is not None:
        check_grid_name(grid)
    for path in (grid, *paths):
        if path is not None:
            check_output(path)


# ---- subcommands ----------------------------------------------------------------------------


def add_grid_options(p: argparse.ArgumentParser, grid_max: int) -> None:
    p.add_argument("--nrow", type=positive_int, default=8, help="images per grid row")
    p.add_argument(
        "--grid-max",
        type=positive_int,
        default=grid_max,
        metavar="N",
        help=f"most images in a .png grid (default {grid_max})",
    )
    p.add_argument("--out-dir", type=Path, metavar="DIR", help="one PNG per image, with a sidecar")
    p.add_argument(
        "--dtype",
        choices=("float32", "uint8"),
        default="float32",
        help="images in arrays and tables: float32 in [0, 1] or uint8 pixels",
    )


def add_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=positive_int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=seed_int, default=0, help="default 0")
    p.add_argument(
        "--start",
        type=seed_int,
        default=0,
        metavar="I",
        help="first image index: images I..I+n-1 of the seed, the same in any split",
    )
    p.add_argument("--npy", action="append", default=[], metavar="FILE", help="= --out FILE.npy")
    p.add_argument("--batch-size", type=positive_int, default=256, metavar="N")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_grid_options(p, GRID_MAX)


def run_generate(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return run_generate_on_ray(args)
    outs = [*args.out, *map(str, args.npy)]
    if not outs and args.out_dir is None:
        raise InputError("nothing to write: give --out (grid.png, images.npy, ...) or --out-dir")
    vae = load_vae(args)
    schema = image_schema(GENERATED_KEYS, args.dtype, status=False)
    writers = open_outputs(args, schema, outs, expected=args.n, default_format="npy")
    if args.out_dir is not None:
        writers.append(PngDirWriter(args.out_dir, schema, first=args.start))
    started = time.perf_counter()
    results = generate_results(vae, args.n, args.seed, args.start, args.batch_size)
    with progress(args, args.n, "generate") as bar:
        drain(results, writers, bar.update)
    last = args.start + args.n - 1
    summary = {
        "command": "generate",
        "images": args.n,
        "seed": args.seed,
        "first_index": args.start,
        "last_index": last,
        "dtype": args.dtype,
        "outputs": outputs_json(writers),
        "seconds": round(time.perf_counter() - started, 3),
    }
    lines = [f"generated {args.n} images (seed {args.seed}, indices {args.start}..{last})"]
    if args.verbose:
        lines.append(model_line(vae))
    report(args, summary, lines + wrote_lines(writers, args.n, "images", "images"))
    return 0


def add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        nargs="+",
        help="image files, folders, IDX files (.gz or raw), .npy, Parquet, or - (stdin)",
    )
    p.add_argument("--logvar", action="store_true", help="also write logvar (npz, tables)")


def run_embed(args: argparse.Namespace) -> int:
    if args.ray is not None:
        return run_embed_on_ray(args)
    vae = load_vae(args)
    source = open_input(args, args.input, vae)
    schema = embed_schema(source, vae.latent_dim, args.logvar)
    writers = open_outputs(
        args,
        schema,
        args.out,
        expected=exact_count(args, source),
        default_format="jsonl",
        per_file=source.per_file,
    )
    started = time.perf_counter()
    with progress(args, source.count, "embed") as bar:
        rows = drain(embed_results(vae, source, args.batch_size, args.logvar), writers, bar.update)
    embedded = rows - len(source.skipped)
    summary = {
        "command": "embed",
        "rows": rows,
        "embedded": embedded,
        "latent_dim": vae.latent_dim,
        **source_facts(source),
        "outputs": outputs_json(writers),
        "seconds": round(time.perf_counter() - started, 3),
    }
    notes(args, source)
    lines = [f"embedded {embedded} of {rows} images (latent size {vae.latent_dim})"]
    if args.verbose:
        lines.append(model_line(vae))
    report(
        args,
        summary,
        lines + wrote_lines(writers, embedded, "rows", f"embeddings of size {vae.latent_dim}"),
    )
    return 0


def add_reconstruct(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="+", help="image files, folders, IDX, .npy, Parquet or -")
    p.add_argument("--npy", action="append", default=[], metavar="FILE", help="= --out FILE.npy")
    p.add_argument(
        "--n",
        type=positive_int,
        metavar="N",
        help="use the first N images (default: all, or just the grid's worth when only a "
        ".png grid is written)",
    )
    add_grid_options(p, RECONSTRUCT_GRID)


def run_reconstruct(args: argparse.Namespace) -> int:
    outs = [*args.out, *map(str, args.npy)]
    if not outs and args.out_dir is None:
        raise InputError("nothing to write: give --out grid.png, --out recon.npy or --out-dir")
    vae = load_vae(args)
    source = open_input(args, args.input, vae)
    only_grids = args.out_dir is None and all(
        o != STDOUT and Path(o).suffix.lower() == ".png" for o in outs
    )
    limit = args.n if args.n is not None else (args.grid_max if only_grids else None)
    schema = image_schema(source.keys, args.dtype, status=True)
    expected = exact_count(args, source)
    if expected is not None and limit is not None:
        expected = min(expected, limit)
    writers = open_outputs(
        args,
        schema,
        outs,
        expected=expected,
        default_format="npy",
        per_file=source.per_file,
        grid=ReconstructionGridWriter,
    )
    if args.out_dir is not None:
        writers.append(PngDirWriter(args.out_dir, schema))
    total = source.count if limit is None else min(limit, max(source.count, 0))
    with progress(args, total, "reconstruct") as bar:
        rows = drain(reconstruct_results(vae, source, args.batch_size, limit), writers, bar.update)
    used = rows - len(source.skipped)
    if not used:
        raise InputError(f"{source.name}: holds no images")
    of = f" of {source.count}" if source.count >= 0 and source.count != used else ""
    summary = {
        "command": "reconstruct",
        "used": used,
        "available": source.count,
        **source_facts(source),
        "outputs": outputs_json(writers),
    }
    notes(args, source)
    lines = [f"reconstructed {used}{of} images"]
    report(
        args,
        summary,
        lines + wrote_lines(writers, used, "originals over reconstructions", "reconstructions"),
    )
    return 0


def add_interpolate(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first image (file, or .npy holding one image)")
    p.add_argument("b", help="last image")
    p.add_argument("--steps", type=positive_int, default=10, help="images, ends included (10)")
    p.add_argument("--out", type=Path, help="PNG strip")
    p.add_argument("--npy", type=Path, help=".npy file for the (steps, 1, 28, 28) images")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run_interpolate(args: argparse.Namespace) -> int:
    if args.out is None and args.npy is None:
        raise InputError("nothing to write: give --out strip.png and/or --npy images.npy")
    check_outputs(args.out, args.npy)
    vae = load_vae(args)
    a = open_input(args, args.a, vae).read()
    b = open_input(args, args.b, vae).read()
    images = vae.interpolate(a, b, steps=args.steps, preprocess="none")
    wrote = []
    if args.out is not None:
        save_grid(images, args.out, nrow=args.steps)
        wrote.append(args.out)
    if args.npy is not None:
        save_npy(args.npy, images)
        wrote.append(args.npy)
    names = [display_name(p) for p in wrote]
    summary = {"command": "interpolate", "steps": args.steps, "outputs": names}
    report(args, summary, [f"wrote {n}" for n in names])
    return 0


def add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", nargs="+", help="image files, folders, IDX, .npy, Parquet or -")
    p.add_argument(
        "--k", type=positive_int, default=1, help="importance samples (1: negative ELBO)"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="default 0")
    p.add_argument(
        "--ood",
        action="store_true",
        help="the out-of-distribution score instead (docs/ood.md; higher = more anomalous)",
    )
    p.add_argument(
        "--fpr",
        type=float,
        help="with --ood: count images above the threshold calibrated at this "
        "false-positive rate (default 0.05)",
    )


def far_threshold(vae: VAE) -> float | None:
    """The OOD score above which a scored image is flagged "far_from_data" (1% of the
    model's own held-out images are); None without a calibration (docs/ood.md)."""
    if vae.ood_calibration is None:
        return None
    try:
        return vae.ood_threshold(FAR_FPR)
    except VAEError:  # a section of another method or version: no check, as before
        return None


def run_score(args: argparse.Namespace) -> int:
    if args.ood and args.k != 1:
        raise InputError("--k is for the likelihood; --ood takes no importance samples")
    if args.fpr is not None and not args.ood:
        raise InputError("--fpr goes with --ood")
    fpr = 0.05 if args.fpr is None else args.fpr
    vae = load_vae(args)
    source = open_input(args, args.input, vae)
    limit = vae.ood_threshold(fpr) if args.ood else None  # refused before any work
    column = "ood_score" if args.ood else "score"
    writers = open_outputs(
        args,
        score_schema(source, column),
        args.out,
        expected=exact_count(args, source),
        default_format="jsonl",
        per_file=source.per_file,
    )
    total, count, kept = 0.0, 0, []

    def scored(results: Iterator[ResultBatch]) -> Iterator[ResultBatch]:
        nonlocal total, count
        for batch in results:
            values = batch.values[column]
            total += float(values.sum())
            count += len(values)
            if args.ood:  # for the median and the count above the threshold
                kept.append(values)
            yield batch

    results = (
        ood_results(vae, source, args.batch_size)
        if args.ood
        else score_results(vae, source, args.batch_size, args.k, args.seed, far_threshold(vae))
    )
    with progress(args, source.count, "score") as bar:
        rows = drain(scored(results), writers, bar.update)
    if not count:
        raise InputError(f"{source.name}: holds no images")
    if limit is not None:
        scores = np.concatenate(kept)
        flagged = int((scores > limit).sum())
        summary = {
            "command": "score",
            "ood": True,
            "fpr": fpr,
            "threshold": limit,
            "flagged": flagged,
            "median": float(np.median(scores)),
            "images": count,
            "rows": rows,
            **source_facts(source),
            "outputs": outputs_json(writers),
        }
        notes(args, source)
        line = (
            f"out of distribution: {flagged} of {count} images (ood score above "
            f"{limit:.3f}, the threshold at FPR {fpr:g}); median score {np.median(scores):.3f}"
        )
        report(args, summary, [line, *wrote_lines(writers, count, "rows", "OOD scores")])
        return 0
    what = "negative ELBO" if args.k == 1 else f"importance-weighted bound (k={args.k})"
    summary = {
        "command": "score",
        "bound": "negative_elbo" if args.k == 1 else "iw_bound",
        "k": args.k,
        "mean": total / count,
        "images": count,
        "rows": rows,
        **source_facts(source),
        "outputs": outputs_json(writers),
    }
    notes(args, source)
    lines = [f"mean {what}: {total / count:.4f} nats over {count} images"]
    report(args, summary, lines + wrote_lines(writers, count, "rows", "scores"))
    return 0


def add_models(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")


def run_models(args: argparse.Namespace) -> int:
    from .catalog import list_models

    models = list_models()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    if not models:
        print("no shipped models found")
        return 0
    header = f"{'name':24} {'arch':5} {'latent':>6} {'dataset':14} {'size':>8} "
    print(header + f"{'test nELBO':>10} {'IW bound':>9} {'5-NN':>7}  variants")
    for m in models:
        if "error" in m:
            print(f"{m['name']:24} damaged: {m['error']}")
            continue
        q = m["quality"]
        nelbo = f"{q['test_nelbo']:.2f}" if "test_nelbo" in q else "-"
        iw = f"{q['test_iw_bound']:.2f}" if "test_iw_bound" in q else "-"
        knn = f"{100 * q['knn_accuracy']:.2f}%" if "knn_accuracy" in q else "-"
        variants = ", ".join(f"{v} ({m['variant_bytes'][v] / 1e6:.1f} MB)" for v in m["variants"])
        name = m["name"] + (" *" if m["default"] else "")
        print(
            f"{name:24} {m['arch']:5} {m['latent_dim']:>6} {m['dataset'] or '-':14} "
            f"{m['bytes'] / 1e6:>5.1f} MB {nelbo:>10} {iw:>9} {knn:>7}  {variants or '-'}"
        )
    if args.verbose:
        for m in models:
            print(f"{m['name']}: {m['directory']}")
    print('* the default model; load any by name: VAE("NAME") or vae-run --model NAME')
    return 0


def add_info(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the facts as JSON")


def run_info(args: argparse.Namespace) -> int:
    info = load_vae(args).info
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    # The text form is for people: summaries of the long sections (--json has them whole).
    for key, value in info.items():
        summary = SUMMARIES.get(key) if isinstance(value, dict) else None
        if summary is not None:
            text = summary(value)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
        print(f"{key}: {text}")
    return 0


def _parity_summary(p: dict[str, Any]) -> str:
    worst = ", ".join(f"{k} {p[k]:.1e}" for k in ("mu", "logvar", "x_hat") if k in p)
    return f"{worst} (max abs vs PyTorch, tolerance {p.get('tolerance')})"


def _quality_summary(q: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in q.items() if isinstance(v, float))


def _auto_summary(facts: dict[str, Any]) -> str:
    from .auto import summary

    return summary(facts) + " (probe figures: --json)"


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
    "auto": lambda a: _auto_summary(a),
    "parity": _parity_summary,
    "training": lambda t: f"{t.get('command', '')} (epoch {t.get('epoch')})",
    "quality": _quality_summary,
    "dataset": lambda d: str(d.get("name")),
    "export": lambda e: str(e.get("command", "")),
    "ood": lambda o: (
        f"{o.get('method')} v{o.get('version')}, thresholds at FPR "
        + ", ".join(f"{r['fpr']:g}" for r in o.get("thresholds", []))
    ),
}


def add_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", nargs="?", help="model directory (default: --model or shipped)")
    p.add_argument("--data-dir", required=True, help="folder with the dataset's IDX files")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "fashion-mnist"))
    p.add_argument(
        "--k",
        type=positive_int,
        default=1,
        help="importance samples for the IW bound (1: the ELBO only)",
    )
    p.add_argument("--neighbours", type=int, default=5, help="k of the k-NN accuracy (0: skip)")
    p.add_argument(
        "--ood-dataset",
        choices=("mnist", "fashion-mnist"),
        help="also report the AUROC of score() and of the OOD score against this "
        "dataset's test set",
    )
    p.add_argument("--seed", type=seed_int, default=0)
    p.add_argument("--limit", type=positive_int, help="use only the first N test images")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress messages")


def run_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate

    if args.model_dir:
        args.model = args.model_dir
    vae = load_vae(args)
    show = not args.no_progress and sys.stderr.isatty()
    say = (lambda msg: print(f"  {msg} ...", file=sys.stderr)) if show else None
    result = evaluate(
        vae,
        args.data_dir,
        args.dataset,
        k=args.k,
        seed=args.seed,
        neighbours=args.neighbours,
        ood_dataset=args.ood_dataset,
        limit=args.limit,
        progress=say,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{vae.info['name']} on {result['dataset']} test ({result['test_images']} images)")
    rows = [("negative ELBO (k=1)", f"{result['test_nelbo']:.3f} nats")]
    if "test_iw_bound" in result:
        rows.append((f"IW bound (k={result['iw_k']})", f"{result['test_iw_bound']:.3f} nats"))
    if "knn_accuracy" in result:
        rows.append(
            (f"{result['knn_k']}-NN accuracy on mu", f"{100 * result['knn_accuracy']:.2f}%")
        )
    if "ood_auroc" in result:
        rows.append((f"OOD AUROC vs {result['ood_dataset']}", f"{result['ood_auroc']:.5f}"))
        rows.append(("  of the OOD score", _ood_score_row(result)))
    for label, value in rows:
        print(f"  {label + ':':30} {value}")
    print(f"  ({result['seconds']:.1f} s)")
    return 0


def _ood_score_row(result: dict[str, Any]) -> str:
    if "ood_score_auroc" not in result:
        return "not calibrated (vae-export ood adds it)"
    return (
        f"{result['ood_score_auroc']:.5f} (at FPR {result['ood_score_fpr_at']:g}: test "
        f"FPR {result['ood_score_test_fpr']:.4f}, TPR {result['ood_score_test_tpr']:.4f})"
    )


def add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--compare",
        action="store_true",
        help="every available backend x variant x precision side by side, alternating, "
        "in images per CPU-second (--backend and --variant are then not used)",
    )
    p.add_argument(
        "--batch-sizes", type=int_list, help="default 1,64,256,1024 (--compare: 1,256,1024)"
    )
    p.add_argument(
        "--seconds",
        type=float,
        default=1.0,
        help="time budget per measurement (--compare: per contender, split over --rounds)",
    )
    p.add_argument("--rounds", type=positive_int, default=5, help="--compare: alternating rounds")
    p.add_argument(
        "--precision",
        type=precision_list,
        metavar="P[,P]",
        help="openvino: f32 or bf16 (default: the machine's; --compare: f32 and the machine's)",
    )
    p.add_argument(
        "--static-batches",
        type=count_list,
        metavar="N[,N]",
        help="openvino: compiled batch shapes kept per graph (0: dynamic only; default 8); "
        "--compare runs each setting given",
    )
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        default=os.environ.get("VAE_ONNX_DATA_DIR"),
        help="--compare: the dataset's folder, for the test negative ELBO change column "
        "(default: $VAE_ONNX_DATA_DIR)",
    )
    p.add_argument(
        "--cold-start",
        type=int,
        default=7,
        metavar="RUNS",
        help="fresh processes for the cold-start figure (0: skip)",
    )
    p.add_argument(
        "--stream",
        type=int,
        default=0,
        metavar="N",
        help="also embed N synthetic IDX images in a child process (peak RSS)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def run_bench(args: argparse.Namespace) -> int:
    from .bench import dumps, format_report
    from .bench import run_bench as bench

    if args.compare:
        return run_bench_compare(args)
    options: dict[str, Any] = {}
    if args.precision:
        if len(args.precision) > 1:
            raise InputError("--precision: give one precision (several only with --compare)")
        options["precision"] = args.precision[0]
    if args.static_batches:
        if len(args.static_batches) > 1:
            raise InputError("--static-batches: give one count (several only with --compare)")
        options["static_batches"] = args.static_batches[0]
    report = bench(
        args.model,
        variant=args.variant,
        threads=args.threads,
        batch_sizes=args.batch_sizes or [1, 64, 256, 1024],
        budget_s=args.seconds,
        cold_runs=args.cold_start,
        stream=args.stream,
        providers=args.device,
        backend=args.backend,
        engine_options=options,
    )
    print(dumps(report) if args.json else format_report(report))
    return 0


def run_bench_compare(args: argparse.Namespace) -> int:
    from .bench_compare import compare, format_report, test_images_of

    images = test_images_of(args.model, args.data_dir) if args.data_dir else None
    report = compare(
        args.model,
        threads=args.threads or 1,
        batch_sizes=args.batch_sizes or [1, 256, 1024],
        rounds=args.rounds,
        budget_s=args.seconds / args.rounds,
        test_images=images,
        precisions=args.precision,
        static_batches=args.static_batches or [8],
    )
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def add_web(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", help="model for samples and drawings (shipped)")
    p.add_argument(
        "--explorer",
        metavar="DIR",
        help="2-D model for the latent plane (default: mnist-conv-z2 beside --model)",
    )
    p.add_argument("--port", type=int_at_least(0), default=8765, help="0: any free port (8765)")


def run_web(args: argparse.Namespace) -> int:
    from .web_server import serve

    serve(args.model, args.explorer, args.port)
    return 0


class Subcommand(NamedTuple):
    name: str
    help: str
    # shared option groups: "model", "input", "ray", "output:<format of --out ->[:required]"
    groups: tuple[str, ...]
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


MODEL = ("model",)
MODEL_INPUT = ("model", "input")
SUBCOMMANDS = [
    Subcommand(
        "generate",
        "decode samples of the prior (any number, shard-stable)",
        ("model", "output:npy", "ray"),
        add_generate,
        run_generate,
    ),
    Subcommand(
        "embed",
        "write the embeddings (mu) of images, each row with its source",
        ("model", "input", "output:jsonl:required", "ray"),
        add_embed,
        run_embed,
    ),
    Subcommand(
        "reconstruct",
        "encode and decode images",
        ("model", "input", "output:npy"),
        add_reconstruct,
        run_reconstruct,
    ),
    Subcommand(
        "interpolate",
        "decode a path between two images",
        MODEL_INPUT,
        add_interpolate,
        run_interpolate,
    ),
    Subcommand(
        "score",
        "per-image negative ELBO in nats, or the out-of-distribution score (--ood)",
        ("model", "input", "output:jsonl"),
        add_score,
        run_score,
    ),
    Subcommand("info", "describe the model and the providers in use", MODEL, add_info, run_info),
    Subcommand("models", "list the shipped models", (), add_models, run_models),
    Subcommand(
        "evaluate",
        "test negative ELBO, IW bound, k-NN accuracy, OOD AUROC",
        MODEL,
        add_evaluate,
        run_evaluate,
    ),
    Subcommand(
        "bench",
        "throughput, latency, GFLOP/s, cold start and memory",
        MODEL,
        add_bench,
        run_bench,
    ),
    Subcommand("web", "serve the interactive page on 127.0.0.1", (), add_web, run_web),
]


def _parents(groups: tuple[str, ...]) -> list[argparse.ArgumentParser]:
    parents = [common_options()]
    for group in groups:
        if group.startswith("output:"):
            _, fmt, *required = group.split(":")
            parents.append(output_options(fmt, required=bool(required)))
        else:
            shared = {"model": model_options, "input": input_options, "ray": ray_options}
            parents.append(shared[group]())
    return parents


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run an exported vae-onnx model.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text, groups, add, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text, parents=_parents(groups))
        add(p)
        p.set_defaults(run=run)
    return parser


def _one_line(message: str) -> str:
    """One printable line, whatever file names the message holds (escaped)."""
    return display_name(" ".join(str(message).split()))


def _show_warning(
    message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
) -> None:
    print(f"{PROG}: warning: {_one_line(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings(), sigterm_raises():
        warnings.showwarning = _show_warning
        try:
            return int(args.run(args))
        except VAEError as exc:
            message = str(exc)
        except BrokenPipeError:  # e.g. `vae-run info | head -1`: not an error
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush stays quiet
            return 0
        except OSError as exc:  # e.g. an output folder we may not write to
            where = f"{exc.filename}: " if exc.filename else ""
            message = f"{where}{exc.strerror or exc}"
        except MemoryError as exc:  # a result too large for this machine
            message = f"out of memory ({exc or 'allocation failed'})"
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
        except Terminated:  # SIGTERM: cleaned up as for Ctrl-C
            print(f"{PROG}: terminated", file=sys.stderr)
            return EXIT_TERMINATED
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
