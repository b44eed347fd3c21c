"""``vae-export figures``: the README's pictures, made from the shipped model directories.

Everything is drawn from what a model directory holds (graphs through vae_runtime, the
training history in training/metrics.jsonl) plus the MNIST test set, so the pictures can
be regenerated from artifacts/ alone.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from statistics import NormalDist

import numpy as np
from PIL import Image

from vae_format import atomic
from vae_format.datasets import read_split
from vae_format.grid import make_grid
from vae_runtime import VAE

SCALE = 3  # 28-pixel digits are too small to see in a README


def _save(image: Image.Image, path: Path, scale: int = SCALE) -> Path:
    if scale != 1:
        image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    atomic.write_bytes(path, buf.getvalue())
    return path


def _grid(images: np.ndarray, nrow: int) -> Image.Image:
    return Image.fromarray(make_grid(images, nrow=nrow))


def _save_plot(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return path


def samples(vae: VAE, out: Path) -> Path:
    return _save(_grid(vae.generate(64, seed=0), 8), out)


def reconstructions(vae: VAE, test: np.ndarray, out: Path) -> Path:
    x = test[:8]
    return _save(_grid(np.concatenate([x / 255.0, vae.reconstruct(x)[:, 0]]), 8), out)


def interpolation(vae: VAE, test: np.ndarray, labels: np.ndarray, out: Path) -> Path:
    a, b = test[np.flatnonzero(labels == 2)[0]], test[np.flatnonzero(labels == 7)[0]]
    return _save(_grid(vae.interpolate(a, b, steps=10), 10), out)


def manifold(vae2: VAE, out: Path, n: int = 20) -> Path:
    """Decoded grid over the 2-D latent space, at Gaussian quantiles 2.5%..97.5%."""
    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.025, 0.975, n)], np.float32)
    zy, zx = np.meshgrid(q[::-1], q, indexing="ij")
    z = np.stack([zx.ravel(), zy.ravel()], 1)
    return _save(_grid(vae2.decode(z), n), out, scale=2)


def latent_scatter(vae2: VAE, test: np.ndarray, labels: np.ndarray, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mu = vae2.embed(test)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    points = ax.scatter(mu[:, 0], mu[:, 1], c=labels, cmap="tab10", s=2, alpha=0.7)
    fig.colorbar(points, ax=ax, ticks=range(10), label="digit")
    ax.set_xlabel("$\\mu_1$")
    ax.set_ylabel("$\\mu_2$")
    ax.set_title(f"{vae2.info['name']}: test-set means, coloured by digit")
    return _save_plot(fig, out)


def loss_curves(model_dirs: list[Path], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dirs = [d for d in model_dirs if (d / "training" / "metrics.jsonl").is_file()]
    fig, axes = plt.subplots(1, len(dirs), figsize=(4.2 * len(dirs), 3.4), squeeze=False)
    for ax, d in zip(axes[0], dirs, strict=True):
        rows = [
            json.loads(line)
            for line in (d / "training/metrics.jsonl").read_text().splitlines()
            if line
        ]
        epochs = [r["epoch"] for r in rows]
        for split in ("train", "val", "test"):
            if f"{split}_loss" in rows[0]:
                ax.plot(epochs, [r[f"{split}_loss"] for r in rows], label=split)
        best = min(r["test_loss"] for r in rows)
        ax.set_ylim(best - 3, best + 25)
        ax.set_title(d.name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("negative ELBO (nats / image)")
    axes[0][0].legend()
    fig.tight_layout()
    return _save_plot(fig, out)


def _dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def model_table(artifacts: Path) -> str:
    """The README's model table, in markdown, from the manifests of ``artifacts``."""
    lines = [
        "| model | arch | latent | parameters (enc + dec) | size | test neg. ELBO | "
        "IW bound (k=100) | 5-NN | OOD AUROC: likelihood | OOD AUROC: OOD score | "
        "int8: ELBO change, size |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    dirs = sorted(p.parent for p in artifacts.glob("*/manifest.json"))
    for d in dirs:
        m = json.loads((d / "manifest.json").read_text())
        q = m.get("quality", {})
        params = m["training"].get("parameters", {})
        int8 = m.get("variants", {}).get("int8")
        cells = [
            f"`{m['name']}` ({m['dataset']['name']})",
            m["arch"],
            str(m["latent_dim"]),
            f"{params.get('encoder', 0):,} + {params.get('decoder', 0):,}",
            f"{_dir_bytes(d) / 2**20:.1f} MB",
            f"{q['test_nelbo']:.2f}" if "test_nelbo" in q else "-",
            f"{q['test_iw_bound']:.2f}" if "test_iw_bound" in q else "-",
            f"{100 * q['knn_accuracy']:.2f}%" if "knn_accuracy" in q else "-",
            f"{q['ood_auroc']:.4f}" if "ood_auroc" in q else "-",
            f"{q['ood_score_auroc']:.4f}" if "ood_score_auroc" in q else "-",
            f"{int8['quality']['change']:+.2f} nats, {min(int8['size_ratio'].values()):.1f}x "
            "smaller"
            if int8
            else "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(_dir_bytes(d) for d in dirs)
    lines.append(f"\nAll of artifacts/: {total / 2**20:.1f} MB.")
    return "\n".join(lines)


def make_all(artifacts: Path, out: Path, data_dir: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    split = read_split("mnist", "test", data_dir)
    test, labels = split.images, split.labels
    vae = VAE(artifacts / "mnist-conv-z20")
    vae2 = VAE(artifacts / "mnist-conv-z2")
    written = [
        samples(vae, out / "samples.png"),
        reconstructions(vae, test, out / "reconstructions.png"),
        interpolation(vae, test, labels, out / "interpolation.png"),
        manifold(vae2, out / "manifold.png"),
        latent_scatter(vae2, test, labels, out / "latent_scatter.png"),
        loss_curves(
            sorted(p.parent for p in artifacts.glob("*/manifest.json")), out / "loss_curves.png"
        ),
    ]
    return written
