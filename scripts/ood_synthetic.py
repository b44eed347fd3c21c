"""Share of synthetic and transformed inputs that ``is_ood`` flags (docs/ood.md).

    python scripts/ood_synthetic.py --data-dir ../shared/datasets [--n 500] [--fpr 0.05]

For each shipped model, ``n`` inputs of each kind, given to ``VAE.is_ood`` as float arrays
in [0, 1] with ``invert=False``: the model sees them as they are. ``--invert auto`` (the
runtime's default) turns a light-background input back before the model sees it. "own" = the
model's own test images, "other" = the other dataset's (MNIST <-> Fashion-MNIST), the same
``n`` random test images for every model of a dataset (seed 0). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vae_runtime import VAE
from vae_runtime.evaluate import load_split

REPO = Path(__file__).resolve().parents[1]
MODELS = ("fashion-mnist-conv-z20", "mnist-conv-z20", "mnist-conv-z2", "mnist-mlp-z20")
OTHER = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}


def kinds(
    n: int, rng: np.random.Generator
) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """name -> f(own, other) giving (n, 28, 28) float32 in [0, 1]."""
    shape = (n, 28, 28)

    def shifted(own: np.ndarray) -> np.ndarray:  # 8 px to the right, black comes in
        out = np.zeros_like(own)
        out[:, :, 8:] = own[:, :, :-8]
        return out

    return {
        "black": lambda own, other: np.zeros(shape, np.float32),
        "white": lambda own, other: np.ones(shape, np.float32),
        "grey 0.5": lambda own, other: np.full(shape, 0.5, np.float32),
        "constant levels 0..1": lambda own, other: np.broadcast_to(
            np.linspace(0, 1, n, dtype=np.float32)[:, None, None], shape
        ).copy(),
        "uniform noise": lambda own, other: rng.random(shape, dtype=np.float32),
        "binary noise p=0.5": lambda own, other: (rng.random(shape) < 0.5).astype(np.float32),
        "binary noise p=0.1": lambda own, other: (rng.random(shape) < 0.1).astype(np.float32),
        "own, inverted": lambda own, other: 1 - own,
        "other, inverted": lambda own, other: 1 - other,
        "own + N(0, 0.2) noise": lambda own, other: np.clip(
            own + rng.normal(0, 0.2, shape).astype(np.float32), 0, 1
        ),
        "own, binarized at 0.5": lambda own, other: (own > 0.5).astype(np.float32),
        "own, shifted 8 px": lambda own, other: shifted(own),
        "own, dimmed x0.5": lambda own, other: own * np.float32(0.5),
    }


def test_images(data_dir: Path, dataset: str, n: int) -> np.ndarray:
    images, _ = load_split(data_dir, dataset, "test")
    pick = np.random.default_rng(0).choice(len(images), n, replace=False)
    return images[pick].astype(np.float32) / 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--fpr", type=float, default=0.05)
    ap.add_argument("--invert", choices=("false", "auto"), default="false")
    args = ap.parse_args()
    names = list(kinds(1, np.random.default_rng()))
    invert = "auto" if args.invert == "auto" else False
    print("| model | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for name in MODELS:
        vae = VAE(REPO / "artifacts" / name)
        dataset = vae.info["dataset"]["name"]
        own = test_images(args.data_dir, dataset, args.n)
        other = test_images(args.data_dir, OTHER[dataset], args.n)
        rng = np.random.default_rng(1)  # the same noise for every model
        shares = [
            vae.is_ood(make(own, other), fpr=args.fpr, invert=invert).mean()
            for make in kinds(args.n, rng).values()
        ]
        print(f"| `{name}` | " + " | ".join(f"{s:.2f}" for s in shares) + " |")


if __name__ == "__main__":
    main()
