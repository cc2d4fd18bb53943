"""What a feature store must hold, checked when it is opened: every attribute and index dataset the reader uses,
with its type and range, so that a damaged or hand-edited store is one clear error naming the file and the
attribute or dataset (``docs/formats.md`` lists them).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from meid_bench.errors import MeidBenchError

REPACK = "pack or simulate the features again"


@dataclass
class StoreIndex:
    """The checked metadata and index of a store."""

    attrs: dict[str, Any]
    dim: int
    dtype: np.dtype
    offsets: np.ndarray
    video_ids: list[str]
    missing_video_ids: list[str]
    num_classes: int
    has_frame_labels: bool
    fps: float = field(default=float("nan"))


def _fail(path: Path, what: str, problem: str) -> MeidBenchError:
    return MeidBenchError(f"{path}: {what}: {problem}; {REPACK}")


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    return value


class _Attributes:
    def __init__(self, file: h5py.File, path: Path) -> None:
        self.path = path
        try:
            self.values = {name: file.attrs[name] for name in file.attrs}
        except (OSError, TypeError, ValueError, KeyError) as exc:  # h5py's errors for an unreadable attribute
            raise MeidBenchError(f"{path}: unreadable attributes ({str(exc)[:120]}); {REPACK}") from None
        try:
            self.plain = {name: _plain(value) for name, value in self.values.items()}
        except UnicodeDecodeError:
            raise MeidBenchError(f"{path}: an attribute holds text that is not UTF-8; {REPACK}") from None

    def fail(self, name: str, problem: str) -> MeidBenchError:
        return _fail(self.path, f"attribute {name!r}", problem)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.plain.get(name, default)
        if isinstance(value, np.ndarray) and value.shape == ():
            value = value.item()
        return value

    def text(self, name: str, default: Any = None) -> str:
        value = self.get(name, default)
        if not isinstance(value, str):
            raise self.fail(name, "missing" if value is None else f"expected text, got {value!r}"[:120])
        return value

    def integer(self, name: str, default: Any = None, low: int | None = None) -> int:
        value = self.get(name, default)
        if value is None:
            raise self.fail(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            raise self.fail(name, f"expected an integer{f' >= {low}' if low is not None else ''}, got {value!r}"[:120])
        return value

    def flag(self, name: str, default: Any = None) -> bool:
        value = self.get(name, default)
        if not isinstance(value, (bool, np.bool_)):
            raise self.fail(name, "missing" if value is None else f"expected true or false, got {value!r}"[:120])
        return bool(value)


def _dataset(file: h5py.File, name: str, path: Path) -> h5py.Dataset:
    item = file.get(name)
    if item is None:
        raise _fail(path, f"dataset {name!r}", "missing")
    if not isinstance(item, h5py.Dataset):
        raise _fail(path, f"dataset {name!r}", "is not a dataset")
    return item


def _read(dataset: h5py.Dataset, path: Path) -> np.ndarray:
    try:
        return dataset[()]
    except (OSError, TypeError, ValueError) as exc:  # h5py's errors for damaged data
        raise _fail(path, f"dataset {dataset.name.lstrip('/')!r}", f"unreadable ({str(exc)[:120]})") from None


def _strings(file: h5py.File, name: str, path: Path) -> list[str]:
    dataset = _dataset(file, name, path)
    if dataset.ndim != 1 or dataset.dtype.kind not in "SO":
        raise _fail(path, f"dataset {name!r}", f"expected a list of UTF-8 strings, got {dataset.dtype}"
                                               f"{list(dataset.shape)}")
    out = []
    for index, value in enumerate(_read(dataset, path)):
        try:
            out.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        except UnicodeDecodeError:
            raise _fail(path, f"dataset {name!r}", f"entry {index} is not UTF-8 text") from None
    return out


def read_store_index(file: h5py.File, path: Path, format_name: str, version: int,
                     dtypes: tuple[str, ...]) -> StoreIndex:
    """Check an open store's attributes and index datasets (not the frames themselves) and return them."""
    attrs = _Attributes(file, path)
    if attrs.get("format") != format_name:
        raise MeidBenchError(f"{path}: attribute 'format' is not {format_name!r}; not a meid-bench feature store "
                             "(convert it with `meid-bench features pack`)")
    if attrs.get("format_version") != version:
        raise MeidBenchError(f"{path}: attribute 'format_version' is {attrs.get('format_version')!r}, this "
                             f"meid-bench reads version {version}; {REPACK}")
    if not attrs.flag("complete", False):
        raise MeidBenchError(f"{path}: not marked complete (an interrupted write); {REPACK}")
    dim = attrs.integer("dim", low=1)
    dtype_name = attrs.text("dtype")
    if dtype_name not in dtypes:
        raise attrs.fail("dtype", f"is {dtype_name!r}, expected one of {', '.join(dtypes)}")
    dtype = np.dtype(dtype_name).newbyteorder("<")
    fps = attrs.get("fps", float("nan"))
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not (math.isnan(fps) or 0 < fps < math.inf):
        raise attrs.fail("fps", f"expected frames per second > 0 (NaN when unknown), got {fps!r}"[:120])
    num_classes = attrs.integer("num_classes", 0, low=0)
    attrs.text("split_checksum")
    attrs.flag("simulated", False)
    params = attrs.get("params", "{}")
    try:
        if not isinstance(params, str) or not isinstance(json.loads(params), dict):
            raise ValueError
    except ValueError:
        raise attrs.fail("params", "expected a JSON object") from None

    features = _dataset(file, "features", path)
    if features.ndim != 2 or features.shape[1] != dim or features.dtype != dtype:
        raise _fail(path, "dataset 'features'", f"is {features.dtype}{list(features.shape)}, the attributes say "
                                                f"dim {dim} {dtype_name}")
    offsets_set = _dataset(file, "offsets", path)
    if offsets_set.ndim != 1 or offsets_set.dtype.kind not in "iu":
        raise _fail(path, "dataset 'offsets'", f"expected integers [videos + 1], got {offsets_set.dtype}"
                                               f"{list(offsets_set.shape)}")
    offsets = np.asarray(_read(offsets_set, path), dtype=np.int64)
    video_ids = _strings(file, "video_ids", path)
    missing = _strings(file, "missing_video_ids", path)
    total = features.shape[0]
    if (len(offsets) != len(video_ids) + 1 or offsets[0] != 0 or offsets[-1] != total
            or np.any(np.diff(offsets) < 1)):
        raise MeidBenchError(f"{path}: the offsets index does not match {total} frames of {len(video_ids)} "
                             f"videos; the file is damaged, {REPACK}")
    if len(set(video_ids)) != len(video_ids):
        raise MeidBenchError(f"{path}: duplicate video ids in the index; {REPACK}")
    has_frame_labels = "frame_labels" in file and num_classes > 0
    if has_frame_labels:
        labels = _dataset(file, "frame_labels", path)
        width = (num_classes + 7) // 8
        if labels.shape != (total, width) or labels.dtype != np.uint8:
            raise _fail(path, "dataset 'frame_labels'", f"is {labels.dtype}{list(labels.shape)}, expected uint8 "
                                                        f"[{total}, {width}] for {num_classes} classes")
    return StoreIndex(attrs=attrs.plain, dim=dim, dtype=dtype, offsets=offsets, video_ids=video_ids,
                      missing_video_ids=missing, num_classes=num_classes, has_frame_labels=has_frame_labels, fps=fps)
