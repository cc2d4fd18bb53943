"""Builds on the real annotation files (../shared/data): the shipped references and protocol v1's fidelity."""

from __future__ import annotations

import re
import shutil

import pytest

from meid_bench.build.protocol import BuildOptions, build_and_write, build_benchmark
from meid_bench.build.reference import compare_to_reference
from meid_bench.build.split_io import load_split


def test_default_charadeslt_rebuild_matches_shipped_reference(charades_real, tmp_path):
    split = load_split(build_and_write(BuildOptions("charadeslt"), charades_real, tmp_path / "charadeslt"))
    assert compare_to_reference(split) == ("match", [])
    assert split.manifest["quirks"]["train"]["videos_without_actions"] == 174
    assert split.manifest["selection"]["test_videos_without_labels_removed"] == 49
    assert split.manifest["fidelity"]["bounds_met"]


def test_reference_detects_a_different_split(charades_real, tmp_path):
    split = load_split(build_and_write(BuildOptions("charadeslt", seed=1), charades_real, tmp_path / "s1"))
    status, differences = compare_to_reference(split)
    assert status == "not-applicable"  # another seed is another benchmark, not a failed rebuild
    manifest = dict(split.manifest, parameters=dict(split.manifest["parameters"], seed=0))
    tampered = type(split)(**{**split.__dict__, "manifest": manifest})
    status, differences = compare_to_reference(tampered)
    assert status == "differ" and any("train" in d for d in differences)


@pytest.mark.parametrize("imbalance", [10, 50, 100, 200])
def test_charadeslt_fidelity_bounds(charades_real, imbalance):
    built = build_benchmark(BuildOptions("charadeslt", imbalance=float(imbalance)), charades_real)
    fidelity = built.manifest["fidelity"]
    assert fidelity["bounds_met"], fidelity
    assert abs(fidelity["achieved_imbalance"] / imbalance - 1) <= 0.10
    assert fidelity["abs_log_ratio_median"] <= 0.05 and fidelity["abs_log_ratio_p90"] <= 0.20


def test_videolt_build_keeps_splits_and_reference_groups(videolt_real, tmp_path):
    split = load_split(build_and_write(BuildOptions("videolt"), videolt_real, tmp_path / "videolt"))
    assert split.manifest["rows"] == {"train": 179334, "val": 25619, "test": 51239, "classes": 1004}
    assert split.manifest["groups"]["sizes"] == {"head": 47, "medium": 617, "tail": 340}
    classes = split.classes
    assert (classes["train_count"] == classes["original_train_count"]).all()
    assert compare_to_reference(split) == ("match", [])


def _cli(*args):
    from click.testing import CliRunner

    from meid_bench.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_build_and_verify_against_the_shipped_reference(charades_real, tmp_path):
    """The default build matches with --expect-reference; a build from edited annotations is a loud warning, an
    error (exit 1, nothing written) with --expect-reference, and fails verify (exit 1)."""
    good = _cli("build", "charadeslt", "--annotations", charades_real, "--out", tmp_path / "good",
                "--expect-reference")
    assert good.exit_code == 0 and "shipped reference: MATCH" in good.output, good.output
    # It names the reference file where it is installed, not a folder of the source checkout only.
    from meid_bench.build.reference import reference_path

    assert f"as {reference_path('charadeslt')})" in good.output and "splits/expected" not in good.output.replace(
        str(reference_path("charadeslt")), "")
    assert _cli("verify", tmp_path / "good").exit_code == 0

    edited = tmp_path / "edited"
    shutil.copytree(charades_real, edited)
    csv = edited / "Charades_v1_test.csv"
    text = csv.read_text()
    first = re.search(r"c(\d{3}) ", text)  # the first action of the first test video, moved to another class
    csv.write_text(text[:first.start()] + f"c{(int(first.group(1)) + 1) % 157:03d} " + text[first.end():])

    refused = _cli("build", "charadeslt", "--annotations", edited, "--out", tmp_path / "e", "--expect-reference")
    assert refused.exit_code == 1 and "not written: the build differs from the shipped reference" in refused.stderr
    assert "table test: same 1814 rows, other content" in refused.stderr and not (tmp_path / "e").exists()
    warned = _cli("build", "charadeslt", "--annotations", edited, "--out", tmp_path / "e")
    assert warned.exit_code == 0
    assert "meid-bench: warning: shipped reference: DIFFERENT - this default-protocol charadeslt split is NOT the " \
           "published benchmark" in warned.stderr
    verified = _cli("verify", tmp_path / "e")
    assert verified.exit_code == 1 and "shipped reference: DIFFERENT" in verified.stderr
    other = _cli("build", "charadeslt", "--annotations", charades_real, "--out", tmp_path / "o", "--seed", "1",
                 "--expect-reference")
    assert other.exit_code == 2 and "define another benchmark" in other.stderr and not (tmp_path / "o").exists()


def test_verify_recomputes_hashes_so_a_forged_manifest_fails(charades_real, tmp_path):
    """A label changed, and the manifest's sha256, rows and content hash all updated to match: the manifest agrees
    with the tables, but the recomputed hash does not match the shipped reference."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hostile_support import rewrite_table

    split_dir = build_and_write(BuildOptions("charadeslt"), charades_real, tmp_path / "s")

    def edit(table):
        labels = table.column("labels").to_pylist()
        labels[0] = sorted(set(labels[0]) ^ {3})
        return table.set_column(table.column_names.index("labels"), "labels", pa.array(labels, pa.list_(pa.int32())))

    rewrite_table(split_dir, "test", edit)
    assert pq.read_table(split_dir / "test.parquet").num_rows == 1814
    result = _cli("verify", split_dir)
    assert result.exit_code == 1
    assert "shipped reference: DIFFERENT - table test: same 1814 rows, other content" in result.stderr
