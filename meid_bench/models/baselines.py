"""The baselines: the reference late-averaging classifier and the attention-pooling classifier (MEID's expert 1 alone).

Both train on the instance stream (whose sampler may itself be CBS or SRS, per recipe) and are built from the
layers MEID uses. The attention classifier with ``balanced_stream: true`` is the compute-matched control of MEID:
each step it also trains on a batch of the balanced stream, as MEID's expert 2 does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor, nn

import torch

from meid_bench.models.base import (
    STREAM_BALANCED,
    STREAM_INSTANCE,
    Batch,
    BaseModelConfig,
    ModelOutput,
    VideoModel,
    balanced_stream_loss,
)
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
