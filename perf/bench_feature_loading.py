"""Reading training batches (60 sampled frames per video) from a feature store vs one .npy per video.

Same videos, same frame indices, same DataLoader settings. The reference loader (VideoLT's) does
``np.load(<video>.npy)`` and indexes the sampled frames; the store path is ``meid_bench.data.VideoFeatureDataset``
(training mode: 60 random frames with replacement, sorted). Each loader runs cold (page cache dropped first) and
warm (files already in the page cache), twice: "read + sample" (each worker reduces its batch to a count, so only
reading and sampling are timed) and "stacked batches" (the default collate: what a training loop receives).
Prints seconds, videos per second and the store / reference speed-up.

    python perf/bench_feature_loading.py [--videos 400] [--dim 1024] [--workers 2] [--dir /tmp/meid-perf]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.utils.data


def _count(items: list) -> int:
    return len(items)


sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixtures import drop_page_cache, write_bench_split  # noqa: E402

from meid_bench import load_split  # noqa: E402
from meid_bench.build.features import FeatureStoreWriter  # noqa: E402
from meid_bench.data import VideoFeatureDataset  # noqa: E402


class NpyPerVideo(torch.utils.data.Dataset):
    """The reference loader: one np.load per item, then the sampled frames."""

    def __init__(self, folder: Path, video_ids: list[str], num_frames: int, seed: int) -> None:
        self.folder, self.video_ids, self.num_frames, self.seed = folder, video_ids, num_frames, seed

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int) -> dict:
        frames = np.load(self.folder / f"{self.video_ids[index]}.npy")
        rng = np.random.default_rng([self.seed, index])
        picks = np.sort(rng.integers(0, len(frames), self.num_frames))
        return {"features": torch.from_numpy(frames[picks].astype(np.float32)), "index": index}


def run(dataset, workers: int, batch_size: int, stack: bool, files: list[Path] | None) -> tuple[float, str]:
    """Seconds for one pass in a shuffled order, workers already started (an untimed pass starts them). With
    ``files`` the page cache is dropped before the timed pass (cold); else the untimed pass has filled it (warm).
    ``stack=False`` collates each batch to its size inside the worker: the time is then the reading and sampling
    alone, without stacking batches and sending them back."""
    order = np.random.default_rng(0).permutation(len(dataset)).tolist()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=order, num_workers=workers,
                                         collate_fn=None if stack else _count, persistent_workers=workers > 0)
    for _ in loader:
        pass
    method = drop_page_cache(files) if files else ""
    start = time.perf_counter()
    total = 0
    for batch in loader:
        total += len(batch["index"]) if stack else batch
    assert total == len(dataset)
    return time.perf_counter() - start, method


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=400)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--min-frames", type=int, default=60)
    parser.add_argument("--max-frames", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="meid-perf-", dir=args.dir))
    try:
        rng = np.random.default_rng(0)
        ids = [f"vid{i:05d}" for i in range(args.videos)]
        lengths = rng.integers(args.min_frames, args.max_frames + 1, args.videos)
        split = load_split(write_bench_split(root / "split", ids))
        (root / "npy").mkdir()
        stores = {dtype: root / f"store-{dtype}.h5" for dtype in ("float32", "float16")}
        writers = {dtype: FeatureStoreWriter(path, args.dim, dtype, total_frames=int(lengths.sum()),
                                             split_checksum=split.checksum) for dtype, path in stores.items()}
        for video_id, length in zip(ids, lengths):
            frames = rng.standard_normal((int(length), args.dim), dtype=np.float32)
            np.save(root / "npy" / f"{video_id}.npy", frames)
            for writer in writers.values():
                writer.add(video_id, frames)
        for writer in writers.values():
            writer.commit()
        npy_files = sorted((root / "npy").iterdir())
        mb = sum(p.stat().st_size for p in npy_files) / 1e6
        print(f"{args.videos} videos, {lengths.min()}-{lengths.max()} frames (mean {lengths.mean():.0f}), dim "
              f"{args.dim}; .npy float32 {mb:.0f} MB; store float32 {stores['float32'].stat().st_size / 1e6:.0f} MB, "
              f"float16 {stores['float16'].stat().st_size / 1e6:.0f} MB; {args.workers} workers, batch "
              f"{args.batch_size}, 60 frames per video; torch {torch.__version__}")
        loaders = {}
        for dtype, path in stores.items():
            dataset = VideoFeatureDataset(split, path, "train", num_frames=60, train=True, seed=0)
            loaders[f"store {dtype}"] = (dataset, [path])
        loaders = {"npy per video (reference)": (NpyPerVideo(root / "npy", dataset.video_ids, 60, 0), npy_files),
                   **loaders}
        count = len(dataset)
        results: dict[tuple[str, str, bool], float] = {}
        method = ""
        for stack in (False, True):
            for state in ("cold", "warm"):
                for name, (dataset, files) in loaders.items():
                    times = []
                    for _ in range(args.repeats):
                        seconds, dropped = run(dataset, args.workers, args.batch_size, stack,
                                               files if state == "cold" else None)
                        method = dropped or method
                        times.append(seconds)
                    results[(state, name, stack)] = min(times)
        print(f"cold = page cache dropped before each run ({method}); warm = files in page cache; best of "
              f"{args.repeats}; workers started before timing")
        print(f"{'loader':28} {'what':15} {'state':5} {'seconds':>8} {'videos/s':>9} {'speed-up':>9}")
        for stack in (False, True):
            for state in ("cold", "warm"):
                reference = results[(state, "npy per video (reference)", stack)]
                for name in loaders:
                    seconds = results[(state, name, stack)]
                    what = "stacked batches" if stack else "read + sample"
                    print(f"{name:28} {what:15} {state:5} {seconds:8.3f} {count / seconds:9.0f} "
                          f"{reference / seconds:8.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
