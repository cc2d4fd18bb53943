"""Data-parallel training through PyTorch's own engine: `torchrun --nproc_per_node N -m meid_bench train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them everything here is a no-op for one process. NCCL on
CUDA, gloo on the CPU. Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from meid_bench.errors import MeidBenchError


@dataclass
class DistributedContext:
    rank: int
    world: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.world == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` (picklable), in rank order, on every rank: ``[value]`` for one process."""
        if self.world == 1:
            return [value]
        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun): what the CLI asks before it reads what rank 0
    writes or prints a result."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def init_distributed(device: torch.device) -> DistributedContext:
    """One process's place in a torchrun launch: under torchrun each process trains on the GPU numbered by its
    LOCAL_RANK, so a GPU named with ``--device cuda:N`` cannot be honoured there and is refused."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistributedContext(0, 1, device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is not None:
        raise MeidBenchError(f"--device {device}: under torchrun each process uses the GPU of its LOCAL_RANK "
                             "(cuda:0, cuda:1, ... of those visible); use --device cuda or auto, and choose the GPUs "
                             "with CUDA_VISIBLE_DEVICES (e.g. CUDA_VISIBLE_DEVICES=2,3 torchrun ...)")
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank, world, device)
