"""Frames streamed from a feature store batch by batch, for subsets too large to hold on the device.

One gather per batch: the batch's store rows are taken from a memory map of the store's frame block (no system
call, no allocation per video) into a reused host buffer (pinned on CUDA), in the store's dtype; float16 stays
float16 until the device and is converted there. Background threads gather the next batches while the model
works on the current one (numpy releases the GIL while it copies, and page faults wait outside it).

:class:`StreamedFeatures` draws its frames exactly as :class:`~meid_bench.data.resident.GpuResidentFeatures`
does (same generator, same order), so a run is the same whether the features are resident or streamed.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from meid_bench.build.features.store import FeatureStore
from meid_bench.data.dataset import VideoFeatureDataset
from meid_bench.data.frame_labels import PackedFrameLabels
from meid_bench.data.frame_sampling import draw_frames, uniform_frames
from meid_bench.data.samplers import label_masks
from meid_bench.data.staging import StagingFences


_ADVICE = hasattr(mmap.mmap, "madvise") and hasattr(mmap, "MADV_RANDOM") and hasattr(mmap, "MADV_WILLNEED")


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


class MappedFrames:
    """A read-only memory map of a contiguous store's frame matrix, ``matrix`` [total_frames, dim].

    The map is advised MADV_RANDOM: a page fault then reads only its page, not the kernel's read-around window
    (often megabytes) around it. :meth:`prefetch` asks the kernel to start reading row ranges (MADV_WILLNEED)
    without waiting, so that the reads of a whole batch are in flight at once before it is gathered. (Where the
    platform has no madvise, pages are simply read on first touch.) The store is checked at open to hold all its
    frames; a store truncated while mapped would end the process (SIGBUS), as with any memory map.
    """

    def __init__(self, store: FeatureStore) -> None:
        offset = store.frames_offset
        if offset is None:
            raise ValueError(f"{store.path}: the frames are not one plain block of the file (a chunked store)")
        self.row_bytes = store.dim * store.dtype.itemsize
        self._start = offset - offset % mmap.ALLOCATIONGRANULARITY
        self._skip = offset - self._start
        length = self._skip + store.total_frames * self.row_bytes
        with open(store.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), length, access=mmap.ACCESS_READ, offset=self._start)
        if _ADVICE:
            self._map.madvise(mmap.MADV_RANDOM)
        self.matrix = np.frombuffer(self._map, dtype=store.dtype, count=store.total_frames * store.dim,
                                    offset=self._skip).reshape(store.total_frames, store.dim)

    def prefetch(self, lo: np.ndarray, hi: np.ndarray) -> None:
        """Start reading rows ``lo[i]:hi[i]`` for every i (page-aligned outward)."""
        if not _ADVICE:
            return
        page = mmap.PAGESIZE
        first = (self._skip + np.asarray(lo, np.int64) * self.row_bytes) // page * page
        last = self._skip + np.asarray(hi, np.int64) * self.row_bytes
        for a, b in zip(first.tolist(), last.tolist()):
            self._map.madvise(mmap.MADV_WILLNEED, a, b - a)


READ_GAP_ROWS = 4  # wanted rows at most this far apart are read as one range


class BatchGatherer:
    """Gathers batches of store rows into float32 tensors on ``device``, ``threads`` batches ahead.

    :meth:`gather` takes int64 row arrays (any shape, e.g. [videos, frames]) and yields float32 tensors of shape
    ``rows.shape + (dim,)`` (in the store's dtype with ``widen=False``). Buffers are reused: on the CPU a yielded
    tensor is valid until the next one is requested (clone it to keep it); on an accelerator each yielded tensor
    is a fresh device tensor. ``threads=0`` gathers in the calling thread, without read-ahead.
    """

    def __init__(self, store: FeatureStore, device: str | torch.device = "cpu", threads: int = 1,
                 widen: bool = True) -> None:
        self.store, self.device, self.threads = store, torch.device(device), max(0, int(threads))
        self.widen = bool(widen)
        self._mapped: MappedFrames | None = None
        self._pid = -1
        self._hosts: list[torch.Tensor] | None = None
        self._widened: list[torch.Tensor] | None = None
        # Per host buffer, the end of its last copy to the device (recorded on the target device's stream).
        self._fences = StagingFences(self.device, 0)
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()

    def unmap(self) -> None:
        """Release the memory map of the store (the next gather maps it again); buffers are kept."""
        with self._lock:
            self._mapped, self._pid = None, -1

    def _frames(self) -> MappedFrames | None:
        with self._lock:  # gathering threads share one map
            if self._pid != os.getpid():  # map in each process; never reuse a parent's mapping
                self._mapped = MappedFrames(self.store) if self.store.frames_offset is not None else None
                self._pid = os.getpid()
            return self._mapped

    def _advise(self, rows: np.ndarray) -> None:
        """Start reading the pages of ``rows`` (a contiguous store), without waiting."""
        mapped = self._frames()
        if mapped is None or len(rows) == 0:
            return
        steps = np.diff(rows)  # each video's rows are sorted: a run ends where rows go back or jump
        breaks = np.flatnonzero((steps < 0) | (steps > READ_GAP_ROWS)) + 1
        mapped.prefetch(rows[np.concatenate([[0], breaks])], rows[np.concatenate([breaks - 1, [len(rows) - 1]])] + 1)

    def _gather_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        mapped = self._frames()
        if mapped is not None:
            # mode="clip": no bounds-checking copy of the output (rows come from the store's own offsets)
            np.take(mapped.matrix, rows, axis=0, out=out, mode="clip")
            return
        # A chunked store: read each run of consecutive wanted rows once, then place them.
        unique, inverse = np.unique(rows, return_inverse=True)
        runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1)
        with self._read_lock:  # one HDF5 handle, opened once
            block = np.concatenate([self.store.read_rows(int(r[0]), int(r[-1]) + 1) for r in runs])
        np.take(block, inverse.reshape(-1), axis=0, out=out)

    def _buffers(self, rows: int) -> tuple[list[torch.Tensor], list[torch.Tensor] | None]:
        """Host buffers of at least ``rows`` rows, one per slot, kept from one :meth:`gather` to the next."""
        if self._hosts is None or self._hosts[0].shape[0] < rows:
            self._fences.wait_all()
            self._fences = StagingFences(self.device, self.threads + 1)
            pin = self._fences.pinned
            dtype = _torch_dtype(self.store.dtype)
            shape = (rows, self.store.dim)
            self._hosts = [torch.empty(shape, dtype=dtype, pin_memory=pin) for _ in range(self.threads + 1)]
            # On the CPU a float16 store is widened once more, into reused float32 buffers, by the gathering thread.
            self._widened = ([torch.empty(shape, dtype=torch.float32) for _ in range(self.threads + 1)]
                             if self.widen and self.device.type == "cpu" and dtype != torch.float32 else None)
        return self._hosts, self._widened

    def gather(self, row_batches: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        """Float32 tensors [*rows.shape, dim] of the rows of each array of ``row_batches``, in order (one
        iteration at a time per gatherer)."""
        count = len(row_batches)
        if count == 0:
            return
        store, device = self.store, self.device
        slots = self.threads + 1
        hosts, widened = self._buffers(max(int(np.asarray(rows).size) for rows in row_batches))
        fences = self._fences
        on_cpu, pin = device.type == "cpu", fences.pinned

        def rows_of(i: int) -> np.ndarray:
            return np.ascontiguousarray(row_batches[i], dtype=np.int64).reshape(-1)

        def fill(i: int) -> int:
            # The reads of batch i + slots start now (those of the first batches at their own turn), so that a
            # cold store has the next batches' reads in flight while this one is copied.
            if i < slots:
                self._advise(rows_of(i))
            if i + slots < count:
                self._advise(rows_of(i + slots))
            slot = i % slots
            fences.wait(slot)  # the copy out of this buffer has finished: it may be refilled
            rows = rows_of(i)
            self._gather_into(rows, hosts[slot][:len(rows)].numpy())
            if widened is not None:
                widened[slot][:len(rows)].copy_(hosts[slot][:len(rows)])
            return slot

        def deliver(i: int, slot: int) -> torch.Tensor:
            shape = tuple(np.shape(row_batches[i])) + (store.dim,)
            size = int(np.prod(shape[:-1]))
            if on_cpu:
                return (widened if widened is not None else hosts)[slot][:size].view(shape)
            features = hosts[slot][:size].to(device, non_blocking=pin)
            fences.copied(slot)
            return (features.float() if self.widen else features).view(shape)

        if self.threads == 0:
            for i in range(count):
                yield deliver(i, fill(i))
            return
        with ThreadPoolExecutor(self.threads, thread_name_prefix="meid-gather") as pool:
            pending = deque(pool.submit(fill, i) for i in range(min(count, slots - 1)))
            for i in range(count):
                slot = pending.popleft().result()
                batch = deliver(i, slot)
                if i + slots - 1 < count:  # the slot of batch i - 1, released by this request
                    pending.append(pool.submit(fill, i + slots - 1))
                yield batch


class StreamedFeatures:
    """A dataset's frames read from its store per batch, with the frames :class:`GpuResidentFeatures` would draw.

    Built from a :class:`VideoFeatureDataset` (videos, targets, ``num_frames``, ``train``, seed). Batches are dicts
    {"features" float32 [B, num_frames, dim], "index" [B], "target" [B, C], "mask" when sampled classes are given,
    and "frame_labels" [B, num_frames, C] when the dataset has ``frame_labels``}, on ``device``. On the CPU "features" is valid until the next batch is requested (reused buffers).
    """

    def __init__(self, dataset: VideoFeatureDataset, device: str | torch.device = "cpu", threads: int = 1) -> None:
        self.device = torch.device(device)
        self.video_ids = dataset.video_ids
        self.num_frames, self.train, self.seed = dataset.num_frames, dataset.train, dataset.seed
        self.first_rows = dataset.store.offsets[dataset.positions].astype(np.int64)
        self.lengths = torch.from_numpy(dataset.lengths.astype(np.int64)).to(self.device)
        self.targets = torch.from_numpy(np.asarray(dataset.targets, np.float32)).to(self.device)
        self.gatherer = BatchGatherer(dataset.store, self.device, threads)
        self.frame_labels = (PackedFrameLabels(dataset.store, dataset.positions, self.device)
                             if dataset.frame_labels else None)
        self._first_rows_on_device: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.video_ids)

    def frame_rows(self, index_batches: Sequence[torch.Tensor], generator: torch.Generator | None) -> list[np.ndarray]:
        """The store rows [B, num_frames] each batch reads: all the epoch's frames are drawn first, batch after
        batch, as the resident path draws them, and brought to the host in one transfer."""
        return self._frame_rows(index_batches, generator)[0]

    def _frame_rows(self, index_batches: Sequence[torch.Tensor], generator: torch.Generator | None
                    ) -> tuple[list[np.ndarray], list[torch.Tensor] | None]:
        """:meth:`frame_rows`, and the same rows kept on the device when batches carry per-frame labels (read
        there each step, with no copy from the host)."""
        if not index_batches:
            return [], []
        frames = []
        for index in index_batches:
            lengths = self.lengths[index]
            frames.append(draw_frames(lengths, self.num_frames, generator) if self.train
                          else uniform_frames(lengths, self.num_frames))
        sizes = [len(index) for index in index_batches]
        on_device = None
        if self.frame_labels is not None:
            if self._first_rows_on_device is None:
                self._first_rows_on_device = torch.from_numpy(self.first_rows).to(self.device)
            joined = torch.cat(frames) + self._first_rows_on_device[torch.cat(list(index_batches))].unsqueeze(1)
            on_device = list(torch.split(joined, sizes))
        drawn = torch.cat(frames).cpu().numpy()
        videos = torch.cat(list(index_batches)).cpu().numpy()
        rows = drawn + self.first_rows[videos][:, None]
        return np.split(rows, np.cumsum(sizes)[:-1]), on_device

    def batches(self, index_batches: Sequence[torch.Tensor], class_batches: Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of videos ``index_batches`` (int64 tensors on the device), with label masks from
        ``class_batches`` when given; random frames come from ``generator`` (see :func:`epoch_generator`)."""
        rows, rows_on_device = self._frame_rows(index_batches, generator)
        for i, features in enumerate(self.gatherer.gather(rows)):
            index = index_batches[i]
            out = {"features": features, "index": index, "target": self.targets[index]}
            if self.frame_labels is not None:
                out["frame_labels"] = self.frame_labels.rows(rows_on_device[i])
            if class_batches is not None:
                out["mask"] = label_masks(out["target"], class_batches[i])
            yield out
