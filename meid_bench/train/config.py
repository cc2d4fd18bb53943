"""Typed training recipes: one YAML file per method under recipes/, loaded into frozen dataclasses.

    recipe = load_recipe("meid").for_benchmark(split.name).resolved()   # recipes/meid.yaml (or a YAML path),
                                                                        # with the benchmark's schedule applied
    stats = SplitStats.from_split(split)
    model = recipe.model.create(input_dim, num_classes, class_groups)
    criterion = recipe.loss.create(stats)
    mix = recipe.batch_mix.create(stats, seed)   # None for batch_mix: none
    checkpoint["recipe"] = recipe.to_dict()      # Recipe.from_dict(...) restores it exactly

Every key of a recipe is typed; unknown keys, wrong types and out-of-range values raise MeidBenchError naming the
file and the key path (``recipes/x.yaml: model.cfs_ration: unknown key; known keys here: ...``). The model, loss,
sampler, balanced_sampler and batch_mix sections each name a registered component (:mod:`meid_bench.registry`)
and hold that component's own options, validated by its options dataclass. A recipe's top-level ``optim`` and
``epochs`` are its reference schedule; ``schedules`` holds per-benchmark schedules (epochs, lr, milestones) that
:meth:`Recipe.for_benchmark` applies. A recipe file may start from another with ``base: NAME`` and state only what
differs (:func:`load_recipe`). docs/models.md lists every key, type and default.
"""

from __future__ import annotations

import importlib.resources
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from meid_bench.bounds import SET_DEPTH_MAX, nesting_depth
from meid_bench.data.samplers import SAMPLERS, ClassSamplerOptions, InstanceSamplerOptions
from meid_bench.errors import MeidBenchError
from meid_bench.models import create_model
from meid_bench.models.base import BaseModelConfig, VideoModel
from meid_bench.models.batch_mix import BATCH_MIXES, BatchMix, NoMixOptions
from meid_bench.models.losses import LOSSES, BCEOptions, MultiLabelLoss
from meid_bench.models.registry import MODELS
from meid_bench.options import options_to_dict, parse_options
from meid_bench.registry import Component, Registry, SplitStats

RECIPE_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class ModelConfig(Component):
    """``name`` (a registered model) and ``options``, that model's typed config dataclass (hidden, dropout, ...)."""

    registry: ClassVar[Registry] = MODELS

    @property
    def params(self) -> BaseModelConfig:
        return self.options

    @property
    def hidden(self) -> int | None:
        return self.options.hidden

    @property
    def dropout(self) -> float:
        return self.options.dropout

    def create(self, input_dim: int, num_classes: int, class_groups: Any = None) -> VideoModel:
        return create_model(
            self.name, input_dim=input_dim, num_classes=num_classes, class_groups=class_groups, config=self.options
        )


@dataclass(frozen=True)
class LossConfig(Component):
    """``name`` (a registered loss: bce, focal, cb, ldam_drw, eql, ...) and ``options``, its options dataclass."""

    registry: ClassVar[Registry] = LOSSES
    name: str = "bce"
    options: Any = field(default_factory=BCEOptions)

    def create(self, stats: SplitStats) -> MultiLabelLoss:
        return LOSSES.create(self.name, self.options, stats)


@dataclass(frozen=True)
class BatchMixConfig(Component):
    """``name`` (a registered batch mix: none, mixup, framestack) and ``options``, its options dataclass."""

    registry: ClassVar[Registry] = BATCH_MIXES
    name: str = "none"
    options: Any = field(default_factory=NoMixOptions)

    def create(self, stats: SplitStats, seed: int = 0) -> BatchMix | None:
        return BATCH_MIXES.create(self.name, self.options, stats, seed=seed)


@dataclass(frozen=True)
class SamplerConfig(Component):
    """How a batch stream draws videos: ``instance`` (shuffle), ``cbs`` (class uniform, then a video of it) or
    ``srs`` (class with probability ~ sqrt(count)), a registered sampler. ``label_mask``: the reference's mask
    1 - (labels - onehot(sampled class)), which trains only the sampled class among the video's positives (cbs/srs
    only)."""

    registry: ClassVar[Registry] = SAMPLERS
    name: str = "instance"
    options: Any = field(default_factory=InstanceSamplerOptions)

    @property
    def label_mask(self) -> bool:
        return bool(self.options.label_mask)


def _default_balanced_sampler() -> SamplerConfig:
    return SamplerConfig("cbs", ClassSamplerOptions(label_mask=True))


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


@dataclass(frozen=True)
class InitConfig:
    """A second training stage: start from another run's best checkpoint instead of fresh weights.

    from_run: that run's folder; ``{benchmark}`` and ``{seed}`` are replaced by this run's, and a relative path is
        taken from the folder that holds this run's folder (runs side by side, as `sweep` makes them). null: train
        from scratch (every other key is then unused).
    train: the model's parameters that learn, as module names (``classifier``: every parameter under it); the rest
        stay as the first stage left them. Empty: everything learns (fine-tuning).
    reset: draw the ``train`` parameters afresh before training (classifier re-training), instead of starting from
        the first stage's values.
    """

    from_run: str | None = None
    train: tuple[str, ...] = ()
    reset: bool = False

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.from_run is not None and not self.from_run.strip():
            found.append(("from_run", "must be a run folder or null"))
        if any(not name or name != name.strip() or name.startswith(".") or name.endswith(".")
               for name in self.train):
            found.append(("train", f"must be module names such as classifier, got {list(self.train)}"))
        if self.reset and not self.train:
            found.append(("reset", "resets the `train` parameters, but `train` names none; name them (e.g. "
                                   "[classifier]) or set reset: false"))
        return found

    def source_for(self, run_dir: Path, benchmark: str, seed: int) -> Path:
        """The first stage's run folder for a run written to ``run_dir``."""
        assert self.from_run is not None
        text = self.from_run.replace("{benchmark}", benchmark).replace("{seed}", str(seed))
        path = Path(text)
        return path if path.is_absolute() else Path(run_dir).parent / path


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
    balanced_sampler: SamplerConfig = field(default_factory=_default_balanced_sampler)
    batch_mix: BatchMixConfig = field(default_factory=BatchMixConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    epochs: int = 100
    batch_size: int = 128
    eval_every: int = 1
    schedules: Mapping[str, ScheduleConfig] = field(default_factory=dict)
    schedule_from: str = ""
    init: InitConfig = field(default_factory=InitConfig)

    @property
    def second_stage(self) -> bool:
        """Whether runs of this recipe start from another run's weights (``init.from_run``)."""
        return self.init.from_run is not None

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
        """Values defined by other keys filled in by the component that owns them (an options dataclass's
        ``resolved_for(recipe)``: LDAM's ``drw_epoch: null`` becomes the first lr decay)."""
        recipe = self
        for section in SECTIONS:
            component = getattr(recipe, section)
            resolve = getattr(component.options, "resolved_for", None)
            if resolve is None:
                continue
            try:
                options = resolve(recipe)
            except ValueError as exc:
                raise MeidBenchError(f"recipe {self.name}: {section}.{exc}") from None
            recipe = replace(recipe, **{section: replace(component, options=options)})
        return recipe

    def to_dict(self) -> dict[str, Any]:
        """Every key with its resolved value (plain types): what run.json and checkpoints record."""
        return {
            "name": self.name,
            "description": self.description,
            **{section: getattr(self, section).to_dict() for section in SECTIONS},
            "optim": options_to_dict(self.optim),
            "data": options_to_dict(self.data),
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "eval_every": self.eval_every,
            "schedules": {name: options_to_dict(schedule) for name, schedule in self.schedules.items()},
            "schedule_from": self.schedule_from,
            # Only a second stage records `init`: the records of every other run stay as they were.
            **({"init": options_to_dict(self.init)} if self.second_stage else {}),
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
        scalar_keys = ("description", "epochs", "batch_size", "eval_every", "schedule_from")
        scalars = parse_options(_Scalars, {k: data[k] for k in scalar_keys if k in data}, where)
        return cls(
            name=name,
            description=scalars.description,
            **{section: _component(data, section, where) for section in SECTIONS},
            optim=_section(data, "optim", OptimConfig, OptimConfig(), where),
            data=_section(data, "data", DataConfig, DataConfig(), where),
            epochs=scalars.epochs,
            batch_size=scalars.batch_size,
            eval_every=scalars.eval_every,
            schedules=_parse_schedules(data.get("schedules", {}), where),
            schedule_from=scalars.schedule_from,
            init=_section(data, "init", InitConfig, InitConfig(), where),
        )


# The sections that name a registered component: their class, and the section used when a recipe leaves it out
# (None: the section is required).
SECTIONS: dict[str, tuple[type[Component], Any]] = {
    "model": (ModelConfig, None),
    "loss": (LossConfig, LossConfig),
    "sampler": (SamplerConfig, SamplerConfig),
    "balanced_sampler": (SamplerConfig, _default_balanced_sampler),
    "batch_mix": (BatchMixConfig, BatchMixConfig),
}


def _component(data: Mapping[str, Any], key: str, where: str) -> Component:
    section_class, default = SECTIONS[key]
    registry = section_class.registry
    if key not in data:
        if default is None:
            raise MeidBenchError(f"{where}: {key}: missing required key (a mapping with at least `name`)")
        return default()
    section = data[key]
    if not isinstance(section, Mapping):
        raise MeidBenchError(f"{where}: {key}: expected a mapping with `name` and options, got {section!r}")
    name = section.get("name", None if default is None else default().name)
    if name is None:
        raise MeidBenchError(f"{where}: {key}.name: missing required key; one of {', '.join(registry.names())}")
    if not isinstance(name, str) or name not in registry:
        raise MeidBenchError(f"{where}: {key}.name: unknown {key} {name!r}; one of {', '.join(registry.names())}")
    options = registry.parse(name, {k: v for k, v in section.items() if k != "name"}, where, key)
    return section_class(name, options)


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


def _looks_like_path(text: str) -> bool:
    return Path(text).suffix in RECIPE_SUFFIXES or "/" in text or os.sep in text


def resolve_recipe_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A path as given when it looks like one (has a .yaml/.yml suffix or a folder part), else recipes/<name>.yaml."""
    text = os.fspath(name_or_path)
    if _looks_like_path(text):
        path = Path(text)
        if not path.is_file():
            raise MeidBenchError(f"{path}: recipe file not found; pass an existing YAML file or a recipe name")
        return path
    return _shipped_recipe(text, f"--recipe {text}: unknown recipe name", "pass a YAML file path")


def _shipped_recipe(name: str, what: str, otherwise: str) -> Path:
    candidate = recipes_dir() / f"{name}.yaml"
    if not candidate.is_file():
        raise MeidBenchError(f"{what}; available: {', '.join(list_recipes())}; or {otherwise}")
    return candidate


BASE_KEY = "base"
_MAX_BASE_DEPTH = 8  # a chain of bases this long is a mistake, not a design


def _base_path(base: Any, child: Path) -> Path:
    """A base given as a path (a .yaml/.yml suffix or a folder part) is relative to the recipe that names it; a
    plain name is a shipped recipe."""
    if not isinstance(base, str) or not base.strip():
        raise MeidBenchError(f"{child}: {BASE_KEY}: expected a recipe name or a YAML file path, got {base!r}")
    if _looks_like_path(base):
        path = Path(base) if Path(base).is_absolute() else child.parent / base
        if not path.is_file():
            raise MeidBenchError(f"{child}: {BASE_KEY}: {path}: recipe file not found; name an existing YAML file")
        return path
    return _shipped_recipe(base, f"{child}: {BASE_KEY}: {base!r} is not a shipped recipe", "give a YAML file path")


def merge_recipe(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """``child``'s keys over ``base``'s. A component section (model, loss, ...) merges key by key while it names
    the same component, and is replaced whole when it names another (the base's options belong to the base's
    component); ``optim``, ``data`` and ``init`` merge key by key; ``schedules`` benchmark by benchmark (``null`` removes
    one); every other key is replaced."""
    merged = dict(base)
    for key, value in child.items():
        old = merged.get(key)
        if key in SECTIONS and isinstance(old, Mapping) and isinstance(value, Mapping):
            same = "name" not in value or value.get("name") == old.get("name")
            merged[key] = {**old, **value} if same else dict(value)
        elif key in ("optim", "data", "init", "schedules") and isinstance(old, Mapping) and isinstance(value, Mapping):
            combined = {**old, **value}
            if key == "schedules":
                combined = {name: schedule for name, schedule in combined.items() if schedule is not None}
            merged[key] = combined
        else:
            merged[key] = value
    return merged


def read_recipe_mapping(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The recipe file's keys with its ``base`` chain merged in (:func:`merge_recipe`); ``base`` removed."""
    data = read_yaml(path)
    if not isinstance(data, Mapping):
        raise MeidBenchError(f"{path}: expected a mapping of recipe keys at the top level, got {type(data).__name__}")
    if BASE_KEY not in data:
        return dict(data)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise MeidBenchError(f"{path}: {BASE_KEY}: the bases form a cycle ({cycle}); remove one of them")
    if len(_chain) >= _MAX_BASE_DEPTH:
        raise MeidBenchError(f"{path}: {BASE_KEY}: more than {_MAX_BASE_DEPTH} bases in a chain; flatten the recipes")
    if "description" not in data:
        raise MeidBenchError(f"{path}: description: missing; a recipe with a base describes itself (the base's "
                             "description is the base's)")
    child = {key: value for key, value in data.items() if key != BASE_KEY}
    base = read_recipe_mapping(_base_path(data[BASE_KEY], path), (*_chain, resolved))
    base.pop("name", None)  # a recipe's name is its own (its file's stem unless it says otherwise)
    return merge_recipe(base, child)


def load_recipe(name_or_path: str | os.PathLike[str]) -> Recipe:
    """Load and validate a recipe by name (recipes/<name>.yaml) or path; ``name`` defaults to the file stem. A
    recipe may start from another with ``base: NAME`` (a shipped recipe) or ``base: FILE.yaml`` (relative to it)
    and state only what differs (:func:`merge_recipe`)."""
    path = resolve_recipe_path(name_or_path)
    return Recipe.from_dict(read_recipe_mapping(path), where=str(path), default_name=path.stem)


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """``["optim.lr=1e-3", "epochs=20"]``: set dotted keys of the recipe (values read as YAML), then validate the
    whole recipe again, so an unknown key or a wrong type is the same clear error as in a recipe file."""
    data = {**recipe.to_dict(), "init": options_to_dict(recipe.init)}  # `init` is settable in every recipe
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
        if len(parts) == 2 and parts[0] in SECTIONS and parts[1] == "name":
            # Another component: the old one's options do not apply to it (set the new one's after this).
            section = data.get(parts[0])
            if not isinstance(section, dict) or section.get("name") != value:
                data[parts[0]] = {"name": value}
            continue
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
