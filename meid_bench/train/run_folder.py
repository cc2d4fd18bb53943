"""A run folder as training writes it: the output rule for it (shared by `train` and `sweep`), and a fingerprint
of its state, so that a run checked before its lock was taken can tell whether someone wrote it in between."""

from __future__ import annotations

import os
from pathlib import Path

from meid_bench.build.split_io import Split
from meid_bench.outputs import Input, Output, check_outputs, split_input
from meid_bench.run_lock import LOCK_NAME
from meid_bench.train.config import resolve_recipe_path


def run_inputs(split: Split | Path, store: Path | None, recipe: str | None) -> list[Input]:
    """What a training run reads: the split's files, the feature store and the recipe file."""
    inputs = [split_input(split.path if isinstance(split, Split) else split)]
    if store is not None:
        inputs.append(Input(Path(store), "--features (the feature store)"))
    if recipe is not None:
        inputs.append(Input(resolve_recipe_path(recipe), "--recipe"))
    return inputs


def check_run_outputs(run_dir: Path, split: Split | Path, store: Path | None, recipe: str | None,
                      option: str = "--out") -> None:
    """The output rule for a run folder: a folder we may write, which is none of the run's inputs, holds none and
    lies in none. Whether an existing folder may be continued is the caller's decision (--resume)."""
    check_outputs([Output(Path(run_dir), option, "run", folder=True, existing_ok=True)],
                  run_inputs(split, store, recipe), force=False)


def folder_state(run_dir: Path) -> tuple:
    """What identifies the folder's content for this purpose: each entry's name, type, size and mtime (the
    checkpoints folder's too), the lock file left out."""
    def entries(folder: Path) -> list[tuple]:
        try:
            found = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return []
        out = []
        for entry in found:
            if entry.name == LOCK_NAME:
                continue
            stat = entry.stat(follow_symlinks=False)
            out.append((entry.name, stat.st_mode, stat.st_size, stat.st_mtime_ns, stat.st_ino))
        return out

    return tuple(entries(run_dir)) + tuple(entries(run_dir / "checkpoints"))
