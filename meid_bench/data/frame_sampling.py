"""Which frames of a video a model sees: the per-item rules (numpy) and the batched rules (torch).

Training draws ``num_frames`` frame indices at random with replacement and sorts them (the VideoLT reference);
evaluation takes ``num_frames`` evenly spaced frames, frame ``floor((k + 0.5) * T / num_frames)``, so videos
shorter than ``num_frames`` repeat frames.

The batched rules are shared by the device-resident and the streamed batch paths, so that both see the same
frames for the same seed and epoch: a batch's random draws come from one torch generator per (seed, epoch), on
the device that holds the video lengths, consumed batch after batch in the epoch's order.
"""

from __future__ import annotations

import numpy as np
import torch


def uniform_frame_indices(length: int, num_frames: int) -> np.ndarray:
    """Evenly spaced frame indices (repeats when the video is shorter than ``num_frames``)."""
    return np.floor((np.arange(num_frames) + 0.5) * (length / num_frames)).astype(np.int64)


def random_frame_indices(length: int, num_frames: int, rng: np.random.Generator) -> np.ndarray:
    """``num_frames`` random indices with replacement, sorted (the reference's training sampling)."""
    return np.sort(rng.integers(0, length, size=num_frames))


# Odd 64-bit constant (the golden ratio's bits) that spreads ranks far apart in seed space.
_RANK_STRIDE = 0x9E3779B97F4A7C15


def epoch_generator(seed: int, epoch: int, device: torch.device | str, rank: int = 0) -> torch.Generator:
    """The generator of one epoch's frame draws, on ``device`` (where the lengths of the videos are).

    ``rank``: the process's rank in data-parallel training. Each rank draws the frames of different videos, and
    with one seed for all they would also draw the same frame positions for each of their batch rows; rank 0 keeps
    the single-process seed, so one process runs exactly as before."""
    generator = torch.Generator(device=torch.device(device))
    generator.manual_seed((int(seed) * 1_000_003 + int(epoch) + int(rank) * _RANK_STRIDE) & 0x7FFFFFFFFFFFFFFF)
    return generator


def draw_frames(lengths: torch.Tensor, num_frames: int, generator: torch.Generator) -> torch.Tensor:
    """Random sorted frame indices int64 [B, num_frames] for videos of ``lengths`` int64 [B], on their device."""
    draws = torch.rand((len(lengths), num_frames), device=lengths.device, generator=generator)
    lengths = lengths.unsqueeze(1)
    return torch.minimum((draws * lengths).long(), lengths - 1).sort(dim=1).values


def uniform_frames(lengths: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Evenly spaced frame indices int64 [B, num_frames] for videos of ``lengths`` int64 [B]."""
    steps = torch.arange(num_frames, device=lengths.device, dtype=torch.float64) + 0.5
    return torch.floor(steps * lengths.unsqueeze(1).double() / num_frames).long()
