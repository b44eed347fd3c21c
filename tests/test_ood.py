"""The out-of-distribution score (docs/ood.md): its statistics against the likelihood they
come from, the ``ood`` section's check, the calibration round trip (calibrate -> manifest
-> runtime gives the same scores), the thresholds' false-positive rates on held-out
in-distribution images, both directions' AUROC on the shipped models, and the CLIs."""

from __future__ import annotations

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vae_format.datasets import read_split
from vae_format.errors import ModelFormatError
from vae_format.manifest import Manifest
from vae_format.ood import FPRS, check_ood_section
from vae_runtime import VAE, ood
from vae_runtime import likelihood as lik
from vae_runtime.errors import InputError
from vae_runtime.evaluate import auroc

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
# Images per dataset for the AUROC check: on the full test sets (10,000 each) the score
# reaches 0.995 (Fashion-MNIST model, MNIST as OOD) and 0.9999 (MNIST model); in 2,000
# random draws of 300 + 300 images the lowest AUROC was 0.987 and 0.9995.
SUBSET = 300
MIN_AUROC = 0.98
MISSING = r"no out-of-distribution calibration.*vae-export ood"


def rate_tolerance(fpr: float, n_threshold: int, n_measured: int) -> float:
    """Three standard errors of a rate measured on ``n_measured`` images with a threshold
    that was itself a quantile of ``n_threshold`` images (binomial, both)."""
    return 3 * math.sqrt(fpr * (1 - fpr) * (1 / n_threshold + 1 / n_measured))


@pytest.fixture(scope="module")
def mnist_vae() -> VAE:
    return VAE(ARTIFACTS / "mnist-conv-z20", threads=1)


@pytest.fixture(scope="module")
def fashion_vae() -> VAE:
    return VAE(ARTIFACTS / "fashion-mnist-conv-z20", threads=1)


@pytest.fixture(scope="module")
def test_sets(data_dir) -> dict[str, np.ndarray]:
    return {name: read_split(name, "test", data_dir).images for name in ("mnist", "fashion-mnist")}


@pytest.fixture()
def uncalibrated(tmp_path) -> Path:
    """A copy of the small shipped MLP model with its ``ood`` section removed."""
    target = tmp_path / "mlp"
    shutil.copytree(ARTIFACTS / "mnist-mlp-z20", target)
    doc = json.loads((target / "manifest.json").read_text())
    del doc["ood"]
    (target / "manifest.json").write_text(json.dumps(doc, indent=2))
    return target


# ---- the statistics -------------------------------------------------------------------------


def test_pixel_entropy_is_the_floor_of_the_bernoulli_likelihood() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((6, 1, 28, 28), dtype=np.float32)
    floor = ood.likelihood_floor(x, "bernoulli", None)
    # x_hat = x reaches the floor; any other decoder output is worse
    np.testing.assert_allclose(lik.reconstruction_nll(x, x), floor, rtol=1e-12)
    other = np.clip(x + rng.normal(0, 0.05, x.shape).astype(np.float32), 0.001, 0.999)
    assert (lik.reconstruction_nll(other, x) > floor).all()
    binary = (x > 0.5).astype(np.float32)
    assert (ood.pixel_entropy(binary) == 0).all()  # h(0) = h(1) = 0, not NaN
    half = np.full((1, 784), 0.5, np.float32)
    assert ood.pixel_entropy(half)[0] == pytest.approx(784 * math.log(2))


def test_gaussian_floor_is_its_normalising_constant() -> None:
    x = np.random.default_rng(1).random((3, 784), dtype=np.float32)
    np.testing.assert_allclose(
        ood.likelihood_floor(x, "gaussian", 0.1), lik.reconstruction_nll(x, x, "gaussian", 0.1)
    )


def test_zscores_use_the_spread_on_each_side() -> None:
    section = {
        "statistics": {
            "excess_nelbo": {"p10": 10.0, "p50": 20.0, "p90": 60.0},
            "pixel_entropy": {"p10": 40.0, "p50": 50.0, "p90": 55.0},
        }
    }
    stats = {"excess_nelbo": np.array([0.0, 100.0, 20.0]), "pixel_entropy": np.array([50.0] * 3)}
    z = ood.zscores(stats, section)
    np.testing.assert_allclose(z["excess_nelbo"], [2.0, 2.0, 0.0])
    stats["pixel_entropy"] = np.array([65.0, 30.0, 50.0])
    np.testing.assert_allclose(ood.score(stats, section), [3.0, 2.0, 0.0])


# ---- the section and its check ---------------------------------------------------------------


def _shipped_section() -> dict:
    return json.loads((ARTIFACTS / "mnist-conv-z20" / "manifest.json").read_text())["ood"]


def _set(section: dict, path: str, value) -> dict:
    out = copy.deepcopy(section)
    *keys, last = path.split(".")
    node = out
    for key in keys:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is _DELETE:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return out


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("version", "1", "version"),
        ("method", None, "method"),
        ("statistics.excess_nelbo", _DELETE, "statistics must be an object with exactly"),
        ("statistics.pixel_entropy.p90", float("nan"), "statistics.pixel_entropy.p90"),
        ("statistics.excess_nelbo.p10", 1e9, "p10 < p50 < p90"),
        ("thresholds", [], "thresholds must be a non-empty list"),
        ("thresholds.0.fpr", 1.5, "thresholds[0].fpr"),
        ("thresholds.1.threshold", -1.0, "thresholds[1].threshold"),
        ("thresholds.0.threshold", 0.5, "thresholds[1]: a larger fpr cannot need a higher"),
        ("thresholds.2.measured_fpr", _DELETE, "thresholds[2] lacks measured_fpr"),
        ("thresholds.0.tpr", 2, "thresholds[0].tpr"),
        ("holdout.seen_in_training", "no", "holdout.seen_in_training"),
        ("fit.images", 0, "fit.images"),
        ("reference.images", True, "reference.images"),
    ],
)
def test_a_malformed_section_is_refused_in_one_line(path, value, words) -> None:
    broken = _set(_shipped_section(), path, value)
    with pytest.raises(ModelFormatError) as info:
        check_ood_section(broken, "m/manifest.json")
    message = str(info.value)
    assert message.startswith("m/manifest.json: ood calibration: ") and "\n" not in message
    assert words in message


def test_the_manifest_reader_checks_the_section() -> None:
    raw = json.loads((ARTIFACTS / "mnist-conv-z20" / "manifest.json").read_text())
    Manifest.from_dict(raw, ARTIFACTS / "mnist-conv-z20")  # the shipped one is accepted
    raw["ood"] = _set(raw["ood"], "statistics.pixel_entropy", "x")
    with pytest.raises(ModelFormatError, match=r"manifest\.json: ood calibration"):
        Manifest.from_dict(raw, ARTIFACTS / "mnist-conv-z20")


def test_an_unknown_method_loads_but_is_not_scored(uncalibrated) -> None:
    doc = json.loads((uncalibrated / "manifest.json").read_text())
    doc["ood"] = {"method": "from-the-future", "version": 3, "anything": [1, 2]}
    (uncalibrated / "manifest.json").write_text(json.dumps(doc))
    vae = VAE(uncalibrated, threads=1)  # the rest of the model still works
    with pytest.raises(ModelFormatError, match="'from-the-future' version 3 is not known"):
        vae.ood_score(np.zeros((1, 28, 28), np.uint8))


def test_a_model_without_calibration_says_so(uncalibrated) -> None:
    vae = VAE(uncalibrated, threads=1)
    assert vae.ood_calibration is None
    images = np.zeros((2, 28, 28), np.uint8)
    assert set(vae.ood_statistics(images)) == {"excess_nelbo", "pixel_entropy"}
    for call in (vae.ood_score, vae.is_ood):
        with pytest.raises(ModelFormatError, match=MISSING):
            call(images)


def test_only_calibrated_rates_have_thresholds(mnist_vae) -> None:
    assert [mnist_vae.ood_threshold(f) for f in FPRS] == sorted(
        (mnist_vae.ood_threshold(f) for f in FPRS), reverse=True
    )
    with pytest.raises(InputError, match=r"fpr=0\.03 is not calibrated.*0\.01, 0\.02, 0\.05, 0\.1"):
        mnist_vae.is_ood(np.zeros((1, 28, 28), np.uint8), fpr=0.03)
    with pytest.raises(InputError, match="fpr must be a number"):
        mnist_vae.ood_threshold("0.05")  # type: ignore[arg-type]


# ---- calibration: round trip and false-positive rates -----------------------------------------


def test_calibration_round_trip_gives_identical_scores(tmp_path, data_dir, test_sets) -> None:
    """export's calibration -> manifest.json -> a fresh runtime: the same scores, bit for bit,
    as the record computed in memory."""
    from vae_export.ood_calibration import add_ood_calibration

    target = tmp_path / "mlp"
    shutil.copytree(ARTIFACTS / "mnist-mlp-z20", target)
    section = add_ood_calibration(target, data_dir, command="test")
    assert section["holdout"]["seen_in_training"] is False  # the run's validation split
    assert section["holdout"]["images"] == 5000 and section["fit"]["images"] == 10_000
    images = np.concatenate([test_sets["mnist"][:200], test_sets["fashion-mnist"][:200]])
    stats = VAE(ARTIFACTS / "mnist-mlp-z20", threads=1).ood_statistics(images)
    expected = ood.score(stats, section)
    reloaded = VAE(target, threads=1)
    assert reloaded.ood_calibration == json.loads(json.dumps(section))
    assert np.array_equal(reloaded.ood_score(images), expected)
    held = section["holdout"]
    for row in section["thresholds"]:  # measured on the half that did not set it
        bound = rate_tolerance(row["fpr"], held["threshold_images"], held["measured_images"])
        assert abs(row["measured_fpr"] - row["fpr"]) <= bound, row
        assert row["tpr"] > 0.95  # Fashion-MNIST training images against an MNIST model


def _synthetic_stats(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"excess_nelbo": rng.gamma(4.0, 10.0, n), "pixel_entropy": rng.normal(50, 10, n)}


def test_calibration_keeps_the_rates_its_holdout_can_measure() -> None:
    info = {"dataset": "d", "split": "train", "images": 1, "seen_in_training": False}
    kwargs = {"fit_info": info, "holdout_info": info}
    fit = _synthetic_stats(4000, 0)
    # 150 images per half: 5 expected false positives need fpr >= 1/30
    section = ood.calibrate(fit, _synthetic_stats(300, 1), **kwargs)
    assert [row["fpr"] for row in section["thresholds"]] == [0.05, 0.1]
    check_ood_section(section, "synthetic")
    with pytest.raises(InputError, match=r"40 held-out images are too few.*--no-ood"):
        ood.calibrate(fit, _synthetic_stats(40, 2), **kwargs)
    flat = {**fit, "pixel_entropy": np.zeros(4000)}  # a blank training set
    with pytest.raises(InputError, match="pixel_entropy barely varies"):
        ood.calibrate(flat, _synthetic_stats(300, 1), **kwargs)


@pytest.mark.parametrize(
    ("model", "dataset"), [("mnist-conv-z20", "mnist"), ("fashion-mnist-conv-z20", "fashion-mnist")]
)
def test_thresholds_hold_their_rate_on_unseen_images(model, dataset, test_sets) -> None:
    """Test images (never trained on, never calibrated on) flagged at each calibrated rate:
    within a few points of the rate asked for."""
    vae = VAE(ARTIFACTS / model, threads=1)
    scores = vae.ood_score(test_sets[dataset][:3000])
    n_threshold = vae.ood_calibration["holdout"]["threshold_images"]
    for fpr in FPRS:
        flagged = float(np.mean(scores > vae.ood_threshold(fpr)))
        assert abs(flagged - fpr) <= rate_tolerance(fpr, n_threshold, len(scores)), (fpr, flagged)


# ---- what it detects --------------------------------------------------------------------------


def test_both_directions_above_the_bound(mnist_vae, fashion_vae, test_sets) -> None:
    mnist, fashion = test_sets["mnist"][:SUBSET], test_sets["fashion-mnist"][:SUBSET]
    assert auroc(mnist_vae.ood_score(mnist), mnist_vae.ood_score(fashion)) >= MIN_AUROC
    assert auroc(fashion_vae.ood_score(fashion), fashion_vae.ood_score(mnist)) >= MIN_AUROC
    # the failure it fixes: the likelihood ranks MNIST digits as *more* Fashion-like
    assert auroc(fashion_vae.score(fashion, seed=0), fashion_vae.score(mnist, seed=0)) < 0.6


def test_blank_canvases_and_noise_are_flagged(mnist_vae, fashion_vae) -> None:
    """A blank image is *more* likely than any digit under the likelihood; the two-sided
    pixel-entropy statistic flags it, as it flags noise."""
    rng = np.random.default_rng(3)
    probes = {
        "black": np.zeros((4, 28, 28), np.uint8),
        "white": np.full((4, 28, 28), 255, np.uint8),
        "noise": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
    }
    for vae in (mnist_vae, fashion_vae):
        for name, images in probes.items():
            assert vae.is_ood(images, fpr=0.05).all(), (vae, name)


# ---- command lines ----------------------------------------------------------------------------


def test_vae_run_score_ood(capsys, mnist_vae, test_sets, tmp_path, uncalibrated) -> None:
    from vae_runtime.cli import main

    images = np.concatenate([test_sets["mnist"][:40], test_sets["fashion-mnist"][:40]])
    np.save(tmp_path / "x.npy", images)
    model = ARTIFACTS / "mnist-conv-z20"
    argv = ["score", tmp_path / "x.npy", "--model", model, "--ood", "--out", tmp_path / "s.npy"]
    assert main([str(a) for a in argv]) == 0
    out = capsys.readouterr().out
    scores = np.load(tmp_path / "s.npy")
    np.testing.assert_allclose(scores, mnist_vae.ood_score(images), rtol=1e-12)
    flagged = int((scores > mnist_vae.ood_threshold(0.05)).sum())
    assert f"out of distribution: {flagged} of 80 images" in out and flagged >= 40
    for extra, words in [
        (["--fpr", "0.03"], "fpr=0.03 is not calibrated"),
        (["--k", "5"], "--k is for the likelihood"),
        (["--model", uncalibrated], "no out-of-distribution calibration"),
    ]:
        args = ["score", tmp_path / "x.npy", "--model", model, "--ood", *extra]
        assert main([str(a) for a in args]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("vae-run: error: ") and words in err[0]
    assert main(["score", str(tmp_path / "x.npy"), "--model", str(model), "--fpr", "0.05"]) == 2
    assert "--fpr goes with --ood" in capsys.readouterr().err


def test_vae_run_evaluate_reports_both_aurocs(capsys, data_dir) -> None:
    from vae_runtime.cli import main

    argv = ["evaluate", str(ARTIFACTS / "fashion-mnist-conv-z20"), "--data-dir", str(data_dir)]
    argv += ["--dataset", "fashion-mnist", "--ood-dataset", "mnist", "--limit", "300"]
    assert main([*argv, "--neighbours", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ood_auroc"] < 0.6 and result["ood_score_auroc"] >= MIN_AUROC
    assert result["ood_score_fpr_at"] == 0.05 and 0 <= result["ood_score_test_fpr"] < 0.15
    assert main([*argv, "--neighbours", "0"]) == 0
    assert "of the OOD score:" in capsys.readouterr().out


def test_vae_export_ood_changes_whole_or_not_at_all(capsys, tmp_path, data_dir, tree_bytes):
    from vae_export.cli import main

    target = tmp_path / "mlp"
    shutil.copytree(ARTIFACTS / "mnist-mlp-z20", target)
    before = tree_bytes(target)
    assert main(["ood", str(target), "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-export: error: ") and "nowhere" in err[0]
    assert tree_bytes(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlp"]
    assert main(["ood", str(target), "--data-dir", str(data_dir)]) == 0
    assert "thresholds at FPR 0.01" in capsys.readouterr().out
    assert VAE(target).ood_calibration["command"].startswith("vae-export ood ")


def test_export_calibrates_and_says_what_it_held_out(model_dir_factory) -> None:
    """A fresh export carries the section; a run without a validation split is calibrated
    on training images it saw, and the section says so."""
    section = Manifest.load(model_dir_factory("mlp", 2)).section("ood")
    check_ood_section(section, "fresh export")
    assert section["holdout"]["seen_in_training"] is True
    assert section["fit"]["seen_in_training"] is True


def test_calibration_imports_without_torch() -> None:
    code = (
        "import sys, vae_export.ood_calibration\n"
        "print(sorted(m for m in ('torch', 'onnx', 'vae_train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
