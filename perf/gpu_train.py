"""Train MEID (or another recipe) on a split with the features held on the GPU; print videos/s and epoch time.

    python perf/gpu_train.py --split splits/charadeslt [--recipe meid] [--epochs 3] [--device cuda]

The split needs its feature store (`meid-bench features synth --split ...` for the proxy one). The first epoch
includes warm-up; the figures are the median over the later epochs. Works on the CPU too (--device cpu), which is
how to compare the two on one machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch

from meid_bench.train.loop import TrainOptions, Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", type=Path, required=True)
    parser.add_argument("--recipe", default="meid")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(TrainOptions(split=args.split, recipe=args.recipe, out=Path(out) / "run", epochs=args.epochs,
                                       device=args.device, resident="yes", overrides=tuple(args.overrides)))
        trainer.fit()
        log = [json.loads(line) for line in (Path(out) / "run" / "log.jsonl").read_text().splitlines()]
    videos = len(trainer.streams["instance"].dataset)
    streams = len(trainer.streams)
    seconds = statistics.median(r["train_seconds"] for r in log[1:]) if len(log) > 1 else log[0]["train_seconds"]
    name = torch.cuda.get_device_name(trainer.device) if trainer.device.type == "cuda" else "CPU"  # its GPU, not 0
    print(f"device: {name} ({trainer.device}); torch {torch.__version__}; recipe {args.recipe}; "
          f"{videos} training videos x {streams} batch stream(s) per epoch; batch {trainer.recipe.batch_size}; "
          f"{trainer.recipe.data.train_frames} frames")
    print(f"epoch time (training only, median of epochs 2..{len(log)}): {seconds:.2f} s")
    print(f"throughput: {videos / seconds:.0f} videos/s ({videos * streams / seconds:.0f} video samples/s)")
    print(f"first epoch (with warm-up): {log[0]['train_seconds']:.2f} s")


if __name__ == "__main__":
    main()
