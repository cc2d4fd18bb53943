"""The one way to name a component: models, losses, batch mixes and samplers each keep a :class:`Registry`.

A component is registered under a name with its typed options dataclass and a factory::

    @LOSSES.register("focal", FocalOptions)
    class FocalLoss(MultiLabelLoss):
        @classmethod
        def from_options(cls, options: FocalOptions, stats: SplitStats) -> "FocalLoss": ...

The factory (the decorated function, or a decorated class's ``from_options``) receives the parsed options and one
:class:`SplitStats`, the training split's statistics, plus the keyword arguments that component kind documents
(a model's ``input_dim``, a batch mix's ``seed``, a sampler's ``labels``). A recipe section ``{name: focal,
gamma: 2}`` is parsed by the registry of its kind, so an unknown name is an error listing the known ones and an
unknown option an error listing the known keys. Adding a loss is one class (or function), its recipe and its docs.
This module is plain Python and numpy: the build side may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from meid_bench.errors import MeidBenchError
from meid_bench.options import options_to_dict, parse_options

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, eq=False)
class SplitStats:
    """What a component may need to know of the training split, in one object.

    num_classes: C. class_counts: int [C], training videos per class (``split.classes["train_count"]``).
    num_videos: the number of training videos. class_groups: per class its group name (head / medium / tail).
    Fields a caller cannot know are None; a component that needs one says so (:meth:`require`).
    """

    num_classes: int
    class_counts: np.ndarray | None = None
    num_videos: int | None = None
    class_groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        for name in ("class_counts", "class_groups"):
            value = getattr(self, name)
            if value is not None:
                array = np.asarray(value)
                if array.shape != (self.num_classes,):
                    raise ValueError(f"{name} must have one entry per class ({self.num_classes}), got {array.shape}")
                object.__setattr__(self, name, array)
        if self.num_videos is not None and self.num_videos < 1:
            raise ValueError(f"num_videos must be >= 1, got {self.num_videos}")

    @classmethod
    def from_counts(cls, class_counts: Sequence[int] | np.ndarray, num_videos: int | None = None,
                    class_groups: Sequence[str] | np.ndarray | None = None) -> "SplitStats":
        """Statistics from the per-class training counts (tests, benchmarks, hand-made setups)."""
        counts = np.asarray(class_counts)
        if counts.ndim != 1 or len(counts) == 0:
            raise ValueError(f"class_counts must be a non-empty 1-d array, got shape {counts.shape}")
        return cls(len(counts), counts, None if num_videos is None else int(num_videos),
                   None if class_groups is None else np.asarray(class_groups))

    @classmethod
    def from_split(cls, split: Any) -> "SplitStats":
        """Statistics of a loaded split's training subset (a :class:`meid_bench.Split`)."""
        classes = split.classes
        return cls(len(classes), classes["train_count"].to_numpy(), len(split.train), classes["group"].to_numpy())

    def require(self, field: str, who: str) -> Any:
        """The statistic ``field``, or a ValueError naming the component that needs it."""
        value = getattr(self, field)
        if value is None:
            raise ValueError(f"{who} needs the split statistic {field!r}; pass it in SplitStats")
        return value


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, options dataclass and factory."""

    name: str
    options_class: type
    factory: Callable[..., Any]


class Registry(Generic[T]):
    """Named components of one kind (``kind`` names it in messages: "model", "loss", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, options: type) -> Callable[[F], F]:
        """Decorator: register a factory function, or a class with a ``from_options`` classmethod, as ``name``."""

        def decorate(target: F) -> F:
            factory = getattr(target, "from_options", None) if isinstance(target, type) else target
            if factory is None:
                raise TypeError(f"{self.kind} {name!r}: a registered class needs a from_options(options, stats, ...) "
                                "classmethod")
            existing = self._entries.get(name)
            if existing is not None and existing.factory != factory:
                raise ValueError(f"{self.kind} name {name!r} is already registered")
            self._entries[name] = Entry(name, options, factory)
            return target

        return decorate

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str, where: str = "") -> Entry:
        """The entry of ``name``; an unknown name is a MeidBenchError that lists the known ones."""
        if name not in self._entries:
            prefix = f"{where}: " if where else ""
            raise MeidBenchError(f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def options_class(self, name: str, where: str = "") -> type:
        return self.entry(name, where).options_class

    def parse(self, name: str, options: Mapping[str, Any] | Any, where: str, path: str = "") -> Any:
        """``name``'s options dataclass from a mapping (unknown keys, wrong types: MeidBenchError); a ready
        instance of the right class is returned as it is."""
        options_class = self.options_class(name, where)
        if isinstance(options, Mapping):
            return parse_options(options_class, options, where, path)
        if not isinstance(options, options_class):
            raise TypeError(f"{self.kind} {name!r} expects {options_class.__name__}, got {type(options).__name__}")
        return options

    def create(self, name: str, options: Mapping[str, Any] | Any, stats: SplitStats, *, where: str = "",
               **context: Any) -> T:
        """Build ``name`` from its options (a dataclass or a mapping) and the split statistics; ``where`` names the
        caller in error messages; ``context`` holds the keyword arguments this kind's factories take."""
        where = where or f"create {self.kind} {name!r}"
        parsed = self.parse(name, options, where)
        return self.entry(name, where).factory(parsed, stats, **context)


@dataclass(frozen=True)
class Component:
    """A recipe section naming a registered component: ``name`` and ``options``, its options dataclass."""

    name: str
    options: Any

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **options_to_dict(self.options)}
