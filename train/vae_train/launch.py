"""The ``vae-train`` command: checks that the ``train`` extra is installed, in one line if
not (a runtime-only install has the command but not torch), then runs :mod:`vae_train.cli`."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from vae_format.extras import missing_train_extra


def main(argv: Sequence[str] | None = None) -> int:
    problem = missing_train_extra("vae-train")
    if problem:
        print(f"vae-train: error: {problem}", file=sys.stderr)
        return 2
    from vae_train.cli import main as train_main

    return train_main(None if argv is None else list(argv))


if __name__ == "__main__":
    sys.exit(main())
