"""A MEID training step against a late-averaging (and attention) step at the same batch size, side by side.

    python perf/bench_train_step.py [--device cpu] [--steps 10] [--batch 128] [--frames 60] [--dim 256]

Models are built from the shipped recipes (meid.yaml, late_avg.yaml, attention.yaml), on random features shaped
like proxy CharadesLT (157 classes, groups as in the default build). Steps are interleaved model by model so that
machine noise hits all alike; the median step time and the ratio to late_avg are printed. MEID's step includes its
second, class-balanced batch (it trains two experts per step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from meid_bench.models import compute_training_losses
from meid_bench.train.config import load_recipe

RECIPES = ("late_avg", "attention", "meid")


def make_batch(batch: int, frames: int, dim: int, classes: int, generator: torch.Generator,
               device: torch.device) -> dict[str, torch.Tensor]:
    features = torch.randn(batch, frames, dim, generator=generator).to(device)
    target = (torch.rand(batch, classes, generator=generator) < 0.04).float().to(device)
    return {"features": features, "target": target, "mask": torch.ones_like(target)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--classes", type=int, default=157)
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    groups = np.array(["head"] * 77 + ["medium"] * 56 + ["tail"] * 24)[: args.classes]
    counts = np.linspace(900, 10, args.classes).astype(np.int64)
    setups = {}
    for name in RECIPES:
        recipe = load_recipe(name)
        model = recipe.model.create(args.dim, args.classes, class_groups=groups).to(device)
        criterion = recipe.loss.create(counts).to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        setups[name] = (model, criterion, optimizer)
    batches = {"instance": make_batch(args.batch, args.frames, args.dim, args.classes, generator, device),
               "balanced": make_batch(args.batch, args.frames, args.dim, args.classes, generator, device)}

    def step(name: str) -> float:
        model, criterion, optimizer = setups[name]
        wanted = {k: v for k, v in batches.items() if k in model.batch_streams}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = sum(compute_training_losses(model, wanted, criterion).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    for name in RECIPES:  # warm-up
        step(name)
    times = {name: [] for name in RECIPES}
    for _ in range(args.steps):
        for name in RECIPES:
            times[name].append(step(name))
    base = statistics.median(times["late_avg"])
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch} x {args.frames} frames x "
          f"{args.dim} dims, {args.classes} classes, median of {args.steps} steps")
    for name in RECIPES:
        median = statistics.median(times[name])
        print(f"{name:<10} {1000 * median:8.1f} ms/step   {median / base:5.2f}x late_avg")


if __name__ == "__main__":
    main()
