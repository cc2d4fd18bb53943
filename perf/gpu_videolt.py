"""VideoLT-shaped training on one GPU: epoch time of MEID and late_avg with the frames resident on the device versus
streamed from the store, GPU utilisation, and the streamed data path alone. Generated data only, no download.

    python perf/gpu_videolt.py                      # on a GPU machine (sized for a session of a few minutes)
    python perf/gpu_videolt.py --device cpu --videos 60 --dim 32 --epochs 2 --set batch_size=16   # a smoke run

A split of ``--videos`` training videos (1,004 classes in VideoLT's head / medium / tail proportions, one or
two random labels each) and a float16 store of 2048-d
frames with VideoLT's frames per video (``perf/_fixtures.py``: median 111, mean 145) are written to a temporary
folder (deleted at the end; the store stays in the page cache, so "streamed" reads warm pages). Then, for each
recipe and each path, ``Trainer`` runs ``--epochs`` epochs with the recipe's own batch and frames (validation on
one video, negligible); the epoch time is the median over epochs 2..N (the first warms up). Each run gives its
measured videos/s (training videos / epoch seconds) and the time 100 epochs of VideoLT's 179,334 training videos
would take at that rate. GPU utilisation is sampled every 0.2 s during training (``torch.cuda.utilization()``, or
``nvidia-smi`` asked about the same GPU by its UUID); peak GPU memory is that of each training run alone. The data
path alone is one epoch of streamed batches (instance sampler, batch 128, 60 frames) delivered to the GPU as float32,
with each ``--workers`` count. Ends with a compact summary naming the GPU (``torch.cuda.get_device_name``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _fixtures import (VIDEOLT_DIM, VIDEOLT_TRAIN_VIDEOS, videolt_groups, videolt_lengths,  # noqa: E402
                       write_bench_split)

from meid_bench import load_split  # noqa: E402
from meid_bench.build.features import FeatureStoreWriter  # noqa: E402
from meid_bench.data import VideoFeatureDataset  # noqa: E402
from meid_bench.train.batches import TrainStream  # noqa: E402
from meid_bench.train.loop import TrainOptions, Trainer  # noqa: E402


class UtilisationSampler:
    """Samples the GPU's utilisation (percent of time a kernel ran) in a background thread."""

    def __init__(self, device: torch.device, period: float = 0.2) -> None:
        self.device, self.period, self.samples = device, period, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.source = self._probe()

    def _probe(self) -> str | None:
        if self.device.type != "cuda":
            return None
        try:
            torch.cuda.utilization(self.device)
            return "torch.cuda.utilization"
        except Exception:  # no pynvml / amdsmi: ask nvidia-smi
            if shutil.which("nvidia-smi"):
                return "nvidia-smi"
        return None

    def _read(self) -> float | None:
        if self.source == "torch.cuda.utilization":
            return float(torch.cuda.utilization(self.device))
        out = subprocess.run(["nvidia-smi", f"--id={nvidia_smi_id(self.device)}", "--query-gpu=utilization.gpu",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True)
        return float(out.stdout.strip()) if out.returncode == 0 and out.stdout.strip() else None

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> "UtilisationSampler":
        if self.source is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self) -> str:
        return f"{statistics.mean(self.samples):.0f}%" if self.samples else "n/a"


def nvidia_smi_id(device: torch.device) -> str:
    """How ``nvidia-smi --id`` names the GPU torch calls ``device``: by its UUID. torch's index counts only the GPUs
    CUDA_VISIBLE_DEVICES leaves, in CUDA's order; nvidia-smi's index counts all of them in PCI bus order."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = str(torch.cuda.get_device_properties(index).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def videolt_hours(videos_per_s: float, epochs: int = 100) -> float:
    """Hours that ``epochs`` epochs of VideoLT's training set take at ``videos_per_s``."""
    return epochs * VIDEOLT_TRAIN_VIDEOS / videos_per_s / 3600


def write_data(root: Path, videos: int, dim: int, classes: int) -> tuple[Path, float]:
    ids = [f"vid{i:06d}" for i in range(videos + 2)]
    split_dir = write_bench_split(root / "split", ids, num_classes=classes, groups=videolt_groups(classes))
    split = load_split(split_dir)
    lengths = videolt_lengths(len(ids))
    pool = np.random.default_rng(1).standard_normal((4096 + int(lengths.max()), dim), dtype=np.float32)
    pool = pool.astype(np.float16)
    starts = np.random.default_rng(2).integers(0, 4096, len(ids))
    with FeatureStoreWriter(split_dir / "features.h5", dim, "float16", total_frames=int(lengths.sum()),
                            split_checksum=split.checksum) as writer:
        for video_id, length, start in zip(ids, lengths, starts):
            writer.add(video_id, pool[start:start + int(length)], checked=True)
    return split_dir, (split_dir / "features.h5").stat().st_size / 1e9


def data_path_rate(split_dir: Path, device: torch.device, workers: int) -> float:
    """Videos per second of one epoch of streamed batches delivered to ``device`` as float32 (after a warm-up
    epoch that allocates the buffers)."""
    split = load_split(split_dir)
    dataset = VideoFeatureDataset(split, split_dir / "features.h5", "train", 60, train=True)
    stream = TrainStream(dataset, "instance", False, 128, 0, device, workers=workers)
    for epoch in range(2):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        count = 0
        for batch in stream.epoch(epoch):
            count += batch["features"].shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return count / seconds


def train_run(split_dir: Path, out: Path, recipe: str, resident: str, args) -> dict:
    device = torch.device(args.device)
    started = time.perf_counter()
    options = TrainOptions(split=split_dir, recipe=recipe, out=out, epochs=args.epochs, device=args.device,
                           resident=resident, workers=max(args.workers), overrides=tuple(args.overrides))
    trainer = Trainer(options)
    setup = time.perf_counter() - started
    if device.type == "cuda":  # this run's peak only: not the data-path pass's, nor an earlier run's
        torch.cuda.reset_peak_memory_stats(device)
    with UtilisationSampler(device) as sampler:
        trainer.fit()
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    epochs = [r["train_seconds"] for r in log]
    epoch = statistics.median(epochs[1:]) if len(epochs) > 1 else epochs[0]
    videos = len(trainer.streams["instance"].dataset)
    peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else float("nan")
    return {"recipe": recipe, "path": "resident" if resident == "yes" else "streamed", "setup": setup,
            "epoch": epoch, "videos_per_s": videos / epoch, "videolt_100_epochs_h": videolt_hours(videos / epoch),
            "streams": len(trainer.streams),
            "utilisation": sampler.mean(), "peak_gb": peak, "batch": trainer.recipe.batch_size,
            "frames": trainer.recipe.data.train_frames}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12_000)
    parser.add_argument("--dim", type=int, default=VIDEOLT_DIM)
    parser.add_argument("--classes", type=int, default=1004)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4],
                        help="read-ahead threads for the data-path pass (each); training uses the largest")
    parser.add_argument("--recipes", nargs="+", default=["meid", "late_avg"])
    parser.add_argument("--paths", nargs="+", choices=["resident", "streamed"], default=["resident", "streamed"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    begun = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="meid-gpu-videolt-", dir=args.dir))
    try:
        split_dir, gigabytes = write_data(root, args.videos, args.dim, args.classes)
        print(f"device {name}; torch {torch.__version__}; {torch.get_num_threads()} CPU threads; {args.videos} "
              f"training videos ({100 * args.videos / VIDEOLT_TRAIN_VIDEOS:.1f}% of VideoLT), {args.dim}-d float16, "
              f"store {gigabytes:.1f} GB written in {time.perf_counter() - begun:.0f} s (page cache warm)",
              flush=True)
        rates = {w: data_path_rate(split_dir, device, w) for w in args.workers}
        print("data path alone (streamed batches of 128 x 60 frames to the device, float32): " +
              ", ".join(f"{w} workers {r:,.0f} videos/s" for w, r in rates.items()), flush=True)
        results = []
        for recipe in args.recipes:
            for path in args.paths:
                result = train_run(split_dir, root / f"run-{recipe}-{path}", recipe,
                                   "yes" if path == "resident" else "no", args)
                results.append(result)
                print(json.dumps(result), flush=True)
        print(f"\nsummary ({name}, {args.epochs} epochs, epoch = median of epochs 2..{args.epochs}; MEID's epoch "
              "draws two batch streams; videos/s = training videos / epoch seconds; VideoLT 100 ep = 100 epochs "
              f"of {VIDEOLT_TRAIN_VIDEOS:,} videos at that rate)")
        print(f"{'recipe':9} {'path':9} {'set-up s':>8} {'epoch s':>8} {'videos/s':>9} {'VideoLT 100 ep':>14} "
              f"{'GPU util':>8} {'peak GB':>7}  vs resident")
        for result in results:
            base = next((r for r in results if r["recipe"] == result["recipe"] and r["path"] == "resident"), None)
            ratio = f"x{result['epoch'] / base['epoch']:.2f} time" if base and base is not result else ""
            hours = f"{result['videolt_100_epochs_h']:.1f} h"
            print(f"{result['recipe']:9} {result['path']:9} {result['setup']:8.1f} {result['epoch']:8.2f} "
                  f"{result['videos_per_s']:9,.0f} {hours:>14} {result['utilisation']:>8} "
                  f"{result['peak_gb']:7.1f}  {ratio}")
        print(f"total {time.perf_counter() - begun:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
