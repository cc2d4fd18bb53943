"""What auditing a feature store costs before training: one pass for its sha256 and the finite check.

`meid-bench train` needs the store's sha256 (run.json) and refuses NaN or infinity in its frames; both read the
whole file, so `meid_bench.build.features.audit` does both in one sequential read. Side by side, on the same
store, cold (page cache dropped) and warm:

- "read only": the file read in the audit's blocks with no work at all (the floor for any check);
- "sha256 only": the file hashed, nothing tested;
- "two passes": the file hashed, then `find_non_finite` over the frames (exponent-bit test for float16);
- "audit (one pass)": `_hash_and_scan`, what training runs on a store it has not seen;
- "numpy isfinite": the frame blocks tested with `numpy.isfinite(block).all()` (the obvious way);
- "one epoch of batches": reading 60 random frames per training video through `VideoFeatureDataset`, so the
  audit's cost can be read in epochs.

Prints seconds, GB/s and each row's time over "read only" and over "one epoch of batches".

    python perf/bench_finite_scan.py [--videos 400] [--dim 1024] [--repeats 3] [--dir /tmp/meid-perf]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixtures import drop_page_cache, write_bench_split  # noqa: E402

from meid_bench import load_split  # noqa: E402
from meid_bench.build.features import FeatureStore, FeatureStoreWriter  # noqa: E402
from meid_bench.build.features.audit import _hash_and_scan  # noqa: E402
from meid_bench.build.features.finite import BLOCK_BYTES, find_non_finite  # noqa: E402
from meid_bench.build.split_io import sha256_file  # noqa: E402
from meid_bench.data import VideoFeatureDataset  # noqa: E402


def blocks(store: FeatureStore):
    rows = max(1, BLOCK_BYTES // (store.dim * store.dtype.itemsize))
    for start in range(0, store.total_frames, rows):
        yield store.read_rows(start, min(store.total_frames, start + rows))


def read_only(store: FeatureStore) -> None:
    with open(store.path, "rb", buffering=0) as handle:
        while handle.read(BLOCK_BYTES):
            pass


def numpy_isfinite(store: FeatureStore) -> None:
    for block in blocks(store):
        assert np.isfinite(block).all()


def two_passes(store: FeatureStore) -> None:
    sha256_file(store.path, chunk=BLOCK_BYTES)
    assert find_non_finite(store) is None


def audit(store: FeatureStore) -> None:
    assert _hash_and_scan(store).non_finite is None


def one_epoch(dataset: VideoFeatureDataset) -> None:
    for index in np.random.default_rng(0).permutation(len(dataset)):
        dataset[int(index)]


def timed(task, path: Path, cold: bool, repeats: int) -> tuple[float, str]:
    best, method = float("inf"), ""
    for _ in range(repeats):
        method = drop_page_cache([path]) if cold else method
        start = time.perf_counter()
        task()
        best = min(best, time.perf_counter() - start)
    return best, method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--min-frames", type=int, default=60)
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="meid-perf-", dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        ids = [f"vid{i:05d}" for i in range(args.videos)]
        lengths = rng.integers(args.min_frames, args.max_frames + 1, args.videos)
        split = load_split(write_bench_split(root / "split", ids))
        paths = {dtype: root / f"store-{dtype}.h5" for dtype in ("float16", "float32")}
        writers = {dtype: FeatureStoreWriter(path, args.dim, dtype, total_frames=int(lengths.sum()),
                                             split_checksum=split.checksum) for dtype, path in paths.items()}
        for video_id, length in zip(ids, lengths):
            frames = rng.standard_normal((int(length), args.dim), dtype=np.float32)
            for writer in writers.values():
                writer.add(video_id, frames)
        for writer in writers.values():
            writer.commit()
        print(f"{args.videos} videos, {lengths.min()}-{lengths.max()} frames (mean {lengths.mean():.0f}), dim "
              f"{args.dim}, {int(lengths.sum())} frames; best of {args.repeats}")
        print(f"{'store':8} {'state':5} {'task':22} {'seconds':>8} {'GB/s':>6} {'/ read':>7} {'/ epoch':>8}")
        method = ""
        for dtype, path in paths.items():
            store = FeatureStore(path)
            dataset = VideoFeatureDataset(split, store, "train", num_frames=60, train=True, seed=0)
            tasks = {"read only": lambda: read_only(store),
                     "sha256 only": lambda: sha256_file(store.path, chunk=BLOCK_BYTES),
                     "two passes": lambda: two_passes(store), "audit (one pass)": lambda: audit(store),
                     "numpy isfinite": lambda: numpy_isfinite(store),
                     "one epoch of batches": lambda: one_epoch(dataset)}
            size = store.total_frames * store.dim * store.dtype.itemsize
            for state in ("cold", "warm"):
                results = {}
                for name, task in tasks.items():
                    results[name], dropped = timed(task, path, state == "cold", args.repeats)
                    method = dropped or method
                for name, seconds in results.items():
                    rate = f"{size / seconds / 1e9:6.2f}" if name != "one epoch of batches" else "     -"
                    print(f"{dtype:8} {state:5} {name:22} {seconds:8.3f} {rate} "
                          f"{seconds / results['read only']:6.2f}x {seconds / results['one epoch of batches']:7.2f}x")
        print(f"cold: page cache dropped before each run ({method})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
