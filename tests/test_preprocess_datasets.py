"""Preprocessing against the datasets and the shipped models (docs/preprocessing.md).

1. What stays exact: every test image of MNIST under the MNIST spec and of Fashion-MNIST
   under the Fashion spec, as a uint8 array, a float array, an IDX file and a PNG file,
   becomes exactly today's model input (so exactly today's embedding), undecided by
   nothing: the polarity rule never inverts them and nothing is flagged.
2. Scans: synthetic scans of MNIST test digits (tests/scans.py) classify by 5-NN against
   MNIST training embeddings nearly as well as the original digits; today's whole-image
   resize does not.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scans import KINDS, scans

from vae_format.datasets import find_file, get_spec
from vae_format.preprocess_spec import builtin
from vae_runtime import VAE, open_images
from vae_runtime.evaluate import knn_accuracy, load_split
from vae_runtime.preprocess import decode, grey_alpha, passthrough_batch, prepare
from vae_runtime.sources import as_images

REPO = Path(__file__).resolve().parents[1]
MODELS = {"mnist": "mnist-conv-z20", "fashion-mnist": "fashion-mnist-conv-z20"}


def bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="module", params=["mnist", "fashion-mnist"])
def test_split(request, data_dir):
    images, _ = load_split(data_dir, request.param, "test")
    return request.param, images


def test_model_shaped_arrays_pass_through_bit_identically(test_split):
    dataset, images = test_split
    spec = builtin(dataset)
    today = as_images(images)[:, 0]
    assert np.array_equal(bits(as_images(images / np.float32(255))[:, 0]), bits(today))
    for form in (images, images.astype(np.float32) / np.float32(255)):
        prepared = [prepare(*grey_alpha(x), spec) for x in form]
        assert np.array_equal(bits(np.stack([p.image for p in prepared])), bits(today))
        assert not any(p.inverted or p.flags for p in prepared)
        assert all(p.passthrough and p.decided for p in prepared)
        batch, inverted, _, ink = passthrough_batch(grey_alpha(form[0])[0][None], spec)
        assert not inverted.any() and ink[0] >= spec["ink"]["min_contrast"]
    batch, inverted, border, ink = passthrough_batch(images / np.float32(255), spec)
    assert np.array_equal(bits(batch), bits(today))
    assert not inverted.any() and (ink >= spec["ink"]["min_contrast"]).all()
    # The polarity evidence has a wide margin on the model's own data, not a lucky one.
    assert border.max() <= 0.1 < spec["polarity"]["threshold"]


def test_idx_file_and_embeddings_are_todays(test_split, data_dir):
    dataset, images = test_split
    spec = builtin(dataset)
    idx = find_file(get_spec(dataset), "test-images", data_dir)
    today = open_images(idx).read()
    batch = passthrough_batch(images / np.float32(255), spec)[0]
    assert np.array_equal(bits(batch[:, None]), bits(today))
    vae = VAE(REPO / "artifacts" / MODELS[dataset], threads=2)
    embedding = vae.embed(today, preprocess="none")
    # Through the API with the dataset's spec: the IDX path, the uint8 array, Keras layout.
    source = vae.open_images(idx, preprocess=spec)
    assert np.array_equal(bits(source.read()), bits(today))
    assert (source.reading.images, source.reading.inverted, source.reading.flagged) == (
        len(images),
        0,
        0,
    )
    for form in (idx, images, images[..., None]):
        assert np.array_equal(vae.embed(form, preprocess=spec), embedding)


def test_the_shipped_models_declare_their_datasets_procedure():
    for name in ("mnist-conv-z20", "mnist-mlp-z20", "mnist-conv-z2", "fashion-mnist-conv-z20"):
        vae = VAE(REPO / "artifacts" / name, threads=1)
        dataset = vae.info["dataset"]["name"]
        assert vae.info["format_version"] == 2 and vae.preprocess == builtin(dataset), name


@pytest.mark.slow
def test_png_files_pass_through_bit_identically(test_split, tmp_path):
    dataset, images = test_split
    spec = builtin(dataset)
    for i, x in enumerate(images):
        Image.fromarray(x).save(tmp_path / f"{i:05d}.png")
    today = open_images(tmp_path).read()[:, 0]
    prepared = []
    for i in range(len(images)):
        with Image.open(tmp_path / f"{i:05d}.png") as image:
            prepared.append(prepare(*decode(image, spec["reduce"]["max_side"]), spec))
    assert np.array_equal(bits(np.stack([p.image for p in prepared])), bits(today))
    assert not any(p.inverted or p.flags for p in prepared)
    vae = VAE(REPO / "artifacts" / MODELS[dataset], threads=2)
    source = vae.open_images(tmp_path, preprocess=spec)
    assert np.array_equal(bits(source.read()[:, 0]), bits(today))
    assert source.reading.inverted == 0 and source.reading.flagged == 0
    assert np.array_equal(
        vae.embed(tmp_path, preprocess=spec), vae.embed(today[:, None], preprocess="none")
    )


def test_inverted_dataset_images_are_recognised(test_split):
    """The rule leans towards the model's convention: every inverted MNIST digit and all
    but a few inverted Fashion items (those whose border is mostly garment) are seen as
    dark-on-light and come back as the original to within float rounding."""
    dataset, images = test_split
    spec = builtin(dataset)
    out, inverted, _, _ = passthrough_batch((255 - images) / np.float32(255), spec)
    missed = int((~inverted).sum())
    assert missed == 0 if dataset == "mnist" else missed <= 20
    np.testing.assert_allclose(out[inverted], images[inverted] / 255.0, atol=1e-6)


# ---- scans ----------------------------------------------------------------------------------

SCAN_DIGITS = 100
INDEX_SIZE = 20000


@pytest.fixture(scope="module")
def mnist_knn(data_dir):
    vae = VAE(REPO / "artifacts" / "mnist-conv-z20", threads=2)
    train, train_labels = load_split(data_dir, "mnist", "train")
    index = vae.embed(train[:INDEX_SIZE])
    test, test_labels = load_split(data_dir, "mnist", "test")
    pick = np.random.default_rng(0).permutation(len(test))[:SCAN_DIGITS]

    def accuracy(images: np.ndarray) -> float:
        z = vae.embed(images, preprocess="none")  # model inputs already
        return 100.0 * knn_accuracy(index, train_labels[:INDEX_SIZE], z, test_labels[pick])

    return test[pick], accuracy, vae


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
def test_scans_classify_nearly_as_well_as_the_digits(mnist_knn, kind):
    digits, accuracy, vae = mnist_knn
    spec = builtin("mnist")
    files = scans(digits, kind, seed=1)
    prepared = []
    for data in files:
        with Image.open(io.BytesIO(data)) as image:
            prepared.append(prepare(*decode(image, spec["reduce"]["max_side"]), spec))
    assert all(p.inverted == kind.dark_ink and not p.flags for p in prepared)
    x, infos = vae.prepare(files, preprocess=spec)  # the API: the same
    assert np.array_equal(x[:, 0], np.stack([p.image for p in prepared]))
    assert [i["inverted"] for i in infos] == [kind.dark_ink] * len(files)
    original = accuracy(digits)
    default = accuracy(np.stack([p.image for p in prepared]))
    assert default >= original - 5.0, (kind.name, original, default)
    # Today's behaviour (the whole page shrunk to 28x28) is far off, invert or not: the
    # scans are a real test of the preprocessing.
    for invert in (False, True):
        today = np.concatenate([as_images(Image.open(io.BytesIO(d)), invert) for d in files])
        assert accuracy(today) <= default - 30.0, (kind.name, invert)
