"""What one run trains and evaluates with, built from a resolved recipe: the model, its criterion, the batch mix,
the optimiser and schedule, and the batch streams (training, validation, test, and the training set scored for
FrameStack). The loop (:mod:`meid_bench.train.loop`) only drives it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from meid_bench.build.features.store import FeatureStore
from meid_bench.build.split_io import Split
from meid_bench.data import GpuResidentFeatures, VideoFeatureDataset
from meid_bench.data.residency import resident_nbytes, use_resident
from meid_bench.models import STREAM_BALANCED, STREAM_INSTANCE, VideoModel
from meid_bench.models.batch_mix import BatchMix
from meid_bench.models.losses import MultiLabelLoss
from meid_bench.registry import SplitStats
from meid_bench.train.batches import EvalStream, TrainStream
from meid_bench.train.config import Recipe, SamplerConfig
from meid_bench.train.stage import StartingPoint, start_from


@dataclass(frozen=True)
class RunPlace:
    """Where and how a run executes: its device and process rank, the data-path options, its seed."""

    device: torch.device
    seed: int
    rank: int = 0
    world: int = 1
    workers: int = 1
    eval_batch_size: int = 256
    resident: str = "auto"  # --resident: auto, yes or no
    memory_share: float = 1.0


@dataclass
class Experiment:
    """Everything one run trains and evaluates with. ``resident``: whether the frames are held on the device."""

    model: VideoModel
    criterion: MultiLabelLoss
    mix: BatchMix | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.MultiStepLR
    streams: dict[str, TrainStream]
    val: EvalStream
    test: EvalStream
    train_eval: EvalStream | None
    resident: bool


class _StreamBuilder:
    """The run's batch streams over one split and store. With resident frames the training frames go on the device
    once, shared by every training stream and by the training set scored for FrameStack."""

    def __init__(self, recipe: Recipe, split: Split, store: FeatureStore, place: RunPlace, frame_labels: bool,
                 resident: bool) -> None:
        self.recipe, self.split, self.store, self.place = recipe, split, store, place
        self.frame_labels, self.resident = frame_labels, resident
        self.train_on_device: GpuResidentFeatures | None = None

    def dataset(self, subset: str, train: bool, label_mask: bool = False) -> VideoFeatureDataset:
        data = self.recipe.data
        frames = data.train_frames if train else data.eval_frames
        # The dataset's `train` flag picks random sorted frames; "uniform" training takes evenly spaced ones.
        random_frames = train and data.train_frame_sampling == "random"
        return VideoFeatureDataset(self.split, self.store, subset, frames, train=random_frames, seed=self.place.seed,
                                   label_mask=label_mask, frame_labels=train and self.frame_labels)

    def train_stream(self, sampler: SamplerConfig, stream_seed: int) -> TrainStream:
        place = self.place
        data = self.dataset("train", True, sampler.label_mask)
        if self.resident and self.train_on_device is None:
            self.train_on_device = GpuResidentFeatures(data, place.device)
        return TrainStream(data, sampler.name, sampler.label_mask, self.recipe.batch_size, stream_seed, place.device,
                           self.train_on_device if self.resident else None, place.workers, place.rank, place.world)

    def eval_stream(self, subset: str) -> EvalStream:
        place = self.place
        data = self.dataset(subset, False)
        on_device = None
        if self.resident:  # the training set, scored for FrameStack, reuses the training frames already there
            on_device = (self.train_on_device.sampled(data.num_frames, train=False)
                         if subset == "train" and self.train_on_device is not None
                         else GpuResidentFeatures(data, place.device))
        return EvalStream(data, place.eval_batch_size, place.device, on_device, place.workers)


def build_experiment(recipe: Recipe, split: Split, store: FeatureStore, place: RunPlace,
                     start: StartingPoint | None = None) -> Experiment:
    """The experiment of a resolved ``recipe`` on ``split``'s frames in ``store``. Torch's generator must be seeded
    first: the model's initial weights are drawn here. ``start``: a second stage's first-stage weights (the recipe's
    ``init``); only the parameters it trains go to the optimiser."""
    model = recipe.model.create(store.dim, split.num_classes, class_groups=split.classes["group"].to_numpy())
    if start is not None:
        start_from(model, recipe.init, start.state)
    # Per-frame labels travel with training batches when the model routes by labels and the store has them.
    frame_labels = model.needs_labels and store.has_frame_labels
    resident = use_resident(place.resident, resident_nbytes(store, split, frame_labels), place.device,
                            place.memory_share)
    build = _StreamBuilder(recipe, split, store, place, frame_labels, resident)
    streams = {STREAM_INSTANCE: build.train_stream(recipe.sampler, place.seed)}
    if model.needs_balanced_batch:
        streams[STREAM_BALANCED] = build.train_stream(recipe.balanced_sampler, place.seed + 1)
    val, test = build.eval_stream("val"), build.eval_stream("test")
    model = model.to(place.device)
    stats = SplitStats.from_split(split)
    criterion = recipe.loss.create(stats).to(place.device)
    mix = recipe.batch_mix.create(stats, seed=place.seed + place.rank)
    # FrameStack's per-class AP comes from the training set, scored each epoch; no other recipe needs it.
    train_eval = build.eval_stream("train") if getattr(mix, "uses_class_ap", False) else None
    optim = recipe.optim
    optimizer_class = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    learning = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = optimizer_class(learning, lr=optim.lr, weight_decay=optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(optim.milestones), optim.gamma)
    return Experiment(model, criterion, mix, optimizer, scheduler, streams, val, test, train_eval, resident)
