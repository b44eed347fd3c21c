"""Benchmark for issue 18: embedding a Parquet dataset in one process, on a local Ray and on
a two-node loopback Ray cluster, alternating, with images/s, peak memory and bring-up.

    .venv/bin/python scripts/bench_scale_out.py make-data /tmp/mnist700k --copies 10 --files 20
    .venv/bin/python scripts/bench_scale_out.py run /tmp/mnist700k --rounds 2

``make-data`` writes the 70,000 MNIST images ``--copies`` times as 784-long uint8 lists in
``--files`` Parquet files (outside the project). ``run`` runs each contender once per round
(so a change of machine load hits them alike) and prints, per contender, the median of:
the job's images/s (Ray's bring-up excluded), images per CPU-second of the whole process
tree (bring-up included; far steadier than wall time on a loaded machine), the command's
wall time, Ray's bring-up, and the peak resident memory of the process tree (driver,
local Ray, or both nodes), summed over processes, so shared pages count more than once. Ray binds
every interface: run it inside ``unshare --net`` (as the tests do) on a shared machine.

Contenders: ``single`` (vae-run embed without Ray, ``--threads 2``), ``local-2x1`` (a
local Ray of 2 CPUs, 2 actors x 1 thread), ``local-1x2`` (1 actor x 2 threads),
``nodes-2x1`` (tests/ray_loopback.py: two nodes of 1 CPU, 2 actors x 1 thread).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from ray_loopback import Sampler  # noqa: E402  (the process-tree sampler of the test cluster)

VAE_RUN = str(Path(sys.executable).with_name("vae-run"))


def make_data(out: Path, copies: int, files: int, data_dir: Path) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from vae_format.idx import read_idx

    mnist = data_dir / "mnist"
    images = np.concatenate(
        [
            read_idx(mnist / "train-images-idx3-ubyte.gz", "images"),
            read_idx(mnist / "t10k-images-idx3-ubyte.gz", "images"),
        ]
    )
    images = np.tile(images.reshape(len(images), -1), (copies, 1))
    out.mkdir(parents=True, exist_ok=True)
    for k, part in enumerate(np.array_split(images, files)):
        column = pa.FixedSizeListArray.from_arrays(pa.array(part.reshape(-1)), 784)
        pq.write_table(pa.table({"image": column}), out / f"part-{k:03d}.parquet")
    print(f"wrote {len(images)} images in {files} files to {out}")


def contender(name: str, data: Path, out: Path, stats: Path) -> list[str]:
    embed = [VAE_RUN, "embed", str(data), "--json", "--no-progress", "--batch-size", "1024"]
    if name == "single":
        files = sorted(str(p) for p in data.glob("*.parquet"))
        single = [VAE_RUN, "embed", *files, "--json", "--threads", "2", "--batch-size", "1024"]
        return [*single, "--out", f"{out}.parquet"]
    if name == "local-2x1":
        return [
            *embed,
            "--out",
            str(out),
            "--ray",
            "--cpus",
            "2",
            "--actors",
            "2",
            "--threads",
            "1",
        ]
    if name == "local-1x2":
        return [
            *embed,
            "--out",
            str(out),
            "--ray",
            "--cpus",
            "2",
            "--actors",
            "1",
            "--threads",
            "2",
        ]
    if name == "nodes-2x1":
        job = [*embed, "--out", str(out), "--ray", "{address}", "--actors", "2", "--threads", "1"]
        return [
            sys.executable,
            str(REPO / "tests" / "ray_loopback.py"),
            "--stats",
            str(stats),
            "--",
            *job,
        ]
    raise SystemExit(f"unknown contender {name}")


def run_once(name: str, data: Path, work: Path, env: dict[str, str]) -> dict[str, float]:
    out, stats = work / name, work / f"{name}.stats.json"
    shutil.rmtree(out, ignore_errors=True)
    Path(f"{out}.parquet").unlink(missing_ok=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        contender(name, data, out, stats), env=env, stdout=subprocess.PIPE, text=True
    )
    sampler = Sampler({"tree": proc.pid})
    sampler.start()
    stdout, _ = proc.communicate()
    sampler.done.set()
    sampler.join()
    wall = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"{name} failed ({proc.returncode})")
    summary = json.loads(stdout[stdout.index("{") :])
    rows = summary.get("rows") or summary["outputs"][0]["rows"]
    job = summary["seconds"]
    bring_up = summary.get("ray", {}).get("bring_up_seconds", 0.0)
    if stats.exists():
        bring_up += json.loads(stats.read_text())["bring_up_seconds"]  # the nodes, then join
    return {
        "images_per_s": rows / job,
        "images_per_cpu_s": rows / sampler.cpu_seconds,
        "wall_s": wall,
        "bring_up_s": bring_up,
        "peak_rss_gb": sampler.peak_rss / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    make = sub.add_parser("make-data")
    make.add_argument("out", type=Path)
    make.add_argument("--copies", type=int, default=10)
    make.add_argument("--files", type=int, default=20)
    make.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    run = sub.add_parser("run")
    run.add_argument("data", type=Path)
    run.add_argument("--rounds", type=int, default=2)
    run.add_argument(
        "--contenders", nargs="+", default=["single", "local-2x1", "local-1x2", "nodes-2x1"]
    )
    args = parser.parse_args()
    if args.cmd == "make-data":
        make_data(args.out, args.copies, args.files, args.data_dir)
        return
    work = Path(tempfile.mkdtemp(prefix="vb", dir="/tmp"))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
           "RAY_USAGE_STATS_ENABLED": "0", "TMPDIR": str(work)}  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {name: [] for name in args.contenders}
    try:
        for r in range(args.rounds):
            for name in args.contenders:
                results[name].append(run_once(name, args.data, work, env))
                print(f"round {r + 1} {name}: {results[name][-1]}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians over {args.rounds} rounds (loaded machine; wall times vary)")
    head = f"{'contender':12} {'images/s':>9} {'img/CPU-s':>9} {'wall s':>7} {'bring-up s':>10}"
    print(f"{head} {'peak RSS GB':>11}")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        rates = f"{med['images_per_s']:9.0f} {med['images_per_cpu_s']:9.0f}"
        times = f"{med['wall_s']:7.1f} {med['bring_up_s']:10.1f}"
        print(f"{name:12} {rates} {times} {med['peak_rss_gb']:11.2f}")


if __name__ == "__main__":
    main()
