"""The model registry (a :class:`meid_bench.registry.Registry` of kind "model") and ``create_model``.

A model class registers with ``@register_model(name)``; its options dataclass is its ``config_class`` and its
factory :meth:`VideoModel.from_options` (options, split statistics, ``input_dim=D``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from meid_bench.models.base import BaseModelConfig, VideoModel
from meid_bench.registry import Registry, SplitStats

MODELS: Registry[VideoModel] = Registry("model")

M = TypeVar("M", bound=type[VideoModel])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make a :class:`VideoModel` subclass available as ``create_model(name, ...)``."""

    def decorate(cls: M) -> M:
        return MODELS.register(name, cls.config_class)(cls)

    return decorate


def list_models() -> list[str]:
    return MODELS.names()


def model_config_class(name: str, where: str = "create_model") -> type[BaseModelConfig]:
    """The config dataclass that lists (and types) model ``name``'s hyper-parameters."""
    return MODELS.options_class(name, where)


def parse_model_config(name: str, options: dict[str, Any], where: str, path: str = "") -> BaseModelConfig:
    """Model ``name``'s typed config from a mapping (unknown keys and wrong types are a MeidBenchError)."""
    return MODELS.parse(name, options, where, path)


def create_model(
    name: str,
    *,
    input_dim: int,
    num_classes: int,
    class_groups: Sequence[str] | np.ndarray | None = None,
    config: BaseModelConfig | None = None,
    **options: Any,
) -> VideoModel:
    """Build a registered model.

    input_dim: D of the frame features; num_classes: C.
    class_groups: per class (class_id order) its group name ("head", "medium", "tail"), e.g.
        ``split.classes["group"].to_numpy()``; MEID needs it to split classes between its necks, the baselines
        ignore it.
    config: a ready config dataclass of this model, or pass its fields as keyword ``options`` (hidden=..., ...).
    """
    if config is not None and options:
        raise TypeError("pass either config or keyword options, not both")
    stats = SplitStats(num_classes, class_groups=None if class_groups is None else np.asarray(class_groups))
    parsed = config if config is not None else MODELS.parse(name, options, f"create_model({name!r})")
    return MODELS.create(name, parsed, stats, input_dim=input_dim)
