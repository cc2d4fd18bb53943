"""Torch datasets over a split and a feature store: a fixed number of frames per video, its target, its index.

Frame sampling follows the VideoLT reference: training draws ``num_frames`` frame indices at random with
replacement and sorts them; evaluation takes ``num_frames`` evenly spaced frames (frame
``floor((k + 0.5) * T / num_frames)``), so videos shorter than ``num_frames`` repeat frames.

Random draws come from a generator per (seed, epoch, DataLoader worker): workers draw distinct frames, and the
same seed, epoch and worker count reproduce the same batches. Call :meth:`VideoFeatureDataset.set_epoch` (or
:func:`set_epoch` on the loader) before each epoch; loaders made by :func:`make_loader` start fresh workers every
epoch so the new epoch reaches them.
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np
import torch
import torch.utils.data

from meid_bench.errors import MeidBenchError
from meid_bench.build.features.frames import pack_frame_labels
from meid_bench.build.features.store import FeatureStore
from meid_bench.data.samplers import SAMPLERS, label_mask

CACHE_MODES = ("none", "ram")


def uniform_frame_indices(length: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices (repeats when the video is shorter than ``num_frames``)."""
    return np.floor((np.arange(num_frames) + 0.5) * (length / num_frames)).astype(np.int64)


def random_frame_indices(length: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """``num_frames`` random indices with replacement, sorted (the reference's training sampling)."""
    return np.sort(rng.integers(0, length, size=num_frames))


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
                                 f"{', '.join(absent[:5])}); pack their features or use skip_missing")
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
                self._cache_frames[lo:hi] = self.store.read_at(int(position))
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
            "features": torch.from_numpy(self.read_frames(index, frames).astype(np.float32, copy=False)),
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
        raise MeidBenchError(f"sampler {name!r}: choose one of sequential, {', '.join(SAMPLERS)}")
    return SAMPLERS[name](dataset.targets, num_samples=num_samples, seed=seed)


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


class GpuResidentFeatures:
    """All frames of a subset as one device tensor plus offsets; whole batches are sampled on the device.

    For benchmarks small enough to sit in accelerator memory: no DataLoader, no workers. Built from a
    :class:`VideoFeatureDataset` (its videos, targets, ``num_frames``, ``train``, seed and ``frame_labels``), or from
    a :class:`FeatureStore` with ``video_ids`` and ``num_frames`` (no targets). Frames keep the store's dtype on the
    device and are returned as float32, in the same dict form as the dataset's batches; per-frame labels stay
    bit-packed on the device and are unpacked per batch.
    """

    def __init__(self, source: VideoFeatureDataset | FeatureStore, device: str | torch.device = "cpu", *,
                 video_ids: list[str] | None = None, num_frames: int | None = None, train: bool | None = None,
                 seed: int | None = None) -> None:
        self.device = torch.device(device)
        if isinstance(source, VideoFeatureDataset):
            store, self.video_ids = source.store, list(source.video_ids)
            positions, targets = source.positions, source.targets
            num_frames = source.num_frames if num_frames is None else num_frames
            train = source.train if train is None else train
            seed = source.seed if seed is None else seed
        else:
            store = source
            self.video_ids = list(store.video_ids) if video_ids is None else list(video_ids)
            positions = np.array([store.index_of(v) for v in self.video_ids], dtype=np.int64)
            targets = None
            if num_frames is None:
                raise MeidBenchError("GpuResidentFeatures over a store needs num_frames")
        self.num_frames, self.train, self.seed = int(num_frames), bool(train), int(seed or 0)
        lengths = store.offsets[positions + 1] - store.offsets[positions]
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        frames = np.empty((int(lengths.sum()), store.dim), dtype=store.dtype)
        for start, length, position in zip(offsets, lengths, positions):
            frames[start:start + length] = store.read_at(int(position))
        self.frames = torch.from_numpy(frames).to(self.device)
        self.offsets = torch.from_numpy(offsets).to(self.device)
        self.lengths = torch.from_numpy(lengths.astype(np.int64)).to(self.device)
        self.targets = None if targets is None else torch.from_numpy(np.asarray(targets, np.float32)).to(self.device)
        self.frame_labels: torch.Tensor | None = None
        self.num_classes = store.num_classes
        if isinstance(source, VideoFeatureDataset) and source.frame_labels:
            packed = np.concatenate([pack_frame_labels(store.read_frame_labels_at(int(position)))
                                     for position in positions])
            self.frame_labels = torch.from_numpy(packed).to(self.device)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.video_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self) -> torch.Generator:
        """A device generator for this seed and epoch."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed((self.seed * 1_000_003 + self.epoch) & 0x7FFFFFFFFFFFFFFF)
        return generator

    def batch(self, indices: torch.Tensor | np.ndarray | list[int], sampled_classes: Any = None,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Frames of the videos ``indices``: {"features" [B, num_frames, dim] float32, "index" [B], and "target"
        [B, C] (and "mask" when ``sampled_classes`` is given) when targets are known}."""
        index = torch.as_tensor(indices, dtype=torch.int64, device=self.device)
        lengths = self.lengths[index].unsqueeze(1)
        if self.train:
            draws = torch.rand((len(index), self.num_frames), device=self.device, generator=generator)
            frame = torch.minimum((draws * lengths).long(), lengths - 1).sort(dim=1).values
        else:
            steps = torch.arange(self.num_frames, device=self.device, dtype=torch.float64) + 0.5
            frame = torch.floor(steps * lengths.double() / self.num_frames).long()
        rows = self.offsets[index].unsqueeze(1) + frame
        out = {"features": self.frames[rows].float(), "index": index}
        if self.frame_labels is not None:
            bits = torch.arange(8, device=self.device, dtype=torch.uint8)
            unpacked = (self.frame_labels[rows].unsqueeze(-1) >> bits) & 1  # little bit order, as stored
            out["frame_labels"] = unpacked.flatten(-2)[..., :self.num_classes].float()
        if self.targets is not None:
            out["target"] = self.targets[index]
            if sampled_classes is not None:
                classes = torch.as_tensor(sampled_classes, dtype=torch.int64, device=self.device)
                onehot = torch.zeros_like(out["target"])
                drawn = classes >= 0
                onehot[drawn.nonzero().squeeze(1), classes[drawn]] = 1.0
                mask = (1.0 - (out["target"] - onehot)).clamp(0.0, 1.0)
                mask[~drawn] = 1.0
                out["mask"] = mask
        return out

    def batches(self, batch_size: int, sampler: Any = None, drop_last: bool = False) -> Iterator[dict]:
        """One epoch of batches: drawn by ``sampler`` (one of :mod:`meid_bench.data.samplers`, its epoch set to
        this one) or every video in order."""
        if sampler is not None:
            sampler.set_epoch(self.epoch)
            videos, classes = sampler.draws()
        else:
            videos, classes = np.arange(len(self)), None
        generator = self.generator()
        for start in range(0, len(videos), batch_size):
            stop = start + batch_size
            if drop_last and stop > len(videos):
                break
            chosen = classes[start:stop] if classes is not None else None
            yield self.batch(videos[start:stop], chosen, generator)
