"""Data-parallel training under ``torchrun``: who this process is and the few collectives the
trainer needs.

``torchrun`` starts one process per rank and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; a process started any other way is a world of one and
never touches ``torch.distributed``. Gradients are averaged by ``DistributedDataParallel``;
this module only carries the metrics, the non-finite check and the barriers around
rank 0's checkpoint writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist


class DistributedError(RuntimeError):
    """The torchrun environment is inconsistent or the process group cannot be set up."""


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # ranks on this node (torchrun's LOCAL_WORLD_SIZE)
    cuda: bool = False  # a distributed world's choice, made once by init_world for every rank

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, name: str) -> str:
        """The device this rank trains on: its own GPU under NCCL, the CPU under gloo, else
        ``name`` (a world of one)."""
        if not self.distributed:
            return name
        return f"cuda:{self.local_rank}" if self.cuda else "cpu"

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum of ``tensor`` over every rank (in place; a float64 CPU tensor under gloo)."""
        if self.distributed:
            moved = tensor.to(_collective_device())
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
            tensor.copy_(moved)
        return tensor

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _collective_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise DistributedError(f"${name} must be an integer, got {raw!r}") from None


def world_from_env() -> World:
    """This process's place in a ``torchrun`` launch (a world of one otherwise)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local = _env_int("LOCAL_RANK", 0)
    local_size = _env_int("LOCAL_WORLD_SIZE", size)
    if size < 1 or not 0 <= rank < size or not 0 <= local < local_size:
        raise DistributedError(
            f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={size}, "
            f"LOCAL_RANK={local}, LOCAL_WORLD_SIZE={local_size}"
        )
    return World(rank, size, local, local_size)


def wants_cuda(device: str, world: World) -> bool:
    """Whether every rank of ``world`` trains on its own GPU. ``auto`` takes CUDA only when this
    node has a GPU for each of its ranks (two ranks cannot share one under NCCL), so every rank
    decides alike; ``cuda`` with too few GPUs is refused rather than failing inside torch."""
    if device == "cpu":
        return False
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return gpus >= world.local_size
    if gpus == 0:
        raise DistributedError("--device cuda was asked for, but torch sees no CUDA device")
    if gpus < world.local_size:
        raise DistributedError(
            f"--device cuda: {world.local_size} ranks on this node but torch sees {gpus} CUDA "
            f"device(s); start at most {gpus} per node (torchrun --nproc-per-node {gpus}) "
            "or train with --device cpu"
        )
    return True


def init_world(device: str) -> World:
    """Join the process group when launched by torchrun: NCCL for CUDA, gloo for CPU."""
    world = world_from_env()
    if not world.distributed:
        return world
    cuda = wants_cuda(device, world)
    if cuda:
        torch.cuda.set_device(world.local_rank)
    try:
        dist.init_process_group("nccl" if cuda else "gloo")
    except (RuntimeError, ValueError) as exc:
        raise DistributedError(f"cannot join the torchrun process group: {exc}") from None
    return replace(world, cuda=cuda)


def close_world(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
