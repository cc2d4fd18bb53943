"""Checkpoints: written atomically, loaded without executing code from the file (``weights_only``)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from meid_bench.errors import MeidBenchError

CHECKPOINT_FORMAT = "meid-bench-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary sibling, then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}, staging)
    os.replace(staging, path)


def load_checkpoint(path: Path, expect_model: str | None = None, expect_split: str | None = None) -> dict[str, Any]:
    """Load and check a checkpoint; a corrupted file, another format, model or split is a clear error."""
    path = Path(path)
    if not path.is_file():
        raise MeidBenchError(f"{path}: no such checkpoint")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeidBenchError(f"{path}: not a readable meid-bench checkpoint ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise MeidBenchError(f"{path}: not a meid-bench checkpoint (field 'format' missing or different)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise MeidBenchError(f"{path}: checkpoint version {payload.get('version')!r}, this meid-bench reads "
                             f"{CHECKPOINT_VERSION}")
    model_name = payload.get("recipe", {}).get("model", {}).get("name")
    if expect_model is not None and model_name != expect_model:
        raise MeidBenchError(f"{path}: checkpoint of model {model_name!r}, but the recipe trains {expect_model!r}; "
                             "use the recipe the run was started with")
    if expect_split is not None and payload.get("split_checksum") != expect_split:
        raise MeidBenchError(f"{path}: checkpoint trained on another split (checksum "
                             f"{str(payload.get('split_checksum'))[:16]}), not the one given with --split")
    return payload
