"""The README's preprocessing picture: real-world-like inputs, what the model sees after its
declared preprocessing, and the reconstruction; and, for contrast, today's whole-image
reading (preprocess="none") and its reconstruction.

    python scripts/preprocess_figure.py --data-dir ../shared/datasets

Inputs: scans of MNIST test digits (tests/scans.py: each kind of scan, on uneven paper, PNG
and JPEG, RGB and transparent RGBA) and a digit drawn with a thick pen on a 640x480 page.
Writes docs/figures/preprocessing.png (deterministic for a given model).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scans import KINDS, scans  # noqa: E402

from vae_runtime import VAE  # noqa: E402
from vae_runtime.evaluate import load_split  # noqa: E402

CELL = 112  # pixels per picture in the figure
LABEL = 150  # width of the row labels
ROWS = (
    "input (as a user has it)",
    "model input (declared)",
    "reconstruction",
    "today: whole image",
    "today: reconstruction",
)


def drawn_page() -> bytes:
    """A 3 drawn with a marker on a 640x480 off-white page, as a phone photo would be."""
    image = Image.new("RGB", (640, 480), (236, 232, 220))
    draw = ImageDraw.Draw(image)
    draw.arc((250, 90, 390, 230), 200, 90, fill=(25, 30, 60), width=14)
    draw.arc((250, 200, 390, 360), 270, 160, fill=(25, 30, 60), width=14)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def thumbnail(data: bytes) -> Image.Image:
    """The raw input fitted into a CELL square; transparency shown on a checkerboard."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGBA")
        image.thumbnail((CELL, CELL), Image.Resampling.LANCZOS)
        board = Image.new("RGBA", image.size, (255, 255, 255, 255))
        squares = ImageDraw.Draw(board)
        for y in range(0, image.height, 8):
            for x in range((y // 8) % 2 * 8, image.width, 16):
                squares.rectangle((x, y, x + 7, y + 7), fill=(205, 205, 205, 255))
        board.alpha_composite(image)
    cell = Image.new("RGB", (CELL, CELL), (255, 255, 255))
    cell.paste(board.convert("RGB"), ((CELL - image.width) // 2, (CELL - image.height) // 2))
    return cell


def enlarged(x: np.ndarray) -> Image.Image:
    pixels = np.round(np.clip(x.reshape(28, 28), 0, 1) * 255).astype(np.uint8)
    return Image.fromarray(pixels).resize((CELL, CELL), Image.Resampling.NEAREST).convert("RGB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--model", default=str(REPO / "artifacts" / "mnist-conv-z20"))
    p.add_argument("--out", type=Path, default=REPO / "docs" / "figures" / "preprocessing.png")
    args = p.parse_args()
    vae = VAE(args.model, threads=2)
    if vae.preprocess is None:
        sys.exit(f"{args.model} declares no preprocessing; re-export it (format version 2)")
    test_x, _ = load_split(args.data_dir, "mnist", "test")
    picks = [0, 1, 2, 4, 7, 8]  # a 7, 2, 1, 4, 9, 5
    kinds = zip(picks, KINDS, strict=True)
    files = [scans(test_x[i : i + 1], kind, seed=3)[0] for i, kind in kinds]
    files.append(drawn_page())
    x, _ = vae.prepare(files)
    recon = vae.reconstruct(x, preprocess="none")
    old = vae.prepare(files, preprocess="none")[0]
    old_recon = vae.reconstruct(old, preprocess="none")
    columns = [
        [thumbnail(f), enlarged(a), enlarged(b), enlarged(c), enlarged(d)]
        for f, a, b, c, d in zip(files, x, recon, old, old_recon, strict=True)
    ]
    gap = 6
    figure = Image.new(
        "RGB",
        (LABEL + len(columns) * (CELL + gap), len(ROWS) * (CELL + gap)),
        (255, 255, 255),
    )
    draw = ImageDraw.Draw(figure)
    for r, label in enumerate(ROWS):
        draw.text((6, r * (CELL + gap) + CELL // 2 - 6), label, fill=(0, 0, 0))
        for c, column in enumerate(columns):
            figure.paste(column[r], (LABEL + c * (CELL + gap), r * (CELL + gap)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(args.out, optimize=True)
    print(f"wrote {args.out} ({figure.width}x{figure.height})")


if __name__ == "__main__":
    main()
