"""A trained model back from its run folder: the recipe, the metrics and the network with its weights.

    run = meid_bench.load_run("runs/charadeslt-meid-seed0")      # the best-on-validation checkpoint, on the CPU
    run.model(features)                                          # features [B, T, D] -> ModelOutput (.logits)
    run.metrics["mAP"], run.recipe.optim.lr

Weights are loaded with ``torch.load(weights_only=True)``: nothing in the file is executed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from meid_bench.errors import MeidBenchError
from meid_bench.evaluator import METRICS_FORMAT
from meid_bench.fileio import read_record
from meid_bench.records import shown_epoch
from meid_bench.models.base import VideoModel
from meid_bench.runs import Run, load_run_split, read_run
from meid_bench.train.checkpoint import load_checkpoint
from meid_bench.train.config import Recipe

CHECKPOINTS = ("best", "last")


@dataclass(frozen=True)
class LoadedRun:
    """A run folder with its model rebuilt: ``model`` is in eval mode on the requested device."""

    path: Path
    run: Run = field(repr=False)
    recipe: Recipe = field(repr=False)
    model: VideoModel = field(repr=False)
    checkpoint: str
    epoch: int  # of the checkpoint, counted from 1 like every epoch shown to people (docs/formats.md)
    metrics: dict | None = field(repr=False)  # test metrics (metrics.json), None before training finished
    val_metrics: dict | None = field(repr=False)  # metrics_val.json

    def __repr__(self) -> str:
        test = "unfinished" if self.metrics is None else f"test mAP {100 * self.metrics['mAP']:.2f}%"
        return (f"LoadedRun({self.run.name}: {self.recipe.name} on {self.run.benchmark}, seed {self.run.seed}, "
                f"{self.checkpoint} checkpoint of epoch {self.epoch}, {test})")


def load_run(run_dir: str | os.PathLike, checkpoint: str = "best", device: str | torch.device = "cpu",
             split: str | os.PathLike | None = None) -> LoadedRun:
    """Rebuild the model of ``run_dir`` from ``checkpoints/<checkpoint>.pt`` (``best``: the epoch chosen on
    validation; ``last``: the latest epoch). ``split`` is only needed for checkpoints written before they recorded
    the class groups (the split folder is then found through run.json unless given)."""
    if checkpoint not in CHECKPOINTS:
        raise MeidBenchError(f"checkpoint {checkpoint!r}: choose one of {', '.join(CHECKPOINTS)}")
    run = read_run(run_dir)
    path = run.path / "checkpoints" / f"{checkpoint}.pt"
    payload = load_checkpoint(path, expect_split=run.split_checksum)
    _check_against_record(payload, run, path)
    recipe = Recipe.from_dict(payload.get("recipe"), where=f"{path}: recipe")
    groups = payload.get("class_groups")
    if groups is None:
        groups = load_run_split(run, override=split).classes["group"].astype(str).tolist()
    try:
        model = recipe.model.create(int(payload["input_dim"]), int(payload["num_classes"]), class_groups=groups)
        model.load_state_dict(payload["model"])
    except (KeyError, RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeidBenchError(f"{path}: the weights do not fit the recorded recipe ({first[:200]}); the checkpoint "
                             "is damaged or from another meid-bench version") from None
    model.to(device).eval()
    return LoadedRun(path=run.path, run=run, recipe=recipe, model=model, checkpoint=checkpoint,
                     epoch=shown_epoch(int(payload["epoch"])), metrics=_metrics(run.path / "metrics.json"),
                     val_metrics=_metrics(run.path / "metrics_val.json"))


def _plain(value: object) -> object:
    return json.loads(json.dumps(value, default=str))  # tuples as lists, as run.json holds them


def _check_against_record(payload: dict, run: Run, path: Path) -> None:
    """The checkpoint must be this run's, as `train --resume` demands: the recipe (and so the model) and the seed
    run.json records (the split is checked by load_checkpoint). A checkpoint copied from another run would
    otherwise load under this run's name, seed and metrics."""
    recorded = run.record.get("recipe")
    if isinstance(recorded, dict) and recorded and _plain(payload.get("recipe")) != _plain(recorded):
        theirs = payload.get("recipe", {}).get("model", {}) if isinstance(payload.get("recipe"), dict) else {}
        ours = recorded.get("model", {}) if isinstance(recorded.get("model"), dict) else {}
        which = (f"model {theirs.get('name')!r}, run.json records {ours.get('name')!r}"
                 if theirs.get("name") != ours.get("name") else "another recipe than run.json records")
        raise MeidBenchError(f"{path}: the checkpoint was trained with {which}: it is not this run's checkpoint; "
                             "restore the run's own checkpoints or train it again")
    if isinstance(run.seed, int) and payload.get("seed") != run.seed:
        raise MeidBenchError(f"{path}: the checkpoint was trained with seed {payload.get('seed')!r}, run.json records "
                             f"seed {run.seed}: it is not this run's checkpoint; restore the run's own checkpoints")


def _metrics(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return read_record(path, METRICS_FORMAT, None, "evaluate the run again with `meid-bench evaluate --force`")
