"""MEID's internal distillation: a distance between head-class and tail-class frame-feature distributions.

The paper's auxiliary loss modulates frame-level features "to reduce the distribution distance between head and tail
classes". Here the two distributions are sets of frames chosen by their labels (docs/models.md, section 4):

- teacher: head-neck features of frames labelled with head-neck classes and no tail class, from the instance batch
  (the long-tailed distribution, where head frames are plentiful); detached, so the loss never moves the teacher;
- student: tail-neck features of frames labelled with tail classes, from the class-balanced batch (where tail videos
  are plentiful), with gradient into the tail neck and the shared embedding.

Labels are per frame ([B, T, C], from a store with per-frame labels) or per video ([B, C]: every frame of a video
carries its video's labels). At most ``count`` frames are drawn at random per side; a drawn frame has weight 1, an
empty draw weight 0, so the number of eligible frames is never read back to the host (no device synchronisation).

Distances between two weighted samples of frame features (rows of [K, H], weights [K]):

- ``moments``: mean over channels of (mean_s - mean_t)^2 + (std_s - std_t)^2;
- ``mmd``: the squared maximum mean discrepancy (biased V-statistic, never negative) with a sum of Gaussian kernels
  at bandwidths 2^k times the median pairwise squared distance, k in -2..2 (Gretton et al. 2012; Long et al. 2015).
  The median heuristic makes the kernel follow the feature scale, which differs between feature stores and changes
  during training; five scales around it see both near and far structure. The bandwidth is computed without
  gradient, so the loss cannot shrink by spreading the features out.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from meid_bench.models.layers import full_precision

DistillForm = Literal["moments", "mmd"]
MMD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)  # each half the previous kernel width: see gaussian_mmd
_EPS = 1e-6


def frame_groups(labels: Tensor, tail_class_mask: Tensor, num_frames: int) -> tuple[Tensor, Tensor]:
    """bool [B, T] masks (head_frames, tail_frames) from labels [B, C] (per video) or [B, T, C] (per frame).

    A tail frame has at least one tail-neck class; a head frame has a head-neck class and no tail class.
    """
    # Labels are non-negative (multi-hot or soft), so a product with a class mask is positive exactly when one of
    # the mask's classes is: much faster than boolean indexing of the class axis on a CPU. Autocast off: float32
    # products, as for the rest of the distillation.
    values = labels.to(torch.float32)
    with full_precision(values.device):
        tail = values @ tail_class_mask.to(torch.float32) > 0
        head = (values @ (~tail_class_mask).to(torch.float32) > 0) & ~tail
    if labels.dim() == 2:
        head = head.unsqueeze(1).expand(-1, num_frames)
        tail = tail.unsqueeze(1).expand(-1, num_frames)
    return head, tail


def draw_frames(eligible: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """Up to ``count`` random distinct positions among the True entries of ``eligible`` [B, T].

    Returns (flat frame indices [K] into B * T, weights [K] float: 1 for a drawn eligible frame, 0 for padding),
    K = min(count, B * T). Draws use torch's global generator (the training loop seeds it).
    """
    flat = eligible.reshape(-1)
    keys = torch.rand(flat.shape, device=flat.device).masked_fill_(~flat, -1.0)
    top = keys.topk(min(count, flat.numel()))
    return top.indices, (top.values >= 0).float()


def weighted_moments(features: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel weighted mean and standard deviation of rows [K, H] with weights [K] (float32)."""
    x = features.float()
    w = weights / weights.sum().clamp_min(_EPS)
    mean = w @ x
    variance = w @ (x - mean).pow(2)
    # The epsilon keeps sqrt differentiable at zero variance (a dead ReLU channel).
    return mean, (variance + _EPS).sqrt()


def moment_distance(student: Tensor, student_weights: Tensor, teacher: Tensor, teacher_weights: Tensor) -> Tensor:
    """mean over channels of (mean_s - mean_t)^2 plus mean over channels of (std_s - std_t)^2."""
    mean_s, std_s = weighted_moments(student, student_weights)
    mean_t, std_t = weighted_moments(teacher, teacher_weights)
    return (mean_s - mean_t).pow(2).mean() + (std_s - std_t).pow(2).mean()


def gaussian_mmd(student: Tensor, student_weights: Tensor, teacher: Tensor, teacher_weights: Tensor) -> Tensor:
    """Squared MMD (biased estimate) with the mean of Gaussian kernels exp(-d^2 / (s * median d^2)), s in
    ``MMD_SCALES`` (1/4 .. 4)."""
    x = torch.cat([student.float(), teacher.float()])
    w_s = student_weights / student_weights.sum().clamp_min(_EPS)
    w_t = teacher_weights / teacher_weights.sum().clamp_min(_EPS)
    # Signed weights: w' K w = E k(s, s') + E k(t, t') - 2 E k(s, t).
    signed = torch.cat([w_s, -w_t])
    norms = x.pow(2).sum(dim=-1)
    squared = (norms.unsqueeze(0) + norms.unsqueeze(1) - 2.0 * (x @ x.T)).clamp_min(0.0)
    with torch.no_grad():
        present = torch.cat([student_weights, teacher_weights]) > 0
        pairs = present.unsqueeze(0) & present.unsqueeze(1)
        pairs.fill_diagonal_(False)
        median = torch.nanmedian(squared.masked_fill(~pairs, float("nan"))).nan_to_num(1.0).clamp_min(_EPS)
    # One exp for the widest kernel; the narrower ones are its powers 2, 4, 8 and 16 (scales 2, 1, 1/2, 1/4).
    widest = torch.exp(squared / (-MMD_SCALES[-1] * median))
    kernels = [widest]
    for _ in MMD_SCALES[:-1]:
        kernels.append(kernels[-1] * kernels[-1])
    kernel = sum(kernels) / len(kernels)
    return (signed @ kernel @ signed).clamp_min(0.0)


def distance(form: DistillForm, student: Tensor, student_weights: Tensor, teacher: Tensor,
             teacher_weights: Tensor) -> Tensor:
    """The distillation distance of ``form``; zero when either side has no frame. Always computed in float32, also
    under bfloat16 autocast: the kernel matrix and the moments are differences of nearly equal sums, which bf16
    products shift by a few tenths of a percent."""
    with full_precision(student.device):
        return _distance(form, student, student_weights, teacher, teacher_weights)


def _distance(form: DistillForm, student: Tensor, student_weights: Tensor, teacher: Tensor,
              teacher_weights: Tensor) -> Tensor:
    if form == "moments":
        value = moment_distance(student, student_weights, teacher, teacher_weights)
    elif form == "mmd":
        value = gaussian_mmd(student, student_weights, teacher, teacher_weights)
    else:
        raise ValueError(f"unknown distillation form {form!r}")
    both = (student_weights.sum() > 0) & (teacher_weights.sum() > 0)
    return torch.where(both, value, torch.zeros_like(value))
