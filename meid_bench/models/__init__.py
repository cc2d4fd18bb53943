"""Reference models (MEID and the baselines), their losses and batch-mixing strategies.

    model = create_model("meid", input_dim=D, num_classes=C, class_groups=split.classes["group"].to_numpy(),
                         hidden=512, cfs_ratio=0.5)
    criterion = create_criterion(recipe.loss, SplitStats.from_split(split))
    losses = compute_training_losses(model, {"instance": batch, "balanced": balanced_batch}, criterion)
    loss = sum(losses.values())

docs/models.md describes every model, decision and the training-step contract.
"""

from meid_bench.models.base import (
    STREAM_BALANCED,
    STREAM_INSTANCE,
    BaseModelConfig,
    ModelOutput,
    TrainingStep,
    VideoModel,
    compute_training_losses,
    compute_training_step,
    unwrap_model,
)
from meid_bench.models.registry import create_model, list_models, model_config_class, register_model

# Imported for their registrations.
from meid_bench.models import baselines as _baselines  # noqa: E402,F401
from meid_bench.models import meid as _meid  # noqa: E402,F401
from meid_bench.models.baselines import AttentionClassifier, AttentionConfig, LateAvgClassifier, LateAvgConfig
from meid_bench.models.batch_mix import BatchMix, FrameStack, MixedBatch, Mixup, create_batch_mix
from meid_bench.models.losses import MultiLabelLoss, create_criterion, list_losses
from meid_bench.models.meid import MEID, MEIDConfig

__all__ = [
    "STREAM_BALANCED",
    "STREAM_INSTANCE",
    "AttentionClassifier",
    "AttentionConfig",
    "BaseModelConfig",
    "BatchMix",
    "FrameStack",
    "LateAvgClassifier",
    "LateAvgConfig",
    "MEID",
    "MEIDConfig",
    "MixedBatch",
    "Mixup",
    "ModelOutput",
    "MultiLabelLoss",
    "TrainingStep",
    "VideoModel",
    "compute_training_losses",
    "compute_training_step",
    "create_batch_mix",
    "create_criterion",
    "create_model",
    "list_losses",
    "list_models",
    "model_config_class",
    "register_model",
    "unwrap_model",
]
