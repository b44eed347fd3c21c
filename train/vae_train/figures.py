"""Training-time pictures: image grids (Pillow) and the loss curves (matplotlib)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from vae_train import atomic


def image_grid(images: np.ndarray, nrow: int = 8, pad: int = 2) -> Image.Image:
    """Tile (N, 1, 28, 28) or (N, 28, 28) images in [0, 1] into one grayscale picture."""
    imgs = np.asarray(images, dtype=np.float32).reshape(len(images), 28, 28)
    n = len(imgs)
    ncol = max(1, min(nrow, n))
    nrows = max(1, -(-n // ncol))
    h = nrows * (28 + pad) + pad
    w = ncol * (28 + pad) + pad
    canvas = np.zeros((h, w), dtype=np.uint8)
    pixels = np.clip(np.rint(imgs * 255.0), 0, 255).astype(np.uint8)
    for i, img in enumerate(pixels):
        r, c = divmod(i, ncol)
        y, x = pad + r * (28 + pad), pad + c * (28 + pad)
        canvas[y : y + 28, x : x + 28] = img
    return Image.fromarray(canvas, mode="L")


def save_png(image: Image.Image, path: Path) -> None:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic.write_bytes(path, buf.getvalue())


def save_loss_curve(metrics_path: Path, out: Path) -> None:
    """Plot train/test negative ELBO and their parts per epoch from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    if not rows:
        return
    epochs = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, part, title in zip(
        axes, ("loss", "recon", "kl"), ("negative ELBO", "reconstruction", "KL"), strict=True
    ):
        for split in ("train", "val", "test"):
            key = f"{split}_{part}"
            if key in rows[0]:
                ax.plot(epochs, [r[key] for r in rows], label=split)
        ax.set_title(f"{title} (nats / image)")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic.write_bytes(out, buf.getvalue())
