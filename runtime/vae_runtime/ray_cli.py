"""``vae-run embed ... --ray [ADDRESS]`` and ``vae-run generate ... --ray``: the same jobs
on Ray Data, from Parquet to a folder of Parquet files (see docs/scale-out.md).

``--ray`` alone starts a local Ray for the job (``--cpus`` caps it); ``--ray auto`` joins
the cluster this machine belongs to, ``--ray HOST:PORT`` the cluster at that address. The
output folder is written beside its final name and renamed into place when every row is
written, so a failed job leaves no partial output; on a cluster it must lie on a
filesystem every node writes to.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vae_format.atomic import check_output_folder
from vae_format.atomic_dir import staged_dir

from .cli_types import positive_float, positive_int
from .distributed import (
    IO_CPUS,
    ActorPool,
    check_pool,
    default_pool_size,
    embed_dataset,
    generate_dataset,
    plan_parquet,
    read_image_parquet,
    require_ray,
    vae_error,
)
from .errors import InputError
from .names import display_name
from .reporting import report
from .vae import VAE

LOCAL = "local"


def ray_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("Ray Data (the ray extra): Parquet in, a Parquet folder out")
    group.add_argument(
        "--ray",
        nargs="?",
        const=LOCAL,
        metavar="ADDRESS",
        help="run on Ray: alone, a local Ray for this job; 'auto' or HOST:PORT, a cluster",
    )
    group.add_argument("--actors", type=positive_int, metavar="N", help="actor pool size")
    group.add_argument(
        "--cpus-per-actor",
        type=positive_float,
        metavar="F",
        help="CPUs Ray reserves per actor (default 0.5 x --threads)",
    )
    group.add_argument(
        "--gpus-per-actor", type=positive_float, metavar="F", help="with --device cuda (0.5)"
    )
    group.add_argument(
        "--cpus", type=positive_int, metavar="N", help="CPUs of the local Ray (default all)"
    )
    return parent


@contextmanager
def ray_session(args: argparse.Namespace) -> Iterator[dict[str, float]]:
    """Ray started or joined for the job (and left, or stopped, after it); yields the
    cluster's resources. Ray's own progress bars show on a terminal unless
    ``--no-progress`` or ``-q``; its logging is kept to errors."""
    ray = require_ray()
    if args.cpus is not None and args.ray != LOCAL:
        raise InputError("--cpus sizes a local Ray; a cluster has the CPUs its nodes offer")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reports home from a CLI
    bars = not (args.quiet or args.no_progress) and sys.stdout.isatty() and sys.stderr.isatty()
    started = time.perf_counter()
    try:
        ray.init(
            address=args.ray,
            num_cpus=args.cpus,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except Exception as exc:  # connection, authentication and setup errors of every kind
        text = " ".join(str(exc).split())[:300]
        raise InputError(f"--ray {args.ray}: cannot start or join Ray ({text})") from None
    try:
        import ray.data

        # Ray Data's progress bars on a terminal, nothing else: the summary says the rest, and
        # a failed job comes back as an exception (which vae-run reports in one line).
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = bars
        context.print_on_execution_start = False
        resources = ray.cluster_resources()
        resources["bring_up_seconds"] = time.perf_counter() - started
        resources["nodes"] = len([n for n in ray.nodes() if n.get("Alive")])
        yield resources
    finally:
        ray.shutdown()


def pool_from_args(args: argparse.Namespace, resources: dict[str, float]) -> ActorPool:
    threads = args.threads or 1
    pool = ActorPool(
        actors=args.actors or default_pool_size(resources, threads),
        threads=threads,
        batch_size=args.batch_size,
        cpus_per_actor=args.cpus_per_actor,
        device=args.device or "cpu",
        gpus_per_actor=args.gpus_per_actor,
    )
    check_pool(pool, resources)
    return pool


def check_backend(args: argparse.Namespace) -> None:
    """One engine for every actor: auto's probe runs per process, so actors could pick
    different graphs and the rows would depend on which actor ran them."""
    if args.backend == "auto":
        raise InputError(
            "--backend auto probes per process and actors could pick different engines; "
            "with --ray name one (vae-run info --backend auto says what auto picks here)"
        )


def output_folder(args: argparse.Namespace) -> Path:
    """The one ``--out``: a folder that does not exist yet (or is empty)."""
    if len(args.out) != 1 or args.out[0] == "-":
        raise InputError("--ray writes one folder of Parquet files: give one --out FOLDER")
    out = Path(args.out[0])
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{display_name(out)}: exists; --ray writes a new folder")
    if not out.parent.is_dir():
        raise InputError(f"{display_name(out.parent)}: no such folder")
    check_output_folder(out, staged=True)  # before Ray starts, not after the job
    return out


def write_folder(ds: Any, out: Path) -> dict[str, int]:
    """Write ``ds`` as Parquet files into a staging folder beside ``out`` and swap it into
    place (vae_format.atomic_dir: a killed job's staging folder is swept by the next one);
    returns the rows and files written (and the skipped rows)."""
    import pyarrow.parquet as pq

    with staged_dir(out) as staging:
        ds.write_parquet(str(staging), ray_remote_args={"num_cpus": IO_CPUS}, compression="zstd")
        files = sorted(staging.glob("*.parquet"))  # Ray writes no file for no rows
        rows = skipped = 0
        for f in files:
            meta = pq.ParquetFile(f)
            rows += meta.metadata.num_rows
            if "status" in meta.schema_arrow.names:
                status = meta.read(columns=["status"]).column("status").to_pylist()
                skipped += sum(s != "ok" for s in status)
    return {"rows": rows, "files": len(files), "skipped": skipped}


def _unwrapped(job: Any) -> Any:
    """``job()``, with a refusal made on an actor (which Ray wraps) raised as itself."""
    try:
        return job()
    except InputError:
        raise
    except Exception as exc:  # a refusal made on an actor comes back wrapped by Ray
        own = vae_error(exc)
        if own is None:
            raise
        raise InputError(str(own)) from None


def run_embed_on_ray(args: argparse.Namespace) -> int:
    check_backend(args)
    out = output_folder(args)
    # A bad model or input is refused here, before Ray starts, not on the actors.
    VAE(args.model, variant=args.variant, backend=args.backend, threads=1)
    plan_parquet(args.input, args.column, args.id_column)
    with ray_session(args) as resources:
        pool = pool_from_args(args, resources)
        ds, column, total = read_image_parquet(args.input, args.column, args.id_column)
        embedded = embed_dataset(
            ds,
            model=args.model,
            column=column,
            id_column=args.id_column,
            variant=args.variant,
            backend=args.backend,
            pool=pool,
            invert={"auto": "auto", "yes": True, "no": False}[args.invert],
            preprocess=args.preprocess,
            skip_bad=args.skip_bad,
            logvar=args.logvar,
        )
        started = time.perf_counter()
        wrote = _unwrapped(lambda: write_folder(embedded, out))
        seconds = time.perf_counter() - started
    ok = wrote["rows"] - wrote["skipped"]
    return _report(args, "embed", out, wrote, seconds, resources, pool, embedded=ok, rows=total)


def run_generate_on_ray(args: argparse.Namespace) -> int:
    check_backend(args)
    if args.out_dir is not None:
        raise InputError("--ray writes a folder of Parquet files: give --out FOLDER, not --out-dir")
    args.out = [*args.out, *map(str, args.npy)]
    out = output_folder(args)
    VAE(args.model, variant=args.variant, backend=args.backend, threads=1)
    with ray_session(args) as resources:
        pool = pool_from_args(args, resources)
        images = generate_dataset(
            args.n,
            args.seed,
            start=args.start,
            model=args.model,
            variant=args.variant,
            backend=args.backend,
            dtype=args.dtype,
            pool=pool,
        )
        started = time.perf_counter()
        wrote = _unwrapped(lambda: write_folder(images, out))
        seconds = time.perf_counter() - started
    facts = {"seed": args.seed, "first_index": args.start, "last_index": args.start + args.n - 1}
    return _report(args, "generate", out, wrote, seconds, resources, pool, **facts)


def _report(
    args: argparse.Namespace,
    command: str,
    out: Path,
    wrote: dict[str, int],
    seconds: float,
    resources: dict[str, float],
    pool: ActorPool,
    **facts: Any,
) -> int:
    rate = wrote["rows"] / seconds if seconds > 0 else 0.0
    summary = {
        "command": command,
        **facts,
        "ray": {
            "address": args.ray,
            "nodes": int(resources["nodes"]),
            "cpus": resources.get("CPU", 0),
            "actors": pool.actors,
            "threads_per_actor": pool.threads,
            "bring_up_seconds": round(resources["bring_up_seconds"], 3),
        },
        "outputs": [{"path": str(out), "rows": wrote["rows"], "files": wrote["files"]}],
        "seconds": round(seconds, 3),
        "images_per_second": round(rate, 1),
    }
    if command == "embed":
        head = f"embedded {facts['embedded']} of {facts['rows']} images"
    else:
        head = f"generated {wrote['rows']} images (seed {facts['seed']})"
    where = f"{int(resources['nodes'])} node(s), {pool.actors} actors x {pool.threads} threads"
    lines = [
        f"{head} on Ray ({where}) in {seconds:.1f} s ({rate:.0f} images/s; "
        f"Ray up in {resources['bring_up_seconds']:.1f} s)",
        f"wrote {display_name(out)}: {wrote['rows']} rows in {wrote['files']} Parquet files",
    ]
    report(args, summary, lines)
    return 0
