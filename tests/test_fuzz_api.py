"""Property-based fuzz of the public API (issue 13, item 11): every method of VAE,
open_images, make_grid, save_grid and vae-run's main with random argv either returns a
result that keeps its documented promises or raises a documented exception:

- the API: a VAEError (InputError, ModelFormatError, ProviderError, RunError); writing a
  file may also raise an OSError naming the file (docs/runtime.md);
- vae-run: an exit status (0, 2 with one line on stderr), or argparse's exit 0/2.

Inputs come from every corner: arrays of any dtype and shape with NaN, inf and float32's
extremes, ragged lists, PIL images of every mode (with transparency), broken files, counts
of any size and type, random keyword values and random command lines. Counts are drawn
small or absurd, never in the costly middle, and the process's address space is capped
while fuzzing, so an unexpected huge allocation fails fast instead of swapping.

Budget: VAE_ONNX_FUZZ_EXAMPLES examples per operation (default 40: a few tens of seconds in
all). VAE_ONNX_FUZZ_REPORT=path writes the figures (calls, seconds, outcomes per operation)
as JSON when the module ends.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vae_runtime import VAE, VAEError, make_grid, open_images, save_grid
from vae_runtime.cli import main as vae_run

EXAMPLES = int(os.environ.get("VAE_ONNX_FUZZ_EXAMPLES", "40"))
REPORT = os.environ.get("VAE_ONNX_FUZZ_REPORT")
ADDRESS_SPACE_HEADROOM = 6 << 30  # bytes the fuzzed calls may map beyond what is mapped now
L = 20  # the shipped default model's latent size

STATS: dict[str, Counter[str]] = defaultdict(Counter)
FILE_NUMBERS = itertools.count()
SECONDS: Counter[str] = Counter()

# ---- strategies ---------------------------------------------------------------------------------

SMALL_OR_ABSURD = st.one_of(
    st.integers(-3, 6),
    st.sampled_from([2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1, 2**63, 2**64, 10**30, -(2**63)]),
)
COUNTS = SMALL_OR_ABSURD | st.sampled_from(
    [np.int64(3), np.uint8(2), np.int32(-1), 2.0, 2.5, float("nan"), True, "3", None, [2], b"2"]
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True, width=32) | st.sampled_from(
    [3.4e38, -3.4e38, 3.3e38, 1e30, -1e30, 1e6, 1e-45, 0.0, -0.0, 1.0, 255.0, 1e300]
)
DTYPES = [
    "uint8",
    "uint16",
    "int8",
    "int32",
    "int64",
    "float16",
    "float32",
    "float64",
    "bool",
    "complex64",
    "object",
    "U3",
    "datetime64[s]",
]
IMAGE_SHAPES = [
    (0, 28, 28),
    (1, 28, 28),
    (28, 28),
    (2, 1, 28, 28),
    (3, 784),
    (784,),
    (),
    (5,),
    (1, 28, 28, 3),
    (2, 3, 28, 28),
    (1, 27, 28),
    (2, 1, 1, 28, 28),
    (1, 0),
]
MODES = [
    "1",
    "L",
    "LA",
    "La",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBa",
    "RGBX",
    "CMYK",
    "YCbCr",
    "LAB",
    "HSV",
    "I",
    "I;16",
    "I;16B",
    "I;16L",
    "F",
]


@st.composite
def arrays(draw: st.DrawFn, shapes: list[tuple[int, ...]]) -> Any:
    shape = draw(st.sampled_from(shapes))
    dtype = draw(st.sampled_from(DTYPES))
    fill = draw(FLOATS | st.integers(-300, 70000))
    with np.errstate(all="ignore"), warnings_ignored():
        try:
            array = np.full(shape, fill).astype(dtype)
        except (ValueError, TypeError, OverflowError):
            array = np.zeros(shape, dtype=dtype)
        if array.size and draw(st.booleans()):
            flat = array.reshape(-1)
            flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([0, 1]))
    return array


@st.composite
def pil_images(draw: st.DrawFn) -> Image.Image:
    mode = draw(st.sampled_from(MODES))
    size = (draw(st.integers(0, 40)), draw(st.integers(0, 40)))
    image = Image.new(mode, size)
    if draw(st.booleans()):
        image.info["transparency"] = draw(
            st.sampled_from([0, 255, (0, 0, 0), b"\x00\xff", 70000, (1, 2)])
        )
    return image


def ragged() -> st.SearchStrategy[Any]:
    return st.recursive(
        FLOATS | st.integers(-5, 300) | st.none(),
        lambda inner: st.lists(inner, max_size=4),
        max_leaves=12,
    )


@st.composite
def files(draw: st.DrawFn, folder: Path) -> Path:
    """A path to a file (or folder) of random content, made in ``folder``."""
    kind = draw(st.sampled_from(["png", "bad", "npy", "npy-header", "idx", "dir", "missing"]))
    path = folder / f"f{next(FILE_NUMBERS)}.{kind.split('-')[0]}"  # a fresh name each time
    if kind == "png":
        pil = draw(pil_images())
        try:
            pil.save(path, format="PNG")
        except (OSError, ValueError, KeyError):
            path.write_bytes(b"\x89PNG\r\n\x1a\n" + draw(st.binary(max_size=64)))
    elif kind == "bad":
        path.write_bytes(draw(st.binary(max_size=200)))
    elif kind == "npy":
        array = draw(arrays(IMAGE_SHAPES))
        with contextlib.suppress(ValueError):
            np.save(path, array, allow_pickle=draw(st.booleans()))
    elif kind == "npy-header":
        shape = draw(
            st.sampled_from(
                [
                    "(-1, 28, 28)",
                    "(-5,)",
                    "(2**70, 28, 28)",
                    "(3, 28, 28)",
                    "(99999999999999999999, 28)",
                    "(1, -28, 28)",
                ]
            )
        )
        text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}".ljust(117)
        path.write_bytes(b"\x93NUMPY\x01\x00v\x00" + text.encode() + b"\n" + bytes(64))
    elif kind == "idx":
        count = draw(st.sampled_from([0, 1, 3, 2**31 - 1]))
        rows = draw(st.sampled_from([28, 27, 0]))
        head = bytes([0, 0, 8, 3]) + count.to_bytes(4, "big") + rows.to_bytes(4, "big") * 2
        path.write_bytes(head + bytes(draw(st.integers(0, 3)) * rows * rows))
    elif kind == "dir":
        path.mkdir()
        (path / "a.png").write_bytes(b"not a png")
    return path


def images(folder: Path) -> st.SearchStrategy[Any]:
    return st.one_of(
        arrays(IMAGE_SHAPES),
        pil_images(),
        ragged(),
        files(folder),
        files(folder).map(str),
        st.lists(files(folder) | pil_images(), max_size=3),
        st.sampled_from([None, 5, b"raw bytes", "", "no/such/file.png", 3.5, {"a": 1}]),
    )


def float32_full(n: int, value: float) -> np.ndarray:
    with np.errstate(over="ignore"):  # 1e300 becoming inf in float32 is the example's point
        return np.full((n, L), value, np.float32)


def latents() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.builds(float32_full, st.integers(0, 3), FLOATS),
        st.builds(lambda v: np.full((2, L), v), FLOATS),  # float64, beyond float32's range
        arrays([(2, L), (L,), (1, L + 1), (2, L, 1), ()]),
        ragged(),
    )


# ---- the properties ------------------------------------------------------------------------------


@contextlib.contextmanager
def working_dir(path: Path) -> Iterator[None]:
    """Relative outputs ("-", "-1", ...) land in the fuzz folder, not the checkout."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def warnings_ignored() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def check_images(x: Any, n: int | None = None) -> None:
    assert isinstance(x, np.ndarray) and x.dtype == np.float32 and x.shape[1:] == (1, 28, 28)
    assert n is None or len(x) == n
    assert np.isfinite(x).all() and (x >= 0).all() and (x <= 1).all(), "images outside [0, 1]"


def check_latents(z: Any) -> None:
    assert isinstance(z, np.ndarray) and z.dtype == np.float32 and z.shape[-1] == L
    assert np.isfinite(z).all()


def run(op: str, call: Callable[[], Any], allowed: tuple[type[BaseException], ...] = ()) -> Any:
    """``call()``, counting its outcome; an exception outside VAEError + ``allowed`` fails."""
    start = time.perf_counter()
    try:
        result = call()
    except (VAEError, *allowed) as exc:
        STATS[op][f"refused: {type(exc).__name__}"] += 1
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return None
    finally:
        SECONDS[op] += time.perf_counter() - start
    STATS[op]["returned"] += 1
    return result


@pytest.fixture(scope="module")
def vae() -> VAE:
    return VAE(threads=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module", autouse=True)
def capped_memory() -> Iterator[None]:
    """The address space capped at what is mapped now plus ADDRESS_SPACE_HEADROOM."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    cap = mapped + ADDRESS_SPACE_HEADROOM
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        if REPORT:
            ops = sorted(STATS)
            report = {
                "examples_per_operation": EXAMPLES,
                "calls": sum(sum(STATS[o].values()) for o in ops),
                "seconds_in_calls": round(sum(SECONDS.values()), 1),
                "operations": {
                    o: {
                        "calls": sum(STATS[o].values()),
                        "seconds": round(SECONDS[o], 1),
                        "outcomes": dict(STATS[o]),
                    }
                    for o in ops
                },
            }
            Path(REPORT).write_text(json.dumps(report, indent=2) + "\n")


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
    database=None,
)


# ---- the API -------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_encode_embed_reconstruct_score(vae: VAE, folder: Path, data: st.DataObject) -> None:
    x = data.draw(images(folder), "images")
    kw = data.draw(
        st.fixed_dictionaries(
            {}, optional={"invert": st.booleans() | st.just("yes"), "batch_size": COUNTS}
        )
    )
    op = data.draw(st.sampled_from(["encode", "embed", "reconstruct", "score"]))
    if op == "encode":
        out = run(op, lambda: vae.encode(x, **kw))
        if out is not None:
            check_latents(out[0])
            check_latents(out[1])
    elif op == "embed":
        out = run(op, lambda: vae.embed(x, **kw))
        if out is not None:
            check_latents(out)
    elif op == "reconstruct":
        extra = data.draw(
            st.fixed_dictionaries({}, optional={"sample": st.booleans(), "seed": COUNTS})
        )
        out = run(op, lambda: vae.reconstruct(x, **kw, **extra))
        if out is not None:
            check_images(out)
    else:
        extra = data.draw(
            st.fixed_dictionaries({}, optional={"k": COUNTS, "seed": COUNTS, "eps": latents()})
        )
        out = run(op, lambda: vae.score(x, **kw, **extra))
        if out is not None:
            assert out.dtype == np.float64 and np.isfinite(out).all()


@FUZZ
@given(data=st.data())
def test_embed_iter(vae: VAE, folder: Path, data: st.DataObject) -> None:
    batches = data.draw(
        st.one_of(
            st.lists(images(folder), max_size=3),
            st.sampled_from([5, None, 2.5, "no/such.png", b"xy"]),
        )
    )
    batch_size = data.draw(st.none() | COUNTS)
    out = run("embed_iter", lambda: list(vae.embed_iter(batches, batch_size=batch_size)))
    for chunk in out or ():
        check_latents(chunk)


@FUZZ
@given(data=st.data())
def test_decode_generate_sample(vae: VAE, data: st.DataObject) -> None:
    op = data.draw(st.sampled_from(["decode", "generate", "sample"]))
    if op == "decode":
        out = run(
            op, lambda: vae.decode(data.draw(latents()), batch_size=data.draw(st.none() | COUNTS))
        )
        if out is not None:
            check_images(out)
    elif op == "generate":
        n, seed = data.draw(COUNTS), data.draw(st.none() | COUNTS)
        out = run(op, lambda: vae.generate(n, seed=seed))
        if out is not None:
            check_images(out, n)
    else:
        mu, logvar = data.draw(latents()), data.draw(latents())
        kw = data.draw(
            st.fixed_dictionaries(
                {}, optional={"n": COUNTS, "seed": COUNTS, "eps": latents() | ragged()}
            )
        )
        out = run(op, lambda: vae.sample(mu, logvar, **kw))
        if out is not None:
            check_latents(out)


@FUZZ
@given(data=st.data())
def test_interpolate(vae: VAE, folder: Path, data: st.DataObject) -> None:
    a, b = data.draw(images(folder)), data.draw(images(folder))
    steps = data.draw(COUNTS)
    out = run("interpolate", lambda: vae.interpolate(a, b, steps=steps))
    if out is not None:
        check_images(out, steps)


@FUZZ
@given(data=st.data())
def test_constructor(folder: Path, data: st.DataObject) -> None:
    anything = st.sampled_from([None, 5, "x", ["int8"], {"a": 1}, 2.5, b"int8", True, ()])
    kw = data.draw(
        st.fixed_dictionaries(
            {},
            optional={
                "variant": st.sampled_from(["int8", "fp16", "nope", ""]) | anything,
                "threads": COUNTS,
                "batch_size": COUNTS,
                "optimization": st.sampled_from(["all", "basic", "none"]) | anything,
                "providers": st.sampled_from(["cpu", "cuda", "TPU"]) | anything,
                "spinning": st.booleans() | anything,
                "backend": st.sampled_from(["onnxruntime", "nope"]) | anything,
                "engine_options": st.sampled_from([{}, {"nope": 1}, {"threads": 2**40}]) | anything,
            },
        )
    )
    path = data.draw(st.none() | files(folder) | anything)
    with warnings_ignored():
        out = run("VAE()", lambda: VAE(path, **kw))
    if out is not None:
        check_images(out.generate(1, seed=0), 1)


@FUZZ
@given(data=st.data())
def test_open_images(folder: Path, data: st.DataObject) -> None:
    path = data.draw(files(folder) | st.sampled_from([None, 5, "", "no/such", b"bytes"]))
    kw = data.draw(
        st.fixed_dictionaries({}, optional={"invert": st.booleans(), "skip_bad": st.booleans()})
    )

    def read() -> Any:
        source = open_images(path, **kw)
        return list(source.batches(data.draw(COUNTS)))

    for batch in run("open_images", read) or ():
        check_images(batch)


@FUZZ
@given(data=st.data())
def test_grids(folder: Path, data: st.DataObject) -> None:
    x = data.draw(images(folder))
    nrow, pad = data.draw(COUNTS), data.draw(COUNTS)
    if data.draw(st.booleans()):
        grid = run("make_grid", lambda: make_grid(x, nrow=nrow, pad=pad))
        if grid is not None:
            assert grid.dtype == np.uint8 and grid.ndim == 2
    else:
        name = data.draw(st.sampled_from(["g.png", "g.PNG", "g.jpg", "", "sub/g.png", "f1/g.png"]))
        run(
            "save_grid", lambda: save_grid(x, folder / name, nrow=nrow, pad=pad), allowed=(OSError,)
        )


# ---- the command line --------------------------------------------------------------------------


FLAGS = [
    "--n",
    "--seed",
    "--out",
    "--npy",
    "--nrow",
    "--k",
    "--steps",
    "--batch-size",
    "--threads",
    "--model",
    "--variant",
    "--device",
    "--backend",
    "--invert",
    "--skip-bad",
    "--fallback",
    "--json",
    "--no-progress",
    "--bogus",
]
COMMANDS = [
    "generate",
    "embed",
    "embed",
    "reconstruct",
    "reconstruct",
    "interpolate",
    "score",
    "score",
    "info",
    "nope",
    "--version",
]


def argv_strategy(folder: Path) -> st.SearchStrategy[list[str]]:
    """A subcommand, input files, usually an output, and a few random flags and values."""
    token = st.one_of(
        SMALL_OR_ABSURD.map(str),
        st.sampled_from(["-1", "0", "1.5", "nan", "", "--", "-", "x", "cuda", "int8", "tpu"]),
        files(folder).map(str),
        st.text(max_size=6),
    )
    outputs = st.sampled_from(["o.png", "o.npy", "o.jpg", "sub/o.png", "f1", "/dev/null"]).map(
        lambda n: str(folder / n) if not n.startswith("/") else n
    )
    out_pairs = st.lists(st.tuples(st.sampled_from(["--out", "--npy"]), outputs), max_size=2)
    pairs = st.lists(st.tuples(st.sampled_from(FLAGS), token | outputs), max_size=2)
    positional = st.lists(files(folder).map(str), min_size=1, max_size=2) | st.lists(
        token, max_size=2
    )
    return st.builds(
        lambda c, pos, outs, more: [c, *pos, *[t for p in outs + more for t in p]],
        st.sampled_from(COMMANDS),
        positional,
        out_pairs,
        pairs,
    )


@FUZZ
@given(data=st.data())
def test_vae_run_main(folder: Path, data: st.DataObject) -> None:
    argv = data.draw(argv_strategy(folder), "argv")
    if "--n" in argv or "--steps" in argv:  # a huge but valid count would run for minutes
        count = argv[argv.index("--n" if "--n" in argv else "--steps") + 1]
        if count.lstrip("-").isdigit() and 64 < int(count) < 2**31:
            return
    err = io.StringIO()
    start = time.perf_counter()
    try:
        with (
            working_dir(folder),
            contextlib.redirect_stdout(io.StringIO()),
            contextlib.redirect_stderr(err),
        ):
            code = vae_run(argv)
    except SystemExit as exc:  # argparse: usage errors, --help, --version
        code = exc.code
        assert code in (0, 2), argv
    finally:
        SECONDS["vae-run"] += time.perf_counter() - start
    STATS["vae-run"][f"exit {code}"] += 1
    assert code in (0, 2), (argv, err.getvalue())
    assert "Traceback" not in err.getvalue(), (argv, err.getvalue())
    ours = [line for line in err.getvalue().splitlines() if line.startswith("vae-run: error")]
    assert len(ours) <= 1, err.getvalue()
