"""meid_bench.data: frame sampling, workers, caches, the device-resident path and the samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from meid_bench import MeidBenchError, load_split
from meid_bench.build.features import FeatureStoreWriter
from meid_bench.build.features.frames import pack_frame_labels
from meid_bench.data import (ClassBalancedSampler, GpuResidentFeatures, InstanceSampler, SquareRootSampler,
                             VideoFeatureDataset, label_mask, make_loader, set_epoch, uniform_frame_indices)
from test_feature_store import make_split

DIM = 3


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    return load_split(make_split(tmp_path_factory.mktemp("split") / "split", sizes=(12, 4, 5)))


def _lengths(split) -> dict[str, int]:
    ids = [v for name in ("train", "val", "test") for v in split.table(name)["video_id"]]
    return {v: (3 if i % 4 == 0 else 200 + i) for i, v in enumerate(ids)}  # some videos shorter than 8 frames


@pytest.fixture(scope="module")
def store_path(split, tmp_path_factory):
    """Frame t of the k-th video holds [t, k, 0]: a read shows which frames were taken."""
    path = tmp_path_factory.mktemp("store") / "f.h5"
    lengths = _lengths(split)
    with FeatureStoreWriter(path, DIM, "float32", total_frames=sum(lengths.values()),
                            split_checksum=split.checksum, num_classes=split.num_classes) as writer:
        for k, (video_id, length) in enumerate(lengths.items()):
            frames = np.zeros((length, DIM), np.float32)
            frames[:, 0], frames[:, 1] = np.arange(length), k
            labels = np.zeros((length, split.num_classes), bool)
            labels[: length // 2, k % split.num_classes] = True
            writer.add(video_id, frames, pack_frame_labels(labels))
    return path


def test_evaluation_items_take_uniform_frames(split, store_path):
    data = VideoFeatureDataset(split, store_path, "test", num_frames=8, train=False)
    assert len(data) == len(split.test) and data.dim == DIM
    targets = split.multi_hot("test")
    for index in range(len(data)):
        item = data[index]
        length = data.lengths[index]
        assert item["features"].dtype == torch.float32 and item["features"].shape == (8, DIM)
        assert item["features"][:, 0].long().tolist() == uniform_frame_indices(length, 8).tolist()
        assert torch.equal(item["target"], torch.from_numpy(targets[index].astype(np.float32)))
        assert item["index"] == index
    assert uniform_frame_indices(3, 8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # short videos repeat frames
    assert uniform_frame_indices(16, 4).tolist() == [2, 6, 10, 14]


def test_training_items_sorted_random_and_seeded(split, store_path):
    data = VideoFeatureDataset(split, store_path, "train", num_frames=60, train=True, seed=1)
    long_video = int(np.argmax(data.lengths))
    first = data[long_video]["features"][:, 0].long().numpy()
    assert (np.diff(first) >= 0).all() and first.max() < data.lengths[long_video]
    assert len(np.unique(first)) > 30  # random over the whole video, with replacement
    again = VideoFeatureDataset(split, store_path, "train", num_frames=60, train=True, seed=1)
    assert np.array_equal(again[long_video]["features"][:, 0].long().numpy(), first)
    again.set_epoch(1)
    assert not np.array_equal(again[long_video]["features"][:, 0].long().numpy(), first)


def _worker_draws(split, store_path, workers: int, epoch: int = 0) -> list[list[int]]:
    data = VideoFeatureDataset(split, store_path, "train", num_frames=60, train=True, seed=5)
    long_video = int(np.argmax(data.lengths))
    loader = torch.utils.data.DataLoader(data, batch_size=1, sampler=[long_video] * 4, num_workers=workers)
    data.set_epoch(epoch)
    return [batch["features"][0, :, 0].long().tolist() for batch in loader]


@pytest.mark.determinism
def test_workers_draw_distinct_reproducible_frames(split, store_path):
    first = _worker_draws(split, store_path, workers=2)
    assert first == _worker_draws(split, store_path, workers=2)
    assert first[0] != first[1]  # batches 0 and 1 come from different workers: different streams
    assert first != _worker_draws(split, store_path, workers=2, epoch=1)


def test_ram_cache_matches_store(split, store_path):
    plain = VideoFeatureDataset(split, store_path, "val", num_frames=5, train=False)
    cached = VideoFeatureDataset(split, store_path, "val", num_frames=5, train=False, cache="ram")
    for index in range(len(plain)):
        assert torch.equal(plain[index]["features"], cached[index]["features"])
    with pytest.raises(MeidBenchError, match="cache"):
        VideoFeatureDataset(split, store_path, "val", num_frames=5, train=False, cache="disk")


def test_frame_labels_and_label_mask(split, store_path):
    data = VideoFeatureDataset(split, store_path, "train", num_frames=6, train=False, frame_labels=True,
                               label_mask=True)
    item = data[(1, -1)]
    length = data.lengths[1]
    expected = (uniform_frame_indices(length, 6) < length // 2).astype(np.float32)
    k = list(_lengths(split)).index(data.video_ids[1])
    assert item["frame_labels"].shape == (6, split.num_classes)
    assert item["frame_labels"][:, k % split.num_classes].tolist() == expected.tolist()
    assert item["mask"].tolist() == [1.0] * split.num_classes
    labelled = next(i for i in range(len(data)) if data.targets[i].sum() >= 2)
    drawn = int(np.flatnonzero(data.targets[labelled])[0])
    mask = data[(labelled, drawn)]["mask"].numpy()
    others = np.flatnonzero(data.targets[labelled])[1:]
    assert mask[drawn] == 1 and (mask[others] == 0).all() and mask.sum() == split.num_classes - len(others)
    assert label_mask(np.array([1, 1, 0]), 0).tolist() == [1, 0, 1]


def test_store_checks(split, store_path, tmp_path):
    other = load_split(make_split(tmp_path / "other", sizes=(3, 1, 1), seed=9))
    with pytest.raises(MeidBenchError, match="checksum"):
        VideoFeatureDataset(other, store_path, "train", num_frames=4, train=True)
    with FeatureStoreWriter(tmp_path / "partial.h5", DIM, split_checksum=split.checksum) as writer:
        for video_id in split.train["video_id"][1:]:
            writer.add(video_id, np.ones((4, DIM), np.float32))
        writer.record_missing([split.train["video_id"][0]])
    with pytest.raises(MeidBenchError, match="recorded missing") as refused:
        VideoFeatureDataset(split, tmp_path / "partial.h5", "train", num_frames=4, train=True)
    # The remedy names options that exist: the CLI's commands, and the Python argument as a Python argument.
    assert "`meid-bench features extract ... --resume`" in str(refused.value)
    assert "`meid-bench features pack`" in str(refused.value) and "VideoFeatureDataset(..., skip_missing=True)" in \
        str(refused.value)
    data = VideoFeatureDataset(split, tmp_path / "partial.h5", "train", num_frames=4, train=True, skip_missing=True)
    assert data.video_ids == list(split.train["video_id"][1:])
    with pytest.raises(MeidBenchError, match="no per-frame labels"):
        VideoFeatureDataset(split, tmp_path / "partial.h5", "train", num_frames=4, train=True, skip_missing=True,
                            frame_labels=True)


def test_gpu_resident_matches_dataset(split, store_path):
    data = VideoFeatureDataset(split, store_path, "test", num_frames=7, train=False)
    resident = GpuResidentFeatures(data, "cpu")
    batch = resident.batch([2, 0, 4], sampled_classes=[-1, -1, -1])
    for row, index in enumerate([2, 0, 4]):
        assert torch.equal(batch["features"][row], data[index]["features"])
        assert torch.equal(batch["target"][row], data[index]["target"])
    assert torch.equal(batch["mask"], torch.ones_like(batch["mask"]))
    train = GpuResidentFeatures(VideoFeatureDataset(split, store_path, "train", 60, train=True, seed=3), "cpu")
    sampler = ClassBalancedSampler(train.targets.numpy(), seed=3)
    batches = list(train.batches(4, sampler))
    assert sum(len(b["index"]) for b in batches) == len(train)
    for b in batches:
        frames = b["features"][:, :, 0]
        assert (frames.diff(dim=1) >= 0).all()
        assert (frames.max(dim=1).values < train.lengths[b["index"]]).all()
        assert (b["features"][:, :, 1] == b["features"][:, :1, 1]).all()  # every frame from its own video
        assert (b["mask"] <= 1).all() and (b["mask"] * b["target"]).sum(dim=1).eq(1).all()
    again = list(train.batches(4, ClassBalancedSampler(train.targets.numpy(), seed=3)))
    assert all(torch.equal(x["features"], y["features"]) for x, y in zip(batches, again))


def test_gpu_resident_batches_carry_the_drawn_frames_labels(split, store_path):
    data = VideoFeatureDataset(split, store_path, "train", num_frames=5, train=False, frame_labels=True)
    resident = GpuResidentFeatures(data, "cpu")
    batch = resident.batch([3, 1])
    assert batch["frame_labels"].shape == (2, 5, split.num_classes) and batch["frame_labels"].dtype == torch.float32
    for row, index in enumerate([3, 1]):
        assert torch.equal(batch["frame_labels"][row], data[index]["frame_labels"])
    assert "frame_labels" not in GpuResidentFeatures(VideoFeatureDataset(split, store_path, "train", 5, train=False),
                                                     "cpu").batch([0])


def test_make_loader_end_to_end(split, store_path):
    data = VideoFeatureDataset(split, store_path, "train", num_frames=10, train=True, seed=0, label_mask=True)
    loader = make_loader(data, "srs", batch_size=4, workers=0, seed=0)
    set_epoch(loader, 2)
    assert loader.sampler.epoch == 2 and data.epoch == 2
    batches = list(loader)
    assert sum(len(b["index"]) for b in batches) == len(data)
    assert batches[0]["features"].shape[1:] == (10, DIM) and batches[0]["mask"].shape[1] == split.num_classes
    with pytest.raises(MeidBenchError, match="sampler"):
        make_loader(data, "uniform", 4, 0, 0)


def _long_tailed_labels(seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rates = 0.6 * 0.02 ** (np.arange(10) / 9)
    labels = (rng.random((3000, 10)) < rates).astype(np.uint8)
    labels[:5, :] = 1  # every class has videos
    return labels


def test_class_balanced_sampler_is_uniform_over_classes():
    labels = _long_tailed_labels()
    sampler = ClassBalancedSampler(labels, num_samples=40_000, seed=0)
    videos, classes = sampler.draws()
    assert labels[videos, classes].all()  # the video drawn carries the class drawn
    share = np.bincount(classes, minlength=10) / len(classes)
    assert np.abs(share - 0.1).max() < 0.01
    # Within a class, videos are drawn uniformly: the smallest class's videos all appear.
    tail = labels[:, 9].nonzero()[0]
    assert set(videos[classes == 9]) == set(tail)


def test_square_root_sampler_follows_sqrt_counts():
    labels = _long_tailed_labels()
    videos, classes = SquareRootSampler(labels, num_samples=40_000, seed=0).draws()
    expected = np.sqrt(labels.sum(axis=0)) / np.sqrt(labels.sum(axis=0)).sum()
    share = np.bincount(classes, minlength=10) / len(classes)
    assert np.abs(share - expected).max() < 0.01


def test_instance_sampler_and_epochs():
    labels = _long_tailed_labels()
    sampler = InstanceSampler(labels, seed=4)
    assert len(sampler) == len(labels)
    first = list(sampler)
    assert sorted(v for v, _ in first) == list(range(len(labels))) and {c for _, c in first} == {-1}
    assert first == list(InstanceSampler(labels, seed=4))  # resume: same seed and epoch, same stream
    sampler.set_epoch(1)
    assert list(sampler) != first
    cbs = ClassBalancedSampler(labels, seed=4)
    cbs.set_epoch(3)
    resumed = ClassBalancedSampler(labels, seed=4)
    resumed.set_epoch(3)
    assert list(cbs) == list(resumed) and len(list(cbs)) == len(labels)
