"""When a reused host staging buffer may be refilled: after its last copy to the accelerator has finished.

A copy from pinned host memory with ``non_blocking=True`` returns before the bytes have moved; refilling the buffer
before then corrupts the frames in flight. The copy is queued on the current stream of the *target* device (the
device of the destination tensor), which is not the current device when frames go to ``cuda:1`` from a process
whose current device is ``cuda:0`` (the public data API, ``perf/gpu_videolt.py --device cuda:1``). The event that
marks the copy's end must be recorded on that stream: one recorded on the current device's stream says nothing
about the copy and lets the buffer be refilled too early.
"""

from __future__ import annotations

from typing import Any

import torch


def pinned_staging(device: torch.device) -> bool:
    """Whether copies to ``device`` go through pinned host buffers (asynchronous copies): CUDA devices."""
    return device.type == "cuda"


def copy_stream(device: torch.device) -> Any:
    """The stream a host-to-device copy into a tensor on ``device`` is queued on: that device's current stream."""
    if device.index is None:  # "cuda" alone: the current device, as for the tensor torch.empty(device="cuda") makes
        device = torch.device("cuda", torch.cuda.current_device())
    return torch.cuda.current_stream(device)


class StagingFences:
    """Per staging buffer (slot), an event marking the end of its last copy to ``device``.

    ``copied(slot)`` after queueing a copy out of a buffer; ``wait(slot)`` before refilling it; ``wait_all()``
    before the buffers are dropped or replaced. Without pinned staging (the CPU, where copies are synchronous)
    nothing is recorded and nothing waits.
    """

    def __init__(self, device: torch.device, slots: int) -> None:
        self.device = torch.device(device)
        self.pinned = pinned_staging(self.device)
        self._events: list[Any] = [None] * int(slots)

    def copied(self, slot: int) -> None:
        if not self.pinned:
            return
        event = torch.cuda.Event()
        event.record(copy_stream(self.device))
        self._events[slot] = event

    def wait(self, slot: int) -> None:
        event = self._events[slot]
        if event is not None:
            event.synchronize()

    def wait_all(self) -> None:
        for slot in range(len(self._events)):
            self.wait(slot)
