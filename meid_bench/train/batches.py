"""Batch streams for training and evaluation, over frames resident on the device or streamed from the store.

A training stream turns one epoch of a sampler's draws (video, sampled class) into batches of ``batch_size``
draws; with several processes each rank takes every ``world``-th draw of each batch, so the ranks together see
exactly the single-process batch (a last batch with fewer draws than ranks gives each rank one of its draws:
:meth:`~meid_bench.data.samplers._SeededSampler.index_batches`). Streams are a pure function of (seed, epoch), which is what makes ``--resume``
reproduce an uninterrupted run, and the resident and streamed paths draw the same frames.

An epoch's video indices go to the device in one transfer; nothing in a step waits for the host.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from meid_bench.data import GpuResidentFeatures, StreamedFeatures, VideoFeatureDataset, epoch_generator
from meid_bench.data.samplers import create_sampler
from meid_bench.errors import MeidBenchError


def _on_device(parts: list[np.ndarray], device: torch.device) -> list[torch.Tensor]:
    """Int64 arrays as tensors on ``device``, copied in one transfer."""
    if not parts:
        return []
    joined = torch.from_numpy(np.concatenate(parts).astype(np.int64, copy=False)).to(device)
    return list(torch.split(joined, [len(p) for p in parts]))


class TrainStream:
    """One epoch at a time of batches drawn by a sampler (``instance``, ``cbs`` or ``srs``).

    Frames come from ``resident`` when given, else from the store through a :class:`StreamedFeatures` with
    ``workers`` read-ahead threads (0: read in the training thread).
    """

    def __init__(self, dataset: VideoFeatureDataset, sampler_name: str, label_mask: bool, batch_size: int,
                 seed: int, device: torch.device, resident: GpuResidentFeatures | None = None, workers: int = 0,
                 rank: int = 0, world: int = 1) -> None:
        self.dataset, self.resident = dataset, resident
        self.sampler = create_sampler(sampler_name, dataset.targets, seed=seed)
        self.label_mask, self.batch_size = label_mask, batch_size
        self.device, self.workers, self.rank, self.world = device, workers, rank, world
        self.streamed = StreamedFeatures(dataset, device, workers) if resident is None else None

    def steps_per_epoch(self) -> int:
        return -(-len(self.sampler) // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        self.sampler.set_epoch(epoch)
        draws = self.sampler.index_batches(self.batch_size, self.rank, self.world)
        if any(len(v) == 0 for v, _ in draws):  # checked on the host: an empty batch has no loss (NaN), never train
            raise MeidBenchError(f"rank {self.rank} of {self.world}: a batch of epoch {epoch + 1} holds no video; "
                                 "this is a bug in meid-bench's batch split, please report it")
        videos = _on_device([v for v, _ in draws], self.device)
        classes = _on_device([c for _, c in draws], self.device) if self.label_mask else None
        # The frames' generator: the dataset's seed (not the sampler's), the same on both paths; one per rank.
        generator = epoch_generator(self.dataset.seed, epoch, self.device, self.rank)
        if self.resident is not None:
            self.resident.set_epoch(epoch)
            for i, index in enumerate(videos):
                yield self.resident.batch(index, classes[i] if classes is not None else None, generator)
            return
        yield from self.streamed.batches(videos, classes, generator)


class EvalStream:
    """Every video of a subset once, in table order, with uniformly spaced frames."""

    def __init__(self, dataset: VideoFeatureDataset, batch_size: int, device: torch.device,
                 resident: GpuResidentFeatures | None = None, workers: int = 0) -> None:
        self.dataset, self.resident = dataset, resident
        self.batch_size, self.device, self.workers = batch_size, device, workers
        self.streamed = StreamedFeatures(dataset, device, workers) if resident is None else None

    @property
    def video_ids(self) -> list[str]:
        return self.dataset.video_ids

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = np.arange(len(self.dataset), dtype=np.int64)
        videos = _on_device([order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)],
                            self.device)
        if self.resident is not None:
            for index in videos:
                yield self.resident.batch(index)
            return
        yield from self.streamed.batches(videos)
