"""`features pack` throughput against a plain sequential write of the same bytes, and its memory as the input grows.

    python perf/bench_pack.py [--videos 250 500 1000] [--repeats 5] [--workers 2] [--dtype float32] [--dir DIR]

Sources are VideoLT-shaped: one float32 .npy [frames, 2048] per video, frames drawn like VideoLT's (median 111,
mean 145; ``perf/_fixtures.py``), in the page cache. For each input size a fresh child process alternates, for
``--repeats`` rounds, ``pack_features`` (store ``--dtype``, fsync at the end, as the command does) with a plain
sequential write of the store's frame bytes (8 MiB blocks, then fsync), and prints the median seconds with their
range and the median of the per-round pack / plain throughput ratios with their range. Memory is measured in a
separate, untimed child: the peak of Python/numpy allocations (tracemalloc, which slows what it traces) and the
peak resident size of a pack.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixtures import VIDEOLT_DIM, read_fully, videolt_lengths, write_bench_split  # noqa: E402


def plain_write(path: Path, nbytes: int, block: bytes) -> None:
    with open(path, "wb") as handle:
        left = nbytes
        while left > 0:
            left -= handle.write(block[: min(left, len(block))])
        handle.flush()
        os.fsync(handle.fileno())


def child(folder: Path, workers: int, dtype: str, repeats: int, memory: bool) -> None:
    from meid_bench import load_split
    from meid_bench.build.features import pack_features

    split = load_split(folder / "split")
    out = folder / "store.h5"
    sources = sorted((folder / "npy").iterdir())
    if memory:
        read_fully(sources)
        tracemalloc.start()
        pack_features(split, folder / "npy", "npy", out, dtype=dtype, workers=workers)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.unlink()
        print(json.dumps({"tracemalloc_peak": peak}))
        return
    block = np.random.default_rng(0).standard_normal((8 << 20) // 4, dtype=np.float32).tobytes()
    frame_bytes = sum(np.load(p, mmap_mode="r").shape[0] for p in sources) * VIDEOLT_DIM * np.dtype(dtype).itemsize
    packs, plains = [], []
    for round_ in range(repeats):
        read_fully(sources)  # sources in the page cache for every pack
        order = ("pack", "plain") if round_ % 2 == 0 else ("plain", "pack")
        for task in order:
            start = time.perf_counter()
            if task == "pack":
                pack_features(split, folder / "npy", "npy", out, dtype=dtype, workers=workers)
                packs.append(time.perf_counter() - start)
                out.unlink()
            else:
                plain_write(folder / "plain.bin", frame_bytes, block)
                plains.append(time.perf_counter() - start)
                (folder / "plain.bin").unlink()
    print(json.dumps({"pack_s": packs, "plain_s": plains, "bytes": frame_bytes,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[250, 500, 1000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.workers, args.dtype, args.repeats, args.memory)
        return
    print(f"VideoLT-shaped sources: float32 .npy [frames, {VIDEOLT_DIM}] per video, in the page cache -> store "
          f"{args.dtype}, {args.workers} workers; plain = sequential write of the same bytes + fsync; median of "
          f"{args.repeats} alternated rounds [range]")
    print(f"{'videos':>6} {'MB':>6} {'pack s':>16} {'plain s':>16} {'pack MB/s':>9} {'pack / plain':>18} "
          f"{'tracemalloc MB':>14} {'max RSS MB':>10}")
    for count in args.videos:
        root = Path(tempfile.mkdtemp(prefix="meid-pack-", dir=args.dir))
        try:
            ids = [f"vid{i:06d}" for i in range(count)]
            write_bench_split(root / "split", ids)
            (root / "npy").mkdir()
            pool = np.random.default_rng(0).standard_normal((8192, VIDEOLT_DIM), dtype=np.float32)
            for video_id, length in zip(ids, videolt_lengths(count)):
                start = int(np.random.default_rng(length).integers(0, 8192 - min(length, 4096)))
                frames = pool[start:start + length] if length <= 4096 else np.resize(pool, (length, VIDEOLT_DIM))
                np.save(root / "npy" / f"{video_id}.npy", frames)
            common = [sys.executable, __file__, "--child", str(root), "--workers", str(args.workers), "--dtype",
                      args.dtype, "--repeats", str(args.repeats)]
            timed = json.loads(subprocess.run(common, check=True, capture_output=True, text=True)
                               .stdout.strip().splitlines()[-1])
            memory = json.loads(subprocess.run(common + ["--memory"], check=True, capture_output=True, text=True)
                                .stdout.strip().splitlines()[-1])
            mb = timed["bytes"] / 1e6
            packs, plains = timed["pack_s"], timed["plain_s"]
            ratios = [plain / pack for pack, plain in zip(packs, plains)]
            print(f"{count:6d} {mb:6.0f} {statistics.median(packs):6.2f} [{min(packs):.2f}-{max(packs):.2f}] "
                  f"{statistics.median(plains):6.2f} [{min(plains):.2f}-{max(plains):.2f}] "
                  f"{mb / statistics.median(packs):9.0f} {statistics.median(ratios):6.2f} "
                  f"[{min(ratios):.2f}-{max(ratios):.2f}] {memory['tracemalloc_peak'] / 1e6:14.1f} "
                  f"{timed['maxrss_kb'] / 1e3:10.0f}")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
