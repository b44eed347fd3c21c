"""The :class:`VAE`: a checked model directory, its two graphs loaded by an engine, and
numpy around them.

A VAE holds no mutable state after ``__init__`` (randomness comes from the caller's seed or
Generator), and the engines' ``run`` is thread-safe, so one instance can serve any number
of threads.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from vae_format.contract import GRAPH_ROLES, contract
from vae_format.manifest import Manifest

from . import likelihood as lik
from . import ood
from .arguments import check_fits, checked_int
from .arrays import as_latents, check_latents
from .engines import DEFAULT_ENGINE, Engine, GraphRunner, create_engine, load_graph
from .errors import InputError
from .generation import prior_latents, spans
from .model_dir import check_graph, resolve_model_dir
from .outputs import save_grid
from .reading import Invert, Preprocess, Reading, resolve_spec
from .records import ImageSource
from .sampling import check_eps, clamp_logvar, eps_array, make_rng, reparameterize
from .similarity import Neighbours, similar
from .sources import Images, Paths, as_images, is_paths, open_images

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from .auto import AutoEngine
    from .engines.ort import Providers

DEFAULT_BATCH_SIZE = 256
AUTO = "auto"  # backend="auto": chosen per graph by a measured probe (auto.py)
IMAGE_BYTES = 4 * 28 * 28  # one float32 image
ENCODER_OUTPUTS = ["mu", "logvar"]
DECODER_OUTPUTS = ["x_hat"]
# Keywords of VAE() that are options of the onnxruntime engine, with their defaults.
ORT_KEYWORDS = {"providers": None, "fallback": False, "optimization": None, "spinning": False}


class FileEmbedding(NamedTuple):
    """One image of :meth:`VAE.embed_files`: its file, its index within the file (0 for
    an image file; the image's position in an IDX, .npy or Parquet file), its embedding
    (float32 (L,)), or None and the reason when the file was skipped."""

    source: str
    index: int
    embedding: np.ndarray | None
    error: str | None = None


def _joined(parts: list[list[np.ndarray]], outputs: int, width: int) -> Any:
    """Per-batch outputs joined into one array per output."""
    if not parts:
        return tuple(np.zeros((0, width), np.float32) for _ in range(outputs))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(outputs))


class VAE:
    """A variational autoencoder served by an engine (ONNX Runtime unless told otherwise).

    ``path``: a model directory (docs/model-format.md); None: $VAE_ONNX_MODEL, else the
    shipped default model. ``variant``: a name under the manifest's ``variants`` (e.g.
    "int8"). ``backend``: the engine that runs the graphs (``vae_runtime.engines.ENGINES``),
    or "auto": the fastest engine, graphs and precision per graph on this machine within the
    model's quality budget, from a short probe at load (see :mod:`vae_runtime.auto`; what it
    picked is in ``info["auto"]``; ``engine_options``: max_nelbo_change, probe_seconds).
    ``threads``: the engine's intra-op threads (None: its default). ``batch_size``: largest
    batch handed to the engine at once; bigger inputs run in chunks.

    Options of the onnxruntime backend: ``providers``: "cpu" (default), "cuda", ORT
    provider names or (name, options) pairs; one this onnxruntime lacks raises
    ProviderError unless ``fallback=True``. ``optimization``: ORT graph optimization level,
    "disable", "basic", "extended" or "all" (None: the variant's manifest ``session`` level,
    else "all"; a level below the variant's minimum is refused). ``spinning=True`` lets idle
    ORT threads busy-wait after each call (off by default: on a loaded machine spinning made
    2-thread runs 1.2-1.5x slower; see docs/performance.md).
    ``engine_options``: further options, by name, for the chosen backend.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        variant: str | None = None,
        backend: str = DEFAULT_ENGINE,
        threads: int | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        providers: Providers = None,
        fallback: bool = False,
        optimization: str | None = None,
        spinning: bool = False,
        engine_options: Mapping[str, Any] | None = None,
    ) -> None:
        if variant is not None and not isinstance(variant, str):
            raise InputError(f"variant must be a name (str) or None, got {variant!r}")
        directory = resolve_model_dir(path)
        self._manifest = Manifest.load(directory)
        self._variant = variant
        self._batch_size = checked_int(batch_size, "batch_size")
        files = self._manifest.graph_files(variant)
        ort_keywords = {
            "providers": providers,
            "fallback": fallback,
            "optimization": optimization,
            "spinning": spinning,
        }
        # Only what was set is passed on, so another backend refuses just what it lacks.
        options = {k: v for k, v in ort_keywords.items() if v != ORT_KEYWORDS[k]}
        if threads is not None:
            options["threads"] = threads
        if engine_options is not None and not isinstance(engine_options, Mapping):
            raise InputError(f"engine_options must be a mapping, got {engine_options!r}")
        if backend == AUTO:  # a probe picks engines, graphs and precision per graph
            from .auto import AutoEngine, plan

            chosen = plan(self._manifest, variant, threads, self._batch_size, options,
                          dict(engine_options or {}), self._load)  # fmt: skip
            self._engine: Engine | AutoEngine = AutoEngine(chosen.facts)
            runners = chosen.runners
            picked = chosen.files
        else:
            options.update(engine_options or {})
            self._engine = create_engine(backend, options, self._manifest.session(variant))
            runners = {role: self._load(self._engine, role, variant) for role in GRAPH_ROLES}
            picked = {role: [rel] for role, rel in files.items()}
        self._encoder: GraphRunner = runners["encoder"]
        self._decoder: GraphRunner = runners["decoder"]
        self._files = {role: [directory / rel for rel in rels] for role, rels in picked.items()}
        self._row_shapes = {  # output name -> shape of one row, for chunked results
            t.name: t.shape[1:]
            for role in GRAPH_ROLES
            for t in contract(role, self.latent_dim).outputs
        }

    def _load(self, engine: Engine, role: str, variant: str | None) -> GraphRunner:
        """``variant``'s graph of ``role`` loaded by ``engine`` through load_graph (verified
        bytes held to the format's graph policy), then checked against the contract."""
        runner = load_graph(engine, self._manifest, role, variant)
        where = self._manifest.directory / self._manifest.graph_files(variant)[role]
        check_graph(runner, contract(role, self.latent_dim), self._manifest, where)
        return runner

    # ---- facts ---------------------------------------------------------------------------

    @property
    def latent_dim(self) -> int:
        return self._manifest.latent_dim

    @property
    def manifest(self) -> dict[str, Any]:
        """A copy of manifest.json as loaded."""
        return copy.deepcopy(dict(self._manifest.raw))

    @property
    def info(self) -> dict[str, Any]:
        """What is loaded and how it runs: manifest facts, files, the engine and what each
        graph runs on (the decoder's under ``decoder_<key>``)."""
        raw = self._manifest.raw
        facts: dict[str, Any] = {
            "name": self._manifest.name,
            "arch": self._manifest.arch,
            "latent_dim": self.latent_dim,
            "likelihood": copy.deepcopy(raw["likelihood"]),
            "format_version": self._manifest.format_version,
            "preprocess": self.preprocess or "none",
            "model_dir": str(self._manifest.directory),
            "variant": self._variant,
            "variants": sorted(self._manifest.variants),
            "files": {role: ", ".join(map(str, paths)) for role, paths in self._files.items()},
            **self.runs_on,
            **{f"decoder_{k}": v for k, v in self._decoder.describe().items()},
            "batch_size": self._batch_size,
        }
        keys = ("dataset", "training", "export", "versions", "created", "parity", "quality", "ood")
        for key in keys:
            if key in raw:
                facts[key] = copy.deepcopy(raw[key])
        return facts

    @property
    def preprocess(self) -> dict[str, Any] | None:
        """A copy of the manifest's preprocessing spec (docs/preprocessing.md); None: the
        model declares none (format version 1, or "none"), images are read as before."""
        return copy.deepcopy(dict(self._manifest.preprocess)) if self._manifest.preprocess else None

    def reading(self, invert: Invert = "auto", preprocess: Preprocess = None) -> Reading:
        """How a call reads raw images: the declared spec (or ``preprocess``: "none" or a
        spec dict) and the polarity ("auto": decided per image from its border; True:
        dark ink on light paper; False: light ink on dark). It counts what it decided."""
        return Reading(resolve_spec(preprocess, self._manifest.preprocess), invert)

    def open_images(
        self,
        paths: Paths,
        *,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        skip_bad: bool = False,
        recursive: bool = False,
        column: str | None = None,
        id_column: str | None = None,
    ) -> ImageSource:
        """:func:`vae_runtime.open_images` reading through this model's preprocessing;
        ``source.reading`` then tells what was decided and flagged."""
        return open_images(
            paths,
            skip_bad=skip_bad,
            recursive=recursive,
            column=column,
            id_column=id_column,
            reading=self.reading(invert, preprocess),
        )

    def prepare(
        self, images: Images, *, invert: Invert = "auto", preprocess: Preprocess = None
    ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The model inputs the images become, float32 (N, 1, 28, 28), and per image what
        was decided: ``{"inverted", "polarity", "border", "passthrough", "flags"}``
        (flags: e.g. ["no_ink"]; empty lists when the model declares no preprocessing)."""
        reading = self.reading(invert, preprocess)
        reading.infos = []
        x = as_images(images, reading=reading)
        infos = reading.infos if not reading.legacy else [{} for _ in range(len(x))]
        return x, infos

    @property
    def runs_on(self) -> dict[str, Any]:
        """The backend, what the encoder runs on (e.g. its providers) and the engine's
        settings and version, as plain data."""
        return {
            "backend": self._engine.name,
            **self._encoder.describe(),
            **self._engine.describe(),
        }

    def __repr__(self) -> str:
        runner = ", ".join(f"{k}={v}" for k, v in self._encoder.describe().items())
        return (
            f"VAE({self._manifest.name!r}, latent_dim={self.latent_dim}, "
            f"variant={self._variant!r}, backend={self._engine.name!r}, {runner})"
        )

    # ---- the two graphs ------------------------------------------------------------------

    def _batch(self, batch_size: int | None) -> int:
        return self._batch_size if batch_size is None else checked_int(batch_size, "batch_size")

    def _run(
        self, runner: GraphRunner, names: Sequence[str], feed: str, data: np.ndarray, batch: int
    ) -> list[np.ndarray]:
        """``runner``'s outputs ``names`` for ``data`` fed as ``feed``, at most ``batch`` rows
        per call."""
        if 0 < len(data) <= batch:  # the common case, kept short: it is the per-call overhead
            return runner.run(names, {feed: data})
        row = sum(4 * int(np.prod(self._row_shapes[n])) for n in names)
        check_fits(len(data), row, f"the results for {len(data)} inputs")
        outs = [np.empty((len(data), *self._row_shapes[n]), np.float32) for n in names]
        for start in range(0, len(data), batch):
            parts = runner.run(names, {feed: data[start : start + batch]})
            for out, part in zip(outs, parts, strict=True):
                out[start : start + batch] = part
        return outs

    def encode(
        self,
        images: Images,
        *,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mu, logvar) of the approximate posterior, float32 (N, L) each. Paths (files,
        folders, IDX, .npy) are read in batches: memory holds one batch and the results.

        Raw images go through the model's declared preprocessing (:meth:`prepare`);
        ``invert``: "auto" (default) decides each image's polarity from its border, True /
        False force it; ``preprocess="none"``: read as before (no decisions, the whole
        image fitted into 28x28), e.g. for arrays already prepared elsewhere."""
        bs = self._batch(batch_size)
        reading = self.reading(invert, preprocess)
        if is_paths(images):
            mu, logvar = self._encode_paths(images, reading, bs, ENCODER_OUTPUTS)
            return mu, logvar
        x = as_images(images, reading=reading)
        mu, logvar = self._run(self._encoder, ENCODER_OUTPUTS, "x", x, bs)
        return mu, logvar

    def embed(
        self,
        images: Images,
        *,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """The deterministic embedding: mu, float32 (N, L) (``invert``, ``preprocess``: as
        in :meth:`encode`)."""
        if is_paths(images):  # streamed, keeping mu only
            reading = self.reading(invert, preprocess)
            return self._encode_paths(images, reading, self._batch(batch_size), ["mu"])[0]
        return self.encode(images, invert=invert, preprocess=preprocess, batch_size=batch_size)[0]

    def _encode_paths(
        self, paths: Paths, reading: Reading, bs: int, names: list[str]
    ) -> list[np.ndarray]:
        """The encoder's outputs ``names`` for the images behind ``paths``, read one batch
        at a time into arrays sized from the source's count (no copy at the end)."""
        source = open_images(paths, reading=reading)
        if source.count < 0:  # a stream of unknown length: batches joined at the end
            parts = [self._run(self._encoder, names, "x", x, bs) for x in source.batches(bs)]
            return list(_joined(parts, len(names), self.latent_dim))
        outs = [np.empty((source.count, self.latent_dim), np.float32) for _ in names]
        done = 0
        for x in source.batches(bs):
            for out, part in zip(outs, self._run(self._encoder, names, "x", x, bs), strict=True):
                out[done : done + len(x)] = part
            done += len(x)
        return [out[:done] for out in outs]

    def embed_iter(
        self,
        batches: Iterable[Images],
        *,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> Iterator[np.ndarray]:
        """Embed a stream of image batches lazily; yields one (n, L) array per chunk.

        Each item may be anything :meth:`encode` accepts; items larger than ``batch_size``
        are split, so memory stays at one chunk (e.g. ``vae.embed_iter(open_images(p).batches())``).
        """
        bs = self._batch(batch_size)
        if isinstance(batches, (str, bytes, os.PathLike)) or not hasattr(batches, "__iter__"):
            raise InputError(
                f"embed_iter takes an iterable of image batches, got {type(batches).__name__}; "
                "for a path use vae.embed_iter(open_images(path).batches())"
            )
        reading = self.reading(invert, preprocess)
        for item in batches:
            x = as_images(item, reading=reading)
            for start in range(0, len(x), bs):
                yield self._encoder.run(("mu",), {"x": x[start : start + bs]})[0]

    def embed_files(
        self,
        paths: Paths,
        *,
        recursive: bool = False,
        skip_bad: bool = False,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        column: str | None = None,
        batch_size: int | None = None,
    ) -> Iterator[FileEmbedding]:
        """Embed files and folders lazily: yields one :class:`FileEmbedding` (source, index
        within the source, embedding, error) per image, in input order (folders in natural
        order), holding one batch in memory. With ``skip_bad=True`` an unreadable file
        yields a record whose ``embedding`` is None and whose ``error`` says why.
        ``column``: a Parquet file's image column (see :func:`open_images`)."""
        bs = self._batch(batch_size)
        source = self.open_images(
            paths,
            invert=invert,
            preprocess=preprocess,
            skip_bad=skip_bad,
            recursive=recursive,
            column=column,
        )
        for batch in source.rows(bs):
            mu = (
                self._run(self._encoder, ("mu",), "x", batch.images, bs)[0]
                if len(batch.images)
                else np.zeros((0, self.latent_dim), np.float32)
            )
            at = 0
            for name, index, error in zip(batch.sources, batch.indices, batch.errors, strict=True):
                if error is None:
                    yield FileEmbedding(name, int(index), mu[at], None)
                    at += 1
                else:
                    yield FileEmbedding(name, int(index), None, error)

    @staticmethod
    def similar(query: ArrayLike, index_embeddings: ArrayLike, k: int = 5) -> Neighbours:
        """The k index embeddings most similar (cosine) to each query embedding, best
        first: ``(indices, scores)``, each (Q, k). See :func:`vae_runtime.similar`."""
        return similar(query, index_embeddings, k)

    def decode(self, z: ArrayLike, *, batch_size: int | None = None) -> np.ndarray:
        """Bernoulli means / Gaussian means of p(x|z), float32 (N, 1, 28, 28) in [0, 1]."""
        z = as_latents(z, self.latent_dim)
        x = self._run(self._decoder, DECODER_OUTPUTS, "z", z, self._batch(batch_size))[0]
        if x.size and not (x.min() >= 0 and x.max() <= 1):  # NaN fails both comparisons
            raise InputError(
                f"latents up to |z| = {np.abs(z).max():.3g} overflow this decoder (variant "
                f"{self._variant or 'default'}): its output left [0, 1]; use smaller latents"
            )
        return x

    # ---- sampling ------------------------------------------------------------------------

    def sample(
        self,
        mu: ArrayLike,
        logvar: ArrayLike,
        *,
        n: int | None = None,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        eps: ArrayLike | None = None,
    ) -> np.ndarray:
        """z = mu + exp(0.5 * clamp(logvar, -30, 20)) * eps, float32.

        Shape (N, L); with ``n``, n samples per input: (N, n, L). ``eps`` (that shape)
        injects the noise; otherwise it is drawn as standard normal float32 from
        ``default_rng(seed)`` or ``rng`` (neither: fresh entropy).
        """
        mu = check_latents(mu, self.latent_dim, "mu")
        logvar = check_latents(logvar, self.latent_dim, "logvar")
        if mu.shape != logvar.shape:
            raise InputError(f"mu {mu.shape} and logvar {logvar.shape} differ in shape")
        shape: tuple[int, ...] = mu.shape
        given = None if eps is None else eps_array(eps)
        if n is not None:
            shape = (len(mu), checked_int(n, "n"), self.latent_dim)
        elif given is not None and given.ndim == 3:
            shape = (len(mu), given.shape[1], self.latent_dim)
        if given is not None:
            if seed is not None or rng is not None:
                raise InputError("pass eps or seed/rng, not both")
            noise = check_eps(given, shape)
        else:
            # the noise and the result; a zero dimension does not make numpy accept the others
            check_fits(math.prod(max(d, 1) for d in shape), 8, f"sample(n={n})")
            noise = make_rng(seed, rng).standard_normal(shape, dtype=np.float32)
        return reparameterize(mu, logvar, noise)

    def generate(
        self,
        n: int,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        start: int = 0,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """n images decoded from z ~ N(0, I), float32 (n, 1, 28, 28).

        With ``seed``: images ``start .. start + n - 1`` of that seed's sequence, by the
        shard-stable rule of :mod:`vae_runtime.generation` (the same images whatever the
        split into calls). With ``rng``: the next n draws of that generator.
        """
        n = checked_int(n, "n")
        check_fits(n, IMAGE_BYTES + 4 * self.latent_dim, f"generate({n})")
        z = self._prior(n, seed, rng, start)
        return self.decode(z, batch_size=batch_size)

    def generate_iter(
        self, n: int, *, seed: int, start: int = 0, batch_size: int | None = None
    ) -> Iterator[tuple[int, np.ndarray]]:
        """:meth:`generate` in pieces, for any n in bounded memory: yields (index of the
        first image, float32 images (m, 1, 28, 28)), cut at the rule's block boundaries."""
        n = checked_int(n, "n")
        bs = self._batch(batch_size)
        start = checked_int(start, "start", minimum=0)
        for lo, hi in spans(start, start + n):
            z = prior_latents(seed, lo, hi - lo, self.latent_dim)  # one block's draw at most
            for at in range(0, hi - lo, bs):
                yield lo + at, self._decoder.run(DECODER_OUTPUTS, {"z": z[at : at + bs]})[0]

    def _prior(
        self, n: int, seed: int | None, rng: np.random.Generator | None, start: int
    ) -> np.ndarray:
        n = checked_int(n, "n")
        start = checked_int(start, "start", minimum=0)
        if seed is not None and rng is None:
            return prior_latents(seed, start, n, self.latent_dim)
        if start:
            raise InputError("start needs a seed (the shard-stable rule is per seed)")
        return make_rng(seed, rng).standard_normal((n, self.latent_dim), dtype=np.float32)

    def reconstruct(
        self,
        images: Images,
        *,
        sample: bool = False,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """decode(mu), or decode(a posterior sample) with ``sample=True``; (N, 1, 28, 28)."""
        mu, logvar = self.encode(
            images, invert=invert, preprocess=preprocess, batch_size=batch_size
        )
        z = self.sample(mu, logvar, seed=seed, rng=rng) if sample else mu
        return self.decode(z, batch_size=batch_size)

    def interpolate(
        self,
        a: Images,
        b: Images,
        steps: int = 10,
        *,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
    ) -> np.ndarray:
        """Decode ``steps`` evenly spaced points from mu(a) to mu(b), both ends included;
        a and b are one image each. Returns (steps, 1, 28, 28)."""
        steps = checked_int(steps, "steps", minimum=2)
        check_fits(steps, IMAGE_BYTES + 4 * self.latent_dim, f"interpolate(steps={steps})")
        pair = []
        reading = self.reading(invert, preprocess)
        for name, image in (("a", a), ("b", b)):
            x = as_images(image, reading=reading)
            if len(x) != 1:
                raise InputError(f"interpolate: {name} must be exactly one image, got {len(x)}")
            pair.append(x)
        mu = self.embed(np.concatenate(pair), preprocess="none")
        t = np.linspace(0.0, 1.0, steps, dtype=np.float32)[:, None]
        return self.decode((1.0 - t) * mu[0] + t * mu[1])

    # ---- likelihood ----------------------------------------------------------------------

    def score(
        self,
        images: Images,
        *,
        k: int = 1,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        eps: ArrayLike | None = None,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Per-image negative ELBO in nats (k=1), float64 (N,); lower is more likely.

        k=1: -log p(x|z) + KL(q(z|x) || N(0, I)) with z = mu + std * eps (closed-form KL).
        k>1: the importance-weighted bound -log mean_k p(x, z_k) / q(z_k|x), tighter as k
        grows. ``eps`` of shape (N, L) (k=1) or (N, k, L) injects the noise; otherwise it is
        drawn from ``default_rng(seed)`` or ``rng``, as in :meth:`sample` with n=k. Paths
        are read in batches (memory: one batch and the scores).
        """
        k = checked_int(k, "k")
        check_fits(k, IMAGE_BYTES + 8 * self.latent_dim, f"score(k={k}) for one image")
        # Rows sent to the decoder per chunk stay at batch_size however large k is.
        per_chunk = max(1, self._batch(batch_size) // k)
        reading = self.reading(invert, preprocess)
        if is_paths(images):
            source = open_images(images, reading=reading)
            chunks: Iterable[np.ndarray] = source.batches(per_chunk)
            n = source.count
        else:
            x = as_images(images, reading=reading)
            n = len(x)
            chunks = (x[i : i + per_chunk] for i in range(0, n, per_chunk))
        noise, draw = None, None
        if eps is not None:
            if seed is not None or rng is not None:
                raise InputError("pass eps or seed/rng, not both")
            if n < 0:
                raise InputError("eps needs an input whose length is known in advance")
            given = eps_array(eps)
            eps_shape = (
                (n, self.latent_dim) if k == 1 and given.ndim == 2 else (n, k, self.latent_dim)
            )
            noise = check_eps(given, eps_shape).reshape(n, k, self.latent_dim)
        else:
            draw = make_rng(seed, rng)
        parts, done = [], 0
        for xs in chunks:
            if noise is not None:
                if done + len(xs) > len(noise):
                    raise InputError(f"eps has {len(noise)} rows; the input has more images")
                e = noise[done : done + len(xs)]
            else:
                assert draw is not None
                e = draw.standard_normal((len(xs), k, self.latent_dim), dtype=np.float32)
            parts.append(self._score_chunk(xs, e, k))
            done += len(xs)
        if noise is not None and done != len(noise):
            raise InputError(f"eps has {len(noise)} rows, the input {done} images")
        return np.concatenate(parts).astype(np.float64, copy=False) if parts else np.zeros(0)

    def _score_chunk(self, xs: np.ndarray, e: np.ndarray, k: int) -> np.ndarray:
        """Scores of the images ``xs`` with the noise ``e`` (len(xs), k, L)."""
        mu, logvar = self.encode(xs, preprocess="none", batch_size=len(xs))
        logvar = clamp_logvar(logvar)
        z = reparameterize(mu, logvar, e)
        x_hat = self.decode(z.reshape(-1, self.latent_dim), batch_size=len(xs) * k)
        recon = lik.reconstruction_nll(
            x_hat, np.repeat(xs, k, axis=0), self._manifest.likelihood, self._manifest.sigma
        ).reshape(len(xs), k)
        if k == 1:
            return recon[:, 0] + lik.kl_to_standard_normal(mu, logvar)
        return lik.importance_weighted_bound(recon, z, e, logvar)

    # ---- out-of-distribution score (docs/ood.md) -----------------------------------------

    @property
    def ood_calibration(self) -> dict[str, Any] | None:
        """A copy of the manifest's ``ood`` section (docs/ood.md), or None without one."""
        return self._manifest.section("ood")

    def ood_statistics(
        self,
        images: Images,
        *,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> dict[str, np.ndarray]:
        """The OOD score's statistics per image, float64 (N,) each, deterministic (z = mu):
        ``excess_nelbo`` (negative ELBO minus the likelihood's floor, nats) and
        ``pixel_entropy`` (nats). Needs no calibration."""
        x = as_images(images, reading=self.reading(invert, preprocess))
        mu, logvar = self.encode(x, preprocess="none", batch_size=batch_size)
        x_hat = self.decode(mu, batch_size=batch_size)
        m = self._manifest
        return ood.statistics(x, mu, logvar, x_hat, m.likelihood, m.sigma)

    def ood_score(
        self,
        images: Images,
        *,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Per-image out-of-distribution score, float64 (N,); higher = more anomalous.

        The larger of the two statistics' robust z-scores against the training images
        (the manifest's ``ood`` section, written at export): the distance from the training
        median in units of the 10th-to-50th (below) or 50th-to-90th (above) percentile
        spread. Typical images score below 1 or 2. A model directory without the section
        raises ModelFormatError."""
        section = ood.section_of(self._manifest)
        stats = self.ood_statistics(
            images, invert=invert, preprocess=preprocess, batch_size=batch_size
        )
        return ood.score(stats, section)

    def is_ood(
        self,
        images: Images,
        *,
        fpr: float = 0.05,
        invert: Invert = "auto",
        preprocess: Preprocess = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Boolean (N,): ``ood_score`` above the threshold calibrated at false-positive rate
        ``fpr`` (one of the section's rates: 0.01, 0.02, 0.05, 0.1) on held-out
        in-distribution images."""
        limit = self.ood_threshold(fpr)
        scores = self.ood_score(images, invert=invert, preprocess=preprocess, batch_size=batch_size)
        return scores > limit

    def ood_threshold(self, fpr: float = 0.05) -> float:
        """The ``ood_score`` above which :meth:`is_ood` flags an image at rate ``fpr``."""
        return ood.threshold(ood.section_of(self._manifest), fpr)

    # ---- output --------------------------------------------------------------------------

    @staticmethod
    def save_grid(
        images: Images, path: str | os.PathLike[str], nrow: int = 8, pad: int = 2
    ) -> Path:
        """Write images as a PNG grid atomically (see :func:`vae_runtime.save_grid`)."""
        return save_grid(images, path, nrow=nrow, pad=pad)
