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
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from vae_format.atomic import save_npy

from . import __version__
from .engines import DEFAULT_ENGINE, ENGINES
from .errors import InputError, VAEError
from .outputs import reconstruction_rows, save_grid
from .sources import ImageSource, open_images
from .streaming import embed_to_npy
from .vae import VAE

PROG = "vae-run"
EXIT_USAGE = 2


# ---- shared options -------------------------------------------------------------------------


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


positive_int = int_at_least(1)
seed_int = int_at_least(0)


def model_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("model")
    group.add_argument(
        "--model", metavar="DIR", help="model directory (default: $VAE_ONNX_MODEL, else shipped)"
    )
    group.add_argument("--variant", metavar="NAME", help="a variant listed in the manifest")
    group.add_argument(
        "--backend", choices=sorted(ENGINES), default=DEFAULT_ENGINE, help="default: %(default)s"
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
        "--invert", action="store_true", help="images are dark ink on a light background"
    )
    group.add_argument(
        "--skip-bad",
        action="store_true",
        help="in a folder, skip files that are not readable images (default: fail)",
    )
    group.add_argument("--batch-size", type=positive_int, default=256, metavar="N")
    group.add_argument("--no-progress", action="store_true", help="no progress bar")
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


def open_input(args: argparse.Namespace, path: str) -> ImageSource:
    return open_images(path, invert=args.invert, skip_bad=args.skip_bad)


@contextmanager
def progress(args: argparse.Namespace, total: int, desc: str) -> Iterator[Any]:
    from tqdm import tqdm  # lazy: only the streaming commands draw a bar

    enabled = not getattr(args, "no_progress", True) and sys.stderr.isatty()
    with tqdm(total=total, desc=desc, unit="img", file=sys.stderr, disable=not enabled) as bar:
        yield bar


def report_skipped(source: ImageSource) -> None:
    if source.skipped:
        print(f"{PROG}: skipped {len(source.skipped)} unreadable file(s):", file=sys.stderr)
        for path, _reason in source.skipped[:10]:
            print(f"  {path}", file=sys.stderr)


# ---- subcommands ----------------------------------------------------------------------------


def add_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n", type=positive_int, default=64, help="number of images (default 64)")
    p.add_argument("--seed", type=seed_int, default=0, help="default 0")
    p.add_argument("--out", type=Path, help="PNG grid to write")
    p.add_argument("--npy", type=Path, help=".npy file for the (n, 1, 28, 28) float32 images")
    p.add_argument("--nrow", type=positive_int, default=8, help="images per grid row")


def run_generate(args: argparse.Namespace) -> int:
    if args.out is None and args.npy is None:
        raise InputError("nothing to write: give --out grid.png and/or --npy images.npy")
    images = load_vae(args).generate(args.n, seed=args.seed)
    _write_images(images, args.out, args.npy, args.nrow)
    return 0


def _write_images(images: np.ndarray, out: Path | None, npy: Path | None, nrow: int) -> None:
    if out is not None:
        save_grid(images, out, nrow=nrow)
        print(f"wrote {out}")
    if npy is not None:
        save_npy(npy, images)
        print(f"wrote {npy}")


def add_embed(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="image file, folder of images, IDX file (.gz or raw) or .npy")
    p.add_argument("--out", type=Path, required=True, help=".npy file for the (N, L) embeddings")


def run_embed(args: argparse.Namespace) -> int:
    source = open_input(args, args.input)
    vae = load_vae(args)
    with progress(args, source.count, "embed") as bar:
        written = embed_to_npy(
            vae, source, args.out, batch_size=args.batch_size, progress=bar.update
        )
    report_skipped(source)
    print(f"wrote {args.out}: {written} embeddings of size {vae.latent_dim}")
    return 0


def add_reconstruct(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="image file, folder of images, IDX file or .npy")
    p.add_argument("--out", type=Path, help="PNG grid: rows of originals above reconstructions")
    p.add_argument("--npy", type=Path, help=".npy file for the reconstructions")
    p.add_argument("--n", type=positive_int, default=32, help="use the first n images (32)")
    p.add_argument("--nrow", type=positive_int, default=8, help="images per grid row")


def run_reconstruct(args: argparse.Namespace) -> int:
    if args.out is None and args.npy is None:
        raise InputError("nothing to write: give --out grid.png and/or --npy recon.npy")
    source = open_input(args, args.input)
    vae = load_vae(args)
    x = source.read(limit=args.n)
    if not len(x):
        raise InputError(f"{args.input}: holds no images")
    recon = vae.reconstruct(x)
    report_skipped(source)
    # Each row of originals above the row of their reconstructions.
    _write_images(reconstruction_rows(x, recon, args.nrow), args.out, None, args.nrow)
    _write_images(recon, None, args.npy, args.nrow)
    return 0


def add_interpolate(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="first image (file, or .npy holding one image)")
    p.add_argument("b", help="last image")
    p.add_argument("--steps", type=positive_int, default=10, help="images, ends included (10)")
    p.add_argument("--out", type=Path, help="PNG strip")
    p.add_argument("--npy", type=Path, help=".npy file for the (steps, 1, 28, 28) images")


def run_interpolate(args: argparse.Namespace) -> int:
    if args.out is None and args.npy is None:
        raise InputError("nothing to write: give --out strip.png and/or --npy images.npy")
    a = open_input(args, args.a).read()
    b = open_input(args, args.b).read()
    images = load_vae(args).interpolate(a, b, steps=args.steps)
    _write_images(images, args.out, args.npy, nrow=args.steps)
    return 0


def add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="image file, folder of images, IDX file or .npy")
    p.add_argument(
        "--k", type=positive_int, default=1, help="importance samples (1: negative ELBO)"
    )
    p.add_argument("--seed", type=seed_int, default=0, help="default 0")
    p.add_argument("--out", type=Path, help=".npy file for the per-image scores (float64)")
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


def run_score(args: argparse.Namespace) -> int:
    if args.ood and args.k != 1:
        raise InputError("--k is for the likelihood; --ood takes no importance samples")
    if args.fpr is not None and not args.ood:
        raise InputError("--fpr goes with --ood")
    fpr = 0.05 if args.fpr is None else args.fpr
    source = open_input(args, args.input)
    vae = load_vae(args)
    limit = vae.ood_threshold(fpr) if args.ood else None  # refused before any work
    rng = np.random.default_rng(args.seed)  # one stream across batches: batch size is moot
    parts = []
    with progress(args, source.count, "score") as bar:
        for batch in source.batches(args.batch_size):
            parts.append(vae.ood_score(batch) if args.ood else vae.score(batch, k=args.k, rng=rng))
            bar.update(len(batch))
    report_skipped(source)
    scores = np.concatenate(parts) if parts else np.zeros(0)
    if not len(scores):
        raise InputError(f"{args.input}: holds no images")
    if args.out is not None:
        save_npy(args.out, scores)
    if limit is not None:
        flagged = int((scores > limit).sum())
        print(
            f"out of distribution: {flagged} of {len(scores)} images (ood score above "
            f"{limit:.3f}, the threshold at FPR {fpr:g}); median score "
            f"{np.median(scores):.3f}"
        )
        return 0
    what = "negative ELBO" if args.k == 1 else f"importance-weighted bound (k={args.k})"
    print(f"mean {what}: {scores.mean():.4f} nats over {len(scores)} images")
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


SUMMARIES: dict[str, Callable[[dict[str, Any]], str]] = {
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


def int_list(text: str) -> list[int]:
    """An argparse type: comma-separated integers >= 1 (batch sizes)."""
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes must be >= 1")
    return sizes


def add_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch-sizes", type=int_list, default=[1, 64, 256, 1024])
    p.add_argument("--seconds", type=float, default=1.0, help="time budget per measurement")
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

    report = bench(
        args.model,
        variant=args.variant,
        threads=args.threads,
        batch_sizes=args.batch_sizes,
        budget_s=args.seconds,
        cold_runs=args.cold_start,
        stream=args.stream,
        providers=args.device,
        backend=args.backend,
    )
    print(dumps(report) if args.json else format_report(report))
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
    groups: tuple[str, ...]  # shared option groups: "model", "input"
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


MODEL = ("model",)
MODEL_INPUT = ("model", "input")
SUBCOMMANDS = [
    Subcommand("generate", "decode samples of the prior", MODEL, add_generate, run_generate),
    Subcommand("embed", "write the embeddings (mu) of images", MODEL_INPUT, add_embed, run_embed),
    Subcommand(
        "reconstruct", "encode and decode images", MODEL_INPUT, add_reconstruct, run_reconstruct
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
        MODEL_INPUT,
        add_score,
        run_score,
    ),
    Subcommand("info", "describe the model and the providers in use", MODEL, add_info, run_info),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run an exported vae-onnx model.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    shared = {"model": model_options(), "input": input_options()}
    for name, help_text, groups, add, run in SUBCOMMANDS:
        p = sub.add_parser(
            name, help=help_text, description=help_text, parents=[shared[g] for g in groups]
        )
        add(p)
        p.set_defaults(run=run)
    return parser


def _one_line(message: str) -> str:
    return " ".join(str(message).split())


def _show_warning(
    message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None
) -> None:
    print(f"{PROG}: warning: {_one_line(str(message))}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
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
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130
    print(f"{PROG}: error: {_one_line(message)}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
