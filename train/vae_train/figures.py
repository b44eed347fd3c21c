"""The loss curves of a run (matplotlib); its image grids are vae_format.grid's."""

from __future__ import annotations

import io
import json
from pathlib import Path

from vae_format import atomic


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
