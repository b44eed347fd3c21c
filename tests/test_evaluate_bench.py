"""vae-run evaluate (against PyTorch and brute force) and the two benchmark commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_export import ExportError
from vae_export.cli import _print_quality
from vae_export.cli import main as export_main
from vae_export.held_out import validation_quality
from vae_export.quality import quality
from vae_format.idx import read_idx_header
from vae_runtime import VAE
from vae_runtime.bench import format_report, run_bench, write_synthetic_idx
from vae_runtime.cli import main as run_main
from vae_runtime.evaluate import auroc, evaluate, knn_accuracy, load_split
from vae_train.checkpoint import load_checkpoint
from vae_train.losses import negative_elbo
from vae_train.models import reparameterize

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.parent for p in (REPO / "artifacts").glob("*/manifest.json"))


def brute_knn(index, labels, queries, qlabels, k):
    correct = 0
    for q, want in zip(queries, qlabels, strict=True):
        d = ((index - q) ** 2).sum(1)
        near = np.argsort(d, kind="stable")[:k]
        votes = labels[near]
        counts = np.bincount(votes, minlength=10)
        best = set(np.flatnonzero(counts == counts.max()))
        label = next(v for v in votes if v in best)
        correct += label == want
    return correct / len(queries)


def test_knn_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    index = rng.standard_normal((300, 4)).astype(np.float32)
    labels = rng.integers(0, 10, 300)
    queries = rng.standard_normal((90, 4)).astype(np.float32)
    qlabels = rng.integers(0, 10, 90)
    for k in (1, 3, 5):
        got = knn_accuracy(index, labels, queries, qlabels, k, chunk=17)
        assert got == pytest.approx(brute_knn(index, labels, queries, qlabels, k))
    # Well-separated clusters are classified perfectly.
    centers = np.eye(10, 4 * 10, dtype=np.float32) * 50
    lab = np.repeat(np.arange(10), 20)
    pts = centers[lab] + rng.standard_normal((200, 40)).astype(np.float32)
    assert knn_accuracy(pts, lab, pts[::7] + 0.1, lab[::7], 5) == 1.0


def test_auroc_matches_pairwise_definition() -> None:
    rng = np.random.default_rng(1)
    neg = np.round(rng.standard_normal(200), 1)  # rounding makes ties
    pos = np.round(rng.standard_normal(150) + 1.0, 1)
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert auroc(neg, pos) == pytest.approx(pairs)
    assert auroc(np.zeros(5), np.ones(5)) == 1.0
    assert auroc(np.ones(5), np.zeros(5)) == 0.0


def test_evaluate_agrees_with_pytorch(model_dir_factory, data_dir: Path) -> None:
    model_dir = model_dir_factory("conv", 2)
    vae = VAE(model_dir)
    result = evaluate(vae, data_dir, k=1, seed=5, neighbours=0, limit=300)
    # The same figure computed by the training code in torch, from the directory's
    # checkpoints, with the same eps (evaluate draws it from default_rng(seed)).
    ckpt = load_checkpoint(model_dir / "checkpoints")
    images, _ = load_split(data_dir, "mnist", "test")
    x = torch.from_numpy(images[:300].astype(np.float32) / 255.0).unsqueeze(1)
    eps = np.random.default_rng(5).standard_normal((300, 2), np.float32)
    with torch.no_grad():
        mu, logvar = ckpt.encoder(x)
        x_hat = ckpt.decoder(reparameterize(mu, logvar, torch.from_numpy(eps)))
        expected = negative_elbo(x_hat, x, mu, logvar).loss.mean().item()
    assert result["test_images"] == 300
    assert abs(result["test_nelbo"] - expected) <= 0.05
    assert abs(result["test_nelbo"] - expected) / expected <= 1e-4


def test_evaluate_cli_reports_every_figure(model_dir_factory, data_dir: Path, capsys) -> None:
    model_dir = model_dir_factory("mlp", 2)
    flags = ["--k", "3", "--limit", "200", "--ood-dataset", "fashion-mnist", "--json"]
    code = run_main(["evaluate", str(model_dir), "--data-dir", str(data_dir), *flags])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["test_images"] == 200
    # The IW bound with k samples is tighter on average than the one-sample ELBO.
    assert result["test_iw_bound"] < result["test_nelbo"] + 1.0
    assert 0.0 <= result["knn_accuracy"] <= 1.0 and 0.0 <= result["ood_auroc"] <= 1.0


def test_evaluate_cli_refuses_missing_data(model_dir_factory, tmp_path: Path, capsys) -> None:
    code = run_main(["evaluate", str(model_dir_factory("mlp", 2)), "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "not found" in err[0]


def test_validation_figures_hold_the_queries_out_of_the_index(
    model_dir_factory, data_dir: Path
) -> None:
    """The k-NN index is the run's training images only: were the validation images in it,
    each would find itself and 1-NN would score 100%."""
    vae = VAE(model_dir_factory("mlp", 2))
    settings = {"dataset": "mnist", "val_size": 300, "seed": 3, "limit_train": 2000}
    got = validation_quality(vae, settings, data_dir, neighbours=1)
    images, labels = load_split(data_dir, "mnist", "train")
    images, labels = images[:2000], labels[:2000]
    held = np.sort(np.random.default_rng(3).permutation(2000)[:300])  # vae-train's split
    kept = np.setdiff1d(np.arange(2000), held)
    x = lambda idx: images[idx, None].astype(np.float32) / 255.0  # noqa: E731
    assert got is not None and got["images"] == 300 and "--seed 3" in got["split"]
    want = knn_accuracy(vae.embed(x(kept)), labels[kept], vae.embed(x(held)), labels[held], 1)
    assert got["knn_accuracy"] == want
    assert (
        knn_accuracy(vae.embed(x(np.arange(2000))), labels, vae.embed(x(held)), labels[held], 1)
        == 1.0
    )
    assert want < 1.0
    eps = np.random.default_rng(0).standard_normal((300, 2), np.float32)
    assert got["nelbo"] == pytest.approx(float(vae.score(x(held), eps=eps).mean()), rel=1e-6)


def test_quality_has_validation_figures_only_for_a_run_that_held_images_out(
    model_dir_factory, data_dir: Path
) -> None:
    vae = VAE(model_dir_factory("mlp", 2))
    plain = {"dataset": "mnist", "seed": 1, "limit_train": 1000}
    assert "validation" not in quality(vae, plain, data_dir, k=1)
    with_val = quality(vae, {**plain, "val_size": 200}, data_dir, k=1)
    assert with_val["validation"]["images"] == 200
    with pytest.raises(ExportError, match="seed is not recorded"):
        validation_quality(vae, {"dataset": "mnist", "val_size": 200}, data_dir)


def test_vae_export_evaluate_records_validation_figures(capsys, tmp_path, data_dir, tree_bytes):
    """`vae-export evaluate` rewrites a shipped directory's quality section whole (or, on bad
    input, leaves it untouched): the test figures as recorded at export, plus the figures on
    the validation split its run held out."""
    target = tmp_path / "mlp"
    shutil.copytree(REPO / "artifacts" / "mnist-mlp-z20", target)
    before, recorded = tree_bytes(target), VAE(target).manifest["quality"]
    assert export_main(["evaluate", str(target), "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vae-export: error: ") and "nowhere" in err[0]
    assert tree_bytes(target) == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlp"]
    assert export_main(["evaluate", str(target), "--data-dir", str(data_dir), "--k", "2"]) == 0
    out = capsys.readouterr().out
    assert "validation (5000 images held out in training)" in out
    got = VAE(target).manifest["quality"]
    assert got["test_nelbo"] == pytest.approx(recorded["test_nelbo"], abs=1e-6)
    assert got["knn_accuracy"] == recorded["knn_accuracy"] and got["iw_k"] == 2
    assert got["validation"]["images"] == 5000 and "--seed 1" in got["validation"]["split"]
    # A trained model's figures (mismatched images and labels would give about 10%).
    assert got["validation"]["knn_accuracy"] > 0.95
    assert abs(got["validation"]["nelbo"] - got["test_nelbo"]) < 2.0


def test_export_prints_the_quality_it_recorded(capsys) -> None:
    q = {"test_nelbo": 95.5, "knn_accuracy": 0.97, "ood_dataset": "fashion-mnist"}
    q["ood_auroc"] = 0.99
    _print_quality({**q, "validation": {"images": 5000, "nelbo": 93.3, "knn_accuracy": 0.981}})
    _print_quality(q)  # --evaluate 1: no IW bound, no validation split
    out = capsys.readouterr().out.splitlines()
    assert "test negative ELBO 95.500, 5-NN 97.00%" in out[0] and "IW" not in out[0]
    assert (
        out[1] == "validation (5000 images held out in training): negative ELBO 93.300, 5-NN 98.10%"
    )
    assert len(out) == 3


def test_synthetic_idx_is_valid(tmp_path: Path) -> None:
    write_synthetic_idx(tmp_path / "x.idx", 2500, chunk=1000)
    header = read_idx_header(tmp_path / "x.idx")
    assert (header.count, header.rows, header.cols) == (2500, 28, 28)


@pytest.mark.slow
def test_runtime_bench_report(model_dir_factory) -> None:
    model_dir = str(model_dir_factory("conv", 20))
    report = run_bench(
        model_dir, threads=1, batch_sizes=(1, 8), budget_s=0.05, cold_runs=1, stream=1500
    )
    rows = {(r["op"], r["batch"]): r for r in report["throughput"]}
    assert set(rows) == {(op, b) for op in ("encode", "decode", "generate") for b in (1, 8)}
    flops = VAE(model_dir).manifest["graphs"]["encoder"]["flops_per_image"]
    r = rows[("encode", 8)]
    assert r["gflops"] == pytest.approx(flops * 8 / (r["p50_ms"] / 1e3) / 1e9)
    assert r["p99_ms"] >= r["p50_ms"] > 0
    assert report["streaming"]["output_shape"] == [1500, 20]
    assert report["cold_start"]["peak_rss_mb"] > 0
    text = format_report(report)
    assert "cold start" in text and "streaming embed" in text and "GFLOP/s" in text


@pytest.mark.slow
def test_export_bench_compares_torch_and_runtime(model_dir_factory, capsys) -> None:
    model_dir = model_dir_factory("mlp", 2)
    quick = ["--batch-sizes", "4", "--rounds", "1", "--threads", "1"]
    code = export_main(["bench", str(model_dir), *quick, "--json"])
    assert code == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["op"] for r in rows} == {"encode", "decode"}
    for r in rows:
        assert r["ratio"] == pytest.approx(r["runtime_per_s"] / r["torch_per_s"])
    assert export_main(["bench", str(model_dir), "--variant", "int8", *quick]) == 2
    assert "no variant 'int8'" in capsys.readouterr().err


@pytest.mark.slow
def test_export_bench_runs_a_variant_and_prints_the_gemm_peak(capsys) -> None:
    model_dir = REPO / "artifacts" / "mnist-mlp-z20"
    quick = ["--variant", "int8", "--batch-sizes", "4", "--rounds", "1", "--threads", "1"]
    assert export_main(["bench", str(model_dir), *quick]) == 0
    out = capsys.readouterr().out
    assert "vae_runtime (int8 variant)" in out
    # The peak is the engines' own MatMul, torch.mm's rate beside it.
    peak = float(out.split("MatMul in ONNX Runtime): ")[1].split()[0])
    torch_mm = float(out.split("torch.mm reaches ")[1].split()[0])
    assert peak > 0 and torch_mm > 0
    assert [line.split()[0] for line in out.splitlines()[-2:]] == ["encode", "decode"]


COMPARE = ["--batch-sizes", "1,4", "--rounds", "1", "--seconds", "0.02", "--json"]


@pytest.mark.slow
def test_runtime_bench_compare_runs_every_contender(data_dir: Path, capsys) -> None:
    """vae-run bench --compare: every backend x graphs x precision of the model, each batch
    size and graph, GFLOP from the model's FLOP count, and each one's ELBO change."""
    from vae_runtime.bench_compare import format_report
    from vae_runtime.contenders import engine_contenders

    model_dir = REPO / "artifacts" / "mnist-mlp-z20"
    args = ["bench", "--compare", "--model", str(model_dir), "--data-dir", str(data_dir)]
    assert run_main([*args, *COMPARE, "--static-batches", "0,8", "--precision", "f32"]) == 0
    report = json.loads(capsys.readouterr().out)
    manifest = VAE(model_dir).manifest
    labels = [c.label for c in engine_contenders(manifest_of(model_dir), ["f32"], [0, 8])]
    assert "onnxruntime int8" in labels and "openvino fp32 (dynamic shapes)" in labels
    assert not any("bf16" in label for label in labels)  # --precision f32 only
    rows = {(r["contender"], r["op"], r["batch"]): r for r in report["rows"]}
    assert set(rows) == {(c, op, b) for c in labels for op in ("encoder", "decoder")
                         for b in (1, 4)}  # fmt: skip
    r = rows[("onnxruntime int8", "decoder", 4)]
    flops = manifest["graphs"]["decoder"]["flops_per_image"]
    assert r["gflop_per_cpu_s"] == pytest.approx(r["images_per_cpu_s"] * flops / 1e9)
    assert report["peaks"]["f32"] > 0
    changes = report["nelbo_change"]
    assert set(changes) == set(labels) and changes["onnxruntime fp32"] == 0
    recorded = manifest["variants"]["int8"]["quality"]["change"]
    assert changes["onnxruntime int8"] == pytest.approx(recorded, abs=0.05)  # other eps
    assert abs(changes["openvino fp32 (static shapes x8)"]) <= 1e-3
    text = format_report(report)
    assert "GEMM peak per CPU-second" in text and "onnxruntime int8" in text


def manifest_of(model_dir: Path):
    from vae_format import Manifest

    return Manifest.load(model_dir)


@pytest.mark.slow
def test_export_bench_compare_adds_torch_on_the_same_weights(data_dir: Path, capsys) -> None:
    model_dir = REPO / "artifacts" / "mnist-mlp-z20"
    args = ["bench", str(model_dir), "--compare", "--data-dir", str(data_dir)]
    assert export_main([*args, *COMPARE]) == 0
    report = json.loads(capsys.readouterr().out)
    labels = {r["contender"] for r in report["rows"]}
    assert {"torch fp32 (eager)", "torch bf16 (autocast, channels_last)"} <= labels
    assert "onnxruntime fp32" in labels
    changes = report["nelbo_change"]
    assert abs(changes["torch fp32 (eager)"]) <= 1e-3  # the same weights as the graphs
    assert 0 < abs(changes["torch bf16 (autocast, channels_last)"]) <= 0.5


def test_bench_compare_refuses_bad_lists(capsys) -> None:
    for bad, words in ((["--precision", "fp8"], "f32 and/or bf16"),
                       (["--static-batches", "-1"], "integers >= 0")):  # fmt: skip
        with pytest.raises(SystemExit) as exc:  # argparse's usage error
            run_main(["bench", "--compare", *bad])
        assert exc.value.code == 2 and words in capsys.readouterr().err
    assert run_main(["bench", "--precision", "f32,bf16", "--cold-start", "0"]) == 2
    assert "several only with --compare" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("model_dir", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_model_evaluation_agrees_with_pytorch(model_dir: Path, data_dir: Path) -> None:
    """vae-run evaluate's test negative ELBO on the whole test set, against the training
    code's loss in torch with the same eps: within 0.05 nats."""
    vae = VAE(model_dir)
    dataset = vae.manifest["dataset"]["name"]
    result = evaluate(vae, data_dir, dataset, k=1, seed=0, neighbours=0)
    ckpt = load_checkpoint(model_dir / "checkpoints")
    images, _ = load_split(data_dir, dataset, "test")
    eps = np.random.default_rng(0).standard_normal((len(images), vae.latent_dim), np.float32)
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(images), 2000):
            x = torch.from_numpy(images[i : i + 2000, None].astype(np.float32) / 255.0)
            mu, logvar = ckpt.encoder(x)
            z = reparameterize(mu, logvar, torch.from_numpy(eps[i : i + 2000]))
            total += negative_elbo(ckpt.decoder(z), x, mu, logvar).loss.double().sum().item()
    assert result["test_images"] == len(images)
    assert abs(result["test_nelbo"] - total / len(images)) <= 0.05
    recorded = vae.manifest.get("quality", {})
    if "test_nelbo" in recorded:  # what the manifest says is what the evaluator measures
        assert abs(recorded["test_nelbo"] - result["test_nelbo"]) <= 1e-6
