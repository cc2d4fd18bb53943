"""Where a run's frames live: the rule of ``--resident auto`` (hold every frame on the device, or stream batches
from the store), from the memory the run may count on. Beside the data paths it chooses between
(:mod:`meid_bench.data.resident`, :mod:`meid_bench.data.streamed`)."""

from __future__ import annotations

import os

import numpy as np
import torch

from meid_bench.build.features.store import FeatureStore
from meid_bench.build.split_io import Split
from meid_bench.data.resident import frames_nbytes
from meid_bench.errors import MeidBenchError

# "--resident auto" holds the split's frames on the device when they take at most this share of the memory the run
# counts on (an accelerator's free memory, or the host's available memory on the CPU, less RESIDENT_RESERVE): the
# rest is left to the model, its activations and the evaluation batches.
RESIDENT_SHARE = {"cuda": 0.75, "cpu": 0.5}
# Set aside before that share: what the run holds beside the frames and the model's tensors (the CUDA context and
# cuDNN/cuBLAS workspaces, the caching allocator's fragmentation; on the CPU, the interpreter and its libraries).
RESIDENT_RESERVE = {"cuda": 3 << 30, "cpu": 1 << 30}

def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the accelerator's free memory, or the host's available memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def total_memory(device: torch.device) -> int:
    """Bytes of memory of ``device``: the accelerator's, or the host's physical memory for the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[1])
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memory_for_run(device: torch.device, share: float = 1.0) -> int:
    """Bytes this run may count on: the device's free memory, and at most ``share`` of its whole memory (a sweep
    that runs k runs side by side on one GPU gives each 1/k: each of them sees the GPU empty when it starts)."""
    free = free_memory(device)
    return free if share >= 1.0 else min(free, int(share * total_memory(device)))


def resident_fits(needed: int, available: int, device: torch.device, reserve: int | None = None) -> bool:
    """The rule of ``--resident auto``: ``needed`` bytes held on a device where the run counts on ``available``
    bytes fit when they take at most its share (RESIDENT_SHARE) of that memory less ``reserve`` (by default
    RESIDENT_RESERVE for the device type)."""
    reserve = RESIDENT_RESERVE.get(device.type, RESIDENT_RESERVE["cuda"]) if reserve is None else reserve
    return needed <= RESIDENT_SHARE.get(device.type, RESIDENT_SHARE["cuda"]) * max(available - reserve, 0)


def resident_nbytes(store: FeatureStore, split: Split, frame_labels: bool) -> int:
    """Bytes ``--resident yes`` puts on the device: the frames of the split's train, val and test videos in the
    store's dtype (one copy of the training frames serves every stream), and the packed per-frame label table when
    the model routes by labels (that table is on the device whether or not the frames are)."""
    positions = [store.index_of(v) for name in ("train", "val", "test") for v in split.table(name)["video_id"]
                 if v in store]
    needed = frames_nbytes(store, np.asarray(positions, np.int64))
    if frame_labels:
        needed += store.total_frames * ((store.num_classes + 7) // 8)
    return needed


def use_resident(option: str, needed: int, device: torch.device, share: float = 1.0) -> bool:
    """``--resident``: ``yes`` and ``no`` as asked; ``auto`` by :func:`resident_fits` on the memory the run counts on."""
    if option not in ("auto", "yes", "no"):
        raise MeidBenchError(f"--resident {option!r}: choose auto, yes or no")
    if option != "auto":
        return option == "yes"
    return resident_fits(needed, memory_for_run(device, share), device)
