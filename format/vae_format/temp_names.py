"""The names of our temporary files and folders, and the sweep of stale ones.

Every temporary thing a vae-onnx writer puts beside its target is named
``.<target name>.<writer PID>.<8 random chars>.<kind>``: ``tmp`` (a file being written),
``stage`` (a model directory being built) or ``old`` (the directory a swap set aside).
The writer holds an advisory lock (flock) on it while it works. A writer killed by
SIGKILL, or a crash, leaves it behind; the next writer into the same folder removes
those of this pattern, and only those, whose lock is free and whose writer is gone (no
such PID here) or which are older than a day (the PID may have been reused).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import fcntl
except ImportError:  # not on Windows: no locks, the PID and age decide alone
    fcntl = None  # type: ignore[assignment]

KINDS = ("tmp", "stage", "old")
PATTERN = re.compile(
    r"^\.(?P<name>.+)\.(?P<pid>[0-9]{1,10})\.(?P<token>[a-z0-9_]{8})\.(?P<kind>tmp|stage|old)$"
)
STALE_AFTER_S = 24 * 3600
MAX_NAME = 200  # of the target's name inside ours, so ours stays under NAME_MAX (255)
_swept: set[tuple[str, str]] = set()  # (folder, kind) swept by this process


@dataclass(frozen=True)
class TempName:
    """A parsed name of ours: the target's name, the writer's PID, the random token, kind."""

    name: str
    pid: int
    token: str
    kind: str

    def sibling(self, kind: str) -> str:
        return f".{self.name}.{self.pid}.{self.token}.{kind}"


def parse(entry: str) -> TempName | None:
    match = PATTERN.match(entry)
    if match is None:
        return None
    return TempName(match["name"], int(match["pid"]), match["token"], match["kind"])


def prefix(target: Path) -> str:
    """What mkstemp/mkdtemp get as ``prefix`` for a temporary beside ``target``."""
    return f".{target.name[:MAX_NAME]}.{os.getpid()}."


def make_file(target: Path, folder: Path | None = None) -> tuple[int, Path]:
    """(open descriptor, path) of a new ``.tmp`` file for ``target`` in ``folder`` (default:
    beside it), created 0600 and locked by this process."""
    fd, name = tempfile.mkstemp(prefix=prefix(target), suffix=".tmp", dir=folder or target.parent)
    lock(fd)
    return fd, Path(name)


def make_dir(target: Path) -> tuple[int, Path]:
    """(open descriptor holding its lock, path) of a new ``.stage`` folder beside ``target``."""
    path = Path(tempfile.mkdtemp(prefix=prefix(target), suffix=".stage", dir=target.parent))
    fd = os.open(path, os.O_RDONLY)
    lock(fd)
    return fd, path


def lock(fd: int) -> None:
    if fcntl is not None:
        with contextlib.suppress(OSError):  # a filesystem without locks: PID and age decide
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process (or an absurd PID)
        return pid < 1 << 22
    return True


def _lock_free(path: Path, directory: bool) -> bool:
    """Whether no live process holds the lock of ``path`` (taken and released here)."""
    if fcntl is None:
        return True
    flags = os.O_RDONLY | os.O_NOFOLLOW | (os.O_DIRECTORY if directory else os.O_NONBLOCK)
    try:
        fd = os.open(path, flags)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def is_stale(folder: Path, entry: str, now: float | None = None) -> bool:
    """Whether ``folder/entry`` is a temporary of ours whose writer is gone."""
    parsed = parse(entry)
    if parsed is None:
        return False
    path = folder / entry
    try:
        st = os.lstat(path)
    except OSError:
        return False
    directory = parsed.kind != "tmp"
    if (stat.S_ISDIR if directory else stat.S_ISREG)(st.st_mode) is False:
        return False  # a name of our pattern on something we never make: not ours
    old = (now or time.time()) - st.st_mtime > STALE_AFTER_S
    return (old or not writer_alive(parsed.pid)) and _lock_free(path, directory)


def stale_entries(folder: Path, kinds: tuple[str, ...] = KINDS) -> Iterator[TempName]:
    try:
        entries = [e.name for e in os.scandir(folder)]
    except OSError:
        return
    now = time.time()
    for entry in entries:
        parsed = parse(entry)
        if parsed is not None and parsed.kind in kinds and is_stale(folder, entry, now):
            yield parsed


def sweep(folder: Path, kinds: tuple[str, ...] = ("tmp",)) -> list[str]:
    """Remove the stale temporaries of ``kinds`` in ``folder`` (once per folder and process;
    best effort). Returns the names removed. ``old`` folders are left to swap recovery."""
    key = (str(folder.resolve() if folder.exists() else folder), ",".join(kinds))
    if key in _swept:
        return []
    _swept.add(key)
    removed = []
    for parsed in stale_entries(folder, kinds):
        entry = parsed.sibling(parsed.kind)
        if parsed.kind == "stage" and (folder / parsed.sibling("old")).exists():
            continue  # a swap that crashed halfway: vae_format.atomic_dir.recover's business
        try:
            if parsed.kind == "tmp":
                os.unlink(folder / entry)
            else:
                shutil.rmtree(folder / entry)
        except OSError:
            continue
        removed.append(entry)
    return removed
