"""Many raw images through the Python preprocessing, for web/bench/preprocess-sweep.js.

    python scripts/web_preprocess_sweep.py --per-kind 100 --out /tmp/sweep.json
    node web/bench/preprocess-sweep.js /tmp/sweep.json

The committed parity vectors (web/test/golden/preprocess/) are few, to stay small; this
writes as many as asked: the scans of tests/scans.py (every kind, PNG and JPEG, decoded by
Pillow) of MNIST and Fashion-MNIST test images under their specs, and random pad drawings,
each with Python's model input, decisions and CPU time. Nothing here is committed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scans import KINDS, scans  # noqa: E402

from vae_export.web_preprocess import _drawing  # noqa: E402
from vae_format.datasets import read_split  # noqa: E402
from vae_format.preprocess_spec import builtin  # noqa: E402
from vae_runtime.preprocess import grey_alpha, prepare  # noqa: E402


def _case(name: str, spec: str, pixels: np.ndarray, specs: dict) -> dict:
    start = time.process_time()
    result = prepare(*grey_alpha(pixels), specs[spec])
    cpu = time.process_time() - start
    h, w = pixels.shape[:2]
    return {"name": name, "spec": spec, "height": h, "width": w,
            "channels": 1 if pixels.ndim == 2 else pixels.shape[2],
            "pixels": base64.b64encode(zlib.compress(pixels.tobytes())).decode(),
            "info": result.info, "cpu_s": cpu,
            "output": base64.b64encode(result.image.astype("<f4").tobytes()).decode()}  # fmt: skip


def _drawings(count: int, rng: np.random.Generator):
    for _ in range(count):
        strokes = [
            [tuple(rng.uniform(20, 260, 2)) for _ in range(int(rng.integers(2, 6)))]
            for _ in range(int(rng.integers(1, 3)))
        ]
        dark = bool(rng.integers(0, 2))
        yield _drawing(strokes, 0 if dark else 255, 255 if dark else 0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--per-kind", type=int, default=100)
    p.add_argument("--drawings", type=int, default=60)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    specs = {name: builtin(name) for name in ("mnist", "fashion-mnist")}
    cases = []
    for dataset in specs:
        images = read_split(dataset, "test", args.data_dir).images[100 : 100 + args.per_kind]
        for kind in KINDS:
            for i, data in enumerate(scans(images, kind, seed=5)):
                with Image.open(io.BytesIO(data)) as image:
                    pixels = np.asarray(image)
                cases.append(_case(f"{dataset} {kind.name} {i}", dataset, pixels, specs))
    for i, pixels in enumerate(_drawings(args.drawings, np.random.default_rng(1))):
        cases.append(_case(f"drawing {i}", "mnist", pixels, specs))
    args.out.write_text(json.dumps({"specs": specs, "cases": cases}))
    cpu = sum(c["cpu_s"] for c in cases) / len(cases)
    print(f"wrote {len(cases)} cases to {args.out}; Python {1000 * cpu:.1f} ms CPU per image")


if __name__ == "__main__":
    main()
