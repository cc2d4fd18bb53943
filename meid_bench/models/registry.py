"""The model registry: a name -> (model class, config dataclass) table and ``create_model``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from meid_bench.errors import MeidBenchError
from meid_bench.models.base import BaseModelConfig, VideoModel
from meid_bench.models.options import parse_options

_MODELS: dict[str, type[VideoModel]] = {}

M = TypeVar("M", bound=type[VideoModel])


def register_model(name: str) -> Callable[[M], M]:
    """Class decorator: make a :class:`VideoModel` subclass available as ``create_model(name, ...)``."""

    def decorate(cls: M) -> M:
        if name in _MODELS and _MODELS[name] is not cls:
            raise ValueError(f"model name {name!r} is already registered to {_MODELS[name].__name__}")
        _MODELS[name] = cls
        return cls

    return decorate


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_class(name: str, where: str = "create_model") -> type[VideoModel]:
    if name not in _MODELS:
        raise MeidBenchError(f"{where}: unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def model_config_class(name: str, where: str = "create_model") -> type[BaseModelConfig]:
    """The config dataclass that lists (and types) model ``name``'s hyper-parameters."""
    return model_class(name, where).config_class


def parse_model_config(name: str, options: dict[str, Any], where: str, path: str = "") -> BaseModelConfig:
    """Model ``name``'s typed config from a mapping (unknown keys and wrong types are a MeidBenchError)."""
    return parse_options(model_config_class(name, where), options, where, path)


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
    cls = model_class(name)
    if config is None:
        config = parse_model_config(name, options, f"create_model({name!r})")
    elif options:
        raise TypeError("pass either config or keyword options, not both")
    elif not isinstance(config, cls.config_class):
        raise TypeError(f"{name} expects a {cls.config_class.__name__}, got {type(config).__name__}")
    return cls.build(input_dim, num_classes, config, class_groups)
