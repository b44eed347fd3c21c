"""``vae-train``: train a VAE of the design notes and write its checkpoints.

Launched by ``torchrun --nproc-per-node W vae-train ...`` it trains data-parallel: W ranks
share each ``--batch-size`` batch, rank 0 writes the run directory.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import fields
from pathlib import Path

from vae_train.architectures import arch_names
from vae_train.checkpoint import CheckpointError
from vae_train.datasets import DATASETS, DatasetError
from vae_train.distributed import DistributedError, close_world, init_world
from vae_train.run_lock import RunLockError
from vae_train.trainer import PRECISIONS, NonFiniteLossError, TrainConfig, TrainingError, train


def build_parser() -> argparse.ArgumentParser:
    d = TrainConfig()
    p = argparse.ArgumentParser(
        prog="vae-train",
        description="Train a VAE; writes separate encoder/decoder checkpoints to --out.",
    )
    p.add_argument("--arch", choices=arch_names(), default=d.arch)
    p.add_argument("--latent-dim", type=int, default=d.latent_dim)
    p.add_argument("--dataset", choices=list(DATASETS), default=d.dataset)
    p.add_argument("--data-dir", default=d.data_dir, help="folder holding the IDX files")
    p.add_argument(
        "--download", action="store_true", help="fetch missing dataset files (checksums verified)"
    )
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default=d.lr_schedule)
    p.add_argument("--likelihood", choices=("bernoulli", "gaussian"), default=d.likelihood)
    p.add_argument("--sigma", type=float, default=d.sigma, help="Gaussian likelihood std")
    p.add_argument(
        "--val-size",
        type=int,
        default=d.val_size,
        help="training images held out for model selection",
    )
    p.add_argument(
        "--patience",
        type=int,
        default=d.patience,
        help="stop after this many epochs without validation improvement",
    )
    p.add_argument(
        "--kl-warmup",
        type=float,
        default=d.kl_warmup,
        metavar="EPOCHS",
        help="raise the KL weight linearly from 0 to 1 over this many epochs",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help="bf16: bfloat16 autocast for the training forward passes (faster on CPUs with "
        "AVX-512 BF16 or AMX); weights, losses and evaluation stay float32",
    )
    p.add_argument(
        "--ema",
        type=float,
        default=d.ema,
        metavar="DECAY",
        help="keep an exponential moving average of the weights with this decay (e.g. 0.999) "
        "and evaluate, select and export the averaged weights (0 = off)",
    )
    p.add_argument(
        "--grad-accum",
        type=int,
        default=d.grad_accum,
        metavar="K",
        help="cut each batch into K micro-batches and sum their gradients before the step "
        "(less memory; equal, bit for bit, to torchrun with K ranks)",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=d.device)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--limit-train", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--limit-test", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def config_from_args(args: argparse.Namespace, argv: list[str]) -> TrainConfig:
    """The TrainConfig the options describe (every option named like a TrainConfig field)."""
    names = {f.name for f in fields(TrainConfig)}
    settings = {k: v for k, v in vars(args).items() if k in names}
    return TrainConfig(**settings, command=shlex.join(["vae-train", *argv]))


def _error(message: str, rank: int) -> None:
    where = f" (rank {rank})" if rank else ""
    print(f"vae-train: error{where}: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    try:
        world = init_world(args.device)
    except DistributedError as exc:
        _error(str(exc), 0)
        return 2
    try:
        train(
            config_from_args(args, argv),
            args.out,
            resume=args.resume,
            download=args.download,
            progress=False if args.no_progress else None,
            log=lambda line: print(line, flush=True),
            world=world,
        )
    except NonFiniteLossError as exc:  # the run itself failed: not a usage error
        if world.is_main:  # every rank stops on the same all-reduced loss; say it once
            _error(str(exc), world.rank)
        return 1
    except (TrainingError, DatasetError, CheckpointError, RunLockError) as exc:
        _error(str(exc), world.rank)
        return 2
    except KeyboardInterrupt:
        print(
            "vae-train: interrupted; the last completed epoch's checkpoint is kept", file=sys.stderr
        )
        return 130
    finally:
        close_world(world)
    if world.is_main:
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
