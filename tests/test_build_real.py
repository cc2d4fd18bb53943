"""Builds on the real annotation files (../shared/data): the shipped references and protocol v1's fidelity."""

from __future__ import annotations

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
