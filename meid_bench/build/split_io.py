"""The split folder: writing it atomically and loading it with every checksum verified.

A split folder holds four Parquet tables (``train``, ``val``, ``test``, ``classes``) and ``manifest.json``. The
manifest records, for every table, its sha256, its row count and a content hash that does not depend on the
Parquet encoder's version (see :func:`table_content_sha256`). ``docs/formats.md`` documents every column.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meid_bench.build import split_check
from meid_bench.errors import MeidBenchError, VerificationError, warn
from meid_bench.fileio import publish_folder, read_record
from meid_bench.outputs import SPLIT_FILES, Output, check_outputs

SPLIT_FORMAT = "meid-bench-split"
SPLIT_FORMAT_VERSION = 1
VIDEO_TABLES = ("train", "val", "test")
TABLES = VIDEO_TABLES + ("classes",)
GROUPS = ("head", "medium", "tail")

# Schemas shared by every benchmark; sources may add optional columns after these (subject, scene, ...).
VIDEO_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("labels", pa.list_(pa.int32())),
        ("duration", pa.float64()),
        ("segment_classes", pa.list_(pa.int32())),
        ("segment_starts", pa.list_(pa.float64())),
        ("segment_ends", pa.list_(pa.float64())),
    ]
)
CLASS_SCHEMA = pa.schema(
    [
        ("class_id", pa.int32()),
        ("class_key", pa.string()),
        ("class_name", pa.string()),
        ("original_train_count", pa.int64()),
        ("target", pa.float64()),
        ("train_count", pa.int64()),
        ("val_count", pa.int64()),
        ("test_count", pa.int64()),
        ("train_seconds", pa.float64()),
        ("group", pa.string()),
    ]
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def table_content_sha256(table: pa.Table) -> str:
    """A hash of a table's content (names, types, values, nulls), independent of how Parquet encoded it.

    Byte checksums of Parquet files change with the writer's version; this hash does not, so a shipped reference
    can be checked on any machine. Encoding (``docs/formats.md`` gives it byte by byte): for each column in order,
    the line ``name:type``, then its validity bytes, then its values as little-endian buffers (lists as int64
    offsets plus the flattened values; strings as UTF-8, each prefixed by its length; nulls as zeros). Types are
    written as pyarrow names them with list children always called ``item`` (Parquet reads them back as
    ``element``: the same content).
    """
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns):
        array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        digest.update(f"{name}:{canonical_type_name(array.type)}\n".encode())
        _hash_array(digest, array)
    return digest.hexdigest()


def split_identity(benchmark: str, content_sha256: dict[str, str]) -> str:
    """The split checksum: sha256 of the canonical JSON of the benchmark name and every table's content hash.

    It depends on what the split holds (videos, labels, segments, classes, groups), not on how or by which software
    versions it was written, so a split rebuilt by another meid-bench, NumPy or pyarrow version keeps its checksum
    and the feature stores and runs made for it."""
    record = {"format": "meid-bench-split-identity", "format_version": 1, "benchmark": benchmark,
              "tables": {name: content_sha256[name] for name in TABLES}}
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def canonical_type_name(kind: pa.DataType) -> str:
    """pyarrow's name of a type, with every list child named ``item`` (``list<item: int32>``)."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        prefix = "large_list" if pa.types.is_large_list(kind) else "list"
        return f"{prefix}<item: {canonical_type_name(kind.value_type)}>"
    return str(kind)


def _hash_array(digest: "hashlib._Hash", array: pa.Array) -> None:
    validity = np.asarray(array.is_valid(), dtype=np.uint8) if len(array) else np.zeros(0, np.uint8)
    digest.update(validity.tobytes())
    kind = array.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        offsets = np.asarray(array.offsets, dtype="<i8")
        digest.update((offsets - offsets[0]).tobytes() if len(offsets) else b"")
        _hash_array(digest, array.flatten())
    elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
        digest.update(_length_prefixed_utf8(array))
    elif pa.types.is_boolean(kind):
        digest.update(np.asarray(array.fill_null(False), dtype=np.uint8).tobytes())
    elif pa.types.is_integer(kind):
        digest.update(np.asarray(array.fill_null(0).cast(pa.int64()), dtype="<i8").tobytes())
    elif pa.types.is_floating(kind):
        values = np.asarray(array.cast(pa.float64()).fill_null(0.0), dtype="<f8")
        digest.update(values.tobytes())
    else:
        raise TypeError(f"no content hash for Arrow type {kind}")


def _length_prefixed_utf8(array: pa.Array) -> bytes:
    """Each value as its UTF-8 byte length (uint64, little-endian) then its bytes; a null as length 0."""
    if array.null_count:
        array = array.fill_null("")
    if len(array) == 0:
        return b""
    _, offset_buffer, data_buffer = array.buffers()
    width = np.int64 if pa.types.is_large_string(array.type) else np.int32
    offsets = np.frombuffer(offset_buffer, dtype=width)[array.offset:array.offset + len(array) + 1].astype(np.int64)
    lengths = np.diff(offsets)
    data = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0]:offsets[-1]] if data_buffer else np.zeros(0, np.uint8)
    out = np.empty(8 * len(array) + len(data), dtype=np.uint8)
    starts = 8 * np.arange(len(array), dtype=np.int64) + (offsets[:-1] - offsets[0])
    out[starts[:, None] + np.arange(8)] = lengths.astype("<u8").view(np.uint8).reshape(-1, 8)
    out[np.repeat(starts + 8 - (offsets[:-1] - offsets[0]), lengths) + np.arange(len(data))] = data
    return out.tobytes()


def write_parquet(table: pa.Table, path: Path) -> None:
    # Fixed options so that the same pyarrow version always writes the same bytes.
    pq.write_table(table, path, compression="zstd", compression_level=3, use_dictionary=False,
                   write_statistics=False, store_schema=False)


@dataclass(frozen=True)
class Split:
    """A loaded, verified split folder.

    ``train``, ``val`` and ``test`` have one row per video (``video_id``, ``labels`` as a list of class ids,
    ``duration`` in seconds, the temporal segments as three parallel lists, plus source columns). ``classes``
    has one row per class with its counts, its annotated seconds and its group. ``content_sha256`` holds each
    table's content hash as recomputed from the tables when loading (not as the manifest claims it).
    """

    path: Path
    manifest: dict
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    classes: pd.DataFrame
    checksum: str = field(default="")
    content_sha256: dict[str, str] = field(default_factory=dict)
    manifest_sha256: str = field(default="")  # the split checksum of meid-bench 0.2 and earlier

    @property
    def accepted_checksums(self) -> tuple[str, str]:
        """The split checksums that name this split: its content identity, and the sha256 of its manifest.json
        (what feature stores, runs and checkpoints made by meid-bench 0.2 and earlier record)."""
        return self.checksum, self.manifest_sha256

    def matches(self, checksum: str) -> bool:
        """Whether a recorded split checksum is this split's (one of :attr:`accepted_checksums`)."""
        return bool(checksum) and checksum in self.accepted_checksums

    @property
    def name(self) -> str:
        return str(self.manifest["benchmark"])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def groups(self) -> dict[str, np.ndarray]:
        """Class ids of each group (``head``, ``medium``, ``tail``), as stored with the split."""
        group = self.classes["group"].to_numpy()
        ids = self.classes["class_id"].to_numpy()
        return {name: ids[group == name].astype(np.int64) for name in GROUPS}

    def __repr__(self) -> str:
        """One line, like a dataset summary: ``Split(charadeslt, 157 classes (head 77, medium 56, tail 24), videos
        train 4734 / val 724 / test 1814, checksum 1a2b3c4d5e6f, path 'splits/charadeslt')``."""
        groups = ", ".join(f"{name} {int((self.classes['group'] == name).sum())}" for name in GROUPS)
        videos = " / ".join(f"{name} {len(getattr(self, name))}" for name in VIDEO_TABLES)
        return (f"Split({self.name}, {self.num_classes} classes ({groups}), videos {videos}, "
                f"checksum {self.checksum[:12]}, path {str(self.path)!r})")

    def table(self, subset: str) -> pd.DataFrame:
        if subset not in VIDEO_TABLES:
            raise MeidBenchError(f"unknown subset {subset!r}: choose one of {', '.join(VIDEO_TABLES)}")
        return getattr(self, subset)

    def multi_hot(self, subset: str) -> np.ndarray:
        """The [videos, classes] 0/1 target matrix (uint8) of one subset, rows in table order."""
        labels = self.table(subset)["labels"]
        out = np.zeros((len(labels), self.num_classes), dtype=np.uint8)
        lengths = np.fromiter((len(x) for x in labels), dtype=np.int64, count=len(labels))
        if lengths.sum():
            rows = np.repeat(np.arange(len(labels)), lengths)
            cols = np.concatenate([np.asarray(x, dtype=np.int64) for x in labels if len(x)])
            out[rows, cols] = 1
        return out


def write_split(out: Path, tables: dict[str, pa.Table], manifest: dict, force: bool = False) -> Path:
    """Write a split folder atomically: a temporary sibling folder, renamed into place when complete.

    An existing folder is kept unless ``force``; with ``force`` only a split folder is replaced, and only its own
    files (manifest.json and the tables) once the new ones are complete: everything else in it (feature stores,
    extraction work folders, the user's files) is kept (:func:`_replace_split_files`). Returns the path.
    ``manifest`` gets its ``files`` entry filled here.
    """
    out = Path(out)
    check_outputs([Output(out, "--out", "split", folder=True)], [], force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        files = {}
        for name in TABLES:
            path = staging / f"{name}.parquet"
            write_parquet(tables[name], path)
            files[path.name] = {"rows": tables[name].num_rows, "sha256": sha256_file(path),
                                "content_sha256": table_content_sha256(tables[name])}
        manifest = dict(manifest, files=files)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")
        if out.exists():
            _replace_split_files(staging, out, manifest)
        else:
            publish_folder(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


SPLIT_OWN_FILES = SPLIT_FILES  # manifest.json and one Parquet file per table (outputs.py protects them as inputs)


def _manifest_identity(manifest: object) -> str | None:
    try:
        return split_identity(manifest["benchmark"], {n: manifest["files"][f"{n}.parquet"]["content_sha256"]
                                                      for n in TABLES})
    except (KeyError, TypeError):
        return None


def _replace_split_files(staging: Path, out: Path, manifest: dict) -> None:
    """Put the complete new split ``staging`` in place of the split folder ``out``, moving everything of ``out`` that
    is not one of the split's own files into the new folder: a rebuild never deletes a feature store."""
    others = sorted(entry.name for entry in out.iterdir() if entry.name not in SPLIT_OWN_FILES)
    try:
        earlier = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        earlier = None
    os.chmod(staging, 0o755)
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, retired / out.name)
    os.replace(staging, out)
    stuck = []
    for name in others:
        try:
            os.replace(retired / out.name / name, out / name)
        except OSError:
            stuck.append(name)
    if stuck:  # keep the old folder: it still holds files that are not ours to delete
        raise MeidBenchError(f"{out}: the split was rebuilt, but {', '.join(stuck[:3])} could not be moved back "
                             f"from {retired / out.name}; move them yourself, then delete that folder")
    shutil.rmtree(retired)
    if others:
        same = _manifest_identity(earlier) == _manifest_identity(manifest)
        note = ("the rebuilt split is the same (same checksum), so they still apply" if same else
                "the rebuilt split is DIFFERENT (another checksum): feature stores made for the old one will be "
                "refused; make them again")
        warn(f"{out}: kept {len(others)} file(s) that `build` does not write ({', '.join(others[:3])}"
             f"{', ...' if len(others) > 3 else ''}); {note}")


def load_split(path: str | os.PathLike, verify: bool = True) -> Split:
    """Load a split folder: check the manifest's fields and every table's columns, types and values, recompute each
    table's content hash and compare it, its byte sha256 and its row count with the manifest.

    Malformed input is a :class:`MeidBenchError` (exit status 2); a well-formed table that does not match the
    manifest is a :class:`VerificationError` (exit status 1). ``verify=False`` skips the comparisons of the
    byte sha256 and content hash with the manifest (not the checks of the content, nor the row counts).
    """
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise MeidBenchError(f"{path}: no such split folder; build one with `meid-bench build BENCHMARK`")
    if not manifest_path.is_file():
        raise MeidBenchError(f"{manifest_path}: missing; this is not a complete split folder, rebuild it with "
                             "`meid-bench build ... --force`")
    try:
        raw = manifest_path.read_bytes()
    except OSError as exc:
        raise MeidBenchError(f"{manifest_path}: cannot be read ({exc.strerror})") from None
    manifest = read_record(manifest_path, SPLIT_FORMAT, SPLIT_FORMAT_VERSION, split_check.REBUILD, raw=raw)
    files = split_check.check_manifest(manifest, manifest_path, TABLES).object("files")
    tables, hashes = {}, {}
    for name in ("classes",) + VIDEO_TABLES:  # classes first: the video tables' label range comes from it
        file_name = f"{name}.parquet"
        entry = files.data[file_name]
        file_path = path / file_name
        if not file_path.is_file():
            raise MeidBenchError(f"{file_path}: missing from the split folder; {split_check.REBUILD}")
        if verify and sha256_file(file_path) != entry["sha256"]:
            raise VerificationError(f"{file_path}: sha256 does not match manifest.json (the file was changed or "
                                    f"damaged); {split_check.REBUILD}")
        table = _read_table(file_path)
        if name == "classes":
            num_classes = split_check.check_class_table(table, file_path, CLASS_SCHEMA, GROUPS)
        else:
            split_check.check_video_table(table, file_path, num_classes, VIDEO_SCHEMA)
        hashes[name] = table_content_sha256(table)
        if table.num_rows != entry["rows"]:
            raise VerificationError(f"{file_path}: {table.num_rows} rows, manifest.json says {entry['rows']}; "
                                    f"{split_check.REBUILD}")
        if verify and hashes[name] != entry["content_sha256"]:
            raise VerificationError(f"{file_path}: its content (values) does not match the content_sha256 in "
                                    "manifest.json although its bytes match the sha256: the table and the manifest "
                                    f"were edited after the build; {split_check.REBUILD}")
        tables[name] = table
    split_check.check_unique(pa.chunked_array([tables[n].column("video_id") for n in VIDEO_TABLES]), path,
                             "video_id", where=[f"{n}.parquet" for n in VIDEO_TABLES])
    declared = manifest.get("num_classes")
    if declared is not None and declared != num_classes:
        raise MeidBenchError(f"{manifest_path}: field 'num_classes' is {declared}, classes.parquet has {num_classes} "
                             f"rows; {split_check.REBUILD}")
    frames = {name: table.to_pandas() for name, table in tables.items()}
    return Split(path=path, manifest=manifest, checksum=split_identity(str(manifest["benchmark"]), hashes),
                 content_sha256=hashes, manifest_sha256=hashlib.sha256(raw).hexdigest(), **frames)


def _read_table(path: Path) -> pa.Table:
    """A split table, read with clear errors: unreadable Parquet, duplicate columns, invalid UTF-8."""
    try:
        split_check.check_schema(pq.read_schema(path), path)
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MeidBenchError(f"{path}: unreadable Parquet ({first}); {split_check.REBUILD}") from None
    split_check.check_strings_valid(table, path)
    return table
