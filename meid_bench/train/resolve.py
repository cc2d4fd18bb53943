"""A run's options resolved and checked the one way `train` and `sweep` both use, so that a sweep refuses before
starting anything what a single run would refuse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from meid_bench.bounds import WORKERS_MAX, check_int_range, check_seed
from meid_bench.build.split_io import Split
from meid_bench.errors import MeidBenchError
from meid_bench.train.config import Recipe, apply_overrides, load_recipe


def resolve_run_recipe(recipe: str, split: Split, overrides: Sequence[str], epochs: int | None) -> Recipe:
    """The recipe as a run trains it: the benchmark's schedule first, then ``--set``, then ``--epochs``."""
    resolved = apply_overrides(load_recipe(recipe).for_benchmark(split.name), overrides)
    if epochs is not None:
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise MeidBenchError(f"--epochs {epochs}: must be >= 1")
        resolved = replace(resolved, epochs=epochs)
    return resolved.resolved()


def check_run_numbers(seed: int, workers: int, eval_batch_size: int = 1) -> None:
    """The numeric options of a run: a seed the random generators take, a sane number of reader threads."""
    check_seed(seed)
    if workers < 0:
        raise MeidBenchError(f"--workers {workers}: must be >= 0")
    check_int_range(workers, "--workers", 0, WORKERS_MAX)
    if eval_batch_size < 1:
        raise MeidBenchError(f"eval_batch_size {eval_batch_size}: must be >= 1")
