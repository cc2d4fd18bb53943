"""Checked reading of values that come from outside: fields of records read from files, and option values.

Every reader of a file meid-bench did not just write itself (a manifest, run.json, metrics.json, a checkpoint's
payload, a feature store's attributes) takes its fields through :class:`Fields`, and every numeric option through
:func:`check_number`: a missing field, a wrong type, a NaN or infinity or a value out of range is one
:class:`~meid_bench.errors.MeidBenchError` that names the file, the field path, what was found and what to do.
Nothing here imports more than the standard library and numpy.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from meid_bench.errors import MeidBenchError

_MISSING = object()
SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def describe(value: Any) -> str:
    """A short 'type value' description of a found value, for messages."""
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_number(value: Any) -> bool:
    """An int or float (not a bool), finite."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _bounds(low: float | None, high: float | None, low_open: bool = False) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"<= {high:g}")
    return " and ".join(parts)


def _in_range(value: float, low: float | None, high: float | None, low_open: bool = False) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return False
    return high is None or value <= high


class Fields:
    """The fields of one JSON-like object (a mapping) read from ``where``, checked as they are taken.

    ``remedy`` ends every message (what the user should do: "rebuild the split"). ``path`` is the object's own
    position inside the file (``files.train.parquet``), empty at the top level. Accessors take ``default`` for
    optional fields; a field present with the wrong type is an error even when it is optional.
    """

    def __init__(self, data: Any, where: str, remedy: str, path: str = "") -> None:
        self.where, self.remedy, self.path = str(where), remedy, path
        if not isinstance(data, Mapping):
            raise MeidBenchError(f"{self.where}: {self._name(None)}: expected an object, got {describe(data)}; "
                                 f"{remedy}")
        self.data = data

    def _name(self, key: str | None) -> str:
        if key is None:
            return f"field {self.path!r}" if self.path else "the top level"
        return f"field {self._key(key)!r}"

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else str(key)

    def fail(self, key: str | None, problem: str) -> MeidBenchError:
        """The error for field ``key`` (None: this object itself): ``problem`` says what is wrong."""
        return MeidBenchError(f"{self.where}: {self._name(key)}: {problem}; {self.remedy}")

    def _take(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.fail(key, "missing")
        return default

    def has(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        return self._take(key, default)

    def string(self, key: str, default: Any = _MISSING, *, nonempty: bool = False,
               choices: Sequence[str] | None = None, pattern: re.Pattern | None = None,
               form: str = "of the expected form") -> Any:
        value = self._take(key, default)
        if key not in self.data:
            return value
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {describe(value)}")
        if nonempty and not value:
            raise self.fail(key, "is empty")
        if choices is not None and value not in choices:
            raise self.fail(key, f"is {value!r}, expected one of {', '.join(map(repr, choices))}")
        if pattern is not None and not pattern.fullmatch(value):
            raise self.fail(key, f"{value[:80]!r} is not {form}")
        return value

    def sha256(self, key: str, default: Any = _MISSING) -> Any:
        """A lower-case hexadecimal sha256 digest (64 characters)."""
        return self.string(key, default, pattern=SHA256_PATTERN, form="a sha256 (64 lower-case hex digits)")

    def integer(self, key: str, default: Any = _MISSING, *, low: int | None = None, high: int | None = None,
                allow_none: bool = False) -> Any:
        value = self._take(key, default)
        if key not in self.data or (allow_none and value is None):
            return value
        if not isinstance(value, int) or isinstance(value, bool) or not _in_range(value, low, high):
            wanted = " ".join(filter(None, ["an integer", _bounds(low, high)]))
            raise self.fail(key, f"expected {wanted}{' or null' if allow_none else ''}, got {describe(value)}")
        return value

    def number(self, key: str, default: Any = _MISSING, *, low: float | None = None, high: float | None = None,
               allow_none: bool = False) -> Any:
        value = self._take(key, default)
        if key not in self.data or (allow_none and value is None):
            return value
        if not is_number(value) or not _in_range(value, low, high):
            wanted = " ".join(filter(None, ["a finite number", _bounds(low, high)]))
            raise self.fail(key, f"expected {wanted}{' or null' if allow_none else ''}, got {describe(value)}")
        return float(value)

    def boolean(self, key: str, default: Any = _MISSING) -> Any:
        value = self._take(key, default)
        if key in self.data and not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {describe(value)}")
        return value

    def object(self, key: str, default: Any = _MISSING) -> "Fields":
        value = self._take(key, default)
        if key not in self.data and not isinstance(value, Mapping):
            return value
        if not isinstance(value, Mapping):
            raise self.fail(key, f"expected an object, got {describe(value)}")
        return Fields(value, self.where, self.remedy, self._key(key))

    def list(self, key: str, default: Any = _MISSING, *, length: int | None = None) -> Any:
        value = self._take(key, default)
        if key not in self.data:
            return value
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {describe(value)}")
        if length is not None and len(value) != length:
            raise self.fail(key, f"has {len(value)} entries, expected {length}")
        return value

    def numbers(self, key: str, default: Any = _MISSING, *, length: int | None = None, low: float | None = None,
                high: float | None = None, allow_none: bool = False) -> Any:
        """A list of finite numbers in [low, high] (and nulls with ``allow_none``)."""
        values = self.list(key, default, length=length)
        if key not in self.data:
            return values
        for index, value in enumerate(values):
            if allow_none and value is None:
                continue
            if not is_number(value) or not _in_range(value, low, high):
                wanted = " ".join(filter(None, ["a finite number", _bounds(low, high)]))
                raise self.fail(key, f"entry {index}: expected {wanted}{' or null' if allow_none else ''}, got "
                                     f"{describe(value)}")
        return values

    def objects(self, key: str, default: Any = _MISSING) -> Any:
        """A list of objects, as :class:`Fields` (paths ``key[i]``)."""
        values = self.list(key, default)
        if key not in self.data:
            return values
        out = []
        for index, value in enumerate(values):
            if not isinstance(value, Mapping):
                raise self.fail(key, f"entry {index}: expected an object, got {describe(value)}")
            out.append(Fields(value, self.where, self.remedy, f"{self._key(key)}[{index}]"))
        return out


def check_number(value: Any, option: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, allow_none: bool = False) -> Any:
    """An option's numeric value, finite and in range; else a MeidBenchError naming the option (``--fps``)."""
    if value is None and allow_none:
        return None
    if not is_number(value) or not _in_range(value, low, high, low_open):
        wanted = " ".join(filter(None, ["a finite number", _bounds(low, high, low_open)]))
        raise MeidBenchError(f"{option} {value}: must be {wanted}")
    return value


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows (write null, or a finite number)")


def loads_json(raw: bytes | str) -> Any:
    """``json.loads`` that refuses the non-standard constants NaN, Infinity and -Infinity (Python writes them;
    no other JSON reader accepts them, and no meid-bench record holds them). Raises ValueError."""
    return json.loads(raw, parse_constant=_reject_constant)
