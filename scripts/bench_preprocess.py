"""Accuracy of preprocessing on synthetic scans, and its speed (docs/preprocessing.md).

    python scripts/bench_preprocess.py --data-dir ../shared/datasets --n 1000
    python scripts/bench_preprocess.py --data-dir ../shared/datasets --speed 10000

Accuracy: 5-NN label accuracy of the embeddings (mnist-conv-z20, mu) of scans of MNIST test
digits against the MNIST training embeddings, per scan kind, for: the original 28x28 digits,
today's behaviour (whole image resized, preprocess "none") without and with invert, and the
MNIST spec with invert="auto" (all through VAE.prepare on the encoded files). Speed: files
per second reading a folder of PNGs with open_images, without and with the spec,
alternated, median of repeats.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scans import KINDS, scans  # noqa: E402

from vae_format.preprocess_spec import builtin  # noqa: E402
from vae_runtime import VAE, open_images  # noqa: E402
from vae_runtime.evaluate import knn_accuracy, load_split  # noqa: E402
from vae_runtime.reading import Reading  # noqa: E402


def prepared(vae: VAE, files: list[bytes], spec: dict) -> tuple[np.ndarray, int]:
    """The API's reading of encoded files (bytes) with the spec, invert="auto"."""
    x, infos = vae.prepare(files, preprocess=spec)
    return x, sum(i["inverted"] for i in infos)


def today(vae: VAE, files: list[bytes], invert: bool) -> np.ndarray:
    return vae.prepare(files, preprocess="none", invert=invert)[0]


def accuracy_table(args: argparse.Namespace) -> None:
    vae = VAE(REPO / "artifacts" / args.model, threads=args.threads)
    train_x, train_y = load_split(args.data_dir, args.dataset, "train")
    test_x, test_y = load_split(args.data_dir, args.dataset, "test")
    index = vae.embed(train_x)
    pick = np.random.default_rng(0).permutation(len(test_x))[: args.n]
    digits, labels = test_x[pick], test_y[pick]
    spec = builtin(args.dataset)

    def acc(images: np.ndarray) -> float:
        z = vae.embed(images, preprocess="none")  # model inputs already
        return 100.0 * knn_accuracy(index, train_y, z, labels, k=5)

    print(
        f"5-NN accuracy (%), {args.n} test digits, {args.model}, index = {len(train_x)} "
        "train embeddings"
    )
    print("| scans | original 28x28 | none | none + invert | default (auto) | auto inverted |")
    print("|---|---|---|---|---|---|")
    base = acc(digits)
    for kind in KINDS:
        files = scans(digits, kind, seed=args.seed)
        x, inverted = prepared(vae, files, spec)
        row = [base, acc(today(vae, files, False)), acc(today(vae, files, True)), acc(x)]
        cells = " | ".join(f"{v:.1f}" for v in row)
        print(f"| {kind.name} | {cells} | {inverted}/{len(files)} |", flush=True)


def read_today(folder: Path) -> np.ndarray:
    return open_images(folder).read()  # no spec: the whole image fitted into 28x28


def read_prepared(folder: Path, spec: dict) -> np.ndarray:
    return open_images(folder, reading=Reading(spec, "auto")).read()


def speed(args: argparse.Namespace) -> None:
    test_x, _ = load_split(args.data_dir, "mnist", "test")
    spec = builtin("mnist")
    pick = np.random.default_rng(1).integers(0, len(test_x), args.speed)
    with tempfile.TemporaryDirectory() as tmp:
        digits, scan_dir = Path(tmp) / "digits", Path(tmp) / "scans"
        digits.mkdir()
        scan_dir.mkdir()
        for i, x in enumerate(test_x[: args.speed]):
            Image.fromarray(x).save(digits / f"{i:05d}.png")
        png_kinds = [k for k in KINDS if k.fmt == "PNG"]
        for j, kind in enumerate(png_kinds):
            chosen = test_x[pick[j :: len(png_kinds)]]
            for i, data in enumerate(scans(chosen, kind, seed=args.seed)):
                (scan_dir / f"{i:05d}-{j}.png").write_bytes(data)
        print(f"files/s (median of {args.repeats}, alternated; CPU ms/file), {args.speed} files")
        print("| folder | today (preprocess none) | MNIST spec | CPU ms/file today | spec |")
        print("|---|---|---|---|---|")
        for name, folder in (("MNIST test digits, 28x28 PNG", digits),
                             ("scans (4 PNG kinds, mean ~280x280)", scan_dir)):  # fmt: skip
            runs: dict[str, list[tuple[float, float]]] = {"today": [], "spec": []}
            for _ in range(args.repeats):
                for label, read in (("today", lambda f=folder: read_today(f)),
                                    ("spec", lambda f=folder: read_prepared(f, spec))):  # fmt: skip
                    wall, cpu = time.perf_counter(), time.process_time()
                    n = len(read())
                    runs[label].append((n / (time.perf_counter() - wall),
                                        1e3 * (time.process_time() - cpu) / n))  # fmt: skip
            rate = {k: statistics.median(r for r, _ in v) for k, v in runs.items()}
            cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
            print(f"| {name} | {rate['today']:.0f} | {rate['spec']:.0f} | "
                  f"{cpu['today']:.3f} | {cpu['spec']:.3f} |", flush=True)  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--model", default="mnist-conv-z20")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed", type=int, default=0, help="time folders of this many files")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    if args.speed:
        speed(args)
    else:
        accuracy_table(args)


if __name__ == "__main__":
    main()
