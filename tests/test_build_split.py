"""Building, writing and loading split folders: determinism, atomicity, verification, protocol invariants."""

from __future__ import annotations

import json

import numpy as np
import pytest

from meid_bench.build.protocol import BuildOptions, build_and_write, build_benchmark
from meid_bench.build.split_io import load_split
from meid_bench.errors import MeidBenchError

OPTIONS = BuildOptions("charadeslt", imbalance=10.0, val_per_class=5)


def test_two_builds_are_byte_identical(synthetic_charades, tmp_path):
    first = build_and_write(OPTIONS, synthetic_charades, tmp_path / "a")
    second = build_and_write(OPTIONS, synthetic_charades, tmp_path / "b")
    for name in ("train.parquet", "val.parquet", "test.parquet", "classes.parquet", "manifest.json"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_split_invariants(synthetic_charades, tmp_path):
    split = load_split(build_and_write(OPTIONS, synthetic_charades, tmp_path / "s"))
    train, val, test = (set(split.table(n)["video_id"]) for n in ("train", "val", "test"))
    assert not (train & val) and not (train & test) and not (val & test)
    assert all(v.startswith("TR") for v in train | val) and all(v.startswith("TE") for v in test)
    # Test: the official test set minus its videos without labels; every class has a positive.
    assert len(test) == 120 - split.manifest["selection"]["test_videos_without_labels_removed"]
    assert (split.classes["test_count"] > 0).all()
    assert all(len(labels) > 0 for labels in split.test["labels"])
    # Labels are never removed from a kept video: train labels equal the labels of its segments.
    for labels, classes in zip(split.train["labels"], split.train["segment_classes"]):
        assert sorted(set(classes.tolist())) == labels.tolist()
    # Stored counts and groups agree with the tables and the recorded thresholds.
    counts = split.multi_hot("train").sum(axis=0)
    assert np.array_equal(counts, split.classes["train_count"].to_numpy())
    head, tail = split.manifest["groups"]["head_above"], split.manifest["groups"]["tail_below"]
    expected = np.where(counts > head, "head", np.where(counts < tail, "tail", "medium"))
    assert split.classes["group"].tolist() == expected.tolist()
    assert sum(len(v) for v in split.groups.values()) == split.num_classes
    fidelity = split.manifest["fidelity"]
    assert fidelity["bounds_met"] and fidelity["achieved_imbalance"] == pytest.approx(10.0, rel=0.1)
    assert (split.classes["train_seconds"] > 0).all()


def test_validation_reaches_per_class_goal_where_pool_allows(synthetic_charades):
    built = build_benchmark(BuildOptions("charadeslt", imbalance=10.0, val_per_class=4), synthetic_charades)
    classes = built.tables["classes"].to_pandas()
    pool = classes["original_train_count"] - classes["train_count"]
    assert (classes["val_count"] >= np.minimum(4, pool)).all()


def test_existing_folder_is_kept_without_force(synthetic_charades, tmp_path):
    out = tmp_path / "s"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(MeidBenchError, match="already exists; pass --force"):
        build_and_write(OPTIONS, synthetic_charades, out)
    assert (out / "mine.txt").read_text() == "user data"
    # --force replaces only a split folder (docs/formats.md, "Outputs"): this one is not, so it is kept too.
    with pytest.raises(MeidBenchError, match="is not a split folder"):
        build_and_write(OPTIONS, synthetic_charades, out, force=True)
    assert (out / "mine.txt").read_text() == "user data" and not (out / "manifest.json").exists()


def test_failed_build_leaves_nothing(synthetic_charades, tmp_path):
    (synthetic_charades / "Charades_v1_test.csv").write_text("id,actions,length\r\nX,c999 1 2,10\r\n")
    with pytest.raises(MeidBenchError):
        build_and_write(OPTIONS, synthetic_charades, tmp_path / "out" / "s")
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []


def test_load_split_detects_tampering(synthetic_charades, tmp_path):
    path = build_and_write(OPTIONS, synthetic_charades, tmp_path / "s")
    data = bytearray((path / "val.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (path / "val.parquet").write_bytes(bytes(data))
    with pytest.raises(MeidBenchError, match=r"val.parquet: sha256 does not match"):
        load_split(path)


def test_load_split_detects_missing_file_and_wrong_rows(synthetic_charades, tmp_path):
    path = build_and_write(OPTIONS, synthetic_charades, tmp_path / "s")
    manifest = json.loads((path / "manifest.json").read_text())
    original = (path / "manifest.json").read_text()
    manifest["files"]["test.parquet"]["rows"] += 1
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(MeidBenchError, match=r"test.parquet: \d+ rows, manifest.json says"):
        load_split(path, verify=False)
    (path / "manifest.json").write_text(original)
    (path / "classes.parquet").unlink()
    with pytest.raises(MeidBenchError, match="classes.parquet: missing"):
        load_split(path)
    (path / "manifest.json").unlink()
    with pytest.raises(MeidBenchError, match="manifest.json: missing"):
        load_split(path)


def test_profile_that_leaves_a_class_without_video(synthetic_charades):
    with pytest.raises(MeidBenchError, match=r"leaves class c\d+ a target of .* lower --imbalance"):
        build_benchmark(BuildOptions("charadeslt", imbalance=100000.0), synthetic_charades)


def test_fixed_target_scale_is_recorded(synthetic_charades):
    built = build_benchmark(BuildOptions("charadeslt", imbalance=10.0, target_scale=0.8), synthetic_charades)
    assert built.manifest["fidelity"]["target_scale"] == 0.8
    assert built.manifest["fidelity"]["scales_tried"] == [0.8]


@pytest.mark.parametrize("view", ["ego", "exo", "all"])
def test_charadesegolt_build_per_view(tmp_path, view):
    from meid_bench.build.synthetic import write_synthetic_charades_ego

    annotations = write_synthetic_charades_ego(tmp_path / "ego", num_classes=10, train_scripts=200,
                                               test_scripts=80)
    split = load_split(build_and_write(BuildOptions("charadesegolt", imbalance=5.0, view=view, val_per_class=4),
                                       annotations, tmp_path / "s"))
    assert split.manifest["parameters"]["view"] == view
    ids = {name: set(split.table(name)["video_id"]) for name in ("train", "val", "test")}
    every = set().union(*ids.values())
    if view == "ego":
        assert all(v.endswith("EGO") for v in every)
    elif view == "exo":
        assert not any(v.endswith("EGO") for v in every)
    else:
        assert any(v.endswith("EGO") for v in every) and not all(v.endswith("EGO") for v in every)
        # The other view of a kept training video never lands in validation.
        partners = {v[:-3] if v.endswith("EGO") else v + "EGO" for v in ids["train"]}
        assert not (partners & ids["val"])
    assert set(split.train.columns) >= {"egocentric", "paired_video", "charades_video"}
    assert split.manifest["fidelity"]["bounds_met"]
