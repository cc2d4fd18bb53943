"""Split folders damaged every way we could think of: `verify` (and every command, through `load_split`) refuses
each with exit status 2 and one line naming the file and the field, or 1 where a well-formed table does not match
what the manifest records. Nothing is written either way."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hostile_support import (TRUNCATIONS, WRONG_VALUES, assert_clean_outcome, assert_refused, edit_json, invoke,
                             leaf_paths, overwrite, random_bytes, rewrite_table, set_column, set_path, sha256_of,
                             train_args, truncate, workspace)
from meid_bench.build.split_io import load_split, table_content_sha256

INT_LIST = pa.list_(pa.int32())


def verify(ws):
    return ["verify", ws / "split"]


# -- manifest.json -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_truncated_manifest(hostile_base, tmp_path, keep):
    ws = workspace(hostile_base, tmp_path)
    truncate(ws / "split" / "manifest.json", keep)
    assert_refused(ws, verify(ws), 2, "manifest.json")


@pytest.mark.parametrize("seed", range(3))
def test_random_manifest(hostile_base, tmp_path, seed):
    ws = workspace(hostile_base, tmp_path)
    random_bytes(ws / "split" / "manifest.json", seed)
    assert_refused(ws, verify(ws), 2, "manifest.json")


MANIFEST_DAMAGE = [
    ("benchmark", "delete", "'benchmark': missing"),
    ("benchmark", 3, "'benchmark': expected a string"),
    ("benchmark", "../../x", "'benchmark'"),
    ("protocol", ["v1"], "'protocol': expected a string"),
    ("parameters", [1], "'parameters': expected an object"),
    ("sources", "x", "'sources': expected a list"),
    ("files", "x", "'files': expected an object"),
    ("files", "delete", "'files': missing"),
    ("files.train.parquet", "abc", "'files.train.parquet': expected an object"),
    ("files.val.parquet", "delete", "'files.val.parquet': missing"),
    ("files.test.parquet.sha256", 5, "'files.test.parquet.sha256': expected a string"),
    ("files.test.parquet.sha256", "abc", "64 lower-case hex digits"),
    ("files.classes.parquet.content_sha256", "delete", "content_sha256': missing"),
    ("files.train.parquet.rows", "10", "'files.train.parquet.rows': expected an integer"),
    ("files.train.parquet.rows", -1, "expected an integer >= 0"),
    ("files.train.parquet.rows", float("nan"), "NaN"),
    ("num_classes", 0, "'num_classes'"),
    ("num_classes", 5, "'num_classes' is 5"),
    ("groups", [], "'groups': expected an object"),
    ("groups.head_above", "many", "'groups.head_above'"),
    ("rows.train", -3, "'rows.train'"),
    ("format", "meid-bench-run", "'format'"),
    ("format_version", 2, "'format_version'"),
]


@pytest.mark.parametrize("field, value, fragment", MANIFEST_DAMAGE, ids=[f"{f}={v}" for f, v, _ in MANIFEST_DAMAGE])
def test_damaged_manifest_field(hostile_base, tmp_path, field, value, fragment):
    ws = workspace(hostile_base, tmp_path)
    path = ws / "split" / "manifest.json"
    if isinstance(value, float):  # json.dumps writes NaN, which no JSON reader should accept
        path.write_text(path.read_text().replace('"rows": ', '"rows": NaN, "x": ', 1))
    else:
        edit_json(path, lambda m: set_path(m, field, value, delete=value == "delete"))
    assert_refused(ws, verify(ws), 2, "manifest.json", fragment)


def test_manifest_fuzz_never_crashes(hostile_base, tmp_path):
    """Any field of the manifest deleted or replaced by a value of another type: a clean verdict, never a crash."""
    manifest = json.loads((hostile_base / "split" / "manifest.json").read_text())
    cases = [(path, value) for path in leaf_paths(manifest) for value in WRONG_VALUES + ("delete",)]
    picked = random.Random(0).sample(cases, 40)
    for index, (path, value) in enumerate(picked):
        ws = workspace(hostile_base, tmp_path / str(index))
        target = ws / "split" / "manifest.json"
        edit_json(target, lambda m: set_path(m, path, value, delete=value == "delete"))
        assert_clean_outcome(ws, verify(ws))


# -- the tables --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("table", ["train", "classes"])
@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_truncated_table_is_a_checksum_mismatch(hostile_base, tmp_path, table, keep):
    ws = workspace(hostile_base, tmp_path)
    truncate(ws / "split" / f"{table}.parquet", keep)
    assert_refused(ws, verify(ws), 1, f"{table}.parquet: sha256 does not match")


@pytest.mark.parametrize("keep", TRUNCATIONS)
def test_truncated_table_with_its_sha256_forged(hostile_base, tmp_path, keep):
    ws = workspace(hostile_base, tmp_path)
    truncate(ws / "split" / "val.parquet", keep)
    edit_json(ws / "split" / "manifest.json",
              lambda m: m["files"]["val.parquet"].update(sha256=sha256_of(ws / "split" / "val.parquet")))
    assert_refused(ws, verify(ws), 2, "val.parquet: unreadable Parquet")


@pytest.mark.parametrize("seed", range(3))
def test_random_table_bytes(hostile_base, tmp_path, seed):
    ws = workspace(hostile_base, tmp_path)
    random_bytes(ws / "split" / "test.parquet", seed)
    assert_refused(ws, verify(ws), 1, "test.parquet")
    overwrite(ws / "split" / "classes.parquet", seed, 0.5, 64)
    assert_refused(ws, verify(ws), 1)


def _labels(edit):
    return set_column("labels", lambda t: edit(t.column("labels").to_pylist()), INT_LIST)


def _first(value):
    return lambda rows: [value] + rows[1:]


TABLE_DAMAGE = [
    ("train", lambda t: t.drop_columns(["labels"]), "column 'labels': missing"),
    ("test", lambda t: t.drop_columns(["video_id"]), "column 'video_id': missing"),
    ("val", lambda t: t.drop_columns(["segment_ends"]), "column 'segment_ends': missing"),
    ("classes", lambda t: t.drop_columns(["class_key"]), "column 'class_key': missing"),
    ("classes", lambda t: t.drop_columns(["group"]), "column 'group': missing"),
    ("test", _labels(_first([99])), "class id 99, outside 0..5"),
    ("train", _labels(_first([-1])), "class id -1"),
    ("val", _labels(_first(None)), "column 'labels': row 0 is null"),
    ("val", _labels(_first([0, None])), "null inside a list"),
    ("train", set_column("labels", lambda t: [[str(x) for x in v] for v in t.column("labels").to_pylist()],
                         pa.list_(pa.string())), "column 'labels': has type"),
    ("train", set_column("video_id", lambda t: list(range(t.num_rows)), pa.int64()), "'video_id': has type int64"),
    ("train", set_column("video_id", lambda t: [None] + t.column("video_id").to_pylist()[1:], pa.string()),
     "'video_id': row 0 is null"),
    ("train", set_column("video_id", lambda t: [t.column("video_id")[1].as_py()] + t.column("video_id").to_pylist()[1:],
                         pa.string()), "appears more than once"),
    ("train", set_column("duration", lambda t: [float("inf")] + t.column("duration").to_pylist()[1:], pa.float64()),
     "'duration': row 0 holds inf"),
    ("train", set_column("duration", lambda t: [-5.0] + t.column("duration").to_pylist()[1:], pa.float64()),
     "'duration': row 0 holds -5.0"),
    ("train", set_column("duration", lambda t: [str(x) for x in t.column("duration").to_pylist()], pa.string()),
     "'duration': has type string"),
    ("train", set_column("segment_starts", lambda t: [[]] + t.column("segment_starts").to_pylist()[1:],
                         pa.list_(pa.float64())), "different lengths"),
    ("train", set_column("segment_ends", lambda t: [[float("nan")] * len(v) for v in t.column("segment_ends")
                                                    .to_pylist()], pa.list_(pa.float64())), "expected finite seconds"),
    ("train", set_column("segment_classes", lambda t: [[7] * len(v) for v in t.column("segment_classes").to_pylist()],
                         INT_LIST), "'segment_classes'"),
    ("train", lambda t: t.append_column("video_id", t.column("video_id")), "column 'video_id' appears twice"),
    ("train", lambda t: t.append_column("extra", pa.array([[1.0]] * t.num_rows)), "column 'extra': has type"),
    ("classes", lambda t: t.slice(0, t.num_rows - 1), "train.parquet: column 'labels': row"),  # a label > 4
    ("classes", lambda t: t.slice(0, 0), "holds no class"),
    ("classes", set_column("class_id", lambda t: list(reversed(t.column("class_id").to_pylist())), pa.int32()),
     "class ids must be 0, 1, 2"),
    ("classes", set_column("class_key", lambda t: ["c000"] * t.num_rows, pa.string()), "'class_key': value 'c000'"),
    ("classes", set_column("group", lambda t: ["huge"] + t.column("group").to_pylist()[1:], pa.string()),
     "'group': row 0 holds 'huge'"),
    ("classes", set_column("train_count", lambda t: [-5] + t.column("train_count").to_pylist()[1:], pa.int64()),
     "'train_count': row 0 holds -5"),
    ("classes", set_column("target", lambda t: [float("inf")] + t.column("target").to_pylist()[1:], pa.float64()),
     "'target': row 0 holds inf"),
    ("classes", set_column("train_seconds", lambda t: [-1.0] * t.num_rows, pa.float64()), "'train_seconds'"),
]


@pytest.mark.parametrize("table, edit, fragment", TABLE_DAMAGE, ids=[f"{t}-{f.split(':')[0][:30]}" for t, _, f in
                                                                      TABLE_DAMAGE])
def test_damaged_table_with_manifest_forged_to_match(hostile_base, tmp_path, table, edit, fragment):
    """The hostile edit updates the manifest (bytes, rows, content hash) so that only the content checks remain."""
    ws = workspace(hostile_base, tmp_path)
    rewrite_table(ws / "split", table, edit)
    named = fragment if ".parquet" in fragment else f"{table}.parquet"
    assert_refused(ws, verify(ws), 2, named, fragment)


def test_video_in_two_subsets(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    train_id = pq.read_table(ws / "split" / "train.parquet").column("video_id")[0].as_py()
    rewrite_table(ws / "split", "test", set_column("video_id", lambda t: [train_id] + t.column("video_id")
                                                   .to_pylist()[1:], pa.string()))
    assert_refused(ws, verify(ws), 2, f"video {train_id!r} appears in train.parquet and test.parquet")


def test_invalid_utf8_ids(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)

    def edit(table):
        ids = [v.encode() for v in table.column("video_id").to_pylist()]
        ids[0] = b"\xff\xfe"
        raw = pa.array(ids, pa.binary())
        return table.set_column(0, "video_id", pa.Array.from_buffers(pa.string(), len(raw), raw.buffers()))
    rewrite_table(ws / "split", "test", edit, update="sha")
    assert_refused(ws, verify(ws), 2, "test.parquet: column 'video_id': invalid data")


def test_damaged_split_is_refused_by_every_command(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    rewrite_table(ws / "split", "test", _labels(_first([99])))
    for args in (train_args(ws), ["evaluate", "--split", ws / "split", "--predictions",
                                  ws / "run" / "predictions" / "test.parquet", "--out", ws / "ev"],
                 ["features", "synth", "--split", ws / "split", "--out", ws / "f.h5"], ["report", ws / "run",
                                                                                         "--out", ws / "rep"]):
        assert_refused(ws, args, 2, "class id 99")


# -- verification: exit status 1 -----------------------------------------------------------------------------------

def _edit_a_label(table):
    labels = table.column("labels").to_pylist()
    labels[0] = sorted(set(labels[0]) ^ {5})
    return table.set_column(table.column_names.index("labels"), "labels", pa.array(labels, INT_LIST))


def test_label_edit_with_sha256_forged_fails_verify(hostile_base, tmp_path):
    """The issue's case: a test label changed and the file's sha256 updated in the manifest."""
    ws = workspace(hostile_base, tmp_path)
    rewrite_table(ws / "split", "test", _edit_a_label, update="sha")
    assert_refused(ws, verify(ws), 1, "test.parquet: its content (values) does not match the content_sha256")
    assert_refused(ws, train_args(ws), 1, "content_sha256")


def test_row_count_differs_from_manifest(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    edit_json(ws / "split" / "manifest.json", lambda m: m["files"]["val.parquet"].update(rows=3))
    assert_refused(ws, verify(ws), 1, "val.parquet: ", "rows, manifest.json says 3")


def test_clean_split_verifies_and_hashes_are_recomputed(hostile_base, tmp_path):
    ws = workspace(hostile_base, tmp_path)
    result = invoke(*verify(ws))
    assert result.exit_code == 0 and "content hashes OK" in result.output
    split = load_split(ws / "split")
    for name in ("train", "val", "test", "classes"):
        table = pq.read_table(ws / "split" / f"{name}.parquet")  # list children read back as "element"
        assert split.content_sha256[name] == table_content_sha256(table)
        assert split.content_sha256[name] == split.manifest["files"][f"{name}.parquet"]["content_sha256"]
