"""`features pack` throughput against a plain sequential write of the same bytes, and its peak memory as the
input grows.

For each input size (number of .npy videos, float32 [frames, dim]) a fresh child process packs the folder
(sources in the page cache, store float32, fsync at the end as pack does; best of three) and reports its time, the peak of
Python/numpy allocations (tracemalloc) and its peak resident memory (ru_maxrss). The baseline writes the store's
frame bytes to a file in 8 MiB blocks and fsyncs. Prints MB/s and pack / plain-write ratios.

    python perf/bench_pack.py [--videos 150 300 600] [--frames 150] [--dim 1024] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixtures import write_bench_split  # noqa: E402


def child(folder: Path, workers: int, dtype: str) -> None:
    from meid_bench import load_split
    from meid_bench.build.features import pack_features

    split = load_split(folder / "split")
    out = folder / "store.h5"
    out.unlink(missing_ok=True)
    block = np.random.default_rng(0).standard_normal((8 << 20) // 4, dtype=np.float32).tobytes()
    packs, plains, peak = [], [], 0
    for repeat in range(3):  # alternate the two, best of three: the disk's timing varies from run to run
        tracemalloc.start()
        start = time.perf_counter()
        report = pack_features(split, folder / "npy", "npy", out, dtype=dtype, workers=workers)
        packs.append(time.perf_counter() - start)
        peak = max(peak, tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        frame_bytes = report.frames * report.dim * np.dtype(dtype).itemsize
        out.unlink()
        # Baseline: the same bytes, written sequentially in 8 MiB blocks, then fsync (pack also fsyncs).
        start = time.perf_counter()
        with open(folder / "plain.bin", "wb") as handle:
            left = frame_bytes
            while left > 0:
                left -= handle.write(block[: min(left, len(block))])
            handle.flush()
            os.fsync(handle.fileno())
        plains.append(time.perf_counter() - start)
        (folder / "plain.bin").unlink()
    print(json.dumps({"pack_s": min(packs), "plain_s": min(plains), "bytes": frame_bytes, "tracemalloc_peak": peak,
                      "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, nargs="+", default=[150, 300, 600])
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.workers, args.dtype)
        return
    print(f"videos of {args.frames} frames x {args.dim} float32 (.npy, in page cache) -> store {args.dtype}, "
          f"{args.workers} workers; plain = sequential write of the same bytes + fsync")
    print(f"{'videos':>6} {'MB':>6} {'pack s':>7} {'pack MB/s':>9} {'plain MB/s':>10} {'ratio':>6} "
          f"{'tracemalloc peak MB':>19} {'max RSS MB':>10}")
    for count in args.videos:
        root = Path(tempfile.mkdtemp(prefix="meid-pack-", dir=args.dir))
        try:
            rng = np.random.default_rng(0)
            ids = [f"vid{i:05d}" for i in range(count)]
            write_bench_split(root / "split", ids)
            (root / "npy").mkdir()
            for video_id in ids:
                np.save(root / "npy" / f"{video_id}.npy", rng.standard_normal((args.frames, args.dim), np.float32))
            output = subprocess.run([sys.executable, __file__, "--child", str(root), "--workers", str(args.workers),
                                     "--dtype", args.dtype], check=True, capture_output=True, text=True).stdout
            result = json.loads(output.strip().splitlines()[-1])
            mb = result["bytes"] / 1e6
            pack_rate, plain_rate = mb / result["pack_s"], mb / result["plain_s"]
            print(f"{count:6d} {mb:6.0f} {result['pack_s']:7.2f} {pack_rate:9.0f} {plain_rate:10.0f} "
                  f"{pack_rate / plain_rate:6.2f} {result['tracemalloc_peak'] / 1e6:19.1f} "
                  f"{result['maxrss_kb'] / 1e3:10.0f}")
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
