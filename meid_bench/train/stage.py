"""A second training stage: a run that starts from another run's best checkpoint (the recipe's ``init``) with part of
the model learning and the rest frozen, e.g. classifier re-training on a frozen backbone (cRT, Kang et al. 2020).

    start = read_starting_point(recipe, run_dir, split, features_sha256, seed)   # checks the first stage's run
    learning = start_from(model, recipe.init, start.state)                       # load, reset, freeze
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from meid_bench.build.split_io import Split, sha256_file
from meid_bench.errors import MeidBenchError
from meid_bench.train.config import InitConfig, Recipe
from meid_bench.train.restore import load_run


@dataclass(frozen=True)
class StartingPoint:
    """The first stage's weights and what run.json records of them (``init``: its folder, epoch and sha256)."""

    state: dict[str, Tensor]
    record: dict[str, Any]


def read_starting_point(recipe: Recipe, run_dir: Path, split: Split, features_sha256: str,
                        seed: int) -> StartingPoint:
    """The best checkpoint of the run ``recipe.init.from_run`` names for a run written to ``run_dir``: a finished
    run on this split and this very feature store, of the same model with the same options."""
    init = recipe.init
    source = init.source_for(run_dir, split.name, seed)
    where = f"init.from_run {init.from_run!r}: {source}"
    if not (source / "metrics.json").is_file():
        raise MeidBenchError(f"{where}: no finished run there (no metrics.json); train the first stage into that "
                             f"folder first (meid-bench train --split {split.path} --seed {seed} --out {source} "
                             "--recipe ...), or set init.from_run")
    loaded = load_run(source, "best")
    if loaded.run.split_checksum not in split.accepted_checksums:
        raise MeidBenchError(f"{where}: trained on another split (checksum {str(loaded.run.split_checksum)[:12]}...), "
                             f"not {split.path}; start from a run of this split")
    features = loaded.run.record.get("features")
    recorded_sha = features.get("sha256") if isinstance(features, dict) else None
    if recorded_sha != features_sha256:
        raise MeidBenchError(f"{where}: trained on another feature store (sha256 {str(recorded_sha)[:12]}...), not "
                             f"this run's ({features_sha256[:12]}...); start from a run on the same store")
    theirs, ours = loaded.recipe.model.to_dict(), recipe.model.to_dict()
    if theirs != ours:
        key = next(k for k in sorted(set(theirs) | set(ours)) if theirs.get(k) != ours.get(k))
        raise MeidBenchError(f"{where}: its model has {key}: {theirs.get(key)!r}, this recipe's model {key}: "
                             f"{ours.get(key)!r}; a second stage keeps the first stage's model: give it the same "
                             "model section")
    checkpoint = source / "checkpoints" / "best.pt"
    record = {"run": str(source.resolve()), "checkpoint": "best", "epoch": loaded.epoch,
              "sha256": sha256_file(checkpoint)}
    return StartingPoint(loaded.model.state_dict(), record)


def start_from(model: nn.Module, init: InitConfig, state: dict[str, Tensor]) -> list[str]:
    """Load ``state`` into ``model``, draw the ``init.train`` modules afresh when ``init.reset``, and freeze every
    other parameter. Returns the names of the parameters that learn. Torch's generator draws the reset weights."""
    model.load_state_dict(state)
    if not init.train:
        return [name for name, _ in model.named_parameters()]
    modules = dict(model.named_modules())
    unknown = [name for name in init.train if name not in modules]
    if unknown:
        children = ", ".join(name for name, _ in model.named_children())
        raise MeidBenchError(f"init.train: {', '.join(unknown)}: not a module of model {type(model).__name__}; its "
                             f"modules: {children}")
    if init.reset:
        for name in init.train:
            for module in modules[name].modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
    learning = []
    for name, parameter in model.named_parameters():
        learns = any(name.startswith(prefix + ".") for prefix in init.train)
        parameter.requires_grad_(learns)
        if learns:
            learning.append(name)
    return learning
