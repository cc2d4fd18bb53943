"""Frames streamed from a feature store batch by batch, for subsets too large to hold on the device.

One gather per batch: the batch's store rows are taken from a memory map of the store's frame block (no system
call, no allocation per video) into a reused host buffer (pinned on CUDA), in the store's dtype; float16 stays
float16 until the device and is converted there. Background threads gather the next batches while the model
works on the current one (numpy releases the GIL while it copies, and page faults wait outside it).

:class:`StreamedFeatures` draws its frames exactly as :class:`~meid_bench.data.resident.GpuResidentFeatures`
does (same generator, same order), so a run is the same whether the features are resident or streamed.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from meid_bench.build.features.store import FeatureStore
from meid_bench.data.dataset import VideoFeatureDataset
from meid_bench.data.frame_sampling import draw_frames, uniform_frames
from meid_bench.data.samplers import label_masks


def _torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype


class BatchGatherer:
    """Gathers batches of store rows into float32 tensors on ``device``, ``threads`` batches ahead.

    :meth:`gather` takes int64 row arrays (any shape, e.g. [videos, frames]) and yields float32 tensors of shape
    ``rows.shape + (dim,)``. Buffers are reused: on the CPU a yielded tensor is valid until the next one is
    requested (clone it to keep it); on an accelerator each yielded tensor is a fresh device tensor.
    ``threads=0`` gathers in the calling thread, without read-ahead.
    """

    def __init__(self, store: FeatureStore, device: str | torch.device = "cpu", threads: int = 1) -> None:
        self.store, self.device, self.threads = store, torch.device(device), max(0, int(threads))
        self._matrix: np.ndarray | None = None
        self._pid = -1
        self._lock = threading.Lock()

    def _frame_matrix(self) -> np.ndarray | None:
        if self._pid != os.getpid():  # map in each process; never reuse a parent's mapping
            self._matrix, self._pid = self.store.frame_matrix(), os.getpid()
        return self._matrix

    def _gather_into(self, rows: np.ndarray, out: np.ndarray) -> None:
        matrix = self._frame_matrix()
        if matrix is not None:
            # mode="clip": no bounds-checking copy of the output (rows come from the store's own offsets)
            np.take(matrix, rows, axis=0, out=out, mode="clip")
            return
        # A chunked store: read each run of consecutive wanted rows once, then place them.
        unique, inverse = np.unique(rows, return_inverse=True)
        runs = np.split(unique, np.flatnonzero(np.diff(unique) != 1) + 1)
        with self._lock:  # one HDF5 handle, opened once
            block = np.concatenate([self.store.read_rows(int(r[0]), int(r[-1]) + 1) for r in runs])
        np.take(block, inverse.reshape(-1), axis=0, out=out)

    def gather(self, row_batches: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        count = len(row_batches)
        if count == 0:
            return
        store, device = self.store, self.device
        on_cpu, pin = device.type == "cpu", device.type == "cuda"
        slots = self.threads + 1
        most = max(int(np.asarray(rows).size) for rows in row_batches)
        dtype = _torch_dtype(store.dtype)
        hosts = [torch.empty((most, store.dim), dtype=dtype, pin_memory=pin) for _ in range(slots)]
        # On the CPU a float16 store is converted once more, into reused float32 buffers (by the gathering thread).
        widened = ([torch.empty((most, store.dim), dtype=torch.float32) for _ in range(slots)]
                   if on_cpu and dtype != torch.float32 else None)
        copied: list[Any] = [None] * slots  # accelerator: an event marking the last copy out of each host buffer

        def fill(i: int) -> int:
            slot = i % slots
            if copied[slot] is not None:
                copied[slot].synchronize()
            rows = np.ascontiguousarray(row_batches[i], dtype=np.int64).reshape(-1)
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
            if pin:
                copied[slot] = torch.cuda.Event()
                copied[slot].record()
            return features.float().view(shape)

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
    {"features" float32 [B, num_frames, dim], "index" [B], "target" [B, C], and "mask" when sampled classes are
    given}, on ``device``. On the CPU "features" is valid until the next batch is requested (reused buffers).
    """

    def __init__(self, dataset: VideoFeatureDataset, device: str | torch.device = "cpu", threads: int = 1) -> None:
        self.device = torch.device(device)
        self.video_ids = dataset.video_ids
        self.num_frames, self.train, self.seed = dataset.num_frames, dataset.train, dataset.seed
        self.first_rows = dataset.store.offsets[dataset.positions].astype(np.int64)
        self.lengths = torch.from_numpy(dataset.lengths.astype(np.int64)).to(self.device)
        self.targets = torch.from_numpy(np.asarray(dataset.targets, np.float32)).to(self.device)
        self.gatherer = BatchGatherer(dataset.store, self.device, threads)

    def __len__(self) -> int:
        return len(self.video_ids)

    def frame_rows(self, index_batches: Sequence[torch.Tensor], generator: torch.Generator | None) -> list[np.ndarray]:
        """The store rows [B, num_frames] each batch reads: all the epoch's frames are drawn first, batch after
        batch, as the resident path draws them, and brought to the host in one transfer."""
        if not index_batches:
            return []
        frames = []
        for index in index_batches:
            lengths = self.lengths[index]
            frames.append(draw_frames(lengths, self.num_frames, generator) if self.train
                          else uniform_frames(lengths, self.num_frames))
        drawn = torch.cat(frames).cpu().numpy()
        videos = torch.cat(list(index_batches)).cpu().numpy()
        rows = drawn + self.first_rows[videos][:, None]
        return np.split(rows, np.cumsum([len(index) for index in index_batches])[:-1])

    def batches(self, index_batches: Sequence[torch.Tensor], class_batches: Sequence[torch.Tensor] | None = None,
                generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """The batches of videos ``index_batches`` (int64 tensors on the device), with label masks from
        ``class_batches`` when given; random frames come from ``generator`` (see :func:`epoch_generator`)."""
        rows = self.frame_rows(index_batches, generator)
        for i, features in enumerate(self.gatherer.gather(rows)):
            index = index_batches[i]
            out = {"features": features, "index": index, "target": self.targets[index]}
            if class_batches is not None:
                out["mask"] = label_masks(out["target"], class_batches[i])
            yield out
