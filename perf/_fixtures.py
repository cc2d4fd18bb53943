"""Shared by the perf scripts: a minimal split folder over synthetic video ids, and page-cache control."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa

from meid_bench.build.split_io import CLASS_SCHEMA, VIDEO_SCHEMA, write_split


def write_bench_split(path: Path, video_ids: list[str], num_classes: int = 10, seed: int = 0) -> Path:
    """``video_ids`` with random labels and no segments: the last two are val and test, the others train."""
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
                        "train_seconds": np.zeros(num_classes), "group": ["head"] * num_classes},
                       schema=CLASS_SCHEMA)
    tables = {"train": table(video_ids[:-2], labels[:-2]), "val": table(video_ids[-2:-1], labels[-2:-1]),
              "test": table(video_ids[-1:], labels[-1:]), "classes": classes}
    return write_split(path, tables, {"format": "meid-bench-split", "format_version": 1, "benchmark": "perf"},
                       force=True)


def drop_page_cache(files: list[Path]) -> str:
    """Evict ``files`` from the page cache: the system-wide drop if permitted, else per-file fadvise."""
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as handle:
            handle.write("3\n")
        return "drop_caches"
    except OSError:
        pass
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "posix_fadvise(DONTNEED) per file (drop_caches not permitted)"
