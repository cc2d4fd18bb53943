"""Batch streams for training and evaluation, over a feature store or over frames resident on the device.

A training stream turns one epoch of a sampler's draws (video, sampled class) into batches of ``batch_size``
draws; with several processes each rank takes every ``world``-th draw of each batch, so the ranks together see
exactly the single-process batch. Streams are a pure function of (seed, epoch), which is what makes ``--resume``
reproduce an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from meid_bench.data import GpuResidentFeatures, VideoFeatureDataset
from meid_bench.data.samplers import SAMPLERS


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class TrainStream:
    """One epoch at a time of batches drawn by a sampler (``instance``, ``cbs`` or ``srs``)."""

    def __init__(self, dataset: VideoFeatureDataset, sampler_name: str, label_mask: bool, batch_size: int,
                 seed: int, device: torch.device, resident: GpuResidentFeatures | None = None, workers: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.dataset, self.resident = dataset, resident
        self.sampler = SAMPLERS[sampler_name](dataset.targets, seed=seed)
        self.label_mask, self.batch_size = label_mask, batch_size
        self.device, self.workers, self.rank, self.world = device, workers, rank, world

    def steps_per_epoch(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def _batches_of_draws(self, epoch: int) -> list[tuple[np.ndarray, np.ndarray]]:
        self.sampler.set_epoch(epoch)
        videos, classes = self.sampler.draws()
        out = []
        for start in range(0, len(videos), self.batch_size):
            chosen = slice(start, start + self.batch_size)
            out.append((videos[chosen][self.rank::self.world], classes[chosen][self.rank::self.world]))
        return out

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        draws = self._batches_of_draws(epoch)
        if self.resident is not None:
            self.resident.set_epoch(epoch)
            generator = self.resident.generator()
            for videos, classes in draws:
                yield self.resident.batch(videos, classes if self.label_mask else None, generator)
            return
        self.dataset.set_epoch(epoch)
        batch_sampler = [list(zip(v.tolist(), c.tolist())) for v, c in draws]
        loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=batch_sampler, num_workers=self.workers,
                                             pin_memory=self.device.type == "cuda")
        for batch in loader:
            yield _to_device(batch, self.device)


class EvalStream:
    """Every video of a subset once, in table order, with uniformly spaced frames."""

    def __init__(self, dataset: VideoFeatureDataset, batch_size: int, device: torch.device,
                 resident: GpuResidentFeatures | None = None, workers: int = 0) -> None:
        self.dataset, self.resident = dataset, resident
        self.batch_size, self.device, self.workers = batch_size, device, workers

    @property
    def video_ids(self) -> list[str]:
        return self.dataset.video_ids

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.resident is not None:
            yield from self.resident.batches(self.batch_size)
            return
        loader = torch.utils.data.DataLoader(self.dataset, batch_size=self.batch_size, shuffle=False,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda")
        for batch in loader:
            yield _to_device(batch, self.device)
