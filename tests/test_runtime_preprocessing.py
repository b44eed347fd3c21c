"""The runtime applies the model's declared preprocessing (issue 12): every input layout,
automatic polarity and what it reports, the opt-out, old (format version 1) directories,
and vae-run's flags, warnings and one-line refusals. docs/preprocessing.md."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from vae_format.manifest import FileEntry, Manifest
from vae_format.preprocess_spec import builtin
from vae_runtime import VAE, InputError
from vae_runtime.images import image_to_array
from vae_runtime.preprocess import decode, prepare
from vae_runtime.sources import as_images

L = 8


@pytest.fixture(scope="module")
def model(model_dir_factory) -> Path:
    return model_dir_factory(arch="conv", latent_dim=L)


@pytest.fixture(scope="module")
def vae(model) -> VAE:
    return VAE(model, threads=1)


def page(dark_ink: bool = True, size: tuple[int, int] = (200, 160)) -> np.ndarray:
    """A uint8 grey page (H, W) with a thick '7' off-centre, dark on light or light on dark."""
    w, h = size
    image = Image.new("L", size, 235 if dark_ink else 20)
    draw = ImageDraw.Draw(image)
    ink = 30 if dark_ink else 230
    draw.line([(w * 0.2, h * 0.2), (w * 0.55, h * 0.2), (w * 0.35, h * 0.8)], fill=ink, width=9)
    return np.asarray(image)


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


# ---- the declared spec --------------------------------------------------------------------


def test_the_export_declares_the_datasets_procedure(vae, model):
    manifest = json.loads((model / "manifest.json").read_text())
    assert manifest["format_version"] == 2
    assert manifest["preprocess"] == builtin("mnist") == vae.preprocess
    assert vae.info["preprocess"] == builtin("mnist")


def test_a_raw_page_goes_through_the_declared_steps(vae):
    raw = page()
    spec = builtin("mnist")
    expected = prepare(raw / np.float32(255), None, spec).image
    x, infos = vae.prepare(raw)
    assert x.shape == (1, 1, 28, 28) and np.array_equal(x[0, 0], expected)
    assert infos == [
        {"inverted": True, "polarity": "auto", "border": infos[0]["border"],
         "passthrough": False, "flags": []}
    ]  # fmt: skip
    assert infos[0]["border"] > spec["polarity"]["threshold"]
    # The digit fills the 20x20 box and sits in the middle, unlike the whole-page resize.
    rows = np.flatnonzero(x[0, 0].max(1) > 0)
    assert rows[-1] - rows[0] + 1 >= 19
    np.testing.assert_array_equal(vae.embed(raw), vae.embed(x, preprocess="none"))


def test_polarity_is_decided_per_image_and_can_be_forced(vae):
    dark, light = page(True), page(False)
    x, infos = vae.prepare([dark, light])
    assert [i["inverted"] for i in infos] == [True, False]
    # The two polarities of the same drawing become (nearly) the same model input.
    assert np.abs(x[0] - x[1]).mean() < 0.02
    _, forced = vae.prepare([dark, light], invert=False)
    assert [i["inverted"] for i in forced] == [False, False]
    assert {i["polarity"] for i in forced} == {"forced"}
    _, forced = vae.prepare(light, invert=True)
    assert forced[0]["inverted"] is True
    with pytest.raises(InputError, match='invert must be "auto", True or False'):
        vae.embed(dark, invert="yes")


def test_a_transparent_png_of_dark_ink_is_not_black_on_black(vae):
    raw = page(True)
    alpha = (255 - raw).astype(np.uint8)  # ink opaque, paper transparent
    rgba = np.dstack([np.full_like(raw, 20)] * 3 + [alpha])
    x, infos = vae.prepare(Image.fromarray(rgba, "RGBA"))
    assert not infos[0]["flags"] and x.max() == 1.0
    grey = vae.prepare(raw)[0]
    assert np.abs(x - grey).mean() < 0.02
    # Today's reading composites onto black: the image is black, as issue 12 found.
    assert as_images(Image.fromarray(rgba, "RGBA")).max() < 0.1


def test_a_blank_page_is_flagged_and_reported(vae, tmp_path):
    blank = np.full((120, 90), 240, np.uint8)
    x, infos = vae.prepare([blank, np.zeros((28, 28), np.uint8)])
    assert [i["flags"] for i in infos] == [["no_ink"], ["no_ink"]]
    assert not x.any()
    reading = vae.reading()
    as_images([blank, page()], reading=reading)
    assert (reading.images, reading.flagged, reading.inverted) == (2, 1, 2)
    assert reading.notes[0].where == "images[0]" and reading.notes[0].code == "no_ink"


# ---- layouts ----------------------------------------------------------------------------------


def test_every_layout_of_one_picture_gives_the_same_embedding(vae, tmp_path):
    raw = page()
    want = vae.embed(raw)
    file = tmp_path / "seven.png"
    file.write_bytes(png_bytes(raw))
    rgb = np.dstack([raw] * 3)
    forms = {
        "(H, W, 1)": raw[..., None],
        "(H, W, 3)": rgb,
        "(H, W, 4) opaque": np.dstack([rgb, np.full_like(raw, 255)]),
        "(1, H, W, 3)": rgb[None],
        "float (H, W)": raw / np.float32(255),
        "uint16 (H, W)": raw.astype(np.uint16) * 257,
        "nested int list": raw.tolist(),
        "bytes": file.read_bytes(),
        "BytesIO": io.BytesIO(file.read_bytes()),
        "str path": str(file),
        "pathlib.Path": file,
        "PIL image": Image.fromarray(raw),
        "np.asarray(Image.open(f))": np.asarray(Image.open(file)),
    }
    for name, form in forms.items():
        np.testing.assert_allclose(vae.embed(form), want, atol=1e-6, err_msg=name)
    with open(file, "rb") as f:
        np.testing.assert_allclose(vae.embed(f), want, atol=1e-6)
    mixed = vae.embed([file, rgb, file.read_bytes(), Image.fromarray(raw), page(size=(64, 90))])
    assert mixed.shape == (5, L)
    np.testing.assert_allclose(mixed[:4], np.repeat(want, 4, 0), atol=1e-6)


def test_keras_and_model_shaped_layouts_are_todays_input(vae):
    digits = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    digits[:, :3] = digits[:, -3:] = 0  # dark borders, as the datasets'
    today = as_images(digits)  # the whole-image reading, no spec: today's input
    for form in (digits[..., None], digits, digits[:, None], digits.reshape(6, 784)):
        x, infos = vae.prepare(form)
        assert np.array_equal(x.view(np.uint32), today.view(np.uint32))
        assert all(i["passthrough"] and not i["inverted"] for i in infos)
    assert np.array_equal(vae.embed(digits[..., None]), vae.embed(today, preprocess="none"))
    assert np.array_equal(vae.embed(digits.tolist()), vae.embed(today, preprocess="none"))


def test_read_only_arrays_are_read_in_both_polarities(vae):
    """Memory-mapped .npy files and pipes give read-only arrays: nothing writes into them."""
    digits = np.zeros((2, 28, 28), np.uint8)
    digits[:, 8:20, 12:16] = 255
    digits[1] = 255 - digits[1]  # dark ink on white: inverted by the rule
    frozen = np.frombuffer(digits.tobytes(), np.uint8).reshape(2, 28, 28)
    assert not frozen.flags.writeable
    x, infos = vae.prepare(frozen)
    assert [i["inverted"] for i in infos] == [False, True]
    assert np.array_equal(x[0], x[1]) and np.array_equal(frozen, digits)
    x, infos = vae.prepare(frozen[:1])  # none inverted: the input itself comes back
    assert not infos[0]["inverted"] and np.array_equal(x[0, 0], digits[0] / np.float32(255))


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (np.zeros((3, 200, 200), np.uint8), "ambiguous: give it as \\(N, H, W, 1\\)"),
        (np.zeros((2, 3, 64, 64), np.uint8), "3-channel or channels-first data"),
        (np.zeros((784,), np.float32), "accepted layouts: \\(28, 28\\)"),
        (np.zeros((28, 28, 5), np.uint8), "accepted layouts"),
        (np.zeros((2, 2, 8, 8, 1), np.uint8), "accepted layouts"),
        (np.zeros((0, 5), np.uint8), "accepted layouts"),
        ([[0, 300], [1, 2]], "integer pixel values must lie in 0..255"),
        ([[-1, 3], [1, 2]], "integer pixel values must lie in 0..255"),
        (np.zeros((64, 64), np.int32), "must be uint8"),
        (np.full((64, 64), 2.0), "must lie in \\[0, 1\\]"),
        (b"not a picture", "raw bytes are read as an encoded image file"),
        (io.BytesIO(b"\x89PNG broken"), "BytesIO: not an image file"),
    ],
)
def test_ambiguous_or_bad_layouts_are_refused_naming_the_accepted_ones(vae, bad, words):
    with pytest.raises(InputError, match=words) as info:
        vae.embed(bad)
    assert "\n" not in str(info.value)


# ---- the opt-out and old directories ----------------------------------------------------------


def test_preprocess_none_is_todays_reading(vae):
    raw = page()
    pil = Image.fromarray(raw)
    today = image_to_array(pil)[None, None]
    assert np.array_equal(vae.prepare(pil, preprocess="none")[0], today)
    np.testing.assert_array_equal(
        vae.embed(pil, preprocess="none"), vae.embed(today, preprocess="none")
    )
    inverted = image_to_array(pil, invert=True)[None, None]
    assert np.array_equal(vae.prepare(pil, invert=True, preprocess="none")[0], inverted)
    with pytest.raises(InputError, match='preprocess: must be "none" or an object'):
        vae.embed(raw, preprocess="auto")
    with pytest.raises(InputError, match=r"preprocess\.fit\.box"):
        vae.embed(
            raw, preprocess={**builtin("mnist"), "fit": {"box": 0, "down": "area", "up": "linear"}}
        )


def test_a_spec_given_by_the_caller_overrides_the_declared_one(vae):
    raw = page()
    spec = builtin("fashion-mnist")
    x, _ = vae.prepare(raw, preprocess=spec)
    assert np.array_equal(x[0, 0], prepare(raw / np.float32(255), None, spec).image)
    assert not np.array_equal(x, vae.prepare(raw)[0])


def version_1_copy(model: Path, out: Path) -> Path:
    """``model`` as a format version 1 directory: no section, graphs saying version 1."""
    import shutil

    import onnx

    shutil.copytree(model, out)
    doc = json.loads((out / "manifest.json").read_text())
    for role in ("encoder", "decoder"):
        rel = doc["graphs"][role]["file"]
        graph = onnx.load(out / rel, load_external_data=False)
        for prop in graph.metadata_props:
            if prop.key == "vae_onnx.format_version":
                prop.value = "1"
        onnx.save(graph, out / rel)
        doc["files"][rel] = FileEntry.of_file(out / rel, "graph").to_dict()
    doc["format_version"] = 1
    del doc["preprocess"]
    doc.pop("variants", None)
    Manifest.from_dict(doc, out).write()
    return out


def test_a_version_1_directory_reads_raw_images_as_before(vae, model, tmp_path):
    old = VAE(version_1_copy(model, tmp_path / "v1"), threads=1)
    assert old.info["format_version"] == 1 and old.preprocess is None
    assert old.info["preprocess"] == "none"
    raw = page()
    pil = Image.fromarray(raw)
    np.testing.assert_array_equal(old.embed(pil), vae.embed(pil, preprocess="none"))
    assert np.array_equal(old.prepare(pil)[0], image_to_array(pil)[None, None])
    with pytest.raises(InputError, match="accepted shapes"):  # as before: no new layouts
        old.embed(np.dstack([raw] * 3))


# ---- vae-run --------------------------------------------------------------------------------


def vae_run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vae_runtime.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def test_cli_reports_decisions_and_flags_and_honours_the_flags(model, tmp_path):
    Image.fromarray(page()).save(tmp_path / "seven.png")
    Image.fromarray(np.full((50, 60), 250, np.uint8)).save(tmp_path / "blank.png")
    base = ("--model", str(model), "--no-progress")
    run = vae_run("embed", "seven.png", "blank.png", "--out", "e.jsonl", *base, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "vae-run: warning: blank.png: no ink found" in run.stderr
    assert "inverted 2 of 2 images" in run.stderr
    run = vae_run("score", "seven.png", "blank.png", "--json", *base, cwd=tmp_path)
    facts = json.loads(run.stdout)["preprocessing"]
    assert (facts["images"], facts["inverted"]) == (2, 2)
    no_ink = [f for f in facts["flags"] if f["code"] == "no_ink"]
    assert [f["where"] for f in no_ink] == ["blank.png"]
    assert facts["flagged"] == len(facts["flags"])
    rows = {}
    for flags in ((), ("--invert", "no"), ("--invert",), ("--preprocess", "none")):
        out = f"e{len(rows)}.npy"
        run = vae_run("embed", "seven.png", "--out", out, *flags, *base, "-q", cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        rows[flags] = np.load(tmp_path / out)
    assert np.array_equal(rows[()], rows[("--invert",)])  # auto decided: inverted
    assert not np.allclose(rows[()], rows[("--invert", "no")])
    vae = VAE(model, threads=1)
    raw = page()
    np.testing.assert_allclose(rows[()], vae.embed(raw), atol=1e-6)
    np.testing.assert_allclose(
        rows[("--preprocess", "none")], vae.embed(Image.fromarray(raw), preprocess="none"),
        atol=1e-6,
    )  # fmt: skip


def test_cli_refuses_a_bad_layout_in_one_line(model, tmp_path):
    np.save(tmp_path / "cube.npy", np.zeros((3, 200, 200), np.uint8))
    run = vae_run("score", "cube.npy", "--model", str(model), cwd=tmp_path)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vae-run: error: cube.npy: images have")
    assert "accepted layouts" in lines[0] and not list(tmp_path.glob("*.jsonl"))
    run = vae_run("embed", "x.png", "--invert", "maybe", "--out", "e.npy", cwd=tmp_path)
    assert run.returncode == 2 and "invalid choice: 'maybe'" in run.stderr


def test_decode_of_a_file_and_of_its_bytes_agree(vae, tmp_path):
    raw = page(False, (640, 480))
    data = png_bytes(raw)
    (tmp_path / "p.png").write_bytes(data)
    with Image.open(tmp_path / "p.png") as image:
        expected = prepare(*decode(image, 256), builtin("mnist")).image
    assert np.array_equal(vae.prepare(tmp_path / "p.png")[0][0, 0], expected)
    assert np.array_equal(vae.prepare(data)[0][0, 0], expected)


def test_score_flags_images_far_from_the_training_data(model, tmp_path):
    """score checks each image's OOD score against the threshold at 1% FPR: training-like
    inputs pass, noise is flagged; the scores are written either way."""
    vae = VAE(model, threads=1)
    limit = vae.ood_threshold(0.01)
    noise = np.random.default_rng(0).integers(0, 256, (6, 28, 28), dtype=np.uint8)
    noise[:, :2] = noise[:, -2:] = 0
    ood = vae.ood_score(noise)
    np.save(tmp_path / "noise.npy", noise)
    run = vae_run("score", "noise.npy", "--json", "--model", str(model), cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    far = [f["where"] for f in summary["preprocessing"]["flags"] if f["code"] == "far_from_data"]
    assert far == [f"noise.npy[{i}]" for i in np.flatnonzero(ood > limit)]
    assert summary["images"] == 6
    run = vae_run("score", "noise.npy", "--model", str(model), cwd=tmp_path)
    assert run.stderr.count("unlike the model's training images") == len(far)


@pytest.mark.parametrize("transparency", [None, b"x", 0, (1, 2, 3)])
@pytest.mark.parametrize(
    "mode", ["1", "L", "La", "LA", "P", "PA", "RGB", "RGBa", "RGBA", "CMYK", "YCbCr", "LAB", "HSV"]
)
def test_every_pil_mode_and_transparency_is_read_or_refused_in_one_line(
    vae: VAE, mode: str, transparency: object
) -> None:
    """Found by the API fuzz: premultiplied modes (La) and transparency values Pillow cannot
    apply (bytes on an L image) raised ValueError / TypeError from inside Pillow."""
    image = Image.new(mode, (40, 30))
    if transparency is not None:
        image.info["transparency"] = transparency
    try:
        assert vae.embed(image).shape == (1, vae.latent_dim)
    except InputError as exc:
        assert f"cannot convert image mode {mode}" in str(exc)


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (7, 0)])
def test_an_image_without_pixels_is_refused(vae: VAE, size: tuple[int, int]) -> None:
    with pytest.raises(InputError, match="image has no pixels"):
        vae.embed(Image.new("1", size))
