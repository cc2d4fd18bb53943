"""The validation layer's own parts: checked fields, strict JSON, output checks, the content hash's encoding."""

from __future__ import annotations

import hashlib

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meid_bench.build.split_io import canonical_type_name, table_content_sha256
from meid_bench.checks import Fields, check_number, loads_json
from meid_bench.errors import MeidBenchError, VerificationError
from meid_bench.fileio import check_output_file, check_output_folder, remove_stale_staging
from meid_bench.records import read_log


def reference_hash(table: pa.Table) -> str:
    """The content hash written out plainly from docs/formats.md (value by value, no vectorisation)."""
    digest = hashlib.sha256()
    for name, column in zip(table.column_names, table.columns):
        kind = column.type
        digest.update(f"{name}:{canonical_type_name(kind)}\n".encode())
        values = column.to_pylist()
        digest.update(bytes(int(v is not None) for v in values))
        if pa.types.is_list(kind):
            lengths = [0 if v is None else len(v) for v in values]
            offsets = [0]
            for length in lengths:
                offsets.append(offsets[-1] + length)
            digest.update(b"".join(o.to_bytes(8, "little", signed=True) for o in offsets))
            flat = [x for v in values if v is not None for x in v]
            digest.update(bytes(int(x is not None) for x in flat))
            digest.update(b"".join(int(x or 0).to_bytes(8, "little", signed=True) for x in flat))
        else:
            for value in values:
                encoded = (value or "").encode("utf-8")
                digest.update(len(encoded).to_bytes(8, "little") + encoded)
    return digest.hexdigest()


@settings(max_examples=60, deadline=None)
@given(texts=st.lists(st.one_of(st.none(), st.text(max_size=6)), max_size=12),
       labels=st.lists(st.lists(st.integers(-5, 300), max_size=4), max_size=12),
       start=st.integers(0, 3))
def test_content_hash_follows_the_documented_encoding(texts, labels, start):
    """Strings (nulls, empty, non-ASCII, sliced arrays) and int32 lists hash as docs/formats.md spells out."""
    size = min(len(texts), len(labels))
    table = pa.table({"video_id": pa.array(texts[:size], pa.string()),
                      "labels": pa.array(labels[:size], pa.list_(pa.int32()))}).slice(min(start, size))
    assert table_content_sha256(table) == reference_hash(table)
    renamed = table.cast(pa.schema([("video_id", pa.string()),
                                    ("labels", pa.list_(pa.field("element", pa.int32())))]))
    assert table_content_sha256(renamed) == table_content_sha256(table)  # Parquet's read-back naming


def test_fields_name_file_path_and_problem():
    fields = Fields({"a": {"b": "x", "n": float("nan")}, "k": [0.5, None, 2]}, "f.json", "fix it")
    with pytest.raises(MeidBenchError, match=r"^f\.json: field 'a\.b': expected an integer, got str 'x'; fix it$"):
        fields.object("a").integer("b")
    with pytest.raises(MeidBenchError, match=r"field 'a\.n': expected a finite number"):
        fields.object("a").number("n")
    with pytest.raises(MeidBenchError, match=r"field 'k': entry 2: expected a finite number >= 0 and <= 1"):
        fields.numbers("k", low=0, high=1, allow_none=True)
    with pytest.raises(MeidBenchError, match=r"field 'missing': missing"):
        fields.string("missing")
    assert fields.string("absent", "default") == "default"
    with pytest.raises(MeidBenchError, match="the top level: expected an object, got list"):
        Fields([1], "f.json", "fix it")


def test_options_and_json_refuse_non_finite_numbers():
    assert check_number(4.0, "--fps", low=0, low_open=True) == 4.0
    for bad in (float("nan"), float("inf"), 0.0, -1.0, "4", True):
        with pytest.raises(MeidBenchError, match="--fps"):
            check_number(bad, "--fps", low=0, low_open=True)
    for text in ('{"a": NaN}', '{"a": Infinity}', '[-Infinity]'):
        with pytest.raises(ValueError, match="not a number JSON allows"):
            loads_json(text)
    assert issubclass(VerificationError, MeidBenchError)
    assert (MeidBenchError.exit_status, VerificationError.exit_status) == (2, 1)


def test_output_checks(tmp_path):
    (tmp_path / "file").write_text("mine")
    (tmp_path / "folder").mkdir()
    assert check_output_file(tmp_path / "new" / "deeper" / "x.h5", force=False)
    with pytest.raises(MeidBenchError, match="is a folder, --out names a file"):
        check_output_file(tmp_path / "folder", force=True)
    with pytest.raises(MeidBenchError, match="file is a file, not a folder"):
        check_output_file(tmp_path / "file" / "a" / "x.h5", force=True)
    with pytest.raises(MeidBenchError, match="already exists; pass --force"):
        check_output_file(tmp_path / "file", force=False)
    assert check_output_file(tmp_path / "file", force=True)
    with pytest.raises(MeidBenchError, match="is a file, --out names a folder"):
        check_output_folder(tmp_path / "file", force=True)
    with pytest.raises(MeidBenchError, match="already exists"):
        check_output_folder(tmp_path / "folder", force=False)
    assert check_output_folder(tmp_path / "folder", force=False, existing_ok=True)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(MeidBenchError, match="broken link"):
        check_output_file(tmp_path / "dangling" / "x.h5", force=False)


def test_stale_staging_pattern_is_exact(tmp_path):
    out = tmp_path / "store.h5"
    ours = [tmp_path / ".store.h5.tmp-ab_12cd3.h5", tmp_path / ".store.h5.tmp-ZZZZZZZZ.h5"]
    not_ours = [tmp_path / ".store.h5.tmp-ab_12cd3", tmp_path / ".store.h5.tmp-toolongname.h5",
                tmp_path / "store.h5.tmp-ab_12cd3.h5", tmp_path / ".store.h5x.tmp-ab_12cd3.h5"]
    for path in ours + not_ours:
        path.write_bytes(b"x")
    (tmp_path / ".store.h5.tmp-folder12.h5").mkdir()
    assert sorted(remove_stale_staging(out, suffix=".h5")) == sorted(ours)
    assert all(path.exists() for path in not_ours) and (tmp_path / ".store.h5.tmp-folder12.h5").is_dir()


def test_read_log(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text('{"epoch": 0, "loss_x": 1.5}\n{"epoch": 1, "val_mAP": null}\n{"epo')
    assert [r["epoch"] for r in read_log(log, warn_cut_line=False)] == [0, 1]
    log.write_text('{"epoch": 0}\n{"epoch": 1}')  # a complete last line without its newline is kept
    assert [r["epoch"] for r in read_log(log)] == [0, 1]
    log.write_text('{"epoch": 0}\nxyz')  # not the start of a record: damage, not an interruption
    with pytest.raises(MeidBenchError, match="line 2: not a JSON object"):
        read_log(log)
