"""The temporal-order control (`features probe --mirrored-pairs`): on simulator v2 only an order-aware probe tells a
mirrored pair apart; on v1 order adds nothing on frames of one class alone."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from meid_bench import MeidBenchError, load_split
from meid_bench.build.features import FeatureStore, SynthConfig, synthesize_features
from meid_bench.build.features.probe import mirrored_pair_probe, mirrored_pairs_of, whole_video_pair_probe
from meid_bench.build.split_io import CLASS_SCHEMA, VIDEO_SCHEMA, write_split
from meid_bench.build.synthetic import write_synthetic_charades_mapping
from meid_bench.cli import main


def _pair_split(path, videos_per_class: int = 60):
    """Videos of class 0 or 1 (opening / closing a door in the synthetic mapping), one segment each at a random
    place; train and test alike."""
    rng = np.random.default_rng(0)
    num_classes = 6

    def table(prefix):
        rows = {name: [] for name in VIDEO_SCHEMA.names}
        for i in range(2 * videos_per_class):
            cls, start = i % 2, float(rng.uniform(0, 10))
            for name, value in (("video_id", f"{prefix}{i}"), ("labels", [cls]), ("duration", 24.0),
                                ("segment_classes", [cls]), ("segment_starts", [start]),
                                ("segment_ends", [start + float(rng.uniform(6, 12))])):
                rows[name].append(value)
        return pa.table(rows, schema=VIDEO_SCHEMA)

    counts = np.array([videos_per_class] * 2 + [0] * (num_classes - 2))
    tables = {"train": table("T"), "val": table("V"), "test": table("E")}
    tables["classes"] = pa.table({
        "class_id": np.arange(num_classes, dtype=np.int32), "class_key": [f"c{k:03d}" for k in range(num_classes)],
        "class_name": [f"class {k}" for k in range(num_classes)], "original_train_count": counts,
        "target": counts.astype(float), "train_count": counts, "val_count": counts, "test_count": counts,
        "train_seconds": counts * 9.0, "group": ["head"] * 3 + ["tail"] * 3}, schema=CLASS_SCHEMA)
    return write_split(path, tables, {"format": "meid-bench-split", "format_version": 1, "benchmark": "toy"})


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("order")
    mapping = write_synthetic_charades_mapping(root / "annotations", num_classes=6)
    split = load_split(_pair_split(root / "split"))
    knobs = dict(dim=16, fps=2.0, dtype="float32")
    v1 = synthesize_features(split, root / "v1.h5", SynthConfig(**knobs), frame_labels=True)
    v2 = synthesize_features(split, root / "v2.h5", SynthConfig(version=2, **knobs), annotations=mapping,
                             frame_labels=True)
    return split, FeatureStore(v1), FeatureStore(v2), mapping


def test_order_aware_probe_separates_mirrored_pairs_on_v2_only(stores):
    split, v1, v2, mapping = stores
    keys = [str(k) for k in split.classes["class_key"]]
    assert mirrored_pairs_of(v2, keys)[0] == ("c000", "c001")  # recorded by the v2 store (others have no video)
    on_v2 = mirrored_pair_probe(split, v2, mirrored_pairs_of(v2, keys))
    assert on_v2["pairs"] == 1 and on_v2["chance"] == pytest.approx(0.5)
    # The two classes are the same frames in opposite order: order-blind near chance, order-aware far above it.
    assert on_v2["order_blind"] < 0.8 and on_v2["order_aware"] > 0.95
    on_v1 = mirrored_pair_probe(split, v1, mirrored_pairs_of(v1, keys, mapping), alone=True)
    # v1's classes differ in appearance, and playing a segment backwards changes nothing.
    assert on_v1["order_blind"] > 0.9 and abs(on_v1["order_gain"]) < 0.05


def test_mirrored_pair_probe_cli_and_its_errors(stores, tmp_path):
    split, v1, v2, mapping = stores
    runner = CliRunner()
    result = runner.invoke(main, ["features", "probe", "--split", str(split.path), "--features", str(v2.path),
                                  "--mirrored-pairs"])
    assert result.exit_code == 0, result.output
    assert "order-aware" in result.output and "order gain" in result.output and "nan" not in result.output
    bare = runner.invoke(main, ["features", "probe", "--split", str(split.path), "--features", str(v1.path),
                                "--mirrored-pairs"])
    assert bare.exit_code == 2 and "--annotations" in bare.output and "Traceback" not in bare.output
    misuse = runner.invoke(main, ["features", "probe", "--split", str(split.path), "--features", str(v1.path),
                                  "--alone"])
    assert misuse.exit_code == 2 and "--mirrored-pairs" in misuse.output
    plain = synthesize_features(split, tmp_path / "plain.h5", SynthConfig(dim=8, fps=2.0))
    with pytest.raises(MeidBenchError, match="per-frame labels"):
        mirrored_pair_probe(split, FeatureStore(plain), [("c000", "c001")], alone=True)


def test_whole_video_probe_sees_order_only_through_the_halves_on_v2(stores):
    split, v1, v2, mapping = stores
    keys = [str(k) for k in split.classes["class_key"]]
    on_v2 = whole_video_pair_probe(split, v2, mirrored_pairs_of(v2, keys), num_frames=20)
    assert on_v2["pairs"] == 1 and on_v2["chance"] == pytest.approx(0.5)
    # No segment boundaries: the mean and |halves| stay near chance, the signed halves rise above them (the segment
    # fills part of the video, so less than within the segment's own bounds).
    assert on_v2["mean_only"] < 0.6 and on_v2["order_blind"] < 0.6 and on_v2["order_aware"] > 0.65
    assert on_v2["order_gain"] > 0.15
    on_v1 = whole_video_pair_probe(split, v1, mirrored_pairs_of(v1, keys, mapping), num_frames=20)
    # v1's two classes differ in appearance: the mean tells them apart, and order adds nothing.
    assert on_v1["mean_only"] > on_v2["mean_only"] + 0.15 and abs(on_v1["order_gain"]) < 0.05


def test_whole_video_probe_cli(stores):
    split, v1, v2, mapping = stores
    runner = CliRunner()
    result = runner.invoke(main, ["features", "probe", "--split", str(split.path), "--features", str(v2.path),
                                  "--mirrored-pairs", "--whole-video"])
    assert result.exit_code == 0, result.output
    assert "whole videos" in result.output and "mean-only" in result.output and "order-aware" in result.output
    misuse = runner.invoke(main, ["features", "probe", "--split", str(split.path), "--features", str(v2.path),
                                  "--whole-video"])
    assert misuse.exit_code == 2 and "--mirrored-pairs" in misuse.output
    both = runner.invoke(main, ["features", "probe", "--split", str(split.path), "--features", str(v2.path),
                                "--mirrored-pairs", "--whole-video", "--alone"])
    assert both.exit_code == 2 and "exclude each other" in both.output
