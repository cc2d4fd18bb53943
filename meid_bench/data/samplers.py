"""Samplers over a multi-label training set: instance, class-balanced (CBS) and square-root (SRS).

Each yields ``(video index, sampled class)`` pairs (class -1 for the instance sampler), ``num_samples`` per epoch
(the number of training videos by default). The stream depends only on the seed and the epoch given to
:meth:`set_epoch`, so a resumed run sees the same samples. A video counts for every class it carries; videos
without labels are never drawn by the class samplers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.utils.data

from meid_bench.errors import MeidBenchError
from meid_bench.registry import Registry, SplitStats


def _labels_matrix(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be a [videos, classes] multi-hot matrix, got shape {labels.shape}")
    return labels.astype(bool)


class _SeededSampler(torch.utils.data.Sampler):
    def __init__(self, labels: np.ndarray, num_samples: int | None = None, seed: int = 0) -> None:
        self.labels = _labels_matrix(labels)
        self.num_samples = len(self.labels) if num_samples is None else int(num_samples)
        if self.num_samples < 0:
            raise MeidBenchError(f"num_samples {num_samples}: must be >= 0")
        self.seed = int(seed)
        self.epoch = 0

    @classmethod
    def from_options(cls, options: Any, stats: SplitStats, *, labels: np.ndarray, seed: int = 0,
                     num_samples: int | None = None) -> "_SeededSampler":
        """The registry's factory (the options only say how the loss is masked: the loop reads them)."""
        return cls(labels, num_samples=num_samples, seed=seed)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, 0x5A])

    def draws(self) -> tuple[np.ndarray, np.ndarray]:
        """This epoch's whole stream as two int64 arrays: video indices and sampled classes."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[int, int]]:
        videos, classes = self.draws()
        return iter(zip(videos.tolist(), classes.tolist()))

    def index_batches(self, batch_size: int, rank: int = 0, world: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
        """This epoch's draws as batches of ``batch_size`` (video indices, sampled classes); with ``world``
        processes, rank ``rank``'s share of each batch (every ``world``-th draw), so that the ranks together see
        exactly the single-process batch.

        A batch with fewer draws than there are ranks (the epoch's last one: VideoLT's 179,334 training videos
        leave 6 in the last batch of 128) would leave some ranks nothing to train on, and an empty batch has no
        loss. Each rank then takes draw ``rank % draws`` of it instead: every rank steps on one video, a few draws
        counted twice in that one step. Every rank computes the same draws, so all agree without talking.
        """
        if batch_size < 1 or world < 1 or not 0 <= rank < world:
            raise ValueError(f"index_batches: batch_size {batch_size} and world {world} must be >= 1 and rank "
                             f"{rank} in [0, {world})")
        videos, classes = self.draws()
        shares = []
        for start in range(0, len(videos), batch_size):
            batch_videos, batch_classes = videos[start:start + batch_size], classes[start:start + batch_size]
            if len(batch_videos) < world:
                pick = slice(rank % len(batch_videos), rank % len(batch_videos) + 1)
            else:
                pick = slice(rank, None, world)
            shares.append((batch_videos[pick], batch_classes[pick]))
        return shares


class InstanceSampler(_SeededSampler):
    """Every video once per pass, in a fresh random order each epoch (passes repeat to fill ``num_samples``)."""

    def draws(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self._rng()
        count = len(self.labels)
        if count == 0 or self.num_samples == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        passes = -(-self.num_samples // count)
        videos = np.concatenate([rng.permutation(count) for _ in range(passes)])[: self.num_samples]
        return videos.astype(np.int64), np.full(self.num_samples, -1, dtype=np.int64)


class _ClassSampler(_SeededSampler):
    """Draw a class with probability proportional to (videos of the class) ** power, then one of its videos."""

    power = 0.0

    def __init__(self, labels: np.ndarray, num_samples: int | None = None, seed: int = 0) -> None:
        super().__init__(labels, num_samples, seed)
        rows, cols = np.nonzero(self.labels.T)  # class-major: the videos of each class, consecutive
        self.class_counts = self.labels.sum(axis=0).astype(np.int64)
        self._members = cols.astype(np.int64)
        self._starts = np.concatenate([[0], np.cumsum(self.class_counts)[:-1]]).astype(np.int64)
        weights = np.where(self.class_counts > 0, self.class_counts.astype(np.float64) ** self.power, 0.0)
        if weights.sum() == 0 and self.num_samples:
            raise MeidBenchError("class-aware sampling needs at least one labelled training video")
        self.class_probabilities = weights / weights.sum() if weights.sum() else weights

    def draws(self) -> tuple[np.ndarray, np.ndarray]:
        if self.num_samples == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        rng = self._rng()
        classes = rng.choice(len(self.class_counts), size=self.num_samples, p=self.class_probabilities)
        picks = np.floor(rng.random(self.num_samples) * self.class_counts[classes]).astype(np.int64)
        return self._members[self._starts[classes] + picks], classes.astype(np.int64)


class ClassBalancedSampler(_ClassSampler):
    """CBS: a class uniformly among those with training videos, then one of its videos uniformly."""

    power = 0.0


class SquareRootSampler(_ClassSampler):
    """SRS: a class with probability proportional to the square root of its training videos, then one of them."""

    power = 0.5


@dataclass(frozen=True)
class InstanceSamplerOptions:
    """Instance sampling draws no class, so there is no class to mask around: ``label_mask`` must stay false (it
    is a key here so that every sampler section reads the same)."""

    label_mask: bool = False

    def problems(self) -> list[tuple[str, str]]:
        if self.label_mask:
            return [("label_mask", "applies to cbs/srs sampling only; set it to false or change the sampler name")]
        return []


@dataclass(frozen=True)
class ClassSamplerOptions:
    """label_mask: the reference's mask 1 - (labels - onehot(sampled class)), which trains only the sampled class
    among the video's positives."""

    label_mask: bool = False


# A sampler's factory: options, split statistics, and the training labels [videos, classes] it draws from.
SAMPLERS: Registry[_SeededSampler] = Registry("sampler")
SAMPLERS.register("instance", InstanceSamplerOptions)(InstanceSampler)
SAMPLERS.register("cbs", ClassSamplerOptions)(ClassBalancedSampler)
SAMPLERS.register("srs", ClassSamplerOptions)(SquareRootSampler)


def create_sampler(name: str, labels: np.ndarray, *, seed: int = 0, num_samples: int | None = None,
                   options: Any = None) -> _SeededSampler:
    """The sampler ``name`` over the multi-hot training ``labels`` [videos, classes]."""
    matrix = _labels_matrix(labels)
    stats = SplitStats(max(matrix.shape[1], 1), num_videos=len(matrix) or None)
    return SAMPLERS.create(name, {} if options is None else options, stats, labels=matrix, seed=seed,
                           num_samples=num_samples)


def label_mask(labels: np.ndarray, sampled_class: int) -> np.ndarray:
    """The reference's loss mask for a video drawn for ``sampled_class``: 1 - (labels - onehot(class)), i.e. the
    video's other positive labels are ignored. All ones when no class was sampled (-1)."""
    labels = np.asarray(labels, dtype=np.float32)
    if sampled_class < 0:
        return np.ones_like(labels)
    onehot = np.zeros_like(labels)
    onehot[sampled_class] = 1.0
    return np.clip(1.0 - (labels - onehot), 0.0, 1.0)  # a class the video lacks stays a plain negative


def label_masks(targets: torch.Tensor, sampled_classes: torch.Tensor) -> torch.Tensor:
    """:func:`label_mask` for a batch, on the targets' device: targets float [B, C], sampled classes int64 [B]
    (-1: none). No data-dependent shapes, so no host synchronisation on an accelerator."""
    drawn = (sampled_classes >= 0).unsqueeze(1)
    onehot = torch.nn.functional.one_hot(sampled_classes.clamp(min=0), targets.shape[1]).to(targets.dtype)
    mask = (1.0 - (targets - onehot)).clamp(0.0, 1.0)
    return torch.where(drawn, mask, torch.ones_like(mask))
