"""The HDF5 feature store: layout, round trips, ragged edge cases, split checks and damaged files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pytest

from meid_bench import MeidBenchError, load_split
from meid_bench.build.features import FeatureStore, FeatureStoreWriter, default_feature_path
from meid_bench.build.features.frames import active_classes, frame_times, pack_frame_labels, unpack_frame_labels
from meid_bench.build.split_io import CLASS_SCHEMA, VIDEO_SCHEMA, write_split


def _merged_seconds(starts, ends, duration) -> float:
    spans = sorted((max(0.0, s), min(duration, e)) for s, e in zip(starts, ends) if min(duration, e) > max(0.0, s))
    total, cur_s, cur_e = 0.0, None, None
    for s, e in spans:
        if cur_e is None or s > cur_e:
            total += 0.0 if cur_e is None else cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return total + (0.0 if cur_e is None else cur_e - cur_s)


def make_split(path: Path, num_classes: int = 6, sizes: tuple[int, int, int] = (40, 8, 12), seed: int = 0,
               tail_share: float = 0.1) -> Path:
    """A small long-tailed split folder with consistent durations, segments, labels and class statistics.

    Class k appears in a video with a probability falling geometrically from about 0.5 (k = 0) to ``tail_share``
    of that; each label gets one or two segments inside the video.
    """
    rng = np.random.default_rng(seed)
    rates = 0.5 * tail_share ** (np.arange(num_classes) / max(1, num_classes - 1))
    tables, counts = {}, {}
    seconds = np.zeros(num_classes)
    for subset, size in zip(("train", "val", "test"), sizes):
        rows = {name: [] for name in VIDEO_SCHEMA.names + ["subject", "scene"]}
        for i in range(size):
            duration = float(rng.uniform(4.0, 20.0))
            labels = sorted(np.flatnonzero(rng.random(num_classes) < rates).tolist())
            classes, starts, ends = [], [], []
            for label in labels:
                for _ in range(int(rng.integers(1, 3))):
                    start = float(rng.uniform(0, duration * 0.8))
                    classes.append(label)
                    starts.append(round(start, 2))
                    ends.append(round(min(duration, start + rng.uniform(1.0, duration)), 2))
            if subset == "train":
                for label in labels:
                    sel = [j for j, c in enumerate(classes) if c == label]
                    seconds[label] += _merged_seconds([starts[j] for j in sel], [ends[j] for j in sel], duration)
            for name, value in (("video_id", f"{subset[:2].upper()}{i:04d}"), ("labels", labels),
                                ("duration", duration), ("segment_classes", classes), ("segment_starts", starts),
                                ("segment_ends", ends), ("subject", f"S{i % 5}"), ("scene", f"room{i % 3}")):
                rows[name].append(value)
        schema = VIDEO_SCHEMA.append(pa.field("subject", pa.string())).append(pa.field("scene", pa.string()))
        tables[subset] = pa.table(rows, schema=schema)
        counts[subset] = np.zeros(num_classes, dtype=np.int64)
        for labels in rows["labels"]:
            counts[subset][labels] += 1
    train = counts["train"]
    groups = np.where(train >= np.quantile(train, 0.6), "head", np.where(train <= np.quantile(train, 0.25), "tail",
                                                                          "medium"))
    tables["classes"] = pa.table({
        "class_id": np.arange(num_classes, dtype=np.int32), "class_key": [f"c{k:03d}" for k in range(num_classes)],
        "class_name": [f"class {k}" for k in range(num_classes)], "original_train_count": train,
        "target": train.astype(float), "train_count": train, "val_count": counts["val"],
        "test_count": counts["test"], "train_seconds": seconds, "group": groups.tolist()}, schema=CLASS_SCHEMA)
    manifest = {"format": "meid-bench-split", "format_version": 1, "benchmark": "toy", "seed": seed}
    return write_split(path, tables, manifest)


def write_store(path: Path, videos: dict[str, np.ndarray], dtype: str = "float32", contiguous: bool = True,
                **kwargs) -> Path:
    dim = next(iter(videos.values())).shape[1]
    total = sum(len(v) for v in videos.values()) if contiguous else None
    with FeatureStoreWriter(path, dim, dtype, total_frames=total, **kwargs) as writer:
        for video_id, frames in videos.items():
            writer.add(video_id, frames)
    return path


def _videos(lengths, dim=8, seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"v{i}": rng.standard_normal((n, dim)).astype(np.float32) for i, n in enumerate(lengths)}


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_round_trip_ragged(tmp_path, contiguous, dtype):
    # One-frame videos, ordinary ones and a long one that crosses the writer's flush size.
    videos = _videos([1, 7, 1, 300_000, 3], dim=8)
    store = FeatureStore(write_store(tmp_path / "f.h5", videos, dtype, contiguous))
    assert store.video_ids == list(videos) and store.dim == 8 and store.dtype == np.dtype(dtype)
    assert store.total_frames == sum(len(v) for v in videos.values())
    for video_id, frames in videos.items():
        expected = frames.astype(dtype)
        assert store.num_frames(video_id) == len(frames)
        assert np.array_equal(store.read(video_id), expected)
        picks = np.array([len(frames) - 1, 0, 0, len(frames) // 2])
        assert np.array_equal(store.read_frames(video_id, picks), expected[picks])
    # A sparse sample of the long video takes the run-by-run path; it must agree too.
    picks = np.sort(np.random.default_rng(1).integers(0, 300_000, 60))
    assert np.array_equal(store.read_frames("v3", picks), videos["v3"].astype(dtype)[picks])


def test_same_input_same_bytes(tmp_path):
    videos = _videos([5, 9, 2])
    a = write_store(tmp_path / "a.h5", videos, split_checksum="x")
    b = write_store(tmp_path / "b.h5", videos, split_checksum="x")
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_layout_and_attributes(tmp_path):
    write_store(tmp_path / "f.h5", _videos([2, 3]), fps=4.0, generator="unit test", split_checksum="abc",
                benchmark="toy")
    with h5py.File(tmp_path / "f.h5") as file:
        assert file["features"].shape == (5, 8)
        assert file["offsets"][()].tolist() == [0, 2, 5]
        assert [v.decode() for v in file["video_ids"][()]] == ["v0", "v1"]
        attrs = dict(file.attrs)
        assert attrs["complete"] and attrs["dim"] == 8 and attrs["fps"] == 4.0 and attrs["split_checksum"] == "abc"
        assert attrs["format"] == "meid-bench-features" and not attrs["simulated"]
    store = FeatureStore(tmp_path / "f.h5")
    assert store.fps == 4.0 and store.attrs["generator"] == "unit test"


def test_store_is_picklable_and_reopens(tmp_path):
    import pickle

    videos = _videos([4, 6])
    store = FeatureStore(write_store(tmp_path / "f.h5", videos))
    store.read("v0")
    clone = pickle.loads(pickle.dumps(store))
    assert np.array_equal(clone.read("v1"), videos["v1"])


def test_frame_labels_round_trip(tmp_path):
    times = frame_times(10, fps=2.0)
    active = active_classes([0, 2, 2], [0.0, 1.0, 4.0], [2.0, 2.5, 9.0], times, num_classes=11)
    assert active[:, 0].tolist() == [True] * 4 + [False] * 6  # centres 0.25 .. 1.75 lie before 2.0
    assert active[:, 2].tolist() == [False, False, True, True, True, False, False, False, True, True]
    assert np.array_equal(unpack_frame_labels(pack_frame_labels(active), 11), active.astype(np.uint8))
    with FeatureStoreWriter(tmp_path / "f.h5", 3, total_frames=10, num_classes=11) as writer:
        writer.add("v", np.zeros((10, 3), np.float32), pack_frame_labels(active))
    store = FeatureStore(tmp_path / "f.h5")
    assert np.array_equal(store.read_frame_labels("v"), active.astype(np.uint8))
    assert np.array_equal(store.read_frame_labels("v", [9, 0]), active[[9, 0]].astype(np.uint8))


def test_check_split_and_default_path(tmp_path):
    split = load_split(make_split(tmp_path / "split"))
    assert default_feature_path(split.path) == split.path / "features.h5"
    ids = [v for name in ("train", "val", "test") for v in split.table(name)["video_id"]]
    videos = {v: np.ones((2, 4), np.float32) for v in ids + ["EXTRA"]}  # more videos than the split: fine
    write_store(tmp_path / "f.h5", videos, split_checksum=split.checksum)
    FeatureStore(tmp_path / "f.h5").check_split(split)
    write_store(tmp_path / "other.h5", videos, split_checksum="0" * 64)
    with pytest.raises(MeidBenchError, match="checksum"):
        FeatureStore(tmp_path / "other.h5").check_split(split)
    partial = {v: f for v, f in videos.items() if v != ids[-1]}
    write_store(tmp_path / "partial.h5", partial, split_checksum=split.checksum)
    with pytest.raises(MeidBenchError, match="not in the store"):
        FeatureStore(tmp_path / "partial.h5").check_split(split)
    FeatureStore(tmp_path / "partial.h5").check_split(split, subsets=("train",))
    with FeatureStoreWriter(tmp_path / "recorded.h5", 4, split_checksum=split.checksum) as writer:
        for v, f in partial.items():
            writer.add(v, f)
        writer.record_missing([ids[-1]])
    recorded = FeatureStore(tmp_path / "recorded.h5")
    recorded.check_split(split)
    with pytest.raises(MeidBenchError, match="recorded missing"):
        recorded.read(ids[-1])


def test_bad_inputs(tmp_path):
    path = write_store(tmp_path / "f.h5", _videos([3, 3]))
    store = FeatureStore(path)
    with pytest.raises(MeidBenchError, match="not in this feature store"):
        store.read("nope")
    with pytest.raises(MeidBenchError, match="dimension 8, expected 16"):
        store.expect(dim=16)
    with pytest.raises(MeidBenchError, match="stored as float32"):
        store.expect(dtype="float16")
    with pytest.raises(MeidBenchError, match="already exists"):
        write_store(path, _videos([1]))
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(MeidBenchError, match="not a readable HDF5"):
        FeatureStore(tmp_path / "junk.h5")
    data = path.read_bytes()
    (tmp_path / "cut.h5").write_bytes(data[: len(data) - 100])
    with pytest.raises(MeidBenchError):
        FeatureStore(tmp_path / "cut.h5")
    with pytest.raises(MeidBenchError, match="no such feature store"):
        FeatureStore(tmp_path / "absent.h5")


def test_writer_refuses_bad_frames_and_leaves_nothing(tmp_path):
    out = tmp_path / "f.h5"
    bad = np.ones((3, 4), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(MeidBenchError, match="frame 1 holds nan"):
        with FeatureStoreWriter(out, 4, total_frames=6) as writer:
            writer.add("a", np.ones((3, 4), np.float32))
            writer.add("b", bad)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(MeidBenchError, match="overflow float16"):
        with FeatureStoreWriter(out, 4, "float16") as writer:
            writer.add("a", np.full((2, 4), 1e6, np.float32))
    with pytest.raises(MeidBenchError, match="expected \\[frames >= 1, 4\\]"):
        with FeatureStoreWriter(out, 4) as writer:
            writer.add("a", np.ones((2, 5), np.float32))
    with pytest.raises(MeidBenchError, match="announced"):
        with FeatureStoreWriter(out, 4, total_frames=5) as writer:
            writer.add("a", np.ones((2, 4), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_incomplete_file_is_refused(tmp_path):
    path = write_store(tmp_path / "f.h5", _videos([2]))
    with h5py.File(path, "r+") as file:
        file.attrs["complete"] = False
    with pytest.raises(MeidBenchError, match="interrupted"):
        FeatureStore(path)


def test_reserved_videos_written_from_threads_out_of_order_give_the_same_bytes(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    videos = _videos([5, 1, 30, 2, 9], dim=8)
    labels = {v: np.random.default_rng(len(f)).integers(0, 8, (len(f), 1)).astype(np.uint8)
              for v, f in videos.items()}
    kwargs = dict(total_frames=sum(len(v) for v in videos.values()), split_checksum="x", num_classes=3)
    with FeatureStoreWriter(tmp_path / "a.h5", 8, **kwargs) as writer:
        for video_id, frames in videos.items():
            writer.add(video_id, frames, labels[video_id])
    with FeatureStoreWriter(tmp_path / "b.h5", 8, **kwargs) as writer:
        positions = {v: writer.reserve(v, len(f)) for v, f in videos.items()}
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda v: writer.write_video(positions[v], videos[v], labels[v]), list(videos)[::-1]))
    assert (tmp_path / "a.h5").read_bytes() == (tmp_path / "b.h5").read_bytes()
    with pytest.raises(MeidBenchError, match="2 frames, 5 were reserved"):
        with FeatureStoreWriter(tmp_path / "c.h5", 8, total_frames=6) as writer:
            writer.write_video(writer.reserve("a", 5), np.ones((2, 8), np.float32))
    with pytest.raises(MeidBenchError, match="0 frames written, 6 announced"):
        with FeatureStoreWriter(tmp_path / "c.h5", 8, total_frames=6) as writer:
            writer.reserve("a", 6)  # reserved, never written
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_synth_records_the_dtype_it_stores(tmp_path, dtype):
    from click.testing import CliRunner

    from meid_bench.cli import main

    split_dir = make_split(tmp_path / "split", sizes=(4, 1, 1))
    result = CliRunner().invoke(main, ["features", "synth", "--split", str(split_dir), "--dim", "8", "--dtype", dtype,
                                       "--out", str(tmp_path / "s.h5")])
    assert result.exit_code == 0, result.output
    store = FeatureStore(tmp_path / "s.h5")
    assert store.dtype == np.dtype(dtype) and store.attrs["dtype"] == dtype
    assert store.read_at(0).dtype == np.dtype(dtype)
