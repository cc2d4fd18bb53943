"""Small split folders and fake run folders for the evaluation and report tests (no real data involved)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from meid_bench.build.split_io import CLASS_SCHEMA, VIDEO_SCHEMA, write_split
from meid_bench.evaluator import write_predictions

# Six classes, two per group; train counts chosen so that the groups' count ranges do not overlap.
TOY_GROUPS = ["head", "head", "medium", "medium", "tail", "tail"]
TOY_TRAIN_COUNTS = [40, 30, 12, 9, 3, 2]


def video_table(ids: list[str], labels: list[list[int]], rng: np.random.Generator) -> pa.Table:
    starts = [[float(rng.integers(0, 10)) for _ in row] for row in labels]
    ends = [[s + 1.0 + float(rng.integers(0, 20)) for s in row] for row in starts]
    return pa.table({
        "video_id": ids,
        "labels": labels,
        "duration": [30.0] * len(ids),
        "segment_classes": labels,
        "segment_starts": starts,
        "segment_ends": ends,
    }, schema=VIDEO_SCHEMA)


def make_split(out: Path, test_labels: list[list[int]], name: str = "toy", seed: int = 0,
               val_labels: list[list[int]] | None = None) -> Path:
    """A 6-class split whose test subset has exactly ``test_labels`` (video ids t000, t001, ...)."""
    rng = np.random.default_rng(seed)
    train_labels: list[list[int]] = []
    for klass, count in enumerate(TOY_TRAIN_COUNTS):
        train_labels += [[klass]] * count
    val_labels = val_labels if val_labels is not None else [[k] for k in range(6)]
    tables = {
        "train": video_table([f"r{i:03d}" for i in range(len(train_labels))], train_labels, rng),
        "val": video_table([f"v{i:03d}" for i in range(len(val_labels))], val_labels, rng),
        "test": video_table([f"t{i:03d}" for i in range(len(test_labels))], test_labels, rng),
    }
    seconds = [float(c) * (10.0 + 5 * k) for k, c in enumerate(TOY_TRAIN_COUNTS)]
    tables["classes"] = pa.table({
        "class_id": list(range(6)),
        "class_key": [f"c{k:03d}" for k in range(6)],
        "class_name": [f"toy class {k}" for k in range(6)],
        "original_train_count": [c * 2 for c in TOY_TRAIN_COUNTS],
        "target": [45.0, 28.0, 12.0, 8.0, 3.0, 2.0],
        "train_count": TOY_TRAIN_COUNTS,
        "val_count": [sum(k in row for row in val_labels) for k in range(6)],
        "test_count": [sum(k in row for row in test_labels) for k in range(6)],
        "train_seconds": seconds,
        "group": TOY_GROUPS,
    }, schema=CLASS_SCHEMA)
    manifest = {"format": "meid-bench-split", "format_version": 1, "protocol": "v1", "benchmark": name,
                "parameters": {"imbalance": 20.0, "seed": seed, "profile": "exponential"},
                "sources": [{"file": "toy.csv", "sha256": "0" * 64}]}
    return write_split(out, tables, manifest)


def make_run(run_dir: Path, split_dir: Path, split_checksum: str, video_ids: list[str], scores: np.ndarray,
             method: str = "baseline", seed: int = 0, recipe: dict | None = None,
             subsets: tuple[str, ...] = ("test",), simulated: bool | None = None) -> Path:
    """A run folder as training writes it: run.json plus predictions/<subset>.parquet (the same scores each);
    ``simulated`` (when not None) is recorded as run.json's features.simulated."""
    run_dir.mkdir(parents=True)
    record = {"format": "meid-bench-run", "format_version": 1, "name": run_dir.name, "method": method, "seed": seed,
              "split": {"path": str(split_dir), "benchmark": "toy", "checksum": split_checksum},
              "recipe": recipe if recipe is not None else {"method": method, "lr": 1e-4, "epochs": 3},
              "meid_bench_version": "0.1.0"}
    if simulated is not None:
        record["features"] = {"path": "features.h5", "dim": 4, "simulated": simulated}
    (run_dir / "run.json").write_text(json.dumps(record, indent=2))
    keys = [f"c{k:03d}" for k in range(scores.shape[1])]
    for subset in subsets:
        write_predictions(run_dir / "predictions" / f"{subset}.parquet", video_ids, scores, keys)
    return run_dir
