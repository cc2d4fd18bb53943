"""Typed training recipes: one YAML file per method under recipes/, loaded into frozen dataclasses.

    recipe = load_recipe("meid").for_benchmark(split.name).resolved()   # recipes/meid.yaml (or a YAML path),
                                                                        # with the benchmark's schedule applied
    model = recipe.model.create(input_dim, num_classes, class_groups)
    criterion = recipe.loss.create(class_counts, num_videos)
    mix = recipe.batch_mix.create(num_classes, seed)   # None for batch_mix: none
    checkpoint["recipe"] = recipe.to_dict()      # Recipe.from_dict(...) restores it exactly

Every key of a recipe is typed; unknown keys, wrong types and out-of-range values raise MeidBenchError naming the
file and the key path (``recipes/x.yaml: model.cfs_ration: unknown key; known keys here: ...``). Model, loss and
batch-mix sections hold ``name`` plus that component's own options, validated by its options dataclass.
A recipe's top-level ``optim`` and ``epochs`` are its reference schedule; ``schedules`` holds per-benchmark
schedules (epochs, lr, milestones) that :meth:`Recipe.for_benchmark` applies. docs/models.md lists every key, type
and default.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from meid_bench.bounds import SET_DEPTH_MAX, nesting_depth
from meid_bench.errors import MeidBenchError
from meid_bench.models import create_model, list_models, model_config_class
from meid_bench.models.base import BaseModelConfig, VideoModel
from meid_bench.models.batch_mix import (
    BatchMix,
    NoMixOptions,
    batch_mix_options_class,
    create_batch_mix,
    list_batch_mixes,
)
from meid_bench.models.losses import BCEOptions, MultiLabelLoss, create_criterion, list_losses, loss_options_class
from meid_bench.models.options import options_to_dict, parse_options

RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelConfig:
    """``name`` (a registered model) and ``params``, that model's typed config dataclass (hidden, dropout, ...)."""

    name: str
    params: BaseModelConfig

    @property
    def hidden(self) -> int | None:
        return self.params.hidden

    @property
    def dropout(self) -> float:
        return self.params.dropout

    def create(self, input_dim: int, num_classes: int, class_groups: Any = None) -> VideoModel:
        return create_model(
            self.name, input_dim=input_dim, num_classes=num_classes, class_groups=class_groups, config=self.params
        )

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **options_to_dict(self.params)}


@dataclass(frozen=True)
class LossConfig:
    """``name`` (bce, focal, cb, ldam_drw, eql) and ``options``, that loss's options dataclass."""

    name: str = "bce"
    options: Any = field(default_factory=BCEOptions)

    def create(self, class_counts: np.ndarray, num_videos: int | None = None) -> MultiLabelLoss:
        return create_criterion(self, class_counts, num_videos)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **options_to_dict(self.options)}


@dataclass(frozen=True)
class BatchMixConfig:
    """``name`` (none, mixup, framestack) and ``options``, that strategy's options dataclass."""

    name: str = "none"
    options: Any = field(default_factory=NoMixOptions)

    def create(self, num_classes: int, seed: int = 0) -> BatchMix | None:
        return create_batch_mix(self, num_classes, seed)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **options_to_dict(self.options)}


@dataclass(frozen=True)
class SamplerConfig:
    """How a batch stream draws videos: instance (shuffle), cbs (class uniform, then a video of it) or srs (class
    with probability ~ sqrt(count)). label_mask: the reference's mask 1 - (labels - onehot(sampled class)), which
    trains only the sampled class among the video's positives (cbs/srs only)."""

    name: Literal["instance", "cbs", "srs"] = "instance"
    label_mask: bool = False

    def problems(self) -> list[tuple[str, str]]:
        if self.label_mask and self.name == "instance":
            return [("label_mask", "applies to cbs/srs sampling only; set it to false or change the sampler name")]
        return []


def _lr_and_milestone_problems(lr: float, milestones: tuple[int, ...]) -> list[tuple[str, str]]:
    """Problems of a learning rate and its decay epochs (shared by ``optim`` and a benchmark's schedule)."""
    found = [("lr", f"must be > 0, got {lr}")] if lr <= 0 else []
    if list(milestones) != sorted(set(milestones)) or any(m < 1 for m in milestones):
        found.append(("milestones", f"must be strictly increasing positive epochs, got {list(milestones)}"))
    return found


@dataclass(frozen=True)
class OptimConfig:
    """Adam(W) with a step schedule (x gamma at each milestone epoch) and gradient-norm clipping (null: none)."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = (30, 60)
    gamma: float = 0.1
    clip_grad_norm: float | None = 20.0

    def problems(self) -> list[tuple[str, str]]:
        found = _lr_and_milestone_problems(self.lr, self.milestones)
        if self.weight_decay < 0:
            found.append(("weight_decay", f"must be >= 0, got {self.weight_decay}"))
        if not 0 < self.gamma <= 1:
            found.append(("gamma", f"must be in (0, 1], got {self.gamma}"))
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            found.append(("clip_grad_norm", f"must be > 0 or null, got {self.clip_grad_norm}"))
        return found


@dataclass(frozen=True)
class DataConfig:
    """Frames per video: train_frames drawn per epoch (random: with replacement, sorted - the reference; uniform:
    evenly spaced), eval_frames evenly spaced for validation and test."""

    train_frames: int = 60
    eval_frames: int = 150
    train_frame_sampling: Literal["random", "uniform"] = "random"

    def problems(self) -> list[tuple[str, str]]:
        found = []
        for name in ("train_frames", "eval_frames"):
            if getattr(self, name) < 1:
                found.append((name, f"must be >= 1, got {getattr(self, name)}"))
        return found


@dataclass(frozen=True)
class ScheduleConfig:
    """One benchmark's schedule: ``epochs``, Adam's ``lr`` and the ``milestones`` (epochs where lr *= optim.gamma).
    Replaces the recipe's ``epochs``, ``optim.lr`` and ``optim.milestones`` on that benchmark."""

    epochs: int
    lr: float
    milestones: tuple[int, ...]

    def problems(self) -> list[tuple[str, str]]:
        found = [("epochs", f"must be >= 1, got {self.epochs}")] if self.epochs < 1 else []
        found += _lr_and_milestone_problems(self.lr, self.milestones)
        ordered = not any(name == "milestones" for name, _ in found)
        if ordered and any(m >= self.epochs for m in self.milestones):
            found.append(("milestones", f"must be before the last epoch ({self.epochs}), got {list(self.milestones)}"))
        return found


def _parse_schedules(data: Any, where: str) -> dict[str, ScheduleConfig]:
    from meid_bench.build.protocol import BENCHMARKS  # build-side constant; imported when a recipe is parsed

    if not isinstance(data, Mapping):
        raise MeidBenchError(f"{where}: schedules: expected a mapping of benchmark name -> schedule, got {data!r}")
    out = {}
    for benchmark, schedule in data.items():
        if benchmark not in BENCHMARKS:
            raise MeidBenchError(f"{where}: schedules.{benchmark}: unknown benchmark; known: {', '.join(BENCHMARKS)}")
        out[str(benchmark)] = parse_options(ScheduleConfig, schedule, where, f"schedules.{benchmark}")
    return out


SCHEDULE_FROM_RECIPE = "recipe"  # schedule_from when the top-level optim/epochs were used


@dataclass(frozen=True)
class _Scalars:
    """The recipe's top-level scalar keys (parsed and checked together)."""

    description: str = ""
    epochs: int = 100
    batch_size: int = 128
    eval_every: int = 1
    schedule_from: str = ""

    def problems(self) -> list[tuple[str, str]]:
        return [(name, f"must be >= 1, got {getattr(self, name)}") for name in ("epochs", "batch_size", "eval_every")
                if getattr(self, name) < 1]


@dataclass(frozen=True)
class Recipe:
    """A complete, typed training recipe. ``balanced_sampler`` feeds the balanced stream of models that declare it
    (MEID with expert 2, the compute-matched attention model); others ignore it. ``schedules`` maps a benchmark to
    its schedule; ``schedule_from`` is set by :meth:`for_benchmark` to the schedule it applied (a benchmark name,
    or ``"recipe"`` for the top-level ``optim``/``epochs``), empty in an unresolved recipe."""

    name: str
    model: ModelConfig
    description: str = ""
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    balanced_sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig("cbs", True))
    batch_mix: BatchMixConfig = field(default_factory=BatchMixConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 100
    batch_size: int = 128
    eval_every: int = 1
    schedules: Mapping[str, ScheduleConfig] = field(default_factory=dict)
    schedule_from: str = ""

    def for_benchmark(self, benchmark: str) -> "Recipe":
        """The recipe as trained on ``benchmark``: its schedule (if ``schedules`` has one) in ``epochs``,
        ``optim.lr`` and ``optim.milestones``, ``schedules`` emptied and ``schedule_from`` recording the source.
        The loop applies overrides (``--set``, ``--epochs``) after this, then :meth:`resolved`."""
        if self.schedule_from:
            return self
        schedule = self.schedules.get(benchmark)
        recipe = self
        if schedule is not None:
            recipe = replace(recipe, epochs=schedule.epochs,
                             optim=replace(recipe.optim, lr=schedule.lr, milestones=schedule.milestones))
        return replace(recipe, schedules={}, schedule_from=benchmark if schedule is not None else SCHEDULE_FROM_RECIPE)

    def resolved(self) -> "Recipe":
        """Values defined by other keys filled in: LDAM's ``drw_epoch: null`` becomes the first lr decay."""
        options = self.loss.options
        if getattr(options, "drw_epoch", 0) is not None:
            return self
        if not self.optim.milestones:
            raise MeidBenchError(f"recipe {self.name}: loss.drw_epoch: null means the first lr decay, but "
                                 "optim.milestones is empty; give drw_epoch an epoch")
        first = self.optim.milestones[0]
        return replace(self, loss=replace(self.loss, options=replace(options, drw_epoch=first)))

    def to_dict(self) -> dict[str, Any]:
        """Every key with its resolved value (plain types): what run.json and checkpoints record."""
        return {
            "name": self.name,
            "description": self.description,
            "model": self.model.to_dict(),
            "loss": self.loss.to_dict(),
            "sampler": options_to_dict(self.sampler),
            "balanced_sampler": options_to_dict(self.balanced_sampler),
            "batch_mix": self.batch_mix.to_dict(),
            "optim": options_to_dict(self.optim),
            "data": options_to_dict(self.data),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "schedules": {name: options_to_dict(schedule) for name, schedule in self.schedules.items()},
            "schedule_from": self.schedule_from,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "<recipe>", default_name: str | None = None) -> "Recipe":
        """Parse and validate a recipe mapping; ``where`` names its source in error messages."""
        if not isinstance(data, Mapping):
            raise MeidBenchError(
                f"{where}: expected a mapping of recipe keys at the top level, got {type(data).__name__}"
            )
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                raise MeidBenchError(f"{where}: {key}: unknown key; known keys here: {', '.join(sorted(known))}")
        name = data.get("name", default_name)
        if name is None:
            raise MeidBenchError(f"{where}: name: missing required key")
        if not isinstance(name, str) or not name:
            raise MeidBenchError(f"{where}: name: expected a non-empty string, got {name!r}")
        if not RECIPE_NAME.fullmatch(name) or ".." in name:
            # The name becomes part of run folder names (runs/<benchmark>-<name>-seed<seed>): no '/', '..', NUL.
            raise MeidBenchError(f"{where}: name: {name[:80]!r} is not a usable recipe name (letters, digits, '.', "
                                 "'_' and '-', at most 100 characters, no '..'); rename it")
        if "model" not in data:
            raise MeidBenchError(f"{where}: model: missing required key (a mapping with at least `name`)")
        model_name, model_options = _named_section(data, "model", None, list_models(), where)
        scalar_keys = ("description", "epochs", "batch_size", "eval_every", "schedule_from")
        scalars = parse_options(_Scalars, {k: data[k] for k in scalar_keys if k in data}, where)
        loss_name, loss_options = _named_section(data, "loss", "bce", list_losses(), where)
        mix_name, mix_options = _named_section(data, "batch_mix", "none", list_batch_mixes(), where)
        return cls(
            name=name,
            description=scalars.description,
            model=ModelConfig(model_name, parse_options(model_config_class(model_name), model_options, where, "model")),
            loss=LossConfig(loss_name, parse_options(loss_options_class(loss_name), loss_options, where, "loss")),
            sampler=_section(data, "sampler", SamplerConfig, SamplerConfig(), where),
            balanced_sampler=_section(data, "balanced_sampler", SamplerConfig, SamplerConfig("cbs", True), where),
            batch_mix=BatchMixConfig(
                mix_name, parse_options(batch_mix_options_class(mix_name), mix_options, where, "batch_mix")
            ),
            optim=_section(data, "optim", OptimConfig, OptimConfig(), where),
            data=_section(data, "data", DataConfig, DataConfig(), where),
            epochs=scalars.epochs,
            batch_size=scalars.batch_size,
            eval_every=scalars.eval_every,
            schedules=_parse_schedules(data.get("schedules", {}), where),
            schedule_from=scalars.schedule_from,
        )


def _named_section(
    data: Mapping[str, Any], key: str, default_name: str | None, choices: list[str], where: str
) -> tuple[str, dict[str, Any]]:
    section = data.get(key, {})
    if not isinstance(section, Mapping):
        raise MeidBenchError(f"{where}: {key}: expected a mapping with `name` and options, got {section!r}")
    name = section.get("name", default_name)
    if name is None:
        raise MeidBenchError(f"{where}: {key}.name: missing required key; one of {', '.join(choices)}")
    if not isinstance(name, str) or name not in choices:
        raise MeidBenchError(f"{where}: {key}.name: unknown {key} {name!r}; one of {', '.join(choices)}")
    return name, {k: v for k, v in section.items() if k != "name"}


def _section(data: Mapping[str, Any], key: str, cls: type, default: Any, where: str) -> Any:
    if key not in data:
        return default
    return parse_options(cls, data[key], where, key)


# -- YAML ------------------------------------------------------------------------------------------------------------


RECIPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class _RecipeLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float (YAML 1.1 wants `1.0e-4`) and rejects duplicate keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise MeidBenchError(f"{mark.name}: line {mark.line + 1}: {key}: duplicate key; keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_yaml(path: Path) -> Any:
    """Parse one YAML file; syntax errors become a MeidBenchError with the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MeidBenchError(f"{path}: cannot read the recipe ({exc.strerror}); check the path") from None
    except UnicodeDecodeError as exc:
        raise MeidBenchError(f"{path}: byte {exc.start} is not UTF-8 text; a recipe is a UTF-8 YAML file") from None
    try:
        loader = _RecipeLoader(text)
        loader.name = str(path)
    except yaml.YAMLError as exc:  # the reader refuses control characters before any parsing
        raise MeidBenchError(f"{path}: not a YAML text file ({str(exc).splitlines()[0]}); fix the file") from None
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f"line {mark.line + 1}" if mark is not None else "?"
        raise MeidBenchError(f"{path}: {line}: invalid YAML ({exc.problem}); fix the syntax") from None
    except (yaml.YAMLError, RecursionError) as exc:
        raise MeidBenchError(f"{path}: invalid YAML ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                             "); fix the syntax") from None
    finally:
        loader.dispose()


def recipes_dir() -> Path:
    """The shipped recipes: the package data ``meid_bench.recipes`` (in a checkout, the repository's recipes/)."""
    return Path(str(importlib.resources.files("meid_bench.recipes")))


def list_recipes() -> list[str]:
    """Names of the shipped recipes (file stems); an installation without any is an error, never an empty list."""
    folder = recipes_dir()
    names = sorted(p.stem for p in folder.iterdir() if p.suffix in RECIPE_SUFFIXES) if folder.is_dir() else []
    if not names:
        raise MeidBenchError(f"{folder}: no recipe files; this meid-bench installation is incomplete, reinstall it")
    return names


def resolve_recipe_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A path as given when it looks like one (has a .yaml/.yml suffix or a folder part), else recipes/<name>.yaml."""
    text = os.fspath(name_or_path)
    path = Path(text)
    if path.suffix in RECIPE_SUFFIXES or "/" in text or os.sep in text:
        if not path.is_file():
            raise MeidBenchError(f"{path}: recipe file not found; pass an existing YAML file or a recipe name")
        return path
    candidate = recipes_dir() / f"{text}.yaml"
    if not candidate.is_file():
        raise MeidBenchError(f"--recipe {text}: unknown recipe name; available: {', '.join(list_recipes())}; or "
                             "pass a YAML file path")
    return candidate


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    """Load and validate a recipe by name (recipes/<name>.yaml) or path; ``name`` defaults to the file stem."""
    path = resolve_recipe_path(name_or_path)
    return Recipe.from_dict(read_yaml(path), where=str(path), default_name=path.stem)


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """``["optim.lr=1e-3", "epochs=20"]``: set dotted keys of the recipe (values read as YAML), then validate the
    whole recipe again, so an unknown key or a wrong type is the same clear error as in a recipe file."""
    data = recipe.to_dict()
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise MeidBenchError(f"--set {override!r}: expected KEY=VALUE, e.g. optim.lr=1e-3")
        shown = override if len(override) <= 80 else override[:60] + "..."
        try:
            value = yaml.load(text, Loader=_RecipeLoader)
        except yaml.YAMLError:
            raise MeidBenchError(f"--set {shown!r}: the value is not valid YAML") from None
        except RecursionError:
            value = None
            depth = SET_DEPTH_MAX + 1
        else:
            depth = nesting_depth(value)
        if depth > SET_DEPTH_MAX:
            raise MeidBenchError(f"--set {shown!r}: the value nests lists or mappings more than {SET_DEPTH_MAX} "
                                 "deep; no recipe key takes that")
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                if parts[0] in ("schedule", "schedules"):
                    # Training applies the benchmark's schedule to the top-level keys first; --set changes those.
                    applied = (f"the benchmark's schedule ({data['schedule_from']}) is already applied to the "
                               "top-level keys" if data.get("schedule_from") else "a schedule sets the top-level keys")
                    raise MeidBenchError(f"--set {override!r}: {applied}: shorten a run with --epochs N, or set "
                                         "epochs, optim.lr and optim.milestones, e.g. --set optim.milestones=[2]")
                sections = sorted(k for k, v in node.items() if isinstance(v, dict) and k != "schedules")
                where = f"its sections: {', '.join(sections)}" if sections else "it holds no section there"
                raise MeidBenchError(f"--set {override!r}: {part}: not a section of the recipe ({where})")
            node = node[part]
        node[parts[-1]] = value
    return Recipe.from_dict(data, where="--set")
