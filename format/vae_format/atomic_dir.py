"""Crash-safe replacement of a whole directory (a model directory): it is built in a
staging folder beside the target and swapped into place when complete.

A swap over an existing target takes two renames: the target is set aside as
``.<name>.<pid>.<token>.old``, then ``.<name>.<pid>.<token>.stage`` becomes the target.
The ``.old`` folder exists only between a completed build and the end of its swap, so a
crash in between is recognised and :func:`recover` finishes it (the staged folder is
complete) or, if the staged folder is gone, puts the old one back. The next export into
the folder, and the next load of the target, call it. Stale staging folders of killed
writers are swept as stale temporary files are (:mod:`vae_format.temp_names`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from . import temp_names
from .atomic import current_umask

RECOVERY_WAIT_S = 2.0  # how long a reader waits for a swap under way in a live process


@contextlib.contextmanager
def staged_dir(target: Path, copy: bool = False) -> Iterator[Path]:
    """A folder beside ``target`` (empty, or a copy of it), swapped into place when the
    block ends, removed if it raises. Interrupted swaps of ``target`` are recovered and
    stale staging folders in its parent swept first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    temp_names.sweep(target.parent, kinds=("stage",))
    fd, stage = temp_names.make_dir(target)
    try:
        if copy:
            _copy_into(target, stage)
        else:
            stage.chmod(0o777 & ~current_umask())  # mkdtemp makes 0700; a model dir is shared
        yield stage
        swap_into_place(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def _copy_into(source: Path, stage: Path) -> None:
    """The files of ``source`` copied into the (empty) ``stage``, which takes its mode."""
    shutil.copytree(source, stage, dirs_exist_ok=True)
    shutil.copymode(source, stage)


def swap_into_place(stage: Path, target: Path) -> None:
    """Move the completed ``stage`` to ``target``, setting an existing target aside first
    and removing it after."""
    if not target.exists():
        os.rename(stage, target)
        return
    parsed = temp_names.parse(stage.name)
    if parsed is None:
        raise ValueError(f"{stage} is not a staging folder of ours")
    backup = stage.with_name(parsed.sibling("old"))
    os.rename(target, backup)
    try:
        os.rename(stage, target)  # a crash before this line is what recover() repairs
    except OSError:
        os.rename(backup, target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def recover(target: Path) -> bool:
    """Finish or undo a swap into ``target`` that a dead process left halfway; remove the
    backups of swaps that finished. True if ``target`` was restored. A swap under way in a
    live process is waited for (briefly)."""
    deadline = time.monotonic() + RECOVERY_WAIT_S
    while True:
        pending = _backups(target)
        live = [b for b in pending if not temp_names.is_stale(target.parent, b.sibling("old"))]
        if not live or target.exists() or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # its second rename follows within microseconds
    restored = False
    for backup in pending:
        if backup in live:
            continue
        old, stage = (target.parent / backup.sibling(kind) for kind in ("old", "stage"))
        with contextlib.suppress(OSError):
            if not target.exists():
                os.rename(stage if stage.is_dir() else old, target)
                restored = True
            if old.exists():
                shutil.rmtree(old)
    return restored


def _backups(target: Path) -> list[temp_names.TempName]:
    """The ``.old`` folders set aside by swaps into ``target``."""
    try:
        names = [e.name for e in os.scandir(target.parent)]
    except OSError:
        return []
    name = target.name[: temp_names.MAX_NAME]
    parsed = (temp_names.parse(n) for n in names)
    return [p for p in parsed if p is not None and p.kind == "old" and p.name == name]
