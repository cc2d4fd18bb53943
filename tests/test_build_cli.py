"""`meid-bench build / verify / demo` on the command line: outputs, and every bad input as one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from conftest import write_charades_csv, write_classes
from meid_bench.cli import main


def run(*args: str):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def assert_clean_error(result, *fragments: str):
    assert result.exit_code == 2, result.output
    message = result.stderr if hasattr(result, "stderr") else result.output
    lines = [line for line in message.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("meid-bench: error: "), message
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture
def good(tmp_path):
    """A small valid Charades-format folder (4 classes) that each test then breaks in one way."""
    folder = tmp_path / "ann"
    folder.mkdir()
    write_classes(folder, 4)
    rows = [{"id": f"V{i:03d}", "actions": f"c00{i % 4} 1.0 4.0;c000 0 2", "length": "10"} for i in range(40)]
    write_charades_csv(folder / "Charades_v1_train.csv", rows)
    test_rows = [{"id": f"T{i:03d}", "actions": f"c00{i % 4} 1.0 4.0", "length": "10"} for i in range(8)]
    write_charades_csv(folder / "Charades_v1_test.csv", test_rows)
    return folder


def build(folder: Path, out: Path, *extra: str):
    return run("build", "charadeslt", "--annotations", folder, "--out", out, "--imbalance", "2", *extra)


def test_build_prints_summary_and_writes_folder(good, tmp_path):
    result = build(good, tmp_path / "s")
    assert result.exit_code == 0, result.output
    assert "videos: train" in result.output and "imbalance: requested 2" in result.output
    assert (tmp_path / "s" / "manifest.json").is_file()
    again = build(good, tmp_path / "s")
    assert_clean_error(again, "already exists", "--force")
    assert build(good, tmp_path / "s", "--force").exit_code == 0
    verify = run("verify", tmp_path / "s")
    assert verify.exit_code == 0 and "checksums, row counts and content hashes OK" in verify.output


def test_missing_annotation_file(good, tmp_path):
    (good / "Charades_v1_train.csv").unlink()
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_train.csv", "not found", "prior.allenai.org")
    assert not (tmp_path / "s").exists()


def test_missing_annotation_folder(tmp_path):
    assert_clean_error(build(tmp_path / "nowhere", tmp_path / "s"), "nowhere", "--annotations")


def test_malformed_row_names_file_and_line(good, tmp_path):
    path = good / "Charades_v1_train.csv"
    lines = path.read_text().splitlines()
    lines[5] = "V004,,,,,,,,,c001 1.0,10"
    path.write_text("\r\n".join(lines) + "\r\n")
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_train.csv:6:", "'c001 1.0'", "cNNN start end")


def test_bad_number_names_line(good, tmp_path):
    path = good / "Charades_v1_test.csv"
    lines = path.read_text().splitlines()
    lines[3] = "T002,,,,,,,,,c001 1.0 x,10"
    path.write_text("\r\n".join(lines) + "\r\n")
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_test.csv:4:", "non-negative seconds")


def test_bad_length(good, tmp_path):
    path = good / "Charades_v1_train.csv"
    path.write_text(path.read_text().replace("c000 0 2,10\n", "c000 0 2,abc\n", 1))
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_train.csv:2:", "field 'length'")


def test_unknown_class(good, tmp_path):
    path = good / "Charades_v1_train.csv"
    path.write_text(path.read_text().replace("c001 1.0 4.0", "c777 1.0 4.0", 1))
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_train.csv:3:", "unknown class 'c777'")


def test_wrong_header(good, tmp_path):
    path = good / "Charades_v1_train.csv"
    path.write_text(path.read_text().replace("actions", "activities", 1))
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_train.csv", "lacks column(s) actions")


def test_duplicate_video_id(good, tmp_path):
    path = good / "Charades_v1_train.csv"
    path.write_text(path.read_text().replace("V007,", "V003,", 1))
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_train.csv:9:", "'V003' appears twice",
                       "line 5")


def test_empty_and_unreadable_files(good, tmp_path):
    (good / "Charades_v1_test.csv").write_text("")
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_test.csv", "empty")
    (good / "Charades_v1_test.csv").write_bytes(b"\xff\xfe\x00garbage\x00")
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_test.csv", "UTF-8")


def test_bad_classes_file(good, tmp_path):
    (good / "Charades_v1_classes.txt").write_text("c000 First\nc002 Skipped one\n")
    assert_clean_error(build(good, tmp_path / "s"), "Charades_v1_classes.txt:2:", "out of order")


def test_imbalance_below_one(good, tmp_path):
    assert_clean_error(run("build", "charadeslt", "--annotations", good, "--out", tmp_path / "s", "--imbalance",
                           "0.5"), "--imbalance 0.5", ">= 1")


def test_profile_leaving_a_class_without_video(good, tmp_path):
    assert_clean_error(run("build", "charadeslt", "--annotations", good, "--out", tmp_path / "s", "--imbalance",
                           "1000"), "lower --imbalance")
    assert not (tmp_path / "s").exists()


def test_class_without_test_positive(good, tmp_path):
    path = good / "Charades_v1_test.csv"
    path.write_text(path.read_text().replace("c003 1.0 4.0", "c002 1.0 4.0"))
    assert_clean_error(build(good, tmp_path / "s"), "class c003 has no positive video in the test file")


def test_videolt_bad_label(tmp_path):
    folder = tmp_path / "vlt"
    folder.mkdir()
    (folder / "count-labels-train.lst").write_text("A 0 2.0\nB 1 1.0\n")
    (folder / "train.lst").write_text("x1 0\nx2 0,1\n")
    (folder / "validate.lst").write_text("y1 1\n")
    (folder / "test.lst").write_text("z1 0\nz2 7\n")
    assert_clean_error(run("build", "videolt", "--annotations", folder, "--out", tmp_path / "s"),
                       "test.lst:2:", "label '7'")
    (folder / "test.lst").write_text("z1 0\n")
    (folder / "count-labels-train.lst").write_text("A 0 3.0\nB 1 1.0\n")
    assert_clean_error(run("build", "videolt", "--annotations", folder, "--out", tmp_path / "s"),
                       "count-labels-train.lst", "class 0 has 3 train videos listed but train.lst has 2")


def test_verify_tampered_split_via_real_process(good, tmp_path):
    assert build(good, tmp_path / "s").exit_code == 0
    (tmp_path / "s" / "train.parquet").write_bytes(b"not parquet")
    process = subprocess.run([sys.executable, "-m", "meid_bench", "verify", str(tmp_path / "s")],
                             capture_output=True, text=True)
    assert process.returncode == 1  # a checksum mismatch; 2 is for malformed input
    assert process.stderr.strip().startswith("meid-bench: error: ") and "Traceback" not in process.stderr
    assert "train.parquet: sha256 does not match" in process.stderr


def test_demo_runs_and_refuses_to_overwrite(tmp_path):
    result = run("demo", "--out", tmp_path / "demo")
    assert result.exit_code == 0, result.output
    assert "charadeslt (protocol v1)" in result.output
    assert (tmp_path / "demo" / "report" / "index.html").is_file()
    assert (tmp_path / "demo" / "runs" / "meid" / "metrics.json").is_file()
    assert "report written" in result.output
    assert_clean_error(run("demo", "--out", tmp_path / "demo"), "earlier demo", "--force")


def test_real_data_tests_honour_meid_bench_data(tmp_path, monkeypatch):
    # The tests on the licensed annotation files look where `meid-bench build` looks: $MEID_BENCH_DATA first.
    import conftest

    (tmp_path / "charades").mkdir()
    monkeypatch.setenv("MEID_BENCH_DATA", str(tmp_path))
    assert conftest.real_data("charades") == tmp_path / "charades"
    with pytest.raises(pytest.skip.Exception, match="set MEID_BENCH_DATA to the folder holding videolt/"):
        conftest.real_data("videolt")
    monkeypatch.delenv("MEID_BENCH_DATA")
    assert conftest.data_roots()[0] == conftest.REPO / "data"
