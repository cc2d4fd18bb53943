"""What a split folder must hold, checked on every load: the manifest's fields and each table's columns, types,
nulls, ranges and identifiers, so that a damaged or hand-edited split is one clear error naming the file and the
field, never a traceback or a silently wrong matrix (a label id of -1 would otherwise mark the last class).

The checks are vectorised (pyarrow and numpy over the flat list values), so they cost a fraction of reading the
tables even for VideoLT's 256,000 videos.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from meid_bench.checks import Fields
from meid_bench.errors import MeidBenchError

REBUILD = "rebuild the split with `meid-bench build ... --force`"
BENCHMARK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # it names files (splits/expected/<benchmark>.json)


def check_manifest(manifest: dict, path: Path, tables: tuple[str, ...]) -> Fields:
    """Check the fields of a parsed ``manifest.json``; returns them as :class:`Fields`.

    ``format`` and ``format_version`` are checked by the reader before this.
    """
    fields = Fields(manifest, path, REBUILD)
    fields.string("benchmark", pattern=BENCHMARK_NAME, form="a name of letters, digits, '_', '-' and '.'")
    # What every reader needs is required; the rest (which a build always writes) only has to have its type.
    fields.string("protocol", None, nonempty=True)
    fields.object("parameters", None)
    for source in fields.objects("sources", []):
        source.string("file", nonempty=True)
        source.sha256("sha256")
    groups = fields.object("groups", None)
    if groups is not None:
        groups.integer("head_above", None, allow_none=True)
        groups.integer("tail_below", None, allow_none=True)
    rows = fields.object("rows", None)
    if rows is not None:
        for name in tables:
            rows.integer(name, None, low=0)
    fields.integer("num_classes", None, low=1)
    fields.object("fidelity", None)
    files = fields.object("files")
    for name in tables:
        entry = files.object(f"{name}.parquet")
        entry.integer("rows", low=0)
        entry.sha256("sha256")
        entry.sha256("content_sha256")
    return fields


def check_schema(schema: pa.Schema, path: Path) -> None:
    """Refuse duplicate column names before the table is read (pyarrow's own error dumps the whole schema)."""
    seen = set()
    for name in schema.names:
        if name in seen:
            raise MeidBenchError(f"{path}: column {name!r} appears twice; {REBUILD}")
        seen.add(name)


def _fail(path: Path, column: str, problem: str) -> MeidBenchError:
    return MeidBenchError(f"{path}: column {column!r}: {problem}; {REBUILD}")


def _same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    # List children are named "item" when written and "element" when read back from Parquet: compare values only.
    if pa.types.is_list(expected):
        return pa.types.is_list(actual) and actual.value_type == expected.value_type
    return actual == expected


def _column(table: pa.Table, name: str, expected: pa.DataType, path: Path, nulls: bool = False) -> pa.Array:
    if name not in table.column_names:
        raise _fail(path, name, "missing")
    column = table.column(name)
    if not _same_type(column.type, expected):
        raise _fail(path, name, f"has type {column.type}, expected {expected}")
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not nulls and array.null_count:
        first = int(np.flatnonzero(~np.asarray(array.is_valid()))[0])
        raise _fail(path, name, f"row {first} is null")
    return array


def _list_values(array: pa.ListArray, path: Path, name: str) -> np.ndarray:
    values = array.flatten()
    if values.null_count:
        raise _fail(path, name, "holds a null inside a list")
    return values.to_numpy(zero_copy_only=False)


def _row_of(array: pa.ListArray, flat_index: int) -> int:
    """The row holding flat list element ``flat_index``."""
    offsets = np.asarray(array.offsets)
    return int(np.searchsorted(offsets, flat_index + offsets[0], side="right") - 1)


def check_unique(array: pa.Array | pa.ChunkedArray, path: Path, column: str, where: list[str] | None = None) -> None:
    """Refuse a value that appears twice (``where``: the table of each chunk, for ids spread over tables)."""
    counts = pc.value_counts(array)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated):
        value = repeated[0].as_py()
        if where is not None:
            chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
            tables = [name for name, chunk in zip(where, chunks) if pc.any(pc.equal(chunk, value)).as_py()]
            raise MeidBenchError(f"{path}: video {value!r} appears in {' and '.join(tables)}; {REBUILD}")
        raise _fail(path, column, f"value {value!r} appears more than once")


def _check_nonnegative(array: pa.Array, path: Path, column: str) -> None:
    """Floats finite and >= 0, or unknown (null, or NaN as pandas writes a missing value)."""
    values = array.to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(~np.isnan(values) & ~(np.isfinite(values) & (values >= 0)))
    if len(bad):
        raise _fail(path, column, f"row {bad[0]} holds {values[bad[0]]}, expected a finite number >= 0 or null")


def _check_class_ids(values: np.ndarray, num_classes: int, path: Path, column: str, array: pa.ListArray) -> None:
    if len(values) == 0:
        return
    bad = np.flatnonzero((values < 0) | (values >= num_classes))
    if len(bad):
        row = _row_of(array, int(bad[0]))
        raise _fail(path, column, f"row {row} holds class id {values[bad[0]]}, outside 0..{num_classes - 1} "
                                  f"(the split has {num_classes} classes)")


def check_video_table(table: pa.Table, path: Path, num_classes: int, expected_schema: pa.Schema) -> None:
    """Columns, types and values of a ``train``/``val``/``test`` table (ids across tables: :func:`check_unique`)."""
    arrays = {}
    for field in expected_schema:
        arrays[field.name] = _column(table, field.name, field.type, path, nulls=field.name == "duration")
    check_unique(arrays["video_id"], path, "video_id")

    labels = arrays["labels"]
    values = _list_values(labels, path, "labels")
    _check_class_ids(values, num_classes, path, "labels", labels)

    _check_nonnegative(arrays["duration"], path, "duration")

    lengths = [pc.list_value_length(arrays[name]).to_numpy(zero_copy_only=False)
               for name in ("segment_classes", "segment_starts", "segment_ends")]
    if not (np.array_equal(lengths[0], lengths[1]) and np.array_equal(lengths[0], lengths[2])):
        row = int(np.flatnonzero((lengths[0] != lengths[1]) | (lengths[0] != lengths[2]))[0])
        raise _fail(path, "segment_classes", f"row {row}: segment_classes, segment_starts and segment_ends have "
                                             "different lengths")
    segment_classes = _list_values(arrays["segment_classes"], path, "segment_classes")
    _check_class_ids(segment_classes, num_classes, path, "segment_classes", arrays["segment_classes"])
    starts = _list_values(arrays["segment_starts"], path, "segment_starts")
    ends = _list_values(arrays["segment_ends"], path, "segment_ends")
    bad = np.flatnonzero(~(np.isfinite(starts) & np.isfinite(ends) & (starts <= ends)))
    if len(bad):
        row = _row_of(arrays["segment_starts"], int(bad[0]))
        raise _fail(path, "segment_starts", f"row {row} holds the segment [{starts[bad[0]]}, {ends[bad[0]]}], "
                                            "expected finite seconds with start <= end")
    _check_extra_columns(table, path, expected_schema.names)


def _check_extra_columns(table: pa.Table, path: Path, known: list[str]) -> None:
    # Source columns (subject, scene, egocentric, ...): text or flags, the types the content hash covers.
    for name, column in zip(table.column_names, table.columns):
        if name in known:
            continue
        kind = column.type
        if not (pa.types.is_string(kind) or pa.types.is_boolean(kind) or pa.types.is_integer(kind)
                or pa.types.is_floating(kind)):
            raise _fail(path, name, f"has type {kind}; source columns hold text, flags or numbers")


def check_class_table(table: pa.Table, path: Path, expected_schema: pa.Schema, groups: tuple[str, ...]) -> int:
    """Columns, types and values of ``classes``: ids 0..C-1 in order, distinct keys, known groups, counts >= 0.
    Returns the number of classes."""
    nullable = {"target", "train_seconds"}
    arrays = {field.name: _column(table, field.name, field.type, path, nulls=field.name in nullable)
              for field in expected_schema}
    if table.num_rows == 0:
        raise MeidBenchError(f"{path}: holds no class; {REBUILD}")
    ids = arrays["class_id"].to_numpy(zero_copy_only=False)
    wrong = np.flatnonzero(ids != np.arange(len(ids)))
    if len(wrong):
        raise _fail(path, "class_id", f"row {wrong[0]} holds {ids[wrong[0]]}; class ids must be 0, 1, 2, ... in "
                                      "row order")
    check_unique(arrays["class_key"], path, "class_key")
    group = np.asarray(arrays["group"].to_pylist(), dtype=object)
    unknown = np.flatnonzero(~np.isin(group, groups))
    if len(unknown):
        raise _fail(path, "group", f"row {unknown[0]} holds {group[unknown[0]]!r}, expected one of "
                                   f"{', '.join(groups)}")
    for name in ("original_train_count", "train_count", "val_count", "test_count"):
        counts = arrays[name].to_numpy(zero_copy_only=False)
        if (counts < 0).any():
            row = int(np.flatnonzero(counts < 0)[0])
            raise _fail(path, name, f"row {row} holds {counts[row]}, expected a count >= 0")
    for name in nullable:
        _check_nonnegative(arrays[name], path, name)
    _check_extra_columns(table, path, expected_schema.names)
    return table.num_rows


def check_strings_valid(table: pa.Table, path: Path) -> None:
    """Refuse text that is not valid UTF-8 (reading it later would raise deep inside pyarrow)."""
    for name, column in zip(table.column_names, table.columns):
        try:
            column.validate(full=True)
        except pa.ArrowInvalid as exc:
            raise _fail(path, name, f"invalid data ({str(exc).splitlines()[0][:120]})") from None
