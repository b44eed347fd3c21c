"""Fetch the published IDX ``.gz`` files of a dataset with pooch, checking their md5.

Files go to ``<data_dir>/<dataset>/<file>.gz``. A file already present (anywhere
:mod:`vae_train.datasets` looks) whose md5 matches is not fetched again. Mirrors are tried
in order; a network failure moves on to the next mirror, a checksum mismatch is refused at
once. pooch streams each download into a temporary file next to the target and moves it
into place only after its hash matched, deleting it otherwise, so no partial or corrupt
file is left in ``data_dir``.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pooch
import requests

from vae_train.datasets import DatasetError, find_file, get_spec

TIMEOUT_S = 60


def file_md5(path: str | Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _RecordingDownloader:
    """pooch's HTTP downloader, remembering the md5 of what it fetched (for error messages)."""

    def __init__(self, progress: bool) -> None:
        self._http = pooch.HTTPDownloader(progressbar=progress, timeout=TIMEOUT_S)
        self.md5: str | None = None

    def __call__(self, url: str, output_file: str, pooch_obj: object) -> None:
        self.md5 = None
        self._http(url, output_file, pooch_obj)
        self.md5 = file_md5(output_file)


def _url(mirror: str, fname: str) -> str:
    return mirror if mirror.endswith(f"/{fname}") else f"{mirror.rstrip('/')}/{fname}"


def download_dataset(
    name: str,
    data_dir: str | Path,
    mirrors: list[str] | tuple[str, ...] | None = None,
    progress: bool | None = None,
) -> dict[str, Path]:
    """Make sure every file of dataset ``name`` is present and valid; return key -> path.

    ``mirrors`` (base URLs) replaces the dataset's published mirrors; ``progress`` shows a
    tqdm bar per file (default: when stderr is a terminal).
    """
    spec = get_spec(name)
    data_dir = Path(data_dir)
    target_dir = data_dir / spec.name
    mirrors = tuple(spec.mirrors if mirrors is None else mirrors)
    if not mirrors:
        raise DatasetError(f"{spec.name}: no download mirrors given")
    if progress is None:
        progress = sys.stderr.isatty()
    created_dir = not target_dir.exists()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create {target_dir}: {exc}") from None
    out: dict[str, Path] = {}
    try:
        for key, fspec in spec.files.items():
            existing = find_file(spec, key, data_dir)
            if existing is not None:
                want = fspec.md5_gz if existing.suffix == ".gz" else fspec.md5_raw
                if file_md5(existing) == want:
                    out[key] = existing
                    continue
            out[key] = _fetch(f"{fspec.name}.gz", fspec.md5_gz, target_dir, mirrors, progress)
    finally:
        if created_dir and target_dir.is_dir() and not any(target_dir.iterdir()):
            target_dir.rmdir()
    return out


def _fetch(
    fname: str, md5: str, target_dir: Path, mirrors: tuple[str, ...], progress: bool
) -> Path:
    failures: list[str] = []
    for mirror in mirrors:
        url = _url(mirror, fname)
        downloader = _RecordingDownloader(progress)
        try:
            path = pooch.retrieve(
                url, known_hash=f"md5:{md5}", fname=fname, path=target_dir, downloader=downloader
            )
        except ValueError as exc:  # pooch: the hash of the download does not match
            if downloader.md5 is None:  # not a checksum failure (e.g. a malformed URL)
                failures.append(f"{url} ({exc})")
                continue
            raise DatasetError(
                f"{fname} downloaded from {url} has md5 {downloader.md5}, but the published "
                f"md5 is {md5}; refused (nothing was saved)"
            ) from None
        except (requests.exceptions.RequestException, OSError) as exc:
            failures.append(f"{url} ({type(exc).__name__}: {exc})")
            continue
        return Path(path)
    raise DatasetError(f"could not download {fname} from any mirror; tried: " + "; ".join(failures))
