"""MEID's motion modules for expert 2: what its selected frames, in time order, say about how the video changes.

Two forms (``motion_form``, docs/models.md section 4):

- ``contrast`` (the default): an order-aware summary pooled so that order survives. The selected frames, with
  repeats of one drawn frame counted once, are cut at their middle into an early and a late half; the motion
  feature is mean(late half) - mean(early half), computed before dropout, and expert 2's classifier reads it beside
  the pooled frames. A course that runs one way over the video gives a contrast of one sign, the mirrored course the
  opposite sign: a linear classifier separates them. Each side averages about k/2 frames, so the frame noise shrinks
  with the number of frames while the drift between the halves does not.
- ``difference`` (the ablation: the motion module of the first MEID): s_t + ReLU(up(ReLU(down(d_t)))) per frame,
  d_t the difference of consecutive selected frames (or of windows, ``span``), then the attention-weighted mean.
  Nearly flat attention makes the mean of the differences telescope to (last - first) / k, and the frame-wise
  ReLU MLP sees one noisy difference at a time: order barely survives the pooling (docs/results.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MOTION_FORMS = ("contrast", "difference")


class MotionModule(nn.Module):
    """The ``difference`` form: e_t + ReLU(up(ReLU(down(d_t)))) over the selected frames in time order.

    d_t is the mean of the ``span`` selected frames from t on minus the mean of the ``span`` frames before t (windows
    cut at the ends; zero at the first frame). With span 1 it is the difference of consecutive selected frames
    e_t - e_{t-1}. A bottleneck MLP (H -> r -> H, r = H/4 by default, as the necks) maps each difference.
    """

    def __init__(self, hidden: int, bottleneck: int, span: int = 1) -> None:
        super().__init__()
        self.span = span
        self.down = nn.Linear(hidden, bottleneck)
        self.up = nn.Linear(bottleneck, hidden)

    def forward(self, frames: Tensor) -> Tensor:
        if self.span == 1:  # the direct difference: cumulative sums would round differently from earlier runs
            differences = F.pad(frames[:, 1:] - frames[:, :-1], (0, 0, 1, 0))
        else:
            differences = windowed_differences(frames, self.span)
        return frames + F.relu(self.up(F.relu(self.down(differences))))


def windowed_differences(frames: Tensor, span: int) -> Tensor:
    """[B, T, H]: mean of frames t..t+span-1 minus mean of frames t-span..t-1, windows cut at the ends; 0 at t = 0."""
    length = frames.shape[1]
    totals = F.pad(frames.cumsum(dim=1), (0, 0, 1, 0))  # totals[:, i] = sum of frames[:, :i]
    t = torch.arange(length, device=frames.device)
    after_end, before_start = (t + span).clamp(max=length), (t - span).clamp(min=0)
    after = (totals[:, after_end] - totals[:, t]) / (after_end - t).unsqueeze(-1).to(frames.dtype)
    before = (totals[:, t] - totals[:, before_start]) / (t - before_start).clamp(min=1).unsqueeze(-1).to(frames.dtype)
    differences = after - before
    differences[:, 0] = 0.0
    return differences


def distinct_frames(features: Tensor) -> Tensor:
    """bool [B, k]: False where a frame's input features equal the previous frame's (a frame drawn twice).

    Training draws frames with replacement and sorts them, so a repeat sits next to its original: counting it once
    keeps the halves' means from weighting a frame by how often it was drawn, and a repeat never makes a zero
    difference.
    """
    repeat = (features[:, 1:] == features[:, :-1]).all(dim=-1)
    return torch.cat([torch.ones_like(repeat[:, :1]), ~repeat], dim=1)


def half_contrast(frames: Tensor, distinct: Tensor) -> Tensor:
    """[B, H]: mean of the late half minus mean of the early half of the distinct frames (time order).

    The n distinct frames of a video at ranks r = 0..n-1 sit at positions (r + 0.5) / n; those below 0.5 are the
    early half, those above the late one (the middle frame of an odd n is in neither); n < 2 gives zero.
    """
    weights = distinct.to(frames.dtype)
    count = weights.sum(dim=1, keepdim=True)
    position = (weights.cumsum(dim=1) - 0.5) / count.clamp_min(1.0)
    late = weights * (position > 0.5).to(frames.dtype)
    early = weights * (position < 0.5).to(frames.dtype)
    signed = late / late.sum(dim=1, keepdim=True).clamp_min(1.0) - early / early.sum(dim=1, keepdim=True).clamp_min(1.0)
    return torch.bmm(signed.unsqueeze(1), frames).squeeze(1)
