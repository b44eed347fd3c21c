"""An engine's parity with the reference (ONNX Runtime on the fp32 graphs), measured like a
variant's: max abs of mu, logvar and x_hat, and the change in mean test negative ELBO.

Budgets (docs/performance.md): an engine at f32 must match the reference to F32_MAX_ABS;
at bf16 it may move the test negative ELBO by at most BF16_MAX_NELBO_CHANGE nats per image
(int8 variants keep their own 1-nat budget, set at export).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from vae_format import Manifest

from . import likelihood as lik
from .engines import Engine, GraphRunner, create_engine, load_graph
from .sampling import clamp_logvar, reparameterize

F32_MAX_ABS = 1e-4
BF16_MAX_NELBO_CHANGE = 0.5


def load_runners(engine: Engine, manifest: Manifest, variant: str | None = None
                 ) -> dict[str, GraphRunner]:  # fmt: skip
    """role -> the engine's runner for the model's (variant's) verified, policy-held graphs."""
    return {role: load_graph(engine, manifest, role, variant) for role in ("encoder", "decoder")}


def reference_runners(manifest: Manifest, threads: int = 1) -> dict[str, GraphRunner]:
    """ONNX Runtime on the CPU, the fp32 graphs: what every engine is compared with."""
    engine = create_engine("onnxruntime", {"threads": threads, "spinning": False})
    return load_runners(engine, manifest)


def mean_nelbo(runners: Mapping[str, GraphRunner], x: np.ndarray, eps: np.ndarray,
               manifest: Manifest, chunk: int = 500) -> float:  # fmt: skip
    """Mean negative ELBO (k=1, noise ``eps``) of images ``x`` through two runners."""
    total = 0.0
    for i in range(0, len(x), chunk):
        xs = x[i : i + chunk]
        mu, logvar = runners["encoder"].run(["mu", "logvar"], {"x": xs})
        z = reparameterize(mu, logvar, eps[i : i + chunk])
        (x_hat,) = runners["decoder"].run(["x_hat"], {"z": z})
        recon = lik.reconstruction_nll(x_hat, xs, manifest.likelihood, manifest.sigma)
        total += float((recon + lik.kl_to_standard_normal(mu, clamp_logvar(logvar))).sum())
    return total / len(x)


def parity(runners: Mapping[str, GraphRunner], reference: Mapping[str, GraphRunner],
           manifest: Manifest, x: np.ndarray, seed: int = 1, probe: int = 1000
           ) -> dict[str, Any]:  # fmt: skip
    """Max abs differences on ``probe`` images and N(0, I) latents, and the test negative
    ELBO of both (same noise) and its change, in nats per image."""
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal((len(x), manifest.latent_dim)).astype(np.float32)
    z = rng.standard_normal((probe, manifest.latent_dim)).astype(np.float32)
    got = (*runners["encoder"].run(["mu", "logvar"], {"x": x[:probe]}),
           *runners["decoder"].run(["x_hat"], {"z": z}))  # fmt: skip
    want = (*reference["encoder"].run(["mu", "logvar"], {"x": x[:probe]}),
            *reference["decoder"].run(["x_hat"], {"z": z}))  # fmt: skip
    base = mean_nelbo(reference, x, eps, manifest)
    nelbo = mean_nelbo(runners, x, eps, manifest)
    return {
        "max_abs": {k: float(np.abs(g - w).max())
                    for k, g, w in zip(("mu", "logvar", "x_hat"), got, want, strict=True)},
        "test_images": len(x),
        "test_nelbo_reference": round(base, 4),
        "test_nelbo": round(nelbo, 4),
        "nelbo_change": round(nelbo - base, 4),
    }  # fmt: skip
