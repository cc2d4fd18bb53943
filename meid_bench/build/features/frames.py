"""Frame timing and per-frame labels from a video's temporal segments.

A frame stands for the instant at its centre: frame ``t`` of a video sampled at ``fps`` frames per second sits at
``(t + 0.5) / fps`` seconds. A class is active on a frame when one of its segments covers that instant
(``start <= time < end``). Per-frame labels are stored as bits packed along the class axis, little bit order.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def num_frames_for(duration: float, fps: float) -> int:
    """Frames of a video of ``duration`` seconds sampled at ``fps`` (at least one)."""
    if not math.isfinite(duration) or duration <= 0:
        return 1
    return max(1, int(round(duration * fps)))


def frame_times(num_frames: int, fps: float | None = None, duration: float | None = None) -> np.ndarray:
    """Centre time in seconds of each of ``num_frames`` frames.

    With ``fps`` the frames are ``1 / fps`` apart from the start; without it, they split ``duration`` evenly
    (the case of features packed from a release whose sampling rate is unknown).
    """
    centres = np.arange(num_frames, dtype=np.float64) + 0.5
    if fps is not None and math.isfinite(fps) and fps > 0:
        return centres / fps
    if duration is not None and math.isfinite(duration) and duration > 0:
        return centres * (duration / num_frames)
    raise ValueError("frame times need a frame rate or a duration")


def active_classes(segment_classes: Sequence[int], starts: Sequence[float], ends: Sequence[float],
                   times: np.ndarray, num_classes: int) -> np.ndarray:
    """A bool [frames, classes] matrix: which classes' segments cover each frame's time (``times`` ascending)."""
    active = np.zeros((len(times), num_classes), dtype=bool)
    for cls, start, end in zip(segment_classes, starts, ends):
        lo = int(np.searchsorted(times, start, side="left"))
        hi = int(np.searchsorted(times, end, side="left"))
        if hi > lo:
            active[lo:hi, int(cls)] = True
    return active


def packed_width(num_classes: int) -> int:
    return (num_classes + 7) // 8


def pack_frame_labels(active: np.ndarray) -> np.ndarray:
    """Pack a [frames, classes] 0/1 matrix into uint8 [frames, ceil(classes / 8)] (little bit order)."""
    return np.packbits(np.asarray(active, dtype=bool), axis=1, bitorder="little")


def unpack_frame_labels(packed: np.ndarray, num_classes: int) -> np.ndarray:
    """Inverse of :func:`pack_frame_labels`: uint8 [frames, classes] of 0/1."""
    return np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=num_classes, bitorder="little")
