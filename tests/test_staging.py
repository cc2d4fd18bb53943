"""Pinned staging buffers are refilled only after their copy to the accelerator has finished: the event marking a
copy's end is recorded on the stream of the copy's target device, not of the current device. No GPU here: the
CUDA calls are replaced by fakes that note which stream an event was recorded on, and the loaders are checked to
fence every copy through :class:`StagingFences` built for their target device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import meid_bench.data.resident as resident_module
import meid_bench.data.streamed as streamed_module
from meid_bench.build.features import FeatureStore
from meid_bench.data import BatchGatherer, load_frames
from meid_bench.data.staging import StagingFences, copy_stream
from test_data_path import DIM, split_dir  # noqa: F401  (the fixture)


class FakeStream:
    def __init__(self, device: torch.device) -> None:
        self.device = device


class FakeEvent:
    def __init__(self) -> None:
        self.stream: FakeStream | None = None
        self.synchronized = False

    def record(self, stream: FakeStream | None = None) -> None:
        # torch.cuda.Event.record() without a stream takes the current device's stream: cuda:0 here
        self.stream = stream if stream is not None else FakeStream(torch.device("cuda", 0))

    def synchronize(self) -> None:
        self.synchronized = True


@pytest.fixture
def fake_cuda(monkeypatch):
    """A process whose current device is cuda:0, with fake streams and events."""
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "current_stream",
                        lambda device=None: FakeStream(torch.device("cuda", 0) if device is None else device))
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)


@pytest.mark.parametrize("target, expected", [("cuda:1", "cuda:1"), ("cuda:0", "cuda:0"), ("cuda", "cuda:0")])
def test_a_copy_is_fenced_on_its_target_devices_stream(fake_cuda, target, expected):
    fences = StagingFences(torch.device(target), 2)
    assert fences.pinned
    fences.copied(1)
    event = fences._events[1]
    assert event.stream.device == torch.device(expected) == copy_stream(torch.device(target)).device
    fences.wait(0)  # nothing copied from buffer 0 yet: nothing to wait for
    assert not event.synchronized
    fences.wait(1)
    assert event.synchronized


def test_no_fences_without_pinned_staging():
    fences = StagingFences(torch.device("cpu"), 2)
    fences.copied(0)
    fences.wait_all()
    assert not fences.pinned and fences._events == [None, None]


class SpyFences(StagingFences):
    made: list["SpyFences"] = []

    def __init__(self, device, slots) -> None:
        super().__init__(device, slots)
        self.calls: list[tuple[str, int]] = []
        SpyFences.made.append(self)

    def copied(self, slot: int) -> None:
        self.calls.append(("copied", slot))
        super().copied(slot)

    def wait(self, slot: int) -> None:
        self.calls.append(("wait", slot))
        super().wait(slot)


def test_resident_loading_fences_each_copy_for_the_target_device(split_dir, monkeypatch):  # noqa: F811
    SpyFences.made.clear()
    monkeypatch.setattr(resident_module, "StagingFences", SpyFences)
    store = FeatureStore(split_dir / "features.h5")
    target = torch.device("meta")  # no accelerator here: the copies run, their values are not kept
    loaded = load_frames(store, np.arange(store.num_videos), target, chunk_bytes=100 * DIM * 2)
    assert loaded.shape == (store.total_frames, DIM)
    [fences] = SpyFences.made
    assert fences.device == target
    chunks = -(-store.total_frames // 100)
    assert [c for c in fences.calls if c[0] == "copied"] == [("copied", i % 2) for i in range(chunks)]
    # Before each fill of a buffer, a wait for that buffer; at the end, a wait for both.
    fills = [i for i, c in enumerate(fences.calls) if c[0] == "copied"]
    assert all(fences.calls[i - 1] == ("wait", fences.calls[i][1]) for i in fills)
    assert fences.calls[-2:] == [("wait", 0), ("wait", 1)]


@pytest.mark.parametrize("threads", [0, 2])
def test_streamed_gathering_fences_each_copy_for_the_target_device(split_dir, monkeypatch, threads):  # noqa: F811
    SpyFences.made.clear()
    monkeypatch.setattr(streamed_module, "StagingFences", SpyFences)
    store = FeatureStore(split_dir / "features.h5")
    gatherer = BatchGatherer(store, torch.device("meta"), threads=threads)
    rows = [np.arange(i, i + 6, dtype=np.int64).reshape(2, 3) for i in range(7)]
    out = list(gatherer.gather(rows))
    assert len(out) == 7 and out[0].shape == (2, 3, DIM)
    fences = SpyFences.made[-1]
    assert fences.device == torch.device("meta") and len(fences._events) == threads + 1
    assert [c for c in fences.calls if c[0] == "copied"] == [("copied", i % (threads + 1)) for i in range(7)]
    assert sum(1 for c in fences.calls if c[0] == "wait") == 7  # each fill waits for its buffer's last copy
