"""Parity vectors for another implementation of docs/preprocessing.md (e.g. web/).

    python scripts/preprocess_vectors.py --data-dir ../shared/datasets --out /tmp/vectors

Writes, for a few scans of each kind (tests/scans.py) and both built-in specs: the input
file (PNG or JPEG) and NAME.json holding the spec name, the decisions (Prepared.info) and the
28x28 result as 8-bit levels (round(255 v)). Another runtime decodes the file, applies the
spec and compares within one grey level. Nothing here is committed; regenerate as needed.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from scans import KINDS, scans  # noqa: E402

from vae_format.preprocess_spec import builtin  # noqa: E402
from vae_runtime.evaluate import load_split  # noqa: E402
from vae_runtime.preprocess import decode, prepare  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "datasets")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--per-kind", type=int, default=3)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for dataset in ("mnist", "fashion-mnist"):
        spec = builtin(dataset)
        images, _ = load_split(args.data_dir, dataset, "test")
        for k, kind in enumerate(KINDS):
            for i, data in enumerate(scans(images[: args.per_kind], kind, seed=3)):
                name = f"{dataset}-{k}-{i}"
                suffix = ".jpg" if kind.fmt == "JPEG" else ".png"
                (args.out / f"{name}{suffix}").write_bytes(data)
                with Image.open(io.BytesIO(data)) as image:
                    result = prepare(*decode(image), spec)
                levels = np.floor(result.image * 255.0 + 0.5).astype(int)
                record = {"spec": dataset, "kind": kind.name, "info": result.info,
                          "levels": levels.tolist()}  # fmt: skip
                (args.out / f"{name}.json").write_text(json.dumps(record))
    print(f"wrote {len(list(args.out.glob('*.json')))} vectors to {args.out}")


if __name__ == "__main__":
    main()
