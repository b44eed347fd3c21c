"""Torch-free evaluation of a model directory on MNIST-format test data.

Figures: the test negative ELBO (one sample of z per image, the quantity pytorch/examples'
VAE prints), optionally the importance-weighted bound with k samples, the k-nearest-
neighbour label accuracy of the embeddings (train set as the index, test set as queries),
and optionally the out-of-distribution AUROC of ``score`` against another dataset, with
that of ``ood_score`` (and its test-set rates at the 5% threshold) when the model is
calibrated. :func:`held_out_figures` measures the same on images a training run held out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vae_format.datasets import read_split

from .vae import VAE

FPR_AT = 0.05  # the false-positive rate whose threshold evaluate reports


def load_split(data_dir: Path, dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 images (N, 28, 28), uint8 labels (N,)) of one split, every file checked
    (structure and published md5) as training checks it."""
    loaded = read_split(dataset, split, data_dir)
    return loaded.images, loaded.labels


def knn_accuracy(
    index: np.ndarray,
    index_labels: np.ndarray,
    queries: np.ndarray,
    query_labels: np.ndarray,
    k: int = 5,
    chunk: int = 512,
) -> float:
    """Majority vote of the k nearest (Euclidean) index points; ties go to the nearest."""
    index = index.astype(np.float32)
    sq_index = (index**2).sum(1)
    correct = 0
    for start in range(0, len(queries), chunk):
        q = queries[start : start + chunk].astype(np.float32)
        d = sq_index[None, :] - 2.0 * q @ index.T  # + |q|^2, constant per row
        near = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(d, near, 1).argsort(1)
        near = np.take_along_axis(near, order, 1)  # nearest first
        votes = index_labels[near]
        for row, want in zip(votes, query_labels[start : start + chunk], strict=True):
            counts = np.bincount(row, minlength=10)
            best = np.flatnonzero(counts == counts.max())
            label = best[0] if len(best) == 1 else next(v for v in row if v in best)
            correct += int(label == want)
    return correct / len(queries)


def auroc(negatives: np.ndarray, positives: np.ndarray) -> float:
    """P(positive score > negative score), ties counted half (Mann-Whitney U)."""
    neg = np.sort(np.asarray(negatives, np.float64))
    pos = np.asarray(positives, np.float64)
    below = np.searchsorted(neg, pos, "left")
    ties = np.searchsorted(neg, pos, "right") - below
    return float((below + 0.5 * ties).sum() / (len(neg) * len(pos)))


def _as_float(images: np.ndarray) -> np.ndarray:
    return (images.astype(np.float32) / 255.0)[:, None]


def ood_score_figures(vae: VAE, inside: np.ndarray, outside: np.ndarray) -> dict[str, float]:
    """AUROC of ``ood_score`` (``outside`` as positives) and, at the threshold calibrated
    for FPR_AT, the rate of ``inside`` and ``outside`` images flagged."""
    s_in, s_out = vae.ood_score(inside), vae.ood_score(outside)
    limit = vae.ood_threshold(FPR_AT)
    return {
        "ood_score_auroc": auroc(s_in, s_out),
        "ood_score_fpr_at": FPR_AT,
        "ood_score_test_fpr": float(np.mean(s_in > limit)),
        "ood_score_test_tpr": float(np.mean(s_out > limit)),
    }


def one_sample_nelbo(vae: VAE, x: np.ndarray, seed: int) -> np.ndarray:
    """Per-image negative ELBO with one explicit draw of eps from ``default_rng(seed)``, so
    the figure can be reproduced outside (e.g. in torch)."""
    eps = np.random.default_rng(seed).standard_normal((len(x), vae.latent_dim), np.float32)
    return vae.score(x, eps=eps)


def held_out_figures(
    vae: VAE,
    images: np.ndarray,
    labels: np.ndarray,
    index_images: np.ndarray,
    index_labels: np.ndarray,
    *,
    seed: int = 0,
    neighbours: int = 5,
) -> dict[str, Any]:
    """Negative ELBO (one draw of eps from ``seed``) and k-NN accuracy of uint8 ``images``
    (N, 28, 28) kept out of training, with the images trained on as the k-NN index: the
    figures a training recipe is chosen by."""
    x = _as_float(images)
    out: dict[str, Any] = {"images": len(x), "seed": seed}
    out["nelbo"] = float(one_sample_nelbo(vae, x, seed).mean())
    if neighbours:
        out["knn_k"] = neighbours
        index = vae.embed(_as_float(index_images))
        out["knn_accuracy"] = knn_accuracy(index, index_labels, vae.embed(x), labels, neighbours)
    return out


def evaluate(
    vae: VAE,
    data_dir: str | Path,
    dataset: str = "mnist",
    *,
    k: int = 1,
    seed: int = 0,
    neighbours: int = 5,
    ood_dataset: str | None = None,
    limit: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``vae`` on the test split of ``dataset`` (see the module docstring)."""
    t0 = time.perf_counter()
    data_dir = Path(data_dir)
    say = progress or (lambda _msg: None)
    test_images, test_labels = load_split(data_dir, dataset, "test")
    test_x = _as_float(test_images[:limit])
    test_labels = test_labels[:limit]
    say("scoring the test set")
    scores = one_sample_nelbo(vae, test_x, seed)
    out: dict[str, Any] = {
        "dataset": dataset,
        "test_images": len(test_x),
        "seed": seed,
        "test_nelbo": float(scores.mean()),
    }
    if k > 1:
        say(f"importance-weighted bound, k={k}")
        out["iw_k"] = k
        out["test_iw_bound"] = float(vae.score(test_x, k=k, seed=seed).mean())
    if neighbours:
        say("embedding the training set")
        train_images, train_labels = load_split(data_dir, dataset, "train")
        index = vae.embed(_as_float(train_images))
        queries = vae.embed(test_x)
        say(f"{neighbours}-nearest-neighbour accuracy")
        out["knn_k"] = neighbours
        out["knn_accuracy"] = knn_accuracy(index, train_labels, queries, test_labels, neighbours)
    if ood_dataset:
        say(f"out-of-distribution scores on {ood_dataset}")
        ood_x = _as_float(load_split(data_dir, ood_dataset, "test")[0][:limit])
        out["ood_dataset"] = ood_dataset
        out["ood_auroc"] = auroc(scores, one_sample_nelbo(vae, ood_x, seed + 1))
        if vae.ood_calibration is not None:
            say("out-of-distribution score (docs/ood.md)")
            out.update(ood_score_figures(vae, test_x, ood_x))
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out
