"""The training loop: seeded, resumable, checkpointed every epoch, data-parallel under torchrun.

Randomness is derived from (seed, epoch) rather than carried from epoch to epoch, so a
run resumed from any checkpoint draws exactly the batches and noise that an uninterrupted
run would have drawn, and ends with bit-identical weights.

Each global batch (``--batch-size`` images) is cut into ``S = world size x --grad-accum``
slices: slice ``s`` holds positions ``s::S`` of the batch and of the noise drawn for the
whole batch, so the images and noise a slice sees do not depend on who computes it. Rank
``r`` computes slices ``k * W + r``; its summed loss is multiplied by ``W`` because
DistributedDataParallel averages gradients over ranks. Two ranks therefore step exactly as
one process accumulating gradients over two slices (``--grad-accum 2``), bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
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
from vae_train.distributed import World
from vae_train.losses import LIKELIHOODS, ElboParts, negative_elbo
from vae_train.models import count_parameters, reparameterize
from vae_train.run_lock import locked_run_dir
from vae_train.train_state import check_train_state

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
    # Micro-batches per step: the global batch is cut into this many slices whose gradients
    # are summed before the step (under torchrun, per rank). Memory per micro-batch falls;
    # the result equals a torchrun run with as many ranks, bit for bit.
    grad_accum: int = 1
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
        for name in ("latent_dim", "epochs", "batch_size", "grad_accum"):
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


def deterministic_cuda() -> None:
    """Make a seeded CUDA run repeat bit for bit, as CPU runs do (and resume exactly). Without
    it cuDNN and cuBLAS pick non-deterministic kernels: two runs of one seed differed by 4e-4
    in their weights after 3 epochs on an H100; the deterministic ones showed no consistent cost.
    cuBLAS reads its workspace setting when its first handle is made, so this runs before any
    CUDA work of the trainer."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


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
    world_size: int,
) -> dict[str, Any]:
    settings = asdict(cfg)
    return {
        **{k: settings[k] for k in (*RESUME_KEYS, "epochs", "patience", "grad_accum", "command")},
        "world_size": world_size,
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


class _VAE(nn.Module):
    """Encoder and decoder as one module (what DistributedDataParallel wraps)."""

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, x: Tensor, eps: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        mu, logvar = self.encoder(x)
        mu, logvar = mu.float(), logvar.float()
        return self.decoder(reparameterize(mu, logvar, eps)).float(), mu, logvar


class Trainer:
    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path,
        progress: bool | None = None,
        world: World | None = None,
    ):
        cfg.validate()
        self.cfg = cfg
        self.world = world = world or World()
        if cfg.batch_size < world.size * cfg.grad_accum:
            raise TrainingError(
                f"--batch-size {cfg.batch_size} is smaller than the {world.size} rank(s) x "
                f"--grad-accum {cfg.grad_accum} slices it is cut into"
            )
        self.run_dir = Path(run_dir)
        self.progress = progress if world.is_main else False
        self.device = torch.device(world.device(pick_device(cfg.device).type))
        if self.device.type == "cuda":
            deterministic_cuda()
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
        pair = _VAE(self.encoder, self.decoder)
        self.model: nn.Module = pair
        if world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(pair, device_ids=ids)
        self.optimizer = torch.optim.Adam(pair.parameters(), lr=cfg.lr)
        self.ema = {n: _averaged(m, cfg.ema) for n, m in self._raw().items()} if cfg.ema else {}
        self.fixed_z = torch.randn(64, cfg.latent_dim, generator=torch.Generator().manual_seed(0))
        self.start_epoch = 1
        self.resumed = False
        self._holding = False
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
        state = check_train_state(
            load_train_state(ckpt_dir),
            ckpt_dir / "train_state.pt",
            optimizer=self.optimizer,
            raw_modules=self._raw() if self.cfg.ema else None,
            checkpoint_epoch=ckpt.config.get("epoch"),
        )
        if state.epoch > self.cfg.epochs:
            raise TrainingError(
                f"cannot resume {self.run_dir}: it has trained {state.epoch} epochs already, "
                f"more than --epochs {self.cfg.epochs}"
            )
        kept = ckpt.encoder.state_dict(), ckpt.decoder.state_dict()
        if self.cfg.ema:
            for (name, averaged), weights in zip(self.ema.items(), kept, strict=True):
                averaged.module.load_state_dict(weights)
                averaged.n_averaged.fill_(state.ema_steps)
                self._raw()[name].load_state_dict(state.raw[name])
        else:
            self.encoder.load_state_dict(kept[0])
            self.decoder.load_state_dict(kept[1])
        self.optimizer.load_state_dict(state.optimizer)
        self.start_epoch = state.epoch + 1
        self.best_val = state.best_val
        self.history = list(state.history)
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
        cfg, world = self.cfg, self.world
        self.model.train()
        n = len(self.train_x)
        order = torch.from_numpy(np.random.default_rng([cfg.seed, epoch]).permutation(n))
        gen = _epoch_generator(cfg.seed, epoch, salt=1)
        steps = self.steps_per_epoch
        # One row per micro-batch slot, summed at the end of the epoch (then over ranks), so
        # the totals add up in the same order however the slices are spread.
        totals = torch.zeros(cfg.grad_accum, 3, dtype=torch.float64)
        bar = tqdm(
            range(steps),
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            disable=None if self.progress is None else not self.progress,
            unit="batch",
        )
        for step in bar:
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            # The noise of the whole global batch, drawn in one call and sliced like the images.
            eps = torch.randn((len(idx), cfg.latent_dim), generator=gen)
            for group in self.optimizer.param_groups:
                group["lr"] = self._lr((epoch - 1) * steps + step, steps)
            self.optimizer.zero_grad(set_to_none=True)
            value = 0.0
            for k in range(cfg.grad_accum):
                part = slice(k * world.size + world.rank, None, world.size * cfg.grad_accum)
                last = k == cfg.grad_accum - 1
                # DDP all-reduces gradients on the last micro-batch only.
                sync = self.model.no_sync if world.distributed and not last else None
                with sync() if sync else contextlib.nullcontext():
                    parts, loss = self._micro_step(epoch, step, idx[part], eps[part])
                    value += self._global_value(loss, epoch, step)
                    # DDP averages gradients over ranks; the step needs their sum.
                    (loss * world.size if world.distributed else loss).backward()
                totals[k] += torch.stack([p.detach().sum() for p in parts]).double().cpu()
            self.optimizer.step()
            for name, averaged in self.ema.items():
                averaged.update_parameters(self._raw()[name])
            if step % 50 == 0:
                bar.set_postfix(loss=f"{value / len(idx):.2f}")
        loss, recon, kl = (world.all_sum(totals.sum(0)) / n).tolist()
        return {"loss": loss, "recon": recon, "kl": kl}

    def _micro_step(
        self, epoch: int, step: int, idx: Tensor, eps: Tensor
    ) -> tuple[ElboParts, Tensor]:
        """Forward one slice; returns its ELBO parts and summed (KL-weighted) loss (NaN when
        the network's outputs are not finite)."""
        cfg, dev = self.cfg, self.device
        x = _to_float(self.train_x[idx], dev)
        with torch.autocast(dev.type, torch.bfloat16, enabled=cfg.precision == "bf16"):
            x_hat, mu, logvar = self.model(x, eps.to(dev))
        parts = negative_elbo(x_hat, x, mu, logvar, cfg.likelihood, cfg.sigma)
        # recon + w * kl, written from the full loss so that it is the loss itself whenever
        # the warm-up is over (w = 1).
        weight = self._kl_weight(epoch, step)
        loss = (parts.loss if weight == 1.0 else parts.loss - (1 - weight) * parts.kl).sum()
        return parts, loss

    def _global_value(self, loss: Tensor, epoch: int, step: int) -> float:
        """The loss summed over ranks; every rank stops together on a non-finite one, before
        any gradient of it is applied."""
        mine = torch.tensor([loss.item()], dtype=torch.float64)
        value = float(self.world.all_sum(mine).item())
        if math.isfinite(value):
            return value
        steps = self.steps_per_epoch
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

    @contextlib.contextmanager
    def holding_run_dir(self, create: bool = True) -> Iterator[None]:
        """Rank 0 holds an exclusive lock on the run directory (created when ``create``);
        every rank waits until it does. Re-entrant, so ``fit`` inside it keeps the lock."""
        if self._holding:
            yield
            return
        main = self.world.is_main
        with locked_run_dir(self.run_dir, create=create) if main else contextlib.nullcontext():
            self.world.barrier()
            self._holding = True
            try:
                yield
            finally:
                self._holding = False

    def fit(self, log: Callable[[str], None] = print) -> list[dict[str, Any]]:
        """Train to the end, holding the run directory (see ``holding_run_dir``)."""
        with self.holding_run_dir():
            return self._fit(log)

    def _fit(self, log: Callable[[str], None]) -> list[dict[str, Any]]:
        cfg = self.cfg
        if not self.resumed and (self.run_dir / "checkpoints" / "latest.json").exists():
            raise TrainingError(
                f"{self.run_dir} already holds a run; pass --resume to continue it, or choose "
                "another --out"
            )
        if not self.world.is_main:
            log = _silent
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
            if self.world.is_main:
                self._write_epoch(epoch, row, best=improved or not cfg.val_size)
            # No rank starts the next epoch (or exits) before the checkpoint is complete.
            self.world.barrier()
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
        if self.world.is_main:
            figures.save_loss_curve(self.run_dir / "metrics.jsonl", self.run_dir / "loss_curve.png")
        return self.history

    def _write_epoch(self, epoch: int, row: dict[str, Any], best: bool) -> None:
        """The checkpoint, metrics.jsonl and pictures of one epoch (rank 0 only)."""
        encoder, decoder = self._kept()
        metrics = {k: v for k, v in row.items() if "seconds" not in k}
        config = _checkpoint_config(
            self.cfg, self.data, encoder, decoder, epoch, metrics, self.world.size
        )
        state = {
            "optimizer": self.optimizer.state_dict(),
            "epoch": epoch,
            "best_val": self.best_val,
            "history": self.history,
            **self._ema_state(),
        }
        save_checkpoint(self.run_dir, encoder, decoder, config, state, epoch, best=best)
        atomic.write_bytes(
            self.run_dir / "metrics.jsonl",
            "".join(json.dumps(r) + "\n" for r in self.history).encode(),
        )
        self._write_epoch_outputs(epoch)


def _silent(_: str) -> None:
    pass


def train(
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    download: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
    world: World | None = None,
) -> list[dict[str, Any]]:
    """One training run, as ``vae-train`` does it: fetch the dataset if asked, start (or
    resume) the run in ``run_dir`` under an exclusive lock and train it to the end; returns
    the epoch history. ``world`` is this process's rank under torchrun."""
    if download:
        from vae_train.download import download_dataset

        download_dataset(cfg.dataset, cfg.data_dir)
    trainer = Trainer(cfg, run_dir, progress=progress, world=world)
    with trainer.holding_run_dir(create=not resume):
        if resume:
            trainer.resume()
            if trainer.world.is_main:
                log(f"resuming {run_dir} at epoch {trainer.start_epoch}")
        return trainer.fit(log=log)
