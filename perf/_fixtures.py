"""Shared by the perf scripts: a minimal split folder over synthetic video ids, VideoLT-shaped video lengths, and
page-cache control."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa

from meid_bench.build.split_io import CLASS_SCHEMA, VIDEO_SCHEMA, write_split

VIDEOLT_TRAIN_VIDEOS = 179_334
VIDEOLT_DIM = 2048
# Frames per video of VideoLT's features: a log-normal fitted to the per-video frame counts that VideoLT publishes
# for its validation and test videos (val_videofolder.txt / test_videofolder.txt: log-mean 4.566, log-sd 1.02;
# median 111, mean 145, 1 to 3,330 frames). It matches the size of the released feature sets (about 295 GB of
# 2048-d float32 for 256,192 videos: 141 frames per video).
VIDEOLT_LOG_MEAN, VIDEOLT_LOG_SD, VIDEOLT_MAX_FRAMES = 4.566, 1.02, 3330


def videolt_lengths(count: int, seed: int = 0, mean: float | None = None) -> np.ndarray:
    """``count`` frame counts drawn like VideoLT's (see above); with ``mean``, the same shape scaled to that mean."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.normal(VIDEOLT_LOG_MEAN, VIDEOLT_LOG_SD, count))
    if mean is not None:
        lengths *= mean / np.exp(VIDEOLT_LOG_MEAN + VIDEOLT_LOG_SD ** 2 / 2)
    return np.clip(np.round(lengths), 1, VIDEOLT_MAX_FRAMES).astype(np.int64)


def videolt_groups(num_classes: int) -> list[str]:
    """Head / medium / tail in VideoLT's proportions (47 / 617 / 340 of 1,004 classes), at least one tail."""
    head = max(1, round(num_classes * 47 / 1004))
    tail = max(1, round(num_classes * 340 / 1004))
    return ["head"] * head + ["medium"] * (num_classes - head - tail) + ["tail"] * tail


def write_bench_split(path: Path, video_ids: list[str], num_classes: int = 10, seed: int = 0,
                      groups: list[str] | None = None) -> Path:
    """``video_ids`` with random labels and no segments: the last two are val and test, the others train. Every
    class is "head" unless ``groups`` says otherwise."""
    rng = np.random.default_rng(seed)
    labels = [sorted(rng.choice(num_classes, size=int(rng.integers(1, 3)), replace=False).tolist())
              for _ in video_ids]

    def table(ids, labs):
        return pa.table({"video_id": ids, "labels": labs, "duration": [float("nan")] * len(ids),
                         "segment_classes": [[] for _ in ids], "segment_starts": [[] for _ in ids],
                         "segment_ends": [[] for _ in ids]}, schema=VIDEO_SCHEMA)

    counts = np.bincount(np.concatenate([np.asarray(x) for x in labels]), minlength=num_classes)
    classes = pa.table({"class_id": np.arange(num_classes, dtype=np.int32),
                        "class_key": [f"c{k:03d}" for k in range(num_classes)],
                        "class_name": [f"class {k}" for k in range(num_classes)],
                        "original_train_count": counts, "target": counts.astype(float), "train_count": counts,
                        "val_count": np.zeros(num_classes, np.int64), "test_count": np.zeros(num_classes, np.int64),
                        "train_seconds": np.zeros(num_classes), "group": groups or ["head"] * num_classes},
                       schema=CLASS_SCHEMA)
    tables = {"train": table(video_ids[:-2], labels[:-2]), "val": table(video_ids[-2:-1], labels[-2:-1]),
              "test": table(video_ids[-1:], labels[-1:]), "classes": classes}
    return write_split(path, tables, {"format": "meid-bench-split", "format_version": 1, "benchmark": "perf"},
                       force=True)


def drop_page_cache(files: list[Path]) -> str:
    """Evict ``files`` from the page cache with per-file posix_fadvise(DONTNEED), after writing back dirty pages.
    Pages a process still maps are not evicted: unmap first. Only these files are touched (the machine is
    shared), not the whole cache."""
    os.sync()
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "posix_fadvise(DONTNEED) per file"


def cached_fraction(files: list[Path]) -> float | None:
    """Share of the bytes of ``files`` in the page cache (util-linux ``fincore``), None where it is missing."""
    if shutil.which("fincore") is None or not files:
        return None
    cached = total = 0
    for start in range(0, len(files), 512):
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE",
                              *map(str, files[start:start + 512])], capture_output=True, text=True, check=True)
        for line in out.stdout.split("\n"):
            if line.strip():
                res, size = line.split()
                cached, total = cached + int(res), total + int(size)
    return cached / total if total else None


def read_fully(files: list[Path]) -> None:
    """Bring ``files`` into the page cache by reading them."""
    buffer = bytearray(8 << 20)
    for path in files:
        with open(path, "rb", buffering=0) as handle:
            while handle.readinto(buffer):
                pass
