"""Which instants of a video are looked at, and which source frame shows each instant.

Feature frame ``t`` of a video sampled at ``fps`` stands for the instant ``(t + 0.5) / fps`` and a video of ``D``
seconds gets ``round(D * fps)`` frames (at least one): the rule of :mod:`meid_bench.build.features.frames`, shared
with ``features synth``, so an extracted store has the same frame counts as a simulated one for the same split. A
per-frame backbone sees the source frame shown at that instant; a clip backbone sees ``clip_len`` frames
``1 / clip_fps`` apart, centred on it.

The source frame shown at instant ``s`` is the last one that starts at or before ``s`` (the first frame for an
instant before the video starts, the last for one after it ends). Start times are the decoded presentation times
(relative to the first frame) for a video file, and ``k / frames_fps`` for frame ``k`` of a folder of frames.
"""

from __future__ import annotations

import numpy as np

from meid_bench.build.features.frames import frame_times, num_frames_for

# Instants within a microsecond of a frame's start belong to that frame: sampling instants often fall exactly on a
# frame boundary (4 fps over 24 fps frames), where float rounding must not decide.
TIME_TOLERANCE = 1e-6


def feature_instants(duration: float, fps: float) -> np.ndarray:
    """Centre instant in seconds of each feature frame of a ``duration``-second video: [round(duration * fps)]."""
    return frame_times(num_frames_for(duration, fps), fps)


def clip_instants(centres: np.ndarray, clip_len: int, clip_fps: float) -> np.ndarray:
    """[T, clip_len]: the instants of the clip centred on each of ``centres``."""
    offsets = (np.arange(clip_len, dtype=np.float64) - (clip_len - 1) / 2.0) / clip_fps
    return np.asarray(centres, dtype=np.float64)[:, None] + offsets[None, :]


def frames_showing(starts: np.ndarray, instants: np.ndarray) -> np.ndarray:
    """Index of the frame shown at each instant, given the frames' ascending start times (same shape as instants)."""
    index = np.searchsorted(np.asarray(starts, dtype=np.float64), np.asarray(instants) + TIME_TOLERANCE,
                            side="right") - 1
    return np.clip(index, 0, len(starts) - 1)
