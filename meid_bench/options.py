"""Typed option dataclasses: a plain mapping (from YAML, a checkpoint or keyword arguments) into a frozen dataclass.

Every model, loss and batch-mixing strategy declares its hyper-parameters as a frozen dataclass. :func:`parse_options`
builds one from a mapping, rejecting unknown keys and wrong types with a :class:`MeidBenchError` that names the
source (a file, ``create_model('meid')``, a checkpoint) and the key path, so a typo in a recipe never silently
falls back to a default. A dataclass may define ``problems() -> list[tuple[str, str]]`` for range checks.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal, TypeVar, Union

from meid_bench.errors import MeidBenchError

T = TypeVar("T")


def _describe(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _key(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class _Mismatch(Exception):
    """A value does not fit a type annotation (message: what was expected)."""


def _convert(value: Any, annotation: Any, where: str, path: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch("null")
    if origin in (Union, types.UnionType):
        expected = []
        for arm in args:
            try:
                return _convert(value, arm, where, path)
            except _Mismatch as exc:
                expected.append(str(exc))
        raise _Mismatch(" or ".join(expected))
    if origin is Literal:
        # `True == 1` in Python: compare types too, so `1` never passes for a `true` choice.
        for choice in args:
            if value == choice and type(value) is type(choice):
                return choice
        raise _Mismatch("one of " + ", ".join(repr(choice) for choice in args))
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch("true or false")
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch("an integer")
    if annotation is float:
        # NaN and infinity are refused: they pass every `<= 0` range check and then poison training.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch("a finite number")
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch("a string")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch("a list")
        item_type = args[0] if args else Any
        items = []
        for index, item in enumerate(value):
            try:
                items.append(_convert(item, item_type, where, f"{path}[{index}]"))
            except _Mismatch as exc:
                raise MeidBenchError(
                    f"{where}: {path}[{index}]: expected {exc}, got {_describe(item)}; fix the list item"
                ) from None
        return tuple(items)
    if origin is dict or annotation is dict:
        if not isinstance(value, Mapping):
            raise _Mismatch("a mapping")
        return dict(value)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, Mapping):
            raise _Mismatch("a mapping")
        return parse_options(annotation, value, where, path)
    raise TypeError(f"unsupported option annotation {annotation!r} at {path}")  # a programming error, not input


def parse_options(cls: type[T], data: Mapping[str, Any], where: str, path: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and failed range checks are errors.

    ``where`` names the source for the message (a file path, ``create_model('meid')``); ``path`` is the key path of
    ``data`` inside it (``model``, ``optim``), empty at the top level.
    """
    if not isinstance(data, Mapping):
        raise MeidBenchError(f"{where}: {path or '<top level>'}: expected a mapping, got {_describe(data)}")
    hints = typing.get_type_hints(cls)
    fields = {field.name: field for field in dataclasses.fields(cls) if field.init}
    known = sorted(fields)
    for key in data:
        if key not in fields:
            raise MeidBenchError(
                f"{where}: {_key(path, str(key))}: unknown key; known keys here: {', '.join(known) or 'none'}"
            )
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in data:
            if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
                raise MeidBenchError(f"{where}: {_key(path, name)}: missing required key")
            continue
        try:
            values[name] = _convert(data[name], hints[name], where, _key(path, name))
        except _Mismatch as exc:
            raise MeidBenchError(
                f"{where}: {_key(path, name)}: expected {exc}, got {_describe(data[name])}; fix the value"
            ) from None
    obj = cls(**values)
    check = getattr(obj, "problems", None)
    if check is not None:
        for name, message in check():
            raise MeidBenchError(f"{where}: {_key(path, name)}: {message}")
    return obj


def options_to_dict(obj: Any) -> dict[str, Any]:
    """A plain dict of a dataclass (tuples as lists), ready for YAML, JSON or a checkpoint."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {field.name: plain(getattr(value, field.name)) for field in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(item) for item in value]
        if isinstance(value, Mapping):
            return {key: plain(item) for key, item in value.items()}
        return value

    return plain(obj)
