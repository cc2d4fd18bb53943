"""Frames held on the device: a subset's frames as one tensor, whole batches sampled and gathered there."""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from meid_bench.build.features.store import FeatureStore
from meid_bench.data.dataset import VideoFeatureDataset
from meid_bench.data.frame_labels import PackedFrameLabels
from meid_bench.data.frame_sampling import draw_frames, epoch_generator, uniform_frames
from meid_bench.data.samplers import label_masks
from meid_bench.data.staging import StagingFences
from meid_bench.errors import MeidBenchError

LOAD_CHUNK_BYTES = 64 << 20  # host staging for a copy to an accelerator; the host never holds more than two


def frames_nbytes(store: FeatureStore, positions: np.ndarray) -> int:
    """Bytes that the frames of the videos at ``positions`` take in the store dtype (on the device too)."""
    positions = np.asarray(positions, dtype=np.int64)
    rows = int((store.offsets[positions + 1] - store.offsets[positions]).sum())
    return rows * store.dim * store.dtype.itemsize


def _row_ranges(store: FeatureStore, positions: np.ndarray) -> list[tuple[int, int]]:
    """The store rows of the videos at ``positions``, in that order, as maximal ranges of consecutive rows."""
    starts, ends = store.offsets[positions], store.offsets[positions + 1]
    if len(starts) == 0:
        return []
    breaks = np.flatnonzero(starts[1:] != ends[:-1]) + 1
    lo = np.concatenate([[0], breaks])
    hi = np.concatenate([breaks, [len(starts)]]) - 1
    return [(int(starts[a]), int(ends[b])) for a, b in zip(lo, hi)]


def load_frames(store: FeatureStore, positions: np.ndarray, device: torch.device,
                chunk_bytes: int = LOAD_CHUNK_BYTES) -> torch.Tensor:
    """The frames of the videos at ``positions`` (in that order) as one tensor [rows, dim] in the store dtype on
    ``device``. On the CPU the store is read straight into the tensor; on an accelerator through two reused
    (pinned) staging buffers of ``chunk_bytes``, so the host never holds a full copy."""
    ranges = _row_ranges(store, np.asarray(positions, dtype=np.int64))
    total = sum(hi - lo for lo, hi in ranges)
    torch_dtype = torch.from_numpy(np.empty(0, dtype=store.dtype)).dtype
    frames = torch.empty((total, store.dim), dtype=torch_dtype, device=device)
    if device.type == "cpu":
        host = frames.numpy()
        done = 0
        for lo, hi in ranges:
            store.read_rows(lo, hi, host[done:done + hi - lo])
            done += hi - lo
        return frames
    rows_per_chunk = max(1, chunk_bytes // (store.dim * store.dtype.itemsize))
    fences = StagingFences(device, 2)  # per buffer: the end of its last copy, on the target device's stream
    pin = fences.pinned
    staging = [torch.empty((rows_per_chunk, store.dim), dtype=torch_dtype, pin_memory=pin) for _ in range(2)]
    done, turn = 0, 0
    for lo, hi in ranges:
        for start in range(lo, hi, rows_per_chunk):
            count = min(rows_per_chunk, hi - start)
            fences.wait(turn)  # the copy out of this buffer has finished: it may be refilled
            buffer = staging[turn][:count]
            store.read_rows(start, start + count, buffer.numpy())
            frames[done:done + count].copy_(buffer, non_blocking=pin)
            fences.copied(turn)
            done += count
            turn = 1 - turn
    fences.wait_all()  # the frames are complete when this returns, and the buffers are free
    return frames


class GpuResidentFeatures:
    """All frames of a subset as one device tensor plus offsets; whole batches are sampled on the device.

    For benchmarks that fit in accelerator memory: no DataLoader, no workers. Built from a
    :class:`VideoFeatureDataset` (its videos, targets, ``num_frames``, ``train``, seed and ``frame_labels``: batches
    then carry the drawn frames' labels), or from a
    :class:`FeatureStore` with ``video_ids`` and ``num_frames`` (no targets). Frames are loaded in chunks (the host
    never holds a full copy), keep the store's dtype on the device and are returned as float32, in the same dict
    form as the dataset's batches.
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
        self.frames = load_frames(store, positions, self.device)
        self.offsets = torch.from_numpy(offsets).to(self.device)
        self.lengths = torch.from_numpy(lengths.astype(np.int64)).to(self.device)
        self.targets = None if targets is None else torch.from_numpy(np.asarray(targets, np.float32)).to(self.device)
        self.frame_labels: PackedFrameLabels | None = None
        if isinstance(source, VideoFeatureDataset) and source.frame_labels:
            self.frame_labels = PackedFrameLabels(store, positions, self.device)
            self.store_rows = torch.from_numpy(store.offsets[positions].astype(np.int64)).to(self.device)
        self.epoch = 0

    def sampled(self, num_frames: int, train: bool) -> "GpuResidentFeatures":
        """The same resident frames (no copy) read with another frame count or sampling rule."""
        view = object.__new__(GpuResidentFeatures)
        view.__dict__.update(self.__dict__)
        view.num_frames, view.train = int(num_frames), bool(train)
        return view

    def __len__(self) -> int:
        return len(self.video_ids)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def generator(self) -> torch.Generator:
        """A device generator for this seed and epoch."""
        return epoch_generator(self.seed, self.epoch, self.device)

    def batch(self, indices: torch.Tensor | np.ndarray | list[int], sampled_classes: Any = None,
              generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Frames of the videos ``indices``: {"features" [B, num_frames, dim] float32, "index" [B], and "target"
        [B, C] (and "mask" when ``sampled_classes`` is given) when targets are known}."""
        index = torch.as_tensor(indices, dtype=torch.int64, device=self.device)
        lengths = self.lengths[index]
        if self.train:
            frame = draw_frames(lengths, self.num_frames, generator)
        else:
            frame = uniform_frames(lengths, self.num_frames)
        rows = self.offsets[index].unsqueeze(1) + frame
        out = {"features": self.frames[rows].float(), "index": index}
        if self.frame_labels is not None:
            out["frame_labels"] = self.frame_labels.rows(self.store_rows[index].unsqueeze(1) + frame)
        if self.targets is not None:
            out["target"] = self.targets[index]
            if sampled_classes is not None:
                classes = torch.as_tensor(sampled_classes, dtype=torch.int64, device=self.device)
                out["mask"] = label_masks(out["target"], classes)
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
