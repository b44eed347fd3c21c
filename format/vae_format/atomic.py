"""Crash-safe output files: data goes to a temporary file beside the target, is flushed to
disk, then renamed over the target, so a reader (or a crash) sees the old file or the new
one, never half of one.

The file behaves like any other file the user writes: a new one gets the mode the umask
gives, a replaced one keeps its mode; a symlink is followed (the file it names is
replaced, the link stays); an existing device node or FIFO (``/dev/null``, a pipe) is
written through, never replaced; a directory, block device or socket is refused. Every
error names the user's path, never the temporary file's. :func:`check_output` makes the
same checks before any work, so a bad ``--out`` fails in a second, not after an hour.
Temporary files are named by :mod:`vae_format.temp_names` (with the writer's PID) and a
stale one of a killed writer is swept by the next write into the same folder.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import temp_names
from .regular_file import file_kind

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class OutputTarget:
    """Where a write to the user's ``path`` lands: ``real`` (symlinks resolved) is replaced
    by a file of ``mode``; or, ``through``, an existing device or FIFO is written into."""

    path: Path
    real: Path
    through: bool
    mode: int


def output_target(path: PathLike) -> OutputTarget:
    """What writing to ``path`` means (see the module's docstring); refusals are OSErrors
    naming ``path``."""
    path = Path(path)
    try:
        st = os.stat(path)  # follows symlinks: the file a link names is what is written
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise _named(exc, path) from None
    if st is None:  # a new file (or a dangling symlink: its target is created)
        return OutputTarget(path, Path(os.path.realpath(path)), False, 0o666 & ~current_umask())
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name", str(path))
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return OutputTarget(path, path, True, 0)
    if not stat.S_ISREG(st.st_mode):
        kind = file_kind(st.st_mode)
        raise OSError(errno.EINVAL, f"is {kind}, not a file; refusing to write to it", str(path))
    return OutputTarget(path, Path(os.path.realpath(path)), False, stat.S_IMODE(st.st_mode) & 0o777)


def check_output(path: PathLike) -> OutputTarget:
    """Check, before any work, that ``path`` can be written: not a directory or other
    non-file, in a folder (or under an existing ancestor) this process may create files
    in. A small file of ours is created and removed there to be sure (read-only mounts,
    quotas, permissions as root). Raises an OSError naming ``path``."""
    target = output_target(path)
    if not target.through:  # opening a FIFO now would wait for its reader
        _check_can_create(target.real, target.path)
    return target


def check_output_folder(path: PathLike, *, staged: bool = False) -> Path:
    """Check, before any work, that files can be created in the folder ``path`` (which
    may not exist yet: then that it can be made); ``staged``: that it can be built beside
    itself and swapped in (vae_format.atomic_dir). Raises an OSError naming ``path``."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, "exists and is not a folder", str(path))
    _check_can_create(path / "probe" if path.is_dir() and not staged else path, path)
    return path


def _check_can_create(entry: Path, named: Path) -> None:
    """That ``entry`` could be created: its folder exists and a file of ours can be made
    there (and is removed), or the missing folders may be made. Errors name ``named``."""
    folder = entry.parent
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a directory", str(named))
    if existing != folder:  # the writer creates the missing folders; may it?
        if not os.access(existing, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, f"cannot create folders in {existing}", str(named))
        return
    with _named_errors(named):
        fd, probe = temp_names.make_file(entry)
        os.close(fd)
        probe.unlink()


@contextlib.contextmanager
def atomic_path(path: PathLike, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it becomes ``path`` (see the module's
    docstring). On an exception the temporary file is removed and ``path`` is left
    untouched. OSErrors raised in the block or here name ``path``.

    ``durable=False`` skips the fsync before the rename (about 7 ms a file here): the file
    still appears whole or not at all to every reader, but a power cut may lose it; for
    many small files whose writer syncs once at the end.
    """
    target = output_target(path)
    with _named_errors(target.path):
        if target.through:  # the data is copied in at the end, from a file in the temp dir
            spool = Path(tempfile.gettempdir())
            temp_names.sweep(spool)
            fd, tmp = temp_names.make_file(target.real, spool)
        else:
            target.real.parent.mkdir(parents=True, exist_ok=True)
            temp_names.sweep(target.real.parent)
            fd, tmp = temp_names.make_file(target.real)
    try:
        with _named_errors(target.path, tmp):
            yield tmp
            if target.through:
                _copy_into(tmp, target.path)
            else:
                os.chmod(tmp, target.mode)  # mkstemp makes 0600
                if durable:
                    fsync_file(tmp)
                os.replace(tmp, target.real)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        os.close(fd)


def _copy_into(tmp: Path, device: Path) -> None:
    """Write the finished temporary file into an existing device node or FIFO."""
    with open(tmp, "rb") as src, open(device, "wb", buffering=0) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


# Errors of a write that names no file (e.g. from an open file object): they are the
# output's, while an unnamed error of another kind may come from reading the inputs.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


@contextlib.contextmanager
def _named_errors(path: Path, tmp: Path | None = None) -> Iterator[None]:
    """OSErrors re-raised naming the user's ``path``: all of them (``tmp`` None: the
    writer's own steps), or those about ``tmp`` or of a write naming no file."""
    try:
        yield
    except OSError as exc:
        unnamed_write = exc.filename is None and exc.errno in WRITE_ERRNOS
        ours = tmp is None or exc.filename in (str(tmp), tmp) or unnamed_write
        if exc.errno is None or not ours:
            raise
        raise _named(exc, path) from None


def _named(exc: OSError, path: Path) -> OSError:
    return type(exc)(exc.errno, exc.strerror, str(path))


def current_umask() -> int:
    """The process umask, read without changing it where Linux allows (thread-safe)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o22)  # elsewhere the only way to read it is to set it and put it back
    os.umask(mask)
    return mask


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: PathLike, obj: Any, *, sort_keys: bool = True) -> Path:
    """Write ``obj`` as indented JSON (and a final newline) atomically."""
    text = json.dumps(obj, indent=2, sort_keys=sort_keys) + "\n"
    return write_bytes(path, text.encode("utf-8"))


def save_npy(path: PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as a .npy file atomically (no pickles)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)
    return Path(path)


def fsync_file(path: PathLike) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def fsync_dir(path: PathLike) -> None:
    """Make a rename inside the folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
