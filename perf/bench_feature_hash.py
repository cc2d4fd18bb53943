"""What recording a feature store's sha256 in run.json costs: one streaming sha256 pass against one plain read of
the same file, side by side (both from the page cache after a warm-up read, so the difference is the hashing).

A training run computes the sha256 once; a run on a store not held in memory reads the whole store once per
epoch anyway. Default: a temporary file of --size-mb random bytes; --store PATH measures a real store.

    python perf/bench_feature_hash.py
    python perf/bench_feature_hash.py --store splits/charadeslt/features.h5 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from meid_bench.build.split_io import sha256_file

CHUNK = 1 << 20  # the chunk sha256_file reads


def plain_read(path: Path) -> int:
    total = 0
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK):
            total += len(block)
    return total


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="An existing file to measure (a feature store).")
    parser.add_argument("--size-mb", type=int, default=512, help="Size of the temporary file without --store.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = args.store
        if path is None:
            path = Path(folder) / "store.bin"
            rng = np.random.default_rng(0)
            with open(path, "wb") as handle:
                for _ in range(args.size_mb):
                    handle.write(rng.bytes(1 << 20))
        size_gb = path.stat().st_size / 1e9
        plain_read(path)  # warm the page cache
        read = best_of(args.repeats, lambda: plain_read(path))
        hashed = best_of(args.repeats, lambda: sha256_file(path))
    print(f"{path.name}: {size_gb:.3f} GB, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(f"plain read (page cache)  {read:7.3f} s  {size_gb / read:6.2f} GB/s")
    print(f"sha256 (page cache)      {hashed:7.3f} s  {size_gb / hashed:6.2f} GB/s")
    print(f"sha256 / read: {hashed / read:.1f}x; sha256 costs {hashed / size_gb:.2f} s per GB, once per run")


if __name__ == "__main__":
    main()
