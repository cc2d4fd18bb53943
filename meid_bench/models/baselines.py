"""The baselines: the reference late-averaging classifier, the attention-pooling classifier (MEID's expert 1 alone)
and the two-expert ensemble (MEID's shape without MEID's parts).

The first two train on the instance stream (whose sampler may itself be CBS or SRS, per recipe) and are built from
the layers MEID uses. The attention classifier with ``balanced_stream: true`` is the compute-matched control of
MEID: each step it also trains on a batch of the balanced stream, as MEID's expert 2 does. The ensemble is the
control for MEID being two experts: two independent attention classifiers, one trained on the instance stream and
one on the balanced stream, fused as MEID fuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from meid_bench.models.base import (
    STREAM_BALANCED,
    STREAM_INSTANCE,
    Batch,
    BaseModelConfig,
    ModelOutput,
    VideoModel,
    balanced_stream_loss,
)
from meid_bench.models.fusion import fuse_logits
from meid_bench.models.layers import AttentionPooling, Classifier, FrameEmbedding, default_attention_hidden
from meid_bench.models.registry import register_model


class _SingleStreamModel(VideoModel):
    def losses_from_output(
        self, output: ModelOutput, batches: Mapping[str, Batch], criterion: nn.Module
    ) -> dict[str, Tensor]:
        batch = batches[STREAM_INSTANCE]
        return {"classification": criterion(output.logits, batch["target"], batch.get("mask"))}

    @staticmethod
    def _no_balanced(balanced_features: Tensor | None) -> None:
        if balanced_features is not None:
            raise ValueError("this model trains on the instance stream only; do not pass balanced_features")


@dataclass(frozen=True)
class LateAvgConfig(BaseModelConfig):
    """The reference classifier has no hyper-parameters beyond ``hidden`` and ``dropout``."""


@register_model("late_avg")
class LateAvgClassifier(_SingleStreamModel):
    """Reference baseline: per frame Linear(D, H), ReLU, Dropout, Linear(H, C); logits averaged over frames.

    The last layer is linear, so the mean of per-frame logits equals the classifier applied to the mean frame
    embedding; computing it that way saves a [B, T, C] tensor and T-1 of every T classifier products.
    """

    config_class = LateAvgConfig

    def __init__(self, input_dim: int, num_classes: int, config: LateAvgConfig) -> None:
        super().__init__(input_dim, num_classes, config)
        self.embedding = FrameEmbedding(input_dim, self.hidden, config.dropout)
        self.classifier = Classifier(self.hidden, num_classes)

    def forward(self, features: Tensor, balanced_features: Tensor | None = None) -> ModelOutput:
        self._no_balanced(balanced_features)
        logits = self.classifier(self.embedding(features).mean(dim=1))
        return ModelOutput(logits, self._zero(logits), {})


@dataclass(frozen=True)
class AttentionConfig(BaseModelConfig):
    """attention_hidden: width of the attention MLP; null means hidden // 4.
    balanced_stream: also train each step on a batch of the balanced stream (the compute-matched control)."""

    attention_hidden: int | None = None
    balanced_stream: bool = False

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.attention_hidden is not None and self.attention_hidden < 1:
            found.append(("attention_hidden", f"must be a positive integer or null, got {self.attention_hidden}"))
        return found


@register_model("attention")
class AttentionClassifier(VideoModel):
    """Frame embedding -> frame attention pooling -> Linear(H, C): MEID's expert 1 without its necks.

    With ``balanced_stream`` a training step runs the same network on the instance and the balanced batch (one
    pass over both) and sums the two batches' losses (``classification`` and ``balanced``).
    """

    config_class = AttentionConfig
    config: AttentionConfig

    def __init__(self, input_dim: int, num_classes: int, config: AttentionConfig) -> None:
        super().__init__(input_dim, num_classes, config)
        self.embedding = FrameEmbedding(input_dim, self.hidden, config.dropout)
        self.attention = AttentionPooling(self.hidden, default_attention_hidden(self.hidden, config.attention_hidden))
        self.classifier = Classifier(self.hidden, num_classes)

    @property
    def batch_streams(self) -> tuple[str, ...]:
        return (STREAM_INSTANCE, STREAM_BALANCED) if self.config.balanced_stream else (STREAM_INSTANCE,)

    def forward(self, features: Tensor, balanced_features: Tensor | None = None) -> ModelOutput:
        if balanced_features is not None and not self.config.balanced_stream:
            raise ValueError("this model trains on the instance stream only; do not pass balanced_features "
                             "(balanced_stream: true trains on both)")
        both = features if balanced_features is None else torch.cat([features, balanced_features])
        pooled, weights = self.attention(self.embedding(both))
        logits = self.classifier(pooled)
        count = features.shape[0]
        extras = {"attention": weights[:count]}
        if balanced_features is not None:
            extras.update(balanced_logits=logits[count:], balanced_attention=weights[count:])
        return ModelOutput(logits[:count], self._zero(logits), extras)

    def losses_from_output(
        self, output: ModelOutput, batches: Mapping[str, Batch], criterion: nn.Module
    ) -> dict[str, Tensor]:
        batch = batches[STREAM_INSTANCE]
        losses = {"classification": criterion(output.logits, batch["target"], batch.get("mask"))}
        if self.config.balanced_stream:
            losses["balanced"] = balanced_stream_loss(output, batches, criterion, "the compute-matched attention model")
        return losses


@dataclass(frozen=True)
class EnsembleConfig(BaseModelConfig):
    """Two attention classifiers of the same width (``hidden``, ``dropout``, ``attention_hidden`` apply to each).

    fusion / fusion_weight: how inference fuses them, as MEID's fixed fusions do (``fusion_weight`` is expert 2's
    share; ``expert1`` / ``expert2`` take one expert alone).
    """

    attention_hidden: int | None = None
    fusion: Literal["mean_prob", "mean_logit", "expert1", "expert2"] = "mean_prob"
    fusion_weight: float = 0.7

    def problems(self) -> list[tuple[str, str]]:
        found = super().problems()
        if self.attention_hidden is not None and self.attention_hidden < 1:
            found.append(("attention_hidden", f"must be a positive integer or null, got {self.attention_hidden}"))
        if not 0.0 <= self.fusion_weight <= 1.0:
            found.append(("fusion_weight", f"must be in [0, 1], got {self.fusion_weight}"))
        return found


@register_model("ensemble")
class TwoExpertEnsemble(VideoModel):
    """Two independent attention classifiers: expert 1 trains on the instance batch, expert 2 on the balanced batch
    (each step both, as MEID's experts); inference fuses their logits with :func:`fuse_logits`.

    Nothing is shared (no embedding, no attention, no frame selection, no motion, no distillation): MEID minus this
    model is what MEID's own parts add to a fused pair of experts.
    """

    config_class = EnsembleConfig
    config: EnsembleConfig

    def __init__(self, input_dim: int, num_classes: int, config: EnsembleConfig) -> None:
        super().__init__(input_dim, num_classes, config)
        expert = AttentionConfig(hidden=config.hidden, hidden_ratio=config.hidden_ratio, dropout=config.dropout,
                                 attention_hidden=config.attention_hidden)
        self.expert1 = AttentionClassifier(input_dim, num_classes, expert)
        self.expert2 = AttentionClassifier(input_dim, num_classes, expert)

    @property
    def batch_streams(self) -> tuple[str, ...]:
        return (STREAM_INSTANCE, STREAM_BALANCED)

    def forward(self, features: Tensor, balanced_features: Tensor | None = None) -> ModelOutput:
        """Training (``balanced_features`` given): ``logits`` are expert 1's on the instance batch and
        ``extras["balanced_logits"]`` expert 2's on the balanced batch. Inference: the fused logits."""
        first = self.expert1(features)
        extras = {"attention": first.extras["attention"], "expert1_logits": first.logits}
        if balanced_features is not None:
            second = self.expert2(balanced_features)
            extras.update(balanced_logits=second.logits, balanced_attention=second.extras["attention"])
            return ModelOutput(first.logits, self._zero(first.logits), extras)
        second = self.expert2(features)
        extras.update(expert2_logits=second.logits, expert2_attention=second.extras["attention"])
        fused = fuse_logits(first.logits, second.logits, self.config.fusion, self.config.fusion_weight)
        return ModelOutput(fused, self._zero(fused), extras)

    def losses_from_output(
        self, output: ModelOutput, batches: Mapping[str, Batch], criterion: nn.Module
    ) -> dict[str, Tensor]:
        instance = batches[STREAM_INSTANCE]
        return {"expert1": criterion(output.logits, instance["target"], instance.get("mask")),
                "expert2": balanced_stream_loss(output, batches, criterion, "the two-expert ensemble")}
