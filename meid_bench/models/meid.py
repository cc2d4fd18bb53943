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
- inference: both experts on the same videos, fused (a weighted mean of probabilities by default, or per-class
  weights learnt on training data: meid_bench.models.fusion).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

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
from meid_bench.models.fusion import LEARNED_FUSIONS, LearnedFusion, fuse_logits
from meid_bench.models.motion import MotionModule, distinct_frames, half_contrast
from meid_bench.models.motion import windowed_differences  # noqa: F401  (re-exported: part of this module's API)
from meid_bench.models.registry import register_model
from meid_bench.registry import SplitStats


@dataclass(frozen=True)
class MEIDConfig(BaseModelConfig):
    """MEID's hyper-parameters and ablation switches (see docs/models.md for each default's reason)."""

    attention_hidden: int | None = None  # attention MLP width; null = hidden // 4
    neck_bottleneck: int | None = None  # neck MLP bottleneck; null = hidden // 4
    motion_bottleneck: int | None = None  # motion MLP bottleneck; null = hidden // 4
    tail_groups: tuple[str, ...] = ("tail",)  # split groups whose classes the tail neck serves
    necks: bool = True  # expert 1's head/tail necks on/off (off: the pooled frames feed both classifiers; ablation)
    distill: bool = True  # internal distillation on/off (ablation)
    distill_form: Literal["mmd", "moments", "kl"] = "kl"  # kl: expert 1's head-neck predictions teach expert 2
    distill_weight: float = 0.03  # the kl form's best non-zero weight on validation (the recipe turns distill off)
    distill_temperature: float = 2.0  # kl: T of sigmoid(logit / T) on both sides
    distill_routing: Literal["labels", "label_blind"] = "labels"  # label_blind: the ablation without labels
    distill_frames: int = 128  # frames drawn per side for the distance
    expert2: bool = True  # expert 2 on/off (ablation)
    frame_selection: Literal["complementary", "random"] = "complementary"  # random = ablation
    cfs_ratio: float = 0.5  # fraction of frames expert 2 keeps (tuned on validation)
    motion: bool = True  # motion module on/off (ablation)
    motion_form: Literal["contrast", "difference"] = "contrast"  # difference: the first MEID's module (ablation)
    motion_span: int = 1  # frames averaged on each side of a motion difference (1: consecutive frames)
    expert2_pooling: Literal["attention", "inherited", "mean"] = "inherited"
    fusion: Literal["mean_logit", "mean_prob", "expert1", "expert2", "gate_prob", "stack_logit"] = "mean_prob"
    fusion_weight: float = 0.7  # expert 2's weight in the fixed fusions (tuned on validation); the learnt ones start
    # from it

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
        if self.distill and not self.necks and self.distill_form != "kl":
            found.append(("distill_form", f"is {self.distill_form!r} (between the necks) but necks are off; use kl or "
                                          "turn distill off"))
        if self.distill_temperature <= 0.0:
            found.append(("distill_temperature", f"must be > 0, got {self.distill_temperature}"))
        if self.distill and self.distill_form == "kl" and not self.expert2:
            found.append(("distill_form", "is 'kl' (expert 1 teaches expert 2) but expert2 is off; use mmd or moments"))
        if self.fusion in LEARNED_FUSIONS and not 0.0 < self.fusion_weight < 1.0:
            found.append(("fusion_weight", f"must be in (0, 1) for the learned fusion {self.fusion!r}, got "
                                           f"{self.fusion_weight}"))
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
        if config.necks:
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
            contrast = config.motion and config.motion_form == "contrast"
            if config.motion and not contrast:
                motion_bottleneck = config.motion_bottleneck if config.motion_bottleneck is not None else bottleneck_of(
                    hidden)
                self.motion = MotionModule(hidden, motion_bottleneck, config.motion_span)
            # The contrast form's classifier reads [pooled frames, late-minus-early contrast].
            self.expert2_classifier = Classifier(2 * hidden if contrast else hidden, num_classes)
            if config.fusion in LEARNED_FUSIONS:  # without expert 2 there is nothing to fuse
                self.fusion = LearnedFusion(config.fusion, num_classes, config.fusion_weight)

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
        if not self.config.necks:  # the ablation: both classifiers read the pooled frames (one linear classifier)
            pooled = pool(frames, weights)
            logits = torch.cat([self.head_classifier(pooled), self.tail_classifier(pooled)], dim=-1)
            return logits.index_select(-1, self.class_order_inverse)
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
        config = self.config
        return config.distill and config.distill_form != "kl" and config.distill_routing == "labels" and \
            config.distill_weight > 0

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

    def _expert2(self, hidden: Tensor, inherited_weights: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """Expert 2 on embedded frames before dropout ``hidden`` [B, T, H] of ``features`` [B, T, D]."""
        indices = self.select_frames(inherited_weights)
        return self._expert2_head(take_frames(hidden, indices), inherited_weights, indices,
                                  take_frames(features, indices)), indices

    def _expert2_head(self, selected: Tensor, inherited_weights: Tensor, indices: Tensor,
                      selected_features: Tensor) -> Tensor:
        """Motion, pooling and classifier over the selected frames' embeddings before dropout [B, k, H] (their
        input features [B, k, D] tell repeated frames apart)."""
        config = self.config
        frames = self.embedding.dropout(selected)
        if config.motion and config.motion_form == "difference":
            frames = self.motion(frames)  # the first MEID's order of operations: dropout, then differences
        pooling = config.expert2_pooling
        if pooling == "attention":
            pooled, _ = self.expert2_attention(frames)
        elif pooling == "inherited":
            kept = inherited_weights.gather(1, indices)
            pooled = pool(frames, kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-12))
        else:
            pooled = frames.mean(dim=1)
        if config.motion and config.motion_form == "contrast":
            # The contrast is taken before dropout (a fresh mask per frame would add its noise to both halves' means)
            # and dropped out as one vector per video, like any pooled feature.
            contrast = half_contrast(selected, distinct_frames(selected_features))
            pooled = torch.cat([pooled, self.embedding.dropout(contrast)], dim=-1)
        return self.expert2_classifier(pooled)

    def _prediction_distillation(self, balanced: Tensor, balanced_weights: Tensor,
                                 student_logits: Tensor) -> tuple[Tensor, Tensor]:
        """(weighted loss, raw value) of the ``kl`` form: on the balanced batch's videos, expert 1's head-neck
        predictions (the teacher, trained on the instance stream; no dropout, no gradient) teach expert 2 (trained
        on the balanced stream) on the head-neck classes: per class the binary KL(sigmoid(t / T) || sigmoid(s / T))
        times T^2, mean over videos and classes."""
        temperature = self.config.distill_temperature
        head = ~self.tail_class_mask
        with torch.no_grad():
            teacher = self._expert1(balanced, balanced_weights)[:, head].float() / temperature
        student = student_logits[:, head].float() / temperature
        p = torch.sigmoid(teacher)
        kl = p * (F.logsigmoid(teacher) - F.logsigmoid(student)) + \
            (1.0 - p) * (F.logsigmoid(-teacher) - F.logsigmoid(-student))
        value = kl.mean() * temperature**2
        return self.config.distill_weight * value, value.detach()

    # -- the model -----------------------------------------------------------------------------------------------

    def forward(self, features: Tensor, balanced_features: Tensor | None = None, labels: Tensor | None = None,
                balanced_labels: Tensor | None = None) -> ModelOutput:
        """features [B, T, D] -> ModelOutput.

        Without ``balanced_features`` (inference): ``logits`` are the fused experts' logits on ``features``.
        With them (a training step): ``logits`` are expert 1's on ``features`` (the instance batch) and
        ``extras["balanced_logits"]`` expert 2's on ``balanced_features`` (the class-balanced batch); with a learned
        fusion, ``extras["fusion_logits"]`` are the fusion's on the instance batch from both experts' detached logits
        without dropout. ``labels`` / ``balanced_labels`` (targets [B, C] or per-frame labels [B, T, C] of the two
        batches) route the frame-level distillation; ``aux_loss`` is the weighted distillation loss in training
        mode, zero in eval mode, and ``extras["distill_distance"]`` its unweighted, detached value.
        """
        config = self.config
        hidden = self.embedding.activations(features)
        frames = self.embedding.dropout(hidden)
        weights = self.attention.weights(frames)
        expert1_logits = self._expert1(frames, weights)
        extras: dict[str, Tensor] = {"attention": weights, "expert1_logits": expert1_logits}
        aux = expert1_logits.new_zeros((), dtype=torch.float32)
        train_expert2 = config.expert2 and balanced_features is not None
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
            selected_features = take_frames(balanced_features, indices)
            selected = self.embedding.rows_with_gradient(selected_features, take_frames(balanced, indices))
            balanced_logits = self._expert2_head(selected, balanced_weights, indices, selected_features)
            extras.update(balanced_logits=balanced_logits, balanced_attention=balanced_weights,
                          balanced_selected_frames=indices)
        if self.training and config.distill and config.distill_weight > 0:
            if config.distill_form == "kl":
                if train_expert2:  # the kl form exists only between the two experts on the balanced batch
                    aux, extras["distill_distance"] = self._prediction_distillation(balanced, balanced_weights,
                                                                                    balanced_logits)
            else:
                if train_expert2:
                    student = (balanced, balanced_labels, balanced_features)
                else:
                    # Without expert 2 there is no balanced stream: the student frames come from the instance batch.
                    student = (hidden, labels, None)
                aux, extras["distill_distance"] = self._distillation(frames, labels, *student)
        if train_expert2 and config.fusion in LEARNED_FUSIONS:
            # The fusion learns on the instance batch (the long-tailed distribution that validation and test share)
            # from both experts as inference sees them: no dropout, no gradient into the experts.
            with torch.no_grad():
                clean_weights = self.attention.weights(hidden)
                clean1 = self._expert1(hidden, clean_weights)
                was_training = self.embedding.dropout.training
                self.embedding.dropout.train(False)
                clean2, _ = self._expert2(hidden, clean_weights, features)
                self.embedding.dropout.train(was_training)
            extras["fusion_logits"] = self.fusion(clean1, clean2)
        if train_expert2 or not config.expert2:
            return ModelOutput(expert1_logits, aux, extras)
        expert2_logits, indices = self._expert2(hidden, weights.detach(), features)
        extras.update(expert2_logits=expert2_logits, selected_frames=indices)
        if config.fusion in LEARNED_FUSIONS:
            fused = self.fusion(expert1_logits, expert2_logits)
        else:
            fused = fuse_logits(expert1_logits, expert2_logits, config.fusion, config.fusion_weight)
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
            if self.config.fusion in LEARNED_FUSIONS:
                losses["fusion"] = criterion(output.extras["fusion_logits"], instance["target"], instance.get("mask"))
        return losses
