"""Many runs at once: recipes x seeds, each a `meid-bench train` process, several in parallel.

Small models on proxy features leave a GPU mostly idle, so running a few training processes side by side is the
cheap way to get every method with several seeds. Each run is an ordinary run folder; a run whose metrics.json
exists is skipped, so a sweep that was cut short is finished by running it again.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from meid_bench.build.split_io import load_split
from meid_bench.errors import MeidBenchError
from meid_bench.fileio import check_output_folder
from meid_bench.train.config import list_recipes, resolve_recipe_path


@dataclass(frozen=True)
class SweepRun:
    recipe: str
    seed: int
    out: Path


def plan_sweep(split_dir: Path, recipes: Sequence[str], seeds: Sequence[int], runs_root: Path) -> list[SweepRun]:
    check_output_folder(runs_root, force=False, option="--runs-root", existing_ok=True)
    split = load_split(split_dir)
    names = list_recipes() if list(recipes) == ["all"] else list(recipes)
    for name in names:
        resolve_recipe_path(name)  # an unknown recipe fails before anything starts
    return [SweepRun(name, seed, runs_root / f"{split.name}-{Path(name).stem}-seed{seed}")
            for name in names for seed in seeds]


def run_sweep(split_dir: Path, runs: Sequence[SweepRun], jobs: int, train_args: Sequence[str],
              echo: Callable[[str], None] = print) -> list[SweepRun]:
    """Run every planned run not yet finished, ``jobs`` at a time; returns the runs that failed."""
    if jobs < 1:
        raise MeidBenchError(f"--jobs {jobs}: must be >= 1")
    threads = str(max(1, (os.cpu_count() or 1) // jobs))
    pending = [run for run in runs if not (run.out / "metrics.json").is_file()]
    echo(f"{len(runs)} runs planned, {len(runs) - len(pending)} already done, {len(pending)} to run, {jobs} at a time")

    def launch(run: SweepRun) -> tuple[SweepRun, int, float]:
        resume = ["--resume"] if (run.out / "checkpoints" / "last.pt").is_file() else []
        command = [sys.executable, "-m", "meid_bench", "train", "--split", str(split_dir), "--recipe", run.recipe,
                   "--seed", str(run.seed), "--out", str(run.out), *resume, *train_args]
        run.out.parent.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        with open(run.out.parent / f"{run.out.name}.log", "a") as log:
            code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT,
                                   env=dict(os.environ, OMP_NUM_THREADS=threads))
        return run, code, time.perf_counter() - started

    failed = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for run, code, seconds in pool.map(launch, pending):
            status = "done" if code == 0 else f"FAILED (exit {code}, see {run.out}.log)"
            echo(f"{run.out.name}: {status} in {seconds:.0f}s")
            if code != 0:
                failed.append(run)
    return failed
