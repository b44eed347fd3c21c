"""Embedding and generation on Ray Data (the ``ray`` extra): the single-machine results,
spread over a pool of actors on one machine or a cluster.

Each actor builds its :class:`~vae_runtime.VAE` once and then turns batches of rows into
rows, with the same functions ``vae-run`` uses on one machine (:mod:`vae_runtime.tables`
decodes image columns and builds result tables; :mod:`vae_runtime.generation` is the
shard-stable prior), so the embeddings and images are those of one process, bit for bit:

    ds = read_image_parquet(["shards/"])                 # source, index, image columns
    embeddings = embed_dataset(ds, pool=ActorPool(actors=8))
    embeddings.write_parquet("embeddings/")
    images = generate_dataset(1_000_000, seed=0, pool=ActorPool(actors=8))

Pitfalls this module handles (docs/scale-out.md has the story):
- Actors that hold every CPU slot starve the read and write tasks and the job hangs
  silently (ray#44687): actors ask for a fraction of a CPU, and :func:`check_pool` refuses
  a pool that leaves no slot for the tasks.
- ONNX Runtime sizes its thread pool to the host and ignores ``OMP_NUM_THREADS``: each
  actor gets ``threads`` explicitly, and ``actors x threads`` may not exceed the cluster's
  CPUs.
- Ray Data merges small inputs into few blocks, leaving one actor working: the reader
  makes one block per Parquet row group (``override_num_blocks``) and cuts large ones.
- A GPU request without an explicit ``batch_size`` fails (ray#45201): every
  ``map_batches`` here passes an integer batch size.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .arguments import checked_int
from .errors import InputError, VAEError
from .generation import BLOCK, spans
from .jobs import GENERATED_KEYS, image_schema
from .names import data_name, display_name
from .reading import Invert, Reading
from .records import SOURCE_KEYS, Column, ResultBatch, Schema
from .tables import decode_images, image_kind, pick_image_column, require_pyarrow, result_table

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from .vae import VAE

EXTRA_HINT = "pip install 'vae-onnx[ray]'"
IO_CPUS = 0.25  # what a read or write task asks for: they wait on files, not on cores
ROWS_PER_BLOCK = 8192
F32 = np.dtype(np.float32)


def require_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise InputError(f"--ray needs Ray Data, which is not installed: {EXTRA_HINT}") from None
    return ray


@dataclass(frozen=True)
class ActorPool:
    """How the work is spread: ``actors`` each running the graphs with ``threads`` ONNX
    Runtime threads on ``batch_size`` rows at a time. ``cpus_per_actor`` is what Ray
    reserves (default ``0.5 * threads``: a fraction, so the read and write tasks always
    find a slot); with ``device="cuda"`` each actor also reserves ``gpus_per_actor``
    (default 0.5: two actors share a GPU)."""

    actors: int = 2
    threads: int = 1
    batch_size: int = 1024
    cpus_per_actor: float | None = None
    device: str = "cpu"
    gpus_per_actor: float | None = None

    @property
    def cpus(self) -> float:
        return 0.5 * self.threads if self.cpus_per_actor is None else self.cpus_per_actor

    @property
    def gpus(self) -> float:
        if self.device != "cuda":
            return 0.0
        return 0.5 if self.gpus_per_actor is None else self.gpus_per_actor

    def check(self) -> None:
        for name in ("actors", "threads", "batch_size"):
            checked_int(getattr(self, name), name)
        if self.device not in ("cpu", "cuda"):
            raise InputError(f"device must be cpu or cuda, got {self.device!r}")
        if not (0 < self.cpus <= self.threads and math.isfinite(self.cpus)):
            raise InputError(
                f"cpus_per_actor must lie in (0, threads={self.threads}], got {self.cpus}"
            )
        if self.device == "cuda" and not 0 < self.gpus <= 1:
            raise InputError(f"gpus_per_actor must lie in (0, 1], got {self.gpus}")

    def map_args(self) -> dict[str, Any]:
        """The ``map_batches`` arguments of an actor pool of these settings."""
        import ray.data

        args: dict[str, Any] = {
            "compute": ray.data.ActorPoolStrategy(size=self.actors),
            "batch_size": self.batch_size,  # always an int: GPU pools need one (ray#45201)
            "num_cpus": self.cpus,
            "batch_format": "pyarrow",
        }
        if self.gpus:
            args["num_gpus"] = self.gpus
        return args


def check_pool(pool: ActorPool, resources: dict[str, float]) -> None:
    """Refuse a pool the cluster cannot run well: more ONNX Runtime threads than CPUs,
    actors that would leave no CPU slot for the read and write tasks (the job would hang
    without a word), or more GPU than there is. ``resources`` is
    ``ray.cluster_resources()``."""
    pool.check()
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    threads = pool.actors * pool.threads
    if threads > cpus:
        raise InputError(
            f"{pool.actors} actors x {pool.threads} threads = {threads} threads, more than the "
            f"cluster's {cpus:g} CPUs; lower --actors or --threads"
        )
    if pool.actors * pool.cpus + 2 * IO_CPUS > cpus:
        raise InputError(
            f"{pool.actors} actors x {pool.cpus:g} CPUs leave no slot of the cluster's {cpus:g} "
            f"CPUs for the read and write tasks ({2 * IO_CPUS:g} CPU), and the job would hang; "
            "lower --actors or --cpus-per-actor"
        )
    if pool.gpus and pool.actors * pool.gpus > gpus:
        raise InputError(
            f"{pool.actors} actors x {pool.gpus:g} GPUs need more than the cluster's {gpus:g} "
            "GPUs; lower --actors or --gpus-per-actor"
        )


def default_pool_size(resources: dict[str, float], threads: int = 1) -> int:
    """As many actors as the cluster has CPUs for their threads (at least one)."""
    return max(1, int(float(resources.get("CPU", 1)) // threads))


def _providers(device: str) -> str | None:
    return "cuda" if device == "cuda" else None


# ---- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ParquetPart:
    """A slice of one Parquet file's row group: what one read task reads."""

    path: str  # absolute, as every node reads it
    source: str  # the name the rows record, as the user gave it
    row_group: int
    first: int  # index of the row group's first row in the file


def parquet_files(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Files, and the ``*.parquet`` files of folders (sorted), in the order given."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix == ".parquet" and f.is_file())
            if not found:
                raise InputError(f"{display_name(p)}: holds no .parquet files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"{display_name(p)}: no such file or directory")
    return files


def plan_parquet(
    paths: Sequence[str | os.PathLike[str]], column: str | None, id_column: str | None
) -> tuple[list[ParquetPart], str, int]:
    """The row groups of every file, with the image column (checked in every file's
    schema) and the total row count. Only the files' footers are read."""
    require_pyarrow()
    import pyarrow.parquet as pq

    parts: list[ParquetPart] = []
    rows, chosen = 0, column
    first_of: dict[str, tuple[str, str]] = {}  # what -> (type, file) of the first file
    for path in parquet_files(paths):
        where = display_name(path)
        try:
            meta = pq.ParquetFile(path).metadata
            schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise InputError(f"{where}: not a readable Parquet file ({exc})") from None
        name = pick_image_column(schema, chosen, where)
        chosen = chosen or name
        if id_column is not None and id_column not in schema.names:
            raise InputError(f"{where}: no id column {id_column!r} (columns: {schema.names})")
        if id_column == name:
            raise InputError(f"{where}: the id column cannot be the image column {name!r}")
        _same_across_files(first_of, "images", _storage(schema.field(name).type), where)
        if id_column is not None:
            _same_across_files(first_of, "ids", str(schema.field(id_column).type), where)
        first = 0
        for group in range(meta.num_row_groups):
            parts.append(ParquetPart(str(path.resolve()), data_name(path), group, first))
            first += meta.row_group(group).num_rows
        rows += first
    if chosen is None:  # no files: parquet_files refuses that
        raise InputError("no Parquet input")
    return parts, chosen, rows


def _storage(type_: pa.DataType) -> str:
    """How a column stores images, up to what the read tasks make uniform."""
    return "pixel lists" if image_kind(type_) == "pixels" else "encoded images"


def _same_across_files(
    first_of: dict[str, tuple[str, str]], what: str, kind: str, where: str
) -> None:
    """Ray Data batches rows of several files together, so their columns must agree."""
    seen = first_of.setdefault(what, (kind, where))
    if seen[0] != kind:
        raise InputError(
            f"{where}: its {what} are {kind}, but {seen[1]}'s are {seen[0]}; a Ray job "
            "needs one kind across its files"
        )


def uniform_images(array: pa.ChunkedArray | pa.Array) -> pa.Array:
    """An image column as binary (encoded images; a struct's ``bytes`` field) or as
    list<uint8> (pixels), so that blocks of different files concatenate."""
    pa = require_pyarrow()
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    kind = image_kind(array.type)
    if kind == "pixels":
        return array.cast(pa.list_(pa.uint8()))
    if kind == "struct":
        array = pc.if_else(array.is_valid(), array.field("bytes"), None)
    return array.cast(pa.binary())


def _read_part(
    batch: dict[str, np.ndarray], column: str, id_column: str | None, rows: int
) -> Iterator[pa.Table]:
    """A read task: the image column (and id, or source and index) of one row group, in
    tables of at most ``rows`` rows."""
    pa = require_pyarrow()
    import pyarrow.parquet as pq

    for path, source, group, first in zip(
        batch["path"], batch["source"], batch["row_group"], batch["first"], strict=True
    ):
        wanted = [column] + ([id_column] if id_column else [])
        file = pq.ParquetFile(str(path))
        start = int(first)
        for chunk in file.iter_batches(batch_size=rows, row_groups=[int(group)], columns=wanted):
            n = chunk.num_rows
            images = uniform_images(chunk.column(column))
            if id_column:
                yield pa.table({id_column: chunk.column(id_column), column: images})
            else:
                index = pa.array(np.arange(start, start + n, dtype=np.int64))
                sources = pa.array([str(source)] * n, pa.string())
                yield pa.table({"source": sources, "index": index, column: images})
            start += n


def read_image_parquet(
    paths: Sequence[str | os.PathLike[str]],
    column: str | None = None,
    id_column: str | None = None,
    *,
    rows_per_block: int = ROWS_PER_BLOCK,
) -> tuple[ray.data.Dataset, str, int]:
    """Parquet files (or folders of them) as a Ray Dataset of the image column and its
    keys: ``id_column`` when given, else ``source`` (the file name as given) and ``index``
    (the row in that file), as ``vae-run embed`` records them. One read task per row group,
    blocks of at most ``rows_per_block`` rows, so every actor gets work even when the
    input is a few small files. Returns the dataset, the image column and the row count."""
    ray = require_ray()
    rows_per_block = checked_int(rows_per_block, "rows_per_block")
    parts, column, rows = plan_parquet(paths, column, id_column)
    items = [vars(p) for p in parts]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    ds = ds.map_batches(
        _read_part,
        fn_kwargs={"column": column, "id_column": id_column, "rows": rows_per_block},
        batch_size=1,
        batch_format="numpy",
        num_cpus=IO_CPUS,
    )
    return ds, column, rows


# ---- embedding -------------------------------------------------------------------------------

_PLACE = "\x00row"  # stands for a row's name in decode errors until the row is known


def _actor_vae(model: str | None, variant: str | None, backend: str, pool: ActorPool) -> VAE:
    """The VAE an actor builds once, sized by the pool (threads, device, batch size)."""
    from .vae import VAE

    return VAE(
        model,
        variant=variant,
        backend=backend,
        threads=pool.threads,
        providers=_providers(pool.device),
        batch_size=pool.batch_size,
    )


class _Embedder:
    """An actor of the pool: one VAE, built once, embedding batch after batch."""

    def __init__(
        self,
        model: str | None,
        variant: str | None,
        backend: str,
        pool: ActorPool,
        column: str,
        keys: tuple[str, ...],
        invert: Invert,
        preprocess: str,
        skip_bad: bool,
        logvar: bool,
    ) -> None:
        self.vae = _actor_vae(model, variant, backend, pool)
        self.column, self.keys = column, keys
        self.invert, self.skip_bad, self.logvar = invert, skip_bad, logvar
        self.schema = embed_schema(keys, self.vae.latent_dim, logvar)
        self.spec = None if preprocess == "none" else self.vae.preprocess

    def __call__(self, batch: pa.Table) -> pa.Table:
        for name in (self.column, *self.keys):
            if name not in batch.column_names:
                raise InputError(f"the dataset has no column {name!r} ({batch.column_names})")
        reading = Reading(self.spec, self.invert)
        images, errors = decode_images(batch.column(self.column), _PLACE, 0, reading=reading)
        errors = [None if e is None else self._named(e, batch, i) for i, e in enumerate(errors)]
        bad = next((e for e in errors if e is not None), None)
        if bad is not None and not self.skip_bad:
            raise InputError(f"{bad} (skip such rows with --skip-bad)")
        if len(images):
            mu, logvar = self.vae.encode(images, preprocess="none")
        else:
            mu = logvar = np.zeros((0, self.vae.latent_dim), np.float32)
        values = {"embedding": mu, **({"logvar": logvar} if self.logvar else {})}
        keys = {k: batch.column(k) for k in self.keys}
        result = ResultBatch(keys, values, None if bad is None else errors)
        return result_table(result, self.schema)

    def _named(self, error: str, batch: pa.Table, i: int) -> str:
        """A decode error with the row's own name: file and row, or its id."""
        if self.keys == SOURCE_KEYS:
            name = f"{batch.column('source')[i].as_py()}: row {batch.column('index')[i].as_py()}"
        else:
            name = f"{self.keys[0]} {batch.column(self.keys[0])[i].as_py()!r}"
        return error.replace(f"{_PLACE}: row {i}", name, 1)


def embed_schema(keys: tuple[str, ...], latent_dim: int, logvar: bool = False) -> Schema:
    """The rows :func:`embed_dataset` makes, as ``vae-run embed`` writes them."""
    values = [Column("embedding", (latent_dim,), F32)]
    if logvar:
        values.append(Column("logvar", (latent_dim,), F32))
    return Schema(keys, tuple(values))


def model_argument(model: str | os.PathLike[str] | None) -> str | None:
    """``model`` as every node can name it: an absolute path for a directory here, or the
    name of a shipped model (None: the default model of each node's install)."""
    if model is None:
        return None
    path = Path(model)
    return str(path.resolve()) if path.exists() else os.fspath(model)


def embed_dataset(
    ds: ray.data.Dataset,
    *,
    model: str | os.PathLike[str] | None = None,
    column: str = "image",
    id_column: str | None = None,
    variant: str | None = None,
    backend: str = "onnxruntime",
    pool: ActorPool | None = None,
    invert: Invert = "auto",
    preprocess: str = "declared",
    skip_bad: bool = False,
    logvar: bool = False,
) -> ray.data.Dataset:
    """The embeddings of an image column, as a Ray Dataset of the key columns (``id_column``,
    else ``source`` and ``index``), ``status``, ``error`` and ``embedding`` (float32 x L;
    ``logvar`` on request), the rows ``vae-run embed --out x.parquet`` writes.

    ``column`` holds encoded image bytes, ``{bytes, path}`` structs or 784 uint8 values
    per row. Every actor of ``pool`` loads ``model`` (which every node must be able to read
    at the same path, or a shipped model's name) once. A row that is not a readable image
    fails the job, or with ``skip_bad`` becomes a ``skipped`` row with its error.
    ``invert`` / ``preprocess`` ("declared" or "none"): as in :meth:`VAE.encode`."""
    require_ray()
    pool = pool or ActorPool()
    pool.check()
    keys = (id_column,) if id_column else SOURCE_KEYS
    args = (model_argument(model), variant, backend, pool, column, keys, invert, preprocess)
    args += (skip_bad, logvar)
    return ds.map_batches(_Embedder, fn_constructor_args=args, **pool.map_args())


# ---- generation ------------------------------------------------------------------------------


class _Generator:
    """An actor of the pool: one VAE, decoding index ranges of a seed's prior draws."""

    def __init__(
        self,
        model: str | None,
        variant: str | None,
        backend: str,
        pool: ActorPool,
        seed: int,
        dtype: str,
    ) -> None:
        self.vae = _actor_vae(model, variant, backend, pool)
        self.seed = seed
        self.schema = image_schema(GENERATED_KEYS, dtype, status=False)

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[pa.Table]:
        for lo, hi in zip(batch["start"], batch["stop"], strict=True):
            n, lo = int(hi - lo), int(lo)
            for first, images in self.vae.generate_iter(n, seed=self.seed, start=lo):
                index = np.arange(first, first + len(images), dtype=np.int64)
                keys = {"seed": np.full(len(images), self.seed, np.int64), "index": index}
                yield result_table(ResultBatch(keys, {"image": images}), self.schema)


def generate_dataset(
    n: int,
    seed: int,
    *,
    start: int = 0,
    model: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    backend: str = "onnxruntime",
    dtype: str = "float32",
    pool: ActorPool | None = None,
    rows_per_task: int | None = None,
) -> ray.data.Dataset:
    """Images ``start .. start + n - 1`` of ``seed`` as a Ray Dataset of ``seed``, ``index``
    and ``image`` (784 values, float32 in [0, 1] or uint8), the rows ``vae-run generate
    --out x.parquet`` writes. The range is cut into tasks of ``rows_per_task`` images at
    the generation rule's block boundaries; by the rule, the images are those of one
    process whatever the cut and however many actors decode them. By default a task is
    about a quarter of each actor's share (1 to 8 blocks of the rule), so the actors stay
    busy to the end."""
    ray = require_ray()
    n = checked_int(n, "n")
    seed = checked_int(seed, "seed", minimum=0)
    start = checked_int(start, "start", minimum=0)
    pool = pool or ActorPool()
    pool.check()
    if rows_per_task is None:
        rows_per_task = min(8 * BLOCK, -(-n // (4 * pool.actors)))
    rows_per_task = checked_int(rows_per_task, "rows_per_task")
    if dtype not in ("float32", "uint8"):
        raise InputError(f"dtype must be float32 or uint8, got {dtype!r}")
    size = -(-rows_per_task // BLOCK) * BLOCK  # whole blocks of the rule
    items = [{"start": lo, "stop": hi} for lo, hi in spans(start, start + n, size)]
    ds = ray.data.from_items(items, override_num_blocks=len(items))
    args = (model_argument(model), variant, backend, pool, seed, dtype)
    map_args = {**pool.map_args(), "batch_size": 1, "batch_format": "numpy"}
    return ds.map_batches(_Generator, fn_constructor_args=args, **map_args)


# ---- errors ----------------------------------------------------------------------------------


# How a refusal raised on an actor reads in the traceback text Ray sends back: Ray Data
# wraps it (UserCodeException) and the original exception object does not survive.
_REMOTE_ERROR = re.compile(r"^vae_(?:runtime|format)\.errors\.(\w+): (.+)$", re.MULTILINE)


def vae_error(exc: BaseException) -> VAEError | None:
    """The runtime's own refusal behind an exception that Ray raised on the driver for a
    task or actor: the exception itself when it survived, else rebuilt from the remote
    traceback's last line of one of the runtime's error types."""
    from . import errors

    chain: list[BaseException] = []
    todo: list[object] = [exc]
    while todo:
        e = todo.pop()
        if isinstance(e, BaseException) and all(e is not c for c in chain):
            chain.append(e)
            todo += [getattr(e, "cause", None), e.__cause__, e.__context__]
    for e in chain:
        if isinstance(e, VAEError) and not hasattr(e, "cause"):
            return e
    for e in chain:
        found = _REMOTE_ERROR.findall(str(e))
        kind = getattr(errors, found[-1][0], None) if found else None
        if isinstance(kind, type) and issubclass(kind, VAEError):
            return kind(found[-1][1])
    return None
