"""The training loop: seeded, resumable, checkpointed every epoch.

Randomness is derived from (seed, epoch) rather than carried from epoch to epoch, so a
run resumed from any checkpoint draws exactly the batches and noise that an uninterrupted
run would have drawn, and ends with bit-identical weights.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from vae_format import atomic
from vae_format.datasets import validation_split
from vae_format.grid import make_grid, save_png
from vae_train import figures
from vae_train.architectures import arch_names, build_modules
from vae_train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_train_state,
    resolve_checkpoint,
    save_checkpoint,
)
from vae_train.datasets import Dataset, load_dataset
from vae_train.losses import LIKELIHOODS, negative_elbo
from vae_train.models import count_parameters, reparameterize

# Settings that must not change when a run is resumed.
RESUME_KEYS = (
    "arch",
    "latent_dim",
    "dataset",
    "likelihood",
    "sigma",
    "batch_size",
    "lr",
    "lr_schedule",
    "seed",
    "val_size",
    "limit_train",
    "limit_test",
    "kl_warmup",
    "precision",
    "ema",
)
PRECISIONS = ("fp32", "bf16")


class TrainingError(RuntimeError):
    """Training cannot start or continue (bad settings, or the loss stopped being finite)."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    arch: str = "conv"
    latent_dim: int = 20
    dataset: str = "mnist"
    data_dir: str = "data"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    lr_schedule: str = "constant"  # or "cosine": per-step decay to 0 over all epochs
    seed: int = 1
    device: str = "auto"
    likelihood: str = "bernoulli"
    sigma: float = 0.1  # Gaussian likelihood only
    val_size: int = 0  # images carved from the training set for model selection
    patience: int = 0  # early stopping on the validation loss (0 = off)
    # Epochs over which the KL term's weight rises linearly from 0 to 1 (0 = off). Warm-up
    # lets more latent units become active before the KL term can switch them off; the
    # losses reported are always the true (weight 1) negative ELBO.
    kl_warmup: float = 0.0
    # "bf16": the training forward passes run under bfloat16 autocast (about 1.4x faster on
    # CPUs with AVX-512 BF16 or AMX); weights, optimizer state, losses and every evaluation
    # stay float32.
    precision: str = "fp32"
    # Decay of an exponential moving average of the weights (0 = off). When on, the averaged
    # weights are the ones evaluated, selected on validation and written as the checkpoint;
    # the raw weights live on in the training state so that a resume is bit-identical.
    ema: float = 0.0
    limit_train: int | None = None  # use only the first N training images (smoke runs)
    limit_test: int | None = None
    threads: int | None = None
    command: str = ""

    def validate(self) -> None:
        if self.arch not in arch_names():
            raise TrainingError(
                f"--arch must be one of {', '.join(arch_names())}, got {self.arch!r}"
            )
        if self.likelihood not in LIKELIHOODS:
            raise TrainingError(f"--likelihood must be one of {LIKELIHOODS}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise TrainingError("--lr-schedule must be constant or cosine")
        for name in ("latent_dim", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TrainingError("--lr must be a positive number")
        if not (self.sigma > 0 and math.isfinite(self.sigma)):
            raise TrainingError("--sigma must be a positive number")
        for name in ("limit_train", "limit_test", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be >= 1")
        if self.val_size < 0 or self.patience < 0:
            raise TrainingError("--val-size and --patience must be >= 0")
        if not (self.kl_warmup >= 0 and math.isfinite(self.kl_warmup)):
            raise TrainingError("--kl-warmup must be a number of epochs >= 0")
        if self.precision not in PRECISIONS:
            raise TrainingError(f"--precision must be one of {', '.join(PRECISIONS)}")
        if not 0.0 <= self.ema < 1.0:
            raise TrainingError(f"--ema must be a decay in [0, 1), got {self.ema}")
        if self.patience and not self.val_size:
            raise TrainingError("--patience needs a validation split (--val-size > 0)")


@dataclass
class EpochResult:
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise TrainingError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def _to_float(images: Tensor, device: torch.device) -> Tensor:
    return images.to(device, non_blocking=True).float().div_(255.0)


def _epoch_generator(seed: int, epoch: int, salt: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 7 + salt)


@torch.no_grad()
def evaluate(
    encoder: nn.Module,
    decoder: nn.Module,
    images: Tensor,
    cfg: TrainConfig,
    device: torch.device,
    seed: int,
    batch_size: int = 1000,
) -> dict[str, float]:
    """Mean per-image negative ELBO and its parts, with one seeded sample of z per image
    (the quantity pytorch/examples' VAE prints as its test loss)."""
    encoder.eval()
    decoder.eval()
    gen = torch.Generator().manual_seed(seed)
    totals = torch.zeros(3, dtype=torch.float64)
    for start in range(0, len(images), batch_size):
        x = _to_float(images[start : start + batch_size], device)
        mu, logvar = encoder(x)
        eps = torch.randn(mu.shape, generator=gen).to(device)
        parts = negative_elbo(
            decoder(reparameterize(mu, logvar, eps)), x, mu, logvar, cfg.likelihood, cfg.sigma
        )
        totals += torch.stack([p.sum() for p in parts]).double().cpu()
    loss, recon, kl = (totals / len(images)).tolist()
    return {"loss": loss, "recon": recon, "kl": kl}


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        out["vae_onnx"] = version("vae-onnx")
    except PackageNotFoundError:
        out["vae_onnx"] = "unknown"
    return out


def _checkpoint_config(
    cfg: TrainConfig,
    data: Dataset,
    encoder: nn.Module,
    decoder: nn.Module,
    epoch: int,
    metrics: dict[str, float],
) -> dict[str, Any]:
    settings = asdict(cfg)
    return {
        **{k: settings[k] for k in (*RESUME_KEYS, "epochs", "patience", "command")},
        "image_shape": [1, 28, 28],
        "input_convention": "float32 in [0,1], white digit on black",
        "dataset_files": data.checksums,
        "epoch": epoch,
        "metrics": metrics,
        "parameters": {"encoder": count_parameters(encoder), "decoder": count_parameters(decoder)},
        "versions": _versions(),
    }


def _averaged(module: nn.Module, decay: float) -> AveragedModel:
    """An exponential moving average of ``module``'s weights (torch's own EMA helper)."""
    return AveragedModel(module, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


class Trainer:
    def __init__(self, cfg: TrainConfig, run_dir: str | Path, progress: bool | None = None):
        cfg.validate()
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = pick_device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        # Load and check every dataset file before anything is trained or written.
        self.data = load_dataset(cfg.dataset, cfg.data_dir)
        train_images = self.data.train.images[: cfg.limit_train]
        test_images = self.data.test.images[: cfg.limit_test]
        if cfg.val_size >= len(train_images):
            raise TrainingError(f"--val-size {cfg.val_size} leaves no training images")
        val_idx, train_idx = validation_split(len(train_images), cfg.val_size, cfg.seed)
        as_tensor = lambda a: torch.from_numpy(np.array(a)).unsqueeze(1)  # noqa: E731
        self.train_x = as_tensor(train_images[train_idx])
        self.val_x = as_tensor(train_images[val_idx])
        self.test_x = as_tensor(test_images)
        self.steps_per_epoch = -(-len(self.train_x) // cfg.batch_size)
        torch.manual_seed(cfg.seed)
        encoder, decoder = build_modules({"arch": cfg.arch, "latent_dim": cfg.latent_dim})
        self.encoder, self.decoder = encoder.to(self.device), decoder.to(self.device)
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=cfg.lr)
        self.ema = {n: _averaged(m, cfg.ema) for n, m in self._raw().items()} if cfg.ema else {}
        self.fixed_z = torch.randn(64, cfg.latent_dim, generator=torch.Generator().manual_seed(0))
        self.start_epoch = 1
        self.resumed = False
        self.best_val = math.inf
        self.history: list[dict[str, Any]] = []

    def _raw(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def _kept(self) -> tuple[nn.Module, nn.Module]:
        """The weights that are evaluated, selected and checkpointed: the EMA when on."""
        if self.cfg.ema:
            return self.ema["encoder"].module, self.ema["decoder"].module
        return self.encoder, self.decoder

    def _ema_state(self) -> dict[str, Any]:
        """What a resume needs beyond the checkpointed (averaged) weights."""
        if not self.cfg.ema:
            return {}
        return {
            "raw_encoder": self.encoder.state_dict(),
            "raw_decoder": self.decoder.state_dict(),
            "ema_steps": int(self.ema["encoder"].n_averaged.item()),
        }

    # -- resume ---------------------------------------------------------------------------
    def resume(self) -> None:
        try:
            ckpt_dir = resolve_checkpoint(self.run_dir, "latest")
        except CheckpointError as exc:
            raise TrainingError(f"cannot resume: {exc}") from None
        ckpt = load_checkpoint(ckpt_dir)
        mine = asdict(self.cfg)
        defaults = asdict(TrainConfig())  # keys that older checkpoints do not record
        changed = [k for k in RESUME_KEYS if ckpt.config.get(k, defaults[k]) != mine[k]]
        if self.cfg.lr_schedule == "cosine" and ckpt.config.get("epochs") != self.cfg.epochs:
            changed.append("epochs (the cosine schedule depends on it)")
        if changed:
            raise TrainingError(
                f"cannot resume {self.run_dir}: settings differ from the checkpoint: "
                + ", ".join(changed)
            )
        state = load_train_state(ckpt_dir)
        kept = ckpt.encoder.state_dict(), ckpt.decoder.state_dict()
        try:
            if self.cfg.ema:
                for (name, averaged), weights in zip(self.ema.items(), kept, strict=True):
                    averaged.module.load_state_dict(weights)
                    averaged.n_averaged.fill_(int(state["ema_steps"]))
                    self._raw()[name].load_state_dict(state[f"raw_{name}"])
            else:
                self.encoder.load_state_dict(kept[0])
                self.decoder.load_state_dict(kept[1])
            self.optimizer.load_state_dict(state["optimizer"])
            self.start_epoch = int(state["epoch"]) + 1
            self.best_val = float(state["best_val"])
            self.history = list(state["history"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"{ckpt_dir / 'train_state.pt'} is not a training state of this run "
                f"({type(exc).__name__}: {exc})"
            ) from None
        self.resumed = True

    # -- training -------------------------------------------------------------------------
    def _kl_weight(self, epoch: int, step: int) -> float:
        if not self.cfg.kl_warmup:
            return 1.0
        done = (epoch - 1) * self.steps_per_epoch + step + 1
        return min(1.0, done / (self.cfg.kl_warmup * self.steps_per_epoch))

    def _lr(self, step: int, steps_per_epoch: int) -> float:
        if self.cfg.lr_schedule == "constant":
            return self.cfg.lr
        total = self.cfg.epochs * steps_per_epoch
        return self.cfg.lr * 0.5 * (1 + math.cos(math.pi * step / total))

    def train_epoch(self, epoch: int) -> dict[str, float]:
        cfg, dev = self.cfg, self.device
        self.encoder.train()
        self.decoder.train()
        n = len(self.train_x)
        order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(n))
        gen = _epoch_generator(cfg.seed, epoch, salt=1)
        steps = self.steps_per_epoch
        totals = torch.zeros(3, dtype=torch.float64)
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=None if self.progress is None else not self.progress,
            unit="batch",
        )
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = _to_float(self.train_x[idx], dev)
            for group in self.optimizer.param_groups:
                group["lr"] = self._lr((epoch - 1) * steps + step, steps)
            with torch.autocast(dev.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
                mu, logvar = self.encoder(x)
                mu, logvar = mu.float(), logvar.float()
                eps = torch.randn(mu.shape, generator=gen).to(dev)
                x_hat = self.decoder(reparameterize(mu, logvar, eps)).float()
            try:
                parts = negative_elbo(x_hat, x, mu, logvar, cfg.likelihood, cfg.sigma)
                # recon + w * kl, written from the full loss so that it is the loss itself
                # whenever the warm-up is over (w = 1).
                weight = self._kl_weight(epoch, step)
                loss = (parts.loss if weight == 1.0 else parts.loss - (1 - weight) * parts.kl).sum()
                value = loss.item()
            except RuntimeError:  # BCE refuses NaN inputs
                value = math.nan
            if not math.isfinite(value):
                kept = (
                    f"The last good checkpoint (epoch {epoch - 1}) is kept in "
                    f"{self.run_dir / 'checkpoints'}"
                    if epoch > 1
                    else "No checkpoint was written."
                )
                raise NonFiniteLossError(
                    f"non-finite loss ({value}) at epoch {epoch}, step {step + 1} "
                    f"(global step {(epoch - 1) * steps + step + 1}); stopped. {kept}"
                )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            for name, averaged in self.ema.items():
                averaged.update_parameters(self._raw()[name])
            totals += torch.stack([p.detach().sum() for p in parts]).double().cpu()
            if step % 50 == 0:
                bar.set_postfix(loss=f"{value / len(x):.2f}")
        loss, recon, kl = (totals / n).tolist()
        return {"loss": loss, "recon": recon, "kl": kl}

    def _write_epoch_outputs(self, epoch: int) -> None:
        encoder, decoder = self._kept()
        with torch.no_grad():
            decoder.eval()
            encoder.eval()
            samples = decoder(self.fixed_z.to(self.device)).cpu().numpy()
            x = _to_float(self.test_x[:8], self.device)
            recon = decoder(encoder(x)[0]).cpu().numpy()
        save_png(make_grid(samples, 8), self.run_dir / f"samples/epoch-{epoch:03d}.png")
        pair = np.concatenate([x.cpu().numpy(), recon])
        save_png(make_grid(pair, 8), self.run_dir / f"reconstructions/epoch-{epoch:03d}.png")

    def fit(self, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
        cfg = self.cfg
        if not self.resumed and (self.run_dir / "checkpoints" / "latest.json").exists():
            raise TrainingError(
                f"{self.run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --out"
            )
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrainingError(f"cannot create the run directory {self.run_dir}: {exc}") from None
        stale = 0
        for epoch in range(self.start_epoch, cfg.epochs + 1):
            t0 = time.perf_counter()
            train = self.train_epoch(epoch)
            train_seconds = time.perf_counter() - t0
            eval_seed = cfg.seed + 10_000
            encoder, decoder = self._kept()
            test = evaluate(encoder, decoder, self.test_x, cfg, self.device, eval_seed)
            row: dict[str, Any] = {"epoch": epoch}
            row.update({f"train_{k}": v for k, v in train.items()})
            improved = False
            if cfg.val_size:
                val = evaluate(encoder, decoder, self.val_x, cfg, self.device, eval_seed)
                row.update({f"val_{k}": v for k, v in val.items()})
                if cfg.ema:  # the raw weights too, so one run shows what the average buys
                    raw = evaluate(
                        self.encoder, self.decoder, self.val_x, cfg, self.device, eval_seed
                    )
                    row["val_raw_loss"] = raw["loss"]
                improved = val["loss"] < self.best_val
                if improved:
                    self.best_val = val["loss"]
            row.update({f"test_{k}": v for k, v in test.items()})
            row["lr_end"] = self._lr(epoch * self.steps_per_epoch - 1, self.steps_per_epoch)
            row["train_seconds"] = round(train_seconds, 3)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            self.history.append(row)
            metrics = {k: v for k, v in row.items() if "seconds" not in k}
            config = _checkpoint_config(cfg, self.data, encoder, decoder, epoch, metrics)
            state = {
                "optimizer": self.optimizer.state_dict(),
                "epoch": epoch,
                "best_val": self.best_val,
                "history": self.history,
                **self._ema_state(),
            }
            save_checkpoint(
                self.run_dir,
                encoder,
                decoder,
                config,
                state,
                epoch,
                best=improved or not cfg.val_size,
            )
            atomic.write_bytes(
                self.run_dir / "metrics.jsonl",
                "".join(json.dumps(r) + "\n" for r in self.history).encode(),
            )
            self._write_epoch_outputs(epoch)
            val_txt = f" val {row['val_loss']:.2f}" if cfg.val_size else ""
            log(
                f"epoch {epoch:3d}/{cfg.epochs}  train {train['loss']:.2f} "
                f"(recon {train['recon']:.2f} + kl {train['kl']:.2f}){val_txt}  "
                f"test {test['loss']:.2f} (recon {test['recon']:.2f} + kl {test['kl']:.2f})  "
                f"{train_seconds:.1f}s"
            )
            stale = 0 if improved else stale + 1
            if cfg.patience and stale >= cfg.patience:
                log(f"early stop: no validation improvement in {cfg.patience} epochs")
                break
        figures.save_loss_curve(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")
        return self.history


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    download: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One training run, as ``vae-train`` does it: fetch the dataset if asked, start (or
    resume) the run in ``run_dir`` and train it to the end; returns the epoch history."""
    if download:
        from vae_train.download import download_dataset

        download_dataset(cfg.dataset, cfg.data_dir)
    trainer = Trainer(cfg, run_dir, progress=progress)
    if resume:
        trainer.resume()
        log(f"resuming {run_dir} at epoch {trainer.start_epoch}")
    return trainer.fit(log=log)
