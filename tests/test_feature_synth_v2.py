"""Simulator versions: v1 byte-for-byte as before; v2's mechanisms (composed classes, mirrored verb signatures,
count-invariant norms, AR(1) noise, per-class difficulty) and its inputs (the Charades mapping files)."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from meid_bench import MeidBenchError, load_split
from meid_bench.build.features import FeatureStore, SynthConfig, synthesize_features
from meid_bench.build.features.synth import _rng
from meid_bench.build.features.synth_v2 import ar1_noise, build_class_model, read_class_structure
from meid_bench.build.split_io import CLASS_SCHEMA, VIDEO_SCHEMA, write_split
from meid_bench.build.synthetic import write_synthetic_charades_mapping
from meid_bench.cli import main
from test_feature_store import make_split


def content_digest(path) -> str:
    """sha256 over every video's id, frames and frame labels, and the recorded knobs (independent of HDF5 layout)."""
    store = FeatureStore(path)
    digest = hashlib.sha256()
    for video_id in store.video_ids:
        digest.update(video_id.encode())
        digest.update(np.ascontiguousarray(store.read(video_id)).tobytes())
        if store.has_frame_labels:
            digest.update(store.read_frame_labels(video_id).tobytes())
    digest.update(store.attrs["params"].encode())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return load_split(make_split(tmp_path_factory.mktemp("split") / "split", sizes=(30, 6, 8)))


@pytest.fixture(scope="module")
def mapping(tmp_path_factory):
    return write_synthetic_charades_mapping(tmp_path_factory.mktemp("annotations"), num_classes=6)


@pytest.mark.determinism
def test_v1_stores_are_byte_for_byte_those_of_the_first_simulator(tmp_path, split):
    # Digests of stores written by the simulator before v2 existed (same split, knobs and seeds). They may stay
    # pinned: v1 is numpy random draws and elementwise arithmetic only (each frame's class looks are added in
    # class order, no BLAS product: test_v1_frames_add_their_class_looks_without_blas), the same on every CPU.
    first = synthesize_features(split, tmp_path / "a.h5", SynthConfig(dim=16, fps=2.0), frame_labels=True)
    assert content_digest(first) == "b763685901db9b91f88a927d6fcd17e7975d667cecaf5b7428e3bc2441662dcb"
    second = synthesize_features(split, tmp_path / "b.h5", SynthConfig(dim=12, fps=3.0, seed=5, dtype="float32"))
    assert content_digest(second) == "e2c8e0bfce2a80a1851385ea346001f21dc8ec6f11e1630c6bedb3b09948964c"
    assert "version" not in json.loads(FeatureStore(second).attrs["params"])  # a v1 store records v1's knobs


class _NoProducts(np.ndarray):
    """An array that refuses matrix products (the BLAS calls), through any route: operator, ufunc or function."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.matmul:
            raise AssertionError("a BLAS product")
        plain = [x.view(np.ndarray) if isinstance(x, _NoProducts) else x for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(x.view(np.ndarray) if isinstance(x, _NoProducts) else x for x in kwargs["out"])
        return getattr(ufunc, method)(*plain, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        if func in (np.dot, np.matmul, np.inner, np.tensordot, np.einsum, np.vdot):
            raise AssertionError("a BLAS product")
        return super().__array_function__(func, types, args, kwargs)


def test_v1_frames_add_their_class_looks_without_blas():
    # A BLAS product orders (and fuses) its additions by instruction set; v1's frames must not come from one.
    from meid_bench.build.features import synth

    rng = np.random.default_rng(0)
    active = rng.random((9, 5)) < 0.5
    looks = rng.standard_normal((5, 4))
    expected = np.zeros((9, 4))
    for column in range(5):
        expected[active[:, column]] += looks[column]
    with pytest.raises(AssertionError, match="BLAS"):
        active.view(_NoProducts).astype(np.float64) @ looks  # the guard works
    got = synth.active_sum(active.view(_NoProducts), looks.view(_NoProducts), 4)
    assert np.array_equal(np.asarray(got), expected)
    assert np.array_equal(synth.active_sum(active[:, :0], looks[:0], 4), np.zeros((9, 4)))


@pytest.mark.determinism
def test_v2_records_its_version_knobs_and_inputs_and_is_deterministic(tmp_path, split, mapping):
    config = SynthConfig(version=2, dim=16, fps=2.0)
    a = synthesize_features(split, tmp_path / "a.h5", config, annotations=mapping)
    b = synthesize_features(split, tmp_path / "b.h5", config, annotations=mapping)
    assert content_digest(a) == content_digest(b)
    params = json.loads(FeatureStore(a).attrs["params"])
    assert params["version"] == 2 and params["class_model"] == "charades-mapping"
    assert params["temporal_scale"] == 1.5 and params["noise_time_constant"] == 2.0
    assert set(params["annotation_checksums"]) == {"Charades_v1_mapping.txt", "Charades_v1_verbclasses.txt",
                                                   "Charades_v1_objectclasses.txt"}
    # Classes 0/1 (door: open/close) and 2/3 (door: take/put) are mirrored pairs; 4 and 5 (cup: open/close) too.
    assert params["mirrored_pairs"] == [["c000", "c001"], ["c002", "c003"], ["c004", "c005"]]
    v1 = synthesize_features(split, tmp_path / "v1.h5", SynthConfig(dim=16, fps=2.0))
    assert content_digest(v1) != content_digest(a)


def test_v2_falls_back_to_v1_prototypes_without_a_mapping_except_on_charades_benchmarks(tmp_path, split):
    path = synthesize_features(split, tmp_path / "f.h5", SynthConfig(version=2, dim=8, fps=1.0))
    params = json.loads(FeatureStore(path).attrs["params"])
    assert params["class_model"] == "v1-prototypes" and params["mirrored_pairs"] == []
    charades = load_split(_two_video_split(tmp_path / "charades", benchmark="charadeslt"))
    with pytest.raises(MeidBenchError, match="--annotations DIR"):
        synthesize_features(charades, tmp_path / "g.h5", SynthConfig(version=2, dim=8, fps=1.0))
    assert not (tmp_path / "g.h5").exists()


def _two_video_split(path, benchmark="toy", classes=(0, 1), start=2.0, end=10.0, duration=12.0):
    """Two training videos (and one each for val and test) showing one class each over the same segment."""
    rows = {name: [] for name in VIDEO_SCHEMA.names}
    for index, cls in enumerate(classes):
        for name, value in (("video_id", f"V{index}"), ("labels", [cls]), ("duration", duration),
                            ("segment_classes", [cls]), ("segment_starts", [start]), ("segment_ends", [end])):
            rows[name].append(value)

    def table(ids):
        picked = [rows["video_id"].index(i) for i in ids]
        return pa.table({k: [v[j] for j in picked] for k, v in rows.items()}, schema=VIDEO_SCHEMA)

    num_classes = 6
    counts = np.array([1 if k in classes else 0 for k in range(num_classes)])
    tables = {"train": table(["V0", "V1"]), "val": table(["V0"]).set_column(0, "video_id", [["VA"]]),
              "test": table(["V1"]).set_column(0, "video_id", [["VB"]])}
    tables["classes"] = pa.table({
        "class_id": np.arange(num_classes, dtype=np.int32), "class_key": [f"c{k:03d}" for k in range(num_classes)],
        "class_name": [f"class {k}" for k in range(num_classes)], "original_train_count": counts,
        "target": counts.astype(float), "train_count": counts, "val_count": counts, "test_count": counts,
        "train_seconds": counts * (end - start), "group": ["head"] * 3 + ["tail"] * 3}, schema=CLASS_SCHEMA)
    return write_split(path, tables, {"format": "meid-bench-split", "format_version": 1, "benchmark": benchmark})


def _quiet(**knobs) -> SynthConfig:
    # No noise, context or per-video variation: frames are the class model itself.
    return SynthConfig(version=2, dim=32, fps=2.0, noise=0.0, context_scale=0.0, instance_scale=0.0,
                       dtype="float32", **knobs)


def test_mirrored_classes_show_the_same_frames_in_reverse_order(tmp_path, mapping):
    split = load_split(_two_video_split(tmp_path / "s", classes=(0, 1)))  # door: open (c000), close (c001)
    store = FeatureStore(synthesize_features(split, tmp_path / "f.h5", _quiet(), annotations=mapping,
                                             frame_labels=True))
    opening, closing = store.read("V0"), store.read("V1")
    inside = store.read_frame_labels("V0")[:, 0].astype(bool)
    assert inside.sum() >= 10
    np.testing.assert_allclose(opening[inside], closing[inside][::-1], atol=1e-5)
    # The same multiset of frames (what any order-blind pooling sees), yet not the same sequence.
    np.testing.assert_allclose(opening.mean(axis=0), closing.mean(axis=0), atol=1e-5)
    assert np.abs(opening[inside] - closing[inside]).max() > 0.5
    # Without signatures (temporal_scale 0) the two classes are the same frames: only order separates them.
    flat = FeatureStore(synthesize_features(split, tmp_path / "g.h5", _quiet(temporal_scale=0.0),
                                            annotations=mapping))
    np.testing.assert_allclose(flat.read("V0"), flat.read("V1"), atol=1e-6)


def test_classes_sharing_an_object_or_verb_share_appearance(split, mapping):
    keys = [f"c{k:03d}" for k in range(6)]
    config = SynthConfig(version=2, dim=256)
    model = build_class_model(config, keys, read_class_structure(mapping, keys), lambda s, k: _rng(0, s, k))
    cosine = model.prototypes @ model.prototypes.T  # unit prototypes (prototype_scale 1)
    # c000 (door, open) and c002 (door, take) share the door; c002 and c004 (cup, open) share nothing.
    assert cosine[0, 2] > 0.2 and abs(cosine[2, 4]) < 0.2
    assert cosine[0, 4] > 0.2  # the open/close verb pair's vector
    np.testing.assert_allclose(cosine[0, 1], 1.0, atol=1e-9)  # a mirrored pair: one static prototype


def test_frame_norm_does_not_encode_how_many_actions_are_active(tmp_path, split, mapping):
    store = FeatureStore(synthesize_features(split, tmp_path / "f.h5", _quiet(), annotations=mapping,
                                             frame_labels=True))
    assert store.dim == 32
    expected = 1.0  # prototype_scale * sqrt(1 + instance_scale^2), the norm of one class's look, for every frame
    counts, norms = [], []
    for video_id in split.train["video_id"]:
        counts.append(store.read_frame_labels(video_id).sum(axis=1))
        norms.append(np.linalg.norm(store.read(video_id), axis=1))
    counts, norms = np.concatenate(counts), np.concatenate(norms)
    assert set(np.unique(counts)) >= {0, 1, 2}
    np.testing.assert_allclose(norms, expected, rtol=1e-5)


def test_ar1_noise_has_the_stationary_scale_and_lag_one_correlation():
    noise = ar1_noise(np.random.default_rng(0), 20000, 4, scale=2.0, correlation=0.8)
    assert noise.std() == pytest.approx(2.0 / math.sqrt(4), rel=0.05)
    lag = np.mean([np.corrcoef(noise[:-1, d], noise[1:, d])[0, 1] for d in range(4)])
    assert lag == pytest.approx(0.8, abs=0.03)


def test_per_class_difficulty_follows_the_class_key_not_its_position_or_frequency(mapping):
    config = SynthConfig(version=2, dim=8, difficulty_spread=0.5)
    rng_for = lambda s, k: _rng(0, s, k)  # noqa: E731
    forward = build_class_model(config, ["c000", "c001", "c002"], None, rng_for).variation
    reverse = build_class_model(config, ["c002", "c001", "c000"], None, rng_for).variation
    np.testing.assert_allclose(forward, reverse[::-1])
    assert len(set(np.round(forward, 6))) == 3
    flat = build_class_model(SynthConfig(version=2, dim=8, difficulty_spread=0.0), ["c000", "c001"], None, rng_for)
    np.testing.assert_allclose(flat.variation, 1.5)


def test_mapping_files_are_checked(tmp_path):
    keys = ["c000", "c001"]
    with pytest.raises(MeidBenchError, match="Charades_v1_mapping.txt: not found"):
        read_class_structure(tmp_path, keys)
    folder = write_synthetic_charades_mapping(tmp_path / "a", num_classes=2)
    (folder / "Charades_v1_mapping.txt").write_text("c000 o001 v000\nc001 o001\n")
    with pytest.raises(MeidBenchError, match="line 2: expected 3 whitespace-separated fields"):
        read_class_structure(folder, keys)
    (folder / "Charades_v1_mapping.txt").write_text("c000 o001 v000\nc001 o001 v099\n")
    with pytest.raises(MeidBenchError, match="class c001: verb v099 is not in"):
        read_class_structure(folder, keys)
    with pytest.raises(MeidBenchError, match="has no entry for classes c002"):
        read_class_structure(folder, keys + ["c002"])


def test_cli_version_and_annotations(tmp_path, mapping):
    split_dir = make_split(tmp_path / "split", sizes=(5, 2, 2))
    runner = CliRunner()
    out = tmp_path / "v2.h5"
    result = runner.invoke(main, ["features", "synth", "--split", str(split_dir), "--version", "2", "--annotations",
                                  str(mapping), "--dim", "8", "--fps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "simulator v2" in result.output and json.loads(FeatureStore(out).attrs["params"])["version"] == 2
    bad = runner.invoke(main, ["features", "synth", "--split", str(split_dir), "--version", "4", "--out",
                               str(tmp_path / "x.h5")])
    assert bad.exit_code == 2 and "--version" in bad.output


def test_v3_mirrored_pairs_share_their_difficulty_and_every_other_class_keeps_v2s(mapping):
    keys = [f"c{k:03d}" for k in range(6)]
    structure = read_class_structure(mapping, keys)
    rng_for = lambda s, k: _rng(0, s, k)  # noqa: E731
    v2 = build_class_model(SynthConfig(version=2, dim=16, difficulty_spread=0.5), keys, structure, rng_for)
    v3 = build_class_model(SynthConfig(version=3, dim=16, difficulty_spread=0.5), keys, structure, rng_for)
    assert v3.mirrored_pairs == v2.mirrored_pairs == [("c000", "c001"), ("c002", "c003"), ("c004", "c005")]
    for forwards, backwards in v3.mirrored_pairs:
        a, b = keys.index(forwards), keys.index(backwards)
        assert v3.variation[a] == v3.variation[b] == v2.variation[a]  # the pair takes the forwards class's draw
        assert v2.variation[a] != v2.variation[b]  # v2: each class its own (the order-blind cue v3 removes)
    np.testing.assert_array_equal(v3.prototypes, v2.prototypes)
    np.testing.assert_array_equal(v3.directions, v2.directions)


def test_cli_writes_v3(tmp_path, mapping):
    split_dir = make_split(tmp_path / "split", sizes=(5, 2, 2))
    out = tmp_path / "v3.h5"
    result = CliRunner().invoke(main, ["features", "synth", "--split", str(split_dir), "--version", "3",
                                       "--annotations", str(mapping), "--dim", "8", "--fps", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "simulator v3" in result.output and json.loads(FeatureStore(out).attrs["params"])["version"] == 3
