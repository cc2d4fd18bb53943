"""Readers: raw annotation files of each source to one canonical :class:`VideoTable`.

Every reader is driven by the header, validates each row and raises :class:`MeidBenchError` naming the file, the
line and what is wrong. Real-file quirks are repaired by one fixed rule each and counted (``docs/protocol.md``):

- a video with no ``actions`` keeps no label (it never enters train or test; the count is reported);
- a segment that ends before it starts has its two times swapped;
- a segment is clipped to ``[0, length]``; one lying wholly beyond the video's length becomes zero-length (its
  label stays, since the annotator saw the action, but it adds no annotated seconds).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from meid_bench.build.split_io import sha256_file
from meid_bench.build.table import VideoTable, concat_tables
from meid_bench.errors import MeidBenchError

CHARADES_CLASSES_FILE = "Charades_v1_classes.txt"
CHARADES_URL = "https://prior.allenai.org/projects/charades"
CHARADES_EGO_URL = "https://prior.allenai.org/projects/charades-ego"
VIDEOLT_URL = "https://github.com/17Skye17/VideoLT (label lists under labels/)"


@dataclass
class ClassList:
    keys: list[str]  # e.g. "c000"
    names: list[str]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def index(self) -> dict[str, int]:
        return {key: i for i, key in enumerate(self.keys)}


@dataclass
class SourceData:
    """What a reader returns: the videos, the classes, the files read (with checksums) and the quirk counts."""

    videos: VideoTable
    classes: ClassList
    sources: list[dict] = field(default_factory=list)
    quirks: dict = field(default_factory=dict)


def _require_file(path: Path, what: str, url: str) -> Path:
    if not path.is_file():
        raise MeidBenchError(f"{path}: {what} not found; download it from {url} and pass its folder with "
                             "--annotations")
    if path.stat().st_size == 0:
        raise MeidBenchError(f"{path}: the file is empty; download it again from {url}")
    return path


def _source_entry(path: Path) -> dict:
    return {"file": path.name, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MeidBenchError(f"{path}: not UTF-8 text (byte {exc.start}); is this the right file?") from None
    except OSError as exc:
        raise MeidBenchError(f"{path}: cannot be read ({exc.strerror})") from None


def read_charades_classes(path: Path) -> ClassList:
    """``Charades_v1_classes.txt``: one ``cNNN Name`` per line, ids in order from c000."""
    keys, names = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        key, _, name = line.strip().partition(" ")
        if not (len(key) == 4 and key[0] == "c" and key[1:].isdigit()) or not name.strip():
            raise MeidBenchError(f"{path}:{number}: expected 'cNNN Class name', got {line.strip()[:60]!r}")
        if int(key[1:]) != len(keys):
            raise MeidBenchError(f"{path}:{number}: class {key} is out of order; expected c{len(keys):03d}")
        keys.append(key)
        names.append(name.strip())
    if not keys:
        raise MeidBenchError(f"{path}: no classes in the file")
    return ClassList(keys, names)


def _line_of_row(path: Path, row: int) -> int:
    """The physical line where data row ``row`` (0-based) starts, counting quoted newlines (error path only)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        line = reader.line_num + 1
        for index, _ in enumerate(reader):
            if index == row:
                return line
            line = reader.line_num + 1
    return line


def _read_csv_columns(path: Path, wanted: tuple[str, ...]) -> tuple[pa.Table, list[str]]:
    """The named columns of a CSV file as strings (Arrow's multi-threaded reader), plus the full header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = next(csv.reader(handle), [])
    except UnicodeDecodeError:
        raise MeidBenchError(f"{path}: not UTF-8 text; is this the right file?") from None
    present = [name for name in dict.fromkeys(wanted) if name in header]
    try:
        table = pacsv.read_csv(
            path,
            parse_options=pacsv.ParseOptions(newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header},
                                                 include_columns=present, strings_can_be_null=False),
        )
    except (pa.ArrowInvalid, ValueError) as exc:
        raise MeidBenchError(f"{path}: not a readable CSV file ({str(exc).strip().splitlines()[0]})") from None
    return table, header


def _to_float(text: pa.Array) -> np.ndarray:
    """Strings to float64; an unparseable entry becomes NaN (the caller reports it with its line)."""
    try:
        return np.asarray(pc.cast(text, pa.float64()), dtype=np.float64)
    except pa.ArrowInvalid:
        series = pd.Series(text.to_pylist(), dtype=object)
        return pd.to_numeric(series, errors="coerce").to_numpy(np.float64)


def read_charades_csv(path: Path, classes: ClassList, subset: str, required: tuple[str, ...],
                      optional: tuple[str, ...]) -> tuple[VideoTable, dict]:
    """One Charades-format CSV (also Charades-Ego) to a VideoTable plus this file's quirk counts."""
    frame, header = _read_csv_columns(path, required + optional)
    missing = [name for name in required if name not in header]
    if missing:
        raise MeidBenchError(f"{path}: header lacks column(s) {', '.join(missing)}; expected a header with "
                             f"{','.join(required)} (found {','.join(header[:12])})")
    if frame.num_rows == 0:
        raise MeidBenchError(f"{path}: the file has a header but no rows")

    def fail(row: int, message: str) -> MeidBenchError:
        return MeidBenchError(f"{path}:{_line_of_row(path, row)}: {message}")

    ids = pc.utf8_trim_whitespace(frame["id"]).combine_chunks()
    id_values = np.asarray(ids.to_pylist(), dtype=object)
    if pc.any(pc.equal(ids, "")).as_py():
        raise fail(int(np.flatnonzero(id_values == "")[0]), "field 'id' is empty")
    if pc.count_distinct(ids).as_py() != len(ids):
        duplicated = pd.Series(id_values).duplicated().to_numpy()
        row = int(np.flatnonzero(duplicated)[0])
        first = int(np.flatnonzero(id_values == id_values[row])[0])
        raise fail(row, f"video id {id_values[row]!r} appears twice (first at line {_line_of_row(path, first)}); "
                        "each video must appear once")
    length_text = frame["length"].combine_chunks()
    length = _to_float(length_text)
    bad = ~np.isfinite(length) | (length <= 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise fail(row, f"field 'length' is {length_text[row].as_py()!r}; expected the video length in seconds (> 0)")

    # Segments: split "cNNN start end;..." into one item each, keeping the video's row number.
    per_video = pc.split_pattern(pc.utf8_trim_whitespace(frame["actions"]).combine_chunks(), ";")
    items = pc.utf8_trim_whitespace(per_video.flatten())
    row_of_segment = np.asarray(pc.list_parent_indices(per_video), dtype=np.int64)
    nonblank = pc.not_equal(items, "")
    items, row_of_segment = items.filter(nonblank), row_of_segment[np.asarray(nonblank, dtype=bool)]
    parts = pc.utf8_split_whitespace(items)
    widths = np.asarray(pc.list_value_length(parts))
    if (widths != 3).any():
        position = int(np.flatnonzero(widths != 3)[0])
        raise fail(int(row_of_segment[position]), f"field 'actions' has {items[position].as_py()!r}; "
                                                  "expected 'cNNN start end' items separated by ';'")
    keys = pc.list_element(parts, 0)
    segment_classes = np.asarray(pc.fill_null(pc.index_in(keys, value_set=pa.array(classes.keys)), -1),
                                 dtype=np.int32)
    if (segment_classes < 0).any():
        position = int(np.flatnonzero(segment_classes < 0)[0])
        raise fail(int(row_of_segment[position]), f"field 'actions' names unknown class {keys[position].as_py()!r}; "
                                                  f"the classes file lists {classes.keys[0]}..{classes.keys[-1]}")
    times = []
    for column in (1, 2):
        text = pc.list_element(parts, column)
        times.append(_to_float(text))
    starts, ends = times
    bad = ~np.isfinite(starts) | ~np.isfinite(ends) | (starts < 0) | (ends < 0)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise fail(int(row_of_segment[position]), f"field 'actions' has {items[position].as_py()!r}; "
                                                  "start and end must be non-negative seconds")

    reversed_ = ends < starts
    starts, ends = np.where(reversed_, ends, starts), np.where(reversed_, starts, ends)
    video_length = length[row_of_segment]
    past_end = ends > video_length
    outside = starts >= video_length
    starts = np.minimum(starts, video_length)
    ends = np.minimum(ends, video_length)

    num_videos = frame.num_rows
    counts = np.bincount(row_of_segment, minlength=num_videos)
    segment_offsets = np.zeros(num_videos + 1, dtype=np.int64)
    np.cumsum(counts, out=segment_offsets[1:])
    # Video labels: the sorted unique classes of its segments.
    pair = np.unique(row_of_segment * len(classes) + segment_classes)
    label_rows, label_values = pair // len(classes), (pair % len(classes)).astype(np.int32)
    label_offsets = np.zeros(num_videos + 1, dtype=np.int64)
    np.cumsum(np.bincount(label_rows, minlength=num_videos), out=label_offsets[1:])

    extra = {}
    for name in optional:
        if name in frame.column_names:
            values = np.asarray(frame[name].to_pylist(), dtype=object)
            extra[name] = np.where(values == "", None, values)
        else:
            extra[name] = np.full(num_videos, None, dtype=object)
    table = VideoTable(
        video_ids=id_values, subset=np.full(num_videos, subset, dtype=object), duration=length,
        label_offsets=label_offsets, label_values=label_values, segment_offsets=segment_offsets,
        segment_classes=segment_classes, segment_starts=starts, segment_ends=ends, extra=extra,
    )
    quirks = {
        "videos_without_actions": int((counts == 0).sum()),
        "segments": int(len(segment_classes)),
        "segments_reversed_swapped": int(reversed_.sum()),
        "segments_clipped_to_length": int(past_end.sum()),
        "segments_outside_video": int(outside.sum()),
    }
    return table, quirks


CHARADES_REQUIRED = ("id", "actions", "length")
CHARADES_OPTIONAL = ("subject", "scene")


def read_charades(folder: Path) -> SourceData:
    """Charades v1: ``Charades_v1_train.csv``, ``Charades_v1_test.csv`` and ``Charades_v1_classes.txt``."""
    folder = Path(folder)
    class_path = _require_file(folder / CHARADES_CLASSES_FILE, "the Charades class list", CHARADES_URL)
    classes = read_charades_classes(class_path)
    tables, sources, quirks = [], [_source_entry(class_path)], {}
    for subset in ("train", "test"):
        path = _require_file(folder / f"Charades_v1_{subset}.csv", f"the Charades {subset} annotations",
                             CHARADES_URL)
        table, file_quirks = read_charades_csv(path, classes, subset, CHARADES_REQUIRED, CHARADES_OPTIONAL)
        tables.append(table)
        sources.append(_source_entry(path))
        quirks[subset] = file_quirks
    videos = concat_tables(tables)
    _check_unique_across(videos, folder)
    return SourceData(videos, classes, sources, quirks)


CHARADES_EGO_REQUIRED = ("id", "actions", "length", "egocentric")
CHARADES_EGO_OPTIONAL = ("subject", "scene", "charades_video")
VIEWS = ("ego", "exo", "all")


def read_charades_ego(folder: Path, view: str = "ego") -> SourceData:
    """Charades-Ego v1: ``CharadesEgo_v1_{train,test}.csv`` (or their ``_only1st`` / ``_only3rd`` row subsets)
    plus ``Charades_v1_classes.txt``. ``view``: ``ego`` (first-person only), ``exo`` (third-person) or ``all``."""
    if view not in VIEWS:
        raise MeidBenchError(f"--view {view!r}: choose one of {', '.join(VIEWS)}")
    folder = Path(folder)
    class_path = _require_file(folder / CHARADES_CLASSES_FILE, "the Charades class list (the Charades-Ego v1 "
                               "archive ships it)", CHARADES_EGO_URL)
    classes = read_charades_classes(class_path)
    tables, sources, quirks = [], [_source_entry(class_path)], {}
    for subset in ("train", "test"):
        candidates = [folder / f"CharadesEgo_v1_{subset}.csv"]
        if view != "all":
            candidates.append(folder / f"CharadesEgo_v1_{subset}_only{'1st' if view == 'ego' else '3rd'}.csv")
        path = next((c for c in candidates if c.is_file()), candidates[0])
        _require_file(path, f"the Charades-Ego v1 {subset} annotations ({' or '.join(c.name for c in candidates)})",
                      CHARADES_EGO_URL)
        table, file_quirks = read_charades_csv(path, classes, subset, CHARADES_EGO_REQUIRED,
                                               CHARADES_EGO_OPTIONAL + ("egocentric",))
        egocentric = np.array([_yes_no(path, v, i) for i, v in enumerate(table.extra["egocentric"])], dtype=bool)
        table.extra["egocentric"] = egocentric
        # The first-/third-person partner of a video shares its id up to the "EGO" suffix.
        ids = table.video_ids
        table.extra["paired_video"] = np.array([i[:-3] if i.endswith("EGO") else i + "EGO" for i in ids],
                                               dtype=object)
        keep = {"ego": egocentric, "exo": ~egocentric, "all": np.ones(len(ids), bool)}[view]
        file_quirks["videos_outside_view"] = int((~keep).sum())
        tables.append(table.take(np.flatnonzero(keep)))
        sources.append(_source_entry(path))
        quirks[subset] = file_quirks
    videos = concat_tables(tables)
    _check_unique_across(videos, folder)
    return SourceData(videos, classes, sources, quirks)


def _yes_no(path: Path, value: str, row: int) -> bool:
    text = (value or "").strip().lower()
    if text in ("yes", "true", "1"):
        return True
    if text in ("no", "false", "0"):
        return False
    raise MeidBenchError(f"{path}:{_line_of_row(path, row)}: field 'egocentric' is {value!r}; expected Yes or No")


def _check_unique_across(videos: VideoTable, folder: Path) -> None:
    ids = pd.Series(videos.video_ids)
    if ids.duplicated().any():
        duplicate = ids[ids.duplicated()].iloc[0]
        raise MeidBenchError(f"{folder}: video id {duplicate!r} is in both the train and the test file; the "
                             "official splits are disjoint, so the files are mixed up")


VIDEOLT_SUBSETS = {"train": "train.lst", "validate": "validate.lst", "test": "test.lst"}
VIDEOLT_COUNTS = "count-labels-train.lst"


def read_videolt_counts(path: Path) -> tuple[ClassList, np.ndarray]:
    """``count-labels-train.lst``: ``<ClassName> <class_id> <train_count>`` per line (count written as a float)."""
    names, ids, counts = [], [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            class_id, count = int(fields[1]), float(fields[2])
            if len(fields) != 3 or count < 0 or count != int(count):
                raise ValueError
        except (ValueError, IndexError):
            raise MeidBenchError(f"{path}:{number}: expected '<ClassName> <class_id> <train_count>', got "
                                 f"{line.strip()[:60]!r}") from None
        names.append(fields[0])
        ids.append(class_id)
        counts.append(int(count))
    if not ids:
        raise MeidBenchError(f"{path}: no classes in the file")
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(np.asarray(ids)[order], np.arange(len(ids))):
        raise MeidBenchError(f"{path}: class ids must be 0..{len(ids) - 1}, each once")
    keys = [str(i) for i in range(len(ids))]
    return ClassList(keys, [names[i] for i in order]), np.asarray(counts, dtype=np.int64)[order]


def read_videolt_list(path: Path, subset: str, num_classes: int) -> VideoTable:
    """A VideoLT list: ``<video_id> <label>[,<label>...]`` per line (integer class ids)."""
    lines = _read_text(path).splitlines()
    ids, label_text = [], []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 2:
            if not fields:
                continue
            raise MeidBenchError(f"{path}:{number}: expected '<video_id> <label>[,<label>...]', got "
                                 f"{line.strip()[:60]!r}")
        ids.append(fields[0])
        label_text.append(fields[1])
    if not ids:
        raise MeidBenchError(f"{path}: no videos in the file")
    pieces = [text.split(",") for text in label_text]
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    flat = [x for p in pieces for x in p]
    values = pd.to_numeric(pd.Series(flat, dtype=object), errors="coerce").to_numpy(np.float64)
    row_of = np.repeat(np.arange(len(ids)), lengths)
    bad = ~np.isfinite(values) | (values < 0) | (values >= num_classes) | (values != np.round(values))
    if bad.any():
        row = int(row_of[np.flatnonzero(bad)[0]])
        raise MeidBenchError(f"{path}:{_nonblank_line(lines, row)}: label {flat[np.flatnonzero(bad)[0]]!r} is not a "
                             f"class id in 0..{num_classes - 1}")
    pair = np.unique(row_of * num_classes + values.astype(np.int64))
    label_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(pair // num_classes, minlength=len(ids)), out=label_offsets[1:])
    empty_offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    return VideoTable(
        video_ids=np.asarray(ids, dtype=object), subset=np.full(len(ids), subset, dtype=object),
        duration=np.full(len(ids), np.nan), label_offsets=label_offsets,
        label_values=(pair % num_classes).astype(np.int32), segment_offsets=empty_offsets,
        segment_classes=np.zeros(0, np.int32), segment_starts=np.zeros(0), segment_ends=np.zeros(0),
    )


def _nonblank_line(lines: list[str], row: int) -> int:
    seen = -1
    for number, line in enumerate(lines, start=1):
        if line.split():
            seen += 1
            if seen == row:
                return number
    return len(lines)


def read_videolt(folder: Path) -> tuple[SourceData, np.ndarray]:
    """VideoLT label lists. Returns the data and the per-class train counts of ``count-labels-train.lst``, which
    the train list must reproduce exactly."""
    folder = Path(folder)
    count_path = _require_file(folder / VIDEOLT_COUNTS, "the VideoLT class list with train counts", VIDEOLT_URL)
    classes, listed_counts = read_videolt_counts(count_path)
    tables, sources = [], [_source_entry(count_path)]
    for subset, name in VIDEOLT_SUBSETS.items():
        path = _require_file(folder / name, f"the VideoLT {subset} list", VIDEOLT_URL)
        tables.append(read_videolt_list(path, subset, len(classes)))
        sources.append(_source_entry(path))
    videos = concat_tables(tables)
    _check_unique_across(videos, folder)
    return SourceData(videos, classes, sources, {}), listed_counts
