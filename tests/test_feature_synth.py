"""`features synth`: deterministic, marked simulated, reproduces frame-level imbalance, learnable but long-tailed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from click.testing import CliRunner

from meid_bench import MeidBenchError, load_split
from meid_bench.build.features import FeatureStore, SynthConfig, default_feature_path, synthesize_features
from meid_bench.build.features.probe import average_precision, linear_probe
from meid_bench.build.features.synth import class_frame_counts
from meid_bench.cli import main
from test_feature_store import make_split

SMALL = SynthConfig(dim=16, fps=2.0)


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return load_split(make_split(tmp_path_factory.mktemp("split") / "split", sizes=(30, 6, 8)))


@pytest.mark.determinism
def test_deterministic_and_seeded(tmp_path, split):
    a = synthesize_features(split, tmp_path / "a.h5", SMALL)
    b = synthesize_features(split, tmp_path / "b.h5", SMALL)
    c = synthesize_features(split, tmp_path / "c.h5", SynthConfig(dim=16, fps=2.0, seed=1))
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b, c)]
    assert digest[0] == digest[1] and digest[0] != digest[2]


def test_marked_simulated_and_sized_by_duration(tmp_path, split):
    store = FeatureStore(synthesize_features(split, tmp_path / "f.h5", SMALL))
    store.check_split(split)
    assert store.simulated and "SIMULATED" in store.attrs["generator"] and store.fps == 2.0
    assert '"noise"' in store.attrs["params"]
    for video in split.train.itertuples():
        assert store.num_frames(video.video_id) == max(1, round(video.duration * 2.0))


def test_frame_counts_follow_annotated_seconds(tmp_path, split):
    store = FeatureStore(synthesize_features(split, tmp_path / "f.h5", SynthConfig(dim=8, fps=8.0),
                                             frame_labels=True))
    counts = class_frame_counts(store, split.train["video_id"])
    expected = split.classes["train_seconds"].to_numpy() * 8.0
    # Each video's frame grid may gain or lose a frame at each segment edge: allow that much slack.
    edges = np.array([sum(2 * sum(np.asarray(c) == k) for c in split.train["segment_classes"])
                      for k in range(split.num_classes)])
    assert np.all(np.abs(counts - expected) <= edges + 1)
    assert np.corrcoef(counts, expected)[0, 1] > 0.999


def test_frames_carry_their_classes(tmp_path, split):
    # With noise and context off, an active frame equals the sum of its classes' looks: frames of a video with the
    # same active classes are identical, and background frames equal the background prototype.
    config = SynthConfig(dim=16, fps=4.0, noise=0.0, context_scale=0.0)
    store = FeatureStore(synthesize_features(split, tmp_path / "f.h5", config, frame_labels=True))
    from meid_bench.build.features.synth import background_prototype

    background = background_prototype(config).astype(np.float16)
    for video_id in split.train["video_id"][:10]:
        frames, labels = store.read(video_id), store.read_frame_labels(video_id)
        idle = labels.sum(axis=1) == 0
        assert np.array_equal(frames[idle], np.broadcast_to(background, frames[idle].shape))
        for pattern in np.unique(labels, axis=0):
            same = (labels == pattern).all(axis=1)
            assert (frames[same] == frames[same][0]).all()


def test_linear_probe_head_learnable_tail_harder(tmp_path):
    split = load_split(make_split(tmp_path / "split", num_classes=8, sizes=(400, 20, 300), seed=3,
                                  tail_share=0.06))
    store = FeatureStore(synthesize_features(split, tmp_path / "f.h5", SynthConfig(dim=32, fps=1.0)))
    result = linear_probe(split, store)
    # Head: far above chance (about 0.78 against 0.35 here). Tail: far below head (about 0.36), as few videos
    # show each tail class's own variation.
    assert result["mAP_head"] > 2 * result["chance_head"] and result["mAP_head"] - result["chance_head"] > 0.3
    assert result["mAP_tail"] < result["mAP_head"] - 0.25
    assert result["mAP_tail"] > result["chance_tail"]


def test_average_precision_reference_values():
    assert average_precision(np.array([0.9, 0.8, 0.7]), np.array([1, 0, 1])) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(average_precision(np.array([0.1, 0.2]), np.array([0, 0])))


def test_bad_knobs_and_cli(tmp_path, split):
    with pytest.raises(MeidBenchError, match="--class-overlap"):
        synthesize_features(split, tmp_path / "x.h5", SynthConfig(class_overlap=1.0))
    with pytest.raises(MeidBenchError, match="--fps"):
        synthesize_features(split, tmp_path / "x.h5", SynthConfig(fps=0.0))
    assert not (tmp_path / "x.h5").exists()
    runner = CliRunner()
    copy = tmp_path / "copy"
    make_split(copy, sizes=(5, 2, 2))
    result = runner.invoke(main, ["features", "synth", "--split", str(copy), "--dim", "8", "--fps", "1"])
    assert result.exit_code == 0, result.output
    assert FeatureStore(default_feature_path(copy)).simulated
    again = runner.invoke(main, ["features", "synth", "--split", str(copy)])
    assert again.exit_code == 2 and "already exists" in again.output
    bad = runner.invoke(main, ["features", "synth", "--split", str(copy), "--noise", "-1", "--force"])
    assert bad.exit_code == 2 and "--noise" in bad.output and "Traceback" not in bad.output
    probe = runner.invoke(main, ["features", "probe", "--split", str(copy)])
    assert probe.exit_code == 0 and "tail" in probe.output
