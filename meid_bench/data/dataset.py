"""A torch dataset over a split and a feature store, item by item: a fixed number of frames per video, its target,
its index; for users who compose their own pipelines (DataLoader, workers, collate). Training itself reads whole
batches (:mod:`meid_bench.data.resident`, :mod:`meid_bench.data.streamed`).

Frame sampling follows the VideoLT reference (:mod:`meid_bench.data.frame_sampling`): training draws
``num_frames`` frame indices at random with replacement and sorts them; evaluation takes ``num_frames`` evenly
spaced frames.

Random draws come from a generator per (seed, epoch, DataLoader worker): workers draw distinct frames, and the
same seed, epoch and worker count reproduce the same batches. Call :meth:`VideoFeatureDataset.set_epoch` (or
:func:`set_epoch` on the loader) before each epoch; loaders made by :func:`make_loader` start fresh workers every
epoch so the new epoch reaches them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.utils.data

from meid_bench.errors import MeidBenchError
from meid_bench.build.features.store import FeatureStore
from meid_bench.data.frame_sampling import random_frame_indices, uniform_frame_indices
from meid_bench.data.samplers import SAMPLERS, create_sampler, label_mask

CACHE_MODES = ("none", "ram")


class VideoFeatureDataset(torch.utils.data.Dataset):
    """The videos of one subset of a split, read from a feature store.

    Items are dicts: ``features`` float32 [num_frames, dim], ``target`` float32 [classes], ``index`` (position in
    this dataset, i.e. in ``video_ids``), plus ``frame_labels`` float32 [num_frames, classes] with
    ``frame_labels=True``, and ``mask`` float32 [classes] with ``label_mask=True`` (the reference's mask for an
    item drawn as ``(index, sampled_class)`` by a class-aware sampler; all ones otherwise).
    ``cache="ram"`` loads the subset's frames into memory once (shared with forked workers).
    Videos the store records as missing are an error unless ``skip_missing`` (then left out of the dataset).
    """

    def __init__(self, split: Any, store_or_path: FeatureStore | str | os.PathLike, subset: str, num_frames: int,
                 train: bool, seed: int = 0, cache: str = "none", frame_labels: bool = False,
                 label_mask: bool = False, skip_missing: bool = False) -> None:
        self.store = store_or_path if isinstance(store_or_path, FeatureStore) else FeatureStore(store_or_path)
        if cache not in CACHE_MODES:
            raise MeidBenchError(f"cache {cache!r}: choose one of {', '.join(CACHE_MODES)}")
        if num_frames < 1:
            raise MeidBenchError(f"num_frames {num_frames}: must be >= 1")
        self.store.check_split(split, subsets=(subset,))
        if frame_labels and not self.store.has_frame_labels:
            raise MeidBenchError(f"{self.store.path}: holds no per-frame labels; synthesise or pack it with "
                                 "--frame-labels, or do not ask for frame labels")
        table = split.table(subset)
        targets = split.multi_hot(subset)
        ids = list(table["video_id"])
        keep = np.array([v in self.store for v in ids], dtype=bool)
        if not keep.all() and not skip_missing:
            absent = [v for v, k in zip(ids, keep) if not k]
            raise MeidBenchError(f"{self.store.path}: {len(absent)} {subset} videos are recorded missing (first: "
                                 f"{', '.join(absent[:5])}); training and evaluation need every video: extract "
                                 "them again once their sources are readable (`meid-bench features extract ... "
                                 "--resume`) or pack their features (`meid-bench features pack`); a Python script "
                                 "may leave them out with VideoFeatureDataset(..., skip_missing=True)")
        self.subset = subset
        self.video_ids: list[str] = [v for v, k in zip(ids, keep) if k]
        self.targets = targets[keep].astype(np.float32)
        self.positions = np.array([self.store.index_of(v) for v in self.video_ids], dtype=np.int64)
        self.lengths = (self.store.offsets[self.positions + 1] - self.store.offsets[self.positions]).astype(np.int64)
        self.num_frames = int(num_frames)
        self.train = bool(train)
        self.seed = int(seed)
        self.frame_labels = bool(frame_labels)
        self.label_mask = bool(label_mask)
        self.cache = cache
        self.epoch = 0
        self._rng_key: tuple[int, int, int] | None = None
        self._rng: np.random.Generator | None = None
        self._cache_frames: np.ndarray | None = None
        self._cache_offsets: np.ndarray | None = None
        if cache == "ram":
            self._cache_offsets = np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int64)
            self._cache_frames = np.empty((int(self._cache_offsets[-1]), self.store.dim), dtype=self.store.dtype)
            for row, position in enumerate(self.positions):
                lo, hi = self._cache_offsets[row], self._cache_offsets[row + 1]
                first = int(self.store.offsets[position])
                self.store.read_rows(first, first + int(hi - lo), self._cache_frames[lo:hi])
            self.store.close()  # no handle inherited by forked workers

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def num_classes(self) -> int:
        return self.targets.shape[1]

    def __len__(self) -> int:
        return len(self.video_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _generator(self) -> np.random.Generator:
        info = torch.utils.data.get_worker_info()
        worker = -1 if info is None else info.id
        key = (self.epoch, worker, os.getpid())
        if self._rng_key != key:
            self._rng = np.random.default_rng([self.seed & 0xFFFFFFFF, self.epoch, worker + 1, 0xDA7A])
            self._rng_key = key
        return self._rng

    def frame_indices(self, index: int) -> np.ndarray:
        """The frame indices the next item of video ``index`` reads."""
        length = int(self.lengths[index])
        if self.train:
            return random_frame_indices(length, self.num_frames, self._generator())
        return uniform_frame_indices(length, self.num_frames)

    def read_frames(self, index: int, frame_indices: np.ndarray) -> np.ndarray:
        if self._cache_frames is not None:
            return self._cache_frames[self._cache_offsets[index] + frame_indices]
        return self.store.read_frames_at(int(self.positions[index]), frame_indices)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        index, sampled_class = (int(item[0]), int(item[1])) if isinstance(item, (tuple, list)) else (int(item), -1)
        frames = self.frame_indices(index)
        out: dict[str, Any] = {
            # torch widens float16 about ten times faster than numpy's astype
            "features": torch.from_numpy(self.read_frames(index, frames)).to(torch.float32),
            "target": torch.from_numpy(self.targets[index]),
            "index": index,
        }
        if self.frame_labels:
            labels = self.store.read_frame_labels_at(int(self.positions[index]), frames)
            out["frame_labels"] = torch.from_numpy(labels.astype(np.float32))
        if self.label_mask:
            out["mask"] = torch.from_numpy(label_mask(self.targets[index], sampled_class))
        return out


def make_sampler(name: str, dataset: VideoFeatureDataset, seed: int, num_samples: int | None = None
                 ) -> torch.utils.data.Sampler | None:
    """``instance``, ``cbs`` or ``srs`` over the dataset's targets; ``sequential`` gives None (in order)."""
    if name == "sequential":
        return None
    if name not in SAMPLERS:
        raise MeidBenchError(f"sampler {name!r}: choose one of sequential, {', '.join(SAMPLERS.names())}")
    return create_sampler(name, dataset.targets, seed=seed, num_samples=num_samples)


def make_loader(dataset: VideoFeatureDataset, sampler_name: str, batch_size: int, workers: int, seed: int,
                num_samples: int | None = None, drop_last: bool = False, pin_memory: bool = False
                ) -> torch.utils.data.DataLoader:
    """A DataLoader over ``dataset`` drawn by the named sampler (``sequential`` for evaluation). Workers are
    started afresh each epoch so :func:`set_epoch` reaches them."""
    sampler = make_sampler(sampler_name, dataset, seed, num_samples)
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
                                       num_workers=int(workers), drop_last=drop_last, pin_memory=pin_memory,
                                       persistent_workers=False)


def set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    """Set the epoch of a loader's sampler and dataset (call before iterating the epoch)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)
