"""Training batches at VideoLT's shape: store-backed batches against a per-video .npy DataLoader, cold and warm.

    python perf/bench_feature_loading.py [--videos 3400] [--lengths videolt|mean60] [--workers 2] [--repeats 5]
                                         [--dtypes float32 float16] [--dir DIR] [--with-items]

Videos are 2048-d with VideoLT's per-video frame counts (``perf/_fixtures.py``: median 111, mean 145 frames), or
the same shape scaled to a mean of 60 frames (``--lengths mean60``). Each dtype is a phase: its .npy files (one
per video, that dtype) and its store are written, measured, and deleted before the next phase, so the disk
holds at most one phase (about 8 GB at the defaults). Loaders, each with ``--workers`` workers:

- ``npy DataLoader``: the reference loader. A torch DataLoader whose worker processes ``np.load`` a video's file,
  take 60 sorted random frames with replacement, widen them to float32 and collate batches of 128.
- ``store batches``: what ``meid-bench train --resident no --workers N`` reads, i.e.
  :class:`meid_bench.train.batches.TrainStream` (instance sampler, batch 128, 60 random frames): one gather per
  batch from a memory map of the store into reused buffers, ``--workers`` read-ahead threads.
- ``store batches f16`` (float16 phase): the same, float16 kept as float16 (``BatchGatherer(widen=False)``): the
  host's part of the streamed path when training on a GPU, which widens on the device.
- ``store items`` (``--with-items``): :class:`meid_bench.data.VideoFeatureDataset` in the same DataLoader as the
  reference (the per-item path, kept for users' own pipelines).

A pass is one epoch over the training videos, batches delivered as float32 tensors on the CPU. Warm: every file
in the page cache (checked with ``fincore``). Cold: the loader's files evicted with posix_fadvise(DONTNEED) just
before its pass (residency printed). Passes are interleaved loader by loader, the first loader alternating, for
``--repeats`` rounds; the script prints the median seconds with the range, and the speed-up over the reference as
the median of the per-round ratios with their range.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.data

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixtures import (VIDEOLT_DIM, VIDEOLT_TRAIN_VIDEOS, cached_fraction, drop_page_cache, read_fully,  # noqa: E402
                       videolt_lengths, write_bench_split)

from meid_bench import load_split  # noqa: E402
from meid_bench.build.features import FeatureStoreWriter  # noqa: E402
from meid_bench.data import BatchGatherer, VideoFeatureDataset  # noqa: E402
from meid_bench.train.batches import TrainStream  # noqa: E402

FRAMES, BATCH = 60, 128
REFERENCE = "npy DataLoader"


class NpyPerVideo(torch.utils.data.Dataset):
    """The reference: one np.load per item, then 60 sorted random frames, widened to float32."""

    def __init__(self, folder: Path, video_ids: list[str]) -> None:
        self.folder, self.video_ids, self.draws = folder, video_ids, 0

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int) -> dict:
        frames = np.load(self.folder / f"{self.video_ids[index]}.npy")
        self.draws += 1
        picks = np.sort(np.random.default_rng([index, self.draws]).integers(0, len(frames), FRAMES))
        return {"features": torch.from_numpy(frames[picks]).float(), "index": index}


class Order(torch.utils.data.Sampler):
    """A sampler whose order can be replaced between passes (persistent workers keep running)."""

    def __init__(self, count: int) -> None:
        self.order = list(range(count))

    def set_pass(self, number: int) -> None:
        self.order = np.random.default_rng(number).permutation(len(self.order)).tolist()

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self):
        return iter(self.order)


class Loaders:
    """The loaders of one phase; ``run(name, number)`` times one pass."""

    def __init__(self, split, root: Path, store: Path, dtype: str, workers: int, with_items: bool) -> None:
        self.split, self.store, self.workers = split, store, workers
        self.dataset = VideoFeatureDataset(split, store, "train", FRAMES, train=True)
        ids = self.dataset.video_ids
        self.count = len(ids)
        self.files = {REFERENCE: sorted((root / "npy").iterdir()), "store batches": [store]}
        self.loaders = {REFERENCE: self._loader(NpyPerVideo(root / "npy", ids))}
        self.streams = {"store batches": TrainStream(self.dataset, "instance", False, BATCH, 0, torch.device("cpu"),
                                                     workers=workers)}
        if dtype == "float16":
            kept = TrainStream(self.dataset, "instance", False, BATCH, 0, torch.device("cpu"), workers=workers)
            kept.streamed.gatherer = BatchGatherer(self.dataset.store, "cpu", workers, widen=False)
            self.streams["store batches f16"] = kept
            self.files["store batches f16"] = [store]
        if with_items:
            self.files["store items"] = [store]
            self.loaders["store items"] = self._loader(self.dataset)
        for name in self.names:  # start the persistent workers, allocate the buffers: untimed
            self._pass(name, 0)

    def _loader(self, dataset) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(dataset, batch_size=BATCH, sampler=Order(len(dataset)),
                                           num_workers=self.workers, persistent_workers=self.workers > 0)

    @property
    def names(self) -> list[str]:
        return [REFERENCE, *self.streams, *(["store items"] if "store items" in self.loaders else [])]

    def _pass(self, name: str, number: int) -> int:
        delivered = 0
        if name in self.streams:
            for batch in self.streams[name].epoch(number):
                delivered += batch["features"].shape[0]
            self.streams[name].streamed.gatherer.unmap()  # so that a later eviction reaches every page
            gc.collect()
            return delivered
        loader = self.loaders[name]
        loader.sampler.set_pass(number)
        if name == "store items":
            self.dataset.set_epoch(number)
        for batch in loader:
            delivered += batch["features"].shape[0]
        return delivered

    def run(self, name: str, number: int) -> float:
        start = time.perf_counter()
        delivered = self._pass(name, number)
        seconds = time.perf_counter() - start
        assert delivered == self.count, (name, delivered, self.count)
        return seconds


def write_phase(root: Path, ids: list[str], lengths: np.ndarray, split, dtype: str) -> Path:
    """One .npy per video and a store, same frames, in ``dtype``. The values are random rows (their content does
    not change a read's cost)."""
    (root / "npy").mkdir()
    pool = np.random.default_rng(1).standard_normal((4096 + int(lengths.max()), VIDEOLT_DIM), dtype=np.float32)
    pool = pool.astype(dtype)
    starts = np.random.default_rng(2).integers(0, 4096, len(ids))
    store = root / f"store-{dtype}.h5"
    with FeatureStoreWriter(store, VIDEOLT_DIM, dtype, total_frames=int(lengths.sum()),
                            split_checksum=split.checksum) as writer:
        for video_id, length, start in zip(ids, lengths, starts):
            frames = pool[start:start + int(length)]
            np.save(root / "npy" / f"{video_id}.npy", frames)
            writer.add(video_id, frames, checked=True)
    return store


def summarise(times: dict[str, list[float]], count: int) -> list[str]:
    lines = []
    reference = times[REFERENCE]
    for name, values in times.items():
        median = statistics.median(values)
        line = (f"    {name:16} {median:7.2f} s [{min(values):.2f}-{max(values):.2f}]  "
                f"{count / median:7.0f} videos/s")
        if name != REFERENCE:
            ratios = [r / v for r, v in zip(reference, values)]
            line += (f"  x{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] "
                     f"(ratio of medians x{statistics.median(reference) / median:.2f})")
        lines.append(line)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=3400)
    parser.add_argument("--lengths", choices=["videolt", "mean60"], default="videolt")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float16"])
    parser.add_argument("--states", nargs="+", default=["warm", "cold"])
    parser.add_argument("--with-items", action="store_true")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    ids = [f"vid{i:06d}" for i in range(args.videos + 2)]
    lengths = videolt_lengths(len(ids), mean=60.0 if args.lengths == "mean60" else None)
    train_lengths = lengths[:-2]
    print(f"{args.videos} training videos ({100 * args.videos / VIDEOLT_TRAIN_VIDEOS:.1f}% of VideoLT's "
          f"{VIDEOLT_TRAIN_VIDEOS:,}), {VIDEOLT_DIM}-d, frames per video ({args.lengths}): mean "
          f"{train_lengths.mean():.0f}, median {np.median(train_lengths):.0f}, max {train_lengths.max()}; batch "
          f"{BATCH} x {FRAMES} random frames; {args.workers} workers each; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for dtype in args.dtypes:
        root = Path(tempfile.mkdtemp(prefix="meid-loading-", dir=args.dir))
        try:
            split = load_split(write_bench_split(root / "split", ids))
            started = time.perf_counter()
            store = write_phase(root, ids, lengths, split, dtype)
            gigabytes = sum(p.stat().st_size for p in [store, *(root / "npy").iterdir()]) / 1e9
            print(f"\n{dtype}: wrote {gigabytes:.1f} GB (.npy files and store) in "
                  f"{time.perf_counter() - started:.0f} s")
            loaders = Loaders(split, root, store, dtype, args.workers, args.with_items)
            all_files = [f for files in loaders.files.values() for f in files]
            number = 1
            for state in args.states:
                times: dict[str, list[float]] = {name: [] for name in loaders.names}
                residency = []
                if state == "warm":
                    read_fully(all_files)
                for round_ in range(args.repeats):
                    names = loaders.names if round_ % 2 == 0 else loaders.names[::-1]
                    for name in names:
                        if state == "cold":
                            drop_page_cache(loaders.files[name])
                        residency.append(cached_fraction(loaders.files[name]))
                        times[name].append(loaders.run(name, number))
                        number += 1
                known = [r for r in residency if r is not None]
                cache = f"{100 * min(known):.1f}-{100 * max(known):.1f}%" if known else "unknown"
                print(f"  {state} (files in page cache before a pass: {cache}); median of {args.repeats} "
                      "interleaved passes [range]; speed-up over the reference: median of per-round ratios "
                      "[range]")
                print("\n".join(summarise(times, loaders.count)))
            del loaders
            gc.collect()
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
