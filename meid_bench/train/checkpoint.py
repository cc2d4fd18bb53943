"""Checkpoints: written atomically, loaded without executing code from the file (``weights_only``), and checked
field by field before anything is restored from them.

:func:`load_checkpoint` checks the payload on its own (types, ranges, finite weights) and against what the caller
expects (model, split, feature dimension, classes); :func:`check_restorable` checks it against the live model,
optimizer, scheduler and batch-mixing strategy it is about to be loaded into, so that a damaged or foreign
checkpoint is one clear error naming the file and the field, never a traceback from deep inside torch.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from meid_bench.checks import Fields
from meid_bench.errors import MeidBenchError

CHECKPOINT_FORMAT = "meid-bench-checkpoint"
CHECKPOINT_VERSION = 1
_REMEDY = "the checkpoint is damaged or not from this run; start the run again in a new folder (--out)"
# What torch.load raises on damaged bytes, even with weights_only (zip, pickle and tensor storage layers).
_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, zlib.error,
                NotImplementedError, KeyError, IndexError, TypeError, AttributeError, ImportError, OverflowError,
                MemoryError)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` to a temporary sibling, then rename: a crash never leaves a half-written checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.tmp")
    try:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}, staging)
        os.replace(staging, path)
    except BaseException as exc:
        staging.unlink(missing_ok=True)  # never leave half a checkpoint behind
        if isinstance(exc, RuntimeError) and "write" in str(exc).lower():  # torch's words for a failed write
            first = str(exc).strip().splitlines()[-1][:160]
            raise MeidBenchError(f"{path}: the checkpoint could not be written ({first}); is the disk full? Free "
                                 "space, then continue the run with --resume") from None
        raise


def load_checkpoint(path: Path, expect_model: str | None = None,
                    expect_split: str | tuple[str, ...] | None = None, *,
                    expect_input_dim: int | None = None, expect_num_classes: int | None = None) -> dict[str, Any]:
    """Load and check a checkpoint; a damaged file, another format, model, split, feature dimension or number of
    classes is a clear error. ``expect_split``: the split checksum, or the checksums that identify the split."""
    path = Path(path)
    if not path.is_file():
        raise MeidBenchError(f"{path}: no such checkpoint")
    try:
        with zipfile.ZipFile(path) as archive:  # torch does not check the CRC32 of each record; a flipped bit would
            damaged = archive.testzip()          # load as a silently different weight
        if damaged is not None:
            raise MeidBenchError(f"{path}: damaged (record {damaged} fails its CRC32 check); start the run again in "
                                 "a new folder (--out)")
        with warnings.catch_warnings():  # torch's remarks on foreign files; what matters is reported below
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except _LOAD_ERRORS as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MeidBenchError(f"{path}: not a readable meid-bench checkpoint ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise MeidBenchError(f"{path}: not a meid-bench checkpoint (field 'format' missing or different)")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise MeidBenchError(f"{path}: checkpoint version {payload.get('version')!r}, this meid-bench reads "
                             f"{CHECKPOINT_VERSION}")
    check_payload(payload, path)
    model_name = payload["recipe"]["model"]["name"]
    if expect_model is not None and model_name != expect_model:
        raise MeidBenchError(f"{path}: checkpoint of model {model_name!r}, but the recipe trains {expect_model!r}; "
                             "use the recipe the run was started with")
    accepted = (expect_split,) if isinstance(expect_split, str) else tuple(expect_split or ())
    if expect_split is not None and payload["split_checksum"] not in accepted:
        raise MeidBenchError(f"{path}: checkpoint trained on another split (checksum "
                             f"{payload['split_checksum'][:16]}), not the one given with --split")
    if expect_input_dim is not None and payload["input_dim"] != expect_input_dim:
        raise MeidBenchError(f"{path}: checkpoint trained on features of dimension {payload['input_dim']}, the "
                             f"features given have {expect_input_dim}; resume with the features the run was started "
                             "with (--features)")
    if expect_num_classes is not None and payload["num_classes"] != expect_num_classes:
        raise MeidBenchError(f"{path}: checkpoint of {payload['num_classes']} classes, the split has "
                             f"{expect_num_classes}")
    return payload


def check_payload(payload: dict[str, Any], path: Path) -> None:
    """Types, ranges and finiteness of every field of a checkpoint payload (``docs/formats.md``)."""
    from meid_bench.train.config import Recipe

    fields = Fields(payload, path, _REMEDY)
    epoch = fields.integer("epoch", low=0)
    try:
        recipe = Recipe.from_dict(fields.object("recipe").data, where=f"{path}: field 'recipe'")
    except MeidBenchError as exc:
        raise MeidBenchError(f"{exc}; {_REMEDY}") from None
    if epoch >= recipe.epochs:
        raise fields.fail("epoch", f"is {epoch}, but its recipe trains {recipe.epochs} epochs (0..{recipe.epochs - 1})")
    fields.sha256("split_checksum")
    fields.integer("input_dim", low=1)
    fields.integer("num_classes", low=1)
    fields.integer("seed")
    best = fields.object("best")
    best.integer("epoch", low=-1, high=epoch)
    best.number("val_mAP", low=-1.0, high=1.0)
    fields.string("meid_bench_version", None)
    _tensors(fields, "model", floating_finite=True)
    optimizer = fields.object("optimizer")
    for index, group in enumerate(optimizer.objects("param_groups")):
        params = group.list("params")
        if not all(isinstance(p, int) and not isinstance(p, bool) for p in params):
            raise group.fail("params", "expected a list of parameter indices")
    state = optimizer.object("state")
    for key, value in state.data.items():
        if not isinstance(value, Mapping) or not all(isinstance(t, torch.Tensor) for t in value.values()):
            raise state.fail(str(key), "expected an object of tensors")
    scheduler = fields.object("scheduler")
    scheduler.integer("last_epoch")
    fields.object("mix")
    _generator_state(fields, "torch_rng")
    if fields.has("rng_per_rank"):  # meid-bench 0.3 and earlier kept only rank 0's CPU state (torch_rng)
        ranks = fields.list("rng_per_rank")
        if not ranks:
            raise fields.fail("rng_per_rank", "is empty; expected one object per training process")
        for rank in range(len(ranks)):
            entry = Fields(ranks[rank], path, _REMEDY, f"rng_per_rank.{rank}")
            _generator_state(entry, "torch")
            if entry.has("cuda"):
                _generator_state(entry, "cuda")
            entry.object("mix", {})


def _generator_state(fields: Fields, key: str) -> torch.Tensor:
    state = fields.raw(key)
    if not isinstance(state, torch.Tensor) or state.dtype != torch.uint8 or state.dim() != 1:
        raise fields.fail(key, "expected a 1-D uint8 tensor (a random generator state: torch.get_rng_state())")
    return state


def _tensors(fields: Fields, key: str, floating_finite: bool) -> Mapping[str, torch.Tensor]:
    values = fields.object(key).data
    for name, tensor in values.items():
        if not isinstance(name, str) or not isinstance(tensor, torch.Tensor):
            raise fields.fail(key, f"entry {name!r} is not a named tensor")
        if floating_finite and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise fields.fail(f"{key}.{name}", "holds NaN or infinite values")
    return values


def check_state_dict(state: Mapping[str, torch.Tensor], module: torch.nn.Module, path: Path, key: str) -> None:
    """The payload's ``key`` (a state dict) has exactly the module's entries, with the same shapes."""
    expected = module.state_dict()
    missing = [name for name in expected if name not in state]
    extra = [name for name in state if name not in expected]
    if missing or extra:
        what = f"lacks {missing[0]!r}" if missing else f"has an unknown entry {extra[0]!r}"
        raise MeidBenchError(f"{path}: field {key!r} {what} for this model; {_REMEDY}")
    for name, tensor in expected.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise MeidBenchError(f"{path}: field '{key}.{name}' has shape {list(state[name].shape)}, the model has "
                                 f"{list(tensor.shape)}; {_REMEDY}")


def check_restorable(payload: dict[str, Any], path: Path, model: torch.nn.Module,
                     optimizer: torch.optim.Optimizer, scheduler: Any, mix: Any) -> None:
    """The payload fits the live objects it is about to be loaded into (entries, shapes, group sizes, states)."""
    check_state_dict(payload["model"], model, path, "model")
    fresh = optimizer.state_dict()
    groups = payload["optimizer"]["param_groups"]
    sizes = [len(g["params"]) for g in groups]
    if sizes != [len(g["params"]) for g in fresh["param_groups"]]:
        raise MeidBenchError(f"{path}: field 'optimizer' has parameter groups of sizes {sizes}, this model's "
                             f"optimizer {[len(g['params']) for g in fresh['param_groups']]}; {_REMEDY}")
    # torch pairs the saved parameter indices with the live parameters group by group, in order.
    shapes = {index: tuple(parameter.shape) for saved, live in zip(groups, optimizer.param_groups)
              for index, parameter in zip(saved["params"], live["params"])}
    for index, values in payload["optimizer"]["state"].items():
        if index not in shapes:
            raise MeidBenchError(f"{path}: field 'optimizer.state' names parameter {index!r}, which the optimizer "
                                 f"does not have; {_REMEDY}")
        for name, tensor in values.items():
            if tensor.dim() and tuple(tensor.shape) != shapes[index]:
                raise MeidBenchError(f"{path}: field 'optimizer.state.{index}.{name}' has shape "
                                     f"{list(tensor.shape)}, the parameter {list(shapes[index])}; {_REMEDY}")
    state = payload["scheduler"]
    if set(state) != set(scheduler.state_dict()) or state["last_epoch"] != payload["epoch"] + 1:
        raise MeidBenchError(f"{path}: field 'scheduler' does not belong to epoch {payload['epoch']} of this "
                             f"recipe's schedule; {_REMEDY}")
    if payload["torch_rng"].numel() != torch.get_rng_state().numel():
        raise MeidBenchError(f"{path}: field 'torch_rng' is not a random generator state of this torch; {_REMEDY}")
    if mix is not None:
        _check_mix_state(payload["mix"], mix, path)
    for rank, entry in enumerate(payload.get("rng_per_rank", [])):
        if entry["torch"].numel() != torch.get_rng_state().numel():
            raise MeidBenchError(f"{path}: field 'rng_per_rank.{rank}.torch' is not a random generator state of "
                                 f"this torch; {_REMEDY}")
        if mix is not None:
            _check_mix_state(entry.get("mix", {}), mix, path, f"rng_per_rank.{rank}.mix")


def _check_mix_state(state: Mapping[str, Any], mix: Any, path: Path, key: str = "mix") -> None:
    fresh = mix.state_dict()
    if set(state) != set(fresh):
        raise MeidBenchError(f"{path}: field {key!r} holds {sorted(state)}, the batch mixing expects "
                             f"{sorted(fresh)}; {_REMEDY}")
    fields = Fields(state, path, _REMEDY, key)
    if "class_ap" in fresh:
        fields.numbers("class_ap", length=len(fresh["class_ap"]), low=0.0, high=1.0)
    if "rng" in fresh:
        name = fields.object("rng").string("bit_generator", choices=(fresh["rng"]["bit_generator"],))
        try:
            getattr(np.random, name)().state = dict(state["rng"])
        except (TypeError, ValueError, KeyError, OverflowError) as exc:  # numpy's refusals of a generator state
            raise fields.fail("rng", f"not a valid random generator state ({str(exc)[:80]})") from None
