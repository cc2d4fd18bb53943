"""MEID: Mixture-of-Experts with Internal Distillation (Li & Xu, AAAI 2023), with every unpublished detail decided.

Data flow (docs/models.md gives each decision and its reason):

- a frame embedding shared by both experts: Linear(D, H), ReLU, Dropout;
- expert 1, on the instance batch: frame attention over the shared embedding; a head-class neck and a tail-class
  neck (residual bottleneck MLPs per frame) pooled with that attention; the head neck feeds a classifier for the
  head (non-tail) classes, the tail neck one for the tail classes;
- internal distillation (meid_bench.models.distill): the tail neck's features of tail-labelled frames of the
  class-balanced batch are pulled towards the distribution of the head neck's features of head-labelled frames of
  the instance batch (the teacher, detached);
- expert 2, on the class-balanced batch: expert 1's attention module scores the frames (no gradient: selection is
  discrete), complementary frame selection keeps the ``cfs_ratio`` fraction with the LOWEST attention in time
  order, a motion module adds features from the temporal differences of those frames' embeddings, then pooling
  with the inherited attention (or its own, ``expert2_pooling``) and a classifier over all classes;
- inference: both experts on the same videos, fused (mean of probabilities by default).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from meid_bench.build.split_io import GROUPS
from meid_bench.models.base import (
    STREAM_BALANCED,
    STREAM_INSTANCE,
    Batch,
    BaseModelConfig,
    ModelOutput,
    VideoModel,
    balanced_stream_loss,
)
from meid_bench.models.layers import (
    AttentionPooling,
    Classifier,
    FrameEmbedding,
    Neck,
    default_attention_hidden,
    pool,
)
from meid_bench.models import distill as distillation
from meid_bench.models.registry import register_model
from meid_bench.registry import SplitStats


@dataclass(frozen=True)
class MEIDConfig(BaseModelConfig):
    """MEID's hyper-parameters and ablation switches (see docs/models.md for each default's reason)."""

    attention_hidden: int | None = None  # attention MLP width; null = hidden // 4
    neck_bottleneck: int | None = None  # neck MLP bottleneck; null = hidden // 4
    motion_bottleneck: int | None = None  # motion MLP bottleneck; null = hidden // 4
    tail_groups: tuple[str, ...] = ("tail",)  # split groups whose classes the tail neck serves
    distill: bool = True  # internal distillation on/off (ablation)
    distill_form: distillation.DistillForm = "mmd"
    distill_weight: float = 0.1
    distill_routing: Literal["labels", "label_blind"] = "labels"  # label_blind: the ablation without labels
    distill_frames: int = 128  # frames drawn per side for the distance
    expert2: bool = True  # expert 2 on/off (ablation)
    frame_selection: Literal["complementary", "random"] = "complementary"  # random = ablation
    cfs_ratio: float = 0.75  # fraction of frames expert 2 keeps (tuned on validation)
    motion: bool = True  # motion module on/off (ablation)
    motion_span: int = 1  # frames averaged on each side of a motion difference (1: consecutive frames)
    expert2_pooling: Literal["attention", "inherited", "mean"] = "inherited"
    fusion: Literal["mean_logit", "mean_prob", "expert1", "expert2"] = "mean_prob"
    fusion_weight: float = 0.5  # weight of expert 2 in the fusion (best on validation)

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        for name in ("attention_hidden", "neck_bottleneck", "motion_bottleneck"):
            value = getattr(self, name)
            if value is not None and value < 1:
                found.append((name, f"must be a positive integer or null, got {value}"))
        unknown = [group for group in self.tail_groups if group not in GROUPS]
        if unknown or not self.tail_groups:
            found.append(("tail_groups", f"must be a non-empty list from {list(GROUPS)}, got {list(self.tail_groups)}"))
        if not 0.0 < self.cfs_ratio <= 1.0:
            found.append(("cfs_ratio", f"must be in (0, 1], got {self.cfs_ratio}"))
        if self.distill_weight < 0.0:
            found.append(("distill_weight", f"must be >= 0, got {self.distill_weight}"))
        if self.motion_span < 1:
            found.append(("motion_span", f"must be a positive integer, got {self.motion_span}"))
        if self.distill_frames < 2:
            found.append(("distill_frames", f"must be >= 2, got {self.distill_frames}"))
        if not 0.0 <= self.fusion_weight <= 1.0:
            found.append(("fusion_weight", f"must be in [0, 1], got {self.fusion_weight}"))
        if not self.expert2 and self.fusion == "expert2":
            found.append(("fusion", "is 'expert2' but expert2 is off; use fusion: expert1 or turn expert2 on"))
        return found


def frames_to_keep(num_frames: int, ratio: float) -> int:
    """How many frames expert 2 keeps: round(ratio * T) (halves up), at least 1, at most T."""
    return max(1, min(num_frames, int(math.floor(ratio * num_frames + 0.5))))


def lowest_attention_frames(weights: Tensor, keep: int) -> Tensor:
    """Complementary frame selection: per video the ``keep`` frame indices with the lowest attention, in time order.

    weights [B, T] -> LongTensor [B, keep]. Among exactly tied weights which frame is kept is unspecified.
    """
    chosen = torch.topk(weights, keep, dim=-1, largest=False, sorted=False).indices
    return chosen.sort(dim=-1).values


def take_frames(frames: Tensor, indices: Tensor) -> Tensor:
    """frames [B, T, H] at per-video frame indices [B, k] -> [B, k, H] (one index_select: gather with an expanded
    index is several times slower on a CPU)."""
    batch, num_frames, width = frames.shape
    rows = (indices + torch.arange(batch, device=indices.device).unsqueeze(1) * num_frames).reshape(-1)
    return frames.reshape(batch * num_frames, width).index_select(0, rows).view(batch, -1, width)


def random_frames(batch: int, num_frames: int, keep: int, device: torch.device) -> Tensor:
    """The ablation of complementary selection: ``keep`` distinct random frames per video, in time order."""
    chosen = torch.rand(batch, num_frames, device=device).topk(keep, dim=-1).indices
    return chosen.sort(dim=-1).values


class MotionModule(nn.Module):
    """Motion features for the selected frames: e_t + ReLU(up(ReLU(down(d_t)))) over the selected frames in time order.

    d_t is the mean of the ``span`` selected frames from t on minus the mean of the ``span`` frames before t (windows
    cut at the ends; zero at the first frame). With span 1 it is the difference of consecutive selected frames
    e_t - e_{t-1}: how the unsolved part of the video changes. A longer span averages the frame noise away on both
    sides while a steady change adds up, so slow changes over a segment become visible. A bottleneck MLP (H -> r ->
    H, r = H/4 by default, as the necks) maps each difference: two H x r products per selected frame instead of one
    H x H (the step-time goal of docs/performance.md).
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


def fuse_logits(expert1: Tensor, expert2: Tensor, mode: str, weight: float) -> Tensor:
    """Fuse the experts' logits; ``weight`` is expert 2's share. Returns logits (monotone in the fused score)."""
    if mode == "expert1":
        return expert1
    if mode == "expert2":
        return expert2
    if mode == "mean_logit":
        return (1.0 - weight) * expert1 + weight * expert2
    if mode == "mean_prob":
        # logit((1-w) sigmoid(a) + w sigmoid(b)) in log space: float32 sigmoid saturates at logits near 17.
        a, b = expert1.float(), expert2.float()
        log_w1 = math.log(1.0 - weight) if weight < 1.0 else -math.inf
        log_w2 = math.log(weight) if weight > 0.0 else -math.inf
        log_p = torch.logaddexp(log_w1 + F.logsigmoid(a), log_w2 + F.logsigmoid(b))
        log_q = torch.logaddexp(log_w1 + F.logsigmoid(-a), log_w2 + F.logsigmoid(-b))
        return log_p - log_q
    raise ValueError(f"unknown fusion {mode!r}")


def bottleneck_of(hidden: int) -> int:
    """The default bottleneck of MEID's necks and motion module: a quarter of the embedding (at least 1)."""
    return max(1, hidden // 4)


def tail_mask_from_groups(class_groups: Sequence[str] | np.ndarray, tail_groups: Sequence[str]) -> np.ndarray:
    """bool [C]: True for classes whose group is in ``tail_groups``."""
    groups = np.asarray(class_groups, dtype=object)
    return np.isin(groups, list(tail_groups))


@register_model("meid")
class MEID(VideoModel):
    """MEID. Constructed with ``tail_class_mask`` (bool [C], True = served by the tail neck); see the module doc."""

    config_class = MEIDConfig
    config: MEIDConfig
    logged_extras = ("distill_distance",)

    def __init__(
        self, input_dim: int, num_classes: int, config: MEIDConfig, tail_class_mask: np.ndarray | Sequence[bool]
    ) -> None:
        super().__init__(input_dim, num_classes, config)
        mask = np.asarray(tail_class_mask, dtype=bool)
        if mask.shape != (num_classes,):
            raise ValueError(f"tail_class_mask must have shape ({num_classes},), got {mask.shape}")
        if mask.all() or not mask.any():
            raise ValueError(
                "MEID needs at least one head-neck and one tail-neck class; "
                f"tail_groups {list(config.tail_groups)} selected {int(mask.sum())} of {num_classes} classes"
            )
        head_classes = np.flatnonzero(~mask)
        tail_classes = np.flatnonzero(mask)
        # Expert 1's logits are [head-neck logits, tail-neck logits]; this permutation puts them in class order.
        order = np.concatenate([head_classes, tail_classes])
        self.register_buffer("tail_class_mask", torch.as_tensor(mask))
        self.register_buffer("class_order_inverse", torch.as_tensor(np.argsort(order, kind="stable")))

        hidden = self.hidden
        bottleneck = config.neck_bottleneck if config.neck_bottleneck is not None else bottleneck_of(hidden)
        self.embedding = FrameEmbedding(input_dim, hidden, config.dropout)
        self.attention = AttentionPooling(hidden, default_attention_hidden(hidden, config.attention_hidden))
        self.head_neck = Neck(hidden, bottleneck)
        self.tail_neck = Neck(hidden, bottleneck)
        self.head_classifier = Classifier(hidden, len(head_classes))
        self.tail_classifier = Classifier(hidden, len(tail_classes))
        # Expert 2's modules exist only when used: DistributedDataParallel rejects parameters without gradients.
        if config.expert2:
            if config.expert2_pooling == "attention":
                self.expert2_attention = AttentionPooling(
                    hidden, default_attention_hidden(hidden, config.attention_hidden)
                )
            if config.motion:
                motion_bottleneck = config.motion_bottleneck if config.motion_bottleneck is not None else bottleneck_of(
                    hidden)
                self.motion = MotionModule(hidden, motion_bottleneck, config.motion_span)
            self.expert2_classifier = Classifier(hidden, num_classes)

    @classmethod
    def from_options(cls, config: BaseModelConfig, stats: SplitStats, *, input_dim: int) -> "MEID":
        if stats.class_groups is None:
            raise ValueError("MEID needs class_groups (per class 'head'/'medium'/'tail', e.g. split.classes['group'])")
        groups = np.asarray(stats.class_groups, dtype=object)
        assert isinstance(config, MEIDConfig)
        return cls(input_dim, stats.num_classes, config, tail_mask_from_groups(groups, config.tail_groups))

    @property
    def batch_streams(self) -> tuple[str, ...]:
        return (STREAM_INSTANCE, STREAM_BALANCED) if self.config.expert2 else (STREAM_INSTANCE,)

    # -- expert 1 ------------------------------------------------------------------------------------------------

    def _expert1(self, frames: Tensor, weights: Tensor) -> Tensor:
        # Both necks' down-projections as one product (same values as each neck's pooled(); one larger matrix
        # product is faster than two), then each neck's up-projection on its pooled activations.
        head, tail = self.head_neck, self.tail_neck
        down = F.linear(frames, torch.cat([head.down.weight, tail.down.weight]),
                        torch.cat([head.down.bias, tail.down.bias]))
        pooled_activations = pool(F.relu(down), weights)
        pooled = pool(frames, weights)
        width = head.down.out_features
        head_pooled = pooled + head.up(pooled_activations[:, :width])
        tail_pooled = pooled + tail.up(pooled_activations[:, width:])
        logits = torch.cat([self.head_classifier(head_pooled), self.tail_classifier(tail_pooled)], dim=-1)
        return logits.index_select(-1, self.class_order_inverse)

    @property
    def needs_labels(self) -> bool:
        return self.config.distill and self.config.distill_routing == "labels" and self.config.distill_weight > 0

    def _distillation(self, frames: Tensor, labels: Tensor | None, student_frames: Tensor,
                      student_labels: Tensor | None, student_features: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """(weighted loss, raw distance) between the tail neck's student frames and the head neck's teacher frames.

        ``frames``: the instance batch's embedded frames [B, T, H] (after dropout); ``student_frames``: the frames
        the student comes from, before dropout ([B', T', H]: the balanced batch, or the instance batch without
        expert 2); ``student_features``: their input features when ``student_frames`` carry no gradient.
        """
        config = self.config
        if config.distill_routing == "label_blind":
            # The ablation: both necks on the same random frames of the instance batch, no labels involved.
            everything = torch.ones(frames.shape[:2], dtype=torch.bool, device=frames.device)
            picked, weights = distillation.draw_frames(everything, config.distill_frames)
            flat = frames.reshape(-1, frames.shape[-1])[picked]
            student, teacher = self.tail_neck(flat), self.head_neck(flat).detach()
            value = distillation.distance(config.distill_form, student, weights, teacher, weights)
            return config.distill_weight * value, value.detach()
        if labels is None or student_labels is None:
            raise ValueError("MEID's label-routed distillation needs labels=... (and balanced_labels=... with "
                             "expert 2): the batches' targets or per-frame labels")
        head_frames, _ = distillation.frame_groups(labels, self.tail_class_mask, frames.shape[1])
        _, tail_frames = distillation.frame_groups(student_labels, self.tail_class_mask, student_frames.shape[1])
        teacher_at, teacher_weights = distillation.draw_frames(head_frames, config.distill_frames)
        student_at, student_weights = distillation.draw_frames(tail_frames, config.distill_frames)
        with torch.no_grad():
            teacher = self.head_neck(frames.reshape(-1, frames.shape[-1])[teacher_at])
        chosen = student_frames.reshape(-1, student_frames.shape[-1])[student_at]
        if student_features is not None:  # the balanced batch, embedded without gradient: gradient for these rows
            chosen = self.embedding.rows_with_gradient(
                student_features.reshape(-1, student_features.shape[-1])[student_at], chosen)
        student = self.tail_neck(self.embedding.dropout(chosen))
        value = distillation.distance(config.distill_form, student, student_weights, teacher, teacher_weights)
        return config.distill_weight * value, value.detach()

    # -- expert 2 ------------------------------------------------------------------------------------------------

    def select_frames(self, inherited_weights: Tensor) -> Tensor:
        """Expert 2's frame indices [B, k] (time order) from expert 1's attention weights [B, T]."""
        batch, num_frames = inherited_weights.shape
        keep = frames_to_keep(num_frames, self.config.cfs_ratio)
        if self.config.frame_selection == "complementary":
            return lowest_attention_frames(inherited_weights, keep)
        return random_frames(batch, num_frames, keep, inherited_weights.device)

    def _expert2(self, frames: Tensor, inherited_weights: Tensor) -> tuple[Tensor, Tensor]:
        indices = self.select_frames(inherited_weights)
        return self._expert2_head(take_frames(frames, indices), inherited_weights, indices), indices

    def _expert2_head(self, selected: Tensor, inherited_weights: Tensor, indices: Tensor) -> Tensor:
        """Motion, pooling and classifier over the selected frames' embeddings [B, k, H]."""
        if self.config.motion:
            selected = self.motion(selected)
        pooling = self.config.expert2_pooling
        if pooling == "attention":
            pooled, _ = self.expert2_attention(selected)
        elif pooling == "inherited":
            kept = inherited_weights.gather(1, indices)
            pooled = pool(selected, kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-12))
        else:
            pooled = selected.mean(dim=1)
        return self.expert2_classifier(pooled)

    # -- the model -----------------------------------------------------------------------------------------------

    def forward(self, features: Tensor, balanced_features: Tensor | None = None, labels: Tensor | None = None,
                balanced_labels: Tensor | None = None) -> ModelOutput:
        """features [B, T, D] -> ModelOutput.

        Without ``balanced_features`` (inference): ``logits`` are the fused experts' logits on ``features``.
        With them (a training step): ``logits`` are expert 1's on ``features`` (the instance batch) and
        ``extras["balanced_logits"]`` expert 2's on ``balanced_features`` (the class-balanced batch).
        ``labels`` / ``balanced_labels`` (targets [B, C] or per-frame labels [B, T, C] of the two batches) route
        the distillation; ``aux_loss`` is the weighted distillation loss in training mode, zero in eval mode, and
        ``extras["distill_distance"]`` its unweighted, detached value.
        """
        hidden = self.embedding.activations(features)
        frames = self.embedding.dropout(hidden)
        weights = self.attention.weights(frames)
        expert1_logits = self._expert1(frames, weights)
        extras: dict[str, Tensor] = {"attention": weights, "expert1_logits": expert1_logits}
        aux = expert1_logits.new_zeros((), dtype=torch.float32)
        train_expert2 = self.config.expert2 and balanced_features is not None
        if train_expert2:
            # Shared work once: the balanced batch is embedded once (before dropout, without gradient) for expert
            # 1's attention (selection is discrete, so expert 2 never trains expert 1's attention), expert 2's
            # selected frames and the distillation's student frames. The rows used get their gradient without a
            # second product, and dropout is applied to them: the values and gradients equal embedding each
            # subset on its own (tests/test_models.py checks this).
            with torch.no_grad():
                balanced = self.embedding.activations(balanced_features)
                balanced_weights = self.attention.weights(balanced)
            indices = self.select_frames(balanced_weights)
            selected = self.embedding.rows_with_gradient(take_frames(balanced_features, indices),
                                                         take_frames(balanced, indices))
            selected = self.embedding.dropout(selected)
            extras.update(balanced_logits=self._expert2_head(selected, balanced_weights, indices),
                          balanced_attention=balanced_weights, balanced_selected_frames=indices)
        if self.training and self.config.distill and self.config.distill_weight > 0:
            if train_expert2:
                student = (balanced, balanced_labels, balanced_features)
            else:
                # Without expert 2 there is no balanced stream: the student frames come from the instance batch.
                student = (hidden, labels, None)
            aux, extras["distill_distance"] = self._distillation(frames, labels, *student)
        if train_expert2 or not self.config.expert2:
            return ModelOutput(expert1_logits, aux, extras)
        expert2_logits, indices = self._expert2(frames, weights.detach())
        extras.update(expert2_logits=expert2_logits, selected_frames=indices)
        fused = fuse_logits(expert1_logits, expert2_logits, self.config.fusion, self.config.fusion_weight)
        return ModelOutput(fused, aux, extras)

    def losses_from_output(
        self, output: ModelOutput, batches: Mapping[str, Batch], criterion: nn.Module
    ) -> dict[str, Tensor]:
        instance = batches[STREAM_INSTANCE]
        losses = {"expert1": criterion(output.logits, instance["target"], instance.get("mask"))}
        if self.config.distill:
            losses["distill"] = output.aux_loss
        if self.config.expert2:
            losses["expert2"] = balanced_stream_loss(output, batches, criterion, "MEID")
        return losses
