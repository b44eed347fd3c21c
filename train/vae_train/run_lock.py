"""One run directory, one trainer: an exclusive ``flock`` on the run directory itself.

The lock is taken on the directory's own file descriptor, so no lock file is created (and
none is left behind); the kernel drops it when the process ends, however it ends. Under
torchrun only rank 0 takes it: the other ranks write nothing into the run directory.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class RunLockError(RuntimeError):
    """The run directory cannot be created or is in use by another trainer."""


@contextmanager
def locked_run_dir(run_dir: Path, *, create: bool) -> Iterator[None]:
    """Hold an exclusive lock on ``run_dir`` (created first when ``create``) for the block."""
    if create:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunLockError(f"cannot create the run directory {run_dir}: {exc}") from None
    try:
        fd = os.open(run_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise RunLockError(f"cannot resume: {run_dir} does not exist") from None
    except OSError as exc:
        raise RunLockError(f"cannot open the run directory {run_dir}: {exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunLockError(
                f"{run_dir} is in use by another vae-train; wait for it to end or choose "
                "another --out"
            ) from None
        yield
    finally:
        os.close(fd)
