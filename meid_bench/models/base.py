"""The contract every model follows: its output, the batch streams it trains on, and the training step.

A *batch* is a mapping with ``"features"`` (float [B, T, D]: T frames of D-dim features per video), ``"target"``
(float [B, C] multi-hot, or soft after mixing; the key meid_bench.data's batches use), optionally ``"mask"``
(float [B, C], 1 where a label's loss counts: the CBS/SRS label mask) and ``"frame_labels"`` (float [B, T, C], the
labels of each drawn frame, from a store that has them). A training step receives one batch per *stream* the model declares in
``batch_streams``: ``"instance"`` (the recipe's ``sampler``) for every model, plus ``"balanced"`` (the recipe's
``balanced_sampler``) for MEID's expert 2.

The loop's training step is::

    step = compute_training_step(model, batches, criterion)   # model may be wrapped in DistributedDataParallel
    loss = sum(step.losses.values())                           # step.logged: detached values worth logging

:func:`compute_training_step` calls the (possibly wrapped) module's ``forward`` - DistributedDataParallel only
synchronises gradients for work done inside ``forward`` - and then ``losses_from_output`` on the bare module.
A model whose ``needs_labels`` is true (MEID's label-routed distillation) also gets each batch's labels in
``forward``: ``frame_labels`` where the batch has them, else ``target``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from meid_bench.registry import SplitStats

STREAM_INSTANCE = "instance"
STREAM_BALANCED = "balanced"

Batch = Mapping[str, Tensor]


class TrainingStep(NamedTuple):
    """One step's named, already weighted scalar losses (summed by the loop) and detached values to log."""

    losses: dict[str, Tensor]
    logged: dict[str, Tensor]


class ModelOutput(NamedTuple):
    """What every model's forward returns.

    logits: [B, C] scores for the videos in ``features`` (rank on these, in float32).
    aux_loss: scalar auxiliary loss, already weighted (zero when the model has none or is in eval mode).
    extras: named intermediate tensors for tests and analysis (attention weights, per-expert logits, ...).
    """

    logits: Tensor
    aux_loss: Tensor
    extras: dict[str, Tensor]


@dataclass(frozen=True)
class BaseModelConfig:
    """Hyper-parameters every model has.

    hidden: width H of the frame embedding; ``None`` means ``round(hidden_ratio * D)``.
    hidden_ratio: H as a share of the feature dimension D when ``hidden`` is null, so one recipe suits every
        feature store (1.0: the reference Linear(D, D)).
    dropout: dropout after the frame embedding's ReLU (reference 0.5).
    """

    hidden: int | None = None
    hidden_ratio: float = 1.0
    dropout: float = 0.5

    def hidden_for(self, input_dim: int) -> int:
        """The embedding width for features of dimension ``input_dim``."""
        return self.hidden if self.hidden is not None else max(1, int(round(self.hidden_ratio * input_dim)))

    def problems(self) -> list[tuple[str, str]]:
        found = []
        if self.hidden is not None and self.hidden < 1:
            found.append(("hidden", f"must be a positive integer or null, got {self.hidden}"))
        if self.hidden_ratio <= 0:
            found.append(("hidden_ratio", f"must be > 0, got {self.hidden_ratio}"))
        if self.hidden is not None and self.hidden_ratio != 1.0:
            found.append(("hidden_ratio", "applies only when hidden is null; set one of hidden and hidden_ratio"))
        if not 0.0 <= self.dropout < 1.0:
            found.append(("dropout", f"must be in [0, 1), got {self.dropout}"))
        return found


class VideoModel(nn.Module):
    """Base class: a multi-label video classifier over frame features [B, T, D] with C outputs.

    Subclasses set ``config_class`` and implement ``forward`` and ``losses_from_output``.
    """

    config_class: ClassVar[type[BaseModelConfig]] = BaseModelConfig

    def __init__(self, input_dim: int, num_classes: int, config: BaseModelConfig) -> None:
        super().__init__()
        if input_dim < 1 or num_classes < 1:
            raise ValueError(f"input_dim and num_classes must be positive, got {input_dim}, {num_classes}")
        self.input_dim = input_dim
        self.num_classes = num_classes
        self.config = config
        self.hidden = config.hidden_for(input_dim)

    @classmethod
    def from_options(cls, config: BaseModelConfig, stats: SplitStats, *, input_dim: int) -> "VideoModel":
        """The registry's factory: the model for ``input_dim``-dimensional frames and the split's classes. Models
        that need more of the split (MEID: the class groups) override this."""
        return cls(input_dim, stats.num_classes, config)

    @property
    def batch_streams(self) -> tuple[str, ...]:
        """The batch streams one training step needs, e.g. ``("instance",)`` or ``("instance", "balanced")``."""
        return (STREAM_INSTANCE,)

    @property
    def needs_balanced_batch(self) -> bool:
        return STREAM_BALANCED in self.batch_streams

    @property
    def needs_labels(self) -> bool:
        """Whether a training forward takes the batches' labels (``labels=``, ``balanced_labels=``)."""
        return False

    #: extras of a training output that the loop logs each epoch (mean over steps), e.g. an unweighted distance.
    logged_extras: ClassVar[tuple[str, ...]] = ()

    def forward(self, features: Tensor, balanced_features: Tensor | None = None) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError

    def losses_from_output(
        self, output: ModelOutput, batches: Mapping[str, Batch], criterion: nn.Module
    ) -> dict[str, Tensor]:  # pragma: no cover
        raise NotImplementedError

    def training_losses(self, batches: Mapping[str, Batch], criterion: nn.Module) -> dict[str, Tensor]:
        """Named scalar losses for one step on an unwrapped model (see :func:`compute_training_losses`)."""
        return compute_training_losses(self, batches, criterion)

    def _zero(self, like: Tensor) -> Tensor:
        return like.new_zeros((), dtype=torch.float32)


def balanced_stream_loss(output: ModelOutput, batches: Mapping[str, Batch], criterion: nn.Module,
                         model_name: str) -> Tensor:
    """The loss of ``extras["balanced_logits"]`` (a training forward's logits on the balanced batch) on that batch."""
    if "balanced_logits" not in output.extras:
        raise ValueError(f"{model_name}'s training step needs forward(features, balanced_features=...)")
    balanced = batches[STREAM_BALANCED]
    return criterion(output.extras["balanced_logits"], balanced["target"], balanced.get("mask"))


def unwrap_model(model: nn.Module) -> VideoModel:
    """The bare :class:`VideoModel` inside a DistributedDataParallel / DataParallel wrapper (or the model itself)."""
    core: Any = model
    while not isinstance(core, VideoModel) and isinstance(getattr(core, "module", None), nn.Module):
        core = core.module
    if not isinstance(core, VideoModel):
        raise TypeError(f"expected a VideoModel (possibly wrapped), got {type(model).__name__}")
    return core


def routing_labels(batch: Batch) -> Tensor:
    """The labels a batch offers a model: per-frame labels [B, T, C] where present, else the targets [B, C]."""
    return batch["frame_labels"] if "frame_labels" in batch else batch["target"]


def compute_training_step(model: nn.Module, batches: Mapping[str, Batch], criterion: nn.Module) -> TrainingStep:
    """One training step's losses and logged values (see the module docstring).

    ``model`` is a :class:`VideoModel` or a wrapper around one (DistributedDataParallel): its ``forward`` is called
    once, on the instance batch's features and, when the model needs it, the balanced batch's features (and the
    batches' labels when ``needs_labels``).
    """
    core = unwrap_model(model)
    missing = [stream for stream in core.batch_streams if stream not in batches]
    if missing:
        raise ValueError(f"{type(core).__name__} needs batch streams {core.batch_streams}; missing {missing}")
    instance = batches[STREAM_INSTANCE]
    kwargs: dict[str, Tensor] = {}
    if core.needs_balanced_batch:
        kwargs["balanced_features"] = batches[STREAM_BALANCED]["features"]
    if core.needs_labels:
        kwargs["labels"] = routing_labels(instance)
        if core.needs_balanced_batch:
            kwargs["balanced_labels"] = routing_labels(batches[STREAM_BALANCED])
    output = model(instance["features"], **kwargs)
    logged = {name: output.extras[name] for name in core.logged_extras if name in output.extras}
    return TrainingStep(core.losses_from_output(output, batches, criterion), logged)


def compute_training_losses(
    model: nn.Module, batches: Mapping[str, Batch], criterion: nn.Module
) -> dict[str, Tensor]:
    """One training step's named, already weighted scalar losses; the loop sums them (see compute_training_step)."""
    return compute_training_step(model, batches, criterion).losses
