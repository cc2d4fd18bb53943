"""MEID's training step against two attention steps on the same batches (and late_avg, attention_cm), side by side.

    python perf/bench_train_step.py [--device cpu] [--threads N] [--repeats 7] [--steps 3] [--batch 128] [--dim 256]

MEID trains two experts on two batches per step (an instance batch and a class-balanced one), so its inherent cost
is that of an attention model trained on both batches: the reference here is two attention steps, one on each of
the same two batches (``2 x attention``), and ``attention_cm`` (the compute-matched recipe: one step over both).
Models come from the shipped recipes, on random features shaped like proxy CharadesLT (157 classes, groups as in
the default build); MEID's distillation is label-routed with the batches' targets, as in training.

Each repeat times ``--steps`` steps of every setup in turn (interleaved, so machine noise hits all alike); the
report gives each setup's median over repeats of the mean step time, and the ratios of medians, for wall-clock time
and for the process's CPU time (``time.process_time``: with ``--threads 1`` the work done, steady when other
processes share the machine; with several threads it also counts threads waiting for each other). The goal: MEID
at most 1.5x two attention steps on the CPU.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from meid_bench.models import compute_training_step
from meid_bench.registry import SplitStats
from meid_bench.train.config import load_recipe

RECIPES = ("late_avg", "attention", "attention_cm", "meid")


def make_batch(batch: int, frames: int, dim: int, classes: int, generator: torch.Generator,
               device: torch.device) -> dict[str, torch.Tensor]:
    features = torch.randn(batch, frames, dim, generator=generator).to(device)
    target = (torch.rand(batch, classes, generator=generator) < 0.04).float().to(device)
    return {"features": features, "target": target, "mask": torch.ones_like(target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (the median is over these)")
    parser.add_argument("--steps", type=int, default=3, help="steps per setup per round")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=157)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads [default: torch's]; 1 is steadier on a machine others share")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    groups = np.array(["head"] * 77 + ["medium"] * 56 + ["tail"] * 24)[: args.classes]
    counts = np.linspace(900, 10, args.classes).astype(np.int64)
    setups = {}
    for name in RECIPES:
        recipe = load_recipe(name).for_benchmark("charadeslt").resolved()
        model = recipe.model.create(args.dim, args.classes, class_groups=groups).to(device)
        criterion = recipe.loss.create(SplitStats.from_counts(counts, num_videos=4734, class_groups=groups)).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        setups[name] = (model, criterion, optimizer)
    batches = {"instance": make_batch(args.batch, args.frames, args.dim, args.classes, generator, device),
               "balanced": make_batch(args.batch, args.frames, args.dim, args.classes, generator, device)}

    def train_step(name: str, streams: dict) -> None:
        model, criterion, optimizer = setups[name]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = sum(compute_training_step(model, streams, criterion).losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def one_step(name: str) -> None:
        if name == "2 x attention":
            train_step("attention", {"instance": batches["instance"]})
            train_step("attention", {"instance": batches["balanced"]})
            return
        model = setups[name][0]
        train_step(name, {k: v for k, v in batches.items() if k in model.batch_streams})

    def timed(name: str) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            one_step(name)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / args.steps, (time.process_time() - start_cpu) / args.steps

    names = ["late_avg", "attention", "2 x attention", "attention_cm", "meid"]
    for name in names:  # warm-up
        one_step(name)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:
            seconds, cpu_seconds = timed(name)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    print(f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}; batch {args.batch} x "
          f"{args.frames} frames x {args.dim} dims, {args.classes} classes; median over {args.repeats} interleaved "
          f"rounds of {args.steps} steps")
    for label, times in (("wall-clock", wall), ("CPU time", cpu)):
        median = {name: statistics.median(values) for name, values in times.items()}
        print(f"\n{label:<15} {'ms/step':>9} {'min':>9} {'max':>9} {'vs 2 x attention':>17} {'vs late_avg':>12}")
        for name in names:
            print(f"{name:<15} {1000 * median[name]:9.1f} {1000 * min(times[name]):9.1f} "
                  f"{1000 * max(times[name]):9.1f} {median[name] / median['2 x attention']:16.2f}x "
                  f"{median[name] / median['late_avg']:11.2f}x")
        ratios = [m / a for m, a in zip(times["meid"], times["2 x attention"])]
        print(f"meid / (2 x attention) per round: {', '.join(f'{r:.2f}' for r in ratios)}; median "
              f"{statistics.median(ratios):.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
