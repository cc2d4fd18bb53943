"""MEID: Mixture-of-Experts with Internal Distillation (Li & Xu, AAAI 2023), with every unpublished detail decided.

Data flow (docs/models.md gives each decision and its reason):

- a frame embedding shared by both experts: Linear(D, H), ReLU, Dropout;
- expert 1, on the instance batch: frame attention over the shared embedding; a head-class neck and a tail-class
  neck (residual bottleneck MLPs per frame) pooled with that attention; the head neck feeds a classifier for the
  head (non-tail) classes, the tail neck one for the tail classes; internal distillation pulls the tail neck's
  frame-feature distribution towards the head neck's (the teacher);
- expert 2, on the class-balanced batch: expert 1's attention module scores the frames (no gradient: selection is
  discrete), complementary frame selection keeps the ``cfs_ratio`` fraction with the LOWEST attention in time
  order, a motion module adds features from the temporal differences of those frames' embeddings, then its own
  attention pooling and classifier over all classes;
- inference: both experts on the same videos, fused (weighted mean of logits by default).
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
from meid_bench.models.base import STREAM_BALANCED, STREAM_INSTANCE, Batch, BaseModelConfig, ModelOutput, VideoModel
from meid_bench.models.layers import (
    AttentionPooling,
    Classifier,
    FrameEmbedding,
    Neck,
    branch_moments,
    default_attention_hidden,
    pool,
)
from meid_bench.models.registry import register_model


@dataclass(frozen=True)
class MEIDConfig(BaseModelConfig):
    """MEID's hyper-parameters and ablation switches (see docs/models.md for each default's reason)."""

    attention_hidden: int | None = None  # attention MLP width; null = hidden // 4
    neck_bottleneck: int | None = None  # neck MLP bottleneck; null = hidden // 4
    tail_groups: tuple[str, ...] = ("tail",)  # split groups whose classes the tail neck serves
    distill: bool = True  # internal distillation on/off (ablation)
    distill_form: Literal["moments", "kl"] = "moments"
    distill_weight: float = 0.1  # tuned on proxy CharadesLT validation (docs/models.md)
    distill_temperature: float = 2.0  # softening for distill_form "kl"
    distill_detach_teacher: bool = True  # the head neck is a fixed teacher inside the distillation loss
    expert2: bool = True  # expert 2 on/off (ablation)
    frame_selection: Literal["complementary", "random"] = "complementary"  # random = ablation
    cfs_ratio: float = 0.75  # fraction of frames expert 2 keeps (tuned on validation)
    motion: bool = True  # motion module on/off (ablation)
    expert2_pooling: Literal["attention", "inherited", "mean"] = "attention"
    fusion: Literal["mean_logit", "mean_prob", "expert1", "expert2"] = "mean_prob"
    fusion_weight: float = 0.5  # weight of expert 2 in the fusion (best on validation)

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        for name in ("attention_hidden", "neck_bottleneck"):
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
        if self.distill_temperature <= 0.0:
            found.append(("distill_temperature", f"must be > 0, got {self.distill_temperature}"))
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


def random_frames(batch: int, num_frames: int, keep: int, device: torch.device) -> Tensor:
    """The ablation of complementary selection: ``keep`` distinct random frames per video, in time order."""
    chosen = torch.rand(batch, num_frames, device=device).topk(keep, dim=-1).indices
    return chosen.sort(dim=-1).values


class MotionModule(nn.Module):
    """Motion features for the selected frames: e_t + ReLU(Linear(e_t - e_{t-1})) over the selected frames.

    Differences are taken between consecutive *selected* frames in time order (the first has none: zero), so the
    module sees how the unsolved part of the video changes, at the cost of one H x H product per selected frame.
    """

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(hidden, hidden)

    def forward(self, frames: Tensor) -> Tensor:
        differences = F.pad(frames[:, 1:] - frames[:, :-1], (0, 0, 1, 0))
        return frames + F.relu(self.linear(differences))


def stats_distance(student: tuple[Tensor, Tensor], teacher: tuple[Tensor, Tensor]) -> Tensor:
    """mean over channels of (mean_s - mean_t)^2 plus mean over channels of (std_s - std_t)^2."""
    return (student[0] - teacher[0]).pow(2).mean() + (student[1] - teacher[1]).pow(2).mean()


def frame_moments(frames: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population standard deviation over all frames of [..., H] features (float32)."""
    flat = frames.reshape(-1, frames.shape[-1]).float()
    # The epsilon keeps sqrt differentiable at zero variance (a dead ReLU channel).
    return flat.mean(dim=0), (flat.var(dim=0, unbiased=False) + 1e-6).sqrt()


def moment_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """The moments distillation distance between two sets of frame features [..., H] (reference form)."""
    return stats_distance(frame_moments(student), frame_moments(teacher))


def softened_kl(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """KL(softmax(teacher / t) || softmax(student / t)) * t^2 over feature channels, averaged over videos."""
    teacher_log = F.log_softmax(teacher.float() / temperature, dim=-1)
    student_log = F.log_softmax(student.float() / temperature, dim=-1)
    kl = (teacher_log.exp() * (teacher_log - student_log)).sum(dim=-1)
    return kl.mean() * temperature**2


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


def tail_mask_from_groups(class_groups: Sequence[str] | np.ndarray, tail_groups: Sequence[str]) -> np.ndarray:
    """bool [C]: True for classes whose group is in ``tail_groups``."""
    groups = np.asarray(class_groups, dtype=object)
    return np.isin(groups, list(tail_groups))


@register_model("meid")
class MEID(VideoModel):
    """MEID. Constructed with ``tail_class_mask`` (bool [C], True = served by the tail neck); see the module doc."""

    config_class = MEIDConfig
    config: MEIDConfig

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
        bottleneck = config.neck_bottleneck if config.neck_bottleneck is not None else max(1, hidden // 4)
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
                self.motion = MotionModule(hidden)
            self.expert2_classifier = Classifier(hidden, num_classes)

    @classmethod
    def build(cls, input_dim: int, num_classes: int, config: BaseModelConfig, class_groups: Any = None) -> "MEID":
        if class_groups is None:
            raise ValueError("MEID needs class_groups (per class 'head'/'medium'/'tail', e.g. split.classes['group'])")
        groups = np.asarray(class_groups, dtype=object)
        if groups.shape != (num_classes,):
            raise ValueError(f"class_groups must have one entry per class ({num_classes}), got shape {groups.shape}")
        assert isinstance(config, MEIDConfig)
        return cls(input_dim, num_classes, config, tail_mask_from_groups(groups, config.tail_groups))

    @property
    def batch_streams(self) -> tuple[str, ...]:
        return (STREAM_INSTANCE, STREAM_BALANCED) if self.config.expert2 else (STREAM_INSTANCE,)

    # -- expert 1 ------------------------------------------------------------------------------------------------

    def _expert1(self, frames: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
        pooled = pool(frames, weights)
        head_pooled, head_activations = self.head_neck.pooled(frames, pooled, weights)
        tail_pooled, tail_activations = self.tail_neck.pooled(frames, pooled, weights)
        logits = torch.cat([self.head_classifier(head_pooled), self.tail_classifier(tail_pooled)], dim=-1)
        logits = logits.index_select(-1, self.class_order_inverse)
        distill = self._distillation(head_activations, tail_activations, head_pooled, tail_pooled)
        return logits, distill

    def _distillation(
        self, head_activations: Tensor, tail_activations: Tensor, head_pooled: Tensor, tail_pooled: Tensor
    ) -> Tensor:
        config = self.config
        if not (config.distill and self.training) or config.distill_weight == 0.0:
            return head_activations.new_zeros((), dtype=torch.float32)
        if config.distill_form == "moments":
            # Per-frame statistics of each neck's residual branch (the shared embedding is common to both necks).
            student = branch_moments(tail_activations, self.tail_neck.up)
            teacher = branch_moments(head_activations, self.head_neck.up)
            if config.distill_detach_teacher:
                teacher = (teacher[0].detach(), teacher[1].detach())
            distance = stats_distance(student, teacher)
        else:
            teacher_pooled = head_pooled.detach() if config.distill_detach_teacher else head_pooled
            distance = softened_kl(tail_pooled, teacher_pooled, config.distill_temperature)
        return config.distill_weight * distance

    # -- expert 2 ------------------------------------------------------------------------------------------------

    def select_frames(self, inherited_weights: Tensor) -> Tensor:
        """Expert 2's frame indices [B, k] (time order) from expert 1's attention weights [B, T]."""
        batch, num_frames = inherited_weights.shape
        keep = frames_to_keep(num_frames, self.config.cfs_ratio)
        if self.config.frame_selection == "complementary":
            return lowest_attention_frames(inherited_weights, keep)
        return random_frames(batch, num_frames, keep, inherited_weights.device)

    def _expert2_on_features(self, features: Tensor, inherited_weights: Tensor) -> tuple[Tensor, Tensor]:
        """Expert 2 from raw features: select frames first, then embed only those (training path)."""
        indices = self.select_frames(inherited_weights)
        chosen = features.gather(1, indices.unsqueeze(-1).expand(-1, -1, features.shape[-1]))
        return self._expert2_head(self.embedding(chosen), inherited_weights, indices), indices

    def _expert2(self, frames: Tensor, inherited_weights: Tensor) -> tuple[Tensor, Tensor]:
        indices = self.select_frames(inherited_weights)
        selected = frames.gather(1, indices.unsqueeze(-1).expand(-1, -1, frames.shape[-1]))
        return self._expert2_head(selected, inherited_weights, indices), indices

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

    def forward(self, features: Tensor, balanced_features: Tensor | None = None) -> ModelOutput:
        """features [B, T, D] -> ModelOutput.

        Without ``balanced_features`` (inference): ``logits`` are the fused experts' logits on ``features``.
        With them (a training step): ``logits`` are expert 1's on ``features`` (the instance batch) and
        ``extras["balanced_logits"]`` expert 2's on ``balanced_features`` (the class-balanced batch).
        ``aux_loss`` is the weighted distillation loss in training mode, zero in eval mode.
        """
        frames = self.embedding(features)
        weights = self.attention.weights(frames)
        expert1_logits, distill = self._expert1(frames, weights)
        extras: dict[str, Tensor] = {"attention": weights, "expert1_logits": expert1_logits}
        if not self.config.expert2:
            return ModelOutput(expert1_logits, distill, extras)
        if balanced_features is not None:
            # Expert 2 inherits expert 1's attention module. Selection is discrete (top-k indices), so no gradient
            # could flow through it: the balanced batch is embedded (without dropout) and scored under no_grad, and
            # only the selected frames are embedded again with gradient. The embedding is per frame, so this equals
            # selecting from a full embedding, at half the backward cost (perf/bench_train_step.py).
            with torch.no_grad():
                balanced_weights = self.attention.weights(self.embedding(balanced_features, dropout=False))
            balanced_logits, indices = self._expert2_on_features(balanced_features, balanced_weights)
            extras.update(
                balanced_logits=balanced_logits, balanced_attention=balanced_weights, balanced_selected_frames=indices
            )
            return ModelOutput(expert1_logits, distill, extras)
        expert2_logits, indices = self._expert2(frames, weights.detach())
        extras.update(expert2_logits=expert2_logits, selected_frames=indices)
        fused = fuse_logits(expert1_logits, expert2_logits, self.config.fusion, self.config.fusion_weight)
        return ModelOutput(fused, distill, extras)

    def losses_from_output(
        self, output: ModelOutput, batches: Mapping[str, Batch], criterion: nn.Module
    ) -> dict[str, Tensor]:
        instance = batches[STREAM_INSTANCE]
        losses = {"expert1": criterion(output.logits, instance["target"], instance.get("mask"))}
        if self.config.distill:
            losses["distill"] = output.aux_loss
        if self.config.expert2:
            if "balanced_logits" not in output.extras:
                raise ValueError("MEID's training step needs forward(features, balanced_features=...)")
            balanced = batches[STREAM_BALANCED]
            losses["expert2"] = criterion(output.extras["balanced_logits"], balanced["target"], balanced.get("mask"))
        return losses
